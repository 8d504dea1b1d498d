//! OCI image documents: config, manifest, index, descriptors, media types, platforms, and
//! the canonical JSON every document is written in.

mod built;
mod config;
mod json;
mod layout;
mod manifest;
mod platform;

pub use built::BuiltImage;
pub use config::{ContainerConfig, Empty, Healthcheck, History, ImageConfig, RootFs, DEFAULT_PATH};

/// The `{}` value of `ExposedPorts` and `Volumes` entries.
pub fn config_empty() -> Empty {
    Empty {}
}
pub use json::{canonical_json, CanonicalJsonError};
pub use layout::{blob_path, resolve_index, ImageLayout, REF_NAME};
pub use manifest::{media_types, Descriptor, Index, Manifest};
pub use platform::{Platform, PlatformParseError};
