//! `cargo xtask bench`: lade against the physical floor of a layer (`tar | gzip -6` and
//! `tar | pigz`) on the standard workloads W1-W3 of `../shared/bench/make-workloads.sh`.
//!
//! Every tool runs N times per workload, the tools interleaved within each round so that a slow
//! phase of the shared machine hits all of them; the best wall time counts, and lade's is shown as
//! a ratio to the floor measured in the same run. Peak RSS and CPU time come from wait4(2).
//! Further reference tools (buildah, BuildKit, skopeo) are further entries in [`tools`].
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::{run_ok, which};
use crate::{cargo, deps, repo_root, signal};

struct Options {
    runs: usize,
    workloads: PathBuf,
    lade: Option<PathBuf>,
    only: Option<Vec<String>>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 3,
        workloads: PathBuf::from("/tmp/lade-bench"),
        lade: None,
        only: None,
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
            other => bail!("unknown option {other:?}"),
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(o)
}

/// One workload: a directory that becomes one layer.
struct Workload {
    name: &'static str,
    /// The layer's content, relative to the workloads directory.
    dir: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "W1",
        dir: "w1/target",
    },
    Workload {
        name: "W2",
        dir: "w2/node_modules",
    },
    Workload {
        name: "W3",
        dir: "w3",
    },
];

/// What every tool gets to prepare and run one build.
struct Ctx {
    root: PathBuf,
    lade: PathBuf,
    scratch: PathBuf,
}

impl Ctx {
    fn spec(&self, w: &Workload) -> PathBuf {
        self.root
            .join(format!("lade-{}.toml", w.name.to_lowercase()))
    }
    fn cache(&self, name: &str) -> PathBuf {
        self.scratch.join(format!("cache-{name}"))
    }
    fn out(&self) -> PathBuf {
        self.scratch.join("out.tar")
    }
}

/// A row of the table: how to get ready for one run (untimed) and the command to time.
struct Tool {
    name: &'static str,
    prepare: fn(&Ctx, &Workload) -> Result<()>,
    command: fn(&Ctx, &Workload) -> Command,
}

fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "tar|gzip -6",
            prepare: |_, _| Ok(()),
            command: |c, w| floor(c, w, "gzip -6"),
        },
        Tool {
            name: "tar|pigz",
            prepare: |_, _| Ok(()),
            command: |c, w| floor(c, w, "pigz"),
        },
        Tool {
            name: "lade (cold)",
            prepare: |c, w| fresh_dir(&c.cache(w.name)),
            command: |c, w| lade_build(c, w, &c.cache(w.name)),
        },
    ]
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

fn lade_build(c: &Ctx, w: &Workload, cache: &Path) -> Command {
    let mut cmd = Command::new(&c.lade);
    cmd.arg("build")
        .arg("--spec")
        .arg(c.spec(w))
        .arg("--output")
        .arg(format!("type=oci,dest={}", c.out().display()))
        .arg("--cache-dir")
        .arg(cache)
        .arg("--progress")
        .arg("quiet")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn fresh_dir(p: &Path) -> Result<()> {
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

/// The best of a row's runs, or its first failure.
#[derive(Default)]
struct Row {
    best: Option<Sample>,
    failure: Option<String>,
}

impl Row {
    fn add(&mut self, s: Sample, log: &Path) {
        if s.exit != Some(0) {
            if self.failure.is_none() {
                let why = match s.exit {
                    Some(c) => format!("exit {c}"),
                    None => "killed by a signal".into(),
                };
                let first = crate::proc::log_tail(log, 3).replace('\n', " | ");
                self.failure = Some(format!("failed ({why}): {first}"));
            }
            return;
        }
        if self.best.is_none_or(|b| s.wall < b.wall) {
            self.best = Some(s);
        }
    }
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
    fresh_dir(&scratch)?;
    let ctx = Ctx {
        root: root.clone(),
        lade,
        scratch,
    };
    let workloads: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| {
            opts.only
                .as_ref()
                .is_none_or(|o| o.iter().any(|n| n == w.name))
        })
        .collect();
    for w in &workloads {
        std::fs::write(
            ctx.spec(w),
            format!(
                "[image]\nfrom = \"scratch\"\n[[layer]]\nname = \"w\"\nfrom = \"{}\"\ninto = \"/data\"\n",
                w.dir
            ),
        )?;
    }

    let mut table: Vec<(String, String, Row)> = Vec::new();
    let tools = tools();
    for w in &workloads {
        let mut rows: Vec<Row> = tools.iter().map(|_| Row::default()).collect();
        for round in 0..opts.runs {
            for (tool, row) in tools.iter().zip(rows.iter_mut()) {
                signal::check()?;
                eprintln!(
                    "bench: {} {} run {}/{}",
                    w.name,
                    tool.name,
                    round + 1,
                    opts.runs
                );
                (tool.prepare)(&ctx, w)?;
                let log = ctx.scratch.join("run.log");
                row.add(measure(&mut (tool.command)(&ctx, w), &log)?, &log);
            }
        }
        for (tool, row) in tools.iter().zip(rows) {
            table.push((w.name.to_string(), tool.name.to_string(), row));
        }
        if w.name == "W2" {
            for (name, row) in rebuilds(&ctx, w, opts.runs)? {
                table.push((w.name.to_string(), name.to_string(), row));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&ctx.scratch);
    print_table(&table);
    Ok(ExitCode::SUCCESS)
}

/// Incremental lade builds of W2 on a warm cache: nothing changed, one file's mtime changed, one
/// file's content changed. The changed file is restored afterwards.
fn rebuilds(ctx: &Ctx, w: &Workload, runs: usize) -> Result<Vec<(&'static str, Row)>> {
    let cache = ctx.cache("warm");
    fresh_dir(&cache)?;
    let log = ctx.scratch.join("run.log");
    let warmup = measure(&mut lade_build(ctx, w, &cache), &log)?;
    let mut rows = vec![
        ("lade (warm no-op)", Row::default()),
        ("lade (touch 1 file)", Row::default()),
        ("lade (change 1 file)", Row::default()),
    ];
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
                .add(measure(&mut lade_build(ctx, w, &cache), &log)?, &log);
            run_ok(Command::new("touch").arg(&file))?;
            rows[1]
                .1
                .add(measure(&mut lade_build(ctx, w, &cache), &log)?, &log);
            let mut changed = original.clone();
            changed.extend_from_slice(format!("// bench change {round}\n").as_bytes());
            std::fs::write(&file, changed)?;
            rows[2]
                .1
                .add(measure(&mut lade_build(ctx, w, &cache), &log)?, &log);
            std::fs::write(&file, &original)?;
        }
        Ok(())
    })();
    std::fs::write(&file, &original)?;
    result?;
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

fn print_table(table: &[(String, String, Row)]) {
    println!(
        "{:<4} {:<22} {:>9} {:>8} {:>8} {:>9} {:>10}",
        "", "tool", "best s", "/gzip", "/pigz", "cpu s", "peak MiB"
    );
    for (w, tool, row) in table {
        let floor = |name: &str| {
            table
                .iter()
                .find(|(w2, t, _)| w2 == w && t == name)
                .and_then(|(_, _, r)| r.best)
                .map(|s| s.wall.as_secs_f64())
        };
        let Some(s) = row.best.filter(|_| row.failure.is_none()) else {
            let why = row.failure.as_deref().unwrap_or("no run");
            println!("{w:<4} {tool:<22} {why}");
            continue;
        };
        let secs = s.wall.as_secs_f64();
        let ratio = |f: Option<f64>| match f {
            Some(f) if f > 0.0 => format!("{:.2}x", secs / f),
            _ => "-".into(),
        };
        println!(
            "{w:<4} {tool:<22} {secs:>9.3} {:>8} {:>8} {:>9.2} {:>10.1}",
            ratio(floor("tar|gzip -6")),
            ratio(floor("tar|pigz")),
            s.cpu.as_secs_f64(),
            s.max_rss_kib as f64 / 1024.0
        );
    }
}
