//! `cargo lade` on `testdata/cargo-app` (glibc-linked, reads the TLS roots of its image): the
//! image from scratch holds exactly the binary's runtime closure, is reproducible, runs in the
//! test dockerd without a network, and is compared in size with the same binary on the Debian
//! minbase.

mod common;

use std::path::{Path, PathBuf};

/// A copy of the test crate under `tmp` (cargo writes `Cargo.lock` beside the manifest).
fn crate_copy(tmp: &Path) -> PathBuf {
    let dir = tmp.join("cargo-app");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    for f in ["Cargo.toml", "src/main.rs"] {
        std::fs::copy(common::testdata(&format!("cargo-app/{f}")), dir.join(f)).unwrap();
    }
    dir
}

/// `cargo lade` (the `cargo-lade` binary as cargo runs it) with its store in `cache`, cargo's
/// target directory in `target`, offline.
fn cargo_lade(cache: &Path, target: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_cargo-lade"));
    c.arg("lade")
        .env_remove("SOURCE_DATE_EPOCH")
        .env("LADE_CACHE_DIR", cache)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_NET_OFFLINE", "true")
        .env_remove("RUSTFLAGS");
    c
}

/// Builds the crate in `dir` into the OCI archive `out` with `extra` arguments; returns the
/// manifest digest.
fn build(dir: &Path, tmp: &Path, cache: &str, out: &Path, extra: &[&str]) -> String {
    let digest_file = tmp.join("digest");
    let a = cargo_lade(&tmp.join(cache), &tmp.join("target"))
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .args(["--progress", "plain", "-o"])
        .arg(format!("type=oci,dest={}", out.display()))
        .arg("--digest-file")
        .arg(&digest_file)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        a.status.success(),
        "cargo lade failed:\n{}",
        String::from_utf8_lossy(&a.stderr)
    );
    std::fs::read_to_string(&digest_file).unwrap()
}

/// Every non-directory path of every layer, sorted, with a leading `/`.
fn files(archive: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for l in common::archive_manifest(archive)["layers"]
        .as_array()
        .unwrap()
    {
        let listing = common::layer_listing(archive, l["digest"].as_str().unwrap(), &[]);
        all.extend(
            listing
                .lines()
                .filter(|p| !p.ends_with('/'))
                .map(|p| format!("/{}", p.trim_start_matches("./"))),
        );
    }
    all.sort();
    all
}

/// Sum of the compressed layer sizes: what a pull downloads.
fn layers_size(archive: &Path) -> u64 {
    common::archive_manifest(archive)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum()
}

/// The loader and libraries a glibc Rust binary needs on this host, as the host resolves them.
fn expected_runtime() -> Vec<String> {
    let interp = "/lib64/ld-linux-x86-64.so.2";
    assert!(
        Path::new(interp).exists(),
        "this test expects an x86_64 glibc host"
    );
    vec![
        "/etc/group".into(),
        "/etc/passwd".into(),
        "/etc/ssl/certs/ca-certificates.crt".into(),
        "/lib/x86_64-linux-gnu/libc.so.6".into(),
        "/lib/x86_64-linux-gnu/libgcc_s.so.1".into(),
        interp.into(),
        "/usr/local/bin/cargo-app".into(),
    ]
}

#[test]
fn image_from_scratch_holds_exactly_the_runtime_closure_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate_copy(tmp.path());
    let a = tmp.path().join("a.tar");
    let first = build(&dir, tmp.path(), "cache-a", &a, &[]);
    assert_eq!(files(&a), expected_runtime());

    let m = common::archive_manifest(&a);
    let config = common::archive_json(
        &a,
        &common::blob_path(m["config"]["digest"].as_str().unwrap()),
    );
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/cargo-app"])
    );
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"));
    assert!(env.contains(&"GREETING=hello from cargo lade"));
    // The runtime below the binary: a rebuild of the binary leaves the first layer alone.
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);

    // The same binary (not rebuilt), another store: the same bytes.
    let b = tmp.path().join("b.tar");
    let second = build(&dir, tmp.path(), "cache-b", &b, &["--no-build"]);
    assert_eq!(first, second);
    eprintln!(
        "cargo lade image: {} bytes of layers ({} files)",
        layers_size(&a),
        files(&a).len()
    );
}

#[test]
fn several_binaries_need_a_choice_and_unknown_metadata_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate_copy(tmp.path());
    std::fs::create_dir_all(dir.join("src/bin")).unwrap();
    std::fs::write(dir.join("src/bin/other.rs"), "fn main() {}\n").unwrap();
    let out = cargo_lade(&tmp.path().join("cache"), &tmp.path().join("target"))
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("several binaries (cargo-app, other)") && err.contains("--bin"),
        "{err}"
    );

    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        toml.replace("certs = true", "cert = true"),
    )
    .unwrap();
    let out = cargo_lade(&tmp.path().join("cache"), &tmp.path().join("target"))
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .args(["--bin", "other"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Cargo.toml: [package.metadata.lade]: unknown field `cert`"),
        "{err}"
    );
}

#[test]
fn image_runs_without_network_as_nonroot_and_is_smaller_than_on_debian() {
    common::require_services();
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate_copy(tmp.path());
    let oci = tmp.path().join("scratch.tar");
    let docker_tar = tmp.path().join("docker.tar");
    build(
        &dir,
        tmp.path(),
        "cache",
        &oci,
        &[
            "-t",
            "lade-test/cargo-app:1",
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
        ],
    );
    let out = common::docker_run_offline(&docker_tar, "lade-test/cargo-app:1");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hello from cargo lade");
    let roots: usize = lines[1]
        .strip_prefix("trusted roots: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(roots > 10, "{out}");
    assert_eq!(lines[2], "uid: 65532");

    // The same binary on the Debian minbase, as [package.metadata.lade] base names it.
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        toml.replace(
            "[package.metadata.lade]\n",
            &format!("[package.metadata.lade]\nbase = {:?}\n", debian.minbase),
        ),
    )
    .unwrap();
    let on_debian = tmp.path().join("debian.tar");
    build(&dir, tmp.path(), "cache", &on_debian, &["--no-build"]);
    let (scratch_size, debian_size) = (layers_size(&oci), layers_size(&on_debian));
    eprintln!(
        "cargo-app image: from scratch {scratch_size} bytes compressed, on the Debian \
         minbase {debian_size} bytes"
    );
    assert!(scratch_size * 5 < debian_size);
}
