//! Segmenting, key chaining and tree feeding, with an in-memory runner: no root, no runtime.

use super::super::run::{RunError, RunInput, RunOutput, StepRunner};
use super::super::{build, ExecOptions, PullPolicy, Quiet};
use crate::context::BuildContext;
use crate::image::{BuiltImage, Platform};
use crate::layer::{Compression, Entry, EntryKind, FileSource};
use crate::path::ImagePath;
use crate::plan::{Base, CopyFrom, FileSet, LayerStep, Location, Plan, RunStep, Stage, Step};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What the fake saw of one RUN.
#[derive(Debug, Clone)]
struct Seen {
    command: String,
    env: Vec<String>,
    lowers: usize,
    /// For each lower, whether its directory was already extracted when the RUN started.
    ready: Vec<bool>,
}

/// Runs `fake touch PATH`, `fake mkdir PATH`, `fake rm PATH` (a whiteout), several joined by
/// `;`, by returning the entries those commands would leave in the upper directory.
#[derive(Default)]
struct FakeRunner {
    seen: Mutex<Vec<Seen>>,
}

impl FakeRunner {
    fn commands(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.command.clone())
            .collect()
    }
}

fn entry(path: &str, kind: EntryKind) -> Entry {
    Entry {
        path: ImagePath::parse_absolute(path).unwrap(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
    }
}

impl StepRunner for FakeRunner {
    fn run(&self, input: &RunInput<'_>, store: &Store) -> Result<RunOutput, RunError> {
        let command = input.step.command.join(" ");
        let layers = store.root().join("run/layers");
        self.seen.lock().unwrap().push(Seen {
            command: command.clone(),
            env: input.env.clone(),
            lowers: input.lowers.len(),
            ready: input
                .lowers
                .iter()
                .map(|l| layers.join(l.diff_id.hex()).is_dir())
                .collect(),
        });
        let mut entries = Vec::new();
        for part in command.trim_start_matches("fake ").split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            match words.as_slice() {
                ["touch", p] => {
                    let content = Arc::new(p.as_bytes().to_vec());
                    entries.push(entry(
                        p,
                        EntryKind::File {
                            size: content.len() as u64,
                            source: FileSource::Bytes(content),
                            link_key: None,
                        },
                    ));
                }
                ["mkdir", p] => entries.push(entry(p, EntryKind::Dir)),
                ["rm", p] => entries.push(entry(p, EntryKind::Whiteout)),
                [] => {}
                ["fail"] => {
                    return Err(RunError::Failed {
                        command,
                        code: 2,
                        tail: vec!["boom".into()],
                    })
                }
                other => panic!("fake runner: unknown command {other:?}"),
            }
        }
        Ok(RunOutput {
            entries,
            keep: Box::new(()),
        })
    }
}

fn run(cmd: &str) -> Step {
    Step::Run(RunStep {
        command: vec!["fake".into(), cmd.into()],
        network: Default::default(),
        args: vec![("VERSION".into(), "1".into())],
        mounts: Vec::new(),
        insecure: false,
        files: Vec::new(),
        created_by: format!("RUN fake {cmd}"),
        location: Location::new("Dockerfile", 3, 1),
    })
}

/// `COPY <src> <dest>` from the context, as the Dockerfile frontend lowers it.
fn copy(src: &str, dest: &str) -> Step {
    Step::Layer(LayerStep {
        name: format!("COPY {src} {dest}"),
        created_by: format!("COPY {src} {dest}"),
        sources: vec![FileSet::Copy {
            from: CopyFrom::Context,
            sources: vec![src.into()],
            dest: ImagePath::parse_absolute(dest).unwrap(),
            dest_is_dir: dest.ends_with('/'),
            exclude: Vec::new(),
            parents: false,
            chown: None,
            chmod: None,
            unpack_archives: false,
            link: false,
            origin: Location::new("Dockerfile", 2, 1),
        }],
        location: Location::new("Dockerfile", 2, 1),
    })
}

struct Fixture {
    context_dir: tempfile::TempDir,
    _store_dir: tempfile::TempDir,
    store: Store,
    runner: Arc<FakeRunner>,
}

impl Fixture {
    fn new(files: &[(&str, &str)]) -> Fixture {
        let context_dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(context_dir.path().join(name), content).unwrap();
        }
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        Fixture {
            context_dir,
            _store_dir: store_dir,
            store,
            runner: Arc::new(FakeRunner::default()),
        }
    }

    fn opts(&self) -> ExecOptions {
        ExecOptions {
            compression: Compression::Gzip,
            source_date_epoch: 0,
            no_cache: false,
            registry: None,
            pull: PullPolicy::Never,
            compress_threads: Some(1),
            normalize_modes: false,
            runner: Some(self.runner.clone()),
            cache: None,
            run_settings: Default::default(),
        }
    }

    fn build(&self, steps: Vec<Step>) -> Result<BuiltImage, super::ExecError> {
        self.build_on(Platform::host(), steps, &self.opts())
    }

    /// `steps` on scratch for `platform`, with `opts`.
    fn build_on(
        &self,
        platform: Platform,
        steps: Vec<Step>,
        opts: &ExecOptions,
    ) -> Result<BuiltImage, super::ExecError> {
        let plan = Plan {
            stages: vec![Stage {
                name: None,
                base: Base::Scratch,
                platform,
                steps,
                location: Location::new("Dockerfile", 1, 1),
            }],
            target: 0,
            annotations: BTreeMap::new(),
            tags: Vec::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
        };
        let context = BuildContext::new(self.context_dir.path(), &[]).unwrap();
        build(&plan, &context, &self.store, opts, &Quiet)
    }

    /// The paths in layer `i` of `image` (`/.wh.x` for a whiteout), `/` suffixed for
    /// directories.
    fn layer(&self, image: &BuiltImage, i: usize) -> Vec<String> {
        let blob = self
            .store
            .open_blob(&image.manifest.layers[i].digest)
            .unwrap();
        crate::layer::list_layer(std::io::BufReader::new(blob), Compression::Gzip)
            .unwrap()
            .into_iter()
            .map(|m| {
                let dir = matches!(m.kind, crate::layer::TarKind::Dir);
                format!("{}{}", m.path.display(), if dir { "/" } else { "" })
            })
            .collect()
    }
}

/// COPY, RUN, COPY, RUN over the context `a`, `b`: two segments of layer steps, two RUNs.
fn segments() -> (Fixture, BuiltImage) {
    let fx = Fixture::new(&[("a", "A"), ("b", "B")]);
    let image = fx
        .build(vec![
            copy("a", "/a"),
            run("mkdir /d;touch /d/f1"),
            // /d is a directory only because the RUN made it: `b` lands inside it.
            copy("b", "/d"),
            run("touch /f2"),
        ])
        .unwrap();
    (fx, image)
}

#[test]
fn a_stage_runs_in_segments_and_run_output_feeds_the_tree() {
    let (fx, image) = segments();
    assert_eq!(image.manifest.layers.len(), 4);
    assert_eq!(fx.layer(&image, 1), ["/d/", "/d/f1"]);
    assert_eq!(fx.layer(&image, 2), ["/d/", "/d/b"]);
    assert_eq!(fx.layer(&image, 3), ["/f2"]);
    let seen = fx.runner.seen.lock().unwrap().clone();
    // Each RUN sees every layer below it: the COPY, then also the first RUN and the COPY.
    assert_eq!(seen.iter().map(|s| s.lowers).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(
        seen[0].env,
        [
            format!("PATH={}", crate::image::DEFAULT_PATH),
            "VERSION=1".to_string()
        ]
    );
    assert_eq!(image.config.rootfs.diff_ids.len(), 4);
}

#[test]
fn a_run_with_a_copy_above_it_has_its_listing_cached_for_the_next_build() {
    let (fx, image) = segments();
    let listed = |i: usize| {
        let l = &image.manifest.layers[i];
        super::tree::listing_cached(l, &image.config.rootfs.diff_ids[i], &fx.store)
    };
    // The first RUN's layer is read by `COPY b /d` above it: a rebuild that finds the RUN
    // cached needs its listing, made while the build went on. The last RUN's is not needed.
    assert!(listed(1));
    assert!(!listed(3));
}

#[test]
fn a_whiteout_from_a_run_removes_the_path_from_the_tree() {
    let fx = Fixture::new(&[("b", "B")]);
    let image = fx
        .build(vec![run("mkdir /d"), run("rm /d"), copy("b", "/d")])
        .unwrap();
    // /d is gone: `COPY b /d` writes a file named d, not d/b.
    assert_eq!(fx.layer(&image, 1), ["/.wh.d"]);
    assert_eq!(fx.layer(&image, 2), ["/d"]);
}

#[test]
fn a_run_that_changes_nothing_adds_history_but_no_layer() {
    let fx = Fixture::new(&[("a", "A")]);
    let image = fx
        .build(vec![copy("a", "/a"), run(""), run("touch /x")])
        .unwrap();
    assert_eq!(fx.runner.commands().len(), 2);
    assert_eq!(image.manifest.layers.len(), 2);
    assert_eq!(image.config.rootfs.diff_ids.len(), 2);
    assert_eq!(fx.layer(&image, 1), ["/x"]);
    let empty: Vec<bool> = image.config.history.iter().map(|h| h.empty_layer).collect();
    assert_eq!(empty, [false, true, false]);
}

#[test]
fn a_rebuild_with_nothing_changed_runs_nothing() {
    let fx = Fixture::new(&[("a", "A"), ("b", "B")]);
    let steps = || {
        vec![
            copy("a", "/a"),
            run("mkdir /d"),
            copy("b", "/d"),
            run("touch /f"),
        ]
    };
    let first = fx.build(steps()).unwrap();
    assert_eq!(fx.runner.commands().len(), 2);
    let second = fx.build(steps()).unwrap();
    assert_eq!(fx.runner.commands().len(), 2, "no RUN ran again");
    assert_eq!(second.cached, [true, true, true, true]);
    assert_eq!(first.manifest_digest, second.manifest_digest);
}

#[test]
fn a_changed_copy_reruns_the_runs_above_it_and_no_others() {
    let fx = Fixture::new(&[("a", "A"), ("b", "B")]);
    let steps = || {
        vec![
            copy("a", "/a"),
            run("touch /one"),
            copy("b", "/b"),
            run("touch /two"),
        ]
    };
    fx.build(steps()).unwrap();
    std::fs::write(fx.context_dir.path().join("b"), "B2").unwrap();
    let image = fx.build(steps()).unwrap();
    assert_eq!(
        fx.runner.commands(),
        ["fake touch /one", "fake touch /two", "fake touch /two"]
    );
    assert_eq!(image.cached, [true, true, false, false]);
}

#[test]
fn a_copy_below_a_run_whose_blob_is_unchanged_still_reruns_it_when_the_chain_moves() {
    // The COPY layer of `b` is identical in both builds (content-addressed), but the RUN
    // above it sits on a changed chain (the first COPY changed) and runs again.
    let fx = Fixture::new(&[("a", "A"), ("b", "B")]);
    let steps = || vec![copy("a", "/a"), copy("b", "/b"), run("touch /x")];
    let first = fx.build(steps()).unwrap();
    std::fs::write(fx.context_dir.path().join("a"), "A2").unwrap();
    let second = fx.build(steps()).unwrap();
    assert_eq!(fx.runner.commands().len(), 2);
    assert_eq!(second.cached, [false, true, false]);
    assert_eq!(first.manifest.layers[1], second.manifest.layers[1]);
}

#[test]
fn without_a_runner_run_is_a_located_error_before_anything_is_written() {
    let fx = Fixture::new(&[("a", "A")]);
    let plan_steps = vec![copy("a", "/a"), run("touch /x")];
    let mut opts = fx.opts();
    opts.runner = None;
    let err = fx
        .build_on(Platform::host(), plan_steps, &opts)
        .unwrap_err();
    assert_eq!(err.to_string(), "Dockerfile:3:1: RUN is not supported yet");
}

#[test]
fn a_failing_run_names_its_line_and_stores_nothing_for_its_key() {
    let fx = Fixture::new(&[]);
    let err = fx.build(vec![run("fail")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:3:1: fake fail exited with code 2; last output:\n  boom"
    );
}

#[test]
fn a_foreign_platform_is_a_located_error() {
    let fx = Fixture::new(&[]);
    let host = Platform::host();
    let foreign: Platform = if host.architecture == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    }
    .parse()
    .unwrap();
    let err = fx
        .build_on(foreign.clone(), vec![run("touch /x")], &fx.opts())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Dockerfile:3:1: RUN for {foreign} on a {host} host is not supported yet")
    );
    assert!(fx.runner.commands().is_empty());
}

/// The host platform, the chain key of an empty base, and `RUN touch /x`.
fn touch_on_scratch() -> (Platform, crate::digest::Digest, RunStep) {
    let base = super::BaseImage {
        name: "scratch".into(),
        config: Default::default(),
        layers: Vec::new(),
        origin: None,
    };
    let p = Platform::host();
    let chain = super::base_chain(&base, &p);
    let Step::Run(r) = run("touch /x") else {
        unreachable!()
    };
    (p, chain, r)
}

#[test]
fn run_keys_chain_on_what_is_below() {
    let (p, chain, r) = touch_on_scratch();
    let fx = Fixture::new(&[]);
    let opts = fx.opts();
    let k = |chain: &crate::digest::Digest, env: &[String], user: &str| {
        super::run_key(chain, &r, env, user, "/", &p, &opts)
    };
    let env = vec!["PATH=/bin".to_string()];
    let a = k(&chain, &env, "");
    assert_eq!(a, k(&chain, &env, ""));
    let other_chain = super::chain_key(&chain, &crate::digest::Digest::of(b"copy"));
    assert_ne!(a, k(&other_chain, &env, ""));
    assert_ne!(a, k(&chain, &["PATH=/usr/bin".to_string()], ""));
    assert_ne!(a, k(&chain, &env, "nobody"));
    let mut moved = r.clone();
    moved.location = Location::new("Dockerfile", 9, 1);
    assert_eq!(a, super::run_key(&chain, &moved, &env, "", "/", &p, &opts));
}

#[test]
fn insecure_runs_only_with_the_entitlement() {
    let fx = Fixture::new(&[]);
    let Step::Run(mut r) = run("touch /x") else {
        unreachable!()
    };
    r.insecure = true;
    let err = fx.build(vec![Step::Run(r.clone())]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:3:1: RUN --security=insecure needs the security.insecure entitlement: \
         pass `lade build --allow security.insecure` if this Dockerfile is trusted"
    );
    assert!(fx.runner.commands().is_empty());
    let mut opts = fx.opts();
    opts.run_settings.allow_insecure = true;
    fx.build_on(Platform::host(), vec![Step::Run(r)], &opts)
        .unwrap();
    assert_eq!(fx.runner.commands(), ["fake touch /x"]);
}

#[test]
fn extra_hosts_enter_run_keys_and_their_absence_changes_nothing() {
    let (p, chain, r) = touch_on_scratch();
    let fx = Fixture::new(&[]);
    let env = vec!["PATH=/bin".to_string()];
    let key = |hosts: &[&str]| {
        let mut opts = fx.opts();
        opts.run_settings.extra_hosts = hosts
            .iter()
            .map(|h| crate::exec::run::ExtraHost::parse(h).unwrap())
            .collect();
        super::run_key(&chain, &r, &env, "", "/", &p, &opts)
    };
    let plain = crate::plan::cache_key(
        &(
            super::CHAIN_FORMAT,
            "run",
            &r.command,
            &env,
            "",
            "/",
            r.network,
            &r.mounts,
            r.insecure,
            &r.files,
            p.to_string(),
            Compression::Gzip,
            0u64,
        ),
        Some(&chain),
        &[],
    );
    assert_eq!(key(&[]), plain);
    let one = key(&["db:10.0.0.1"]);
    assert_ne!(one, plain);
    assert_ne!(one, key(&["db:10.0.0.2"]));
    assert_ne!(one, key(&["db:10.0.0.1", "cache:10.0.0.3"]));
    assert_eq!(one, key(&["DB=10.0.0.1"]));
}

/// Every file under `dir` with its mode and content (or link target), sorted.
fn tree_of(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let content = if m.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, m.mode(), content));
        }
    }
    out.sort();
    out
}

#[test]
fn layers_under_a_later_run_are_extracted_as_written_not_from_their_blobs() {
    let (fx, image) = segments();
    let seen = fx.runner.seen.lock().unwrap().clone();
    // The fake runner never extracts: whatever is there was unpacked while being written.
    assert_eq!(seen[0].ready, [true]);
    assert_eq!(seen[1].ready, [true, true, true]);
    let layers = fx.store.root().join("run/layers");
    let diff_ids = &image.config.rootfs.diff_ids;
    // No RUN above the last layer: it is not extracted.
    assert!(!layers.join(diff_ids[3].hex()).exists());
    // What was unpacked is exactly what the blob extracts to.
    for (i, diff_id) in diff_ids.iter().enumerate().take(3) {
        let teed = layers.join(diff_id.hex());
        let aside = fx.store.root().join(format!("teed-{i}"));
        std::fs::rename(&teed, &aside).unwrap();
        let lower = crate::exec::run::LowerLayer {
            diff_id: diff_id.clone(),
            blob: image.manifest.layers[i].digest.clone(),
            media_type: image.manifest.layers[i].media_type.clone(),
        };
        let from_blob = crate::exec::run::extracted(&fx.store, &lower).unwrap();
        assert_eq!(tree_of(&aside), tree_of(&from_blob), "layer {i}");
        assert!(!tree_of(&aside).is_empty());
    }
}
