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

/// A base image in an OCI layout (tag `1`) holding `/base.txt`.
fn base_layout(tmp: &Path) -> PathBuf {
    let ctx = tmp.join("base-ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("base.txt"), "from the base\n").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY base.txt /\n").unwrap();
    let layout = tmp.join("base-layout");
    lade(tmp)
        .args(["build", "--progress", "quiet", "-t", "base:1", "-o"])
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .arg(&ctx)
        .assert()
        .success();
    layout
}

/// Builds `dockerfile` (with a context holding `a`) into a local directory with `extra`
/// flags; returns the directory, or lade's stderr on failure.
fn export(tmp: &Path, dockerfile: &str, extra: &[String]) -> Result<PathBuf, String> {
    let ctx = small_context(tmp);
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = tmp.join(format!("out-{}", dockerfile.len() + extra.len()));
    let o = lade(tmp)
        .args(["build", "--progress", "quiet", "-o"])
        .arg(&out)
        .args(extra)
        .arg(&ctx)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8(o.stderr).unwrap())
    }
}

#[test]
fn a_directory_context_serves_copy_from_and_wins_over_a_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("assets");
    fs::create_dir_all(dir.join("css")).unwrap();
    fs::write(dir.join("css/site.css"), "body{}\n").unwrap();
    fs::write(dir.join("secret.key"), "no\n").unwrap();
    fs::write(dir.join(".dockerignore"), "*.key\n").unwrap();
    // `assets` is also a stage of the file: the named context is what COPY reads (BuildKit).
    let out = export(
        tmp.path(),
        "FROM scratch AS assets\nCOPY a /stage-file\n\
         FROM scratch\nCOPY a /a\nCOPY --from=assets / /static/\n",
        &[format!("--build-context=Assets={}", dir.display())],
    )
    .unwrap();
    assert_eq!(
        fs::read(out.join("static/css/site.css")).unwrap(),
        b"body{}\n"
    );
    assert!(
        !out.join("static/secret.key").exists(),
        "its .dockerignore applies"
    );
    assert!(!out.join("static/stage-file").exists());
    assert!(out.join("a").exists());
    // FROM needs an image: a directory context is refused at its line.
    let err = export(
        tmp.path(),
        "FROM assets\n",
        &[format!("--build-context=assets={}", dir.display())],
    )
    .unwrap_err();
    assert!(
        err.contains(":1:") && err.contains("is a directory"),
        "{err}"
    );
    // A source missing from the named context names it.
    let err = export(
        tmp.path(),
        "FROM scratch\nCOPY --from=assets /nope /\n",
        &[format!("--build-context=assets={}", dir.display())],
    )
    .unwrap_err();
    assert!(err.contains("in build context assets"), "{err}");
}

#[test]
fn an_oci_layout_context_replaces_the_image_of_from() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = base_layout(tmp.path());
    // `FROM alpine` would go to a registry; the named context points it at the layout.
    let out = export(
        tmp.path(),
        "FROM alpine\nCOPY a /a\nFROM scratch\nCOPY --from=alpine /base.txt /copied.txt\n",
        &[format!(
            "--build-context=alpine=oci-layout://{}:1",
            layout.display()
        )],
    )
    .unwrap();
    assert_eq!(
        fs::read(out.join("copied.txt")).unwrap(),
        b"from the base\n"
    );
    for bad in [
        "alpine",
        "=x",
        "a=https://example.com/repo.git",
        "a=/does/not/exist",
        "a=oci-layout://dir@sha256:00",
    ] {
        let o = lade(tmp.path())
            .args(["build", "--progress", "quiet", "--build-context", bad])
            .arg(tmp.path().join("ctx"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(err.starts_with("error: --build-context"), "{err}");
    }
}

#[test]
fn a_docker_image_context_reads_the_registry() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let layout = base_layout(tmp.path());
    let image = format!("{}/lade-test/named-context:1", s.registry);
    common::ok(common::skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{image}"),
    ]));
    let out = export(
        tmp.path(),
        "FROM base AS b\nFROM scratch\nCOPY --from=b /base.txt /\nCOPY --from=other /base.txt /again.txt\n",
        &[
            format!("--build-context=base=docker-image://{image}"),
            format!("--build-context=other=docker-image://{image}"),
        ],
    )
    .unwrap();
    assert_eq!(fs::read(out.join("base.txt")).unwrap(), b"from the base\n");
    assert_eq!(fs::read(out.join("again.txt")).unwrap(), b"from the base\n");
}
