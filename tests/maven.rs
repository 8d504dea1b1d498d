//! `lade build --maven` on `testdata/maven-app` (a reactor: `app` with a resource and
//! commons-lang3, and the SNAPSHOT module `greeting`), built by `mvn package` offline against
//! Debian's `/usr/share/maven-repo`: Jib's layer split, one changed class changes one layer,
//! the image runs on the JRE base in the test dockerd, a second checkout gives the same digest,
//! the README's pom hook builds the image in `mvn package`, and errors name the pom and module.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of testdata/maven-app at `dir` (Maven writes `target/` beside the sources).
fn checkout(dir: &Path) -> PathBuf {
    copy_dir(&common::testdata("maven-app"), dir);
    dir.to_path_buf()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "target" {
            continue;
        }
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// `mvn -q package` in `dir` (offline: the project's .mvn/maven.config) with `extra`
/// arguments and lade on PATH (for the hook).
fn mvn_package(dir: &Path, cache: &Path, extra: &[&str]) {
    let lade_dir = Path::new(env!("CARGO_BIN_EXE_lade")).parent().unwrap();
    let path = format!(
        "{}:{}",
        lade_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = common::output(
        Command::new("mvn")
            .current_dir(dir)
            .args(["-q", "-B", "package"])
            .args(extra)
            .env("PATH", path)
            .env("LADE_CACHE_DIR", cache)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("MAVEN_OPTS"),
    );
    assert!(
        out.status.success(),
        "mvn package failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `lade build --maven DIR --module app` on the JRE base into the OCI archive `out`, with
/// `extra` arguments; returns the manifest digest (from target/lade-image.digest).
fn lade_maven(dir: &Path, cache: &Path, out: &Path, extra: &[&str]) -> String {
    let o = common::lade(cache)
        .args(["build", "--progress", "plain", "--maven"])
        .arg(dir)
        .args(["--module", "app", "--base", &common::require_jre(), "-o"])
        .arg(format!("type=oci,dest={}", out.display()))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "lade build --maven failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_to_string(dir.join("app/target/lade-image.digest")).unwrap()
}

/// The layers lade added (those after the JRE base's one): (created_by, files without
/// directories, digest).
fn app_layers(archive: &Path) -> Vec<(String, Vec<String>, String)> {
    let m = common::archive_manifest(archive);
    let config = common::archive_json(
        archive,
        &common::blob_path(m["config"]["digest"].as_str().unwrap()),
    );
    let history: Vec<String> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(history.len(), layers.len());
    layers
        .iter()
        .zip(history)
        .skip(1)
        .map(|(l, h)| {
            let digest = l["digest"].as_str().unwrap().to_string();
            let files = common::layer_listing(archive, &digest, &[])
                .lines()
                .filter(|p| !p.ends_with('/'))
                .map(|p| format!("/{}", p.trim_start_matches("./")))
                .collect();
            (h, files, digest)
        })
        .collect()
}

fn config_of(archive: &Path) -> serde_json::Value {
    let m = common::archive_manifest(archive);
    common::archive_json(
        archive,
        &common::blob_path(m["config"]["digest"].as_str().unwrap()),
    )["config"]
        .clone()
}

#[test]
fn jib_layers_run_on_the_jre_and_one_changed_class_changes_one_layer() {
    common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dir = checkout(&tmp.path().join("checkout-a"));
    mvn_package(&dir, &cache, &[]);
    let a = tmp.path().join("a.tar");
    let docker_tar = tmp.path().join("docker.tar");
    let digest = lade_maven(
        &dir,
        &cache,
        &a,
        &[
            "-t",
            "lade-test/maven-app:1",
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
            "--jvm-flag",
            "-Xss1m",
        ],
    );

    let layers = app_layers(&a);
    let split: Vec<(&str, Vec<&str>)> = layers
        .iter()
        .map(|(h, f, _)| (h.as_str(), f.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        split,
        vec![
            (
                "lade maven dependencies",
                vec!["/app/libs/commons-lang3-3.12.0.jar"]
            ),
            (
                "lade maven project dependencies",
                vec!["/app/libs/greeting-1.0-SNAPSHOT.jar"]
            ),
            ("lade maven resources", vec!["/app/resources/who.txt"]),
            (
                "lade maven classes",
                vec!["/app/classes/com/example/app/Main.class"]
            ),
            (
                "lade maven jvm arg files",
                vec!["/app/jib-classpath-file", "/app/jib-main-class-file"]
            ),
        ]
    );
    let c = config_of(&a);
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!([
            "java",
            "-Xss1m",
            "-cp",
            "@/app/jib-classpath-file",
            "com.example.app.Main"
        ])
    );
    let image_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("app/target/lade-image.json")).unwrap())
            .unwrap();
    assert_eq!(image_json["image"], "lade-test/maven-app:1");
    assert_eq!(image_json["imageDigest"], digest.as_str());
    assert_eq!(image_json["tags"], serde_json::json!(["1"]));
    assert_eq!(image_json["imagePushed"], false);

    // The image runs on the JRE base in the test dockerd.
    let out = common::docker_run_offline(&docker_tar, "lade-test/maven-app:1");
    assert_eq!(out, "Hello, Lade on a JRE!\n============\n");

    // One class changed: only the classes layer changes.
    let main = dir.join("app/src/main/java/com/example/app/Main.java");
    let src = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, src.replace("'=', 12", "'-', 12")).unwrap();
    mvn_package(&dir, &cache, &[]);
    let b = tmp.path().join("b.tar");
    let changed = lade_maven(&dir, &cache, &b, &["--jvm-flag", "-Xss1m"]);
    assert_ne!(changed, digest);
    let after = app_layers(&b);
    let differ: Vec<&str> = layers
        .iter()
        .zip(&after)
        .filter(|(x, y)| x.2 != y.2)
        .map(|(x, _)| x.0.as_str())
        .collect();
    assert_eq!(differ, vec!["lade maven classes"]);
}

#[test]
fn a_second_checkout_gives_the_same_digest_and_lade_toml_the_same_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    let mut dirs = Vec::new();
    for name in ["one", "elsewhere/two"] {
        let dir = checkout(&tmp.path().join(name));
        // Each checkout its own store and its own Maven run (lade runs
        // dependency:build-classpath itself: no class path file yet).
        let cache = tmp.path().join(format!("cache-{}", digests.len()));
        mvn_package(&dir, &cache, &[]);
        let out = tmp.path().join(format!("{}.tar", digests.len()));
        digests.push(lade_maven(&dir, &cache, &out, &[]));
        dirs.push(dir);
    }
    assert_eq!(digests[0], digests[1]);

    // `[java] maven` in a lade.toml: the same Jib layers, after the spec's own.
    let dir = &dirs[0];
    std::fs::create_dir_all(dir.join("extra")).unwrap();
    std::fs::write(dir.join("extra/notice.txt"), "extra\n").unwrap();
    std::fs::write(
        dir.join("lade.toml"),
        format!(
            "[image]\nfrom = {:?}\n\n[[layer]]\nname = \"extra\"\nfrom = \"extra\"\n\
             into = \"/opt/extra\"\n\n[java]\nmaven = \"pom.xml\"\nmodule = \"app\"\n",
            common::require_jre()
        ),
    )
    .unwrap();
    let spec_out = tmp.path().join("spec.tar");
    let o = common::lade(&tmp.path().join("cache-0"))
        .args(["build", "--progress", "plain", "--spec"])
        .arg(dir.join("lade.toml"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", spec_out.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "lade build --spec failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let from_spec = app_layers(&spec_out);
    assert_eq!(from_spec[0].1, ["/opt/extra/notice.txt"]);
    let digests_of = |l: &[(String, Vec<String>, String)]| -> Vec<String> {
        l.iter().map(|x| x.2.clone()).collect()
    };
    assert_eq!(
        digests_of(&from_spec[1..]),
        digests_of(&app_layers(&tmp.path().join("0.tar")))
    );
    assert_eq!(
        config_of(&spec_out)["Entrypoint"],
        serde_json::json!([
            "java",
            "-cp",
            "@/app/jib-classpath-file",
            "com.example.app.Main"
        ])
    );
}

/// The `<!-- maven-hook -->` block of README.md.
fn readme_hook() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = &readme[readme.find("<!-- maven-hook -->").expect("hook in README")..];
    let start = after.find("```xml\n").unwrap() + "```xml\n".len();
    let end = after[start..].find("```").unwrap();
    after[start..start + end].to_string()
}

#[test]
fn the_readme_hook_builds_the_image_in_mvn_package() {
    let jre = common::require_jre();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dir = checkout(&tmp.path().join("checkout"));
    let pom = dir.join("app/pom.xml");
    let text = std::fs::read_to_string(&pom).unwrap();
    assert!(text.contains("<!-- lade hook -->"));
    std::fs::write(&pom, text.replace("<!-- lade hook -->", &readme_hook())).unwrap();
    mvn_package(&dir, &cache, &[&format!("-Dlade.base={jre}")]);

    let target = dir.join("app/target");
    let digest = std::fs::read_to_string(target.join("lade-image.digest")).unwrap();
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("lade-image.json")).unwrap()).unwrap();
    assert_eq!(doc["image"], "app:1.0-SNAPSHOT");
    assert_eq!(doc["imageDigest"], digest.as_str());
    assert!(doc["imageId"].as_str().unwrap().starts_with("sha256:"));
    let archive = target.join("lade-image.tar");
    let index = common::archive_json(&archive, "index.json");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    // In the reactor build the sibling is its jar: a project dependency, as with Jib.
    let layers = app_layers(&archive);
    assert!(layers
        .iter()
        .any(|(h, f, _)| h == "lade maven project dependencies"
            && f == &["/app/libs/greeting-1.0-SNAPSHOT.jar"]));
}

#[test]
fn errors_name_the_pom_and_the_module() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let o = common::lade(&cache)
        .args(["build", "--maven"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("no pom.xml in {}", tmp.path().display())),
        "{err}"
    );

    let dir = checkout(&tmp.path().join("checkout"));
    let o = common::lade(&cache)
        .args(["build", "--maven"])
        .arg(&dir)
        .args(["--module", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--module \"nope\": no such module in")
            && err.contains("pom.xml (modules: greeting, app)"),
        "{err}"
    );

    // Not built yet: the class path is had, but the module has no classes.
    let o = common::lade(&cache)
        .args(["build", "--maven"])
        .arg(&dir)
        .args(["--module", "greeting"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("greeting/pom.xml: no main class"), "{err}");
}
