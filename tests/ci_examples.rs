//! The README's CI examples, run as far as they go without the CI service: their shell steps,
//! taken from the README as written, run with bash against the TLS + basic-auth test registry
//! (standing in for ghcr.io / the GitLab registry), with the CI's variables and secrets set the
//! way the CI would set them. Checks what each example promises: the image is pushed, and the
//! digest (and metadata) reach the CI's step outputs / dotenv report.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fenced block after `<!-- ci-example: NAME -->` in README.md.
fn example(name: &str) -> String {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let marker = format!("<!-- ci-example: {name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} in README"))..];
    let start = after.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = after[start..].find("```").unwrap();
    after[start..start + end].to_string()
}

/// The lines indented deeper than `line` that follow it (a YAML block's body), unindented by
/// the body's own indentation.
fn block_after(lines: &[&str], i: usize) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let own = indent(lines[i]);
    let body: Vec<&str> = lines[i + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > own)
        .copied()
        .collect();
    let cut = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(cut..).unwrap_or("").to_string())
        .collect()
}

/// A small project with a Dockerfile, the CI's checkout.
fn checkout(dir: &Path) -> PathBuf {
    let repo = dir.join("checkout");
    fs::create_dir_all(&repo).unwrap();
    fs::write(repo.join("app.txt"), "built in CI\n").unwrap();
    fs::write(repo.join("Dockerfile"), "FROM scratch\nCOPY app.txt /\n").unwrap();
    repo
}

/// bash running `script` in `cwd` with lade on PATH, a fresh docker config, the test
/// registry's CA trusted (as a runner trusts ghcr.io's), and `env`.
fn bash(script: &str, cwd: &Path, tmp: &Path, env: &[(&str, String)]) {
    let s = common::require_services();
    let lade_dir = Path::new(env!("CARGO_BIN_EXE_lade")).parent().unwrap();
    let path = std::env::join_paths(
        [lade_dir.to_path_buf()]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", script])
        .current_dir(cwd)
        .env("PATH", path)
        .env("DOCKER_CONFIG", tmp.join("docker-config"))
        .env("LADE_CACHE_DIR", tmp.join("cache"))
        .env("SSL_CERT_FILE", &s.tls_ca)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::ok(common::output(&mut cmd));
}

/// The manifest digest the registry serves for `image`.
fn pushed_digest(image: &str) -> String {
    let s = common::require_services();
    let out = common::ok(common::skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        s.tls_cert_dir.to_str().unwrap(),
        "--creds",
        &format!("{}:{}", s.tls_user, s.tls_password),
        &format!("docker://{image}"),
    ]));
    format!(
        "sha256:{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(out.as_bytes())
    )
}

#[test]
fn the_github_actions_example_pushes_and_sets_step_outputs() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let repo = checkout(tmp.path());
    let yaml = example("github");
    let lines: Vec<&str> = yaml.lines().collect();
    // Every `run:` step: the steps without one (checkout) are the CI's own.
    let runs: Vec<(usize, Vec<String>)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("run: |"))
        .map(|(i, _)| (i, block_after(&lines, i)))
        .collect();
    assert!(!runs.is_empty());
    let (build_at, build) = runs
        .iter()
        .find(|(_, r)| r.iter().any(|l| l.contains("lade build")))
        .expect("a step runs lade build");
    let script = build.join("\n");
    // Secrets and contexts come in through `env:` only, never spliced into the script.
    assert!(!script.contains("${{"), "{script}");
    // The step's `env:` names, set as the CI would from its secrets and contexts.
    let env_at = lines[..*build_at]
        .iter()
        .rposition(|l| l.trim() == "env:")
        .unwrap();
    let names: Vec<String> = block_after(&lines, env_at)
        .iter()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_string()))
        .collect();
    assert_eq!(
        names,
        ["REGISTRY", "REGISTRY_USER", "REGISTRY_PASSWORD", "IMAGE"]
    );
    let image = format!("{}/lade-test/ci-github:0123abc", s.tls_registry);
    let output = tmp.path().join("github_output");
    bash(
        &script,
        &repo,
        tmp.path(),
        &[
            ("REGISTRY", s.tls_registry.clone()),
            ("REGISTRY_USER", s.tls_user.clone()),
            ("REGISTRY_PASSWORD", s.tls_password.clone()),
            ("IMAGE", image.clone()),
            ("GITHUB_OUTPUT", output.display().to_string()),
        ],
    );
    let outputs = fs::read_to_string(&output).unwrap();
    let digest = pushed_digest(&image);
    assert!(
        outputs.starts_with(&format!("digest={digest}\nmetadata<<EOF\n")),
        "{outputs}"
    );
    let metadata = outputs
        .split_once("metadata<<EOF\n")
        .unwrap()
        .1
        .strip_suffix("EOF\n")
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_str(metadata).unwrap();
    assert_eq!(metadata["lade.pushed"][0].as_str(), Some(image.as_str()));
}

#[test]
fn the_gitlab_ci_example_pushes_and_reports_the_digest() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let repo = checkout(tmp.path());
    let yaml = example("gitlab");
    let lines: Vec<&str> = yaml.lines().collect();
    let at = |key: &str| lines.iter().position(|l| l.trim() == key).unwrap();
    // `variables:` become exports, expanded by the shell as GitLab expands them.
    let mut script: Vec<String> = block_after(&lines, at("variables:"))
        .iter()
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            format!("export {}={}", k.trim(), v.trim())
        })
        .collect();
    script.extend(
        block_after(&lines, at("script:"))
            .iter()
            .map(|l| l.strip_prefix("- ").expect("a script item").to_string()),
    );
    let registry_image = format!("{}/lade-test/ci-gitlab", s.tls_registry);
    bash(
        &script.join("\n"),
        &repo,
        tmp.path(),
        &[
            ("CI_REGISTRY", s.tls_registry.clone()),
            ("CI_REGISTRY_USER", s.tls_user.clone()),
            ("CI_REGISTRY_PASSWORD", s.tls_password.clone()),
            ("CI_REGISTRY_IMAGE", registry_image.clone()),
            ("CI_COMMIT_SHORT_SHA", "0123abcd".into()),
        ],
    );
    let digest = pushed_digest(&format!("{registry_image}:0123abcd"));
    assert_eq!(
        fs::read_to_string(repo.join("build.env")).unwrap(),
        format!("IMAGE_DIGEST={digest}\n")
    );
    // The metadata artifact the job keeps.
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(repo.join("image.json")).unwrap()).unwrap();
    assert!(meta["lade.pushed"].is_array(), "{meta}");
}
