//! RUN beyond the host's defaults: foreign platforms through binfmt_misc (QEMU), several
//! platforms with RUN under one index, `--add-host`, and `RUN --security=insecure` with the
//! `security.insecure` entitlement. Bases are busybox root filesystems added to `FROM scratch`
//! (the host's `/bin/busybox`, and Debian's arm64 busybox-static that `cargo xtask test`
//! downloads). Needs root, crun or runc, busybox-static; the emulated path needs a
//! `qemu-aarch64` handler with the F flag (xtask registers it where it may); where there is
//! none, the tests check lade's error instead and say so.

mod common;

use common::{lade, ok, output};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Busybox applets the tests' commands use, as symlinks in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "uname", "cat", "grep", "mkdir", "mount", "echo", "true", "ls",
];

/// The arm64 busybox of `cargo xtask test` (`LADE_TEST_BUSYBOX_ARM64`).
fn busybox_arm64() -> PathBuf {
    if let Ok(e) = std::env::var("LADE_TEST_BUSYBOX_ARM64_ERROR") {
        panic!("cargo xtask test could not get the arm64 busybox: {e}");
    }
    PathBuf::from(std::env::var("LADE_TEST_BUSYBOX_ARM64").expect(
        "LADE_TEST_BUSYBOX_ARM64 is not set: run these tests with `cargo xtask test`, which \
         downloads Debian's arm64 busybox-static",
    ))
}

/// Whether this machine runs arm64 binaries inside a step: a `qemu-aarch64` handler, enabled,
/// with the F flag (what xtask registers), or an arm64 host.
fn runs_arm64() -> bool {
    if std::env::consts::ARCH == "aarch64" {
        return true;
    }
    let Ok(text) = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64") else {
        return false;
    };
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    text.starts_with("enabled") && flags.contains('F')
}

/// A tarball of a root filesystem holding `busybox` as `/bin/busybox` and the applets.
fn rootfs_tar(dir: &Path, busybox: &Path, name: &str) -> PathBuf {
    let root = dir.join(format!("{name}.root"));
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy(busybox, bin.join("busybox")).unwrap();
    for a in APPLETS {
        symlink("busybox", bin.join(a)).unwrap();
    }
    let tar = dir.join(format!("{name}.tar"));
    ok(output(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    ));
    tar
}

/// A context whose Dockerfile starts from `FROM scratch` + `ADD <rootfs-$TARGETARCH.tar> /`:
/// `tars` are (architecture, tarball) pairs; `run` follows.
fn context(dir: &Path, tars: &[(&str, &Path)], run: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for (arch, tar) in tars {
        fs::copy(tar, ctx.join(format!("rootfs-{arch}.tar"))).unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nARG TARGETARCH\nADD rootfs-$TARGETARCH.tar /\nENV PATH=/bin\n{run}"),
    )
    .unwrap();
    ctx
}

/// `lade build --progress plain` of `ctx` into the OCI layout `layout`.
fn build(cache: &Path, ctx: &Path, layout: &Path, extra: &[&str]) -> std::process::Output {
    lade(cache)
        .args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

#[track_caller]
fn build_ok(cache: &Path, ctx: &Path, layout: &Path, extra: &[&str]) -> String {
    let o = build(cache, ctx, layout, extra);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "lade build failed:\n{log}");
    log
}

/// The `error:` line of a failed build, after checking its exit code.
#[track_caller]
fn error_line(o: &std::process::Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    err.lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{err}"))
        .to_string()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

fn json(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

/// One image of a layout: its config and its layer digests.
struct Image {
    config: Value,
    layers: Vec<String>,
}

/// The images of the layout's first entry, one per platform of an index (in its order).
fn images(layout: &Path) -> Vec<Image> {
    let top: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = &top["manifests"][0];
    let manifests: Vec<String> = if desc["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        json(layout, desc["digest"].as_str().unwrap())["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect()
    } else {
        vec![desc["digest"].as_str().unwrap().to_string()]
    };
    manifests
        .iter()
        .map(|m| {
            let manifest = json(layout, m);
            Image {
                config: json(layout, manifest["config"]["digest"].as_str().unwrap()),
                layers: manifest["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["digest"].as_str().unwrap().to_string())
                    .collect(),
            }
        })
        .collect()
}

/// Runs `tar` with `args` on the layer blob `digest` of `layout`.
fn tar_layer(layout: &Path, digest: &str, args: &[&str]) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), blob(layout, digest)).unwrap();
    output(Command::new("tar").args(args).arg("-f").arg(file.path()))
}

/// The member names of a layer, sorted, without trailing `/`.
fn names(layout: &Path, digest: &str) -> Vec<String> {
    let mut v: Vec<String> = ok(tar_layer(layout, digest, &["-t"]))
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v
}

/// The content of `member` in a layer.
fn layer_file(layout: &Path, digest: &str, member: &str) -> String {
    ok(tar_layer(layout, digest, &["-xO", member]))
}

#[test]
fn an_arm64_run_goes_through_qemu_or_names_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let arm = rootfs_tar(tmp.path(), &busybox_arm64(), "arm64");
    let ctx = context(
        tmp.path(),
        &[("arm64", &arm)],
        "RUN uname -m > /arch && cat /etc/hosts > /hosts\n",
    );
    let layout = tmp.path().join("out");
    let docker_archive = tmp.path().join("docker.tar");
    let o = build(
        &tmp.path().join("cache"),
        &ctx,
        &layout,
        &[
            "--platform",
            "linux/arm64",
            "-t",
            "lade-test/arm64-run:1",
            "--output",
            &format!("type=docker,dest={}", docker_archive.display()),
        ],
    );
    let log = String::from_utf8_lossy(&o.stderr);
    if runs_arm64() {
        println!("path: arm64 RUN executed (qemu-aarch64 handler or an arm64 host)");
        assert!(o.status.success(), "{log}");
        if std::env::consts::ARCH != "aarch64" {
            assert!(
                log.contains(
                    "RUN for linux/arm64: emulated through binfmt_misc handler qemu-aarch64"
                ),
                "{log}"
            );
        }
        let [img] = images(&layout).try_into().ok().unwrap();
        assert_eq!(img.config["architecture"], "arm64");
        assert_eq!(img.layers.len(), 2);
        assert_eq!(layer_file(&layout, &img.layers[1], "arch"), "aarch64\n");
        assert_eq!(names(&layout, &img.layers[1]), ["arch", "hosts"]);
        // dockerd takes it as an arm64 image and runs it (through the same handler).
        ok(common::docker(&[
            "load",
            "-i",
            docker_archive.to_str().unwrap(),
        ]));
        let inspect = ok(common::docker(&[
            "image",
            "inspect",
            "-f",
            "{{.Os}}/{{.Architecture}}",
            "lade-test/arm64-run:1",
        ]));
        let ran = common::docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--platform",
            "linux/arm64",
            "lade-test/arm64-run:1",
            "sh",
            "-c",
            "cat /arch; uname -m",
        ]);
        let _ = common::docker(&["rmi", "lade-test/arm64-run:1"]);
        assert_eq!(inspect.trim(), "linux/arm64");
        assert_eq!(ok(ran), "aarch64\naarch64\n");
    } else {
        println!("path: no arm64 handler on this machine: checking the error");
        let line = error_line(&o, 1);
        assert!(
            line.contains("Dockerfile:5")
                && line.contains("RUN for linux/arm64")
                && line.contains("qemu-user-static and binfmt-support"),
            "{line}"
        );
        assert!(!layout.exists() && !docker_archive.exists());
    }
}

#[test]
fn two_platforms_with_run_make_one_index_with_each_platforms_output() {
    let tmp = tempfile::tempdir().unwrap();
    let host = rootfs_tar(tmp.path(), Path::new("/bin/busybox"), "amd64");
    let arm = rootfs_tar(tmp.path(), &busybox_arm64(), "arm64");
    let ctx = context(
        tmp.path(),
        &[("amd64", &host), ("arm64", &arm)],
        "RUN uname -m > /arch\n",
    );
    let layout = tmp.path().join("out");
    let o = build(
        &tmp.path().join("cache"),
        &ctx,
        &layout,
        &["--platform", "linux/amd64,linux/arm64"],
    );
    if !runs_arm64() {
        println!("path: no arm64 handler on this machine: checking the error");
        let line = error_line(&o, 1);
        assert!(line.contains("RUN for linux/arm64"), "{line}");
        assert!(
            !layout.exists(),
            "nothing is written unless every platform built"
        );
        return;
    }
    println!("path: both platforms executed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let imgs = images(&layout);
    let got: Vec<(String, String)> = imgs
        .iter()
        .map(|i| {
            (
                i.config["architecture"].as_str().unwrap().to_string(),
                layer_file(&layout, &i.layers[1], "arch"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("amd64".to_string(), "x86_64\n".to_string()),
            ("arm64".to_string(), "aarch64\n".to_string())
        ]
    );
}

#[test]
fn without_a_usable_handler_the_error_names_the_platform_and_the_packages() {
    let tmp = tempfile::tempdir().unwrap();
    // Only the host's root filesystem: for the foreign platform the check comes before the
    // ADD is read.
    let host_tar = rootfs_tar(tmp.path(), Path::new("/bin/busybox"), "host");
    let host_arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "amd64"
    };
    let ctx = context(tmp.path(), &[(host_arch, &host_tar)], "RUN true\n");
    // binfmt_misc as lade reads it, with no handler, then with one lacking the F flag.
    let binfmt = tmp.path().join("binfmt");
    fs::create_dir_all(&binfmt).unwrap();
    fs::write(binfmt.join("status"), "enabled\n").unwrap();
    fs::write(binfmt.join("register"), "").unwrap();
    let layout = tmp.path().join("out");
    let run = |platform: &str| {
        lade(&tmp.path().join("cache"))
            .env("LADE_BINFMT_MISC", &binfmt)
            .args(["build", "--progress", "plain", "--platform", platform])
            .arg("--output")
            .arg(format!("type=oci-layout,dest={}", layout.display()))
            .arg(&ctx)
            .output()
            .unwrap()
    };
    let foreign = if std::env::consts::ARCH == "aarch64" {
        ("linux/amd64", "amd64", "qemu-x86_64")
    } else {
        ("linux/arm64", "arm64", "qemu-aarch64")
    };
    let line = error_line(&run(foreign.0), 1);
    assert!(
        line.contains("Dockerfile:5:1: RUN for ")
            && line.contains(&format!("{} on this linux/", foreign.0))
            && line.contains(&format!(
                "no binfmt_misc handler for {} binaries is registered in {}",
                foreign.1,
                binfmt.display()
            ))
            && line.contains("install the Debian packages qemu-user-static and binfmt-support")
            && line.contains(foreign.2),
        "{line}"
    );
    assert!(!layout.exists());

    let magic = if foreign.1 == "arm64" {
        "7f454c460201010000000000000000000200b700"
    } else {
        "7f454c4602010100000000000000000002003e00"
    };
    fs::write(
        binfmt.join(foreign.2),
        format!(
            "enabled\ninterpreter /usr/bin/{}\nflags: P\noffset 0\nmagic {magic}\n\
             mask ffffffffffffff00fffffffffffffffffeffffff\n",
            foreign.2
        ),
    )
    .unwrap();
    let line = error_line(&run(foreign.0), 1);
    assert!(
        line.contains(&format!(
            "the binfmt_misc handler {} (/usr/bin/{}) is registered without the F (fix binary) flag",
            foreign.2, foreign.2
        )),
        "{line}"
    );
    // The host's own platform needs no handler.
    let o = run(&format!("linux/{host_arch}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn add_host_lines_reach_etc_hosts_but_not_the_layer_and_key_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let host = rootfs_tar(tmp.path(), Path::new("/bin/busybox"), "amd64");
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "amd64"
    };
    let ctx = context(tmp.path(), &[(arch, &host)], "RUN cat /etc/hosts > /seen\n");
    let cache = tmp.path().join("cache");
    let layout = tmp.path().join("out");
    let hosts = [
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "V6=[2001:db8::1]",
    ];
    let log = build_ok(&cache, &ctx, &layout, &hosts);
    let [img] = images(&layout).try_into().ok().unwrap();
    assert_eq!(names(&layout, &img.layers[1]), ["seen"]);
    assert_eq!(
        layer_file(&layout, &img.layers[1], "seen"),
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         10.1.2.3\tdb\n2001:db8::1\tv6\n"
    );
    assert!(
        log.contains("layer RUN cat /etc/hosts > /seen: writing"),
        "{log}"
    );
    // The same hosts: cached; other hosts: the RUN runs again.
    let log = build_ok(&cache, &ctx, &layout, &hosts);
    assert!(
        log.contains("layer RUN cat /etc/hosts > /seen: cached"),
        "{log}"
    );
    let other = tmp.path().join("other");
    let log = build_ok(&cache, &ctx, &other, &["--add-host", "db:10.9.9.9"]);
    assert!(
        log.contains("layer RUN cat /etc/hosts > /seen: writing"),
        "{log}"
    );
    let [img] = images(&other).try_into().ok().unwrap();
    assert!(layer_file(&other, &img.layers[1], "seen").ends_with("\n10.9.9.9\tdb\n"));

    for (bad, part) in [
        ("db", "expected NAME:IP"),
        ("db:not-an-ip", "is not an IP address"),
        ("gw:host-gateway", "host-gateway"),
    ] {
        let line = error_line(&build(&cache, &ctx, &layout, &["--add-host", bad]), 2);
        assert!(
            line.contains(&format!("--add-host {bad:?}")) && line.contains(part),
            "{line}"
        );
    }
}

#[test]
fn insecure_needs_the_entitlement_and_then_may_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let host = rootfs_tar(tmp.path(), Path::new("/bin/busybox"), "amd64");
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "amd64"
    };
    let cache = tmp.path().join("cache");
    let layout = tmp.path().join("out");
    // Mounting needs CAP_SYS_ADMIN: the sandbox lacks it.
    let sandboxed = context(
        &tmp.path().join("a"),
        &[(arch, &host)],
        "RUN mkdir /m && mount -t tmpfs tmpfs /m\n",
    );
    let line = error_line(&build(&cache, &sandboxed, &layout, &[]), 1);
    assert!(
        line.contains("Dockerfile:5") && line.contains("exited with code"),
        "{line}"
    );
    assert!(!layout.exists());

    let insecure = context(
        &tmp.path().join("b"),
        &[(arch, &host)],
        "RUN --security=insecure mkdir /m && mount -t tmpfs tmpfs /m && echo in > /m/f \
         && cat /m/f > /seen && grep CapEff /proc/self/status > /caps\n",
    );
    let line = error_line(&build(&cache, &insecure, &layout, &[]), 1);
    assert!(
        line.contains(
            "Dockerfile:5:1: RUN --security=insecure needs the security.insecure \
                       entitlement: pass `lade build --allow security.insecure`"
        ),
        "{line}"
    );
    assert!(!layout.exists());
    let line = error_line(
        &build(&cache, &insecure, &layout, &["--allow", "device"]),
        2,
    );
    assert!(
        line.contains("--allow \"device\": unknown entitlement"),
        "{line}"
    );

    build_ok(
        &cache,
        &insecure,
        &layout,
        &["--allow", "network.host,security.insecure"],
    );
    let [img] = images(&layout).try_into().ok().unwrap();
    // The tmpfs was the step's: /m stays an empty directory in the layer.
    assert_eq!(names(&layout, &img.layers[1]), ["caps", "m", "seen"]);
    assert_eq!(layer_file(&layout, &img.layers[1], "seen"), "in\n");
    // Every capability lade holds (this test's own, as its parent).
    let own = fs::read_to_string("/proc/self/status").unwrap();
    let own = own.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert_eq!(layer_file(&layout, &img.layers[1], "caps").trim_end(), own);
}

#[test]
fn add_host_gives_the_hosts_file_buildkit_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = ["--add-host", "db:10.1.2.3", "--add-host", "v6:2001:db8::1"];
    common::docker_import_busybox("lade-test/platform-bb:1");
    let bk_ctx = tmp.path().join("bk");
    fs::create_dir_all(&bk_ctx).unwrap();
    fs::write(
        bk_ctx.join("Dockerfile"),
        "FROM lade-test/platform-bb:1\nRUN busybox cat /etc/hosts > /seen\n",
    )
    .unwrap();
    // The test dockerd has no bridge network.
    let mut args = vec![
        "build",
        "--network",
        "none",
        "-t",
        "lade-test/platform-hosts:1",
    ];
    args.extend(hosts);
    args.push(bk_ctx.to_str().unwrap());
    ok(common::docker(&args));
    let buildkit = ok(common::docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "lade-test/platform-hosts:1",
        "busybox",
        "cat",
        "/seen",
    ]));
    let _ = common::docker(&[
        "rmi",
        "lade-test/platform-hosts:1",
        "lade-test/platform-bb:1",
    ]);

    let host = rootfs_tar(tmp.path(), Path::new("/bin/busybox"), "host");
    let arch = if std::env::consts::ARCH == "aarch64" {
        "arm64"
    } else {
        "amd64"
    };
    let ctx = context(tmp.path(), &[(arch, &host)], "RUN cat /etc/hosts > /seen\n");
    let layout = tmp.path().join("out");
    let mut extra = vec!["--network", "none"];
    extra.extend(hosts);
    build_ok(&tmp.path().join("cache"), &ctx, &layout, &extra);
    let [img] = images(&layout).try_into().ok().unwrap();
    assert_eq!(layer_file(&layout, &img.layers[1], "seen"), buildkit);
}
