//! A built image as the outputs see it: its manifest and config (both in the store), the
//! platform, and where its base layers can be fetched from when the store lacks them.

use super::{ImageConfig, Manifest, Platform};
use crate::digest::Digest;

/// What the build of one stage produced (or an image imported for `lade push`); everything it
/// names is in the store, except base layers never downloaded (see `base_origin`).
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    pub config_digest: Digest,
    pub platform: Platform,
    /// One per layer step of the plan (base layers excluded): was it reused from the cache?
    pub cached: Vec<bool>,
    /// The registry image the base layers come from: those not in the store were never
    /// downloaded (`exec::fetch_image_layers` gets them); a push to its registry mounts them.
    pub base_origin: Option<crate::registry::Reference>,
    /// How many of the manifest's layers come from the base (the rest are this build's).
    pub base_layers: usize,
}
