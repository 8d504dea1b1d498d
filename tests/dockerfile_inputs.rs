//! Where `lade build` finds its Dockerfile and ignore file, and what `--platform` does:
//! `-f -` (stdin), `-f path` with BuildKit's `<Dockerfile>.dockerignore`, and a target
//! platform that reaches the config and the `TARGET*` build args.

mod common;

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Builds to an OCI layout; returns (config, sorted file list of the top layer).
fn build(ctx: &Path, out: &Path, extra: &[&str], stdin: Option<&str>) -> (Value, Vec<String>) {
    let mut cmd = common::lade(&out.with_extension("cache"));
    cmd.args(["build", "--progress", "quiet", "--output"])
        .arg(format!("type=oci-layout,dest={}", out.display()))
        .args(extra)
        .arg(ctx);
    if let Some(text) = stdin {
        cmd.write_stdin(text);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "lade build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let blob = |d: &str| {
        out.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config: Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let top = blob(layers.last().unwrap()["digest"].as_str().unwrap());
    let list = Command::new("tar").arg("-tzf").arg(top).output().unwrap();
    assert!(list.status.success());
    let mut files: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    (config, files)
}

fn context(dir: &Path) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(ctx.join("docker")).unwrap();
    fs::write(ctx.join("a.txt"), "a").unwrap();
    fs::write(ctx.join("secret.env"), "TOKEN=1").unwrap();
    // The context's own ignore file drops a.txt; the Dockerfile's own one drops secrets.
    fs::write(ctx.join(".dockerignore"), "a.txt\n").unwrap();
    fs::write(
        ctx.join("docker/app.Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nARG TARGETPLATFORM\nCOPY . /ctx/\nLABEL arch=$TARGETARCH platform=$TARGETPLATFORM\n",
    )
    .unwrap();
    fs::write(
        ctx.join("docker/app.Dockerfile.dockerignore"),
        "*.env\ndocker\n",
    )
    .unwrap();
    ctx
}

#[test]
fn dockerfile_from_a_path_uses_its_own_ignore_file_and_the_target_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let df = ctx.join("docker/app.Dockerfile");
    let (config, files) = build(
        &ctx,
        &tmp.path().join("out"),
        &["-f", df.to_str().unwrap(), "--platform", "linux/arm64/v8"],
        None,
    );
    // `<Dockerfile>.dockerignore` replaces `.dockerignore`: a.txt is in, secrets are out.
    assert_eq!(
        files,
        ["ctx/", "ctx/.dockerignore", "ctx/a.txt"],
        "{files:?}"
    );
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["variant"], "v8");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Labels"]["arch"], "arm64");
    assert_eq!(config["config"]["Labels"]["platform"], "linux/arm64/v8");
}

#[test]
fn dockerfile_from_stdin_uses_the_contexts_ignore_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let text = fs::read_to_string(ctx.join("docker/app.Dockerfile")).unwrap();
    let (config, files) = build(
        &ctx,
        &tmp.path().join("out"),
        &["-f", "-", "--platform", "linux/amd64"],
        Some(&text),
    );
    // Only `.dockerignore` applies: a.txt is out, the secret and docker/ are in.
    assert_eq!(
        files,
        [
            "ctx/",
            "ctx/.dockerignore",
            "ctx/docker/",
            "ctx/docker/app.Dockerfile",
            "ctx/docker/app.Dockerfile.dockerignore",
            "ctx/secret.env"
        ],
        "{files:?}"
    );
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Labels"]["arch"], "amd64");
}

#[test]
fn a_bad_platform_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let out = tmp.path().join("out");
    let o = common::lade(&tmp.path().join("cache"))
        .args(["build", "--platform", "linux/", "--output"])
        .arg(format!("type=oci-layout,dest={}", out.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("linux/"));
    assert!(!out.exists());
}
