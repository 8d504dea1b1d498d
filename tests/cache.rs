//! The step cache across builds: why a step rebuilt (`--progress plain` and
//! `--metadata-file`). RUN steps need root and crun or runc, as in tests/run.rs.

mod common;
mod registry_support;

use common::{lade, ok, output};
use registry_support::{FaultProxy, TestRegistry};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox base as the OCI layout `tmp/NAME`, with `/marker` holding `marker` (so two
/// markers are two different bases); returns its `FROM` reference.
fn base(tmp: &Path, name: &str, marker: &str) -> String {
    let root = tmp.join(format!("{name}-rootfs"));
    common::busybox_rootfs(&root);
    fs::write(root.join("marker"), marker).unwrap();
    let tar = tmp.join(format!("{name}.tar"));
    ok(output(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-C"])
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    ));
    common::layout_from_rootfs_tar(&tar, "", &tmp.join(name), "1", &tmp.join("base-cache"))
}

/// A context with `Dockerfile` (left out of `COPY .` by `.dockerignore`) and `src/main.rs`.
fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs::write(dir.join(".dockerignore"), "Dockerfile\n").unwrap();
    fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    dir.to_path_buf()
}

/// `lade build --progress plain` into an OCI layout; returns the step log and the metadata
/// file's `lade.steps`. `SOURCE_DATE_EPOCH` is set, so a RUN run again writes the same layer.
#[track_caller]
fn build(cache: &Path, ctx: &Path, out: &Path, extra: &[&str]) -> (String, Vec<Value>) {
    let output = format!("type=oci-layout,dest={}", out.display());
    let mut args = vec!["--output", &output];
    args.extend(extra);
    args.push(ctx.to_str().unwrap());
    build_to(cache, &out.with_extension("meta.json"), &args)
}

/// `lade build --progress plain` with `extra` (its outputs and input among them) and the
/// metadata file `meta`; returns the step log and `lade.steps`.
#[track_caller]
fn build_to(cache: &Path, meta: &Path, extra: &[&str]) -> (String, Vec<Value>) {
    let o = lade(cache)
        .env("SOURCE_DATE_EPOCH", "1")
        .args(["build", "--progress", "plain", "--metadata-file"])
        .arg(meta)
        .args(extra)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "lade build failed:\n{log}");
    let doc: Value = serde_json::from_slice(&fs::read(meta).unwrap()).unwrap();
    (log, doc["lade.steps"].as_array().unwrap().clone())
}

/// The `not cached` lines of a step log, `STEP: REASON` each, sorted.
fn misses(log: &str) -> Vec<String> {
    let mut v: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix("layer "))
        .filter_map(|l| l.split_once(": not cached: "))
        .map(|(step, why)| format!("{step}: {why}"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_rebuilt_step_names_the_input_that_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base1 = base(t, "base1", "one");
    let base2 = base(t, "base2", "two");
    let dockerfile =
        |base: &str| format!("FROM {base}\nARG VERSION=1\nCOPY . /app\nRUN echo $VERSION > /v\n");
    let ctx = context(&t.join("ctx"), &dockerfile(&base1));
    let cache = t.join("cache");
    let out = t.join("out");

    let (log, steps) = build(&cache, &ctx, &out, &[]);
    assert_eq!(
        misses(&log),
        [
            "COPY . /app: no earlier build of this step",
            "RUN echo $VERSION > /v: no earlier build of this step",
        ],
        "{log}"
    );
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps.iter().all(|s| s["cached"] == false), "{steps:?}");
    assert_eq!(steps[0]["reason"], "no earlier build of this step");

    // Same inputs, and a touched but unchanged file: nothing runs.
    let (log, steps) = build(&cache, &ctx, &out, &[]);
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");
    assert!(steps.iter().all(|s| s["cached"] == true), "{steps:?}");
    assert!(steps.iter().all(|s| s.get("reason").is_none()), "{steps:?}");
    ok(output(
        Command::new("touch")
            .args(["-d", "2001-01-01"])
            .arg(ctx.join("src/main.rs")),
    ));
    let (log, _) = build(&cache, &ctx, &out, &[]);
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");

    // A file's content.
    fs::write(ctx.join("src/main.rs"), "fn main() { println!() }\n").unwrap();
    let (log, steps) = build(&cache, &ctx, &out, &[]);
    assert_eq!(
        misses(&log),
        [
            "COPY . /app: app/src/main.rs changed (content)",
            "RUN echo $VERSION > /v: COPY . /app: app/src/main.rs changed (content)",
        ],
        "{log}"
    );
    let copy = steps.iter().find(|s| s["step"] == "COPY . /app").unwrap();
    assert_eq!(copy["cached"], false);
    assert_eq!(copy["reason"], "app/src/main.rs changed (content)");

    // A build arg: only the RUN.
    let (log, steps) = build(&cache, &ctx, &out, &["--build-arg", "VERSION=2"]);
    assert_eq!(
        misses(&log),
        ["RUN echo $VERSION > /v: ARG VERSION changed"],
        "{log}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s["step"] == "COPY . /app" && s["cached"] == true),
        "{steps:?}"
    );

    // The base image: the COPY's content is the same (its key does not chain), the RUN runs
    // on another filesystem.
    fs::write(ctx.join("Dockerfile"), dockerfile(&base2)).unwrap();
    let (log, _) = build(&cache, &ctx, &out, &["--build-arg", "VERSION=2"]);
    let m = misses(&log);
    assert_eq!(m.len(), 1, "{log}");
    assert!(
        m[0].starts_with(&format!(
            "RUN echo $VERSION > /v: base image {base2} (top layer sha256:"
        )) && m[0].ends_with(") changed"),
        "{log}"
    );

    // A flag of the step itself.
    fs::write(
        ctx.join("Dockerfile"),
        dockerfile(&base2).replace("COPY .", "COPY --chmod=600 ."),
    )
    .unwrap();
    let (log, _) = build(&cache, &ctx, &out, &["--build-arg", "VERSION=2"]);
    assert_eq!(
        misses(&log),
        [
            "COPY --chmod=600 . /app: --chmod changed",
            "RUN echo $VERSION > /v: COPY --chmod=600 . /app: --chmod changed",
        ],
        "{log}"
    );
}

/// The Dockerfile of the two-runner tests: a RUN, a COPY and a RUN over it.
const STEPS: &str =
    "FROM {BASE}\nRUN echo one > /one\nCOPY src /src\nRUN cat /one /src/main.rs > /copied\n";

/// The last RUN of [`STEPS`], as the step log names it.
const LAST_RUN: &str = "RUN cat /one /src/main.rs > /copied";

/// Why a step whose imported record matches runs again: its layer could not be had.
const SAME_INPUTS: &str = "same inputs as the earlier build, but its layer is not available";

/// A copy of the context `ctx` under `parent`: another runner's checkout.
fn checkout_elsewhere(ctx: &Path, parent: &Path) -> PathBuf {
    fs::create_dir_all(parent).unwrap();
    ok(output(Command::new("cp").arg("-a").arg(ctx).arg(parent)));
    parent.join(ctx.file_name().unwrap())
}

/// The `containerimage.digest` of a build's metadata file.
fn image_digest(out: &Path) -> String {
    meta_digest(&out.with_extension("meta.json"))
}

/// The `containerimage.digest` of the metadata file `meta`.
fn meta_digest(meta: &Path) -> String {
    let meta: Value = serde_json::from_slice(&fs::read(meta).unwrap()).unwrap();
    meta["containerimage.digest"].as_str().unwrap().to_string()
}

/// The blob names of an OCI layout.
fn blobs(dir: &Path) -> std::collections::BTreeSet<String> {
    fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Rewrites the cache manifest of the layout `dir` through `edit(manifest, config)`: new
/// blobs for both, `index.json` pointing at the new manifest.
fn tamper(dir: &Path, edit: impl FnOnce(&mut Value, &mut Value)) {
    let read = |d: &str| -> Value {
        let hex = d.trim_start_matches("sha256:");
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
    };
    let write = |v: &Value| -> (String, usize) {
        let bytes = serde_json::to_vec(v).unwrap();
        let d = lade::digest::Digest::of(&bytes);
        fs::write(dir.join("blobs/sha256").join(d.hex()), &bytes).unwrap();
        (d.to_string(), bytes.len())
    };
    let mut index: Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    edit(&mut manifest, &mut config);
    let (d, size) = write(&config);
    manifest["config"]["digest"] = Value::from(d);
    manifest["config"]["size"] = Value::from(size);
    let (d, size) = write(&manifest);
    index["manifests"][0]["digest"] = Value::from(d);
    index["manifests"][0]["size"] = Value::from(size);
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn a_second_runner_builds_nothing_from_a_local_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = base(t, "base", "one");
    let ctx = context(&t.join("ctx"), &STEPS.replace("{BASE}", &base));
    let shared = t.join("shared");
    let to = format!("type=local,dest={}", shared.display());
    let from = format!("type=local,src={}", shared.display());

    // Runner A: cold, exports. The first import of a cache that does not exist is a warning.
    let (log, _) = build(
        &t.join("a"),
        &ctx,
        &t.join("out-a"),
        &["--cache-to", &to, "--cache-from", &from],
    );
    assert!(
        log.contains(&format!(
            "warning: cache {}: no cache there yet; not used",
            shared.display()
        )),
        "{log}"
    );
    assert_eq!(misses(&log).len(), 3, "{log}");
    let exported = blobs(&shared);
    // Three layers, the config, the manifest.
    assert_eq!(exported.len(), 5, "{exported:?}");
    let a = image_digest(&t.join("out-a"));

    // Runner B, empty store: every step is a hit, the image is A's.
    let (log, steps) = build(
        &t.join("b"),
        &ctx,
        &t.join("out-b"),
        &["--cache-from", &from],
    );
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");
    assert!(!log.contains("warning"), "{log}");
    assert!(steps.iter().all(|s| s["cached"] == true), "{steps:?}");
    assert_eq!(image_digest(&t.join("out-b")), a);

    // One file changes: runner B2 (empty store, its checkout in another directory) re-runs
    // the steps from it up, each naming the change since A's build (the records A
    // exported), and its export adds only their layers (and a new config and manifest).
    let ctx_b = checkout_elsewhere(&ctx, &t.join("elsewhere"));
    for dir in [&ctx, &ctx_b] {
        fs::write(dir.join("src/main.rs"), "fn main() { loop {} }\n").unwrap();
    }
    let (log, steps) = build(
        &t.join("b2"),
        &ctx_b,
        &t.join("out-b"),
        &["--cache-from", &from, "--cache-to", &to],
    );
    let copy = steps.iter().find(|s| s["step"] == "COPY src /src").unwrap();
    assert_eq!(copy["reason"], "src/main.rs changed (content)", "{steps:?}");
    assert_eq!(
        misses(&log),
        [
            "COPY src /src: src/main.rs changed (content)".to_string(),
            format!("{LAST_RUN}: COPY src /src: src/main.rs changed (content)"),
        ],
        "{log}"
    );
    let now = blobs(&shared);
    assert_eq!(now.difference(&exported).count(), 4, "{now:?}");
    assert!(exported.is_subset(&now));
    let b2 = image_digest(&t.join("out-b"));
    assert_ne!(b2, a);

    // Tampered caches are ignored with one warning each, and the image stays right: a
    // runner C with an empty store each time.
    let c = |name: &str| {
        let cache = t.join(name);
        let (log, _) = build(&cache, &ctx, &t.join("out-c"), &["--cache-from", &from]);
        assert_eq!(image_digest(&t.join("out-c")), b2, "{log}");
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("warning: cache"))
            .collect();
        (
            log.clone(),
            warnings.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let pristine = fs::read(shared.join("index.json")).unwrap();

    // A diff_id that does not match the blob.
    tamper(&shared, |_, config| {
        for (_, step) in config["steps"].as_object_mut().unwrap() {
            step["diffID"] = Value::from(format!("sha256:{}", "0".repeat(64)));
        }
    });
    let (log, w) = c("c1");
    assert_eq!(misses(&log).len(), 3, "{log}");
    assert_eq!(w.len(), 1, "{log}");
    assert!(w[0].contains("has diff_id"), "{log}");

    // Another format version: ignored whole, one line.
    fs::write(shared.join("index.json"), &pristine).unwrap();
    tamper(&shared, |_, config| {
        config["format"] = Value::from("lade-cache-v0")
    });
    let (log, w) = c("c2");
    assert_eq!(misses(&log).len(), 3, "{log}");
    assert_eq!(w.len(), 1, "{log}");
    assert!(w[0].contains("cache format \"lade-cache-v0\""), "{log}");

    // A foreign artifact.
    fs::write(shared.join("index.json"), &pristine).unwrap();
    tamper(&shared, |manifest, _| {
        manifest["artifactType"] = Value::from("application/vnd.example")
    });
    let (log, w) = c("c3");
    assert_eq!(misses(&log).len(), 3, "{log}");
    assert_eq!(w.len(), 1, "{log}");
    assert!(w[0].contains("not a lade cache"), "{log}");

    // A missing blob: that step rebuilds, the other is still a hit.
    fs::write(shared.join("index.json"), &pristine).unwrap();
    let layers = {
        let meta: Value =
            serde_json::from_slice(&fs::read(t.join("out-b.meta.json")).unwrap()).unwrap();
        meta["lade.layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let run_layer = layers
        .last()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    fs::remove_file(shared.join("blobs/sha256").join(&run_layer)).unwrap();
    let (log, w) = c("c4");
    assert_eq!(
        misses(&log),
        [format!("{LAST_RUN}: {SAME_INPUTS}")],
        "{log}"
    );
    assert_eq!(w.len(), 1, "{log}");
    assert!(w[0].contains(&run_layer), "{log}");
}

/// The layer digests of the cache manifest at `cache_ref` (read with skopeo) and the manifest.
fn cache_layers(cache_ref: &str) -> (Vec<String>, Value) {
    let raw = ok(common::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{cache_ref}"),
    ]));
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (layers, manifest)
}

/// The registry requests a proxy saw from the `from`th on: `METHOD path`.
fn requests(proxy: &FaultProxy, from: usize) -> Vec<String> {
    proxy.seen()[from..]
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

/// The blob digests `requests` downloaded (`GET …/blobs/DIGEST`).
fn downloaded(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter_map(|r| r.strip_prefix("GET "))
        .filter_map(|p| p.split_once("/blobs/sha256:"))
        .map(|(_, d)| format!("sha256:{}", &d[..64]))
        .collect()
}

/// The blob digests `requests` uploaded (the `PUT …?digest=DIGEST` closing an upload), and
/// whether any chunk was sent (`PATCH`).
fn uploaded(requests: &[String]) -> (Vec<String>, bool) {
    let puts = requests
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/blobs/uploads/"))
        .filter_map(|r| {
            r.split_once("digest=sha256%3A")
                .or(r.split_once("digest=sha256:"))
        })
        .map(|(_, d)| format!("sha256:{}", &d[..64]))
        .collect();
    (puts, requests.iter().any(|r| r.starts_with("PATCH ")))
}

#[test]
fn a_second_runner_builds_nothing_from_a_registry_cache() {
    // Every request to the registry goes through the proxy, which logs it.
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let host = &proxy.addr;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = base(t, "base", "one");
    let ctx = context(&t.join("ctx"), &STEPS.replace("{BASE}", &base));
    let cache_ref = format!("{host}/cache-test/app:buildcache");
    let image = format!("{host}/cache-test/app:1");
    let to = format!("type=registry,ref={cache_ref}");
    let from = to.clone();
    let ctx_b = t.join("elsewhere/ctx");
    let push_from = |dir: &Path, store: &str, meta: &str, image: &str, extra: &[&str]| {
        let mut args = vec!["--push", "-t", image];
        args.extend(extra);
        let meta = t.join(meta);
        args.push(dir.to_str().unwrap());
        let (log, steps) = build_to(&t.join(store), &meta, &args);
        (log, steps, meta_digest(&meta))
    };
    let push = |store: &str, meta: &str, image: &str, extra: &[&str]| {
        push_from(&ctx, store, meta, image, extra)
    };

    // Runner A: a cache ref that does not exist yet is a warning, the build goes on.
    let (log, _, a) = push(
        "a",
        "a.json",
        &image,
        &["--cache-from", &from, "--cache-to", &to],
    );
    assert!(
        log.contains(&format!(
            "warning: cache {cache_ref}: no cache there yet; not used"
        )),
        "{log}"
    );
    assert_eq!(misses(&log).len(), 3, "{log}");

    // The registry and skopeo take the artifact as an OCI manifest with lade's type.
    let (layers, manifest) = cache_layers(&cache_ref);
    assert_eq!(manifest["artifactType"], "application/vnd.lade.cache.v1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.lade.cache.config.v1+json"
    );
    assert_eq!(layers.len(), 3, "{manifest}");

    // Runner B, empty store: no step runs, no layer is downloaded, the push uploads nothing,
    // the image is A's.
    let mark = proxy.seen().len();
    let (log, steps, b) = push("b", "b.json", &image, &["--cache-from", &from]);
    let seen = requests(&proxy, mark);
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");
    assert!(!log.contains("warning"), "{log}");
    assert!(steps.iter().all(|s| s["cached"] == true), "{steps:?}");
    assert_eq!(b, a);
    let got = downloaded(&seen);
    assert!(!layers.iter().any(|l| got.contains(l)), "{seen:#?}");
    assert_eq!(uploaded(&seen), (vec![], false), "{seen:#?}");
    assert!(log.contains("(0 bytes uploaded, 0 blobs uploaded"), "{log}");

    // Runner C pushes to another repository: the cached layers are mounted from the cache's,
    // still never downloaded; only the config and the base's layer (a local layout, in no
    // repository there) are uploaded.
    let other = format!("{host}/cache-test/other:1");
    let mark = proxy.seen().len();
    let (log, _, c) = push("c", "c.json", &other, &["--cache-from", &from]);
    let seen = requests(&proxy, mark);
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");
    assert_eq!(c, a);
    let got = downloaded(&seen);
    assert!(!layers.iter().any(|l| got.contains(l)), "{seen:#?}");
    for l in &layers {
        assert!(
            seen.iter().any(|r| r.starts_with("POST ")
                && r.contains(&format!("mount={}", l.replace(':', "%3A")))),
            "{l} not mounted: {seen:#?}"
        );
    }
    let (up, chunks) = uploaded(&seen);
    assert!(!chunks && up.len() == 2, "{seen:#?}");
    assert!(!layers.iter().any(|l| up.contains(l)), "{seen:#?}");

    // A changed file: runner B2 (empty store, its checkout in another directory) re-runs
    // the steps from it up, naming the change since A's build (the records A exported); the
    // export adds only their layers.
    assert_eq!(checkout_elsewhere(&ctx, ctx_b.parent().unwrap()), ctx_b);
    for dir in [&ctx, &ctx_b] {
        fs::write(dir.join("src/main.rs"), "fn main() { loop {} }\n").unwrap();
    }
    let mark = proxy.seen().len();
    let (log, steps, b2) = push_from(
        &ctx_b,
        "b2",
        "b2.json",
        &image,
        &["--cache-from", &from, "--cache-to", &to],
    );
    let copy = steps.iter().find(|s| s["step"] == "COPY src /src").unwrap();
    assert_eq!(copy["reason"], "src/main.rs changed (content)", "{steps:?}");
    let seen = requests(&proxy, mark);
    assert_eq!(
        misses(&log),
        [
            "COPY src /src: src/main.rs changed (content)".to_string(),
            format!("{LAST_RUN}: COPY src /src: src/main.rs changed (content)"),
        ],
        "{log}"
    );
    assert_ne!(b2, a);
    let (layers2, _) = cache_layers(&cache_ref);
    // The first RUN's layer stays; the manifest lists layers by digest.
    assert_eq!(layers2.len(), 3, "{layers2:?}");
    let new: Vec<&String> = layers2.iter().filter(|l| !layers.contains(l)).collect();
    assert_eq!(new.len(), 2, "{layers2:?}");
    let (up, _) = uploaded(&seen);
    assert!(!layers.iter().any(|l| up.contains(l)), "{seen:#?}");
    assert!(new.iter().all(|l| up.contains(l)), "{seen:#?}");

    // A blob gone from the cache's repository: one warning, that step runs again, the
    // image is the same.
    let gone = layers2.last().unwrap();
    let resp = reqwest::blocking::Client::new()
        .delete(format!(
            "http://{}/v2/cache-test/app/blobs/{gone}",
            reg.addr
        ))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
    let third = format!("{host}/cache-test/third:1");
    let (log, _, d) = push("d", "d.json", &third, &["--cache-from", &from]);
    assert_eq!(
        misses(&log),
        [format!("{LAST_RUN}: {SAME_INPUTS}")],
        "{log}"
    );
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains(&format!("blob {gone} is missing")),
        "{log}"
    );
    assert_eq!(d, b2);

    // An export that cannot be pushed is a warning by default, an error with
    // ignore-error=false.
    let nowhere = "type=registry,ref=127.0.0.1:1/cache:x";
    let (log, _) = build(
        &t.join("b"),
        &ctx,
        &t.join("out-b"),
        &["--cache-to", nowhere],
    );
    assert!(
        log.contains("warning: cache export to 127.0.0.1:1/cache:x"),
        "{log}"
    );
    let o = lade(&t.join("b"))
        .args(["build", "--progress", "plain", "--cache-to"])
        .arg(format!("{nowhere},ignore-error=false"))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn lade_toml_cache_table_shares_steps_through_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = context(&t.join("ctx"), "");
    let spec = ctx.join("lade.toml");
    fs::write(
        &spec,
        "[image]\n[[layer]]\nname = \"src\"\nfrom = \"src\"\ninto = \"/src\"\n\
         [cache]\nfrom = [\"type=local,src=shared\"]\nto = [\"type=local,dest=shared\"]\n",
    )
    .unwrap();
    let runner = |store: &str| {
        let out = t.join(format!("out-{store}"));
        let output = format!("type=oci-layout,dest={}", out.display());
        let args = ["--output", &output, "--spec", spec.to_str().unwrap()];
        let (log, steps) = build_to(&t.join(store), &out.with_extension("meta.json"), &args);
        (log, steps, image_digest(&out))
    };
    // The table's relative directory is the spec's.
    let (log, _, a) = runner("a");
    assert!(log.contains("no cache there yet; not used"), "{log}");
    assert_eq!(misses(&log).len(), 1, "{log}");
    assert!(ctx.join("shared/index.json").exists());
    let (log, steps, b) = runner("b");
    assert_eq!(misses(&log), Vec::<String>::new(), "{log}");
    assert!(steps.iter().all(|s| s["cached"] == true), "{steps:?}");
    assert_eq!(b, a);
}

/// Stores `bytes` as a blob of `repo` in the registry at `addr`; returns its digest.
fn put_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let http = reqwest::blocking::Client::new();
    let start = http
        .post(format!("http://{addr}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert!(start.status().is_success(), "{start:?}");
    let location = start.headers()["location"].to_str().unwrap().to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{addr}{location}")
    };
    let digest = lade::digest::Digest::of(bytes).to_string();
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{url}{sep}digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");
    digest
}

#[test]
fn a_lazy_hit_whose_blob_lies_is_rebuilt() {
    let reg = TestRegistry::open();
    let host = &reg.addr;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let base = base(t, "base", "one");
    let ctx = context(&t.join("ctx"), &STEPS.replace("{BASE}", &base));
    let cache_ref = format!("{host}/lie/app:buildcache");
    let push = |store: &str, tag: &str, extra: &[&str]| {
        let image = format!("{host}/lie/app:{tag}");
        let mut args = vec!["--push", "-t", &image];
        args.extend(extra);
        args.push(ctx.to_str().unwrap());
        let meta = t.join(format!("{store}.json"));
        let (log, _) = build_to(&t.join(store), &meta, &args);
        (log, meta_digest(&meta))
    };

    // Runner A exports; then the cache's config claims other diff_ids for every layer (the
    // manifest, digests and sizes stay right, so hits are taken without a download).
    push(
        "a",
        "1",
        &["--cache-to", &format!("type=registry,ref={cache_ref}")],
    );
    let (_, mut manifest) = cache_layers(&cache_ref);
    let http = reqwest::blocking::Client::new();
    let config_url = format!(
        "http://{host}/v2/lie/app/blobs/{}",
        manifest["config"]["digest"].as_str().unwrap()
    );
    let mut config: Value =
        serde_json::from_slice(&http.get(config_url).send().unwrap().bytes().unwrap()).unwrap();
    for (_, step) in config["steps"].as_object_mut().unwrap() {
        step["diffID"] = Value::from(format!("sha256:{}", "0".repeat(64)));
    }
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = Value::from(put_blob(host, "lie/app", &config));
    manifest["config"]["size"] = Value::from(config.len());
    let put = http
        .put(format!("http://{host}/v2/lie/app/manifests/buildcache"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");

    // Runner B changes a file: the first RUN is a lazy hit, the last RUN needs its bytes, they
    // do not match: one warning naming the cache and the step, and the build runs again
    // without that cache, making the image a clean build makes.
    fs::write(ctx.join("src/main.rs"), "fn main() { loop {} }\n").unwrap();
    let from = format!("type=registry,ref={cache_ref}");
    let (log, b) = push("b", "2", &["--cache-from", &from]);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&cache_ref), "{log}");
    assert!(warnings[0].contains("has diff_id"), "{log}");
    assert!(warnings[0].contains("RUN echo one > /one"), "{log}");
    // The rerun names the cache as why the step that was its hit runs.
    assert!(
        log.lines().any(|l| l.contains("RUN echo one > /one")
            && l.contains(&format!("cache {cache_ref} had it, but failed its checks"))),
        "{log}"
    );
    let (_, clean) = push("clean", "3", &[]);
    assert_eq!(b, clean);

    // Runner C, back on A's sources: every step is a lazy hit, and only the SBOM, made after
    // the steps, reads their bytes. The same one warning, and the build runs again.
    fs::write(ctx.join("src/main.rs"), "fn main() {}\n").unwrap();
    let (log, c) = push("c", "4", &["--cache-from", &from, "--sbom"]);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("has diff_id"), "{log}");
    assert!(warnings[0].contains("runs again without it"), "{log}");
    // The SBOM names the tag: the clean build pushes the same one.
    let (_, clean) = push("clean-sbom", "4", &["--sbom"]);
    assert_eq!(c, clean);
}
