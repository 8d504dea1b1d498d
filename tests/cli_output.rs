//! Where `lade build` puts what it built, without services: the note of a build with no
//! output, `-q` (only the image ID on stdout), and the filesystem exports `-o DIR`,
//! `-o type=local,dest=DIR`, `-o type=tar,dest=FILE|-` (BuildKit's local and tar exporters,
//! one `linux_amd64`-style subdirectory per platform), including layers whose links point
//! outside the destination.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A context whose Dockerfile has two stages: a "build" stage and a final stage holding only
/// the artifact (and a symlink pointing outside it).
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(ctx.join("src/sub")).unwrap();
    fs::write(ctx.join("src/app.txt"), "artifact\n").unwrap();
    fs::write(ctx.join("src/sub/data"), "data\n").unwrap();
    fs::write(ctx.join("junk"), "junk\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("src/abs-link")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS build\nCOPY src /out\nCOPY junk /out/junk\n\
         FROM scratch\nCOPY --from=build /out /dist\n",
    )
    .unwrap();
    ctx
}

fn lade(tmp: &Path) -> assert_cmd::Command {
    common::lade(&tmp.join("cache"))
}

/// `find`-style listing of `dir`: relative paths, `/` after directories, `-> target` after
/// symlinks, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        let ft = e.file_type();
        out.push(if ft.is_dir() {
            format!("{rel}/")
        } else if ft.is_symlink() {
            format!("{rel} -> {}", fs::read_link(e.path()).unwrap().display())
        } else {
            rel
        });
    }
    out
}

#[test]
fn a_build_without_output_says_where_the_image_is() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let out = lade(tmp.path())
        .args(["build", "--progress", "plain"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let note = stderr
        .lines()
        .last()
        .unwrap()
        .replace(&tmp.path().join("cache").display().to_string(), "[STORE]");
    insta::assert_snapshot!(note);
    // Any output (here a file) makes the note go away.
    let out = lade(tmp.path())
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!(
            "type=oci,dest={}",
            tmp.path().join("i.tar").display()
        ))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8(out.stderr).unwrap().contains("no output"));
}

#[test]
fn quiet_prints_only_the_image_id() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let archive = tmp.path().join("image.tar");
    let out = lade(tmp.path())
        .args(["build", "-q", "-o"])
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // docker's image ID: the config digest, as the docker archive names it.
    let manifest: serde_json::Value =
        serde_json::from_slice(&common::tar_member(&archive, "manifest.json")).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap();
    assert_eq!(
        stdout,
        format!("sha256:{}\n", config.trim_start_matches("blobs/sha256/"))
    );
    // -q and an output on stdout cannot share it.
    let out = lade(tmp.path())
        .args(["build", "-q", "-o", "-"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn local_output_is_the_target_stage_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let expected = [
        "dist/",
        "dist/abs-link -> /etc/passwd",
        "dist/app.txt",
        "dist/junk",
        "dist/sub/",
        "dist/sub/data",
    ];
    // `-o DIR` and `-o type=local,dest=DIR` are the same exporter.
    for (i, spec) in ["{}", "type=local,dest={}"].iter().enumerate() {
        let dest = tmp.path().join(format!("out{i}"));
        lade(tmp.path())
            .args(["build", "--progress", "quiet", "-o"])
            .arg(spec.replace("{}", &dest.display().to_string()))
            .arg(&ctx)
            .assert()
            .success();
        assert_eq!(listing(&dest), expected);
        assert_eq!(fs::read(dest.join("dist/app.txt")).unwrap(), b"artifact\n");
    }
    // Into an existing directory: what the image has replaces what had its name, the rest
    // stays (BuildKit's local exporter).
    let dest = tmp.path().join("out0");
    fs::write(dest.join("keep"), "mine").unwrap();
    fs::write(dest.join("dist/stale"), "old").unwrap();
    lade(tmp.path())
        .args(["build", "--progress", "quiet", "-o"])
        .arg(&dest)
        .arg(&ctx)
        .assert()
        .success();
    let mut with_keep: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    with_keep.push("keep".into());
    assert_eq!(listing(&dest), with_keep);
    // No staging directory is left beside the destination.
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".lade"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn tar_output_holds_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let file = tmp.path().join("fs.tar");
    lade(tmp.path())
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!("type=tar,dest={}", file.display()))
        .arg(&ctx)
        .assert()
        .success();
    let list = |tar: &Path| {
        common::ok(common::output(
            Command::new("tar").env("TZ", "UTC").arg("-tvf").arg(tar),
        ))
    };
    let from_file = list(&file);
    insta::assert_snapshot!(from_file.replace(&whoami(), "[USER]"));
    // `-o -`: the same archive on standard output.
    let out = lade(tmp.path())
        .args(["build", "--progress", "quiet", "-o", "-"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(&file).unwrap());
}

/// The uid/gid the exported files get: the extracting user's (see README, filesystem outputs).
fn whoami() -> String {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    format!("{uid}/{gid}")
}

#[test]
fn several_platforms_export_one_directory_each() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let dest = tmp.path().join("out");
    lade(tmp.path())
        .args(["build", "--progress", "quiet", "--platform"])
        .arg("linux/amd64,linux/arm/v7")
        .arg("-o")
        .arg(&dest)
        .arg(&ctx)
        .assert()
        .success();
    let top: Vec<String> = listing(&dest)
        .into_iter()
        .filter(|l| !l.trim_end_matches('/').contains('/'))
        .collect();
    assert_eq!(top, ["linux_amd64/", "linux_arm_v7/"]);
    assert_eq!(
        fs::read(dest.join("linux_arm_v7/dist/sub/data")).unwrap(),
        b"data\n"
    );
}

#[test]
fn exported_links_cannot_reach_outside_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // A base whose layer makes `escape` a symlink out of the root (absolute and relative) and
    // then writes through it; a second layer writes through the link again.
    let up = "../".repeat(12) + outside.strip_prefix("/").unwrap().to_str().unwrap();
    let layer1 = common::raw_tar(&[
        common::raw_member(
            b"abs",
            b'2',
            outside.to_str().unwrap().as_bytes(),
            b"",
            0o777,
        ),
        common::raw_member(b"rel", b'2', up.as_bytes(), b"", 0o777),
        common::raw_member(b"abs/pwned", b'0', b"", b"x", 0o644),
    ]);
    let layer2 = common::raw_tar(&[common::raw_member(b"rel/pwned2", b'0', b"", b"y", 0o644)]);
    let layout = common::oci_layout(&tmp.path().join("base"), &[layer1, layer2]);
    let ctx = tmp.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM oci:{}:1\n", layout.display()),
    )
    .unwrap();
    for spec in ["dir", "fs.tar"] {
        let dest = tmp.path().join(spec);
        let arg = if spec.ends_with(".tar") {
            format!("type=tar,dest={}", dest.display())
        } else {
            dest.display().to_string()
        };
        let out = lade(tmp.path())
            .args([
                "build",
                "--progress",
                "quiet",
                "--platform",
                "linux/amd64",
                "-o",
            ])
            .arg(arg)
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "the export wrote outside its destination"
        );
    }
    // The links resolve inside the destination: the files are under its own copy of the path.
    let dir = tmp.path().join("dir");
    let inside = dir.join(outside.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inside.join("pwned")).unwrap(), b"x");
    assert_eq!(fs::read(inside.join("pwned2")).unwrap(), b"y");
    assert_eq!(fs::read_link(dir.join("abs")).unwrap(), outside);
    // The destination is a plain directory the user can read.
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o700,
        0o700
    );
}

/// A rebuild whose archive file still holds what it would write leaves the file alone (same
/// inode, same mtime), as `make` does; a file changed in place, even to the same size, is
/// written again, and so is one whose image changed.
#[test]
fn an_unchanged_image_archive_is_not_written_again() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    for kind in ["oci", "docker"] {
        let dest = tmp.path().join(format!("{kind}.tar"));
        let build = |tag: &str| {
            lade(tmp.path())
                .args(["build", "--progress", "plain", "-t", tag, "-o"])
                .arg(format!("type={kind},dest={}", dest.display()))
                .arg(&ctx)
                .assert()
                .success();
        };
        let stamp = || {
            let m = fs::metadata(&dest).unwrap();
            (
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        };
        build("app:1");
        let first = fs::read(&dest).unwrap();
        let written = stamp();
        build("app:1");
        assert_eq!(
            stamp(),
            written,
            "{kind}: an up-to-date archive was rewritten"
        );

        let mut changed = first.clone();
        let at = changed.len() / 2;
        changed[at] ^= 0xff;
        fs::OpenOptions::new()
            .write(true)
            .open(&dest)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &changed))
            .unwrap();
        build("app:1");
        assert!(
            fs::read(&dest).unwrap() == first,
            "{kind}: a damaged archive was kept"
        );

        build("app:2");
        let retagged = fs::read(&dest).unwrap();
        assert!(retagged != first, "{kind}: another tag, the same archive");
        build("app:1");
        assert!(fs::read(&dest).unwrap() == first, "{kind}");
    }
}
