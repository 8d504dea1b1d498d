//! Registry bases: when to ask the registry (`--pull`), the cached tag → manifest
//! resolutions that make a second build need no download, and fetching base layers only
//! when something reads them.

use super::base::ImportedImage;
use super::ExecError;
use crate::digest::Digest;
use crate::image::{Descriptor, ImageConfig, Manifest, Platform};
use crate::registry::{Client, Reference};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// When a build contacts the registry for a `FROM` / `COPY --from` image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Re-check a cached tag with one `HEAD` of its manifest; download the manifest and
    /// config again only when the tag moved (what `docker build` does).
    #[default]
    Newer,
    /// Use a cached resolution as it is, without any request; resolve only uncached tags.
    Missing,
    /// Never contact the registry for bases: fail when an image (or a layer that is read) is
    /// not in the cache.
    Never,
    /// Resolve every tag again (manifest and index by `GET`); blobs already in the store are
    /// still not downloaded again: they are content-addressed.
    Always,
}

/// What a tag resolved to last time, kept in the store's step index.
#[derive(Serialize, Deserialize)]
struct Resolution {
    /// What the reference points to (an index, or the manifest itself).
    top: Digest,
    /// The image manifest for the platform.
    manifest: Digest,
}

fn resolution_key(r: &Reference, platform: &Platform) -> Digest {
    Digest::of(format!("lade registry base\0{r}\0{platform}").as_bytes())
}

/// What this process learnt from the registry: resolution key → what the tag pointed to.
/// `Some(top)` records it; the result is the recorded value.
fn checked_this_run(key: &Digest, record: Option<Digest>) -> Option<Digest> {
    static CHECKED: std::sync::Mutex<Vec<(Digest, Digest)>> = std::sync::Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(top) = record {
        checked.retain(|(k, _)| k != key);
        checked.push((key.clone(), top));
    }
    checked
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, t)| t.clone())
}

/// The cached image for a resolution, if every piece of it is in the store.
fn cached_image(store: &Store, res: &Resolution) -> Option<ImportedImage> {
    let manifest_bytes = store.read_blob(&res.manifest).ok()?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).ok()?;
    let config: ImageConfig =
        serde_json::from_slice(&store.read_blob(&manifest.config.digest).ok()?).ok()?;
    Some(ImportedImage {
        manifest_bytes,
        manifest_digest: res.manifest.clone(),
        manifest,
        config,
    })
}

/// A registry image's manifest and config (into the store), as `pull` allows; its layers
/// are not downloaded.
pub(super) fn resolve_registry(
    reference: &str,
    platform: &Platform,
    store: &Store,
    registry: Option<&Client>,
    pull: PullPolicy,
) -> Result<(ImportedImage, Reference), String> {
    let r = Reference::parse(reference).map_err(|e| e.to_string())?;
    let key = resolution_key(&r, platform);
    let cached = store
        .step_get::<Resolution>(&key)
        .and_then(|res| cached_image(store, &res).map(|img| (res.top, img)));
    let client = || registry.ok_or("no registry client configured");
    let reuse = match (&cached, pull) {
        (Some(_), PullPolicy::Missing | PullPolicy::Never) => true,
        // Already resolved or re-checked by this process (the frontend reads a base's config
        // before the build loads it): one build asks the registry once per tag.
        (Some((top, _)), _) if checked_this_run(&key, None).as_ref() == Some(top) => true,
        // A digest reference cannot move.
        (Some(_), PullPolicy::Newer) if r.digest.is_some() => true,
        (Some((top, _)), PullPolicy::Newer) => {
            let now = client()?.manifest_digest(&r).map_err(|e| {
                format!("{e} (--pull=missing or --pull=never use the cached image)")
            })?;
            tracing::debug!(base = %r, cached = %top, registry = %now, "re-checked the tag");
            let same = &now == top;
            if same {
                checked_this_run(&key, Some(now));
            }
            same
        }
        (None, PullPolicy::Never) => {
            return Err(
                "not in the cache, and --pull=never forbids pulling it (build once without \
                 --pull=never, or `lade pull` it)"
                    .into(),
            )
        }
        _ => false,
    };
    if reuse {
        let (_, image) = cached.expect("reuse implies a cached image");
        return Ok((image, r));
    }
    let image = client()?
        .resolve(store, &r, platform)
        .map_err(|e| e.to_string())?;
    let config: ImageConfig =
        serde_json::from_slice(&image.config_bytes).map_err(|e| format!("config: {e}"))?;
    store
        .step_put(
            &key,
            &Resolution {
                top: image.top_digest.clone(),
                manifest: image.manifest_digest.clone(),
            },
        )
        .map_err(|e| e.to_string())?;
    checked_this_run(&key, Some(image.top_digest.clone()));
    Ok((
        ImportedImage {
            manifest_bytes: image.manifest_bytes,
            manifest_digest: image.manifest_digest,
            manifest: image.manifest,
            config,
        },
        r,
    ))
}

/// Makes sure `layers` are in the store, downloading those that are not from `origin` (the
/// registry image they come from) unless `pull` is [`PullPolicy::Never`]. Without an origin
/// they must all be there already.
pub fn fetch_layers(
    layers: &[Descriptor],
    origin: Option<&Reference>,
    store: &Store,
    registry: Option<&Client>,
    pull: PullPolicy,
) -> Result<(), ExecError> {
    let mut missing: Vec<Descriptor> = Vec::new();
    for l in layers.iter().filter(|l| !store.has_blob(&l.digest)) {
        // A shared-cache hit left in its registry comes from there, verified.
        match crate::cache::fetch_lazy(store, &l.digest) {
            Ok(true) => {}
            Ok(false) => missing.push(l.clone()),
            Err(message) => return Err(ExecError::Cache { message }),
        }
    }
    let (Some(origin), false) = (origin, missing.is_empty()) else {
        return Ok(());
    };
    let err = |message: String| ExecError::Base {
        base: origin.to_string(),
        message,
    };
    if pull == PullPolicy::Never {
        return Err(err(format!(
            "{} layer(s) are not in the cache, and --pull=never forbids downloading them",
            missing.len()
        )));
    }
    let client = registry.ok_or_else(|| err("no registry client configured".into()))?;
    tracing::debug!(base = %origin, layers = missing.len(), "fetching base layers");
    client
        .fetch_blobs(store, origin, &missing, 4)
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}
