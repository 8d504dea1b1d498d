//! Smoke tests of the test infrastructure: the services `cargo xtask test` starts (they fail, not
//! skip, when run without them) and the offline OCI schema validator.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::{docker, ok, require_services, schema_errors, skopeo, validate_with_schemas};
use serde_json::json;

/// A name unique to this test process, for images in the shared dockerd and registries.
fn unique(name: &str) -> String {
    format!("lade-infra-{name}-{}", std::process::id())
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn registry_answers_v2() {
    let s = require_services();
    let resp = http_get(&s.registry, "/v2/");
    assert!(resp.starts_with("HTTP/1.1 200"), "GET /v2/: {resp}");
    assert!(resp.contains("registry/2.0"), "GET /v2/: {resp}");
}

/// The TLS registry presents a certificate for 127.0.0.1 signed by the test CA and wants the
/// test credentials (checked with Python's TLS stack, independent of Go's).
#[test]
fn tls_registry_wants_ca_and_credentials() {
    let s = require_services();
    let script = r#"
import base64, ssl, sys, urllib.error, urllib.request
addr, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
def status(auth):
    req = urllib.request.Request(f"https://{addr}/v2/")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
print(status(None), status(user + ":" + pw), status(user + ":wrong"))
"#;
    let out = ok(common::output(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&s.tls_registry)
            .arg(&s.tls_ca)
            .arg(&s.tls_user)
            .arg(&s.tls_password),
    ));
    assert_eq!(out.trim(), "401 200 401");
}

#[test]
fn docker_version_answers() {
    require_services();
    let out = ok(docker(&["version", "--format", "{{.Server.Version}}"]));
    assert!(!out.trim().is_empty(), "no server version");
}

#[test]
fn busybox_image_runs_without_network() {
    require_services();
    let image = format!("{}:1", unique("busybox"));
    common::docker_import_busybox(&image);
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "/bin/sh",
        "-c",
        "echo hi",
    ]);
    let _ = docker(&["rmi", "-f", &image]);
    assert_eq!(ok(out), "hi\n");
}

/// An image goes from dockerd to both registries with skopeo (plain: no TLS; TLS: the test CA
/// and credentials), and comes back with the same manifest digest.
#[test]
fn skopeo_pushes_to_both_registries() {
    let s = require_services();
    let image = format!("{}:1", unique("skopeo"));
    common::docker_import_busybox(&image);
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("busybox.tar");
    ok(docker(&["save", "-o", archive.to_str().unwrap(), &image]));
    let _ = docker(&["rmi", "-f", &image]);
    let src = format!("docker-archive:{}", archive.display());
    let repo = unique("skopeo");

    let plain = format!("docker://{}/{repo}:1", s.registry);
    ok(skopeo(&["copy", "--dest-tls-verify=false", &src, &plain]));
    let inspect = ok(skopeo(&["inspect", "--tls-verify=false", "--raw", &plain]));
    let manifest: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);

    let tls = format!("docker://{}/{repo}:1", s.tls_registry);
    let creds = format!("{}:{}", s.tls_user, s.tls_password);
    let cert_dir = s.tls_cert_dir.to_str().unwrap();
    let no_creds = skopeo(&["copy", "--dest-cert-dir", cert_dir, &src, &tls]);
    assert!(
        !no_creds.status.success(),
        "push without credentials succeeded"
    );
    ok(skopeo(&[
        "copy",
        "--dest-cert-dir",
        cert_dir,
        "--dest-creds",
        &creds,
        &src,
        &tls,
    ]));
    let digest = |args: &[&str]| ok(skopeo(args)).trim().to_string();
    let d_plain = digest(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &plain,
    ]);
    let d_tls = digest(&[
        "inspect",
        "--cert-dir",
        cert_dir,
        "--creds",
        &creds,
        "--format",
        "{{.Digest}}",
        &tls,
    ]);
    assert_eq!(d_plain, d_tls);
}

#[test]
fn reference_tools_are_installed() {
    ok(skopeo(&["--version"]));
    ok(common::umoci(&["--version"]));
    assert!(
        std::path::Path::new("/bin/busybox").exists(),
        "/bin/busybox missing (busybox-static)"
    );
}

fn valid_manifest() -> serde_json::Value {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
            "size": 32,
            "annotations": { "org.opencontainers.image.title": "x" }
        }],
        "annotations": { "org.example": "y" }
    })
}

#[test]
fn schema_validator_accepts_a_valid_manifest() {
    validate_with_schemas(&valid_manifest(), "manifest");
    validate_with_schemas(&valid_manifest(), "image-manifest-schema.json");
}

#[test]
fn schema_validator_rejects_invalid_manifests() {
    let mut m = valid_manifest();
    m["schemaVersion"] = json!(1);
    assert!(!schema_errors(&m, "manifest").is_empty(), "schemaVersion 1");

    let mut m = valid_manifest();
    m["config"]["digest"] = json!("not a digest");
    assert!(!schema_errors(&m, "manifest").is_empty(), "bad digest");

    let mut m = valid_manifest();
    m["layers"][0]["size"] = json!(-1);
    assert!(!schema_errors(&m, "manifest").is_empty(), "negative size");

    let mut m = valid_manifest();
    m["layers"][0]["annotations"] = json!({ "k": 1 });
    assert!(
        !schema_errors(&m, "manifest").is_empty(),
        "annotation value"
    );

    let mut m = valid_manifest();
    m.as_object_mut().unwrap().remove("config");
    assert!(!schema_errors(&m, "manifest").is_empty(), "no config");
}

#[test]
fn schema_validator_knows_index_config_and_layout() {
    validate_with_schemas(
        &json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
                "size": 7,
                "platform": { "architecture": "amd64", "os": "linux" }
            }]
        }),
        "index",
    );
    validate_with_schemas(
        &json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": ["A=b"], "Labels": { "k": "v" } },
            "rootfs": { "type": "layers", "diff_ids": [] }
        }),
        "config",
    );
    validate_with_schemas(&json!({ "imageLayoutVersion": "1.0.0" }), "layout");
    assert!(!schema_errors(&json!({ "os": "linux" }), "config").is_empty());
    assert!(!schema_errors(&json!({}), "layout").is_empty());
}
