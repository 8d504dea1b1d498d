//! `lade login` and where a push finds credentials (docker's config.json with base64 `auth`,
//! `credHelpers` / `credsStore` helpers on PATH, `$REGISTRY_AUTH_FILE`, podman's `auth.json`
//! files), against the TLS +
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
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("REGISTRY_AUTH_FILE");
    c
}

/// `lade login` to the TLS registry as the test user, the password on stdin (`stdin`).
fn login_tls(dir: &Path, cfg: &Path, s: &common::Services, stdin: &str) -> assert_cmd::Command {
    let mut c = lade_with(dir, cfg);
    c.args([
        "login",
        &s.tls_registry,
        "-u",
        &s.tls_user,
        "--password-stdin",
    ])
    .arg("--registry-ca")
    .arg(&s.tls_ca)
    .write_stdin(stdin.to_string());
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
    let a = login_tls(tmp.path(), &cfg, &s, &format!("{wrong}\n"))
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
    let a = login_tls(tmp.path(), &cfg, &s, &format!("{}\n", s.tls_password))
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

#[test]
fn podman_auth_files_are_searched_in_containers_auth_json_order() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let archive = small_archive(tmp.path());
    let auths = |password: &str| {
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", s.tls_user));
        serde_json::json!({"auths": {s.tls_registry.clone(): {"auth": auth}}}).to_string()
    };
    let (right, wrong) = (auths(&s.tls_password), auths("stale-password-0"));
    let docker = tmp.path().join("docker");
    let runtime = tmp.path().join("runtime/containers/auth.json");
    let xdg = tmp.path().join("xdg");
    let xdg_file = xdg.join("containers/auth.json");
    let home_file = tmp.path().join("home/.config/containers/auth.json");
    let files = [&docker.join("config.json"), &runtime, &xdg_file, &home_file];
    // Writes the given files (in `files` order; None: absent) and pushes.
    let push_with = |contents: [Option<&str>; 4], with_xdg: bool| {
        for (f, c) in files.iter().zip(contents) {
            let _ = fs::remove_file(f);
            if let Some(c) = c {
                fs::create_dir_all(f.parent().unwrap()).unwrap();
                fs::write(f, c).unwrap();
            }
        }
        fs::create_dir_all(&docker).unwrap();
        let mut cmd = lade_with(tmp.path(), &docker);
        if with_xdg {
            cmd.env("XDG_CONFIG_HOME", &xdg);
        }
        push(&mut cmd, &archive, &s, "podman");
        let a = cmd.assert();
        let ok = a.get_output().status.success();
        let text = output_text(&a);
        assert!(!text.contains(&s.tls_password), "{text}");
        (ok, text)
    };
    let (r, w) = (Some(right.as_str()), Some(wrong.as_str()));
    // Each podman file alone supplies credentials.
    assert!(
        push_with([None, r, None, None], true).0,
        "runtime auth.json"
    );
    assert!(push_with([None, None, r, None], true).0, "$XDG_CONFIG_HOME");
    assert!(push_with([None, None, None, r], false).0, "~/.config");
    // With XDG_CONFIG_HOME set, ~/.config/containers is not read.
    let (ok, text) = push_with([None, None, None, r], true);
    assert!(!ok && text.contains("lade login"), "{text}");
    // The primary (runtime) file is read before the XDG one...
    let (ok, text) = push_with([None, w, r, None], true);
    assert!(!ok && text.contains("wrong username or password"), "{text}");
    assert!(push_with([None, r, w, None], true).0);
    // ...and docker's config.json, which `lade login` writes, before both.
    assert!(push_with([r, w, w, None], true).0);
    let (ok, text) = push_with([w, r, r, None], true);
    assert!(!ok && text.contains("wrong username or password"), "{text}");
}
