//! One stage, run in segments. The layer steps between two RUNs are resolved in order against
//! the stage's tree and written in parallel; at a RUN the layers below are finished (the RUN
//! needs their digests), the command runs over them through the [`StepRunner`], its output
//! becomes a layer and feeds the tree for the steps after it.
//!
//! Cache keys chain: every step's key extends the key of everything below it (the base, then
//! each step), so a RUN's key names the whole filesystem it ran on. A COPY layer's blob is
//! still found by its content key (its inputs), so a changed chain below a COPY re-executes
//! only the RUNs above the change, never re-writes an unchanged COPY layer.

use super::run::{LowerLayer, RunInput, StepRunner};
use super::{
    config, files, load_base_with, sources, tree, write_or_reuse, BaseImage, ExecError,
    ExecOptions, Observer, ResolvedLayer,
};
use crate::digest::Digest;
use crate::image::{BuiltImage, Descriptor, ImageConfig, Platform, DEFAULT_PATH};
use crate::layer::{Entry, EntryKind, FileSource, LayerDigests, LayerOptions};
use crate::plan::{cache_key, RunStep, Stage, Step};
use crate::store::{FileDigestCache, Store};
use rayon::prelude::*;
use std::sync::Arc;

/// Version of the chained keys; bump when what enters them changes.
const CHAIN_FORMAT: &str = "lade-chain-v1";

/// What a stage's steps share while it builds.
pub(super) struct StageCx<'a> {
    pub context: &'a crate::context::BuildContext,
    pub built: &'a [Option<BuiltImage>],
    pub store: &'a Store,
    pub file_cache: &'a FileDigestCache,
    pub opts: &'a ExecOptions,
    pub observer: &'a dyn Observer,
    /// The stage's index in the plan (where its steps' records of earlier builds live).
    pub stage_index: usize,
    /// Whether this stage is the plan's target (its steps are those of `--cache-to mode=min`).
    pub final_stage: bool,
    /// Whether a stage built FROM this one (directly or not) has a RUN: then every layer this
    /// stage writes is a lowerdir of a RUN of this build.
    pub feeds_run: bool,
}

/// The layer of step `key` from the store's step index, else from an imported cache (its
/// blob then brought into the store, verified, or left lazy); noted for `--cache-to` either
/// way. `name` is the step's, for a warning should a lazy hit's blob later fail its checks.
pub(super) fn cached(key: &Digest, name: &str, cx: &StageCx<'_>) -> Option<LayerDigests> {
    if cx.opts.no_cache {
        return None;
    }
    let store = cx.store;
    let hit = store
        .step_get::<LayerDigests>(key)
        .filter(|d| store.has_blob(&d.digest))
        .or_else(|| cx.opts.cache.as_ref()?.lookup(key, name, store))?;
    note_used(key, &hit, cx);
    Some(hit)
}

/// Notes a step's layer for `--cache-to`.
pub(super) fn note_used(key: &Digest, layer: &LayerDigests, cx: &StageCx<'_>) {
    if let Some(c) = &cx.opts.cache {
        c.used(cx.final_stage, key, layer);
    }
}

/// A RUN the exec cannot carry out is an error before any layer of its stage is written.
fn check_runs(stage: &Stage, opts: &ExecOptions) -> Result<(), ExecError> {
    let located = |run: &RunStep, message: String| ExecError::Input {
        location: run.location.clone(),
        message,
    };
    for step in &stage.steps {
        let Step::Run(run) = step else { continue };
        if opts.runner.is_none() {
            return Err(located(run, "RUN is not supported yet".into()));
        }
        if run.insecure && !opts.run_settings.allow_insecure {
            return Err(located(
                run,
                "RUN --security=insecure needs the security.insecure entitlement: pass \
                 `lade build --allow security.insecure` if this Dockerfile is trusted"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Whether the stage's RUN steps can run on this host's platform (natively or emulated);
/// how they run when not natively is said once per build. Before any layer is written.
fn check_platform(stage: &Stage, cx: &StageCx<'_>) -> Result<(), ExecError> {
    let Some(run) = stage.steps.iter().find_map(|s| match s {
        Step::Run(r) => Some(r),
        _ => None,
    }) else {
        return Ok(());
    };
    let runner = cx.opts.runner.as_deref().expect("checked in check_runs");
    match runner.check_platform(&stage.platform) {
        Ok(None) => Ok(()),
        Ok(Some(how)) => {
            cx.observer.note(&how);
            Ok(())
        }
        Err(message) => Err(ExecError::Input {
            location: run.location.clone(),
            message,
        }),
    }
}

/// Builds one stage: layers, RUNs and config edits in order; see the module doc.
pub(super) fn build_stage(
    stage: &Stage,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    cx: &StageCx<'_>,
) -> Result<BuiltImage, ExecError> {
    check_runs(stage, cx.opts)?;
    check_platform(stage, cx)?;
    if stage
        .steps
        .iter()
        .any(|s| matches!(s, Step::Run(r) if !r.insecure))
    {
        super::run::compile_seccomp_filter_ahead();
    }
    let (store, opts) = (cx.store, cx.opts);
    let base = match stage.base {
        crate::plan::Base::Stage { index } => {
            let b = cx.built[index]
                .as_ref()
                .expect("dependencies are built first");
            BaseImage {
                name: super::base::describe(&stage.base),
                config: b.config.clone(),
                layers: b.manifest.layers.clone(),
                origin: b.base_origin.clone(),
            }
        }
        ref other => load_base_with(
            other,
            &stage.platform,
            store,
            opts.registry.as_deref(),
            opts.pull,
        )?,
    };
    let sources = sources::Sources::prepare(
        stage,
        cx.context,
        cx.built,
        store,
        opts.registry.as_deref(),
        opts.pull,
    )?;
    // Declared before `fs`: dropped (joined) after it, when the stage is done.
    let mut releases = Releases::default();
    let mut fs = tree::StageFs::new(&base, store, opts.registry.as_deref(), opts.pull);
    let mut chain = base_chain(&base, &stage.platform);
    let mut why = Why::new(cx, stage);
    why.base(super::why::base_inputs(
        &chain,
        &base.name,
        base.layers.last().map(|l| &l.digest),
    ));
    // The config as the next RUN sees it (Env, User, WorkingDir).
    let mut config = base.config.clone();
    let mut env_index = config::EnvIndex::default();
    // Each layer step with whether a RUN of this build will need it extracted.
    let mut segment: Segment = Vec::new();
    let mut layers: Vec<(LayerDigests, bool)> = Vec::new();
    for (position, step) in stage.steps.iter().enumerate() {
        match step {
            Step::Layer(l) => {
                let r = files::resolve(l, &sources, cx.file_cache, opts, &mut fs)
                    .map_err(|e| e.at(&l.location))?;
                // Only a later step reads what this one adds (a COPY of twenty thousand files
                // as the last layer costs its tree ~10 ms).
                if comes_later(stage, position, |s| !matches!(s, Step::Config(_))) {
                    fs.record(&r.entries);
                }
                chain = chain_key(&chain, &r.key);
                let unpack = under_a_run(stage, position, cx);
                segment.push((position, r, &l.location, unpack));
            }
            Step::Config(edit) => config::apply(&mut config, edit, &mut env_index),
            Step::Run(run) => {
                layers.extend(write_segment(std::mem::take(&mut segment), &mut why, cx)?);
                let runner = opts.runner.as_deref().expect("checked in check_runs");
                let env = run_env(&config, run);
                let user = config.config.user.clone().unwrap_or_default();
                let workdir = config
                    .config
                    .working_dir
                    .clone()
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into());
                let mounted = super::run_mounts::mount_sources(run, &sources, cx, &stage.platform)?;
                let key = run_key(&chain, run, &env, &user, &workdir, &stage.platform, opts);
                let key = mounts_key(&key, &mounted);
                let options = key_options(opts);
                let inputs = super::why::run_inputs(
                    &key,
                    &super::why::RunParts {
                        below: &chain,
                        run,
                        env: &env,
                        user: &user,
                        workdir: &workdir,
                        platform: stage.platform.to_string(),
                        options: &options,
                        extra_hosts: &opts.run_settings.extra_hosts,
                        mount_sources: &mounted,
                    },
                );
                let reason = why.step(position, &inputs, &run_name(run));
                chain = key.clone();
                let input = RunParts {
                    env,
                    user,
                    workdir,
                    platform: stage.platform.to_string(),
                    reason,
                    mount_sources: mounted
                        .iter()
                        .map(|m| m.as_ref().map(super::run_mounts::lower))
                        .collect(),
                };
                let unpack = under_a_run(stage, position, cx);
                let layer = run_or_reuse(
                    run,
                    (input, unpack),
                    &key,
                    &base,
                    &layers,
                    &mut fs,
                    runner,
                    &mut releases,
                    cx,
                )?;
                // A step after it will read the stage's tree, and so a rebuild that finds
                // this RUN cached will need the layer's listing: made now, from the blob, on a
                // thread while the build goes on (else that rebuild gunzips the layer).
                let (written, cached) = &layer;
                if !cached && comes_later(stage, position, |s| matches!(s, Step::Layer(_))) {
                    let (store, written) = (store.clone(), written.clone());
                    releases.spawn(move || tree::cache_listing(&store, &written));
                }
                layers.push(layer);
            }
        }
    }
    layers.extend(write_segment(segment, &mut why, cx)?);
    why.settle_base();
    drop(fs);
    super::assemble(stage, base, &layers, annotations, store, opts)
}

/// Whether the layer of step `position` will be a lowerdir of a RUN of this build: a RUN
/// above it in the stage, or in a stage built on this one.
fn under_a_run(stage: &Stage, position: usize, cx: &StageCx<'_>) -> bool {
    cx.feeds_run || comes_later(stage, position, |s| matches!(s, Step::Run(_)))
}

/// Whether a step after `position` in the stage is one that `is` picks.
fn comes_later(stage: &Stage, position: usize, is: fn(&Step) -> bool) -> bool {
    stage.steps[position + 1..].iter().any(is)
}

/// The layer steps between two RUNs: (position, resolved step, its location, whether a RUN
/// of this build needs it extracted).
type Segment<'p> = Vec<(usize, ResolvedLayer, &'p crate::plan::Location, bool)>;

/// Writes (or finds) a segment's layers in parallel, in step order. Their reasons are made
/// here, not as each step is resolved, so an imported cache's records are awaited only
/// after the segment's files are read and hashed.
fn write_segment(
    segment: Segment<'_>,
    why: &mut Why<'_>,
    cx: &StageCx<'_>,
) -> Result<Vec<(LayerDigests, bool)>, ExecError> {
    let segment: Vec<_> = segment
        .into_iter()
        .map(|(position, mut r, at, unpack)| {
            r.reason = why.step(position, &r.why, &r.name);
            (r, at, unpack)
        })
        .collect();
    segment
        .into_par_iter()
        .map(|(r, at, unpack)| write_or_reuse(r, cx, unpack).map_err(|e| e.at(at)))
        .collect()
}

/// The start of a stage's chain: what its base is (config and layer digests) and the platform.
pub(super) fn base_chain(base: &BaseImage, platform: &Platform) -> Digest {
    let layers: Vec<Digest> = base.layers.iter().map(|l| l.digest.clone()).collect();
    cache_key(
        &(CHAIN_FORMAT, "base", platform.to_string(), &base.config),
        None,
        &layers,
    )
}

/// The chain after a step whose own key is `step`.
pub(super) fn chain_key(parent: &Digest, step: &Digest) -> Digest {
    cache_key(
        &(CHAIN_FORMAT, "step"),
        Some(parent),
        std::slice::from_ref(step),
    )
}

/// A RUN's key: the chain below it and everything the command sees or the layer depends on.
/// The Dockerfile location stays out (moving a RUN down a line does not re-run it).
pub(super) fn run_key(
    chain: &Digest,
    run: &RunStep,
    env: &[String],
    user: &str,
    workdir: &str,
    platform: &Platform,
    opts: &ExecOptions,
) -> Digest {
    let definition = (
        CHAIN_FORMAT,
        "run",
        &run.command,
        env,
        user,
        workdir,
        run.network,
        &run.mounts,
        run.insecure,
        &run.files,
        platform.to_string(),
        opts.compression,
        opts.source_date_epoch,
    );
    let key = cache_key(&definition, Some(chain), &[]);
    with_extra_hosts(key, &opts.run_settings.extra_hosts)
}

/// A RUN's key with the `--add-host` entries its `/etc/hosts` holds; unchanged without any,
/// so builds without the flag keep their keys.
fn with_extra_hosts(key: Digest, hosts: &[super::run::ExtraHost]) -> Digest {
    if hosts.is_empty() {
        return key;
    }
    cache_key(&(CHAIN_FORMAT, "extra-hosts", hosts), Some(&key), &[])
}

/// A RUN's key with the content digests of its mounts' sources (binds, caches' `from`);
/// the key itself when it has none, so RUNs without such mounts keep their keys.
fn mounts_key(key: &Digest, sources: &[Option<LayerDigests>]) -> Digest {
    let ids: Vec<Digest> = sources
        .iter()
        .flatten()
        .map(|d| d.diff_id.clone())
        .collect();
    if ids.is_empty() {
        return key.clone();
    }
    cache_key(&(CHAIN_FORMAT, "run-mounts"), Some(key), &ids)
}

/// The environment of a RUN: the config's Env (with docker's PATH when it has none), then the
/// build ARGs in scope that Env does not set.
pub(super) fn run_env(config: &ImageConfig, run: &RunStep) -> Vec<String> {
    let mut env: Vec<String> = config.config.env.clone().unwrap_or_default();
    let name = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut names: std::collections::HashSet<String> = env.iter().map(|kv| name(kv)).collect();
    if !names.contains("PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
        names.insert("PATH".into());
    }
    for (k, v) in &run.args {
        if names.insert(k.clone()) {
            env.push(format!("{k}={v}"));
        }
    }
    env
}

/// What a RUN's input holds besides its layers.
struct RunParts {
    env: Vec<String>,
    user: String,
    workdir: String,
    /// `os/arch[/variant]`.
    platform: String,
    /// Why the RUN runs, if it misses the cache.
    reason: String,
    /// See [`RunInput::mount_sources`].
    mount_sources: Vec<Option<LowerLayer>>,
}

/// The build options that enter every step's key, by name.
pub(super) fn key_options(opts: &ExecOptions) -> [(&'static str, String); 2] {
    [
        ("compression", format!("{:?}", opts.compression)),
        ("SOURCE_DATE_EPOCH", opts.source_date_epoch.to_string()),
    ]
}

/// A stage's view of the records of earlier builds: each step's inputs are compared with
/// those of the same step last time, and the first change under a step is remembered (a RUN
/// whose chain changed is reported with it).
struct Why<'a> {
    records: super::why::Records<'a>,
    /// Imported caches, whose records stand in for the store's missing ones; every record
    /// is noted there for `--cache-to`.
    cache: Option<&'a crate::cache::Session>,
    final_stage: bool,
    file: String,
    stage: usize,
    platform: String,
    no_cache: bool,
    first_change: Option<String>,
    /// The stage base's inputs, compared at the first step (see [`write_segment`]).
    base: Option<super::why::StepInputs>,
}

impl<'a> Why<'a> {
    fn new(cx: &StageCx<'a>, stage: &Stage) -> Why<'a> {
        Why {
            records: super::why::Records { store: cx.store },
            cache: cx.opts.cache.as_deref(),
            final_stage: cx.final_stage,
            file: super::why::description_name(&stage.location.file, cx.context.root()),
            stage: cx.stage_index,
            platform: stage.platform.to_string(),
            no_cache: cx.opts.no_cache,
            first_change: None,
            base: None,
        }
    }

    fn position(&self, step: Option<usize>) -> Digest {
        super::why::position(&self.file, self.stage, step, &self.platform)
    }

    /// The earlier build of the step at `at` (this store's record, else an imported
    /// cache's), and whether the store's record differs from `now` (then `now` replaces it).
    /// Notes `now` for `--cache-to`.
    fn earlier(
        &self,
        at: &Digest,
        now: &super::why::StepInputs,
    ) -> (Option<std::borrow::Cow<'a, super::why::StepInputs>>, bool) {
        use std::borrow::Cow;
        if let Some(c) = self.cache {
            c.note_record(self.final_stage, at, now);
        }
        match self.records.get(at) {
            Some(r) => {
                let stale = r != *now;
                (Some(Cow::Owned(r)), stale)
            }
            None => (
                self.cache.and_then(|c| c.record(at)).map(Cow::Borrowed),
                true,
            ),
        }
    }

    fn base(&mut self, now: super::why::StepInputs) {
        self.base = Some(now);
    }

    fn settle_base(&mut self) {
        let Some(now) = self.base.take() else {
            return;
        };
        let at = self.position(None);
        let (before, stale) = self.earlier(&at, &now);
        if let Some(b) = &before {
            if b.key != now.key {
                self.first_change = Some(super::why::first_difference(b, &now, None));
            }
        }
        if stale {
            self.records.put(&at, &now);
        }
    }

    /// Why the step at `position` would run (used only if it misses the cache); records
    /// `now` as its latest build.
    fn step(&mut self, position: usize, now: &super::why::StepInputs, name: &str) -> String {
        self.settle_base();
        let at = self.position(Some(position));
        let (before, stale) = self.earlier(&at, now);
        let same_key = before.as_ref().is_some_and(|b| b.key == now.key);
        let reason = match &before {
            None => "no earlier build of this step".to_string(),
            Some(_) if self.no_cache => "--no-cache".into(),
            // The same key is the same inputs: nothing to compare (a step of thousands of
            // files would compare them all to say so).
            Some(_) if same_key => self
                .cache
                .zip(now.key.as_ref())
                .and_then(|(c, k)| c.distrusted(k))
                .unwrap_or_else(|| super::why::SAME_INPUTS.into()),
            Some(b) => super::why::first_difference(b, now, self.first_change.as_deref()),
        };
        if !same_key && self.first_change.is_none() && before.is_some() {
            self.first_change = Some(format!("{name}: {reason}"));
        }
        if stale {
            self.records.put(&at, now);
        }
        reason
    }
}

/// `RUN` and the command as the user wrote it (the shell's script for the shell form), cut
/// to one short line for progress output.
fn run_name(run: &RunStep) -> String {
    let text = match run.command.as_slice() {
        [.., flag, script] if flag == "-c" => script.clone(),
        all => all.join(" "),
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = line.chars().take(60).collect();
    if short.len() < line.len() {
        format!("RUN {short}…")
    } else {
        format!("RUN {short}")
    }
}

/// Finds a RUN's layer by its chained key, or runs it and writes its layer; either way the
/// layer's files enter the stage's tree for the steps after it.
#[allow(clippy::too_many_arguments)]
fn run_or_reuse(
    run: &RunStep,
    (parts, unpack): (RunParts, bool),
    key: &Digest,
    base: &BaseImage,
    below: &[(LayerDigests, bool)],
    fs: &mut tree::StageFs<'_>,
    runner: &dyn StepRunner,
    releases: &mut Releases,
    cx: &StageCx<'_>,
) -> Result<(LayerDigests, bool), ExecError> {
    let (store, opts) = (cx.store, cx.opts);
    let name = run_name(run);
    if let Some(hit) = cached(key, &name, cx) {
        fs.record_layer(&descriptor(&hit), &hit.diff_id)?;
        cx.observer.step_finished(&name, &hit, true);
        return Ok((hit, true));
    }
    cx.observer.step_rebuilt(&name, &parts.reason);
    cx.observer.step_started(&name);
    // The runner reads every layer below from the store (shared-cache hits included).
    super::fetch_layers(
        &base.layers,
        base.origin.as_ref(),
        store,
        opts.registry.as_deref(),
        opts.pull,
    )?;
    let own: Vec<Descriptor> = below.iter().map(|(d, _)| descriptor(d)).collect();
    super::fetch_layers(&own, None, store, opts.registry.as_deref(), opts.pull)?;
    let lowers = lower_layers(base, below);
    let output = |chunk: &[u8]| cx.observer.step_output(&name, chunk);
    let input = RunInput {
        step: run,
        env: parts.env,
        user: parts.user,
        workdir: parts.workdir,
        platform: parts.platform,
        extra_hosts: opts.run_settings.extra_hosts.clone(),
        lowers,
        mount_sources: parts.mount_sources,
        source_date_epoch: (opts.source_date_epoch != 0).then_some(opts.source_date_epoch),
        output: &output,
    };
    let out = runner.run(&input, store).map_err(|e| ExecError::Input {
        location: run.location.clone(),
        message: e.to_string(),
    })?;
    let ran = std::time::Instant::now();
    let mut entries = out.entries;
    let accounts = accounts_in_memory(&mut entries)?;
    fs.record(&entries);
    let digests = write_entries(entries, opts, store, unpack)?;
    tracing::debug!(layer_ms = ran.elapsed().as_secs_f64() * 1e3, "RUN layer");
    releases.release(out.keep);
    tree::remember_accounts(&descriptor(&digests), &digests.diff_id, &accounts, store)?;
    store.step_put(key, &digests)?;
    note_used(key, &digests, cx);
    cx.observer.step_finished(&name, &digests, false);
    Ok((digests, false))
}

/// Snapshots of RUNs whose layers are written, being released (unmounted and removed: tens of
/// milliseconds each) on threads of their own while the stage goes on. Dropping this waits for
/// them, so no snapshot outlives its stage.
#[derive(Default)]
struct Releases(Vec<std::thread::JoinHandle<()>>);

impl Releases {
    fn release(&mut self, keep: Box<dyn std::any::Any + Send + Sync>) {
        self.spawn(move || drop(keep));
    }

    /// Runs `work` on a thread of its own, waited for with the releases.
    fn spawn(&mut self, work: impl FnOnce() + Send + 'static) {
        match std::thread::Builder::new()
            .name("lade-release".into())
            .spawn(work)
        {
            Ok(handle) => self.0.push(handle),
            // No thread to be had: the work is dropped undone (a release happens on the
            // drop of what the closure held; a listing is made when it is needed).
            Err(e) => tracing::debug!("release thread: {e}"),
        }
    }
}

impl Drop for Releases {
    fn drop(&mut self) {
        for handle in self.0.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Writes `entries` as one layer into the store (the writer COPY layers use). With `unpack`
/// (a later RUN of this build has the layer below it) the layer is also extracted for the
/// sandbox from its tar stream as it is written, so that RUN needs no gunzip of the blob.
pub(super) fn write_entries(
    entries: Vec<Entry>,
    opts: &ExecOptions,
    store: &Store,
    unpack: bool,
) -> Result<LayerDigests, ExecError> {
    let writer = store.blob_writer()?;
    let layer_opts = LayerOptions {
        compression: opts.compression,
        mtime: opts.source_date_epoch,
    };
    let threads = opts
        .compress_threads
        .unwrap_or_else(crate::layer::default_threads);
    let unpacking = if unpack {
        // Without a pipe or a thread the RUN extracts the layer from its blob, as for a
        // layer it did not write.
        super::run::unpack_while_writing(store)
            .inspect_err(|e| tracing::debug!("unpacking a layer as it is written: {e}"))
            .ok()
    } else {
        None
    };
    let (writer, digests, unpacking) = match unpacking {
        Some((tee, unpacking)) => {
            let (w, d) = crate::layer::write_layer_teed(entries, layer_opts, threads, writer, tee)?;
            (w, d, Some(unpacking))
        }
        None => {
            let (w, d) =
                crate::layer::write_layer_with_threads(entries, layer_opts, threads, writer)?;
            (w, d, None)
        }
    };
    let (digest, _) = writer.commit()?;
    debug_assert_eq!(digest, digests.digest);
    if let Some(u) = unpacking {
        if let Err(e) = u.finish(store, &digests.diff_id) {
            tracing::debug!("layer {} not unpacked as written: {e}", digests.diff_id);
        }
    }
    Ok(digests)
}

/// `/etc/passwd` and `/etc/group` a RUN wrote are read now: the tree keeps them for
/// `--chown` and USER lookups after the RUN's snapshot is released. Returns them by path.
fn accounts_in_memory(entries: &mut [Entry]) -> Result<Vec<tree::AccountFile>, ExecError> {
    let mut found = Vec::new();
    for e in entries.iter_mut() {
        let path: &'static [u8] = match e.path.as_bytes() {
            b"etc/passwd" => b"etc/passwd",
            b"etc/group" => b"etc/group",
            _ => continue,
        };
        if let EntryKind::File { source, .. } = &mut e.kind {
            if let FileSource::Host(p) = source {
                let bytes = std::fs::read(&*p).map_err(|err| ExecError::Io {
                    path: p.to_path_buf(),
                    error: err,
                })?;
                *source = FileSource::Bytes(Arc::new(bytes));
            }
            if let FileSource::Bytes(b) = source {
                found.push((path, Arc::clone(b)));
            }
        }
    }
    Ok(found)
}

/// Every layer below a RUN, bottom first: the base's, then those this stage wrote so far.
fn lower_layers(base: &BaseImage, below: &[(LayerDigests, bool)]) -> Vec<LowerLayer> {
    let base_layers = base
        .layers
        .iter()
        .zip(&base.config.rootfs.diff_ids)
        .map(|(l, diff_id)| LowerLayer {
            diff_id: diff_id.clone(),
            blob: l.digest.clone(),
            media_type: l.media_type.clone(),
        });
    let own = below.iter().map(|(d, _)| LowerLayer {
        diff_id: d.diff_id.clone(),
        blob: d.digest.clone(),
        media_type: d.compression.oci_media_type().to_string(),
    });
    base_layers.chain(own).collect()
}

/// The manifest descriptor of a layer lade wrote.
fn descriptor(d: &LayerDigests) -> Descriptor {
    Descriptor::new(d.compression.oci_media_type(), d.digest.clone(), d.size)
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
