//! `lade build` flags from `docker buildx build`'s surface that shape the image: `--annotation`
//! (buildx's `manifest:`, `index:`, `manifest-descriptor:` and `[platform]` forms) and
//! `--build-context NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG]`.

mod common;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn lade(tmp: &Path) -> assert_cmd::Command {
    common::lade(&tmp.join("cache"))
}

fn small_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a"), "a\n").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    ctx
}

/// A blob of an OCI archive, as JSON.
fn blob(archive: &Path, digest: &str) -> Value {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::from_slice(&common::tar_member(archive, &format!("blobs/sha256/{hex}"))).unwrap()
}

/// The document `index.json` of an OCI archive points to (a manifest or an index).
fn top(archive: &Path) -> Value {
    let index: Value = serde_json::from_slice(&common::tar_member(archive, "index.json")).unwrap();
    blob(archive, index["manifests"][0]["digest"].as_str().unwrap())
}

#[test]
fn annotations_go_on_the_manifest_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = small_context(tmp.path());
    let archive = tmp.path().join("i.tar");
    lade(tmp.path())
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .args([
            "--annotation",
            "org.opencontainers.image.source=https://git.example/a.git",
            "--annotation",
            "manifest:org.opencontainers.image.title=a",
        ])
        .arg(&ctx)
        .assert()
        .success();
    let manifest = top(&archive);
    assert_eq!(
        manifest["annotations"],
        serde_json::json!({
            "org.opencontainers.image.source": "https://git.example/a.git",
            "org.opencontainers.image.title": "a",
        })
    );
    common::validate_with_schemas(&manifest, "image-manifest-schema.json");
    // A single platform's image has no index for index annotations: the build fails, as
    // BuildKit's does, and writes nothing.
    let out = lade(tmp.path())
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!(
            "type=oci,dest={}",
            tmp.path().join("no.tar").display()
        ))
        .args(["--annotation", "index:k=v"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("need an index"), "{err}");
    assert!(!tmp.path().join("no.tar").exists());
}

#[test]
fn annotations_reach_the_index_its_descriptors_and_one_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = small_context(tmp.path());
    let archive = tmp.path().join("i.tar");
    lade(tmp.path())
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .args(["--platform", "linux/amd64,linux/arm64"])
        .args([
            "--annotation",
            "index,manifest:org.opencontainers.image.vendor=lade",
            "--annotation",
            "manifest[linux/arm64]:only=arm64",
            "--annotation",
            "manifest-descriptor:desc=yes",
        ])
        .arg(&ctx)
        .assert()
        .success();
    let index = top(&archive);
    common::validate_with_schemas(&index, "image-index-schema.json");
    assert_eq!(
        index["annotations"],
        serde_json::json!({"org.opencontainers.image.vendor": "lade"})
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    for d in manifests {
        assert_eq!(d["annotations"], serde_json::json!({"desc": "yes"}));
        let m = blob(&archive, d["digest"].as_str().unwrap());
        let mut expected = serde_json::json!({"org.opencontainers.image.vendor": "lade"});
        if d["platform"]["architecture"] == "arm64" {
            expected["only"] = "arm64".into();
        }
        assert_eq!(m["annotations"], expected, "{}", d["platform"]);
    }
}
