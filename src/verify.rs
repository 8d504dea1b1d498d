//! `lade verify`: rebuild an image from its description without any cached layer and compare
//! the result with the published image. Equal digests verify it; otherwise the
//! [`crate::diff`] of the two says why.

use crate::build::{BuildError, BuildRequest};
use crate::diff::{DiffError, ImageDiff, OpenOptions};
use crate::digest::Digest;
use crate::exec::Observer;
use crate::image::Platform;
use crate::output::Target;
use crate::registry::Client;
use crate::store::Store;
use std::sync::Arc;

/// The published image and how to rebuild it. The request's outputs, tags and files are
/// replaced: the rebuild goes to a scratch layout only.
pub struct VerifyRequest {
    /// As `lade diff` names images: a registry reference, `oci:`, `oci-archive:`,
    /// `docker-archive:`.
    pub published: String,
    pub build: BuildRequest,
}

/// What the rebuild gave.
pub struct Verified {
    pub published: Digest,
    pub rebuilt: Digest,
    /// Present when the digests differ.
    pub diff: Option<ImageDiff>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error("creating a scratch directory for the rebuild: {0}")]
    Scratch(std::io::Error),
}

/// Opens the published image (its manifest and config only), rebuilds with `no_cache`, and
/// compares.
pub fn verify(req: VerifyRequest, observer: &dyn Observer) -> Result<Verified, VerifyError> {
    let VerifyRequest {
        published,
        mut build,
    } = req;
    let platform = build
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(Platform::host);
    let store = Store::open(&build.store_root).map_err(DiffError::from)?;
    let options = build.registry.clone();
    let client: std::sync::OnceLock<Result<Arc<Client>, String>> = Default::default();
    let registry = || {
        client
            .get_or_init(|| {
                Client::new(options.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    };
    let opts = OpenOptions {
        platform: &platform,
        store: &store,
        registry: &registry,
    };
    let old = crate::diff::open(&published, &opts)?;

    let scratch = crate::store::scratch_dir_in(&std::env::temp_dir(), "lade-verify-")
        .map_err(VerifyError::Scratch)?;
    let dir = scratch.path().join("rebuilt");
    build.exec.no_cache = true;
    build.outputs = vec![Target::OciLayout { dir: dir.clone() }];
    build.tags.clear();
    build.iidfile = None;
    build.metadata_file = None;
    build.digest_file = None;
    let result = crate::build::build(&build, observer)?;
    let rebuilt = result.artifact.top().digest;
    if rebuilt == old.digest {
        return Ok(Verified {
            published: old.digest,
            rebuilt,
            diff: None,
        });
    }
    // The description's own tags name the rebuilt image in the layout (one entry each).
    let tag = match result.tags.first() {
        Some(t) => crate::output::split_tag(t)
            .map(|(_, tag)| format!(":{tag}"))
            .map_err(BuildError::from)?,
        None => String::new(),
    };
    let mut new = crate::diff::open(&format!("oci:{}{tag}", dir.display()), &opts)?;
    new.name = "rebuild".into();
    let diff = crate::diff::compare(&old, &new)?;
    Ok(Verified {
        published: old.digest,
        rebuilt,
        diff: Some(diff),
    })
}
