//! RUN through the CLI: `lade build` of Dockerfiles with RUN steps on a busybox base made here
//! (`FROM scratch` + `ADD rootfs.tar /`, written as an OCI layout by lade), checked in the
//! layers lade writes, in the step log of `--progress plain` and, where it matters, with
//! `docker run` of the image in the test dockerd. BuildKit's behaviour is the reference. Needs
//! root, runc or crun and busybox-static; `cargo xtask test` provides them and dockerd.

mod common;

use common::{docker, lade, ok, output, tar_member};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Busybox applets the tests' commands use, as symlinks in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "id", "ls", "cat", "chmod", "chown", "rm", "mkdir", "echo", "touch", "sleep", "ip",
    "stat", "pwd", "test", "false", "true", "wc", "env", "sort", "hostname",
];

/// Builds the busybox base as an OCI layout under `tmp` and returns its `FROM` reference.
/// Besides busybox: passwd/group with a user `app` (uid 1000, in groups wheel and staff) and
/// files for RUNs to change (`/d/a`, `/d/b`, `/f`, `/old`, `/keep/k`, `/same`).
fn busybox_base(tmp: &Path) -> String {
    let root = tmp.join("base-rootfs");
    common::busybox_rootfs(&root);
    for a in APPLETS.iter().filter(|a| **a != "sh") {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    for d in ["etc", "d", "keep", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ),
        (
            "etc/group",
            "root:x:0:\nwheel:x:10:app\nstaff:x:50:app\napp:x:1000:\n",
        ),
        ("d/a", "a\n"),
        ("d/b", "b\n"),
        ("f", "f\n"),
        ("old", "old\n"),
        ("keep/k", "k\n"),
        ("same", "same\n"),
    ];
    for (path, text) in files {
        fs::write(root.join(path), text).unwrap();
    }
    common::layout_from_rootfs_dir(&root, tmp, &["--mode=go-w"])
}

/// A build context `dir` with a Dockerfile (`{BASE}` replaced by `base`) and files.
fn context(dir: &Path, base: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile.replace("{BASE}", base)).unwrap();
    for (path, text) in files {
        fs::write(dir.join(path), text).unwrap();
    }
    dir.to_path_buf()
}

/// `lade build --progress plain` of `ctx` into the OCI archive `archive` with its store in
/// `cache`; returns the process output (the step log is on stderr).
fn build(cache: &Path, ctx: &Path, archive: &Path, extra: &[&str]) -> std::process::Output {
    lade(cache)
        .args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

/// [`build`] that must succeed; returns the step log.
#[track_caller]
fn build_ok(cache: &Path, ctx: &Path, archive: &Path, extra: &[&str]) -> String {
    let o = build(cache, ctx, archive, extra);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "lade build failed:\n{log}");
    log
}

/// The manifest digest, the image config and the layer digests of an OCI archive.
fn image(archive: &Path) -> (String, Value, Vec<String>) {
    let index: Value = serde_json::from_slice(&tar_member(archive, "index.json")).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| -> Value {
        let hex = d.trim_start_matches("sha256:");
        serde_json::from_slice(&tar_member(archive, &format!("blobs/sha256/{hex}"))).unwrap()
    };
    let manifest = blob(&digest);
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (digest, config, layers)
}

/// The member names of a layer, sorted, without trailing `/`.
fn names(archive: &Path, layer: &str) -> Vec<String> {
    let mut v: Vec<String> = common::layer_listing(archive, layer, &[])
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v
}

/// The content of `member` in the layer `layer`.
fn layer_file(archive: &Path, layer: &str, member: &str) -> String {
    let hex = layer.trim_start_matches("sha256:");
    let blob = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        blob.path(),
        tar_member(archive, &format!("blobs/sha256/{hex}")),
    )
    .unwrap();
    ok(output(
        Command::new("tar").arg("-xOf").arg(blob.path()).arg(member),
    ))
}

/// The lines of the step log that a RUN's process printed (`RUN …: line`).
fn run_output(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("RUN ")).collect()
}

/// The step-log lines about the layer of the step starting with `step` (`layer <step>…: …`).
fn step_lines<'a>(log: &'a str, step: &str) -> Vec<&'a str> {
    let prefix = format!("layer {step}");
    log.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[track_caller]
fn assert_cached(log: &str, step: &str) {
    let lines = step_lines(log, step);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(": cached ")),
        "{step} not cached:\n{log}"
    );
}

#[track_caller]
fn assert_ran(log: &str, step: &str) {
    let lines = step_lines(log, step);
    assert!(
        lines.iter().any(|l| l.ends_with(": writing"))
            && !lines.iter().any(|l| l.contains(": cached ")),
        "{step} did not run:\n{log}"
    );
}

const CHANGES: &str = "FROM {BASE}
RUN set -e; echo new > /new; echo more >> /f; rm /old; rm -rf /d && mkdir /d && echo c > /d/c; \\
    chmod 600 /same; chown 1000:50 /keep/k; mkdir -p /w/x; cat /same /etc/hosts /etc/resolv.conf > /dev/null
";

#[test]
fn run_changes_show_in_docker_run_and_the_layer_holds_exactly_them() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = context(&tmp.path().join("ctx"), &base, CHANGES, &[]);
    let archive = tmp.path().join("img.tar");
    build_ok(&tmp.path().join("cache"), &ctx, &archive, &[]);
    let (_, _, layers) = image(&archive);
    assert_eq!(layers.len(), 2, "base layer + the RUN's");
    // No /etc/hosts, resolv.conf, hostname; no /proc, /sys, /dev (the base has none); /keep
    // because its child changed; /same with its new mode only.
    assert_eq!(
        names(&archive, &layers[1]),
        [
            ".wh.old",
            "d",
            "d/.wh..wh..opq",
            "d/c",
            "f",
            "keep",
            "keep/k",
            "new",
            "same",
            "w",
            "w/x",
        ]
    );

    // The same build (cached) as a docker archive, which any dockerd loads.
    let docker_archive = tmp.path().join("img-docker.tar");
    let log = lade(&tmp.path().join("cache"))
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "lade-run-changes:1",
            "--output",
        ])
        .arg(format!("type=docker,dest={}", docker_archive.display()))
        .arg(&ctx)
        .assert()
        .success()
        .get_output()
        .stderr
        .clone();
    assert!(run_output(&String::from_utf8_lossy(&log)).is_empty());
    ok(docker(&["load", "-i", docker_archive.to_str().unwrap()]));
    let shown = ok(docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "lade-run-changes:1",
        "sh",
        "-c",
        "cat /new /f; test -e /old || echo old-gone; ls -A /d; \
         stat -c '%n %a %u:%g' /same /keep/k /d/c; ls -A /w",
    ]));
    let _ = docker(&["rmi", "lade-run-changes:1"]);
    assert_eq!(
        shown,
        "new\nf\nmore\nold-gone\nc\n/same 600 0:0\n/keep/k 644 1000:50\n/d/c 644 0:0\nx\n"
    );
}

const SCOPES: &str = r#"FROM {BASE}
ARG A=arg1
ENV E=env1
RUN mkdir -m 1777 /out && touch /out/log && chmod 666 /out/log && echo "A=$A E=$E" >> /out/log
ARG A=arg2
ENV E=env2
RUN echo "A=$A E=$E" >> /out/log
USER app
WORKDIR /home/app/work
RUN echo "name: $(id) HOME=$HOME PWD=$(pwd)" >> /out/log
USER 1000:50
RUN echo "uidgid: $(id) HOME=$HOME" >> /out/log
USER root
SHELL ["/bin/sh", "-ec"]
RUN echo "flags: $-" >> /out/log
RUN ["/bin/sh", "-c", "echo exec: $E $0 >> /out/log"]
WORKDIR /srv/made
RUN stat -c "workdirs: %n %a %u:%g" /home/app/work /srv/made >> /out/log
RUN env | sort >> /out/log; hostname >> /out/log
"#;

/// Heredocs after [`SCOPES`] (the test dockerd's BuildKit predates them).
const HEREDOCS: &str = r#"RUN <<EOF
echo plain heredoc >> /out/log
EOF
RUN <<EOF
#!/bin/sh
echo "shebang: $0" >> /out/log
EOF
RUN <<EOF sh
echo "via sh: $E" >> /out/log
EOF
RUN <<ONE cat >> /out/log && cat <<TWO >> /out/log
first heredoc
ONE
second heredoc
TWO
"#;

#[test]
fn user_workdir_env_arg_shell_exec_form_and_heredocs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let dockerfile = format!("{SCOPES}{HEREDOCS}");
    let ctx = context(&tmp.path().join("ctx"), &base, &dockerfile, &[]);
    let archive = tmp.path().join("img.tar");
    build_ok(&tmp.path().join("cache"), &ctx, &archive, &[]);
    let (_, config, layers) = image(&archive);
    let log = layer_file(&archive, layers.last().unwrap(), "out/log");
    assert_eq!(
        log,
        "A=arg1 E=env1\n\
         A=arg2 E=env2\n\
         name: uid=1000(app) gid=1000(app) groups=10(wheel),50(staff) HOME=/home/app PWD=/home/app/work\n\
         uidgid: uid=1000(app) gid=50(staff) HOME=/home/app\n\
         flags: ce\n\
         exec: env2 /bin/sh\n\
         workdirs: /home/app/work 755 1000:1000\n\
         workdirs: /srv/made 755 0:0\n\
         A=arg2\n\
         E=env2\n\
         HOME=/root\n\
         PATH=/bin\n\
         PWD=/srv/made\n\
         SHLVL=1\n\
         buildkitsandbox\n\
         plain heredoc\n\
         shebang: /dev/pipes/EOF\n\
         via sh: env2\n\
         first heredoc\n\
         second heredoc\n"
    );
    // ARG values reach RUN but not the config; the later ENV wins.
    let c = &config["config"];
    assert_eq!(c["Env"], serde_json::json!(["PATH=/bin", "E=env2"]));
    assert_eq!(c["User"], "root");
    assert_eq!(c["WorkingDir"], "/srv/made");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
}

#[test]
fn network_none_has_only_loopback_and_no_route() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let probe = "ip -o link | wc -l; ip route | wc -l; cat /proc/net/route | wc -l";
    let ctx = context(
        &tmp.path().join("ctx"),
        &base,
        &format!("FROM {{BASE}}\nRUN --network=none echo flag; {probe}\nRUN echo cli; {probe}\n"),
        &[],
    );
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("img.tar");
    let log = build_ok(&cache, &ctx, &archive, &["--network", "none"]);
    let lines: Vec<&str> = run_output(&log)
        .iter()
        .map(|l| l.rsplit(": ").next().unwrap().trim())
        .collect();
    // One link (lo), no route, only /proc/net/route's header line; for both ways of asking.
    assert_eq!(
        lines,
        ["flag", "1", "0", "1", "cli", "1", "0", "1"],
        "{log}"
    );
}

#[test]
fn a_failing_run_names_its_line_command_code_and_output_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = context(
        &tmp.path().join("ctx"),
        &base,
        "FROM {BASE}\nENV X=1\nRUN echo first line; echo second line; exit 3\nRUN echo never\n",
        &[],
    );
    let archive = tmp.path().join("img.tar");
    let o = build(&tmp.path().join("cache"), &ctx, &archive, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let error_line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        error_line.contains("Dockerfile:3")
            && error_line.contains("echo first line; echo second line; exit 3")
            && error_line.contains("code 3"),
        "{err}"
    );
    assert!(err.contains("  first line\n  second line\n"), "{err}");
    assert!(!err.contains("never"), "{err}");
    assert!(!archive.exists(), "an output was written");
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("img"))
        .collect();
    assert!(left.is_empty(), "temporary output left: {left:?}");
}

#[test]
fn same_run_gives_the_same_layer_from_two_stores_and_both_snapshotters() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = context(
        &tmp.path().join("ctx"),
        &base,
        "FROM {BASE}\nRUN echo hi > /x && chmod 600 /x\n",
        &[],
    );
    let built = |name: &str, snapshotter: &str| {
        let archive = tmp.path().join(format!("{name}.tar"));
        let o = lade(&tmp.path().join(format!("cache-{name}")))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "quiet", "--snapshotter", snapshotter])
            .arg("--output")
            .arg(format!("type=oci,dest={}", archive.display()))
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        image(&archive)
    };
    let (m1, _, l1) = built("one", "overlay");
    let (m2, _, l2) = built("two", "overlay");
    let (m3, _, l3) = built("copy", "copy");
    assert_eq!(l1.len(), 2);
    assert_eq!(l1[1], l2[1], "RUN layer differs between two stores");
    assert_eq!(m1, m2);
    assert_eq!(l1, l3, "the copy snapshotter made other layers");
    assert_eq!(m1, m3);
    let listing = common::layer_listing(
        &tmp.path().join("one.tar"),
        &l1[1],
        &["-v", "--numeric-owner", "--full-time"],
    );
    assert!(listing.starts_with("-rw------- 0/0"), "{listing}");
    // mtime clamped to SOURCE_DATE_EPOCH (2023-11-14 22:13:20 UTC).
    assert!(listing.contains("2023-11-14 22:13:20 x"), "{listing}");
}

const CACHED: &str = "FROM {BASE}
RUN echo first-ran; echo 1 > /first
COPY a.txt /a.txt
RUN echo second-ran; cat /a.txt > /second
COPY b.txt /b.txt
";

#[test]
fn rebuilds_run_only_the_runs_above_a_changed_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = context(
        &tmp.path().join("ctx"),
        &base,
        CACHED,
        &[("a.txt", "a1\n"), ("b.txt", "b1\n")],
    );
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("img.tar");
    let log = build_ok(&cache, &ctx, &archive, &[]);
    assert_eq!(
        run_output(&log),
        [
            "RUN echo first-ran; echo 1 > /first: first-ran",
            "RUN echo second-ran; cat /a.txt > /second: second-ran"
        ],
        "{log}"
    );
    assert_no_snapshot_left(&cache);

    // Nothing changed: nothing runs.
    let log = build_ok(&cache, &ctx, &archive, &[]);
    assert!(run_output(&log).is_empty(), "{log}");
    for step in [
        "RUN echo first-ran",
        "COPY a.txt",
        "RUN echo second-ran",
        "COPY b.txt",
    ] {
        assert_cached(&log, step);
    }

    // a.txt changed: the RUN above its COPY runs again, the one below does not.
    fs::write(ctx.join("a.txt"), "a2\n").unwrap();
    let log = build_ok(&cache, &ctx, &archive, &[]);
    assert_eq!(
        run_output(&log),
        ["RUN echo second-ran; cat /a.txt > /second: second-ran"],
        "{log}"
    );
    assert_cached(&log, "RUN echo first-ran");
    assert_ran(&log, "RUN echo second-ran");
    let (_, _, layers) = image(&archive);
    assert_eq!(layer_file(&archive, &layers[3], "second"), "a2\n");

    // b.txt changed: its COPY is above every RUN, none runs.
    fs::write(ctx.join("b.txt"), "b2\n").unwrap();
    let log = build_ok(&cache, &ctx, &archive, &[]);
    assert!(run_output(&log).is_empty(), "{log}");
    assert_cached(&log, "RUN echo first-ran");
    assert_cached(&log, "RUN echo second-ran");
    assert_ran(&log, "COPY b.txt");
}

const STAGES: &str = "FROM {BASE} AS builder
RUN echo builder-ran; echo built > /artifact
FROM {BASE} AS other
RUN echo other-ran; echo other > /other
FROM {BASE}
COPY --from=builder /artifact /artifact
COPY --from=other /other /other
";

#[test]
fn multi_stage_runs_both_builders_and_copies_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = context(&tmp.path().join("ctx"), &base, STAGES, &[]);
    let archive = tmp.path().join("img.tar");
    let log = build_ok(&tmp.path().join("cache"), &ctx, &archive, &[]);
    assert_no_snapshot_left(&tmp.path().join("cache"));
    let mut ran = run_output(&log);
    ran.sort();
    assert_eq!(
        ran,
        [
            "RUN echo builder-ran; echo built > /artifact: builder-ran",
            "RUN echo other-ran; echo other > /other: other-ran"
        ],
        "{log}"
    );
    let (_, _, layers) = image(&archive);
    assert_eq!(layers.len(), 3);
    assert_eq!(layer_file(&archive, &layers[1], "artifact"), "built\n");
    assert_eq!(layer_file(&archive, &layers[2], "other"), "other\n");
}

#[test]
fn a_run_without_a_runtime_names_the_package_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = context(
        &tmp.path().join("ctx"),
        &base,
        "FROM {BASE}\nRUN true\n",
        &[],
    );
    let archive = tmp.path().join("img.tar");
    let o = build(
        &tmp.path().join("cache"),
        &ctx,
        &archive,
        &["--runtime", "/nonexistent"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        line.contains("Dockerfile:2") && line.contains("/nonexistent") && line.contains("`crun`"),
        "{err}"
    );
    // None on PATH either.
    let o = lade(&tmp.path().join("cache"))
        .env("PATH", tmp.path())
        .args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Debian package `crun`"), "{err}");
    assert!(!archive.exists());
}

/// The pid of the process running `sleep` in a container of the runtime state under `cache`
/// (`common::container_init_pids` of `run/state`).
fn container_sleep(cache: &Path) -> Option<u32> {
    common::container_init_pids(&cache.join("run/state"))
        .into_iter()
        .find(|pid| is_sleep(*pid))
}

fn is_sleep(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
}

/// The RUNs' snapshots are all gone, unmounted and removed, once `lade build` has exited.
fn assert_no_snapshot_left(cache: &Path) {
    let left: Vec<_> = fs::read_dir(cache.join("run/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "snapshots left: {left:?}");
    assert_eq!(mounts_under(cache), Vec::<String>::new(), "mounts left");
}

fn mounts_under(dir: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(String::from)
        .collect()
}

#[test]
fn sigint_during_a_run_stops_the_container_and_leaves_nothing() {
    sigint_during_a_run("overlay");
}

#[test]
fn sigint_during_a_run_on_a_copied_root_leaves_nothing() {
    sigint_during_a_run("copy");
}

/// Interrupts `lade build --snapshotter <snapshotter>` while its RUN sleeps.
fn sigint_during_a_run(snapshotter: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = context(
        &tmp.path().join("ctx"),
        &base,
        "FROM {BASE}\nRUN sleep 30\n",
        &[],
    );
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("img.tar");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lade"))
        .env("LADE_CACHE_DIR", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["build", "--progress", "plain", "--snapshotter", snapshotter])
        .arg("--output")
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(&ctx)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sleep = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the RUN never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "lade ended before the RUN"
        );
        if let Some(pid) = container_sleep(&cache) {
            break pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        fs::read_dir(cache.join("run/snapshots")).unwrap().count(),
        1,
        "the RUN's snapshot"
    );
    if snapshotter == "overlay" {
        assert!(!mounts_under(&cache).is_empty(), "the RUN has no mount");
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(mounts_under(&cache), Vec::<String>::new(), "mounts left");
    assert!(
        !is_sleep(sleep),
        "the container's process {sleep} still runs"
    );
    for d in ["run/state", "run/snapshots", "run/bundles"] {
        let left: Vec<_> = fs::read_dir(cache.join(d))
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d}: {left:?}");
    }
    assert!(!archive.exists());
}

/// Loads the base that [`busybox_base`] made under `tmp` into dockerd as `tag`, for
/// `docker build`.
fn load_base_into_dockerd(tmp: &Path, tag: &str) {
    let archive = tmp.join("base-docker.tar");
    lade(&tmp.join("base-cache"))
        .args(["build", "--progress", "quiet", "-t", tag, "--output"])
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(tmp.join("base.ctx"))
        .assert()
        .success();
    ok(docker(&["load", "-i", archive.to_str().unwrap()]));
}

/// `docker save` of `tag`: per history entry, the names in its layer (`None`: no layer, or
/// an empty one).
fn saved(tmp: &Path, tag: &str) -> (Vec<Option<Vec<String>>>, Value) {
    let dir = tmp.join(tag.replace([':', '/'], "-"));
    fs::create_dir_all(&dir).unwrap();
    let tar = dir.with_extension("tar");
    ok(docker(&["save", "-o", tar.to_str().unwrap(), tag]));
    // Unpacked, so that a layer saved as a symlink to an equal one reads as a file.
    ok(output(
        Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&dir),
    ));
    let json =
        |p: &str| -> Value { serde_json::from_slice(&fs::read(dir.join(p)).unwrap()).unwrap() };
    let manifest = json("manifest.json");
    let config = json(manifest[0]["Config"].as_str().unwrap());
    let mut layers = manifest[0]["Layers"].as_array().unwrap().iter().map(|l| {
        let listing = ok(output(
            Command::new("tar")
                .arg("-tf")
                .arg(dir.join(l.as_str().unwrap())),
        ));
        let mut v: Vec<String> = listing
            .lines()
            .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    });
    let entries = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            if h["empty_layer"].as_bool().unwrap_or(false) {
                None
            } else {
                Some(layers.next().expect("a layer per history entry")).filter(|l| !l.is_empty())
            }
        })
        .collect();
    (entries, config)
}

#[test]
fn layers_and_history_match_buildkit() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    load_base_into_dockerd(tmp.path(), "lade-test/run-base:1");
    let dockerfile = format!(
        "{CHANGES}RUN true\nENV X=1\nRUN ls / > /dev/null\nRUN echo z > /z\nWORKDIR /srv\nRUN touch /srv/a\n"
    );
    let bk_ctx = context(
        &tmp.path().join("bk-ctx"),
        "lade-test/run-base:1",
        &dockerfile,
        &[],
    );
    // The test dockerd has no bridge network.
    ok(docker(&[
        "build",
        "--network",
        "none",
        "-t",
        "lade-test/run-buildkit:1",
        bk_ctx.to_str().unwrap(),
    ]));
    let ctx = context(&tmp.path().join("ctx"), &base, &dockerfile, &[]);
    let archive = tmp.path().join("lade-docker.tar");
    lade(&tmp.path().join("cache"))
        .args([
            "build",
            "--progress",
            "quiet",
            "-t",
            "lade-test/run-lade:1",
            "--output",
        ])
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(&ctx)
        .assert()
        .success();
    ok(docker(&["load", "-i", archive.to_str().unwrap()]));
    let (buildkit, _) = saved(tmp.path(), "lade-test/run-buildkit:1");
    let (ours, config) = saved(tmp.path(), "lade-test/run-lade:1");
    let _ = docker(&[
        "rmi",
        "lade-test/run-buildkit:1",
        "lade-test/run-lade:1",
        "lade-test/run-base:1",
    ]);
    // The layers with content, in order. Two known differences in the first RUN's: dockerd's
    // differ writes `rm -rf d && mkdir d` as a whiteout per old entry where lade's overlay diff
    // writes the equivalent opaque marker; and runc's mount points for /dev, /proc and /sys,
    // which this base lacks, stay in BuildKit's layer, not in lade's (README, RUN sandbox).
    let mut buildkit: Vec<Vec<String>> = buildkit.into_iter().flatten().collect();
    buildkit[1].retain(|n| !["dev", "proc", "sys", "d/.wh.a", "d/.wh.b"].contains(&n.as_str()));
    buildkit[1].push("d/.wh..wh..opq".into());
    buildkit[1].sort();
    let ours_layers: Vec<Vec<String>> = ours.iter().flatten().cloned().collect();
    assert_eq!(ours_layers, buildkit);
    // `RUN true` and `RUN ls`: empty in dockerd's store (its classic layer store keeps them);
    // BuildKit's image exporter drops such layers and marks their history `empty_layer`, as
    // lade does.
    let empty: Vec<&str> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] == true)
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(
        empty,
        ["RUN /bin/sh -c true", "RUN /bin/sh -c ls / > /dev/null"]
    );
}

#[test]
fn user_env_arg_shell_and_exec_form_match_buildkit() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    load_base_into_dockerd(tmp.path(), "lade-test/run-base2:1");
    let bk_ctx = context(
        &tmp.path().join("bk-ctx"),
        "lade-test/run-base2:1",
        SCOPES,
        &[],
    );
    ok(docker(&[
        "build",
        "--network",
        "none",
        "-t",
        "lade-test/run-scopes:1",
        bk_ctx.to_str().unwrap(),
    ]));
    let bk_log = ok(docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "lade-test/run-scopes:1",
        "cat",
        "/out/log",
    ]));
    let _ = docker(&["rmi", "lade-test/run-scopes:1", "lade-test/run-base2:1"]);
    let ctx = context(&tmp.path().join("ctx"), &base, SCOPES, &[]);
    let archive = tmp.path().join("img.tar");
    build_ok(&tmp.path().join("cache"), &ctx, &archive, &[]);
    let (_, _, layers) = image(&archive);
    assert_eq!(
        layer_file(&archive, layers.last().unwrap(), "out/log"),
        bk_log
    );
}
