//! `lade build --spec` features checked on the built bytes: manifest annotations, the
//! `[[layer]]` options (globs, modes, owner, exec bit) as the layer lists them,
//! `--jobs`-independence, OCI layouts holding several images, SOURCE_DATE_EPOCH in file
//! mtimes, unreadable files, layout/archive bases, the `[cargo]` preset, and signals.

mod common;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `lade build --spec SPEC --cache-dir CACHE --output type=oci,dest=OUT EXTRA…`, which must
/// succeed; returns the metadata file's JSON.
fn build(spec: &Path, cache: &Path, out: &Path, extra: &[&str]) -> Value {
    let meta = out.with_extension("meta.json");
    common::lade(cache)
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(spec)
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg("--metadata-file")
        .arg(&meta)
        .args(extra)
        .assert()
        .success();
    serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap()
}

use common::tar_member;

fn json_member(archive: &Path, member: &str) -> Value {
    serde_json::from_slice(&tar_member(archive, member)).unwrap()
}

fn blob_name(digest: &Value) -> String {
    format!(
        "blobs/sha256/{}",
        digest.as_str().unwrap().trim_start_matches("sha256:")
    )
}

/// The manifest of the (single) image of an OCI archive.
fn manifest(archive: &Path) -> Value {
    let index = json_member(archive, "index.json");
    json_member(archive, &blob_name(&index["manifests"][0]["digest"]))
}

/// One member of a layer as GNU tar lists it.
#[derive(Debug, PartialEq, Eq)]
struct Member {
    /// `drwxr-xr-x`-style type and permissions.
    mode: String,
    owner: String,
    /// `YYYY-MM-DD HH:MM:SS` in UTC.
    time: String,
    path: String,
}

/// The members of every layer of an OCI archive, listed by GNU tar (numeric owners, UTC).
fn layers(archive: &Path) -> Vec<Vec<Member>> {
    manifest(archive)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            common::layer_listing(
                archive,
                l["digest"].as_str().unwrap(),
                &["-v", "--numeric-owner", "--full-time"],
            )
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                Member {
                    mode: f[0].to_string(),
                    owner: f[1].to_string(),
                    time: format!("{} {}", f[3], f[4]),
                    path: f[5..].join(" "),
                }
            })
            .collect()
        })
        .collect()
}

/// `(mode, owner, path)` of each member, for compact comparisons.
fn summary(members: &[Member]) -> Vec<(String, String, String)> {
    members
        .iter()
        .map(|m| (m.mode.clone(), m.owner.clone(), m.path.clone()))
        .collect()
}

fn s3(mode: &str, owner: &str, path: &str) -> (String, String, String) {
    (mode.into(), owner.into(), path.into())
}

#[test]
fn image_annotations_are_written_into_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write(&ctx.join("files/a.txt"), "a");
    write(
        &ctx.join("lade.toml"),
        "[image]\nannotations = { \"org.opencontainers.image.title\" = \"annotated\", \"org.example.z\" = \"last\" }\n[[layer]]\nname = \"f\"\nfrom = \"files\"\ninto = \"/f\"\n",
    );
    let out = tmp.path().join("a.tar");
    let meta = build(&ctx.join("lade.toml"), &tmp.path().join("cache"), &out, &[]);
    let expected = serde_json::json!({
        "org.example.z": "last",
        "org.opencontainers.image.title": "annotated",
    });
    assert_eq!(manifest(&out)["annotations"], expected);

    // skopeo reads the same manifest bytes; they are the canonical JSON the digest names.
    let raw = common::ok(common::skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", out.display()),
    ]));
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["annotations"], expected);
    assert!(
        raw.trim_end().contains(
            r#""annotations":{"org.example.z":"last","org.opencontainers.image.title":"annotated"}"#
        ),
        "{raw}"
    );
    let sum = common::ok(common::output(Command::new("sh").arg("-c").arg(format!(
        "skopeo --insecure-policy inspect --raw oci-archive:{} | sha256sum",
        out.display()
    ))));
    assert_eq!(
        format!("sha256:{}", sum.split_whitespace().next().unwrap()),
        meta["containerimage.digest"].as_str().unwrap()
    );
}

#[test]
fn layer_options_shape_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    let f = ctx.join("files");
    for p in [
        "a.txt",
        "b.log",
        "sub/deep/c.txt",
        "cache/x/y.txt",
        "cache/z.txt",
        "sub/cache/w.txt",
    ] {
        write(&f.join(p), p);
    }
    chmod(&f.join("a.txt"), 0o600);
    write(&f.join("bin/tool"), "#!/bin/sh\n");
    chmod(&f.join("bin/tool"), 0o750);
    write(
        &ctx.join("lade.toml"),
        r#"[image]
[[layer]]
name = "globs"
from = "files"
into = "/globs"
include = ["**/*.txt", "bin/**"]
exclude = ["**/cache"]

[[layer]]
name = "dir-excluded"
from = "files"
into = "/top"
exclude = ["cache", "*.log", "bin", "sub"]

[[layer]]
name = "attrs"
from = "files"
into = "/opt/app"
include = ["a.txt", "bin/tool"]
mode = "0600"
dir-mode = "0750"
owner = "1000:2000"

[[layer]]
name = "no-exec"
from = "files"
into = "/noexec"
include = ["bin/tool", "a.txt"]
preserve-exec-bit = false

[[layer]]
name = "defaults"
from = "files"
into = "/exec"
include = ["bin/tool", "a.txt"]

[[layer]]
name = "host"
from = "files"
into = "/host"
include = ["bin/tool", "a.txt"]
normalize-modes = false
"#,
    );
    chmod(&f, 0o750);
    chmod(&f.join("bin"), 0o751);
    let out = tmp.path().join("o.tar");
    build(&ctx.join("lade.toml"), &tmp.path().join("cache"), &out, &[]);
    let l = layers(&out);
    let (d, f, x) = ("drwxr-xr-x", "-rw-r--r--", "-rwxr-xr-x");
    assert_eq!(
        summary(&l[0]),
        [
            s3(d, "0/0", "globs/"),
            s3(f, "0/0", "globs/a.txt"),
            s3(d, "0/0", "globs/bin/"),
            s3(x, "0/0", "globs/bin/tool"),
            s3(d, "0/0", "globs/sub/"),
            s3(d, "0/0", "globs/sub/deep/"),
            s3(f, "0/0", "globs/sub/deep/c.txt"),
        ],
        "include/exclude with ** (an excluded dir takes its files along)"
    );
    assert_eq!(
        summary(&l[1]),
        [s3(d, "0/0", "top/"), s3(f, "0/0", "top/a.txt")],
        "excluding directories drops everything under them"
    );
    assert_eq!(
        summary(&l[2]),
        [
            s3(d, "0/0", "opt/"),
            s3("drwxr-x---", "1000/2000", "opt/app/"),
            s3("-rw-------", "1000/2000", "opt/app/a.txt"),
            s3("drwxr-x---", "1000/2000", "opt/app/bin/"),
            s3("-rw-------", "1000/2000", "opt/app/bin/tool"),
        ],
        "mode, dir-mode and owner; `into` gets the owner, the parents above it do not"
    );
    assert_eq!(
        summary(&l[3]),
        [
            s3(d, "0/0", "noexec/"),
            s3(f, "0/0", "noexec/a.txt"),
            s3(d, "0/0", "noexec/bin/"),
            s3(f, "0/0", "noexec/bin/tool"),
        ],
        "preserve-exec-bit = false"
    );
    assert_eq!(
        summary(&l[4]),
        [
            s3(d, "0/0", "exec/"),
            s3(f, "0/0", "exec/a.txt"),
            s3(d, "0/0", "exec/bin/"),
            s3(x, "0/0", "exec/bin/tool"),
        ],
        "defaults: 0644 files, exec bit kept as 0755"
    );
    assert_eq!(
        summary(&l[5]),
        [
            s3("drwxr-x---", "0/0", "host/"),
            s3("-rw-------", "0/0", "host/a.txt"),
            s3("drwxr-x--x", "0/0", "host/bin/"),
            s3("-rwxr-x---", "0/0", "host/bin/tool"),
        ],
        "normalize-modes = false: the modes on disk, `into` taking `from`'s"
    );
    // --normalize-modes wins over the spec.
    build(
        &ctx.join("lade.toml"),
        &tmp.path().join("cache"),
        &out,
        &["--normalize-modes"],
    );
    assert_eq!(
        summary(&layers(&out)[5]),
        [
            s3(d, "0/0", "host/"),
            s3(f, "0/0", "host/a.txt"),
            s3(d, "0/0", "host/bin/"),
            s3(x, "0/0", "host/bin/tool"),
        ],
        "--normalize-modes"
    );
}

/// A context of `n` layers with different contents, some of them big enough for several
/// gzip blocks.
fn multi_layer_context(root: &Path, n: usize) {
    let mut spec = String::from("[image]\nplatform = \"linux/amd64\"\n");
    for i in 0..n {
        let dir = root.join(format!("l{i}"));
        for j in 0..(20 + 15 * i) {
            write(
                &dir.join(format!("d{}/f{j}.txt", j % 3)),
                &format!("layer {i} file {j}\n").repeat(50 + j * 7),
            );
        }
        // Several MiB of text: compressed in more than one gzip block.
        let mut big = String::new();
        let mut x: u64 = i as u64 + 1;
        while big.len() < (3 << 20) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            big.push_str(&format!("{:x} word{} ", x >> 40, x % 97));
        }
        write(&dir.join("big.txt"), &big);
        spec.push_str(&format!(
            "[[layer]]\nname = \"l{i}\"\nfrom = \"l{i}\"\ninto = \"/l{i}\"\n"
        ));
    }
    write(&root.join("lade.toml"), &spec);
}

#[test]
fn jobs_1_and_4_give_byte_identical_multi_layer_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    multi_layer_context(&ctx, 4);
    let one = tmp.path().join("one.tar");
    let four = tmp.path().join("four.tar");
    let m1 = build(
        &ctx.join("lade.toml"),
        &tmp.path().join("c1"),
        &one,
        &["--jobs", "1"],
    );
    let m4 = build(
        &ctx.join("lade.toml"),
        &tmp.path().join("c4"),
        &four,
        &["--jobs", "4"],
    );
    assert_eq!(m1["lade.layers"].as_array().unwrap().len(), 4);
    assert_eq!(m1["containerimage.digest"], m4["containerimage.digest"]);
    assert!(fs::read(&one).unwrap() == fs::read(&four).unwrap());
}

/// The most threads `lade build` had at once while building `spec` with `--jobs jobs`
/// (sampled from /proc).
fn peak_threads(spec: &Path, cache: &Path, jobs: &str) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lade"))
        .args(["build", "--progress", "quiet", "--no-cache", "--jobs", jobs])
        .arg("--spec")
        .arg(spec)
        .arg("--cache-dir")
        .arg(cache)
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success());
            return peak;
        }
        if let Ok(text) = fs::read_to_string(&status) {
            if let Some(n) = text
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
            {
                peak = peak.max(n);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn jobs_bounds_the_compressor_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    // One layer of ~60 MiB of text: long enough to be seen compressing.
    let mut big = String::new();
    let mut x: u64 = 7;
    while big.len() < (60 << 20) {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        big.push_str(&format!("{:x} w{} ", x >> 44, x % 89));
    }
    write(&ctx.join("data/big.txt"), &big);
    write(
        &ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"d\"\nfrom = \"data\"\ninto = \"/d\"\n",
    );
    let cache = tmp.path().join("cache");
    // --jobs 1: main, the one rayon worker, the tar producer, one gzip worker (and the
    // signal thread).
    let one = peak_threads(&ctx.join("lade.toml"), &cache, "1");
    assert!(one <= 5, "--jobs 1 ran {one} threads");
    // --jobs 6: six rayon workers and six gzip workers, whatever the core count.
    let six = peak_threads(&ctx.join("lade.toml"), &cache, "6");
    assert!(six >= 14, "--jobs 6 ran only {six} threads");
}

#[test]
fn an_oci_layout_takes_more_images_and_moves_reused_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let cache = tmp.path().join("cache");
    let build_into_layout = |name: &str, tag: &str| -> String {
        let ctx = tmp.path().join(name);
        write(&ctx.join("files/which"), name);
        write(
            &ctx.join("lade.toml"),
            "[image]\n[[layer]]\nname = \"f\"\nfrom = \"files\"\ninto = \"/\"\n",
        );
        let meta = tmp.path().join(format!("{name}.json"));
        common::lade(&cache)
            .args(["build", "--progress", "quiet", "--spec"])
            .arg(ctx.join("lade.toml"))
            .arg("--output")
            .arg(format!("type=oci-layout,dest={}", layout.display()))
            .args(["-t", &format!("img:{tag}")])
            .arg("--metadata-file")
            .arg(&meta)
            .assert()
            .success();
        let v: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        v["containerimage.digest"].as_str().unwrap().to_string()
    };
    let inspect = |tag: &str| -> String {
        let v: Value = serde_json::from_str(&common::ok(common::skopeo(&[
            "inspect",
            &format!("oci:{}:{tag}", layout.display()),
        ])))
        .unwrap();
        v["Digest"].as_str().unwrap().to_string()
    };
    let unpacked = |tag: &str| -> String {
        let bundle = tmp.path().join(format!("bundle-{tag}-{}", rand_suffix()));
        common::ok(common::umoci(&[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:{tag}", layout.display()),
            bundle.to_str().unwrap(),
        ]));
        fs::read_to_string(bundle.join("rootfs/which")).unwrap()
    };

    let a = build_into_layout("first", "one");
    let b = build_into_layout("second", "two");
    assert_ne!(a, b);
    assert_eq!(inspect("one"), a);
    assert_eq!(inspect("two"), b);
    assert_eq!(unpacked("one"), "first");
    assert_eq!(unpacked("two"), "second");

    // Re-using tag `one` for a third image replaces its ref; `two` is untouched.
    let c = build_into_layout("third", "one");
    assert_eq!(inspect("one"), c);
    assert_eq!(inspect("two"), b);
    assert_eq!(unpacked("one"), "third");
    assert_eq!(unpacked("two"), "second");
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let refs: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap(),
                m["digest"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert!(refs.contains(&("one", c.as_str())) && refs.contains(&("two", b.as_str())));
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn source_date_epoch_is_every_file_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write(&ctx.join("files/a/b.txt"), "b");
    write(&ctx.join("files/c.txt"), "c");
    fs::create_dir_all(ctx.join("files/empty")).unwrap();
    std::os::unix::fs::symlink("c.txt", ctx.join("files/link")).unwrap();
    write(
        &ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"f\"\nfrom = \"files\"\ninto = \"/srv/app\"\n",
    );
    let out = tmp.path().join("o.tar");
    let meta = tmp.path().join("m.json");
    common::lade(&tmp.path().join("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg("--metadata-file")
        .arg(&meta)
        .assert()
        .success();
    let members = &layers(&out)[0];
    let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "srv/",
            "srv/app/",
            "srv/app/a/",
            "srv/app/a/b.txt",
            "srv/app/c.txt",
            "srv/app/empty/",
            "srv/app/link -> c.txt"
        ]
    );
    for m in members {
        assert_eq!(m.time, "2023-11-14 22:13:20", "{m:?}");
    }
    let config = json_member(&out, &blob_name(&manifest(&out)["config"]["digest"]));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
}

/// A directory that uid 65534 may read and write.
fn world_writable_dir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    chmod(p, 0o777);
    p.to_path_buf()
}

#[test]
fn a_file_the_user_cannot_read_fails_the_build_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    let ctx = tmp.path().join("ctx");
    write(&ctx.join("files/ok.txt"), "fine");
    write(&ctx.join("files/secret.key"), "top secret");
    chmod(&ctx.join("files/secret.key"), 0o600);
    write(
        &ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"f\"\nfrom = \"files\"\ninto = \"/f\"\n",
    );
    let out_dir = world_writable_dir(&tmp.path().join("out"));
    let cache = world_writable_dir(&tmp.path().join("cache"));
    let out = out_dir.join("image.tar");
    // Tests run as root, who reads any file: build as nobody.
    let o = common::output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_lade"))
            .args(["build", "--progress", "quiet", "--spec"])
            .arg(ctx.join("lade.toml"))
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--output")
            .arg(format!("type=oci,dest={}", out.display()))
            .env_remove("SOURCE_DATE_EPOCH"),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&ctx.join("files/secret.key").display().to_string())
            && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0, "output left");
    let tmp_left = fs::read_dir(cache.join("tmp")).unwrap().count();
    assert_eq!(tmp_left, 0, "temp files left in the store");
}

/// A busybox base image written by lade into `layout` as tag `base`, and as an OCI archive.
fn busybox_base(dir: &Path) -> (PathBuf, PathBuf) {
    let ctx = dir.join("base");
    common::busybox_rootfs(&ctx.join("rootfs"));
    write(&ctx.join("rootfs/etc/base-release"), "busybox base\n");
    write(
        &ctx.join("lade.toml"),
        "[image]\nplatform = \"linux/amd64\"\nenv = { PATH = \"/usr/local/bin:/bin\" }\n[[layer]]\nname = \"rootfs\"\nfrom = \"rootfs\"\ninto = \"/\"\n",
    );
    let layout = dir.join("base-layout");
    let archive = dir.join("base.tar");
    common::lade(&dir.join("base-cache"))
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .arg("--output")
        .arg(format!("type=oci,dest={}", archive.display()))
        .args(["-t", "busybox:base"])
        .assert()
        .success();
    (layout, archive)
}

/// Unpacks the `latest`-tagged image of an OCI archive with umoci; returns the rootfs.
fn umoci_rootfs(archive: &Path, dir: &Path) -> PathBuf {
    let layout = dir.join("unpack-layout");
    fs::create_dir_all(&layout).unwrap();
    common::ok(common::output(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&layout),
    ));
    let bundle = dir.join("bundle");
    common::ok(common::umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:latest", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    bundle.join("rootfs")
}

#[test]
fn specs_build_on_layout_and_archive_bases() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, archive) = busybox_base(tmp.path());
    for (i, from) in [
        format!("oci:{}:base", layout.display()),
        format!("oci-archive:{}", archive.display()),
    ]
    .iter()
    .enumerate()
    {
        let ctx = tmp.path().join(format!("app{i}"));
        write(&ctx.join("files/greeting"), &format!("hello from {from}\n"));
        write(
            &ctx.join("lade.toml"),
            &format!(
                "[image]\nfrom = \"{from}\"\n[[layer]]\nname = \"app\"\nfrom = \"files\"\ninto = \"/app\"\n"
            ),
        );
        let out = tmp.path().join(format!("app{i}.tar"));
        let meta = build(
            &ctx.join("lade.toml"),
            &tmp.path().join("cache"),
            &out,
            &["-t", "app:latest"],
        );
        assert_eq!(meta["lade.layers"].as_array().unwrap().len(), 2, "{from}");
        let config = json_member(&out, &blob_name(&manifest(&out)["config"]["digest"]));
        assert!(
            config["config"]["Env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "PATH=/usr/local/bin:/bin"),
            "base config kept: {config}"
        );
        let unpack_dir = tmp.path().join(format!("unpack{i}"));
        let rootfs = umoci_rootfs(&out, &unpack_dir);
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/base-release")).unwrap(),
            "busybox base\n",
            "{from}"
        );
        assert!(rootfs.join("bin/busybox").is_file());
        assert_eq!(
            fs::read_to_string(rootfs.join("app/greeting")).unwrap(),
            format!("hello from {from}\n")
        );
    }
}

#[test]
fn cargo_preset_installs_the_binary_and_runs_in_docker() {
    common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let (_, archive) = busybox_base(tmp.path());
    let ctx = tmp.path().join("crate");
    // A stand-in for a cargo-built binary: any executable will do.
    write(
        &ctx.join("target/release/greeter"),
        "#!/bin/sh\necho \"greeter says ${1:-nothing}\"\n",
    );
    chmod(&ctx.join("target/release/greeter"), 0o700);
    write(
        &ctx.join("lade.toml"),
        &format!(
            "[image]\nfrom = \"oci-archive:{}\"\ncmd = [\"hi\"]\n[cargo]\nbin = \"target/release/greeter\"\n",
            archive.display()
        ),
    );
    let out = tmp.path().join("greeter.tar");
    common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--output")
        .arg(format!("type=docker,dest={}", out.display()))
        .args(["-t", "lade-test/greeter:1"])
        .assert()
        .success();
    let layer = {
        // The preset's layer (the last one): the binary, 0755 root, under /usr/local/bin.
        let m: Value = json_member(&out, "manifest.json");
        let l = m[0]["Layers"].as_array().unwrap().last().unwrap().clone();
        let blob = tmp.path().join("layer.tgz");
        fs::write(&blob, tar_member(&out, l.as_str().unwrap())).unwrap();
        common::ok(common::output(
            Command::new("tar")
                .args(["--numeric-owner", "-tvzf"])
                .arg(&blob),
        ))
    };
    assert!(
        layer
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with(" usr/local/bin/greeter")),
        "{layer}"
    );
    common::ok(common::docker(&["load", "-i", out.to_str().unwrap()]));
    let inspect: Value = serde_json::from_str(&common::ok(common::docker(&[
        "inspect",
        "lade-test/greeter:1",
    ])))
    .unwrap();
    assert_eq!(
        inspect[0]["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/greeter"])
    );
    let run = common::ok(common::docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "lade-test/greeter:1",
    ]));
    assert_eq!(run.trim(), "greeter says hi");
    common::docker(&["rmi", "-f", "lade-test/greeter:1"]);
}

#[test]
fn version_prints_the_package_version() {
    let out = common::ok(common::output(
        Command::new(env!("CARGO_BIN_EXE_lade")).arg("--version"),
    ));
    assert_eq!(out.trim(), format!("lade {}", env!("CARGO_PKG_VERSION")));
}

/// Starts a build of a 3 GiB sparse file (uncompressed, so writing takes a while) to
/// `--output output`, and waits until names that were not there before (a temp file, or the
/// output's directory) appear in `watch`; returns the running build and those names.
fn start_big_build(
    tmp: &Path,
    watch: &Path,
    output: &str,
) -> (std::process::Child, Vec<std::ffi::OsString>) {
    let ctx = tmp.join("ctx");
    if !ctx.exists() {
        fs::create_dir_all(ctx.join("data")).unwrap();
        fs::File::create(ctx.join("data/sparse.img"))
            .unwrap()
            .set_len(3 << 30)
            .unwrap();
        write(
            &ctx.join("lade.toml"),
            "[image]\n[[layer]]\nname = \"data\"\nfrom = \"data\"\ninto = \"/data\"\n",
        );
    }
    let names = || -> std::collections::HashSet<std::ffi::OsString> {
        fs::read_dir(watch)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let before = names();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lade"))
        .args(["build", "--progress", "quiet", "--compression", "none"])
        .arg("--spec")
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(tmp.join("cache"))
        .args(["--output", output])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let new: Vec<_> = names()
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        if !new.is_empty() {
            return (child, new);
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("the build ended ({s}) before a temp file was seen in {watch:?}");
        }
        assert!(started.elapsed().as_secs() < 120, "no temp file appeared");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// [`start_big_build`], then sends `signal`; returns the exit code (`None`: killed).
fn interrupt_build(tmp: &Path, signal: i32, watch: &Path, output: &str) -> Option<i32> {
    let (mut child, _) = start_big_build(tmp, watch, output);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait().unwrap().code()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_next_build_sweeps_what_a_sigkilled_build_left() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let store_tmp = cache.join("tmp");
    fs::create_dir_all(&store_tmp).unwrap();
    let out_dir = tmp.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let archive = format!("type=oci,dest={}", out_dir.join("image.tar").display());
    let rebuild = |output: &str| {
        common::lade(&cache)
            .args(["build", "--progress", "quiet", "--compression", "none"])
            .arg("--spec")
            .arg(tmp.path().join("ctx/lade.toml"))
            .args(["--output", output])
            .assert()
            .success();
    };

    // Killed while the layer blob is written into the store: its temp stays, until the next
    // build (which also writes the layer, through a temp of its own).
    assert_eq!(
        interrupt_build(tmp.path(), libc::SIGKILL, &store_tmp, &archive),
        None
    );
    let left = listing(&store_tmp);
    assert!(!left.is_empty(), "a SIGKILL leaves the store temp");
    rebuild(&archive);
    assert_eq!(listing(&store_tmp), Vec::<String>::new());
    assert_eq!(listing(&out_dir), ["image.tar"]);

    // Killed while the archive is written beside its destination (the layer is cached).
    fs::remove_file(out_dir.join("image.tar")).unwrap();
    assert_eq!(
        interrupt_build(tmp.path(), libc::SIGKILL, &out_dir, &archive),
        None
    );
    let left = listing(&out_dir);
    assert!(
        left.len() == 1 && left[0].starts_with(".lade-") && left[0].ends_with(".tmp"),
        "{left:?}"
    );
    rebuild(&archive);
    assert_eq!(listing(&out_dir), ["image.tar"]);

    // Killed while a new layout is staged beside its destination.
    let layouts = tmp.path().join("layouts");
    fs::create_dir_all(&layouts).unwrap();
    let layout = format!("type=oci-layout,dest={}", layouts.join("l").display());
    assert_eq!(
        interrupt_build(tmp.path(), libc::SIGKILL, &layouts, &layout),
        None
    );
    let left = listing(&layouts);
    assert!(
        left.len() == 1 && left[0].starts_with(".lade-layout-"),
        "{left:?}"
    );
    rebuild(&layout);
    assert_eq!(listing(&layouts), ["l"]);
    assert_eq!(listing(&store_tmp), Vec::<String>::new());
}

#[test]
fn a_sweep_leaves_the_temps_of_a_running_build_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let store_tmp = cache.join("tmp");
    fs::create_dir_all(&store_tmp).unwrap();
    let out_dir = tmp.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let (mut running, temps) = start_big_build(
        tmp.path(),
        &store_tmp,
        &format!("type=oci,dest={}", out_dir.join("big.tar").display()),
    );
    // A second build on the same store, writing beside the first one's output, sweeps.
    let small = tmp.path().join("small");
    write(
        &small.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"f\"\nfrom = \"f\"\ninto = \"/f\"\n",
    );
    write(&small.join("f/hello.txt"), "hello\n");
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(small.join("lade.toml"))
        .arg("--output")
        .arg(format!(
            "type=oci,dest={}",
            out_dir.join("small.tar").display()
        ))
        .assert()
        .success();
    assert_eq!(
        running.try_wait().unwrap(),
        None,
        "the big build still runs"
    );
    for t in &temps {
        let path = store_tmp.join(t);
        assert!(path.exists(), "the running build's {path:?} was swept");
    }
    // And it is still being written: the running build goes on with it.
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let temp = store_tmp.join(&temps[0]);
    let seen = size(&temp);
    let started = std::time::Instant::now();
    while size(&temp) <= seen && running.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed().as_secs() < 120,
            "the temp stopped growing"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(size(&temp) > seen, "the running build's temp grows");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(running.id() as i32, libc::SIGTERM) };
    assert_eq!(running.wait().unwrap().code(), Some(143));
    assert_eq!(listing(&out_dir), ["small.tar"]);
}

#[test]
fn stale_scratch_directories_in_tmpdir_are_swept_and_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().join("tmpdir");
    // What a killed ADD left (with content), one a live process holds locked, and a
    // directory of another name.
    fs::create_dir_all(tmpdir.join("lade-add-stale1/a/b")).unwrap();
    fs::write(tmpdir.join("lade-add-stale1/a/b/f"), "x").unwrap();
    fs::create_dir_all(tmpdir.join("lade-add-live01")).unwrap();
    fs::create_dir_all(tmpdir.join("other-dir")).unwrap();
    let live = fs::File::open(tmpdir.join("lade-add-live01")).unwrap();
    live.lock().unwrap();
    let small = tmp.path().join("small");
    write(
        &small.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"f\"\nfrom = \"f\"\ninto = \"/f\"\n",
    );
    write(&small.join("f/hello.txt"), "hello\n");
    common::lade(&tmp.path().join("cache"))
        .env("TMPDIR", &tmpdir)
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(small.join("lade.toml"))
        .assert()
        .success();
    assert_eq!(listing(&tmpdir), ["lade-add-live01", "other-dir"]);
    drop(live);
}

#[test]
fn interrupted_builds_leave_no_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let archive = format!("type=oci,dest={}", out_dir.join("image.tar").display());
    // SIGTERM while the layer blob is being written into the store.
    let store_tmp = tmp.path().join("cache/tmp");
    fs::create_dir_all(&store_tmp).unwrap();
    let code = interrupt_build(tmp.path(), libc::SIGTERM, &store_tmp, &archive);
    assert_eq!(code, Some(143));
    assert_eq!(
        fs::read_dir(&store_tmp).unwrap().count(),
        0,
        "store temp left"
    );
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0, "output left");

    // SIGINT while the archive is being written beside its destination (the layer is
    // cached by now, after a complete run).
    common::lade(&tmp.path().join("cache"))
        .args([
            "build",
            "--progress",
            "quiet",
            "--compression",
            "none",
            "--spec",
        ])
        .arg(tmp.path().join("ctx/lade.toml"))
        .assert()
        .success();
    let code = interrupt_build(tmp.path(), libc::SIGINT, &out_dir, &archive);
    assert_eq!(code, Some(130));
    let left: Vec<_> = fs::read_dir(&out_dir).unwrap().collect();
    assert!(left.is_empty(), "left in the destination: {left:?}");
    assert_eq!(fs::read_dir(&store_tmp).unwrap().count(), 0);
}

/// Names in `dir` that start with `.` (lade's temp files and directories).
fn dot_entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn interrupted_layout_outputs_leave_no_new_directory_and_keep_an_old_index() {
    let tmp = tempfile::tempdir().unwrap();
    // An existing layout holding a small image.
    let small = tmp.path().join("small");
    write(
        &small.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"f\"\nfrom = \"f\"\ninto = \"/f\"\n",
    );
    write(&small.join("f/hello.txt"), "hello\n");
    let old = tmp.path().join("old-layout");
    common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(small.join("lade.toml"))
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", old.display()))
        .assert()
        .success();
    let old_index = fs::read(old.join("index.json")).unwrap();
    // The big layer in the store first (an interrupted build, then a complete one), so the
    // builds below are interrupted while they copy it into the layout.
    let store_tmp = tmp.path().join("cache/tmp");
    fs::create_dir_all(&store_tmp).unwrap();
    let scratch = tmp.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let archive = format!("type=oci,dest={}", scratch.join("image.tar").display());
    assert_eq!(
        interrupt_build(tmp.path(), libc::SIGTERM, &store_tmp, &archive),
        Some(143)
    );
    common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "--compression", "none"])
        .arg("--spec")
        .arg(tmp.path().join("ctx/lade.toml"))
        .assert()
        .success();

    // A layout directory that did not exist: none is left, nor its temp directory.
    let parent = tmp.path().join("outputs");
    fs::create_dir_all(&parent).unwrap();
    let new = parent.join("new-layout");
    let code = interrupt_build(
        tmp.path(),
        libc::SIGINT,
        &parent,
        &format!("type=oci-layout,dest={}", new.display()),
    );
    assert_eq!(code, Some(130));
    let left: Vec<_> = fs::read_dir(&parent).unwrap().collect();
    assert!(left.is_empty(), "left beside the new layout: {left:?}");

    // An existing layout: its index.json is the old one and no temp file is left in it.
    let code = interrupt_build(
        tmp.path(),
        libc::SIGTERM,
        &old.join("blobs/sha256"),
        &format!("type=oci-layout,dest={}", old.display()),
    );
    assert_eq!(code, Some(143));
    assert_eq!(fs::read(old.join("index.json")).unwrap(), old_index);
    for d in [old.clone(), old.join("blobs/sha256")] {
        assert_eq!(dot_entries(&d), Vec::<String>::new(), "temp files in {d:?}");
    }
    assert_eq!(
        fs::read_dir(&store_tmp).unwrap().count(),
        0,
        "store temp left"
    );

    // Uninterrupted, the same build makes the new layout whole.
    common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "--compression", "none"])
        .arg("--spec")
        .arg(tmp.path().join("ctx/lade.toml"))
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", new.display()))
        .assert()
        .success();
    assert!(new.join("index.json").is_file() && new.join("oci-layout").is_file());
    assert_eq!(dot_entries(&parent), Vec::<String>::new());
}

/// A Spring Boot-style jar with a 4 MiB stored (uncompressed) library, so reading it shows.
fn jar_with_big_library(path: &Path, class: &[u8]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    let stored = deflated.compression_method(zip::CompressionMethod::Stored);
    let mut lib = vec![0u8; 4 << 20];
    let mut x: u64 = 1;
    for b in lib.iter_mut() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        *b = (x >> 56) as u8;
    }
    let files: [(&str, &[u8], _); 5] = [
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\nMain-Class: org.springframework.boot.loader.launch.JarLauncher\r\n\r\n", deflated),
        ("org/springframework/boot/loader/launch/JarLauncher.class", b"loader", deflated),
        ("BOOT-INF/classes/com/example/App.class", class, deflated),
        ("BOOT-INF/classes/application.properties", b"x=1\n", deflated),
        ("BOOT-INF/lib/big-1.0.jar", &lib, stored),
    ];
    for (name, content, opts) in files {
        z.start_file(name, opts).unwrap();
        z.write_all(content).unwrap();
    }
    z.finish().unwrap();
}

/// Bytes the traced command read from files whose path ends with `suffix`, from the
/// per-thread logs `strace -ff -y -o PREFIX` wrote (one per thread, so no call is split
/// into "unfinished" and "resumed" lines).
fn bytes_read_from(cmd: &mut Command, suffix: &str, prefix: &Path) -> u64 {
    let out = common::output(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let needle = format!("{suffix}>,");
    let stem = prefix.file_name().unwrap().to_string_lossy().into_owned() + ".";
    let mut total = 0;
    for e in fs::read_dir(prefix.parent().unwrap()).unwrap() {
        let e = e.unwrap();
        if !e.file_name().to_string_lossy().starts_with(&stem) {
            continue;
        }
        total += fs::read_to_string(e.path())
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.rsplit_once(") = ")?.1.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[test]
fn a_no_op_rebuild_of_a_jar_spec_does_not_read_the_jar() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("app");
    fs::create_dir_all(ctx.join("target")).unwrap();
    write(
        &ctx.join("lade.toml"),
        "[image]\nplatform = \"linux/amd64\"\n[java]\njar = \"target/app.jar\"\n",
    );
    jar_with_big_library(&ctx.join("target/app.jar"), b"v1");
    let cache = tmp.path().join("cache");
    let traced = |name: &str| -> (u64, String) {
        let log = tmp.path().join("traces").join(name);
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        let stderr = tmp.path().join(format!("{name}.stderr"));
        let mut cmd = Command::new("strace");
        cmd.args([
            "-ff",
            "-y",
            "-s",
            "0",
            "-e",
            "trace=read,pread64,readv,preadv",
        ])
        .arg("-o")
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_lade"))
        .args(["build", "--progress", "plain", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(&cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .stderr(fs::File::create(&stderr).unwrap());
        let n = bytes_read_from(&mut cmd, "app.jar", &log);
        (n, fs::read_to_string(&stderr).unwrap())
    };
    let (cold, first) = traced("cold");
    assert!(
        cold >= 4 << 20,
        "the first build reads the jar ({cold} bytes)\n{first}"
    );
    let (noop, again) = traced("noop");
    // dependencies, spring-boot-loader, resources, classes
    assert_eq!(again.matches(": cached").count(), 4, "{again}");
    // What is left is the frontend's look at the central directory and the manifest.
    assert!(
        noop < 64 << 10,
        "a no-op rebuild read {noop} bytes of the jar"
    );

    // Layers written from members keyed by the cache (read only now) have the same bytes.
    let digests = |log: &str| -> Vec<String> {
        let mut d: Vec<String> = log
            .lines()
            .filter_map(|l| Some(l.split_once(": done ")?.1.to_string()))
            .collect();
        d.sort();
        d
    };
    let rewritten = common::lade(&cache)
        .args(["build", "--progress", "plain", "--no-cache", "--spec"])
        .arg(ctx.join("lade.toml"))
        .output()
        .unwrap();
    assert!(rewritten.status.success());
    let rewritten = String::from_utf8_lossy(&rewritten.stderr).into_owned();
    assert_eq!(digests(&rewritten).len(), 4, "{rewritten}");
    assert_eq!(digests(&rewritten), digests(&first));

    // A changed class: the jar is read again and only the classes layer is rebuilt.
    jar_with_big_library(&ctx.join("target/app.jar"), b"v2, changed");
    let (_, changed) = traced("changed");
    assert!(changed.contains("layer classes: done"), "{changed}");
    assert_eq!(changed.matches(": cached").count(), 3, "{changed}");
}
