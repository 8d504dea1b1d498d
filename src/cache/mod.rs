//! The build cache shared between machines (`--cache-to` / `--cache-from`): step records
//! exported as an OCI artifact (`format`) into an image layout directory or a registry
//! repository, and imported into a build as a second step index behind the store's.
//!
//! Import trusts nothing: a cache that is unreadable, of another format or whose config
//! does not match its manifest is ignored whole with one warning; a hit's blob is checked
//! (digest, size, and diff_id after decompression) before its record enters the store, and
//! a blob that fails is one warning and a miss. Export failures are warnings unless
//! `ignore-error=false`.
//!
//! A hit from a registry cache is lazy when the build's outputs need no bytes (pushes, a
//! registry export): the registry confirms the blob's size (`HEAD`), the blob stays there,
//! and a push to the same registry mounts it. Its bytes are fetched (and its diff_id checked)
//! only when a step or an output reads them, through [`fetch_lazy`]. Until then its diff_id
//! is the cache's word, as in BuildKit's lazy cache import. A blob that then fails its
//! checks (found by a step, the SBOM or the push) drops that cache: one warning, and the
//! build runs again without it (`build::build`), its steps saying which cache failed.
//!
//! The export also carries each exported step position's inputs (`exec::why` records:
//! digests, never values); an importing build compares with them when its store has no
//! record of that position, so its "not cached" reasons name what changed.

mod format;
mod transport;

pub use format::{CacheConfig, CachedLayer, ARTIFACT_TYPE, CONFIG_TYPE, FORMAT};

use crate::digest::Digest;
use crate::exec::why::StepInputs;
use crate::layer::LayerDigests;
use crate::registry::{Client, Reference};
use crate::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// A cache hit's blob left in its registry: where it is, what the cache says it holds, and
/// the step it was the hit of.
struct LazyBlob {
    from: Reference,
    layer: LayerDigests,
    client: Arc<Client>,
    step: String,
}

/// The lazy hits of the builds running in this process, by blob digest. Process-wide, as
/// every layer read in `exec` goes through [`crate::exec::fetch_layers`], which asks here;
/// a digest names the same bytes whichever build noted it.
static LAZY: Mutex<BTreeMap<Digest, LazyBlob>> = Mutex::new(BTreeMap::new());

/// Lazy hits whose blob failed its checks when fetched: digest → (cache, warning line).
/// The build that noted them takes them with [`Session::take_lazy_failure`].
static FAILED: Mutex<BTreeMap<Digest, (Reference, String)>> = Mutex::new(BTreeMap::new());

fn lazy_blobs() -> std::sync::MutexGuard<'static, BTreeMap<Digest, LazyBlob>> {
    LAZY.lock().unwrap_or_else(|e| e.into_inner())
}

fn failed_blobs() -> std::sync::MutexGuard<'static, BTreeMap<Digest, (Reference, String)>> {
    FAILED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Brings a lazy cache hit's blob into the store, verified (digest, size, diff_id). `Ok(false)`
/// when `digest` is not a lazy hit; the error is one line naming the cache and the step, and
/// the failure is kept for the build's [`Session::take_lazy_failure`] (which rebuilds).
pub fn fetch_lazy(store: &Store, digest: &Digest) -> Result<bool, String> {
    let Some((from, layer, client, step)) = lazy_blobs().get(digest).map(|l| {
        (
            l.from.clone(),
            l.layer.clone(),
            l.client.clone(),
            l.step.clone(),
        )
    }) else {
        return Ok(false);
    };
    let fetched =
        transport::fetch_verified(&Place::Registry(from.clone()), &layer, store, Some(&client));
    lazy_blobs().remove(digest);
    if let Err(m) = fetched {
        let line = format!("cache {from}: {m} (the hit of {step})");
        failed_blobs().insert(digest.clone(), (from, line.clone()));
        return Err(line);
    }
    Ok(true)
}

/// The repository each lazy hit's blob is in (for a push to mount it from).
pub fn lazy_origins() -> HashMap<Digest, Reference> {
    lazy_blobs()
        .iter()
        .map(|(d, l)| (d.clone(), l.from.clone()))
        .collect()
}

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
    /// The import, running while the build reads its context; joined at first use.
    loading: Mutex<Option<std::thread::JoinHandle<Imported>>>,
    loaded: OnceLock<Loaded>,
    /// (in the final image's stage, position, inputs) of this build's steps, for export.
    noted_records: Mutex<Vec<(bool, Digest, StepInputs)>>,
    /// Whether the build exports (`--cache-to`): only then are its records kept.
    exports: bool,
    sources: Vec<Place>,
    registry: Option<Arc<Client>>,
    /// Whether registry hits stay in the registry (see the module doc).
    lazy: bool,
    /// The blobs this session left lazy, forgotten with it.
    lazy_noted: Mutex<Vec<Digest>>,
    /// (in the final image's stage, key, layer), in the order steps finished.
    used: Mutex<Vec<(bool, Digest, LayerDigests)>>,
    warnings: Mutex<Vec<String>>,
    /// Step keys of a cache dropped for lying → that cache, for the rebuilt steps' reasons.
    distrusted: Mutex<HashMap<Digest, Place>>,
}

/// What the `--cache-from` caches hold: step key → (layer, index of its cache), the step
/// inputs by position (the first cache that has one wins), and the import's warnings.
#[derive(Default)]
struct Imported {
    /// Shared: a lookup takes its record out without copying its listing.
    steps: HashMap<Digest, (Arc<CachedLayer>, usize)>,
    records: HashMap<Digest, StepInputs>,
    warnings: Vec<String>,
}

struct Loaded {
    imported: Mutex<HashMap<Digest, (Arc<CachedLayer>, usize)>>,
    records: HashMap<Digest, StepInputs>,
}

fn import_all(from: &[CacheSpec], store: &Store, registry: Option<&Client>) -> Imported {
    let mut all = Imported::default();
    for (i, spec) in from.iter().enumerate() {
        match transport::read(&spec.place, store, registry) {
            Ok(cache) => {
                for (k, l) in cache.steps {
                    all.steps.entry(k).or_insert((Arc::new(l), i));
                }
                for (p, r) in cache.records {
                    if r.is_current() {
                        all.records.entry(p).or_insert(r);
                    }
                }
            }
            Err(m) => all
                .warnings
                .push(format!("warning: cache {}: {m}; not used", spec.place)),
        }
    }
    all
}

impl Session {
    /// Starts reading every `--cache-from` (the build's first steps read the context
    /// meanwhile); one that cannot be read or verified is a warning and contributes
    /// nothing. `lazy`: registry hits are not downloaded (the outputs are pushes);
    /// `exports`: the build has a `--cache-to`; `distrusted`: step keys of caches an earlier
    /// run of this build dropped for lying, named in their steps' reasons.
    pub fn import(
        from: &[CacheSpec],
        store: &Store,
        registry: Option<Arc<Client>>,
        lazy: bool,
        exports: bool,
        distrusted: HashMap<Digest, Place>,
    ) -> Session {
        let loading = (!from.is_empty()).then(|| {
            let (from, store, registry) = (from.to_vec(), store.clone(), registry.clone());
            std::thread::spawn(move || import_all(&from, &store, registry.as_deref()))
        });
        Session {
            loading: Mutex::new(loading),
            loaded: OnceLock::new(),
            noted_records: Mutex::new(Vec::new()),
            exports,
            sources: from.iter().map(|s| s.place.clone()).collect(),
            registry,
            lazy,
            lazy_noted: Mutex::new(Vec::new()),
            used: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            distrusted: Mutex::new(distrusted),
        }
    }

    /// The step keys of the caches this session dropped for lying (see [`Session::import`]).
    pub fn take_distrusted(&self) -> HashMap<Digest, Place> {
        std::mem::take(&mut *self.distrusted.lock().expect("cache lock"))
    }

    /// Drops every step of cache `source` (it lied), remembering their keys.
    fn distrust(&self, source: usize) {
        let mut distrusted = self.distrusted.lock().expect("cache lock");
        self.loaded()
            .imported
            .lock()
            .expect("cache lock")
            .retain(|k, (_, s)| {
                if *s == source {
                    distrusted.insert(k.clone(), self.sources[source].clone());
                }
                *s != source
            });
    }

    /// Why step `key` is built although a cache had it: that cache was dropped for lying.
    pub fn distrusted(&self, key: &Digest) -> Option<String> {
        let place = self
            .distrusted
            .lock()
            .expect("cache lock")
            .get(key)
            .cloned()?;
        Some(format!(
            "cache {place} had it, but failed its checks and is not used"
        ))
    }

    /// The imported caches, waiting for the import if it still runs.
    fn loaded(&self) -> &Loaded {
        self.loaded.get_or_init(|| {
            let handle = self.loading.lock().expect("cache lock").take();
            let all = match handle.map(std::thread::JoinHandle::join) {
                Some(Ok(all)) => all,
                Some(Err(_)) => Imported {
                    warnings: vec!["warning: the cache import failed; no cache used".into()],
                    ..Imported::default()
                },
                None => Imported::default(),
            };
            self.warnings
                .lock()
                .expect("cache lock")
                .extend(all.warnings);
            Loaded {
                imported: Mutex::new(all.steps),
                records: all.records,
            }
        })
    }

    /// Warnings so far (import problems), each once.
    pub fn take_warnings(&self) -> Vec<String> {
        self.loaded();
        std::mem::take(&mut *self.warnings.lock().expect("cache lock"))
    }

    /// The imported layer of step `key`, its blob now verified in the store and its record
    /// in the store's step index; `None` (and a warning) when the blob fails its checks.
    pub fn lookup(&self, key: &Digest, step: &str, store: &Store) -> Option<LayerDigests> {
        let (layer, source) = self
            .loaded()
            .imported
            .lock()
            .expect("cache lock")
            .get(key)
            .cloned()?;
        let place = &self.sources[source];
        let lazy = match (place, &self.registry) {
            (Place::Registry(r), Some(client)) if self.lazy => Some((r, client)),
            _ => None,
        };
        // Err((message, whole)): `whole` when the cache lied (a record that does not match
        // its blob): nothing else of it is trusted either. A missing blob is that step's miss.
        let result = match layer.digests() {
            None => Err((
                format!("layer {} has media type {}", layer.digest, layer.media_type),
                true,
            )),
            Some(d) => self.check(place, lazy, d, store),
        };
        match result {
            Ok(d) if !store.has_blob(&d.digest) => {
                let (r, client) = lazy.expect("only lazy hits leave the blob out");
                if let Some(n) = &layer.notes {
                    if let Err(e) = crate::exec::seed_layer_notes(store, &d, n) {
                        tracing::debug!("cannot record an imported layer's notes: {e}");
                    }
                }
                lazy_blobs().insert(
                    d.digest.clone(),
                    LazyBlob {
                        from: r.clone(),
                        layer: d.clone(),
                        client: client.clone(),
                        step: step.to_string(),
                    },
                );
                self.lazy_noted
                    .lock()
                    .expect("cache lock")
                    .push(d.digest.clone());
                Some(d)
            }
            Ok(d) => {
                if let Err(e) = store.step_put(key, &d) {
                    tracing::debug!("cannot record an imported step: {e}");
                }
                Some(d)
            }
            Err((m, whole)) => {
                let line = if whole {
                    self.distrust(source);
                    format!("warning: cache {place}: {m}; not used")
                } else {
                    // Every step of this blob is a miss from now on.
                    self.loaded()
                        .imported
                        .lock()
                        .expect("cache lock")
                        .retain(|_, (l, _)| l.digest != layer.digest);
                    format!("warning: cache {place}: {m}; the step is rebuilt")
                };
                self.warnings.lock().expect("cache lock").push(line);
                None
            }
        }
    }

    /// Checks a hit's blob: present with its size, and unless `lazy`, fetched into the store
    /// with its diff_id verified.
    fn check(
        &self,
        place: &Place,
        lazy: Option<(&Reference, &Arc<Client>)>,
        d: LayerDigests,
        store: &Store,
    ) -> Result<LayerDigests, (String, bool)> {
        let size = match place {
            _ if store.has_blob(&d.digest) => Some(d.size),
            Place::Local(dir) => std::fs::metadata(dir.join("blobs/sha256").join(d.digest.hex()))
                .ok()
                .map(|m| m.len()),
            Place::Registry(r) => {
                let client = self
                    .registry
                    .as_ref()
                    .ok_or(("no registry client".into(), true))?;
                client
                    .blob_size(r, &d.digest)
                    .map_err(|e| (e.to_string(), false))?
            }
        };
        match size {
            None => return Err((format!("blob {} is missing", d.digest), false)),
            Some(n) if n != d.size => {
                return Err((
                    format!("blob {} is {n} bytes, the cache says {}", d.digest, d.size),
                    true,
                ))
            }
            Some(_) => {}
        }
        if lazy.is_some() && !store.has_blob(&d.digest) {
            return Ok(d);
        }
        transport::fetch_verified(place, &d, store, self.registry.as_deref())
            .map(|()| d)
            .map_err(|m| (m, true))
    }

    /// After a failed build: when one of this session's lazy hits failed its checks as it was
    /// fetched, forgets that cache (it lied), this session's other lazy hits and what the
    /// build noted for export, and returns the warning line: the build is to be run again,
    /// the steps the cache gave rebuilt.
    pub fn take_lazy_failure(&self) -> Option<(Place, String)> {
        let mut noted = self.lazy_noted.lock().expect("cache lock");
        let (from, line) = {
            let mut failed = failed_blobs();
            let d = noted.iter().find(|d| failed.contains_key(*d))?.clone();
            failed.remove(&d)?
        };
        let mut lazy = lazy_blobs();
        for d in noted.drain(..) {
            lazy.remove(&d);
        }
        let source = self
            .sources
            .iter()
            .position(|p| *p == Place::Registry(from.clone()));
        if let Some(source) = source {
            self.distrust(source);
        }
        self.used.lock().expect("cache lock").clear();
        self.noted_records.lock().expect("cache lock").clear();
        Some((
            Place::Registry(from),
            format!("warning: {line}; not used, the build runs again without it"),
        ))
    }

    /// The inputs of the step at `position` in the imported caches' build of it.
    pub fn record(&self, position: &Digest) -> Option<&StepInputs> {
        self.loaded().records.get(position)
    }

    /// Notes the inputs of the step at `position` in this build, for export.
    pub fn note_record(&self, final_stage: bool, position: &Digest, inputs: &StepInputs) {
        if !self.exports {
            return;
        }
        self.noted_records.lock().expect("cache lock").push((
            final_stage,
            position.clone(),
            inputs.clone(),
        ));
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
        let selected = |final_stage: &bool| *final_stage || spec.mode == Mode::Max;
        let steps: BTreeMap<Digest, CachedLayer> = self
            .used
            .lock()
            .expect("cache lock")
            .iter()
            .filter(|(final_stage, _, _)| selected(final_stage))
            .map(|(_, k, l)| {
                let mut c = CachedLayer::from_digests(l);
                c.notes = crate::exec::layer_notes(store, l);
                (k.clone(), c)
            })
            .collect();
        let records = self
            .noted_records
            .lock()
            .expect("cache lock")
            .iter()
            .filter(|(final_stage, _, _)| selected(final_stage))
            .map(|(_, p, r)| (p.clone(), r.clone()))
            .collect();
        let cache = CacheConfig {
            steps,
            records,
            ..CacheConfig::default()
        };
        let fetched = match &spec.place {
            // A layout holds bytes: lazy hits are fetched first.
            Place::Local(_) => cache
                .steps
                .values()
                .try_for_each(|l| fetch_lazy(store, &l.digest).map(|_| ())),
            Place::Registry(_) => Ok(()),
        };
        match fetched.and_then(|()| transport::write(&spec.place, &cache, store, registry)) {
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

impl Drop for Session {
    fn drop(&mut self) {
        // An import nobody waited for still writes into the store: let it finish.
        if let Some(h) = self.loading.get_mut().ok().and_then(Option::take) {
            let _ = h.join();
        }
        let mine = std::mem::take(&mut *self.lazy_noted.lock().unwrap_or_else(|e| e.into_inner()));
        let mut all = lazy_blobs();
        for d in mine {
            all.remove(&d);
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
