//! `lade verify REF`: an image pushed by an earlier build verifies against its description;
//! after one context file changes, the rebuild differs and the report names that file.

mod common;

use std::fs;
use std::path::Path;

fn context(dir: &Path) {
    fs::create_dir_all(dir.join("site")).unwrap();
    fs::write(dir.join("site/index.html"), "<p>one</p>\n").unwrap();
    fs::write(dir.join("site/about.html"), "<p>about</p>\n").unwrap();
    fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY site/ /srv/\nENV SITE=/srv\n",
    )
    .unwrap();
}

#[test]
fn a_pushed_image_verifies_until_a_context_file_changes() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    context(&ctx);
    let image = format!("{}/lade-test/verify:{}", s.registry, std::process::id());
    common::lade(&t.join("cache"))
        .args([
            "build",
            "--progress",
            "quiet",
            "--normalize-modes",
            "--push",
            "-t",
        ])
        .arg(&image)
        .arg(&ctx)
        .assert()
        .success();

    // A fresh store: nothing of the first build is reused.
    let verify = |cache: &str| {
        common::lade(&t.join(cache))
            .args(["verify", "--normalize-modes", &image])
            .arg(&ctx)
            .output()
            .unwrap()
    };
    let o = verify("cache2");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.starts_with(&format!("verified {image}: ")), "{err}");

    fs::write(ctx.join("site/index.html"), "<p>two</p>\n").unwrap();
    let o = common::lade(&t.join("cache2"))
        .args(["verify", "--normalize-modes", &image, "--format", "json"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let paths: Vec<&str> = d["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/srv/index.html"], "{d}");
    assert_eq!(d["files"][0]["fields"], serde_json::json!(["content"]));
    assert_eq!(d["config"], serde_json::json!([]));
}
