//! The text of errors users see (issue 11, defect 9): one clear message naming the file, line
//! and column or the reference, cut to a readable size, each OS error once; exit code 1 and no
//! output written. Snapshots hold the exact text, temp paths replaced by `[TMP]`.

mod common;

use common::lade;
use sha2::{Digest as _, Sha256};
use std::path::Path;

/// Runs `lade build` of `ctx` (a Dockerfile context, or `--spec FILE` in `extra`) into
/// `tmp/out.tar`, expects exit code 1 and no output, and returns stderr with `tmp` as `[TMP]`.
fn failing_build(tmp: &Path, ctx_args: &[&str]) -> String {
    let out = tmp.join("out.tar");
    let o = lade(&tmp.join("cache"))
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!("type=oci,dest={}", out.display()))
        .args(ctx_args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(!out.exists(), "a failed build wrote its output");
    stderr.replace(&tmp.display().to_string(), "[TMP]")
}

fn context(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = tmp.path().join("ctx").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    tmp
}

fn ctx_arg(tmp: &tempfile::TempDir) -> String {
    tmp.path().join("ctx").display().to_string()
}

#[test]
fn a_10_mb_dockerfile_line_is_cut_around_the_column() {
    let df = format!("FROM scratch\nFOO {}\n", "x".repeat(10 << 20));
    let tmp = context(&[("Dockerfile", df.as_bytes())]);
    let err = failing_build(tmp.path(), &[&ctx_arg(&tmp)]);
    assert!(err.len() < 1000, "{} bytes of stderr", err.len());
    insta::assert_snapshot!(err);
}

#[test]
fn long_words_quoted_in_messages_are_clipped() {
    let df = format!("FROM scratch\nCOPY {} /app/\n", "y".repeat(60_000));
    let tmp = context(&[("Dockerfile", df.as_bytes())]);
    let err = failing_build(tmp.path(), &[&ctx_arg(&tmp)]);
    assert!(err.len() < 1000, "{} bytes of stderr", err.len());
    insta::assert_snapshot!(err);
}

#[test]
fn a_deep_lade_toml_array_is_cut_around_the_column() {
    let spec = format!(
        "[image]\nfrom = \"scratch\"\nlabels = {{ a = {}{} }}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let tmp = context(&[("lade.toml", spec.as_bytes())]);
    let spec = tmp.path().join("ctx/lade.toml").display().to_string();
    let err = failing_build(tmp.path(), &["--spec", &spec]);
    assert!(err.len() < 1000, "{} bytes of stderr", err.len());
    insta::assert_snapshot!(err);
}

#[test]
fn an_out_of_range_port_names_the_value_and_the_range() {
    let tmp = context(&[("lade.toml", b"[image]\nports = [8080, 70000]\n")]);
    let spec = tmp.path().join("ctx/lade.toml").display().to_string();
    let err = failing_build(tmp.path(), &["--spec", &spec]);
    insta::assert_snapshot!(err);
}

#[test]
fn an_os_error_is_printed_once() {
    let tmp = context(&[("Dockerfile", b"FROM scratch\nCOPY Dockerfile /\n")]);
    // A symlink loop as the store: creating its directories fails with ELOOP.
    let a = tmp.path().join("a");
    std::os::unix::fs::symlink("b", &a).unwrap();
    std::os::unix::fs::symlink("a", tmp.path().join("b")).unwrap();
    let o = lade(&a)
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!(
            "type=oci,dest={}",
            tmp.path().join("out.tar").display()
        ))
        .arg(ctx_arg(&tmp))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err =
        String::from_utf8_lossy(&o.stderr).replace(&tmp.path().display().to_string(), "[TMP]");
    assert_eq!(err.matches("(os error 40)").count(), 1, "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn a_path_missing_from_a_stage_or_an_image_names_it() {
    let tmp = context(&[
        ("Dockerfile", b"FROM scratch\nCOPY Dockerfile /df\n"),
        (
            "stage/Dockerfile",
            b"FROM scratch AS build\nCOPY Dockerfile /df\n\nFROM scratch\nCOPY --from=build /nope /x\n",
        ),
        (
            "image/Dockerfile",
            b"FROM scratch\n  COPY --from=oci:layout /nope /x\n",
        ),
    ]);
    let ctx = tmp.path().join("ctx");
    common::build_context(
        &ctx,
        tmp.path(),
        &format!(
            "type=oci-layout,dest={}",
            ctx.join("image/layout").display()
        ),
        &[],
    );
    let stage = failing_build(tmp.path(), &[&format!("{}/stage", ctx.display())]);
    let image = failing_build(tmp.path(), &[&format!("{}/image", ctx.display())]);
    insta::assert_snapshot!(format!("{stage}{image}"));
}

/// An OCI layout in `dir` holding one image whose only layer is `layer` (declared gzip).
fn layout_with_layer(dir: &Path, layer: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer_digest, layer_size) = put(layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn errors_reading_a_base_layer_name_the_instruction() {
    // A layer blob that is not gzip: reading it fails while COPY --from extracts the image,
    // and while COPY looks at the stage's filesystem (the base's layers).
    let tmp = context(&[
        (
            "from/Dockerfile",
            b"FROM scratch\nCOPY Dockerfile /df\n\tCOPY --from=oci:../bad /etc /etc\n",
        ),
        (
            "base/Dockerfile",
            b"FROM oci:../bad\nCOPY Dockerfile /etc/df\n",
        ),
    ]);
    let ctx = tmp.path().join("ctx");
    layout_with_layer(&ctx.join("bad"), b"this is not a gzip stream");
    let platform = ["--platform", "linux/amd64"];
    let from = failing_build(
        tmp.path(),
        &[platform[0], platform[1], &format!("{}/from", ctx.display())],
    );
    assert!(
        from.starts_with("error: [TMP]/ctx/from/Dockerfile:3:2: "),
        "{from}"
    );
    assert!(
        from.contains("\n 3 | \tCOPY --from=oci:../bad /etc /etc\n   | \t^"),
        "{from}"
    );
    let base = failing_build(
        tmp.path(),
        &[platform[0], platform[1], &format!("{}/base", ctx.display())],
    );
    assert!(
        base.starts_with("error: [TMP]/ctx/base/Dockerfile:2:1: "),
        "{base}"
    );
    assert!(
        base.contains("\n 2 | COPY Dockerfile /etc/df\n   | ^"),
        "{base}"
    );
}

#[test]
fn a_base_that_cannot_be_loaded_names_the_from_line() {
    let tmp = context(&[(
        "lade.toml",
        b"[image]\nplatform = \"linux/amd64\"\nfrom = \"oci:nope\"\n",
    )]);
    let spec = tmp.path().join("ctx/lade.toml").display().to_string();
    let err = failing_build(tmp.path(), &["--spec", &spec]);
    insta::assert_snapshot!(err);
}
