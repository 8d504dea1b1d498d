//! `lade build --platform A,B`: one image per platform under an OCI index, in archives,
//! layouts and registries; docker archives refuse it clearly.

mod common;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PLATFORMS: &str = "linux/amd64,linux/arm64/v8";

fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nARG TARGETVARIANT\nCOPY hello.txt /\nLABEL arch=$TARGETARCH variant=$TARGETVARIANT\n",
    )
    .unwrap();
    ctx
}

fn json_blob(dir: &Path, digest: &str) -> Value {
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn two_platforms_make_an_index_in_an_oci_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let (out, meta, iid) = (
        tmp.path().join("out.tar"),
        tmp.path().join("meta.json"),
        tmp.path().join("iid"),
    );
    common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "--platform", PLATFORMS])
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg("--metadata-file")
        .arg(&meta)
        .arg("--iidfile")
        .arg(&iid)
        .arg(&ctx)
        .assert()
        .success();
    let listing = Command::new("tar").arg("-tf").arg(&out).output().unwrap();
    let names = String::from_utf8(listing.stdout).unwrap();
    let mut sorted: Vec<&str> = names.lines().collect();
    sorted.sort();
    let before = sorted.len();
    sorted.dedup();
    assert_eq!(sorted.len(), before, "duplicate members: {names}");

    let dir = tmp.path().join("x");
    fs::create_dir_all(&dir).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&out)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let top: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    common::validate_with_schemas(&top, "index");
    let entry = &top["manifests"][0];
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index_digest = entry["digest"].as_str().unwrap();
    let index = json_blob(&dir, index_digest);
    common::validate_with_schemas(&index, "index");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let mut layers = Vec::new();
    for (m, (arch, variant)) in manifests
        .iter()
        .zip([("amd64", None), ("arm64", Some("v8"))])
    {
        assert_eq!(m["platform"]["architecture"], arch);
        assert_eq!(m["platform"]["os"], "linux");
        assert_eq!(m["platform"]["variant"].as_str(), variant);
        let manifest = json_blob(&dir, m["digest"].as_str().unwrap());
        common::validate_with_schemas(&manifest, "manifest");
        let config = json_blob(&dir, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["config"]["Labels"]["arch"], arch);
        assert_eq!(config["config"]["Labels"]["variant"], variant.unwrap_or(""));
        layers.push(manifest["layers"].clone());
    }
    // The same files give the same layer on both platforms, stored once.
    assert_eq!(layers[0], layers[1]);

    let meta: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], index_digest);
    assert_eq!(meta["lade.platforms"].as_array().unwrap().len(), 2);
    assert_eq!(fs::read_to_string(&iid).unwrap(), index_digest);

    // skopeo picks each platform's image out of the archive.
    for (arch, variant) in [("amd64", ""), ("arm64", "v8")] {
        let mut args = vec!["inspect", "--override-os", "linux", "--override-arch", arch];
        if !variant.is_empty() {
            args.extend(["--override-variant", variant]);
        }
        let archive = format!("oci-archive:{}", out.display());
        args.push(&archive);
        let v: Value = serde_json::from_str(&common::ok(common::skopeo(&args))).unwrap();
        assert_eq!(v["Architecture"], arch);
        assert_eq!(v["Labels"]["arch"], arch);
    }
}

#[test]
fn a_docker_archive_refuses_several_platforms_and_platforms_are_not_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let out = tmp.path().join("out.tar");
    let o = common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "--platform", PLATFORMS])
        .arg("--output")
        .arg(format!("type=docker,dest={}", out.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("docker archive holds one image"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        fs::read_dir(tmp.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp"))
            .count(),
        0
    );

    let o = common::lade(&tmp.path().join("cache"))
        .args(["build", "--platform", "linux/amd64,linux/amd64", "--output"])
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("twice"));
}

#[test]
fn two_platforms_push_an_index_and_extend_a_layout() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path());
    let image = format!("{}/lade-test/multi-{}:1", s.registry, std::process::id());
    let (digest_file, layout) = (tmp.path().join("digest"), tmp.path().join("layout"));
    common::lade(&tmp.path().join("cache"))
        .args([
            "build",
            "--progress",
            "quiet",
            "--platform",
            PLATFORMS,
            "--push",
        ])
        .args(["-t", &image, "--digest-file"])
        .arg(&digest_file)
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .arg(&ctx)
        .assert()
        .success();
    let digest = fs::read_to_string(&digest_file).unwrap();
    let raw: Value = serde_json::from_str(&common::ok(common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{image}"),
    ])))
    .unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    let v: Value = serde_json::from_str(&common::ok(common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm64",
        "--override-variant",
        "v8",
        &format!("docker://{image}"),
    ])))
    .unwrap();
    assert_eq!(v["Architecture"], "arm64");
    // The layout's index.json names the same index under the tag.
    let top: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["digest"], digest.as_str());
    assert_eq!(
        top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    let v: Value = serde_json::from_str(&common::ok(common::skopeo(&[
        "inspect",
        "--override-arch",
        "arm64",
        "--override-variant",
        "v8",
        &format!("oci:{}:1", layout.display()),
    ])))
    .unwrap();
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Labels"]["variant"], "v8");
}
