//! A whole build as a library call: one [`BuildRequest`] (what the CLI made of its
//! arguments) → read and lower the description per platform → exec → every output (files,
//! registry push, iid/digest/metadata files) → a [`BuildResult`] the caller prints.

mod export;

use crate::context::BuildContext;
use crate::digest::Digest;
use crate::exec::{self, ExecOptions, Observer};
use crate::frontend::dockerfile::lower::{BaseConfigs, LowerOptions};
use crate::image::{BuiltImage, ImageConfig, Platform};
use crate::lock::{Lock, LockMode};
use crate::output::{self, Artifact, OutputError, Target};
use crate::plan::{Base, Plan};
use crate::registry::{Client, ClientOptions, PushReport, RegistryError};
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which frontend reads what.
#[derive(Clone)]
pub enum Description {
    /// A `lade.toml`; its directory is the context.
    Spec(PathBuf),
    Dockerfile {
        /// `None`: `Dockerfile` in the context; `-`: standard input.
        file: Option<PathBuf>,
        context: PathBuf,
        /// `base_configs` and `platform` are filled per platform by [`build`].
        opts: Box<LowerOptions>,
    },
    /// A plan made by a caller (a build hook such as `cargo lade`); `name` is how errors name
    /// its source (a `Cargo.toml`).
    Plan {
        plan: Box<Plan>,
        context: PathBuf,
        name: String,
    },
}

/// Everything a build needs, validated by the caller.
pub struct BuildRequest {
    pub description: Description,
    /// Empty: the description's platform, else the host's.
    pub platforms: Vec<Platform>,
    pub store_root: PathBuf,
    pub exec: ExecOptions,
    /// How to reach registries (bases, `COPY --from` images, pushes); a client is made only
    /// when one is needed.
    pub registry: ClientOptions,
    /// Parallel blob uploads per push.
    pub push_jobs: usize,
    /// In the order given; [`Target::Registry`] pushes to every tag.
    pub outputs: Vec<Target>,
    /// Added to the description's own tags.
    pub tags: Vec<String>,
    pub iidfile: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    pub digest_file: Option<PathBuf>,
    /// Worker threads (layers, stages, gzip); `None`: one per core.
    pub jobs: Option<usize>,
    /// `--load`: hand the image to this local engine after the other outputs.
    pub load: Option<output::Engine>,
    /// Added to each image manifest (to one platform's only, when given), over the
    /// description's own.
    pub manifest_annotations: Vec<(Option<Platform>, String, String)>,
    /// On the index of a multi-platform build.
    pub index_annotations: output::IndexAnnotations,
    /// Registry references (normalised, [`local_image_key`]) that this build reads from
    /// elsewhere: `FROM`/`COPY --from` of such a name use the base given here (`lade compose
    /// build`: an image another service just built, not yet in any registry).
    pub local_images: std::collections::BTreeMap<String, Base>,
    /// `--cache-from`, in order (the first holding a step wins).
    pub cache_from: Vec<crate::cache::CacheSpec>,
    /// `--cache-to`.
    pub cache_to: Vec<crate::cache::CacheSpec>,
    /// What to do with the description's `lade.lock`.
    pub lock: crate::lock::LockMode,
    /// `--sbom`, `--provenance`: attestations attached to each image.
    pub attest: crate::attest::AttestOptions,
}

impl BuildRequest {
    /// A build of `description` into the store at `store_root` only (no outputs, no tags, no
    /// caches, annotations, lock updates or attestations), with `exec`'s layer options.
    pub fn new(
        description: Description,
        store_root: PathBuf,
        exec: ExecOptions,
        registry: ClientOptions,
        push_jobs: usize,
    ) -> BuildRequest {
        BuildRequest {
            description,
            platforms: Vec::new(),
            store_root,
            exec,
            registry,
            push_jobs,
            outputs: Vec::new(),
            tags: Vec::new(),
            iidfile: None,
            metadata_file: None,
            digest_file: None,
            jobs: None,
            load: None,
            manifest_annotations: Vec::new(),
            index_annotations: Default::default(),
            local_images: Default::default(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            lock: Default::default(),
            attest: Default::default(),
        }
    }
}

/// How [`BuildRequest::local_images`] keys a reference: `docker.io/library/name:latest` for
/// `name`; None for what is not a registry reference.
pub fn local_image_key(reference: &str) -> Option<String> {
    crate::registry::Reference::parse(reference)
        .ok()
        .map(|r| r.to_string())
}

/// The local stand-in of `base`, if it is a registry image the request has one for.
fn local_base(local: &std::collections::BTreeMap<String, Base>, base: &Base) -> Option<Base> {
    match base {
        Base::Registry { reference } => local.get(&local_image_key(reference)?).cloned(),
        _ => None,
    }
}

/// Replaces the plan's registry bases and `COPY --from` images that the request has local
/// stand-ins for.
fn use_local_images(plan: &mut Plan, local: &std::collections::BTreeMap<String, Base>) {
    use crate::plan::{CopyFrom, FileSet, Step};
    if local.is_empty() {
        return;
    }
    for stage in &mut plan.stages {
        if let Some(b) = local_base(local, &stage.base) {
            stage.base = b;
        }
        for step in &mut stage.steps {
            let Step::Layer(l) = step else { continue };
            for set in &mut l.sources {
                if let FileSet::Copy {
                    from: CopyFrom::Image { base },
                    ..
                } = set
                {
                    if let Some(b) = local_base(local, base) {
                        *base = b;
                    }
                }
            }
        }
    }
}

/// What a build produced and where it went.
pub struct BuildResult {
    pub artifact: Artifact,
    /// The description's tags, then the request's.
    pub tags: Vec<String>,
    /// One report per repository pushed to.
    pub pushed: Vec<PushReport>,
    /// With `--load`: what the engine said (`Loaded image: …`).
    pub loaded: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The request cannot be carried out as given (the CLI's exit code 2).
    #[error("{0}")]
    Usage(String),
    /// An error of the build description, rendered at its line (`FILE:LINE:COL: …` + snippet).
    #[error("{0}")]
    Located(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Attest(#[from] crate::attest::AttestError),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::Io { what, source }
}

/// Builds the request's image (one per platform, under an index for several) and writes it to
/// every output. Nothing is written to an output unless every platform built.
pub fn build(req: &BuildRequest, observer: &dyn Observer) -> Result<BuildResult, BuildError> {
    let mut retry = Retry::default();
    loop {
        let steps = StepLog::new(observer);
        let result = build_once(req, &steps, &mut retry);
        // A lazy cache hit whose blob turned out not to be what the cache said (found by a
        // step, the SBOM or the push, whichever read it first): that cache is dropped and
        // the build runs again without it (each cache can fail once).
        let session = retry.session.take();
        match (
            &result,
            session.and_then(|s| s.take_lazy_failure().map(|f| (s, f))),
        ) {
            (Err(_), Some((s, (place, line)))) => {
                observer.note(&line);
                retry.distrusted.extend(s.take_distrusted());
                retry.dropped.push(place);
            }
            _ => return result,
        }
    }
}

/// What a build run again after a cache failed carries over: the caches to leave out, the
/// step keys they had (for the rebuilt steps' reasons), and this run's cache session.
#[derive(Default)]
struct Retry {
    dropped: Vec<crate::cache::Place>,
    distrusted: std::collections::HashMap<crate::digest::Digest, crate::cache::Place>,
    session: Option<Arc<crate::cache::Session>>,
}

fn build_once(
    req: &BuildRequest,
    steps: &StepLog<'_>,
    retry: &mut Retry,
) -> Result<BuildResult, BuildError> {
    let observer: &dyn Observer = steps;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.jobs.unwrap_or(0))
        .build()
        .map_err(|e| BuildError::Io {
            what: "starting worker threads".into(),
            source: std::io::Error::other(e),
        })?;
    let store = Store::open(&req.store_root)?;
    sweep_stale_temps(&store, req);
    let registry = Registry::new(&req.registry);
    let lock = match req.lock {
        LockMode::Update => Some(lock_with(req, &store, &registry, observer)?.1),
        LockMode::Use | LockMode::Locked => Lock::read(&lock_path(&req.description))?,
    };
    let lock = lock.map(Arc::new);
    let base_configs =
        BaseConfigReader::new(&store, registry.clone(), req, req.exec.pull, lock.clone());
    let push = req.outputs.iter().any(|o| matches!(o, Target::Registry));
    let mut exec_opts = req.exec.clone();
    // --jobs N bounds compression too: N gzip workers per layer, and at most N blocks
    // compressed at once across the layers built in parallel.
    exec_opts.compress_threads = req.jobs;
    if let Some(n) = req.jobs {
        crate::layer::set_compression_limit(n);
    }
    let platforms: Vec<Option<&Platform>> = if req.platforms.is_empty() {
        vec![None]
    } else {
        req.platforms.iter().map(Some).collect()
    };
    let mut images: Vec<BuiltImage> = Vec::new();
    let mut plan_tags = Vec::new();
    let mut cache_to = Vec::new();
    let mut floating = std::collections::BTreeSet::new();
    let mut inputs = crate::attest::BuildInputs::default();
    for platform in platforms {
        let Loaded {
            mut plan,
            context,
            source,
        } = load(&req.description, platform, observer, &base_configs)?;
        for (only, k, v) in &req.manifest_annotations {
            let applies = match (only, platform) {
                (None, _) => true,
                (Some(p), Some(built)) => p.matches(built),
                (Some(p), None) => p.matches(&plan.stages[plan.target].platform),
            };
            if applies {
                plan.annotations.insert(k.clone(), v.clone());
            }
        }
        use_local_images(&mut plan, &req.local_images);
        floating.extend(apply_lock(&mut plan, lock.as_deref(), req)?);
        if images.is_empty() {
            // The request's caches, else the description's (lade.toml's [cache]).
            let pick = |own: &[crate::cache::CacheSpec], plan: &[crate::cache::CacheSpec]| {
                if own.is_empty() { plan } else { own }.to_vec()
            };
            cache_to = pick(&req.cache_to, &plan.cache_to);
            let mut cache_from = pick(&req.cache_from, &plan.cache_from);
            cache_from.retain(|c| !retry.dropped.contains(&c.place));
            open_caches(
                &cache_from,
                &cache_to,
                req,
                &registry,
                &store,
                &mut exec_opts,
                std::mem::take(&mut retry.distrusted),
            )?;
            retry.session = exec_opts.cache.clone();
        }
        if exec_opts.registry.is_none() && (push || uses_registry(&plan)) {
            exec_opts.registry = Some(registry.client()?);
        }
        let image = pool.install(|| exec::build(&plan, &context, &store, &exec_opts, observer));
        if let Some(c) = &exec_opts.cache {
            for w in c.take_warnings() {
                observer.note(&w);
            }
        }
        let image = image.map_err(|e| source.locate(e))?;
        if req.attest.provenance {
            record_inputs(
                &mut inputs,
                req,
                &plan,
                &context,
                &source,
                &store,
                &exec_opts,
            )?;
        }
        images.push(image);
        plan_tags = plan.tags;
    }
    if !floating.is_empty() {
        // One line (tracing prints warnings to stderr whatever the progress mode).
        tracing::warn!(
            "{} may move (a tag, not a digest, and not in {}): `lade lock` pins it",
            floating.into_iter().collect::<Vec<_>>().join(", "),
            lock_path(&req.description).display()
        );
    }
    let mut tags = plan_tags;
    tags.extend(req.tags.iter().cloned());
    tags.dedup();
    let mut attestations = Vec::new();
    if req.attest.any() {
        inputs.source_date_epoch = req.exec.source_date_epoch;
        for image in &images {
            if req.attest.sbom {
                // The SBOM reads every layer, the base's too.
                exec::fetch_image_layers(
                    image,
                    &store,
                    exec_opts.registry.as_deref(),
                    exec_opts.pull,
                )?;
            }
            attestations.push(crate::attest::attest(
                image,
                &tags,
                &inputs,
                &req.attest,
                &store,
            )?);
        }
    }
    let artifact = Artifact::assembled(images, attestations, &req.index_annotations, &store)?;

    for t in &tags {
        output::split_tag(t)
            .map_err(|e| BuildError::Usage(format!("tag from the build description: {e}")))?;
    }
    if push && tags.is_empty() {
        return Err(BuildError::Usage(
            "--push needs a name to push to: -t registry/repository:tag".into(),
        ));
    }
    let mut pushed: Vec<PushReport> = Vec::new();
    for target in &req.outputs {
        let client = exec_opts.registry.as_deref();
        let to = match target {
            Target::Registry => {
                let client = client.expect("made above for a push");
                // Base layers are mounted from the base's repository on the same registry,
                // else fetched and uploaded.
                let mount_from = artifact.images[0].base_origin.clone();
                // Pushing to another registry than the base's needs the base layers' bytes:
                // fetch them now, as --pull allows (the push would fetch them otherwise,
                // ignoring it).
                // Shared-cache hits never downloaded are mounted from the cache's
                // repository likewise.
                let blob_origins = crate::cache::lazy_origins();
                let origins = mount_from.iter().chain(blob_origins.values());
                let registries: std::collections::BTreeSet<&str> =
                    origins.map(|o| o.registry.as_str()).collect();
                {
                    let elsewhere = tags.iter().any(|t| {
                        crate::registry::Reference::parse(t)
                            .is_ok_and(|r| registries.iter().any(|o| r.registry != *o))
                    });
                    if elsewhere {
                        for image in &artifact.images {
                            exec::fetch_image_layers(image, &store, Some(client), exec_opts.pull)?;
                        }
                    }
                }
                Some(output::PushTo {
                    client,
                    options: crate::registry::PushOptions {
                        jobs: req.push_jobs.max(1),
                        mount_from,
                        blob_origins,
                        ..Default::default()
                    },
                })
            }
            _ => {
                // Files hold every byte: base layers never downloaded are fetched now.
                for image in &artifact.images {
                    exec::fetch_image_layers(image, &store, client, exec_opts.pull)?;
                }
                None
            }
        };
        match target {
            Target::Local { dir } => {
                export::local(dir, &artifact, &store)?;
                continue;
            }
            Target::Tar { dest } => {
                export::tar(dest, &artifact, &store)?;
                continue;
            }
            _ => {}
        }
        pushed.extend(output::write(
            target,
            &artifact,
            &tags,
            &store,
            to.as_ref(),
        )?);
        tracing::debug!("output written");
    }
    let loaded = match req.load {
        Some(engine) => {
            for image in &artifact.images {
                exec::fetch_image_layers(
                    image,
                    &store,
                    exec_opts.registry.as_deref(),
                    exec_opts.pull,
                )?;
            }
            Some(output::load(engine, &artifact, &tags, &store)?)
        }
        None => None,
    };
    if let Some(c) = &exec_opts.cache {
        for spec in &cache_to {
            if let Some(w) = c.export(spec, &store, exec_opts.registry.as_deref())? {
                observer.note(&w);
            }
        }
    }
    if let Some(f) = &req.iidfile {
        let docker = req.load.is_some()
            || req
                .outputs
                .iter()
                .any(|o| matches!(o, Target::Docker { .. }));
        let top = artifact.top().digest;
        let id = match artifact.single_image() {
            Some(image) if docker => &image.config_digest,
            _ => &top,
        };
        output::write_small_file(f, id.to_string().as_bytes())
            .map_err(io(format!("writing {}", f.display())))?;
    }
    if let Some(f) = &req.digest_file {
        output::write_small_file(f, artifact.top().digest.to_string().as_bytes())
            .map_err(io(format!("writing {}", f.display())))?;
    }
    if let Some(f) = &req.metadata_file {
        let mut doc = output::metadata_json(&artifact, &tags);
        if push {
            let refs: Vec<&String> = pushed.iter().flat_map(|r| &r.references).collect();
            doc["lade.pushed"] = serde_json::json!(refs);
        }
        doc["lade.steps"] = steps.json();
        let json = serde_json::to_vec_pretty(&doc).expect("metadata serialises");
        output::write_small_file(f, &json).map_err(io(format!("writing {}", f.display())))?;
    }
    Ok(BuildResult {
        artifact,
        tags,
        pushed,
        loaded,
    })
}

/// Imports `from` and prepares the export to `to` (`exec_opts.cache`), with a registry client
/// if one of them is in a registry.
fn open_caches(
    from: &[crate::cache::CacheSpec],
    to: &[crate::cache::CacheSpec],
    req: &BuildRequest,
    registry: &Registry,
    store: &Store,
    exec_opts: &mut ExecOptions,
    distrusted: std::collections::HashMap<crate::digest::Digest, crate::cache::Place>,
) -> Result<(), BuildError> {
    if from.is_empty() && to.is_empty() && distrusted.is_empty() {
        return Ok(());
    }
    let in_registry =
        |c: &crate::cache::CacheSpec| matches!(c.place, crate::cache::Place::Registry(_));
    if from.iter().chain(to).any(in_registry) && exec_opts.registry.is_none() {
        exec_opts.registry = Some(registry.client()?);
    }
    // Hits may stay in the registry when no output needs their bytes.
    let lazy =
        req.outputs.iter().all(|o| matches!(o, Target::Registry)) && to.iter().all(in_registry);
    let session = crate::cache::Session::import(
        from,
        store,
        exec_opts.registry.clone(),
        lazy,
        !to.is_empty(),
        distrusted,
    );
    exec_opts.cache = Some(Arc::new(session));
    Ok(())
}

/// Passes every report on and keeps what each step did, for `--metadata-file`'s
/// `lade.steps`: `{"step", "cached", "reason"}` in the order steps finished.
struct StepLog<'a> {
    inner: &'a dyn Observer,
    /// Steps that missed the cache and why, until they finish.
    reasons: std::sync::Mutex<std::collections::HashMap<String, String>>,
    done: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl<'a> StepLog<'a> {
    fn new(inner: &'a dyn Observer) -> StepLog<'a> {
        StepLog {
            inner,
            reasons: Default::default(),
            done: Default::default(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.done.lock().expect("step log lock").clone())
    }
}

impl Observer for StepLog<'_> {
    fn step_started(&self, name: &str) {
        self.inner.step_started(name)
    }
    fn step_rebuilt(&self, name: &str, reason: &str) {
        self.reasons
            .lock()
            .expect("step log lock")
            .insert(name.to_string(), reason.to_string());
        self.inner.step_rebuilt(name, reason)
    }
    fn step_finished(&self, name: &str, layer: &crate::layer::LayerDigests, cached: bool) {
        let reason = self.reasons.lock().expect("step log lock").remove(name);
        let mut step = serde_json::json!({"step": name, "cached": cached, "digest": layer.digest});
        if let Some(r) = reason.filter(|_| !cached) {
            step["reason"] = serde_json::json!(r);
        }
        self.done.lock().expect("step log lock").push(step);
        self.inner.step_finished(name, layer, cached)
    }
    fn note(&self, line: &str) {
        self.inner.note(line)
    }
    fn step_output(&self, name: &str, chunk: &[u8]) {
        self.inner.step_output(name, chunk)
    }
}

/// Per stage, per step: the step's cache key, where it can be known without building.
pub type PlanKeys = Vec<Vec<Option<Digest>>>;

/// The plan of the request's one platform and its steps' cache keys where they can be known
/// without building (`lade plan`).
/// Removes what builds killed without a chance to clean up (SIGKILL, a crash) left in the
/// store, in `$TMPDIR` and where this build writes; running builds' temps are locked and stay.
fn sweep_stale_temps(store: &Store, req: &BuildRequest) {
    let mut removed = store.sweep_stale_temps()
        + crate::store::sweep_stale_scratch()
        + crate::exec::run::sweep_stale_containers(store)
        + crate::exec::run::sweep_stale_snapshots(store);
    for target in &req.outputs {
        removed += output::sweep_stale_temps(target);
    }
    for file in [&req.iidfile, &req.metadata_file].into_iter().flatten() {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        removed += crate::store::sweep(dir, &[crate::store::ATOMIC_TEMP]);
    }
    if removed > 0 {
        tracing::info!("removed {removed} temp files and directories left by killed builds");
    }
}

pub fn plan(req: &BuildRequest, observer: &dyn Observer) -> Result<(Plan, PlanKeys), BuildError> {
    if req.platforms.len() > 1 {
        return Err(BuildError::Usage(
            "lade plan shows one platform's plan: give one --platform".into(),
        ));
    }
    let store = Store::open(&req.store_root)?;
    let base_configs = BaseConfigReader::new(
        &store,
        Registry::new(&req.registry),
        req,
        req.exec.pull,
        None,
    );
    let Loaded {
        mut plan,
        context,
        source,
    } = load(
        &req.description,
        req.platforms.first(),
        observer,
        &base_configs,
    )?;
    use_local_images(&mut plan, &req.local_images);
    let keys =
        exec::cache_keys(&plan, &context, &store, &req.exec).map_err(|e| source.locate(e))?;
    Ok((plan, keys))
}

/// A registry client made on first use and shared by the rest of the build.
#[derive(Clone)]
struct Registry {
    options: ClientOptions,
    client: Arc<std::sync::OnceLock<Result<Arc<Client>, String>>>,
}

impl Registry {
    fn new(options: &ClientOptions) -> Registry {
        Registry {
            options: options.clone(),
            client: Default::default(),
        }
    }

    fn get(&self) -> Result<Arc<Client>, String> {
        self.client
            .get_or_init(|| {
                Client::new(self.options.clone())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    fn client(&self) -> Result<Arc<Client>, RegistryError> {
        match self.get() {
            Ok(c) => Ok(c),
            // Made again for the typed error.
            Err(_) => Ok(Arc::new(Client::new(self.options.clone())?)),
        }
    }
}

/// Base image configs for the Dockerfile frontend (its `BaseConfigs`): layouts and archives
/// read through the filesystem, registry images through the build's registry client.
struct BaseConfigReader {
    store: Store,
    registry: Registry,
    pull: exec::PullPolicy,
    local: std::collections::BTreeMap<String, Base>,
    /// Registry bases it pins are read at their pinned digest.
    lock: Option<Arc<Lock>>,
}

impl BaseConfigReader {
    fn new(
        store: &Store,
        registry: Registry,
        req: &BuildRequest,
        pull: exec::PullPolicy,
        lock: Option<Arc<Lock>>,
    ) -> Arc<BaseConfigReader> {
        Arc::new(BaseConfigReader {
            store: store.clone(),
            registry,
            pull,
            local: req.local_images.clone(),
            lock,
        })
    }
}

impl BaseConfigs for BaseConfigReader {
    fn config(&self, base: &Base, platform: &Platform) -> Result<ImageConfig, String> {
        let local = local_base(&self.local, base);
        let base = local.as_ref().unwrap_or(base);
        let client = match base {
            Base::Registry { .. } => Some(self.registry.get()?),
            _ => None,
        };
        let pinned = match (base, &self.lock) {
            (Base::Registry { reference }, Some(lock)) => lock
                .pin(reference, platform)
                .map(|reference| Base::Registry { reference }),
            _ => None,
        };
        let base = pinned.as_ref().unwrap_or(base);
        exec::base_config(base, platform, &self.store, client.as_deref(), self.pull)
            .map_err(|e| e.to_string())
    }
}

/// A lowered build description.
struct Loaded {
    plan: Plan,
    /// For a spec, the spec's directory.
    context: BuildContext,
    source: SourceText,
}

/// The text of the build description, to show errors found while building at their line.
struct SourceText {
    name: String,
    src: String,
}

impl SourceText {
    /// An error of a plan item written in this description, rendered like lowering errors:
    /// location, source line (cut around the column when long) and caret.
    fn locate(&self, e: exec::ExecError) -> BuildError {
        match e.location() {
            Some((loc, message)) if loc.file == self.name => BuildError::Located(
                crate::frontend::diag::render(loc, &self.src, &message, None),
            ),
            _ => e.into(),
        }
    }
}

/// Reads and lowers the build description; for a spec, the context is the spec's directory.
fn load(
    description: &Description,
    platform: Option<&Platform>,
    observer: &dyn Observer,
    base_configs: &Arc<BaseConfigReader>,
) -> Result<Loaded, BuildError> {
    match description {
        Description::Spec(spec) => load_spec(spec, platform),
        Description::Dockerfile {
            file,
            context,
            opts,
        } => {
            let mut opts = (**opts).clone();
            opts.base_configs = Some(base_configs.clone());
            opts.platform = platform.cloned();
            load_dockerfile(file.as_deref(), context, &opts, observer)
        }
        Description::Plan {
            plan,
            context,
            name,
        } => Ok(Loaded {
            plan: (**plan).clone(),
            context: BuildContext::new(context, &[])?,
            source: SourceText {
                name: name.clone(),
                src: String::new(),
            },
        }),
    }
}

fn load_dockerfile(
    file: Option<&Path>,
    context: &Path,
    opts: &LowerOptions,
    observer: &dyn Observer,
) -> Result<Loaded, BuildError> {
    use crate::frontend::dockerfile::{lower, parser};
    let context = context
        .canonicalize()
        .map_err(io(format!("build context {}", context.display())))?;
    if !context.is_dir() {
        return Err(BuildError::Usage(format!(
            "build context {} is not a directory",
            context.display()
        )));
    }
    // BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile first.
    let ignore_beside = |own: PathBuf| {
        if own.is_file() {
            own
        } else {
            context.join(".dockerignore")
        }
    };
    let (name, src, ignore_file) = match file {
        Some(f) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(io("reading the Dockerfile from standard input".into()))?;
            ("<stdin>".to_string(), s, context.join(".dockerignore"))
        }
        Some(f) => {
            let s = std::fs::read_to_string(f)
                .map_err(io(format!("cannot read Dockerfile {}", f.display())))?;
            let own = PathBuf::from(format!("{}.dockerignore", f.display()));
            (f.display().to_string(), s, ignore_beside(own))
        }
        None => {
            let f = context.join("Dockerfile");
            let s = std::fs::read_to_string(&f)
                .map_err(io(format!("cannot read Dockerfile {}", f.display())))?;
            let own = context.join("Dockerfile.dockerignore");
            (f.display().to_string(), s, ignore_beside(own))
        }
    };
    let df = parser::parse(&src).map_err(|e| BuildError::Located(e.render(&name, &src)))?;
    let mut opts = opts.clone();
    opts.context_dir = context.clone();
    let lowered =
        lower::lower(&name, &src, &df, &opts).map_err(|e| BuildError::Located(e.to_string()))?;
    if !lowered.unused_build_args.is_empty() {
        observer.note(&format!(
            "warning: build args not consumed by any ARG: {}",
            lowered.unused_build_args.join(", ")
        ));
    }
    let patterns = match std::fs::read_to_string(&ignore_file) {
        Ok(text) => crate::context::dockerignore::read_ignore_file(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(format!("reading {}", ignore_file.display()))(e)),
    };
    let ctx = BuildContext::new(&context, &patterns)?;
    Ok(Loaded {
        plan: lowered.plan,
        context: ctx,
        source: SourceText { name, src },
    })
}

fn load_spec(spec: &Path, platform: Option<&Platform>) -> Result<Loaded, BuildError> {
    let src = std::fs::read_to_string(spec)
        .map_err(io(format!("cannot read spec {}", spec.display())))?;
    let dir = spec
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir
        .canonicalize()
        .map_err(io(format!("spec directory {}", dir.display())))?;
    let name = spec.display().to_string();
    let lowered = crate::frontend::lade_toml::lower_with(
        &name,
        &src,
        &dir,
        platform,
        Some(&crate::hooks::maven::SpecProjects),
    )
    .map_err(|e| BuildError::Located(e.to_string()))?;
    let plan = lowered.plan;
    let context = BuildContext::new(&lowered.context, &[])?;
    Ok(Loaded {
        plan,
        context,
        source: SourceText { name, src },
    })
}

/// Whether building the plan reads images from a registry.
fn uses_registry(plan: &Plan) -> bool {
    use crate::plan::{CopyFrom, FileSet, Step};
    plan.stages.iter().any(|s| {
        matches!(s.base, Base::Registry { .. })
            || s.steps.iter().any(|st| match st {
                Step::Layer(l) => l.sources.iter().any(|f| {
                    matches!(
                        f,
                        FileSet::Copy {
                            from: CopyFrom::Image {
                                base: Base::Registry { .. }
                            },
                            ..
                        }
                    )
                }),
                _ => false,
            })
    })
}

/// What the provenance records of one platform's build: the description and context digests
/// (once), build args, target, and the registry bases as resolved.
fn record_inputs(
    inputs: &mut crate::attest::BuildInputs,
    req: &BuildRequest,
    plan: &Plan,
    context: &BuildContext,
    source: &SourceText,
    store: &Store,
    exec_opts: &exec::ExecOptions,
) -> Result<(), BuildError> {
    if inputs.description_digest.is_none() {
        inputs.description_digest = Some(Digest::of(source.src.as_bytes()));
        inputs.context_digest = Some(
            crate::attest::context_digest(context).map_err(crate::attest::AttestError::Context)?,
        );
        match &req.description {
            Description::Spec(_) => inputs.description_kind = "lade.toml".into(),
            // A build hook's plan (cargo lade, lade build --maven).
            Description::Plan { .. } => inputs.description_kind = "plan".into(),
            Description::Dockerfile { opts, .. } => {
                inputs.description_kind = "dockerfile".into();
                inputs.build_args = opts
                    .build_args
                    .iter()
                    .filter(|(k, _)| !req.attest.secret_ids.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                inputs.target = opts.target.clone();
            }
        }
    }
    for (reference, platform) in crate::lock::registry_bases(plan) {
        let digest = exec::registry_base_digest(
            &reference,
            &platform,
            store,
            exec_opts.registry.as_deref(),
            exec_opts.pull,
        )?;
        inputs.bases.push((reference, platform, digest));
    }
    Ok(())
}

/// Where the description's lock file is: beside the lade.toml or the Dockerfile (in the
/// context for a Dockerfile read from standard input).
pub fn lock_path(description: &Description) -> PathBuf {
    let dir = match description {
        Description::Spec(spec) => spec.parent().map(Path::to_path_buf),
        Description::Dockerfile {
            file: Some(f),
            context,
            ..
        } => Some(if f.as_os_str() == "-" {
            context.clone()
        } else {
            f.parent().map(Path::to_path_buf).unwrap_or_default()
        }),
        Description::Dockerfile { context, .. } => Some(context.clone()),
        // Beside the hook's project file (a Cargo.toml).
        Description::Plan { name, .. } => Path::new(name).parent().map(Path::to_path_buf),
    };
    match dir {
        Some(d) if !d.as_os_str().is_empty() => d.join(crate::lock::LOCK_FILE),
        _ => PathBuf::from(crate::lock::LOCK_FILE),
    }
}

/// Pins the plan's registry bases the lock has; with `--locked` a base it lacks is an error.
/// Returns the tags the build reads unpinned (they may move).
fn apply_lock(
    plan: &mut Plan,
    lock: Option<&Lock>,
    req: &BuildRequest,
) -> Result<Vec<String>, BuildError> {
    let unpinned: Vec<(String, Platform)> = crate::lock::registry_bases(plan)
        .into_iter()
        .filter(|(r, p)| crate::lock::is_floating(r) && lock.is_none_or(|l| l.get(r, p).is_none()))
        .collect();
    if req.lock == LockMode::Locked {
        if let Some((reference, platform)) = unpinned.first() {
            return Err(crate::lock::LockError::Missing {
                path: lock_path(&req.description),
                reference: reference.clone(),
                platform: platform.to_string(),
            }
            .into());
        }
    }
    if let Some(lock) = lock {
        crate::lock::pin_plan(plan, lock);
    }
    Ok(unpinned.into_iter().map(|(r, _)| r).collect())
}

/// `lade lock`: resolves every registry base of the description, for every platform, to its
/// manifest digest now (asking the registry whatever the cache says), and writes the lock
/// file. Returns its path and contents.
pub fn lock(req: &BuildRequest, observer: &dyn Observer) -> Result<(PathBuf, Lock), BuildError> {
    let store = Store::open(&req.store_root)?;
    lock_with(req, &store, &Registry::new(&req.registry), observer)
}

fn lock_with(
    req: &BuildRequest,
    store: &Store,
    registry: &Registry,
    observer: &dyn Observer,
) -> Result<(PathBuf, Lock), BuildError> {
    let base_configs =
        BaseConfigReader::new(store, registry.clone(), req, exec::PullPolicy::Always, None);
    let platforms: Vec<Option<&Platform>> = if req.platforms.is_empty() {
        vec![None]
    } else {
        req.platforms.iter().map(Some).collect()
    };
    let mut lock = Lock::default();
    for platform in platforms {
        let loaded = load(&req.description, platform, observer, &base_configs)?;
        for (reference, platform) in crate::lock::registry_bases(&loaded.plan) {
            let r = crate::registry::Reference::parse(&reference)?;
            let image = registry.client()?.resolve(store, &r, &platform)?;
            lock.insert(&reference, &platform, image.manifest_digest);
        }
    }
    let path = lock_path(&req.description);
    lock.write(&path)?;
    Ok((path, lock))
}
