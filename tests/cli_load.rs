//! `lade build --load`: the image goes into the local docker through `docker load` (which
//! follows `DOCKER_HOST`), or podman with `--load=podman`; checked with `docker run` on the
//! private dockerd of `cargo xtask test`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A busybox image that prints a greeting.
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    common::busybox_rootfs(&ctx.join("rootfs"));
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs /\nCMD [\"/bin/sh\", \"-c\", \"echo loaded by lade\"]\n",
    )
    .unwrap();
    ctx
}

/// `lade` with the docker CLI pointed at the private dockerd, as a user's environment would.
fn lade(tmp: &Path) -> assert_cmd::Command {
    let s = common::require_services();
    let mut c = common::lade(&tmp.join("cache"));
    c.env("DOCKER_HOST", &s.docker_host)
        .env_remove("DOCKER_CONTEXT");
    if let Some(cfg) = &s.docker_config {
        c.env("DOCKER_CONFIG", cfg);
    }
    // The docker CLI the harness names, first on PATH.
    let bin = s.docker.parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(&path));
    c.env("PATH", std::env::join_paths(dirs).unwrap());
    c
}

#[test]
fn load_puts_the_image_into_docker() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let iid = tmp.path().join("iid");
    let out = lade(tmp.path())
        .args([
            "build",
            "--progress",
            "plain",
            "--load",
            "-t",
            "lade-test/load:1",
        ])
        .arg("--iidfile")
        .arg(&iid)
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Loaded image: lade-test/load:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("no output given"), "{stderr}");
    let run = common::ok(common::docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "lade-test/load:1",
    ]));
    assert_eq!(run, "loaded by lade\n");
    // docker's image ID is the config digest, which --iidfile names with --load.
    let id = common::ok(common::docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "lade-test/load:1",
    ]));
    assert_eq!(id.trim(), fs::read_to_string(&iid).unwrap());
}

#[test]
fn load_podman_runs_podman_load() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    // A `podman` that hands its standard input to the test dockerd: what lade runs and feeds is
    // real, the engine behind it is docker (podman is not among the test services).
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let s = common::require_services();
    let fake = bin.join("podman");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\n[ \"$1\" = load ] || exit 64\nexec {} -H {} load\n",
            s.docker.display(),
            s.docker_host
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(
        [bin.clone()]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    lade(tmp.path())
        .env("PATH", &path)
        .args([
            "build",
            "--progress",
            "quiet",
            "--load=podman",
            "-t",
            "lade-test/podman:1",
        ])
        .arg(&ctx)
        .assert()
        .success();
    let run = common::ok(common::docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "lade-test/podman:1",
    ]));
    assert_eq!(run, "loaded by lade\n");
}

#[test]
fn a_failed_load_is_one_line_and_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    // No engine at all: the error names the command.
    let out = lade(tmp.path())
        .env("PATH", tmp.path())
        .args(["build", "--progress", "quiet", "--load=podman"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot run `podman load`"), "{err}");
    // Several platforms cannot be loaded as one docker image.
    let out = lade(tmp.path())
        .args(["build", "--progress", "quiet", "--load"])
        .args(["--platform", "linux/amd64,linux/arm64"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not 2 platforms"), "{err}");
}
