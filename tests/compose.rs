//! `lade compose build` on compose files as users write them: the Flask + redis shape, a
//! project whose services build on each other's images (parallel waves, pushed to the test
//! registry and checked with skopeo), build secrets (never stored) and errors naming the
//! file, service and key.

mod common;

use serde_json::Value;
use std::fs;
use std::path::Path;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// `lade compose build` in `dir` with its store in `dir/cache` and `extra` arguments.
fn compose_build(dir: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut c = common::lade(&dir.join("cache"));
    c.current_dir(dir)
        .args(["compose", "build", "--progress", "plain"])
        .args(extra)
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("TAG")
        .env_remove("REGISTRY");
    c
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn flask_web_and_redis_build_the_one_image_tagged_as_image_says() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flask-shop");
    // The shape of docker's "Try Compose" getting-started app.
    write(
        &dir.join("app.py"),
        "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef hello():\n    return 'Hello World!'\n",
    );
    write(&dir.join("requirements.txt"), "flask\nredis\n");
    write(&dir.join(".dockerignore"), "cache\n.env\n");
    write(
        &dir.join("Dockerfile"),
        "FROM scratch\nWORKDIR /code\nENV FLASK_APP=app.py\nENV FLASK_RUN_HOST=0.0.0.0\nCOPY requirements.txt requirements.txt\nEXPOSE 5000\nCOPY . .\nCMD [\"flask\", \"run\"]\n",
    );
    write(&dir.join(".env"), "TAG=2.1\n");
    write(
        &dir.join("compose.yaml"),
        "services:\n  web:\n    build: .\n    image: \"shop/web:${TAG:-latest}\"\n    ports:\n      - \"8000:5000\"\n  redis:\n    image: \"redis:alpine\"\n",
    );
    // Outside the context: `COPY . .` would take it in.
    let meta = tmp.path().join("meta.json");
    let o = compose_build(&dir, &["--metadata-file", meta.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let services: Vec<&String> = doc.as_object().unwrap().keys().collect();
    assert_eq!(services, vec!["web"], "only web has a build section");
    assert_eq!(doc["web"]["image.name"], "shop/web:2.1");
    assert!(doc["web"]["containerimage.digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // The same image as `lade build` makes of the same context and tag.
    let out = tmp.path().join("web.tar");
    common::lade(&dir.join("cache"))
        .args(["build", "--progress", "quiet", "-t", "shop/web:2.1", "-o"])
        .arg(format!("type=oci,dest={}", out.display()))
        .arg("--digest-file")
        .arg(tmp.path().join("digest"))
        .arg(&dir)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(tmp.path().join("digest")).unwrap(),
        doc["web"]["containerimage.digest"].as_str().unwrap()
    );
}

/// base ← app, and other: `base` and `other` are independent, `app` FROMs base's image.
fn three_services(dir: &Path, registry: &str) {
    write(
        &dir.join("base/Dockerfile"),
        "FROM scratch\nCOPY base.txt /etc/base.txt\n",
    );
    write(&dir.join("base/base.txt"), "base\n");
    write(
        &dir.join("app/Dockerfile"),
        "ARG REGISTRY\nFROM ${REGISTRY}/lade-test/compose-base:1\nCOPY app.txt /app.txt\n",
    );
    write(&dir.join("app/app.txt"), "app\n");
    write(&dir.join("other/other.txt"), "other\n");
    write(&dir.join(".env"), &format!("REGISTRY={registry}\n"));
    write(
        &dir.join("compose.yaml"),
        r#"name: three
services:
  app:
    build:
      context: app
      args:
        REGISTRY: ${REGISTRY}
    image: ${REGISTRY}/lade-test/compose-app:1
  base:
    build: ./base
    image: ${REGISTRY}/lade-test/compose-base:1
  other:
    build:
      context: other
      dockerfile_inline: |
        FROM scratch
        COPY other.txt /other.txt
      labels:
        com.example.tier: other
    image: ${REGISTRY:?REGISTRY must name the registry}/lade-test/compose-other:1
"#,
    );
}

fn line_of(log: &str, line: &str) -> usize {
    log.lines()
        .position(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{log}"))
}

#[test]
fn dependent_service_waits_for_the_image_it_builds_on_and_all_are_pushed() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("three");
    three_services(&dir, &s.registry);
    let meta = dir.join("meta.json");
    let o = compose_build(&dir, &["--push", "--metadata-file", meta.to_str().unwrap()])
        .output()
        .unwrap();
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");

    // base and other start together; app starts once base's image exists.
    let base_start = line_of(&log, "service base: building");
    let other_start = line_of(&log, "service other: building");
    let base_done = line_of(&log, "service base: built");
    let other_done = line_of(&log, "service other: built");
    let app_start = line_of(&log, "service app: building");
    assert!(base_start < base_done && base_start < other_done, "{log}");
    assert!(other_start < base_done && other_start < other_done, "{log}");
    assert!(app_start > base_done && app_start > other_done, "{log}");
    // Each service's progress carries its name.
    assert!(
        line_of(&log, "layer app: COPY app.txt") > app_start,
        "{log}"
    );
    assert!(
        line_of(&log, "layer other: COPY other.txt") > other_start,
        "{log}"
    );

    let doc: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let inspect = |name: &str| -> Value {
        let out = common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/lade-test/compose-{name}:1", s.registry),
        ]));
        serde_json::from_str(&out).unwrap()
    };
    let mut layers = std::collections::BTreeMap::new();
    for name in ["base", "app", "other"] {
        let out = common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/lade-test/compose-{name}:1", s.registry),
        ]));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], doc[name]["containerimage.digest"], "{name}");
        layers.insert(name, inspect(name)["layers"].clone());
    }
    // app is base's layer plus its own.
    let app = layers["app"].as_array().unwrap();
    assert_eq!(app.len(), 2);
    assert_eq!(app[0], layers["base"][0]);
}

#[test]
fn errors_name_the_compose_file_service_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    write(&dir.join("Dockerfile"), "FROM scratch\n");
    write(
        &dir.join("compose.yaml"),
        "services:\n  web:\n    build:\n      context: .\n      dockerfiel: Dockerfile.dev\n",
    );
    let o = compose_build(&dir, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: compose.yaml: services.web.build.dockerfiel: unknown key of the Compose \
         Specification's build section\n"
    );

    write(
        &dir.join("compose.yaml"),
        "services:\n  web:\n    build: .\n    image: \"web:${TAG:?set TAG to the release}\"\n",
    );
    let o = compose_build(&dir, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: compose.yaml: services.web.image: required variable TAG is missing a value: \
         set TAG to the release\n"
    );

    let o = compose_build(&dir, &["db"])
        .env("TAG", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "error: compose.yaml: no such service: db\n");

    // A build error: the file, service, then the Dockerfile's own location.
    write(
        &dir.join("Dockerfile"),
        "FROM scratch\nCOPY missing.txt /\n",
    );
    let o = compose_build(&dir, &[]).env("TAG", "1").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("error: compose.yaml: services.web: build failed: ")
            && err.contains("Dockerfile:2:")
            && err.contains("missing.txt"),
        "{err}"
    );
}

#[test]
fn build_secrets_reach_the_run_step_and_nothing_stored() {
    const VALUE: &str = "s3cr3t-compose-Value";
    const ENV_VALUE: &str = "env-s3cr3t-Value";
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    common::busybox_rootfs(&root);
    let base = common::layout_from_rootfs_dir(&root, tmp.path(), &[]);
    let dir = tmp.path().join("sec");
    write(&dir.join("secrets/token.txt"), VALUE);
    // The step checks the values by their digests: the Dockerfile (and the image's history)
    // never holds them.
    write(
        &dir.join("api/Dockerfile"),
        &format!(
            "FROM {base}
RUN --mount=type=secret,id=tok test \"$(busybox sha256sum < /run/secrets/tok)\" = \"{}  -\" \\
 && busybox sed 's/./&-/g' /run/secrets/tok > /seen
RUN --mount=type=secret,id=github,env=GH test \"$(echo -n \"$GH\" | busybox sha256sum)\" = \"{}  -\"
",
            sha256_hex(VALUE),
            sha256_hex(ENV_VALUE)
        ),
    );
    write(
        &dir.join("compose.yaml"),
        "secrets:\n  tok:\n    file: ./secrets/token.txt\n  gh:\n    environment: LADE_TEST_GH\n\
         services:\n  api:\n    build:\n      context: api\n      secrets:\n        - tok\n\
         \x20       - source: gh\n          target: github\n",
    );
    let meta = dir.join("meta.json");
    let o = compose_build(&dir, &["--metadata-file", meta.to_str().unwrap()])
        .env("LADE_TEST_GH", ENV_VALUE)
        .output()
        .unwrap();
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    let dashed: String = VALUE.chars().map(|c| format!("{c}-")).collect();
    // The extracted layer of the first RUN shows the step read the file secret.
    assert!(
        !common::files_containing(&dir.join("cache"), &dashed).is_empty(),
        "the step's output is in the store"
    );
    for v in [VALUE, ENV_VALUE] {
        assert!(!log.contains(v), "{log}");
        assert!(!fs::read_to_string(&meta).unwrap().contains(v));
        assert_eq!(
            common::files_containing(&dir.join("cache"), v),
            Vec::<String>::new()
        );
    }

    // Without the variable's value the step's check fails: the secret is what it reads.
    let o = compose_build(&dir, &["--no-cache"])
        .env("LADE_TEST_GH", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("compose.yaml: services.api: build failed"),
        "{}",
        stderr(&o)
    );

    // An ssh entry that is no agent socket: named with the file, service and key.
    write(
        &dir.join("compose.yaml"),
        "services:\n  api:\n    build:\n      context: api\n      ssh:\n        - work=secrets/token.txt\n",
    );
    let o = compose_build(&dir, &[]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("\nerror: compose.yaml: services.api.build.ssh: --ssh work=")
            && err.contains("is not an agent socket"),
        "{err}"
    );
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
