//! Rootless RUN (issue #14): `lade build` run as the non-root user `cargo xtask test` makes with
//! /etc/subuid and /etc/subgid ranges (`setpriv --reuid`, a store and a HOME the user owns).
//! lade re-executes itself in a user namespace (src/exec/run/userns.rs); the layers it writes
//! must be the ones a root build writes, with the image's owners, not the user's or its
//! subordinate ids. Run with `cargo xtask test --no-lint -- --test run_rootless`.

mod common;

use common::{layer_listing, ok, output, tar_member};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

const APPLETS: &[&str] = &[
    "id", "ls", "cat", "chown", "rm", "mkdir", "echo", "touch", "test", "true",
];

/// A busybox base as an OCI layout under `tmp` (built as root): passwd/group with `app`
/// (1000:1000, also in staff 50), a world-writable `/tmp`, files to change, and `extra` run in
/// the root filesystem before it is packed (as root).
fn busybox_base(tmp: &Path, extra: impl FnOnce(&Path)) -> String {
    let root = tmp.join("base-rootfs");
    common::busybox_rootfs(&root);
    for a in APPLETS {
        symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    for d in ["etc", "keep", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (path, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"),
        ("f", "f\n"),
        ("old", "old\n"),
        ("keep/k", "k\n"),
    ] {
        fs::write(root.join(path), text).unwrap();
    }
    ok(output(
        Command::new("chmod").arg("1777").arg(root.join("tmp")),
    ));
    extra(&root);
    let tar = tmp.join("base-rootfs.tar");
    ok(output(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    ));
    common::layout_from_rootfs_tar(
        &tar,
        "ENV PATH=/bin\n",
        &tmp.join("base"),
        "1",
        &tmp.join("base-cache"),
    )
}

/// A context `tmp/NAME` holding `dockerfile` (`{BASE}` replaced).
fn context(tmp: &Path, name: &str, base: &str, dockerfile: &str) -> PathBuf {
    let dir = tmp.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile.replace("{BASE}", base)).unwrap();
    dir
}

/// `chown -R OWNER dir` (`user:` or `uid:gid`), so the user can read the base and write its
/// store there.
fn give(dir: &Path, owner: &str) {
    ok(output(Command::new("chown").arg("-R").arg(owner).arg(dir)));
}

fn id(flag: &str, user: &str) -> String {
    ok(output(Command::new("id").arg(flag).arg(user)))
        .trim()
        .to_string()
}

/// `lade build --progress plain -o type=oci,dest=ARCHIVE ARGS CTX` as `uid:gid` (numeric;
/// supplementary groups from the user database when `init_groups`), with HOME and the store
/// under `home`, `SOURCE_DATE_EPOCH=1` (RUN mtimes clamped).
fn build_as(
    uid: &str,
    gid: &str,
    init_groups: bool,
    home: &Path,
    ctx: &Path,
    archive: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", uid, "--regid", gid])
        .arg(if init_groups {
            "--init-groups"
        } else {
            "--clear-groups"
        })
        .arg(env!("CARGO_BIN_EXE_lade"))
        .args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .args(args)
        .arg(ctx)
        .env("HOME", home)
        .env("LADE_CACHE_DIR", home.join("cache"))
        .env("SOURCE_DATE_EPOCH", "1")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("LADE_LOG");
    c.output().unwrap()
}

/// [`build_as`] the rootless test user; must succeed; returns the step log.
#[track_caller]
fn build_rootless(user: &str, home: &Path, ctx: &Path, archive: &Path, args: &[&str]) -> String {
    let o = build_as(
        &id("-u", user),
        &id("-g", user),
        true,
        home,
        ctx,
        archive,
        args,
    );
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "rootless lade build failed:\n{log}");
    log
}

/// The manifest digest and layer digests of an OCI archive.
fn image(archive: &Path) -> (String, Vec<String>) {
    let index: serde_json::Value =
        serde_json::from_slice(&tar_member(archive, "index.json")).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(&tar_member(
        archive,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    ))
    .unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (digest, layers)
}

/// `uid/gid name` of every member of a layer, in layer order (GNU tar's numeric listing).
fn owners(archive: &Path, layer: &str) -> Vec<String> {
    layer_listing(archive, layer, &["-v", "--numeric-owner"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f[1], f[5].trim_end_matches('/'))
        })
        .collect()
}

const CHANGES: &str = "FROM {BASE}
RUN set -e; echo new > /new; echo more >> /f; rm /old; \\
    mkdir /owned && chown 42:42 /owned && echo x > /owned/x && chown 42:7 /owned/x; \\
    chown 1000:50 /keep/k; id -u > /whoami
USER app
RUN set -e; id > /tmp/app-id; touch /tmp/app-file
";

#[test]
fn rootless_runs_write_the_layers_a_root_build_writes_with_the_image_owners() {
    let user = common::require_rootless_user();
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path(), |_| {});
    let ctx = context(tmp.path(), "ctx", &base, CHANGES);
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    give(tmp.path(), &format!("{user}:"));

    let rootless = tmp.path().join("rootless.tar");
    let log = build_rootless(&user, &home, &ctx, &rootless, &[]);
    // overlayfs in the user namespace (kernel ≥ 5.11 with userxattr), not the copying fallback.
    assert!(!log.contains("snapshotter: copy"), "{log}");
    let (digest, layers) = image(&rootless);
    assert_eq!(layers.len(), 3, "base + two RUN layers");
    assert_eq!(
        owners(&rootless, &layers[1]),
        [
            "0/0 .wh.old",
            "0/0 f",
            "0/0 keep",
            "1000/50 keep/k",
            "0/0 new",
            "42/42 owned",
            "42/7 owned/x",
            "0/0 whoami",
        ]
    );
    assert_eq!(
        owners(&rootless, &layers[2]),
        ["0/0 tmp", "1000/1000 tmp/app-file", "1000/1000 tmp/app-id"]
    );
    // On the host the files are the user's subordinate ids; the step saw itself as root.
    let hex = layers[1].trim_start_matches("sha256:");
    let blob = tmp.path().join("l1");
    fs::write(&blob, tar_member(&rootless, &format!("blobs/sha256/{hex}"))).unwrap();
    let whoami = ok(output(
        Command::new("tar").arg("-xzOf").arg(&blob).arg("whoami"),
    ));
    assert_eq!(whoami, "0\n");

    // The copying snapshotter in the namespace writes the same image.
    let copied = tmp.path().join("copy.tar");
    build_rootless(
        &user,
        &home,
        &ctx,
        &copied,
        &["--snapshotter", "copy", "--no-cache"],
    );
    assert_eq!(image(&copied).0, digest);

    // And so does root, with no user namespace at all.
    let as_root = tmp.path().join("root.tar");
    let o = common::lade(&tmp.path().join("root-cache"))
        .env("SOURCE_DATE_EPOCH", "1")
        .args(["build", "--progress", "quiet", "--output"])
        .arg(format!("type=oci,dest={}", as_root.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(image(&as_root).0, digest);
}

#[test]
fn rootless_network_none_has_only_loopback_and_heredocs_run() {
    let user = common::require_rootless_user();
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path(), |_| {});
    let ctx = context(
        tmp.path(),
        "ctx",
        &base,
        "FROM {BASE}\nRUN --network=none ls /sys/class/net\nRUN <<EOT\n#!/bin/sh\necho heredoc as $(id -u)\nEOT\n",
    );
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    give(tmp.path(), &format!("{user}:"));
    let log = build_rootless(&user, &home, &ctx, &tmp.path().join("img.tar"), &[]);
    let out: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("RUN "))
        .map(|l| l.rsplit(": ").next().unwrap())
        .collect();
    assert_eq!(out, ["lo", "heredoc as 0"], "{log}");
}

#[test]
fn rootless_skips_device_nodes_of_a_base_with_a_warning() {
    let user = common::require_rootless_user();
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path(), |root| {
        ok(output(
            Command::new("mknod")
                .arg(root.join("devnode"))
                .args(["c", "1", "3"]),
        ));
    });
    let ctx = context(
        tmp.path(),
        "ctx",
        &base,
        "FROM {BASE}\nRUN test -e /devnode && echo devnode-present || echo devnode-absent\n",
    );
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    give(tmp.path(), &format!("{user}:"));
    let archive = tmp.path().join("img.tar");
    let log = build_rootless(&user, &home, &ctx, &archive, &[]);
    assert!(
        log.contains("device nodes in layers are skipped when not running as root on the host (first: /devnode)"),
        "{log}"
    );
    assert!(log.contains(": devnode-absent"), "{log}");
    // The base layer itself is passed through unchanged, device included.
    let (_, layers) = image(&archive);
    let base_listing = layer_listing(&archive, &layers[0], &["-v"]);
    assert!(
        base_listing
            .lines()
            .any(|l| l.starts_with('c') && l.ends_with(" devnode")),
        "{base_listing}"
    );
}

#[test]
fn without_subordinate_ids_a_run_names_the_line_to_add_and_other_builds_work() {
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path(), |_| {});
    let run = context(tmp.path(), "run", &base, "FROM {BASE}\nRUN true\n");
    let plain = context(tmp.path(), "plain", &base, "FROM {BASE}\nENV A=1\n");
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    // A uid with no name and no range.
    let uid = "61234";
    give(tmp.path(), &format!("{uid}:{uid}"));
    let archive = tmp.path().join("img.tar");
    let o = build_as(uid, uid, false, &home, &run, &archive, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "no range for 61234: add a line `61234:100000:65536` to /etc/subuid and /etc/subgid"
        ),
        "{err}"
    );
    assert!(!archive.exists());
    let o = build_as(uid, uid, false, &home, &plain, &archive, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(archive.exists());
}

/// `apt-get install` from the Debian mirror the machine's apt sources name, as the rootless
/// user: apt drops to `_apt` (uid 42) for its downloads, and the directories it owns keep uid 42
/// in the layer.
#[test]
fn rootless_apt_get_install_keeps_apt_owners_uses_the_debian_mirror() {
    let user = common::require_rootless_user();
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "ctx",
        &debian.minbase,
        "FROM {BASE}\nRUN apt-get update && apt-get install -y --no-install-recommends cron\n",
    );
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    give(tmp.path(), &format!("{user}:"));
    let archive = tmp.path().join("img.tar");
    build_rootless(&user, &home, &ctx, &archive, &[]);
    let (_, layers) = image(&archive);
    let owners = owners(&archive, layers.last().unwrap());
    for partial in [
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
    ] {
        assert!(
            owners.contains(&format!("42/0 {partial}")),
            "{partial} not owned by _apt: {owners:?}"
        );
    }
    assert!(
        owners.contains(&"0/0 usr/sbin/cron".to_string()),
        "{owners:?}"
    );
    // Nothing carries the user's own uid or a subordinate id.
    let host_uid: u32 = id("-u", &user).parse().unwrap();
    let bad: Vec<&String> = owners
        .iter()
        .filter(|o| {
            let (u, g) = o.split(' ').next().unwrap().split_once('/').unwrap();
            [u, g].iter().any(|n| {
                let n: u32 = n.parse().unwrap();
                n >= 65536 || (n == host_uid && n != 0)
            })
        })
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}
