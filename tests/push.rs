//! `lade build --push`, `lade push`, `lade pull` against the real registry `cargo xtask test`
//! starts, checked with skopeo and a `docker pull` + `docker run` from the test dockerd.

mod common;

use serde_json::Value;
use std::fs;
use std::path::Path;

fn hello_context(dir: &Path) -> std::path::PathBuf {
    let ctx = dir.join("hello");
    fs::create_dir_all(ctx.join("rootfs/usr/share/hello")).unwrap();
    common::busybox_rootfs(&ctx.join("rootfs"));
    fs::write(
        ctx.join("rootfs/usr/share/hello/hello.sh"),
        "echo pushed and pulled\n",
    )
    .unwrap();
    fs::write(ctx.join("lade.toml"), "[image]\nentrypoint = [\"/bin/sh\", \"/usr/share/hello/hello.sh\"]\n[[layer]]\nname = \"rootfs\"\nfrom = \"rootfs\"\ninto = \"/\"\n").unwrap();
    ctx
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

#[test]
fn build_push_inspect_pull_and_run() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let image = format!("{}/lade-test/hello:1", s.registry);
    let meta = tmp.path().join("meta.json");
    let first = common::lade(&cache)
        .args(["build", "--progress", "plain", "--push", "--spec"])
        .arg(ctx.join("lade.toml"))
        .args(["-t", &image, "--metadata-file"])
        .arg(&meta)
        .assert()
        .success();
    assert!(
        stderr_of(&first).contains("pushed"),
        "{}",
        stderr_of(&first)
    );
    let digest = serde_json::from_slice::<Value>(&fs::read(&meta).unwrap()).unwrap()
        ["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();

    let inspect = common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], digest.as_str());

    // A second push finds every blob already there.
    let again = common::lade(&cache)
        .args(["build", "--progress", "plain", "--push", "--spec"])
        .arg(ctx.join("lade.toml"))
        .args(["-t", &image])
        .assert()
        .success();
    assert!(
        stderr_of(&again).contains("0 bytes uploaded"),
        "{}",
        stderr_of(&again)
    );

    let pull = common::docker(&["pull", &image]);
    assert!(
        pull.status.success(),
        "docker pull: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let run = common::docker(&["run", "--rm", "--network", "none", &image]);
    assert!(
        run.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "pushed and pulled"
    );
    common::docker(&["rmi", "-f", &image]);

    // lade pull into a layout, then a Dockerfile build on top of the registry image.
    let layout = tmp.path().join("pulled");
    common::lade(&tmp.path().join("cache2"))
        .args(["pull", &image, "-o"])
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .assert()
        .success();
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    let df = tmp.path().join("df");
    fs::create_dir_all(&df).unwrap();
    fs::write(df.join("extra.txt"), "extra\n").unwrap();
    fs::write(
        df.join("Dockerfile"),
        format!("FROM {image}\nCOPY extra.txt /extra.txt\n"),
    )
    .unwrap();
    let derived = format!("{}/lade-test/derived:1", s.registry);
    let out = common::lade(&cache)
        .args(["build", "--progress", "plain", "--push", "-t", &derived])
        .arg(&df)
        .assert()
        .success();
    let text = stderr_of(&out);
    assert!(text.contains("pushed"), "{text}");
}

#[test]
fn push_an_archive_and_report_unreachable_registries() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("hello.tar");
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .assert()
        .success();
    let dest = format!("{}/lade-test/archive:2", s.registry);
    let digest_file = tmp.path().join("digest");
    common::lade(&cache)
        .args(["push"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(&dest)
        .arg("--digest-file")
        .arg(&digest_file)
        .assert()
        .success();
    let inspect = common::skopeo(&["inspect", "--tls-verify=false", &format!("docker://{dest}")]);
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        v["Digest"].as_str().unwrap(),
        fs::read_to_string(&digest_file).unwrap()
    );

    // Nothing listens on port 1: a one-line error and exit code 1.
    let fail = common::lade(&cache)
        .args(["push"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg("127.0.0.1:1/x/y:1")
        .assert()
        .failure()
        .code(1);
    let err = stderr_of(&fail);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
