//! Base images whose config does not describe their layers: a `diff_ids` entry that is not
//! the sha256 of the uncompressed layer, or a `diff_ids` list longer than the manifest's
//! layers. lade refuses them wherever it reads them (`COPY --from`, a `FROM` + `COPY`
//! build that lists the base's tree, `lade pull`), naming the image and the layer, instead
//! of building on them and passing the inconsistency on (umoci then refuses the output with
//! "diffid mismatch").

mod common;
mod registry_support;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", lade::digest::Digest::of(bytes).hex());
    fs::write(blob_path(layout, &digest), bytes).unwrap();
    digest
}

/// A one-layer base (`/a.txt`) in an OCI layout, tag `1`. Returns the layout and its layer
/// digest.
fn base_layout(tmp: &Path) -> (PathBuf, String) {
    let ctx = tmp.join("base-ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a.txt"), "from the base\n").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\n").unwrap();
    let layout = tmp.join("base");
    common::build_context(
        &ctx,
        tmp,
        &format!("type=oci-layout,dest={}", layout.display()),
        &["-t", "base:1"],
    );
    let (_, manifest) = manifest_of(&layout);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    (layout, layer)
}

fn manifest_of(layout: &Path) -> (Value, Value) {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let d = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = serde_json::from_slice(&fs::read(blob_path(layout, d)).unwrap()).unwrap();
    (index, manifest)
}

/// Rewrites the config of the layout's image with `edit`, and the manifest and index to
/// match, so every digest in the layout is right and only the config lies.
fn tamper(layout: &Path, edit: impl Fn(&mut Value)) {
    let (mut index, mut manifest) = manifest_of(layout);
    let cd = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: Value =
        serde_json::from_slice(&fs::read(blob_path(layout, &cd)).unwrap()).unwrap();
    edit(&mut config);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = write_blob(layout, &config_bytes).into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = write_blob(layout, &manifest_bytes).into();
    index["manifests"][0]["size"] = manifest_bytes.len().into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

fn lying_diff_id(config: &mut Value) {
    config["rootfs"]["diff_ids"][0] = format!(
        "sha256:{}",
        lade::digest::Digest::of(b"not this layer").hex()
    )
    .into();
}

fn extra_diff_id(config: &mut Value) {
    let first = config["rootfs"]["diff_ids"][0].clone();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(first);
}

/// Builds `dockerfile` (its context holds `b.txt`) with a fresh store; returns stderr after
/// checking the build failed with exit 1.
fn refused(tmp: &Path, name: &str, dockerfile: &str) -> String {
    let ctx = tmp.join(name);
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("b.txt"), "b\n").unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = tmp.join(format!("{name}.tar"));
    let a = common::lade(&tmp.join(format!("{name}-cache")))
        .args(["build", "--progress", "quiet", "--output"])
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(&ctx)
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .failure()
        .code(1);
    assert!(!out.exists(), "{name}: an output was written");
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

#[test]
fn a_lying_diff_id_in_a_layout_base_is_refused_by_copy_from_and_from() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, layer) = base_layout(tmp.path());
    tamper(&layout, lying_diff_id);
    let image = format!("oci:{}:1", layout.display());
    for (name, dockerfile) in [
        (
            "copy-from",
            format!("FROM scratch\nCOPY --from={image} /a.txt /a.txt\n"),
        ),
        ("from-copy", format!("FROM {image}\nCOPY b.txt /b.txt\n")),
    ] {
        let err = refused(tmp.path(), name, &dockerfile);
        for w in [image.as_str(), layer.as_str(), "does not match its config"] {
            assert!(err.contains(w), "{name}: {w:?} not in {err}");
        }
    }
}

#[test]
fn a_diff_id_count_mismatch_is_refused_for_every_base_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = base_layout(tmp.path());
    tamper(&layout, extra_diff_id);
    // The same layout as an OCI archive.
    let archive = tmp.path().join("base.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    // And in a registry (lade push does not look inside what it pushes).
    let reg = registry_support::TestRegistry::open();
    let reference = format!("{}/lade-test/diff-count-{}:1", reg.addr, std::process::id());
    common::lade(&tmp.path().join("push-cache"))
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&reference)
        .assert()
        .success();
    for (name, image) in [
        ("layout", format!("oci:{}:1", layout.display())),
        ("archive", format!("oci-archive:{}", archive.display())),
        ("registry", reference.clone()),
    ] {
        // No layer is read here: the count is checked when the base is loaded.
        let err = refused(tmp.path(), name, &format!("FROM {image}\nLABEL x=y\n"));
        assert!(
            err.contains("lists 2 diff_ids for 1 layers"),
            "{name}: {err}"
        );
        assert!(err.contains(&image), "{name}: {err}");
    }
    // A lade.toml build on the registry base, whose layers it never downloads (only the
    // count can be checked there).
    let app = tmp.path().join("app");
    fs::create_dir_all(app.join("conf")).unwrap();
    fs::write(app.join("conf/app.conf"), "x = 1\n").unwrap();
    fs::write(
        app.join("lade.toml"),
        format!(
            "[image]\nfrom = \"{reference}\"\n[[layer]]\nname = \"conf\"\nfrom = \"conf\"\n\
             into = \"/etc/app\"\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("toml.tar");
    let a = common::lade(&tmp.path().join("toml-cache"))
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(app.join("lade.toml"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", out.display()))
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr);
    assert!(err.contains("lists 2 diff_ids for 1 layers"), "{err}");
    assert!(err.contains(&reference), "{err}");
    assert!(!out.exists());
    let a = common::lade(&tmp.path().join("pull-cache"))
        .args(["pull", &reference])
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr);
    assert!(err.contains("lists 2 diff_ids for 1 layers"), "{err}");
}

#[test]
fn a_lying_diff_id_in_a_registry_base_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, layer) = base_layout(tmp.path());
    tamper(&layout, lying_diff_id);
    let reg = registry_support::TestRegistry::open();
    let reference = format!("{}/lade-test/diff-liar-{}:1", reg.addr, std::process::id());
    common::lade(&tmp.path().join("push-cache"))
        .arg("push")
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&reference)
        .assert()
        .success();
    for (name, dockerfile) in [
        (
            "copy-from",
            format!("FROM scratch\nCOPY --from={reference} /a.txt /a.txt\n"),
        ),
        (
            "from-copy",
            format!("FROM {reference}\nCOPY b.txt /b.txt\n"),
        ),
    ] {
        let err = refused(tmp.path(), name, &dockerfile);
        for w in [
            reference.as_str(),
            layer.as_str(),
            "does not match its config",
        ] {
            assert!(err.contains(w), "{name}: {w:?} not in {err}");
        }
    }
}
