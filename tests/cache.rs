//! The step cache across builds: why a step rebuilt (`--progress plain` and
//! `--metadata-file`). RUN steps need root and crun or runc, as in tests/run.rs.

mod common;

use common::{lade, ok, output};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox base as the OCI layout `tmp/NAME`, with `/marker` holding `marker` (so two
/// markers are two different bases); returns its `FROM` reference.
fn base(tmp: &Path, name: &str, marker: &str) -> String {
    let root = tmp.join(format!("{name}-rootfs"));
    common::busybox_rootfs(&root);
    fs::write(root.join("marker"), marker).unwrap();
    let tar = tmp.join(format!("{name}.tar"));
    ok(output(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    ));
    common::layout_from_rootfs_tar(&tar, "", &tmp.join(name), "1", &tmp.join("base-cache"))
}

/// A context with `Dockerfile` (left out of `COPY .` by `.dockerignore`) and `src/main.rs`.
fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs::write(dir.join(".dockerignore"), "Dockerfile\n").unwrap();
    fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    dir.to_path_buf()
}

/// `lade build --progress plain` into an OCI layout; returns the step log and the metadata
/// file's `lade.steps`.
#[track_caller]
fn build(cache: &Path, ctx: &Path, out: &Path, extra: &[&str]) -> (String, Vec<Value>) {
    let meta = out.with_extension("meta.json");
    let o = lade(cache)
        .args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci-layout,dest={}", out.display()))
        .arg("--metadata-file")
        .arg(&meta)
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "lade build failed:\n{log}");
    let doc: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    (log, doc["lade.steps"].as_array().unwrap().clone())
}

/// The `not cached` lines of a step log, `STEP: REASON` each, sorted.
fn misses(log: &str) -> Vec<String> {
    let mut v: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("layer "))
        .filter_map(|l| l.split_once(": not cached: "))
        .map(|(step, why)| format!("{step}: {why}"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_rebuilt_step_names_the_input_that_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base1 = base(t, "base1", "one");
    let base2 = base(t, "base2", "two");
    let dockerfile =
        |base: &str| format!("FROM {base}\nARG VERSION=1\nCOPY . /app\nRUN echo $VERSION > /v\n");
    let ctx = context(&t.join("ctx"), &dockerfile(&base1));
    let cache = t.join("cache");
    let out = t.join("out");

    let (log, steps) = build(&cache, &ctx, &out, &[]);
    assert_eq!(
        misses(&log),
        [
            "COPY . /app: no earlier build of this step",
            "RUN echo $VERSION > /v: no earlier build of this step",
        ],
        "{log}"
    );
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps.iter().all(|s| s["cached"] == false), "{steps:?}");
    assert_eq!(steps[0]["reason"], "no earlier build of this step");

    // Same inputs, and a touched but unchanged file: nothing runs.
    let (log, steps) = build(&cache, &ctx, &out, &[]);
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");
    assert!(steps.iter().all(|s| s["cached"] == true), "{steps:?}");
    assert!(steps.iter().all(|s| s.get("reason").is_none()), "{steps:?}");
    ok(output(
        Command::new("touch")
            .args(["-d", "2001-01-01"])
            .arg(ctx.join("src/main.rs")),
    ));
    let (log, _) = build(&cache, &ctx, &out, &[]);
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");

    // A file's content.
    fs::write(ctx.join("src/main.rs"), "fn main() { println!() }\n").unwrap();
    let (log, steps) = build(&cache, &ctx, &out, &[]);
    assert_eq!(
        misses(&log),
        [
            "COPY . /app: app/src/main.rs changed (content)",
            "RUN echo $VERSION > /v: COPY . /app: app/src/main.rs changed (content)",
        ],
        "{log}"
    );
    let copy = steps.iter().find(|s| s["step"] == "COPY . /app").unwrap();
    assert_eq!(copy["cached"], false);
    assert_eq!(copy["reason"], "app/src/main.rs changed (content)");

    // A build arg: only the RUN.
    let (log, steps) = build(&cache, &ctx, &out, &["--build-arg", "VERSION=2"]);
    assert_eq!(
        misses(&log),
        ["RUN echo $VERSION > /v: ARG VERSION changed"],
        "{log}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "COPY . /app" && s["cached"] == true),
        "{steps:?}"
    );

    // The base image: the COPY's content is the same (its key does not chain), the RUN runs
    // on another filesystem.
    fs::write(ctx.join("Dockerfile"), dockerfile(&base2)).unwrap();
    let (log, _) = build(&cache, &ctx, &out, &["--build-arg", "VERSION=2"]);
    let m = misses(&log);
    assert_eq!(m.len(), 1, "{log}");
    assert!(
        m[0].starts_with(&format!(
            "RUN echo $VERSION > /v: base image {base2} (top layer sha256:"
        )) && m[0].ends_with(") changed"),
        "{log}"
    );

    // A flag of the step itself.
    fs::write(
        ctx.join("Dockerfile"),
        dockerfile(&base2).replace("COPY .", "COPY --chmod=600 ."),
    )
    .unwrap();
    let (log, _) = build(&cache, &ctx, &out, &["--build-arg", "VERSION=2"]);
    assert_eq!(
        misses(&log),
        [
            "COPY --chmod=600 . /app: --chmod changed",
            "RUN echo $VERSION > /v: COPY --chmod=600 . /app: --chmod changed",
        ],
        "{log}"
    );
}
