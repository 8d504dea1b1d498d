//! `cargo xtask bench`: lade against the physical floor of a layer (`tar | gzip -6` and
//! `tar | pigz`) and against the reference tools, on the standard workloads W1-W3 of
//! `../shared/bench/make-workloads.sh`.
//!
//! Every tool runs N times per workload, the tools interleaved within each round so that a slow
//! phase of the shared machine hits all of them; the best wall time counts, and lade's is shown as
//! a ratio to the references measured in the same run. Peak RSS and CPU time come from wait4(2).
//!
//! Rows, per workload unless noted:
//!
//! | row | what is timed | ratio to |
//! |---|---|---|
//! | `tar\|gzip -6`, `tar\|pigz` | the layer's directory through tar, the compressor, sha256sum | |
//! | `lade (cold)` | `lade build --spec` of one layer, empty cache, OCI archive | the floors |
//! | `lade (dockerfile, cold)` | `lade build` of the workload's Dockerfile, empty cache, OCI archive | buildah, BuildKit |
//! | `buildah bud` | `buildah bud --isolation chroot` on empty storage, then `buildah push` to an OCI archive (gzip) | |
//! | `BuildKit` | `docker build --no-cache` after `docker builder prune -af`, then `docker save` (uncompressed) | |
//! | `lade push` (W3) | `lade push` of the cold build's archive to a `docker-registry` on 127.0.0.1 | skopeo |
//! | `lade re-push` (W3) | the same push again: every blob is there already | |
//! | `skopeo copy` (W3) | `skopeo copy oci-archive:... docker://...` of the same archive | |
//! | `lade (warm no-op)` etc. (W2) | incremental builds on a warm cache, see [`rebuilds`] | the floors |
//! | `lade (100k ENV)`, `lade (100k ignores)` (`in`) | Dockerfile builds of 100,000 `ENV` lines, and of a 2-file context with 100,000 `.dockerignore` patterns, see [`inputs`] | |
//! | `lade (no-op rebuild)` (R, D) | the Dockerfile again on a warm cache: no RUN runs | buildah's and BuildKit's no-op rebuilds |
//! | `buildah (no-op rebuild)` (R1, D3) | `buildah bud --layers` again on its warm storage, then `buildah push` | |
//! | `BuildKit (no-op rebuild)` (R1, D3) | `docker build` again on its warm cache, then `docker save` | |
//! | `lade (warm cache mount)` (D4) | the cron seed with apt's cache mounts, warm, its RUN re-run (a new `BUST` build arg) | BuildKit's |
//! | `BuildKit (warm cache mount)` (D4) | the same with `docker build` on BuildKit's warm cache mounts, then `docker save` | |
//! | `lade (rootless, cold)` (R0, R1) | the cold Dockerfile build as the non-root user `lade-rootless` (subordinate ids, `xtask/src/rootless.rs`), through `setpriv` | lade's cold build as root |
//! | `lade (runner A, --cache-to)` (R1, W2) | CI runner A: cold build, `--cache-to type=registry` and `--push` to a fresh `docker-registry` | |
//! | `lade (runner B, --cache-from)` (R1, W2) | runner B, empty store: the same build with `--cache-from` that registry cache, `--push` | runner A, BuildKit's runner B |
//! | `BuildKit (runner B, --cache-from)` (R1, W2) | after an untimed `docker build` with the inline cache (`BUILDKIT_INLINE_CACHE=1`, pushed) and `docker builder prune -af`: `docker build --cache-from` the pushed image, then `docker push` (the CLI without buildx cannot export `type=registry` caches from dockerd's BuildKit) | |
//!
//! The RUN workloads of issue #13 (R0-R2 on busybox, D0-D3 on a Debian minbase when one is
//! given) are described in [`runs`]; after the table the bench prints the per-RUN overhead of
//! each tool ((R1 − R0) / 10, the same on Debian) and which storage buildah and dockerd used:
//! buildah gets overlay when a RUN works on it here, else vfs; dockerd overlay2, else vfs.
//!
//! The Dockerfiles start `ARG BASE` / `FROM ${BASE}`: the base is a busybox image lade builds once
//! per run (see [`refs`]), given to lade and buildah as `oci:DIR:1` and loaded into a private
//! dockerd for BuildKit. Every push run gets a registry on empty storage and a new port, so nothing
//! is already there and no client can mount blobs from an earlier run. The issues' targets are
//! checked in the last column: lade ≤ 0.2× buildah on W1 and ≤ 0.5× on W2 (#4), lade push ≤ 1.0×
//! skopeo and a re-push ≤ 0.1 s (#5).
//!
//! For BuildKit the work happens in dockerd: its CPU time and peak RSS (reset through
//! `/proc/PID/clear_refs` before each run) are added to the client's, marked `*`. A reference tool
//! that is not installed makes its rows "not installed": the bench installs buildah as root (see
//! `deps::BENCH`), docker.io, skopeo and docker-registry come with `cargo xtask test`. A row whose command fails (say a lade without
//! Dockerfile support or without `push`) is reported as failed with the end of its stderr, and
//! the bench goes on. `--only push` runs W3's push rows (and the cold build they push) alone;
//! `--rows A,B` keeps the rows whose names contain one of the words, or are `=NAME`
//! (case-insensitive), say `--only R0,R1 --rows "cold,=buildkit,=buildah bud"`.
//! `--only cache` the two-runner rows of issue #16 alone.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

mod refs;
mod runs;

use refs::Refs;
use runs::Base;

use crate::proc::{run_ok, which, Scratch};
use crate::{cargo, deps, repo_root, signal};

struct Options {
    runs: usize,
    workloads: PathBuf,
    lade: Option<PathBuf>,
    only: Option<Vec<String>>,
    /// `--rows`: lower-case parts of the row names to keep.
    rows: Option<Vec<String>>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 3,
        // Not /tmp: a tmpfs on many machines (RAM), and see the README.
        workloads: PathBuf::from("/var/tmp/lade-bench"),
        lade: None,
        only: None,
        rows: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--runs" => o.runs = value()?.parse().context("--runs")?,
            "--workloads" => o.workloads = value()?.into(),
            "--lade" => o.lade = Some(value()?.into()),
            "--only" => {
                o.only = Some(
                    value()?
                        .split(',')
                        .map(|s| s.trim().to_uppercase())
                        .collect(),
                )
            }
            "--rows" => {
                o.rows = Some(
                    value()?
                        .split(',')
                        .map(|s| s.trim().to_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            other => bail!("unknown option {other:?}"),
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(o)
}

/// One workload: a directory that becomes one layer, inside a context with a Dockerfile.
pub struct Workload {
    name: &'static str,
    /// The layer's content, relative to the workloads directory.
    dir: &'static str,
    /// The Dockerfile's context, relative to the workloads directory.
    context: &'static str,
    base: Base,
    /// BuildKit's `--network` (dockerd has no bridge: `host` for a step that needs the mirror).
    network: &'static str,
}

const fn layer(name: &'static str, dir: &'static str, context: &'static str) -> Workload {
    Workload {
        name,
        dir,
        context,
        base: Base::Busybox,
        network: "none",
    }
}

/// A RUN workload of [`runs`]: its context is its name in lower case.
const fn run_workload(name: &'static str, context: &'static str, base: Base) -> Workload {
    Workload {
        name,
        dir: "",
        context,
        base,
        network: "none",
    }
}

const WORKLOADS: &[Workload] = &[
    layer("W1", "w1/target", "w1"),
    layer("W2", "w2/node_modules", "w2"),
    layer("W3", "w3", "w3"),
    run_workload("R0", "r0", Base::Busybox),
    run_workload("R1", "r1", Base::Busybox),
    run_workload("R2", "r2", Base::Busybox),
    run_workload("D0", "d0", Base::Debian),
    run_workload("D1", "d1", Base::Debian),
    run_workload("D2", "d2", Base::Debian),
    Workload {
        network: "host",
        ..run_workload("D3", "d3", Base::Debian)
    },
    Workload {
        network: "host",
        ..run_workload("D4", "d4", Base::Debian)
    },
];

/// The workloads of one layer (the `lade.toml` and floor rows run on these only).
const LAYER_WORKLOADS: &[&str] = &["W1", "W2", "W3"];
/// The cold Dockerfile builds of the reference tools (D3, the cron seed, is only rebuilt).
const COLD_WORKLOADS: &[&str] = &["W1", "W2", "W3", "R0", "R1", "R2", "D0", "D1", "D2"];
/// lade's cold Dockerfile builds (D4 is only built on its warm cache mounts).
const DOCKERFILE_WORKLOADS: &[&str] = &["W1", "W2", "W3", "R0", "R1", "R2", "D0", "D1", "D2", "D3"];
/// The cron seed with warm apt cache mounts (#14).
const WARM_MOUNT_WORKLOADS: &[&str] = &["D4"];
/// lade's no-op rebuilds.
const NOOP_WORKLOADS: &[&str] = &["R0", "R1", "R2", "D0", "D1", "D2", "D3"];
/// The reference tools' no-op rebuilds: (c), the cron seed, and its busybox stand-in R1.
const REF_NOOP_WORKLOADS: &[&str] = &["R1", "D3"];
/// `--only run`: the RUN workloads.
const RUN_WORKLOADS: &[&str] = &["R0", "R1", "R2", "D0", "D1", "D2", "D3", "D4"];

/// What every tool gets to prepare and run one build.
struct Ctx {
    root: PathBuf,
    lade: PathBuf,
    scratch: PathBuf,
    refs: Refs,
}

impl Ctx {
    fn spec(&self, w: &Workload) -> PathBuf {
        self.root
            .join(format!("lade-{}.toml", w.name.to_lowercase()))
    }
    fn context(&self, w: &Workload) -> PathBuf {
        self.root.join(w.context)
    }
    fn cache(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("cache-{name}"))
    }
    fn out(&self, tool: &str) -> PathBuf {
        self.scratch.join(format!("out-{tool}.tar"))
    }
    /// The OCI archive of the last cold lade build, which the push rows push.
    fn pushed(&self) -> PathBuf {
        self.out(LADE_COLD_OUT)
    }
    /// The workload's base for lade and buildah: `oci:DIR:TAG`.
    fn base_ref(&self, w: &Workload) -> Result<String, String> {
        match w.base {
            Base::Busybox => (self.refs.base.as_ref())
                .map(|b| format!("oci:{}:1", b.display()))
                .map_err(Clone::clone),
            Base::Debian => self.refs.debian.clone(),
        }
    }
    /// The workload's base in the private dockerd, or why BuildKit cannot build it.
    fn docker_base(&self, w: &Workload) -> Result<&'static str, String> {
        if let Err(e) = &self.refs.dockerd {
            return Err(e.clone());
        }
        match w.base {
            Base::Busybox => Ok(refs::DOCKER_BASE),
            Base::Debian => match (&self.refs.debian, &self.refs.debian_in_dockerd) {
                (Err(e), _) | (_, Some(e)) => Err(e.clone()),
                _ => Ok(runs::DOCKER_DEBIAN),
            },
        }
    }
    fn buildkit(&self, w: &Workload, no_cache: bool, out: &Path) -> Command {
        self.buildkit_with(w, no_cache, out, None)
    }
    /// [`Ctx::buildkit`] with `--build-arg BUST=bust` when given.
    fn buildkit_with(
        &self,
        w: &Workload,
        no_cache: bool,
        out: &Path,
        bust: Option<&str>,
    ) -> Command {
        match (&self.refs.dockerd, self.docker_base(w)) {
            (Ok(d), Ok(base)) => {
                let context = self.context(w);
                refs::buildkit(d, base, w.network, no_cache, &context, out, bust)
            }
            _ => Command::new("false"),
        }
    }
    fn buildah(&self, w: &Workload, root: &Path, out: Option<&Path>, layers: bool) -> Command {
        let bin = self.refs.buildah.as_deref().unwrap_or(Path::new("buildah"));
        let base = self.base_ref(w).unwrap_or_default();
        let driver = self.refs.buildah_driver;
        refs::buildah(bin, driver, root, &base, &self.context(w), out, layers)
    }
    /// `127.0.0.1:PORT/REPO:1` on the registry of this run.
    fn push_ref(&self, repo: &str, run: &Run) -> String {
        format!("{}/{repo}-r{}:1", self.refs.registry_addr(), run.round + 1)
    }
}

/// One run of one row.
struct Run {
    round: usize,
    /// Where the row writes its image (removed before and, unless kept, after the run).
    out: PathBuf,
}

/// A row of the table: whether it can run here, how to get ready for one run (untimed) and the
/// command to time.
struct Tool {
    name: &'static str,
    /// Why the row cannot run here (a tool not installed, a service that did not start).
    missing: fn(&Ctx) -> Option<String>,
    prepare: fn(&Ctx, &Workload, &Run) -> Result<()>,
    command: fn(&Ctx, &Workload, &Run) -> Command,
    /// The workloads it runs on (None: all).
    workloads: Option<&'static [&'static str]>,
    /// Rows of the same workload its time is shown as a ratio to.
    refs: &'static [&'static str],
    /// The name of its output file; the push rows use the one of [`LADE_COLD_OUT`].
    out: &'static str,
    /// The work happens in dockerd: add dockerd's CPU time and peak RSS to the client's.
    in_dockerd: bool,
}

/// Why a row cannot run on a workload: [`Tool::missing`], or the workload's base is missing.
fn missing_on(c: &Ctx, tool: &Tool, w: &Workload) -> Option<String> {
    if let Some(m) = (tool.missing)(c) {
        return Some(m);
    }
    match tool.name {
        BUILDKIT | BUILDKIT_NOOP | BUILDKIT_WARM | BUILDKIT_RUNNER_B => c.docker_base(w).err(),
        LADE_DOCKERFILE | LADE_NOOP | LADE_WARM | LADE_ROOTLESS | BUILDAH | BUILDAH_NOOP
        | RUNNER_A | RUNNER_B => c.base_ref(w).err(),
        _ => None,
    }
}

const GZIP: &str = "tar|gzip -6";
const PIGZ: &str = "tar|pigz";
const BUILDAH: &str = "buildah bud";
const BUILDKIT: &str = "BuildKit";
const SKOPEO: &str = "skopeo copy";
const LADE_COLD_OUT: &str = "lade-cold";
const LADE_DOCKERFILE: &str = "lade (dockerfile, cold)";
const LADE_NOOP: &str = "lade (no-op rebuild)";
const LADE_ROOTLESS: &str = "lade (rootless, cold)";
/// The rootless rows (#14): R0 and R1 as the rootless test user, beside root's.
const ROOTLESS_WORKLOADS: &[&str] = &["R0", "R1"];
const BUILDAH_NOOP: &str = "buildah (no-op rebuild)";
const BUILDKIT_NOOP: &str = "BuildKit (no-op rebuild)";
/// D4 (#14): the cron seed's RUN again (a new `BUST`) on warm apt cache mounts.
const LADE_WARM: &str = "lade (warm cache mount)";
const BUILDKIT_WARM: &str = "BuildKit (warm cache mount)";
/// The `BUST` build arg of the untimed build that fills the cache mounts.
const WARMING: &str = "warming";

/// The two-runner rows (#16), their workloads, and `--only cache`.
const RUNNER_A: &str = "lade (runner A, --cache-to)";
const RUNNER_B: &str = "lade (runner B, --cache-from)";
const BUILDKIT_RUNNER_B: &str = "BuildKit (runner B, --cache-from)";
const CACHE_ROWS: &[&str] = &[RUNNER_A, RUNNER_B, BUILDKIT_RUNNER_B];
const CACHE_WORKLOADS: &[&str] = &["R1", "W2"];

/// The rows `--only push` runs.
const PUSH_ROWS: &[&str] = &["lade (cold)", "lade push", "lade re-push", SKOPEO];

/// The rows [`rebuilds`] adds to W2 (not in [`tools`]: they share one warm cache).
const WARM_NOOP: &str = "lade (warm no-op)";
const REBUILD_ROWS: &[&str] = &[WARM_NOOP, "lade (touch 1 file)", "lade (change 1 file)"];

/// A [`TARGETS`] "reference" meaning the row's peak RSS in MiB, not a ratio.
const PEAK_MIB: &str = "peak MiB";
/// "< 150 MB" (#13): 150 000 000 bytes is 143.05 MiB.
const RUN_PEAK_MIB: f64 = 143.0;

/// What the issues ask for: (workload, row, reference row for a ratio, "" for seconds or
/// [`PEAK_MIB`] for peak RSS, at most).
const TARGETS: &[(&str, &str, &str, f64)] = &[
    // #3: the lade.toml build against the plain pipelines, its no-op rebuild and memory.
    ("W2", "lade (cold)", GZIP, 1.0),
    ("W3", "lade (cold)", PIGZ, 1.2),
    ("W2", WARM_NOOP, "", 0.3),
    // "< 100 MB": 100 000 000 bytes is 95.37 MiB.
    ("W3", "lade (cold)", PEAK_MIB, 95.3),
    ("W1", "lade (dockerfile, cold)", BUILDAH, 0.2),
    ("W2", "lade (dockerfile, cold)", BUILDAH, 0.5),
    ("W3", "lade push", SKOPEO, 1.0),
    ("W3", "lade re-push", "", 0.1),
    // #13: (a) ten trivial RUNs, (b) one RUN writing 20 000 files, (c) the cron seed's no-op
    // rebuild (R1's no-op rebuild is its stand-in on busybox), peak RSS throughout.
    ("R1", LADE_DOCKERFILE, BUILDKIT, 0.3),
    ("R1", LADE_DOCKERFILE, BUILDAH, 0.3),
    ("R2", LADE_DOCKERFILE, BUILDKIT, 0.5),
    ("R1", LADE_NOOP, "", 0.2),
    ("D1", LADE_DOCKERFILE, BUILDKIT, 0.3),
    ("D1", LADE_DOCKERFILE, BUILDAH, 0.3),
    ("D2", LADE_DOCKERFILE, BUILDKIT, 0.5),
    ("D3", LADE_NOOP, "", 0.2),
    ("R1", LADE_DOCKERFILE, PEAK_MIB, RUN_PEAK_MIB),
    ("R2", LADE_DOCKERFILE, PEAK_MIB, RUN_PEAK_MIB),
    ("D1", LADE_DOCKERFILE, PEAK_MIB, RUN_PEAK_MIB),
    ("D2", LADE_DOCKERFILE, PEAK_MIB, RUN_PEAK_MIB),
    ("D3", LADE_DOCKERFILE, PEAK_MIB, RUN_PEAK_MIB),
    // #14: the cron seed on warm apt cache mounts.
    ("D4", LADE_WARM, BUILDKIT_WARM, 0.5),
    // #16: runner B from the registry cache against runner A's cold build and BuildKit's B.
    ("R1", RUNNER_B, RUNNER_A, 0.2),
    ("R1", RUNNER_B, BUILDKIT_RUNNER_B, 0.5),
    ("W2", RUNNER_B, RUNNER_A, 0.2),
    ("W2", RUNNER_B, BUILDKIT_RUNNER_B, 0.5),
];

fn available(_: &Ctx) -> Option<String> {
    None
}

fn nothing(_: &Ctx, _: &Workload, _: &Run) -> Result<()> {
    Ok(())
}

fn tools() -> Vec<Tool> {
    let row = |name, command| Tool {
        name,
        missing: available,
        prepare: nothing,
        command,
        workloads: None,
        refs: &[],
        out: "",
        in_dockerd: false,
    };
    vec![
        Tool {
            workloads: Some(LAYER_WORKLOADS),
            ..row(GZIP, |c, w, _| floor(c, w, "gzip -6"))
        },
        Tool {
            workloads: Some(LAYER_WORKLOADS),
            ..row(PIGZ, |c, w, _| floor(c, w, "pigz"))
        },
        Tool {
            prepare: |c, w, _| fresh_dir(&c.cache(w.name)),
            refs: &[GZIP, PIGZ],
            out: LADE_COLD_OUT,
            workloads: Some(LAYER_WORKLOADS),
            ..row("lade (cold)", |c, w, r| {
                lade_build(c, w, &c.cache(w.name), &r.out)
            })
        },
        Tool {
            prepare: |c, w, _| {
                fresh_dir(&c.cache(w.name))?;
                base_unpacked(c, w, &c.cache(w.name))
            },
            refs: &[BUILDAH, BUILDKIT],
            out: "lade-dockerfile",
            workloads: Some(DOCKERFILE_WORKLOADS),
            ..row(LADE_DOCKERFILE, |c, w, r| {
                lade_dockerfile(c, w, &c.cache(w.name), &r.out)
            })
        },
        Tool {
            missing: |_| crate::rootless::ensure().err().map(|e| format!("{e:#}")),
            prepare: |c, w, _| rootless_prepare(c, w),
            refs: &[LADE_DOCKERFILE],
            workloads: Some(ROOTLESS_WORKLOADS),
            ..row(LADE_ROOTLESS, |c, w, _| lade_rootless(c, w))
        },
        Tool {
            // The untimed build before each run: a no-op once the cache is warm.
            prepare: |c, w, r| {
                let cache = c.cache(&format!("warm-{}", w.name));
                untimed(&mut lade_dockerfile(c, w, &cache, &r.out))
            },
            refs: &[BUILDAH_NOOP, BUILDKIT_NOOP],
            out: "lade-noop",
            workloads: Some(NOOP_WORKLOADS),
            ..row(LADE_NOOP, |c, w, r| {
                let cache = c.cache(&format!("warm-{}", w.name));
                lade_dockerfile(c, w, &cache, &r.out)
            })
        },
        Tool {
            // The untimed build fills the cache mounts (a no-op once they are warm).
            prepare: |c, w, r| {
                let cache = c.cache(&format!("warm-{}", w.name));
                untimed(lade_dockerfile(c, w, &cache, &r.out).args(bust(WARMING)))
            },
            refs: &[BUILDKIT_WARM],
            out: "lade-warm",
            workloads: Some(WARM_MOUNT_WORKLOADS),
            ..row(LADE_WARM, |c, w, r| {
                let cache = c.cache(&format!("warm-{}", w.name));
                let mut cmd = lade_dockerfile(c, w, &cache, &r.out);
                cmd.args(bust(&format!("run-{}", r.round)));
                cmd
            })
        },
        Tool {
            missing: |c| c.refs.buildah.as_ref().err().cloned(),
            prepare: |c, _, _| fresh_dir(&c.refs.buildah_root()),
            out: "buildah",
            workloads: Some(COLD_WORKLOADS),
            ..row(BUILDAH, |c, w, r| {
                c.buildah(w, &c.refs.buildah_root(), Some(&r.out), false)
            })
        },
        Tool {
            missing: |c| c.refs.buildah.as_ref().err().cloned(),
            // `--layers` storage kept across runs, (re)built before each run.
            prepare: |c, w, _| untimed(&mut c.buildah(w, &c.refs.buildah_warm_root(), None, true)),
            out: "buildah-noop",
            workloads: Some(REF_NOOP_WORKLOADS),
            ..row(BUILDAH_NOOP, |c, w, r| {
                c.buildah(w, &c.refs.buildah_warm_root(), Some(&r.out), true)
            })
        },
        Tool {
            missing: |c| c.refs.dockerd.as_ref().err().cloned(),
            prepare: |c, _, _| match &c.refs.dockerd {
                Ok(d) => refs::buildkit_clean(d),
                Err(e) => bail!("{e}"),
            },
            out: "buildkit",
            in_dockerd: true,
            workloads: Some(COLD_WORKLOADS),
            ..row(BUILDKIT, |c, w, r| c.buildkit(w, true, &r.out))
        },
        Tool {
            missing: |c| c.refs.dockerd.as_ref().err().cloned(),
            // The cold row prunes BuildKit's cache: build again (untimed) before each run.
            prepare: |c, w, r| untimed(&mut c.buildkit(w, false, &r.out)),
            out: "buildkit-noop",
            in_dockerd: true,
            workloads: Some(REF_NOOP_WORKLOADS),
            ..row(BUILDKIT_NOOP, |c, w, r| c.buildkit(w, false, &r.out))
        },
        Tool {
            missing: |c| c.refs.dockerd.as_ref().err().cloned(),
            prepare: |c, w, r| untimed(&mut c.buildkit_with(w, false, &r.out, Some(WARMING))),
            out: "buildkit-warm",
            in_dockerd: true,
            workloads: Some(WARM_MOUNT_WORKLOADS),
            ..row(BUILDKIT_WARM, |c, w, r| {
                c.buildkit_with(w, false, &r.out, Some(&format!("run-{}", r.round)))
            })
        },
        Tool {
            missing: |c| c.refs.registry_missing(),
            // A registry on empty storage: A's cache and image are the only ones there.
            prepare: |c, w, _| {
                c.refs.fresh_registry()?;
                fresh_dir(&c.cache(&format!("runner-a-{}", w.name)))
            },
            workloads: Some(CACHE_WORKLOADS),
            ..row(RUNNER_A, |c, w, r| {
                let cache = c.cache(&format!("runner-a-{}", w.name));
                let to = format!("type=registry,ref={}", c.push_ref("bench/cache", r));
                runner(c, w, r, &cache, &["--cache-to", &to])
            })
        },
        Tool {
            missing: |c| c.refs.registry_missing(),
            // Runner A's registry, an empty store.
            prepare: |c, w, _| fresh_dir(&c.cache(&format!("runner-b-{}", w.name))),
            refs: &[RUNNER_A, BUILDKIT_RUNNER_B],
            workloads: Some(CACHE_WORKLOADS),
            ..row(RUNNER_B, |c, w, r| {
                let cache = c.cache(&format!("runner-b-{}", w.name));
                let from = format!("type=registry,ref={}", c.push_ref("bench/cache", r));
                runner(c, w, r, &cache, &["--cache-from", &from])
            })
        },
        Tool {
            missing: |c| {
                let e = c.refs.dockerd.as_ref().err().cloned();
                e.or_else(|| c.refs.registry_missing())
            },
            // Runner A (untimed): a cold build with the inline cache, pushed; then runner B's
            // empty builder.
            prepare: |c, w, r| match &c.refs.dockerd {
                Ok(d) => {
                    refs::buildkit_clean(d)?;
                    let image = c.push_ref("bench/buildkit", r);
                    untimed(&mut buildkit_runner(
                        c,
                        w,
                        &image,
                        &["--build-arg", "BUILDKIT_INLINE_CACHE=1"],
                    ))?;
                    refs::buildkit_clean(d)?;
                    let _ = d.cli().args(["image", "rm", "-f", &image]).output();
                    Ok(())
                }
                Err(e) => bail!("{e}"),
            },
            in_dockerd: true,
            workloads: Some(CACHE_WORKLOADS),
            ..row(BUILDKIT_RUNNER_B, |c, w, r| {
                let image = c.push_ref("bench/buildkit", r);
                buildkit_runner(c, w, &image, &["--cache-from", &image])
            })
        },
        Tool {
            missing: |c| c.refs.registry_missing(),
            prepare: |c, _, _| c.refs.fresh_registry(),
            workloads: Some(&["W3"]),
            refs: &[SKOPEO],
            ..row("lade push", |c, _, r| lade_push(c, r))
        },
        Tool {
            missing: |c| c.refs.registry_missing(),
            workloads: Some(&["W3"]),
            ..row("lade re-push", |c, _, r| lade_push(c, r))
        },
        Tool {
            missing: |c| {
                let e = c.refs.skopeo.as_ref().err().cloned();
                e.or_else(|| c.refs.registry_missing())
            },
            prepare: |c, _, _| c.refs.fresh_registry(),
            workloads: Some(&["W3"]),
            ..row(SKOPEO, |c, _, r| {
                let bin = c.refs.skopeo.as_deref().unwrap_or(Path::new("skopeo"));
                refs::skopeo_copy(bin, &c.pushed(), &c.push_ref("bench/w3-skopeo", r))
            })
        },
    ]
}

/// `--build-arg BUST=value`: a value the RUN sees, so a new one runs it again.
fn bust(value: &str) -> [String; 2] {
    ["--build-arg".into(), format!("BUST={value}")]
}

/// A CI runner's `lade build` of the workload's Dockerfile with the store `cache`, pushed to
/// this run's registry, with `extra` (its `--cache-to` or `--cache-from`).
fn runner(c: &Ctx, w: &Workload, r: &Run, cache: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(&c.lade);
    cmd.arg("build")
        .arg("--cache-dir")
        .arg(cache)
        .arg("--build-arg")
        .arg(format!("BASE={}", c.base_ref(w).unwrap_or_default()))
        .args(["--push", "-t"])
        .arg(c.push_ref("bench/app", r))
        .args(extra)
        .args(["--progress", "quiet"])
        .arg(c.context(w))
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// BuildKit (dockerd's) building the workload as `image` with `extra`, then pushing it.
fn buildkit_runner(c: &Ctx, w: &Workload, image: &str, extra: &[&str]) -> Command {
    match (&c.refs.dockerd, c.docker_base(w)) {
        (Ok(d), Ok(base)) => refs::buildkit_push(d, base, w.network, &c.context(w), image, extra),
        _ => Command::new("false"),
    }
}

/// `lade push` of the cold W3 build to this run's registry; run twice on the same registry, the
/// second is the re-push that should find every blob there already.
fn lade_push(c: &Ctx, r: &Run) -> Command {
    let mut cmd = Command::new(&c.lade);
    cmd.arg("push")
        .arg(c.pushed())
        .arg(c.push_ref("bench/w3", r));
    cmd
}

fn floor(c: &Ctx, w: &Workload, compressor: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "set -o pipefail; tar --sort=name -C \"$1\" -cf - . | {compressor} | sha256sum >/dev/null"
        ))
        .arg("floor")
        .arg(c.root.join(w.dir));
    cmd
}

fn lade_build(c: &Ctx, w: &Workload, cache: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(&c.lade);
    cmd.arg("build")
        .arg("--spec")
        .arg(c.spec(w))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg("--cache-dir")
        .arg(cache)
        .arg("--progress")
        .arg("quiet")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// `lade build` of the workload's Dockerfile on its base with `cache`, to an OCI archive.
fn lade_dockerfile(c: &Ctx, w: &Workload, cache: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(&c.lade);
    cmd.arg("build")
        .arg("--cache-dir")
        .arg(cache)
        .arg("--build-arg")
        .arg(format!("BASE={}", c.base_ref(w).unwrap_or_default()))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .args(["--progress", "quiet"])
        .arg(c.context(w))
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Where the rootless rows work: a directory the rootless user owns, with copies of the base
/// layout and the workload's context (the bench's own are root's), its store and its output.
fn rootless_dir(c: &Ctx) -> PathBuf {
    c.scratch.join("rootless")
}

/// A fresh store for the rootless run, the base and context copied in, all the user's.
fn rootless_prepare(c: &Ctx, w: &Workload) -> Result<()> {
    let dir = rootless_dir(c);
    std::fs::create_dir_all(&dir)?;
    let base = c.refs.base.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    if !dir.join("base").exists() {
        run_ok(Command::new("cp").arg("-a").arg(base).arg(dir.join("base")))?;
    }
    let ctx = dir.join(format!("ctx-{}", w.name));
    if !ctx.exists() {
        run_ok(Command::new("cp").arg("-a").arg(c.context(w)).arg(&ctx))?;
    }
    fresh_dir(&dir.join("cache"))?;
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:", crate::rootless::USER))
            .arg(&dir),
    )?;
    Ok(())
}

/// `lade build` of the workload as the rootless user (`setpriv`), cold, on the copies of
/// [`rootless_prepare`].
fn lade_rootless(c: &Ctx, w: &Workload) -> Command {
    let dir = rootless_dir(c);
    let user = crate::rootless::USER;
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--init-groups"])
        .arg(&c.lade)
        .arg("build")
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--build-arg")
        .arg(format!("BASE=oci:{}:1", dir.join("base").display()))
        .arg("--output")
        .arg(format!("type=oci,dest={}", dir.join("out.tar").display()))
        .args(["--progress", "quiet"])
        .arg(dir.join(format!("ctx-{}", w.name)))
        .env("HOME", &dir)
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Runs a command that gets a row ready (its output discarded, its failure returned).
/// Before a cold RUN build: the base unpacked in the store, by an untimed `RUN true` (no step
/// of the workload is cached by it). BuildKit's and buildah's bases are unpacked when they are
/// loaded or pulled, untimed; a cold row times the build's steps, not the base's extraction.
fn base_unpacked(c: &Ctx, w: &Workload, cache: &Path) -> Result<()> {
    if !RUN_WORKLOADS.contains(&w.name) {
        return Ok(());
    }
    let ctx = c.scratch.join("base-unpacked");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\nRUN true\n")?;
    untimed(
        Command::new(&c.lade)
            .arg("build")
            .arg("--cache-dir")
            .arg(cache)
            .arg("--build-arg")
            .arg(format!("BASE={}", c.base_ref(w).unwrap_or_default()))
            .args(["--progress", "quiet"])
            .arg(&ctx),
    )
}

fn untimed(cmd: &mut Command) -> Result<()> {
    run_ok(cmd.stdin(Stdio::null())).map(|_| ())
}

/// An empty directory `p` for a run. What was there is moved into `.trash` beside it, which
/// goes with the scratch directory (or the services' one) at the end: on ext4 without a journal
/// (this machine's disk) inodes deleted in the last minute are skipped, expensively, when new
/// ones are allocated, so removing a store's thousands of files right before a timed run made
/// the next extraction 3-6× slower (GNU tar on the Debian base here: 0.22 s, 1.3 s just after
/// an `rm -rf`). That is a cost of the bench, not of the tool it times.
fn fresh_dir(p: &Path) -> Result<()> {
    static MOVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if p.exists() {
        let trash = p.parent().unwrap_or(Path::new("/")).join(".trash");
        std::fs::create_dir_all(&trash)?;
        let n = MOVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = trash.join(format!("{n}"));
        if std::fs::rename(p, &aside).is_err() {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    std::fs::create_dir_all(p)?;
    Ok(())
}

/// An empty directory `p`, what was there removed (for the scratch directory itself).
fn empty_dir(p: &Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::create_dir_all(p)?;
    Ok(())
}

/// One timed run.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
    exit: Option<i32>,
}

/// Runs `cmd` and measures it with wait4(2): wall time, user+system CPU and the peak RSS of the
/// largest process in it (the kernel folds reaped descendants into the child's maxrss).
fn measure(cmd: &mut Command, log: &Path) -> Result<Sample> {
    let err = std::fs::File::create(log)?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting for our own child, which std has not reaped.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
    }
    let wall = start.elapsed();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let exit = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    Ok(Sample {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        exit,
    })
}

/// The best of a row's runs, its first failure, or why it did not run at all.
#[derive(Default)]
struct Row {
    best: Option<Sample>,
    /// Wall times of the successful runs, for the median.
    walls: Vec<Duration>,
    failure: Option<String>,
    skipped: Option<String>,
}

impl Row {
    fn add(&mut self, s: Sample, log: &Path) {
        if s.exit != Some(0) {
            if self.failure.is_none() {
                let why = match s.exit {
                    Some(c) => format!("exit {c}"),
                    None => "killed by a signal".into(),
                };
                self.failure = Some(format!("failed ({why}): {}", failure_excerpt(log)));
            }
            return;
        }
        self.walls.push(s.wall);
        if self.best.is_none_or(|b| s.wall < b.wall) {
            self.best = Some(s);
        }
    }

    /// The median wall time of the successful runs (the upper one of two middles).
    fn median(&self) -> Option<Duration> {
        let mut w = self.walls.clone();
        w.sort();
        w.get(w.len() / 2).copied()
    }

    fn fail(&mut self, why: String) {
        self.failure.get_or_insert(why);
    }
}

/// What a failed run said: its first line that mentions an error (clap puts the reason first and
/// the usage after it), else the end of its stderr.
fn failure_excerpt(log: &Path) -> String {
    let tail = crate::proc::log_tail(log, 20);
    match tail
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("error"))
    {
        Some(line) => line.trim().to_string(),
        None => {
            let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
            lines[lines.len().saturating_sub(3)..].join(" | ")
        }
    }
}

/// A line of the table.
struct Line {
    workload: &'static str,
    tool: &'static str,
    /// Rows of the same workload to show ratios to.
    refs: &'static [&'static str],
    /// CPU and RSS include dockerd's.
    in_dockerd: bool,
    row: Row,
}

pub fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse(args)?;
    signal::install();
    deps::ensure(deps::BENCH)?;
    let root = &opts.workloads;
    make_workloads(root)?;
    let lade = match &opts.lade {
        Some(p) => std::fs::canonicalize(p).with_context(|| format!("--lade {}", p.display()))?,
        None => build_lade()?,
    };
    let scratch = root.join(".bench-scratch");
    empty_dir(&scratch)?;
    // `--only push`: W3's push rows and the cold build that makes the archive they push.
    let push_only = opts
        .only
        .as_ref()
        .is_some_and(|o| o.iter().any(|n| n == "PUSH"));
    // `--only cache`: the two-runner rows on their workloads.
    let cache_only = opts
        .only
        .as_ref()
        .is_some_and(|o| o.iter().any(|n| n == "CACHE"));
    let mut workloads: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| {
            opts.only.as_ref().is_none_or(|o| {
                o.iter()
                    .any(|n| n == w.name || (n == "RUN" && RUN_WORKLOADS.contains(&w.name)))
            }) || (push_only && w.name == "W3")
                || (cache_only && CACHE_WORKLOADS.contains(&w.name))
        })
        .collect();
    if workloads.iter().any(|w| RUN_WORKLOADS.contains(&w.name)) {
        runs::make(root)?;
    }
    let want_debian = workloads.iter().any(|w| w.base == Base::Debian);
    // Declared before the context so that it is removed after dockerd and the registry stop.
    let services = Scratch::new("lade-bench")?;
    let refs = Refs::start(
        services.path(),
        &lade,
        !workloads.is_empty() && !push_only,
        want_debian,
    )?;
    let mut notes = vec![format!(
        "buildah storage: {}; BuildKit storage (dockerd): {}",
        refs.buildah_driver,
        refs.dockerd
            .as_ref()
            .map(|d| d.storage_driver.as_str())
            .unwrap_or("-")
    )];
    if let (true, Err(e)) = (want_debian, &refs.debian) {
        notes.push(format!(
            "D0-D4 (Debian minbase) skipped: {e}; R1's no-op rebuild stands in for (c), the cron seed's"
        ));
        workloads.retain(|w| w.base != Base::Debian);
    }
    let ctx = Ctx {
        root: root.clone(),
        lade,
        scratch,
        refs,
    };
    for w in &workloads {
        std::fs::write(
            ctx.spec(w),
            format!(
                "[image]\nfrom = \"scratch\"\n[[layer]]\nname = \"w\"\nfrom = \"{}\"\ninto = \"/data\"\n",
                w.dir
            ),
        )?;
    }

    let mut table: Vec<Line> = Vec::new();
    let mut tools = tools();
    if push_only {
        tools.retain(|t| PUSH_ROWS.contains(&t.name));
    }
    if let Some(rows) = &opts.rows {
        tools.retain(|t| {
            let name = t.name.to_lowercase();
            rows.iter().any(|r| match r.strip_prefix('=') {
                Some(exact) => name == exact,
                None => name.contains(r.as_str()),
            })
        });
    }
    if cache_only {
        tools.retain(|t| CACHE_ROWS.contains(&t.name));
    }
    for w in &workloads {
        let tools: Vec<&Tool> = tools
            .iter()
            .filter(|t| t.workloads.is_none_or(|ws| ws.contains(&w.name)))
            .collect();
        let mut rows: Vec<Row> = tools.iter().map(|_| Row::default()).collect();
        for (tool, row) in tools.iter().zip(rows.iter_mut()) {
            row.skipped = missing_on(&ctx, tool, w);
        }
        for round in 0..opts.runs {
            for (tool, row) in tools.iter().zip(rows.iter_mut()) {
                if row.skipped.is_some() {
                    continue;
                }
                signal::check()?;
                eprintln!(
                    "bench: {} {} run {}/{}",
                    w.name,
                    tool.name,
                    round + 1,
                    opts.runs
                );
                let run = Run {
                    round,
                    out: ctx.out(if tool.out.is_empty() {
                        "none"
                    } else {
                        tool.out
                    }),
                };
                if !tool.out.is_empty() {
                    remove_file(&run.out)?;
                }
                if let Err(e) = (tool.prepare)(&ctx, w, &run) {
                    row.fail(format!("failed to prepare: {e:#}"));
                    continue;
                }
                let log = ctx.scratch.join("run.log");
                let usage = match (&ctx.refs.dockerd, tool.in_dockerd) {
                    (Ok(d), true) => Some(refs::DaemonUsage::start(d.pid())),
                    _ => None,
                };
                let mut sample = measure(&mut (tool.command)(&ctx, w, &run), &log)?;
                match usage.map(|u| u.and_then(refs::DaemonUsage::finish)) {
                    Some(Ok((cpu, rss))) => {
                        sample.cpu += cpu;
                        sample.max_rss_kib = sample.max_rss_kib.max(rss);
                    }
                    Some(Err(e)) => eprintln!("bench: dockerd's CPU and RSS not counted: {e:#}"),
                    None => {}
                }
                row.add(sample, &log);
                if !tool.out.is_empty() && tool.out != LADE_COLD_OUT {
                    remove_file(&run.out)?;
                }
            }
        }
        for (tool, row) in tools.iter().zip(rows) {
            table.push(Line {
                workload: w.name,
                tool: tool.name,
                refs: tool.refs,
                in_dockerd: tool.in_dockerd,
                row,
            });
        }
        // Not needed between workloads: a 1 GiB image in vfs storage, W3's archives.
        fresh_dir(&ctx.refs.buildah_root())?;
        fresh_dir(&ctx.refs.buildah_warm_root())?;
        remove_file(&ctx.pushed())?;
        if w.name == "W2" && !push_only && !cache_only {
            for (tool, row) in rebuilds(&ctx, w, opts.runs)? {
                table.push(Line {
                    workload: w.name,
                    tool,
                    refs: &[GZIP, PIGZ],
                    in_dockerd: false,
                    row,
                });
            }
        }
    }
    if !cache_only
        && opts
            .only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == "IN"))
    {
        for (tool, row) in inputs(&ctx, opts.runs)? {
            table.push(Line {
                workload: "in",
                tool,
                refs: &[],
                in_dockerd: false,
                row,
            });
        }
    }
    drop(ctx.refs);
    drop(services);
    let _ = std::fs::remove_dir_all(&ctx.scratch);
    print_table(&table);
    for line in per_run_overhead(&table) {
        println!("{line}");
    }
    for note in notes {
        println!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Incremental lade builds of W2 on a warm cache: nothing changed, one file's mtime changed, one
/// file's content changed. The changed file is restored afterwards.
fn rebuilds(ctx: &Ctx, w: &Workload, runs: usize) -> Result<Vec<(&'static str, Row)>> {
    let cache = ctx.cache("warm");
    let out = ctx.out("rebuild");
    fresh_dir(&cache)?;
    let log = ctx.scratch.join("run.log");
    let warmup = measure(&mut lade_build(ctx, w, &cache, &out), &log)?;
    let mut rows: Vec<(&'static str, Row)> =
        REBUILD_ROWS.iter().map(|&r| (r, Row::default())).collect();
    if warmup.exit != Some(0) {
        for (_, row) in &mut rows {
            row.add(warmup, &log);
        }
        return Ok(rows);
    }
    let file = ctx.root.join(w.dir).join("pkg0/lib/sub0/f0.js");
    let original = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let result = (|| -> Result<()> {
        for round in 0..runs {
            signal::check()?;
            eprintln!("bench: {} rebuilds run {}/{}", w.name, round + 1, runs);
            rows[0]
                .1
                .add(measure(&mut lade_build(ctx, w, &cache, &out), &log)?, &log);
            run_ok(Command::new("touch").arg(&file))?;
            rows[1]
                .1
                .add(measure(&mut lade_build(ctx, w, &cache, &out), &log)?, &log);
            let mut changed = original.clone();
            changed.extend_from_slice(format!("// bench change {round}\n").as_bytes());
            std::fs::write(&file, changed)?;
            rows[2]
                .1
                .add(measure(&mut lade_build(ctx, w, &cache, &out), &log)?, &log);
            std::fs::write(&file, &original)?;
        }
        Ok(())
    })();
    std::fs::write(&file, &original)?;
    result?;
    Ok(rows)
}

/// Builds whose time must grow linearly with the size of their input (#11): a Dockerfile of
/// 100,000 `ENV` lines (was quadratic: 75 s), and a 2-file context with 100,000
/// `.dockerignore` patterns (was a regex each: 10 s, 1.5 GB). `--only in` runs them alone.
fn inputs(ctx: &Ctx, runs: usize) -> Result<Vec<(&'static str, Row)>> {
    let env = ctx.scratch.join("in-env");
    fresh_dir(&env)?;
    let mut dockerfile = String::from("FROM scratch\n");
    for i in 0..100_000 {
        dockerfile.push_str(&format!("ENV V{i}=value{i}\n"));
    }
    std::fs::write(env.join("Dockerfile"), dockerfile)?;
    let ignores = ctx.scratch.join("in-ignore");
    fresh_dir(&ignores)?;
    std::fs::write(ignores.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n")?;
    std::fs::write(ignores.join("a.txt"), "a\n")?;
    let mut patterns = String::new();
    for i in 0..100_000 {
        patterns.push_str(&format!("dir{i}/*.tmp\n"));
    }
    std::fs::write(ignores.join(".dockerignore"), patterns)?;
    let cache = ctx.cache("inputs");
    let out = ctx.out("inputs");
    let log = ctx.scratch.join("run.log");
    let mut rows = vec![
        ("lade (100k ENV)", Row::default()),
        ("lade (100k ignores)", Row::default()),
    ];
    for round in 0..runs {
        for ((name, row), dir) in rows.iter_mut().zip([&env, &ignores]) {
            signal::check()?;
            eprintln!("bench: {name} run {}/{runs}", round + 1);
            fresh_dir(&cache)?;
            let mut cmd = Command::new(&ctx.lade);
            cmd.args(["build", "--progress", "quiet", "--cache-dir"])
                .arg(&cache)
                .arg("--output")
                .arg(format!("type=oci,dest={}", out.display()))
                .arg(dir);
            row.add(measure(&mut cmd, &log)?, &log);
            remove_file(&out)?;
        }
    }
    Ok(rows)
}

fn make_workloads(root: &Path) -> Result<()> {
    let script = repo_root().join("../shared/bench/make-workloads.sh");
    if !script.exists() {
        bail!(
            "{} not found: the bench needs the shared workloads script beside the repository",
            script.display()
        );
    }
    eprintln!("bench: making workloads in {}", root.display());
    let status = Command::new("bash")
        .arg(&script)
        .arg(root)
        .status()
        .context("running make-workloads.sh")?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

fn build_lade() -> Result<PathBuf> {
    eprintln!("bench: cargo build --release --bin lade");
    let status = cargo()
        .current_dir(repo_root())
        .args(["build", "--release", "--package", "lade", "--bin", "lade"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building lade failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("release/lade");
    which(bin.to_str().unwrap_or_default()).with_context(|| format!("{} missing", bin.display()))
}

/// Per-RUN overhead: (the ten-RUN build − the 0-RUN build) / 10, best times, per tool and base.
fn per_run_overhead(table: &[Line]) -> Vec<String> {
    let best = |w: &str, tool: &str| {
        table
            .iter()
            .find(|l| l.workload == w && l.tool == tool)
            .and_then(|l| l.row.best.filter(|_| l.row.failure.is_none()))
            .map(|s| s.wall.as_secs_f64())
    };
    let mut out = Vec::new();
    for (runs, zero) in [("R1", "R0"), ("D1", "D0")] {
        let parts: Vec<String> = [LADE_DOCKERFILE, LADE_ROOTLESS, BUILDAH, BUILDKIT]
            .iter()
            .filter_map(|tool| {
                let ms =
                    (best(runs, tool)? - best(zero, tool)?) * 1000.0 / runs::TRIVIAL_RUNS as f64;
                let target = if *tool == LADE_DOCKERFILE {
                    let ok = if ms <= 30.0 { "ok" } else { "MISSED" };
                    format!(" (target <= 30 ms: {ok})")
                } else {
                    String::new()
                };
                Some(format!("{tool} {ms:.1} ms{target}"))
            })
            .collect();
        if !parts.is_empty() {
            out.push(format!(
                "per-RUN overhead ({runs} - {zero}) / {}: {}",
                runs::TRIVIAL_RUNS,
                parts.join(", ")
            ));
        }
    }
    out
}

fn print_table(table: &[Line]) {
    println!(
        "{:<4} {:<27} {:>9} {:>9} {:>9} {:>10}  ratios (of best times)",
        "", "tool", "best s", "median s", "cpu s", "peak MiB"
    );
    let mut footnote = false;
    for line in table {
        let w = line.workload;
        let tool = line.tool;
        let row = &line.row;
        let best = |name: &str| {
            table
                .iter()
                .find(|l| l.workload == w && l.tool == name)
                .and_then(|l| l.row.best.filter(|_| l.row.failure.is_none()))
                .map(|s| s.wall.as_secs_f64())
        };
        let Some(s) = row.best.filter(|_| row.failure.is_none()) else {
            let why = (row.skipped.as_deref())
                .or(row.failure.as_deref())
                .unwrap_or("no run");
            println!("{w:<4} {tool:<27} {why}");
            continue;
        };
        let secs = s.wall.as_secs_f64();
        let target = |reference: &str| {
            TARGETS
                .iter()
                .find(|(tw, tt, tr, _)| *tw == w && *tt == tool && *tr == reference)
                .map(|t| t.3)
        };
        let verdict = |value: f64, max: f64, unit: &str| {
            let ok = if value <= max { "ok" } else { "MISSED" };
            format!(" (target <= {max}{unit}: {ok})")
        };
        let mut notes: Vec<String> = line
            .refs
            .iter()
            .filter_map(|r| {
                let f = best(r).filter(|f| *f > 0.0)?;
                let ratio = secs / f;
                let t = target(r).map(|max| verdict(ratio, max, "x"));
                Some(format!("{ratio:.2}x {r}{}", t.unwrap_or_default()))
            })
            .collect();
        if let Some(max) = target("") {
            notes.push(verdict(secs, max, " s").trim_start().to_string());
        }
        if let Some(max) = target(PEAK_MIB) {
            let mib = s.max_rss_kib as f64 / 1024.0;
            notes.push(format!("peak{}", verdict(mib, max, " MiB")));
        }
        let mark = if line.in_dockerd { "*" } else { " " };
        footnote |= line.in_dockerd;
        println!(
            "{w:<4} {tool:<27} {secs:>9.3} {:>9.3} {:>9.2} {:>9.1}{mark}  {}",
            row.median().unwrap_or(s.wall).as_secs_f64(),
            s.cpu.as_secs_f64(),
            s.max_rss_kib as f64 / 1024.0,
            notes.join(", ")
        );
    }
    if footnote {
        println!("* CPU time of the docker CLI and dockerd; peak RSS of the larger of the two");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_excerpt_prefers_the_error_line() {
        let dir = std::env::temp_dir().join(format!("lade-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("run.log");
        std::fs::write(
            &log,
            "error: unrecognized subcommand 'push'\n\nUsage: lade <COMMAND>\n\nFor more information, try '--help'.\n",
        )
        .unwrap();
        assert_eq!(
            failure_excerpt(&log),
            "error: unrecognized subcommand 'push'"
        );
        std::fs::write(&log, "one\ntwo\n\nthree\nfour\n").unwrap();
        assert_eq!(failure_excerpt(&log), "two | three | four");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_target_names_rows_that_exist() {
        let tools = tools();
        let runs_on = |row: &str, w: &str| {
            tools
                .iter()
                .any(|t| t.name == row && t.workloads.is_none_or(|ws| ws.contains(&w)))
                || (w == "W2" && REBUILD_ROWS.contains(&row))
        };
        for (w, row, reference, _) in TARGETS {
            assert!(WORKLOADS.iter().any(|x| x.name == *w), "{w}");
            assert!(runs_on(row, w), "{row} does not run on {w}");
            assert!(
                reference.is_empty() || *reference == PEAK_MIB || runs_on(reference, w),
                "{reference} does not run on {w}"
            );
        }
    }

    #[test]
    fn issue_3_targets_are_flagged() {
        let has = |w: &str, row: &str, reference: &str, max: f64| {
            TARGETS.contains(&(w, row, reference, max))
        };
        assert!(has("W2", "lade (cold)", GZIP, 1.0));
        assert!(has("W3", "lade (cold)", PIGZ, 1.2));
        assert!(has("W2", WARM_NOOP, "", 0.3));
        assert!(has("W3", "lade (cold)", PEAK_MIB, 95.3));
        // A ratio target on the cold row must name a reference the row is compared to.
        let cold = tools()
            .into_iter()
            .find(|t| t.name == "lade (cold)")
            .unwrap();
        assert!(cold.refs.contains(&GZIP) && cold.refs.contains(&PIGZ));
    }
}
