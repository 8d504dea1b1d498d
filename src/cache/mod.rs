//! The build cache shared between machines (`--cache-to` / `--cache-from`): step records
//! exported as an OCI artifact (`format`) into an image layout directory or a registry
//! repository, and imported into a build as a second step index behind the store's.
//!
//! Import trusts nothing: a cache that is unreadable, of another format or whose config
//! does not match its manifest is ignored whole with one warning; a hit's blob is checked
//! (digest, size, and diff_id after decompression) before its record enters the store, and
//! a blob that fails is one warning and a miss. Export failures are warnings unless
//! `ignore-error=false`.

mod format;
mod transport;

pub use format::{CacheConfig, CachedLayer, ARTIFACT_TYPE, CONFIG_TYPE, FORMAT};

use crate::digest::Digest;
use crate::layer::LayerDigests;
use crate::registry::{Client, Reference};
use crate::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}")]
    Spec(String),
    #[error("cache {place}: {message}")]
    Export { place: String, message: String },
}

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// An OCI image layout directory.
    Local(PathBuf),
    Registry(Reference),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Local(d) => write!(f, "{}", d.display()),
            Place::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// Which steps an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The steps of the final image's stage.
    #[default]
    Min,
    /// Every stage's steps.
    Max,
}

/// One `--cache-to` / `--cache-from` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub place: Place,
    pub mode: Mode,
    /// `ignore-error` (default true): export failures are warnings.
    pub ignore_error: bool,
}

impl CacheSpec {
    /// Parses BuildKit's syntax: `type=local,dest=DIR` (`src=DIR` for `--cache-from`),
    /// `type=registry,ref=REF`, with `mode=min|max` and `ignore-error=true|false`.
    /// `export` says which of `dest`/`src` a local cache names.
    pub fn parse(value: &str, export: bool) -> Result<CacheSpec, CacheError> {
        let flag = if export { "--cache-to" } else { "--cache-from" };
        let bad = |m: String| CacheError::Spec(format!("{flag} {value}: {m}"));
        let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
        for part in value.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not KEY=VALUE")))?;
            kv.insert(k.trim(), v.trim());
        }
        let dir_key = if export { "dest" } else { "src" };
        let place = match kv.remove("type") {
            Some("local") => Place::Local(PathBuf::from(
                kv.remove(dir_key)
                    .ok_or_else(|| bad(format!("type=local needs {dir_key}=DIR")))?,
            )),
            Some("registry") => {
                let r = kv
                    .remove("ref")
                    .ok_or_else(|| bad("type=registry needs ref=REFERENCE".into()))?;
                Place::Registry(Reference::parse(r).map_err(|e| bad(e.to_string()))?)
            }
            Some(other) => {
                return Err(bad(format!(
                    "type={other} is not supported (local, registry)"
                )))
            }
            None => return Err(bad("type=local or type=registry is required".into())),
        };
        let mode = match kv.remove("mode") {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(m) => return Err(bad(format!("mode={m}: expected min or max"))),
        };
        let ignore_error = match kv.remove("ignore-error") {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => return Err(bad(format!("ignore-error={v}: expected true or false"))),
        };
        // BuildKit's other keys (compression, oci-mediatypes, image-manifest) do not
        // change lade's format; an unknown one is an error, not silently ignored.
        kv.retain(|k, _| !["compression", "oci-mediatypes", "image-manifest"].contains(k));
        if let Some(k) = kv.keys().next() {
            return Err(bad(format!("unknown key {k}")));
        }
        Ok(CacheSpec {
            place,
            mode,
            ignore_error,
        })
    }
}

/// One build's use of shared caches: the imported step records, and the steps the build
/// resolved, for export.
pub struct Session {
    imported: Mutex<HashMap<Digest, (CachedLayer, usize)>>,
    sources: Vec<Place>,
    registry: Option<std::sync::Arc<Client>>,
    /// (in the final image's stage, key, layer), in the order steps finished.
    used: Mutex<Vec<(bool, Digest, LayerDigests)>>,
    warnings: Mutex<Vec<String>>,
}

impl Session {
    /// Reads every `--cache-from`; one that cannot be read or verified is a warning and
    /// contributes nothing.
    pub fn import(
        from: &[CacheSpec],
        store: &Store,
        registry: Option<std::sync::Arc<Client>>,
    ) -> Session {
        let mut imported = HashMap::new();
        let mut warnings = Vec::new();
        for (i, spec) in from.iter().enumerate() {
            match transport::read(&spec.place, store, registry.as_deref()) {
                Ok(steps) => {
                    for (k, l) in steps {
                        imported.entry(k).or_insert((l, i));
                    }
                }
                Err(m) => warnings.push(format!("warning: cache {}: {m}; not used", spec.place)),
            }
        }
        Session {
            imported: Mutex::new(imported),
            sources: from.iter().map(|s| s.place.clone()).collect(),
            registry,
            used: Mutex::new(Vec::new()),
            warnings: Mutex::new(warnings),
        }
    }

    /// Warnings so far (import problems), each once.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().expect("cache lock"))
    }

    /// The imported layer of step `key`, its blob now verified in the store and its record
    /// in the store's step index; `None` (and a warning) when the blob fails its checks.
    pub fn lookup(&self, key: &Digest, store: &Store) -> Option<LayerDigests> {
        let (layer, source) = self
            .imported
            .lock()
            .expect("cache lock")
            .get(key)
            .cloned()?;
        let place = &self.sources[source];
        let checked = layer
            .digests()
            .ok_or_else(|| format!("layer {} has media type {}", layer.digest, layer.media_type));
        let result = checked.and_then(|d| {
            transport::fetch_verified(place, &d, store, self.registry.as_deref()).map(|()| d)
        });
        match result {
            Ok(d) => {
                if let Err(e) = store.step_put(key, &d) {
                    tracing::debug!("cannot record an imported step: {e}");
                }
                Some(d)
            }
            Err(m) => {
                // Every step of this blob is a miss from now on.
                self.imported
                    .lock()
                    .expect("cache lock")
                    .retain(|_, (l, _)| l.digest != layer.digest);
                self.warnings
                    .lock()
                    .expect("cache lock")
                    .push(format!("warning: cache {place}: {m}; the step is rebuilt"));
                None
            }
        }
    }

    /// Notes a step the build resolved (hit or built), for export.
    pub fn used(&self, final_stage: bool, key: &Digest, layer: &LayerDigests) {
        self.used
            .lock()
            .expect("cache lock")
            .push((final_stage, key.clone(), layer.clone()));
    }

    /// Exports the steps `spec.mode` selects. Returns a warning line for a failure that
    /// `ignore-error` turns into one.
    pub fn export(
        &self,
        spec: &CacheSpec,
        store: &Store,
        registry: Option<&Client>,
    ) -> Result<Option<String>, CacheError> {
        let steps: BTreeMap<Digest, CachedLayer> = self
            .used
            .lock()
            .expect("cache lock")
            .iter()
            .filter(|(final_stage, _, _)| *final_stage || spec.mode == Mode::Max)
            .map(|(_, k, l)| (k.clone(), CachedLayer::from_digests(l)))
            .collect();
        match transport::write(&spec.place, &steps, store, registry) {
            Ok(()) => Ok(None),
            Err(message) if spec.ignore_error => Ok(Some(format!(
                "warning: cache export to {}: {message}",
                spec.place
            ))),
            Err(message) => Err(CacheError::Export {
                place: spec.place.to_string(),
                message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_buildkit() {
        let s = CacheSpec::parse("type=local,dest=/c,mode=max", true).unwrap();
        assert_eq!(s.place, Place::Local("/c".into()));
        assert_eq!(s.mode, Mode::Max);
        assert!(s.ignore_error);
        let s = CacheSpec::parse(
            "type=registry,ref=localhost:5000/c:t,ignore-error=false",
            false,
        )
        .unwrap();
        assert!(matches!(s.place, Place::Registry(_)));
        assert!(!s.ignore_error);
        for bad in [
            "type=local,dest=/c",
            "type=s3,src=x",
            "src=/c",
            "type=local,src=/c,mode=all",
            "type=local,src=/c,colour=blue",
        ] {
            assert!(CacheSpec::parse(bad, false).is_err(), "{bad}");
        }
    }
}
