//! OCI image documents: config, manifest, index, descriptors, media types, platforms, and
//! the canonical JSON every document is written in.

mod config;
mod json;
mod manifest;
mod platform;

pub use config::{ContainerConfig, Healthcheck, History, ImageConfig, RootFs};
pub use json::{canonical_json, CanonicalJsonError};
pub use manifest::{media_types, Descriptor, Index, Manifest};
pub use platform::{Platform, PlatformParseError};
