//! `lade login` and where a push finds credentials (docker's config.json with base64 `auth`,
//! `credHelpers` / `credsStore` helpers on PATH, `$REGISTRY_AUTH_FILE`), against the TLS +
//! htpasswd registry `cargo xtask test` starts. Passwords never appear in the output.

mod common;

use base64::Engine as _;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

/// An OCI archive of a one-file image, built with lade.
fn small_archive(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(ctx.join("files")).unwrap();
    fs::write(ctx.join("files/hello.txt"), "hello\n").unwrap();
    fs::write(
        ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"files\"\nfrom = \"files\"\ninto = \"/\"\n",
    )
    .unwrap();
    let archive = dir.join("small.tar");
    common::lade(&dir.join("cache"))
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .assert()
        .success();
    archive
}

/// `lade` with an isolated credential environment: `DOCKER_CONFIG` = `docker_config`, no
/// other auth file.
fn lade_with(dir: &Path, docker_config: &Path) -> assert_cmd::Command {
    let mut c = common::lade(&dir.join("cache"));
    c.env("DOCKER_CONFIG", docker_config)
        .env("HOME", dir.join("home"))
        .env("XDG_RUNTIME_DIR", dir.join("runtime"))
        .env_remove("REGISTRY_AUTH_FILE");
    c
}

fn output_text(a: &assert_cmd::assert::Assert) -> String {
    let o = a.get_output();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn push(cmd: &mut assert_cmd::Command, archive: &Path, s: &common::Services, repo: &str) {
    cmd.arg("push")
        .arg(archive)
        .arg(format!(
            "{}/lade-test/{repo}-{}:1",
            s.tls_registry,
            std::process::id()
        ))
        .arg("--registry-ca")
        .arg(&s.tls_ca);
}

#[test]
fn login_writes_docker_config_and_a_push_uses_it() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let archive = small_archive(tmp.path());
    let cfg = tmp.path().join("docker");

    // Wrong password: exit 1, one clear line, the password nowhere, nothing written.
    let wrong = "not-the-password-9f3";
    let a = lade_with(tmp.path(), &cfg)
        .args([
            "login",
            &s.tls_registry,
            "-u",
            &s.tls_user,
            "--password-stdin",
        ])
        .arg("--registry-ca")
        .arg(&s.tls_ca)
        .write_stdin(format!("{wrong}\n"))
        .assert()
        .failure()
        .code(1);
    let text = output_text(&a);
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("wrong username or password"), "{text}");
    assert!(text.contains(&s.tls_registry), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!cfg.join("config.json").exists());

    // Without credentials a push is refused, clearly.
    let mut cmd = lade_with(tmp.path(), &cfg);
    push(&mut cmd, &archive, &s, "login");
    let text = output_text(&cmd.assert().failure().code(1));
    assert!(text.contains("lade login"), "{text}");

    // Right password: config.json like docker's (base64 user:password in `auth`).
    let a = lade_with(tmp.path(), &cfg)
        .args([
            "login",
            &s.tls_registry,
            "-u",
            &s.tls_user,
            "--password-stdin",
        ])
        .arg("--registry-ca")
        .arg(&s.tls_ca)
        .write_stdin(format!("{}\n", s.tls_password))
        .assert()
        .success();
    let text = output_text(&a);
    assert!(text.contains("Login Succeeded"), "{text}");
    assert!(!text.contains(&s.tls_password), "{text}");
    let doc: Value = serde_json::from_slice(&fs::read(cfg.join("config.json")).unwrap()).unwrap();
    let auth = doc["auths"][&s.tls_registry]["auth"].as_str().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        format!("{}:{}", s.tls_user, s.tls_password)
    );

    // A push now authenticates with them; the password is not printed.
    let mut cmd = lade_with(tmp.path(), &cfg);
    push(&mut cmd, &archive, &s, "login");
    let text = output_text(&cmd.assert().success());
    assert!(text.contains("pushed"), "{text}");
    assert!(!text.contains(&s.tls_password), "{text}");
}

#[test]
fn credential_helpers_and_registry_auth_file_supply_push_credentials() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let archive = small_archive(tmp.path());

    // A docker-credential helper on PATH that logs what it is asked.
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = tmp.path().join("helper.log");
    let helper = bin.join("docker-credential-ladetest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> '{}'\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{}\",\"Secret\":\"{}\"}}' \"$server\"\n",
            log.display(),
            s.tls_user,
            s.tls_password
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    for (i, config) in [
        serde_json::json!({"credHelpers": {s.tls_registry.clone(): "ladetest"}}),
        serde_json::json!({"credsStore": "ladetest"}),
    ]
    .iter()
    .enumerate()
    {
        let cfg = tmp.path().join(format!("docker-{i}"));
        fs::create_dir_all(&cfg).unwrap();
        fs::write(cfg.join("config.json"), config.to_string()).unwrap();
        let _ = fs::remove_file(&log);
        let mut cmd = lade_with(tmp.path(), &cfg);
        cmd.env("PATH", &path);
        push(&mut cmd, &archive, &s, "helper");
        let text = output_text(&cmd.assert().success());
        assert!(!text.contains(&s.tls_password), "{text}");
        let asked = fs::read_to_string(&log).unwrap();
        assert!(
            asked
                .lines()
                .any(|l| l == format!("get {}", s.tls_registry)),
            "{config}: {asked}"
        );
    }

    // $REGISTRY_AUTH_FILE (podman's auth.json) wins over an empty docker config.
    let auth_file = tmp.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", s.tls_user, s.tls_password));
    fs::write(
        &auth_file,
        serde_json::json!({"auths": {s.tls_registry.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let empty = tmp.path().join("empty-docker");
    fs::create_dir_all(&empty).unwrap();
    let mut cmd = lade_with(tmp.path(), &empty);
    cmd.env("REGISTRY_AUTH_FILE", &auth_file);
    push(&mut cmd, &archive, &s, "authfile");
    cmd.assert().success();
}
