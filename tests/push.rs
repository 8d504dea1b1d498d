//! `lade build --push`, `lade push`, `lade pull` against the real registry `cargo xtask test`
//! starts, checked with skopeo and a `docker pull` + `docker run` from the test dockerd.

mod common;
mod registry_support;

use registry_support::{FaultProxy, Seen, TestRegistry};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

fn hello_context(dir: &Path) -> PathBuf {
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

/// Builds the hello image as an OCI archive `tmp/hello.tar`, with the cache `tmp/cache`:
/// what the tests that push an existing archive start from. Returns (cache, archive).
fn hello_archive(tmp: &Path) -> (PathBuf, PathBuf) {
    let ctx = hello_context(tmp);
    let cache = tmp.join("cache");
    let archive = tmp.join("hello.tar");
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .assert()
        .success();
    (cache, archive)
}

/// A Dockerfile context whose image differs per platform (a label with its architecture),
/// so that the images of a multi-platform build have distinct digests.
fn arch_labelled_context(tmp: &Path) -> PathBuf {
    let ctx = tmp.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY hello.txt /\nLABEL arch=$TARGETARCH\n",
    )
    .unwrap();
    ctx
}

/// A Dockerfile context `FROM base` that adds one file with `COPY --link`: the layer does not
/// depend on the base's filesystem (BuildKit's semantics), so no step needs the base's layers
/// (a plain COPY would have to look at them).
fn link_app_context(tmp: &Path, base: &str) -> PathBuf {
    let df = tmp.join("df");
    fs::create_dir_all(&df).unwrap();
    fs::write(df.join("extra.txt"), "extra\n").unwrap();
    fs::write(
        df.join("Dockerfile"),
        format!("FROM {base}\nCOPY --link extra.txt /extra.txt\n"),
    )
    .unwrap();
    df
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
    let (cache, archive) = hello_archive(tmp.path());
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

/// Requests of a push that carried or fetched blob bytes (uploads, blob downloads).
fn blob_traffic(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| {
            s.path.contains("/blobs/uploads/")
                || (s.method == "GET" && s.path.contains("/blobs/sha256:"))
        })
        .collect()
}

fn store_blobs(cache: &Path) -> Vec<String> {
    match fs::read_dir(cache.join("blobs/sha256")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn repush_of_archives_and_layouts_uploads_nothing_and_writes_digest_files() {
    common::require_services();
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let archive = tmp.path().join("hello.tar");
    let docker_archive = tmp.path().join("hello-docker.tar");
    let layout = tmp.path().join("layout");
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .args(["-t", "hello:1", "-o"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg("-o")
        .arg(format!("type=docker,dest={}", docker_archive.display()))
        .arg("-o")
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .assert()
        .success();
    let repo = format!("lade-test/repush-{}", std::process::id());
    let dest = format!("{}/{repo}:1", proxy.addr);
    // `lade push` reads the archive in place: an empty store stays empty.
    let push_cache = tmp.path().join("push-cache");
    let push = |source: String, dest: &str, digest_file: &Path, metadata: &Path| {
        let a = common::lade(&push_cache)
            .arg("push")
            .arg(source)
            .arg(dest)
            .arg("--digest-file")
            .arg(digest_file)
            .arg("--metadata-file")
            .arg(metadata)
            .assert()
            .success();
        stderr_of(&a)
    };
    let (digest1, meta1) = (tmp.path().join("d1"), tmp.path().join("m1.json"));
    let first = push(
        format!("oci-archive:{}", archive.display()),
        &dest,
        &digest1,
        &meta1,
    );
    assert!(first.contains("2 blobs uploaded"), "{first}");
    let uploads = proxy.seen();
    assert!(
        uploads
            .iter()
            .any(|s| s.method == "PUT" && s.path.contains("/blobs/uploads/")),
        "{uploads:?}"
    );
    let digest = fs::read_to_string(&digest1).unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest:?}"
    );
    let meta: Value = serde_json::from_slice(&fs::read(&meta1).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest.as_str());
    assert_eq!(meta["image.name"], dest.as_str());
    assert_eq!(
        meta["lade.pushed"],
        serde_json::json!([dest, format!("{}/{repo}@{digest}", proxy.addr)])
    );
    let inspect = common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/{repo}:1", reg.addr),
    ]);
    let v: Value = serde_json::from_slice(&common::ok(inspect).into_bytes()).unwrap();
    assert_eq!(v["Digest"], digest.as_str());

    // Again, from the archive, the docker archive and the layout: HEAD requests only.
    for (i, source) in [
        format!("oci-archive:{}", archive.display()),
        docker_archive.display().to_string(),
        format!("oci:{}:1", layout.display()),
    ]
    .into_iter()
    .enumerate()
    {
        let before = proxy.seen().len();
        let (df, mf) = (
            tmp.path().join(format!("d2-{i}")),
            tmp.path().join(format!("m2-{i}.json")),
        );
        let again = push(source.clone(), &dest, &df, &mf);
        assert!(
            again.contains("0 bytes uploaded, 0 blobs uploaded, 0 mounted, 2 already there"),
            "{source}: {again}"
        );
        let seen = proxy.seen();
        let traffic = blob_traffic(&seen[before..]);
        assert!(traffic.is_empty(), "{source}: {traffic:?}");
        assert_eq!(fs::read_to_string(&df).unwrap(), digest, "{source}");
    }
    assert!(
        store_blobs(&push_cache).is_empty(),
        "{:?}",
        store_blobs(&push_cache)
    );
}

#[test]
fn build_push_writes_digest_file_and_metadata_with_every_tag() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let cache = tmp.path().join("cache");
    let repo = format!(
        "{}/lade-test/digest-file-{}",
        s.registry,
        std::process::id()
    );
    let (t1, t2) = (format!("{repo}:1"), format!("{repo}:latest"));
    let (digest_file, meta) = (
        tmp.path().join("image.digest"),
        tmp.path().join("meta.json"),
    );
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .args(["-t", &t1, "-t", &t2, "-o", "type=registry", "--digest-file"])
        .arg(&digest_file)
        .arg("--metadata-file")
        .arg(&meta)
        .assert()
        .success();
    let digest = fs::read_to_string(&digest_file).unwrap();
    let meta: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest.as_str());
    assert_eq!(meta["image.name"], format!("{t1},{t2}").as_str());
    assert_eq!(
        meta["lade.pushed"],
        serde_json::json!([t1, t2, format!("{repo}@{digest}")])
    );
    for t in [&t1, &t2] {
        let v: Value = serde_json::from_slice(
            &common::ok(common::skopeo(&[
                "inspect",
                "--tls-verify=false",
                &format!("docker://{t}"),
            ]))
            .into_bytes(),
        )
        .unwrap();
        assert_eq!(v["Digest"], digest.as_str(), "{t}");
    }
}

/// Pushes the hello image to `image` and returns (manifest digest, layer digests).
fn push_hello_base(tmp: &Path, image: &str) -> (String, Vec<String>) {
    let ctx = hello_context(tmp);
    let meta = tmp.join("base-meta.json");
    common::lade(&tmp.join("base-cache"))
        .args(["build", "--progress", "quiet", "--push", "--spec"])
        .arg(ctx.join("lade.toml"))
        .args(["-t", image, "--metadata-file"])
        .arg(&meta)
        .assert()
        .success();
    let meta: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let layers = meta["lade.layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (
        meta["containerimage.digest"].as_str().unwrap().to_string(),
        layers,
    )
}

/// Every base layer was mounted from `from_repo` (a POST answered 201), never fetched (no GET
/// of the blob), and is not in the store at `cache`.
fn assert_mounted_not_downloaded(
    seen: &[Seen],
    base_layers: &[String],
    from_repo: &str,
    cache: &Path,
) {
    let from = format!("from={}", from_repo.replace('/', "%2F"));
    for l in base_layers {
        assert!(
            !seen
                .iter()
                .any(|s| s.method == "GET" && s.path.ends_with(&format!("/blobs/{l}"))),
            "{l} downloaded: {seen:?}"
        );
        assert!(
            seen.iter().any(|s| s.method == "POST"
                && s.path.contains(&format!("mount={}", l.replace(':', "%3A")))
                && s.path.contains(&from)
                && s.status == 201),
            "{l} not mounted from {from_repo}: {seen:?}"
        );
        assert!(
            !cache.join("blobs").join(l.replace(':', "/")).exists(),
            "{l} is in the store"
        );
    }
}

#[test]
fn registry_base_layers_are_mounted_not_downloaded() {
    common::require_services();
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let tmp = tempfile::tempdir().unwrap();
    let id = std::process::id();
    let base = format!("{}/lade-test/lazy-base-{id}:1", proxy.addr);
    let (_, base_layers) = push_hello_base(tmp.path(), &base);
    assert!(!base_layers.is_empty());

    let df = link_app_context(tmp.path(), &base);
    let cache = tmp.path().join("cache");
    let app = format!("{}/lade-test/lazy-app-{id}:1", proxy.addr);
    let digest_file = tmp.path().join("app.digest");
    let before = proxy.seen().len();
    let out = common::lade(&cache)
        .args(["build", "--progress", "plain", "--push", "-t", &app])
        .arg("--digest-file")
        .arg(&digest_file)
        .arg(&df)
        .assert()
        .success();
    let text = stderr_of(&out);
    assert!(text.contains("mounted"), "{text}");
    let seen = proxy.seen()[before..].to_vec();
    // Not one base layer was downloaded or uploaded: each was mounted from the base's repo.
    assert_mounted_not_downloaded(&seen, &base_layers, "lade-test/lazy-base", &cache);
    // The pushed image is complete: skopeo copies it whole, with the same digest.
    let digest = fs::read_to_string(&digest_file).unwrap();
    let copied = tmp.path().join("copied");
    common::ok(common::skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/lade-test/lazy-app-{id}:1", reg.addr),
        &format!("oci:{}:x", copied.display()),
    ]));
    let index: Value =
        serde_json::from_slice(&fs::read(copied.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    for l in &base_layers {
        assert!(copied.join("blobs").join(l.replace(':', "/")).is_file());
    }

    // Another build with the same base and cache downloads no blob at all.
    let before = proxy.seen().len();
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "--push", "-t", &app])
        .arg(&df)
        .assert()
        .success();
    let seen = proxy.seen()[before..].to_vec();
    assert!(
        !seen
            .iter()
            .any(|s| s.method == "GET" && s.path.contains("/blobs/")),
        "{seen:?}"
    );

    // A file output needs the bytes: now the base layers are fetched, and the archive holds
    // the same image.
    let archive = tmp.path().join("app.tar");
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg("--digest-file")
        .arg(tmp.path().join("local.digest"))
        .arg(&df)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(tmp.path().join("local.digest")).unwrap(),
        digest
    );
    for l in &base_layers {
        assert!(cache.join("blobs").join(l.replace(':', "/")).is_file());
    }
    common::ok(common::skopeo(&[
        "inspect",
        &format!("oci-archive:{}", archive.display()),
    ]));

    // To another registry (the registry itself, not the proxy): fetched, then uploaded.
    let cache2 = tmp.path().join("cache2");
    let other = format!("{}/lade-test/lazy-other-{id}:1", reg.addr);
    let before = proxy.seen().len();
    common::lade(&cache2)
        .args(["build", "--progress", "quiet", "--push", "-t", &other])
        .arg("--digest-file")
        .arg(tmp.path().join("other.digest"))
        .arg(&df)
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(tmp.path().join("other.digest")).unwrap(),
        digest
    );
    let seen = proxy.seen()[before..].to_vec();
    for l in &base_layers {
        assert!(
            seen.iter()
                .any(|s| s.method == "GET" && s.path.ends_with(&format!("/blobs/{l}"))),
            "{l} not fetched: {seen:?}"
        );
    }
    let v: Value = serde_json::from_slice(
        &common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{other}"),
        ]))
        .into_bytes(),
    )
    .unwrap();
    assert_eq!(v["Digest"], digest.as_str());

    // COPY --from an image reads its files: its layers are fetched then.
    let df2 = tmp.path().join("df2");
    fs::create_dir_all(&df2).unwrap();
    fs::write(
        df2.join("Dockerfile"),
        format!("FROM scratch\nCOPY --from={base} /usr/share/hello/hello.sh /hello.sh\n"),
    )
    .unwrap();
    let cache3 = tmp.path().join("cache3");
    let before = proxy.seen().len();
    let layout = tmp.path().join("copied-from");
    common::lade(&cache3)
        .args(["build", "--progress", "quiet", "-t", "copied:latest", "-o"])
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .arg(&df2)
        .assert()
        .success();
    let seen = proxy.seen()[before..].to_vec();
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path.ends_with(&format!("/blobs/{}", base_layers[0]))),
        "{seen:?}"
    );
    let bundle = tmp.path().join("bundle");
    common::ok(common::umoci(&[
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:latest", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/hello.sh")).unwrap(),
        "echo pushed and pulled\n"
    );
}

#[test]
fn pull_policies_decide_what_a_build_asks_the_registry() {
    common::require_services();
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let tmp = tempfile::tempdir().unwrap();
    let id = std::process::id();
    let base = format!("{}/lade-test/pull-base-{id}:1", proxy.addr);
    push_hello_base(tmp.path(), &base);
    let df = link_app_context(tmp.path(), &base);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out.tar");
    // Builds to an archive; returns the image digest and the requests the registry saw.
    let build = |cache: &Path, pull: Option<&str>| {
        let before = proxy.seen().len();
        let digest_file = tmp.path().join("digest");
        let _ = fs::remove_file(&digest_file);
        let mut cmd = common::lade(cache);
        cmd.args(["build", "--progress", "quiet", "-o"])
            .arg(format!("type=oci,dest={}", out.display()))
            .arg("--digest-file")
            .arg(&digest_file);
        if let Some(p) = pull {
            cmd.arg(p);
        }
        let a = cmd.arg(&df).assert();
        let seen: Vec<Seen> = proxy.seen()[before..]
            .iter()
            .filter(|s| s.path != "/v2/")
            .cloned()
            .collect();
        (a, fs::read_to_string(&digest_file).ok(), seen)
    };
    let manifest_requests = |seen: &[Seen], method: &str| {
        seen.iter()
            .filter(|s| s.method == method && s.path.contains("/manifests/"))
            .count()
    };

    // --pull=never on an empty cache: a clear error, no request.
    let (a, _, seen) = build(&cache, Some("--pull=never"));
    let err = stderr_of(&a.failure().code(1));
    assert!(err.contains("--pull=never"), "{err}");
    assert!(err.contains(&base), "{err}");
    assert!(seen.is_empty(), "{seen:?}");

    // First build: resolves and downloads (the archive needs the layers).
    let (a, first, seen) = build(&cache, None);
    a.success();
    assert_eq!(manifest_requests(&seen, "GET"), 1, "{seen:?}");
    let first = first.unwrap();

    // Default (newer): one HEAD of the manifest, nothing downloaded.
    let (a, d, seen) = build(&cache, None);
    a.success();
    assert_eq!(d.as_deref(), Some(first.as_str()));
    assert_eq!(manifest_requests(&seen, "HEAD"), 1, "{seen:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");

    // missing and never: no request at all.
    for p in ["--pull=missing", "--pull=never"] {
        let (a, d, seen) = build(&cache, Some(p));
        a.success();
        assert_eq!(d.as_deref(), Some(first.as_str()), "{p}");
        assert!(seen.is_empty(), "{p}: {seen:?}");
    }

    // always (and --pull alone): the manifest is fetched again; blobs are not.
    for p in ["--pull=always", "--pull"] {
        let (a, d, seen) = build(&cache, Some(p));
        a.success();
        assert_eq!(d.as_deref(), Some(first.as_str()), "{p}");
        assert_eq!(manifest_requests(&seen, "GET"), 1, "{p}: {seen:?}");
        assert!(
            !seen
                .iter()
                .any(|s| s.method == "GET" && s.path.contains("/blobs/")),
            "{p}: {seen:?}"
        );
    }

    // --pull=never forbids downloading base layers too: a push to the base's registry mounts
    // them, a push to another registry (which needs their bytes) fails clearly.
    let lazy_cache = tmp.path().join("lazy-cache");
    let push_with = |target: String| {
        common::lade(&lazy_cache)
            .args([
                "build",
                "--progress",
                "quiet",
                "--pull=never",
                "--push",
                "-t",
            ])
            .arg(target)
            .arg(&df)
            .assert()
    };
    common::lade(&lazy_cache)
        .args(["build", "--progress", "quiet", "--push", "-t"])
        .arg(format!("{}/lade-test/pull-app-{id}:1", proxy.addr))
        .arg(&df)
        .assert()
        .success();
    push_with(format!("{}/lade-test/pull-app-{id}:2", proxy.addr)).success();
    let before = proxy.seen().len();
    let a = push_with(format!("{}/lade-test/pull-app-{id}:3", reg.addr)).failure();
    let err = stderr_of(&a.code(1));
    assert!(err.contains("--pull=never forbids downloading"), "{err}");
    let seen = proxy.seen()[before..].to_vec();
    assert!(!seen.iter().any(|s| s.path.contains("/blobs/")), "{seen:?}");

    // The tag moves to another image: missing keeps the cached one, the default notices.
    let df2 = tmp.path().join("other-base");
    fs::create_dir_all(df2.join("ctx")).unwrap();
    fs::write(df2.join("ctx/new.txt"), "new\n").unwrap();
    fs::write(
        df2.join("ctx/Dockerfile"),
        format!("FROM {base}\nCOPY new.txt /new.txt\n"),
    )
    .unwrap();
    common::lade(&tmp.path().join("cache-move"))
        .args(["build", "--progress", "quiet", "--push", "-t", &base])
        .arg(df2.join("ctx"))
        .assert()
        .success();
    let (a, d, seen) = build(&cache, Some("--pull=missing"));
    a.success();
    assert_eq!(d.as_deref(), Some(first.as_str()));
    assert!(seen.is_empty(), "{seen:?}");
    let (a, d, seen) = build(&cache, None);
    a.success();
    assert_ne!(d.as_deref(), Some(first.as_str()));
    assert_eq!(manifest_requests(&seen, "HEAD"), 1, "{seen:?}");
    assert_eq!(manifest_requests(&seen, "GET"), 1, "{seen:?}");
}

#[test]
fn pushing_a_1_gib_layer_keeps_memory_bounded() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("data")).unwrap();
    let big = fs::File::create(ctx.join("data/big.img")).unwrap();
    big.set_len(1 << 30).unwrap();
    fs::write(
        ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"data\"\nfrom = \"data\"\ninto = \"/data\"\n",
    )
    .unwrap();
    let repo = format!("{}/lade-test/big-{}", s.registry, std::process::id());
    let archive = tmp.path().join("big.tar");
    // Build (uncompressed: a 1 GiB blob), push straight from the store, write an archive.
    let mut build = std::process::Command::new(env!("CARGO_BIN_EXE_lade"));
    build
        .args([
            "build",
            "--progress",
            "quiet",
            "--compression",
            "none",
            "--spec",
        ])
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .args(["--push", "-t", &format!("{repo}:1"), "--output"])
        .arg(format!("type=oci,dest={}", archive.display()));
    let (status, rss_kib) = common::run_measured(&mut build);
    assert!(status.success());
    assert!(rss_kib < 100 * 1024, "build --push: peak RSS {rss_kib} KiB");
    // Push the archive to another repository: the blob streams out of the tar.
    let mut push = std::process::Command::new(env!("CARGO_BIN_EXE_lade"));
    push.arg("push").arg(&archive).arg(format!("{repo}-copy:1"));
    let (status, rss_kib) = common::run_measured(&mut push);
    assert!(status.success());
    assert!(rss_kib < 100 * 1024, "push: peak RSS {rss_kib} KiB");
    for r in [format!("{repo}:1"), format!("{repo}-copy:1")] {
        let v: Value = serde_json::from_str(&common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{r}"),
        ])))
        .unwrap();
        assert!(
            v["layers"][0]["size"].as_u64().unwrap() > 1 << 30,
            "{r}: {v}"
        );
    }
}

#[test]
fn push_jobs_bounds_how_many_blobs_upload_at_once() {
    let _s = common::require_services();
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    proxy.faults.lock().unwrap().upload_delay = Some(std::time::Duration::from_millis(300));
    let tmp = tempfile::tempdir().unwrap();
    // Six layers of different content: six blob uploads besides the config.
    let ctx = tmp.path().join("ctx");
    let mut spec = String::from("[image]\n");
    for i in 0..6 {
        let dir = ctx.join(format!("l{i}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), format!("layer {i}\n")).unwrap();
        spec.push_str(&format!(
            "[[layer]]\nname = \"l{i}\"\nfrom = \"l{i}\"\ninto = \"/l{i}\"\n"
        ));
    }
    fs::write(ctx.join("lade.toml"), spec).unwrap();
    let archive = tmp.path().join("six.tar");
    common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .assert()
        .success();
    let max_with = |jobs: &str, repo: &str| {
        {
            let mut f = proxy.faults.lock().unwrap();
            f.max_uploads_in_flight = 0;
        }
        common::lade(&tmp.path().join("cache"))
            .args(["push", "--push-jobs", jobs])
            .arg(&archive)
            .arg(format!(
                "{}/lade-test/{repo}-{}:1",
                proxy.addr,
                std::process::id()
            ))
            .assert()
            .success();
        proxy.faults.lock().unwrap().max_uploads_in_flight
    };
    assert_eq!(max_with("1", "jobs1"), 1);
    let four = max_with("4", "jobs4");
    assert!((2..=4).contains(&four), "--push-jobs 4: {four} at once");
}

#[test]
fn push_of_a_multi_platform_archive_or_layout_sends_the_whole_index() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = arch_labelled_context(tmp.path());
    let cache = tmp.path().join("cache");
    let (archive, layout) = (tmp.path().join("multi.tar"), tmp.path().join("multi"));
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "-t", "multi:1"])
        .args(["--platform", "linux/amd64,linux/arm64/v8", "-o"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg("-o")
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .arg(&ctx)
        .assert()
        .success();
    let raw = |r: &str| -> Value {
        serde_json::from_str(&common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{r}"),
        ])))
        .unwrap()
    };
    let id = std::process::id();
    for (i, source) in [
        format!("oci-archive:{}", archive.display()),
        format!("oci:{}:1", layout.display()),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = format!("{}/lade-test/multi-push-{i}-{id}", s.registry);
        let digest_file = tmp.path().join(format!("digest-{i}"));
        common::lade(&cache)
            .arg("push")
            .arg(&source)
            .arg(format!("{repo}:1"))
            .arg("--digest-file")
            .arg(&digest_file)
            .assert()
            .success();
        let index = raw(&format!("{repo}:1"));
        assert_eq!(
            index["mediaType"], "application/vnd.oci.image.index.v1+json",
            "{source}: {index}"
        );
        let digest = fs::read_to_string(&digest_file).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        let platforms: Vec<String> = manifests
            .iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m["platform"]["os"].as_str().unwrap(),
                    m["platform"]["architecture"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{source}");
        // Each platform's manifest arrived (by digest), with its config and layer.
        for (m, arch) in manifests.iter().zip(["amd64", "arm64"]) {
            let child = raw(&format!("{repo}@{}", m["digest"].as_str().unwrap()));
            assert_eq!(child["layers"].as_array().unwrap().len(), 1, "{child}");
            let cfg: Value = serde_json::from_str(&common::ok(common::skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--config",
                &format!("docker://{repo}@{}", m["digest"].as_str().unwrap()),
            ])))
            .unwrap();
            assert_eq!(cfg["architecture"], arch, "{source}");
            assert_eq!(cfg["config"]["Labels"]["arch"], arch, "{source}");
        }
        // The tag names the index, and the digest file says so.
        let inspect: Value = serde_json::from_str(&common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &format!("docker://{repo}:1"),
        ])))
        .unwrap();
        assert_eq!(inspect["Architecture"], "arm64");
        let index_digest = format!(
            "sha256:{}",
            sha256_hex(&common::ok(common::skopeo(&[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{repo}:1"),
            ])))
        );
        assert_eq!(digest, index_digest, "{source}");
    }
}

fn sha256_hex(s: &str) -> String {
    lade::digest::Digest::of(s.as_bytes()).hex().to_string()
}

/// Runs lade and returns its stderr after checking it failed with exit code 1 and printed
/// exactly one line.
fn one_error_line(cmd: &mut assert_cmd::Command) -> String {
    let a = cmd.assert().failure().code(1);
    let err = stderr_of(&a);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn registry_errors_on_the_command_line_are_one_line_and_exit_1() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let (cache, archive) = hello_archive(tmp.path());
    let home = tmp.path().join("home");
    let docker_cfg = tmp.path().join("docker");
    fs::create_dir_all(&docker_cfg).unwrap();
    // No credentials from the environment unless a case writes them.
    let lade = || {
        let mut c = common::lade(&cache);
        c.env("HOME", &home)
            .env("DOCKER_CONFIG", &docker_cfg)
            .env("XDG_RUNTIME_DIR", tmp.path().join("run"))
            .env("XDG_CONFIG_HOME", tmp.path().join("xdg"))
            .env_remove("REGISTRY_AUTH_FILE");
        c
    };
    let push_to = |dest: &str| {
        let mut c = lade();
        c.arg("push").arg(&archive).arg(dest);
        c
    };
    let id = std::process::id();

    // Unknown host.
    let err = one_error_line(&mut push_to("no-such-host.invalid/x/y:1"));
    assert!(
        err.contains("cannot reach registry no-such-host.invalid"),
        "{err}"
    );

    // Connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = one_error_line(&mut push_to(&format!("127.0.0.1:{port}/x/y:1")));
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");

    // TLS failure: the self-signed registry without --registry-ca.
    let err = one_error_line(&mut push_to(&format!(
        "{}/lade-test/tls-{id}:1",
        s.tls_registry
    )));
    assert!(err.contains("TLS error"), "{err}");
    assert!(err.contains("--registry-ca"), "{err}");

    // Wrong credentials.
    use base64::Engine as _;
    let wrong = "definitely-wrong-pw-31";
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{wrong}", s.tls_user));
    fs::write(
        docker_cfg.join("config.json"),
        serde_json::json!({"auths": {s.tls_registry.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let mut c = push_to(&format!("{}/lade-test/wrong-creds-{id}:1", s.tls_registry));
    c.arg("--registry-ca").arg(&s.tls_ca);
    let err = one_error_line(&mut c);
    assert!(err.contains("authentication to"), "{err}");
    assert!(err.contains("wrong username or password"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(&auth), "{err}");
    fs::remove_file(docker_cfg.join("config.json")).unwrap();

    // 404 on a tag.
    let pull = |reference: &str| {
        let mut c = lade();
        // A cache of its own: the build above left the image's blobs in `cache`.
        c.env("LADE_CACHE_DIR", tmp.path().join("pull-cache"))
            .args(["pull", reference, "-o"])
            .arg(format!(
                "type=oci-layout,dest={}",
                tmp.path().join("pulled").display()
            ));
        c
    };
    let missing = format!("{}/lade-test/missing-{id}:nope", s.registry);
    let err = one_error_line(&mut pull(&missing));
    assert!(err.contains(&format!("{missing} not found")), "{err}");

    // Digest mismatch: a proxy in front of the registry flips a byte of every blob.
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let repo = format!("lade-test/lying-{id}");
    lade()
        .arg("push")
        .arg(&archive)
        .arg(format!("{}/{repo}:1", reg.addr))
        .assert()
        .success();
    proxy.faults.lock().unwrap().corrupt_blobs = true;
    let err = one_error_line(&mut pull(&format!("{}/{repo}:1", proxy.addr)));
    assert!(err.contains("does not match its digest"), "{err}");
    assert!(!tmp.path().join("pulled/index.json").exists());

    // A Docker schema 1 manifest (from a stub: real registries no longer accept them).
    let stub = registry_support::StubRegistry::start(vec![(
        "/v2/x/old/manifests/1".into(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
        br#"{"schemaVersion":1,"name":"x/old","tag":"1","fsLayers":[],"history":[]}"#.to_vec(),
    )]);
    let err = one_error_line(&mut pull(&format!("{}/x/old:1", stub.addr)));
    assert!(err.contains("schema 1"), "{err}");
}

/// This machine's host name, which must resolve to 127.0.0.1 (as /etc/hosts maps it on
/// Debian and in the test VM): a registry name that is not a loopback name to lade, yet
/// reaches only the local test registry.
fn local_host_name() -> String {
    use std::net::ToSocketAddrs;
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let addrs: Vec<_> = (name.as_str(), 0)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    assert!(
        addrs.iter().any(|a| a.ip().is_loopback()),
        "host name {name:?} must resolve to a loopback address (add it to /etc/hosts) for \
         this test: {addrs:?}"
    );
    name
}

#[test]
fn insecure_registry_allows_http_or_unverified_tls_for_that_host_and_port_only() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let (cache, archive) = hello_archive(tmp.path());
    let id = std::process::id();
    let name = local_host_name();
    let port = |addr: &str| addr.rsplit_once(':').unwrap().1.to_string();
    let (plain_port, tls_port) = (port(&s.registry), port(&s.tls_registry));
    let docker_cfg = tmp.path().join("docker");
    fs::create_dir_all(&docker_cfg).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", s.tls_user, s.tls_password));
    fs::write(
        docker_cfg.join("config.json"),
        serde_json::json!({"auths": {s.tls_registry.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let push = |dest: &str, insecure: Option<&str>| {
        let mut c = common::lade(&cache);
        c.env("DOCKER_CONFIG", &docker_cfg)
            .arg("push")
            .arg(&archive)
            .arg(dest);
        if let Some(i) = insecure {
            c.args(["--insecure-registry", i]);
        }
        c.assert()
    };

    // A non-loopback name: HTTPS only unless allowed; then plain HTTP works.
    let dest = format!("{name}:{plain_port}/lade-test/insecure-{id}:1");
    let a = push(&dest, None).failure().code(1);
    assert!(
        stderr_of(&a).contains(&format!("{name}:{plain_port}")),
        "{}",
        stderr_of(&a)
    );
    // Another port of the same host is not allowed.
    push(&dest, Some(&format!("{name}:{tls_port}")))
        .failure()
        .code(1);
    push(&dest, Some(&format!("{name}:{plain_port}"))).success();
    // The host alone allows every port.
    push(&dest, Some(&name)).success();
    let v: Value = serde_json::from_str(&common::ok(common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/lade-test/insecure-{id}:1", s.registry),
    ])))
    .unwrap();
    assert!(v["Digest"].as_str().unwrap().starts_with("sha256:"));

    // The self-signed TLS registry without its CA: unverified TLS for exactly that
    // host:port, a TLS error for any other.
    let dest = format!("{}/lade-test/insecure-tls-{id}:1", s.tls_registry);
    let a = push(&dest, Some(&format!("127.0.0.1:{plain_port}")))
        .failure()
        .code(1);
    assert!(stderr_of(&a).contains("TLS error"), "{}", stderr_of(&a));
    let a = push(&dest, Some(&s.tls_registry)).success();
    assert!(stderr_of(&a).contains("pushed"), "{}", stderr_of(&a));
}

#[test]
fn lade_toml_image_tags_are_all_pushed_by_type_registry() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let id = std::process::id();
    let tags = [
        format!("{}/lade-test/spec-tags-{id}:1", s.registry),
        format!("{}/lade-test/spec-tags-{id}:latest", s.registry),
        format!("{}/lade-test/spec-tags-other-{id}:x", s.registry),
    ];
    let spec = fs::read_to_string(ctx.join("lade.toml")).unwrap().replacen(
        "[image]\n",
        &format!("[image]\ntags = {}\n", serde_json::json!(tags)),
        1,
    );
    fs::write(ctx.join("lade.toml"), spec).unwrap();
    let digest_file = tmp.path().join("digest");
    let a = common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "plain", "--spec"])
        .arg(ctx.join("lade.toml"))
        .args(["-o", "type=registry", "--digest-file"])
        .arg(&digest_file)
        .assert()
        .success();
    let digest = fs::read_to_string(&digest_file).unwrap();
    for t in &tags {
        assert!(stderr_of(&a).contains(t.as_str()), "{t}: {}", stderr_of(&a));
        let v: Value = serde_json::from_str(&common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{t}"),
        ])))
        .unwrap();
        assert_eq!(v["Digest"], digest.as_str(), "{t}");
    }
}

#[test]
fn credentials_and_tokens_never_reach_the_trace_log() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let (cache, archive) = hello_archive(tmp.path());
    // Basic auth to the TLS registry, and a bearer token flow (with basic auth at the
    // token server) through the proxy.
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let ts = registry_support::TokenServer::start(100, Some(("tok-user", "tok-pass-5ecret")));
    proxy.faults.lock().unwrap().bearer = Some(ts.clone());
    use base64::Engine as _;
    let b64 =
        |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
    let (tls_auth, tok_auth) = (
        b64(&s.tls_user, &s.tls_password),
        b64("tok-user", "tok-pass-5ecret"),
    );
    let docker_cfg = tmp.path().join("docker");
    fs::create_dir_all(&docker_cfg).unwrap();
    fs::write(
        docker_cfg.join("config.json"),
        serde_json::json!({"auths": {
            s.tls_registry.clone(): {"auth": tls_auth},
            proxy.addr.clone(): {"auth": tok_auth},
        }})
        .to_string(),
    )
    .unwrap();
    let id = std::process::id();
    for (dest, ca) in [
        (format!("{}/lade-test/trace-{id}:1", s.tls_registry), true),
        (format!("{}/lade-test/trace-{id}:1", proxy.addr), false),
    ] {
        let mut c = common::lade(&cache);
        c.env("DOCKER_CONFIG", &docker_cfg)
            .env("LADE_LOG", "trace")
            .arg("push")
            .arg(&archive)
            .arg(&dest);
        if ca {
            c.arg("--registry-ca").arg(&s.tls_ca);
        }
        let a = c.assert().success();
        let log = stderr_of(&a);
        // The log is there (so the test means something), and requests are in it.
        assert!(log.contains("TRACE"), "{dest}: no trace output: {log}");
        assert!(log.lines().count() > 20, "{dest}: {log}");
        for secret in [
            s.tls_password.as_str(),
            tls_auth.as_str(),
            "tok-pass-5ecret",
            tok_auth.as_str(),
            "lade-test-token-",
        ] {
            assert!(!log.contains(secret), "{dest}: {secret:?} in the log");
        }
    }
    assert!(ts.issued.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn docker_schema2_manifests_and_manifest_lists_pull_and_serve_as_bases() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = arch_labelled_context(tmp.path());
    let cache = tmp.path().join("cache");
    let id = std::process::id();
    let repo = format!("lade-test/v2s2-{id}");
    // One Docker schema2 image per platform, converted by skopeo from lade's OCI archives.
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let archive = tmp.path().join(format!("{arch}.tar"));
        common::lade(&cache)
            .args(["build", "--progress", "quiet", "--platform"])
            .arg(format!("linux/{arch}"))
            .arg("-o")
            .arg(format!("type=oci,dest={}", archive.display()))
            .arg(&ctx)
            .assert()
            .success();
        let dest = format!("docker://{}/{repo}:{arch}", s.registry);
        common::ok(common::skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &format!("oci-archive:{}", archive.display()),
            &dest,
        ]));
        let raw = common::ok(common::skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &dest,
        ]));
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            v["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        let digest = format!("sha256:{}", sha256_hex(&raw));
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": raw.len(),
            "digest": digest,
            "platform": {"architecture": arch, "os": "linux"},
        }));
        digests.push(digest);
    }
    // A Docker manifest list over both, put with the registry API.
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": entries,
    })
    .to_string();
    let resp = reqwest::blocking::Client::new()
        .put(format!("http://{}/v2/{repo}/manifests/list", s.registry))
        .header(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .body(list.clone())
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    // lade pull: the schema2 manifest, and the list's entry for the asked platform.
    let pull = |reference: &str, platform: &str| {
        let a = common::lade(&cache)
            .args(["pull", reference, "--platform", platform, "-o"])
            .arg(format!(
                "type=oci-layout,dest={}",
                tmp.path().join("pulled").display()
            ))
            .assert()
            .success();
        stderr_of(&a)
    };
    let out = pull(&format!("{}/{repo}:amd64", s.registry), "linux/amd64");
    assert!(out.contains(&digests[0]), "{out}");
    let out = pull(&format!("{}/{repo}:list", s.registry), "linux/arm64");
    assert!(out.contains(&digests[1]), "{out}");

    // Both as bases of a build: the base's layer and label carry over.
    let df = tmp.path().join("df");
    fs::create_dir_all(&df).unwrap();
    fs::write(df.join("extra.txt"), "extra\n").unwrap();
    for (tag, platform, arch) in [
        ("amd64", "linux/amd64", "amd64"),
        ("list", "linux/arm64", "arm64"),
        ("list", "linux/amd64", "amd64"),
    ] {
        fs::write(
            df.join("Dockerfile"),
            format!("FROM {}/{repo}:{tag}\nCOPY extra.txt /\n", s.registry),
        )
        .unwrap();
        let out = tmp.path().join(format!("derived-{tag}-{arch}.tar"));
        common::lade(&cache)
            .args(["build", "--progress", "quiet", "--platform", platform, "-o"])
            .arg(format!("type=oci,dest={}", out.display()))
            .arg(&df)
            .assert()
            .success();
        let cfg: Value = serde_json::from_str(&common::ok(common::skopeo(&[
            "inspect",
            "--config",
            &format!("oci-archive:{}", out.display()),
        ])))
        .unwrap();
        assert_eq!(cfg["architecture"], arch, "{tag} {platform}");
        assert_eq!(cfg["config"]["Labels"]["arch"], arch, "{tag} {platform}");
        assert_eq!(
            cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
            2,
            "{tag} {platform}: {cfg}"
        );
    }
}

/// The Jib-style build: a lade.toml on a registry base, pushed to that registry, never reads
/// the base's filesystem, so it downloads no base layer (they are mounted), with a plain
/// layer, a `[cargo]` binary and an owner, none of which look below their own paths.
#[test]
fn lade_toml_on_a_registry_base_downloads_no_base_layer() {
    common::require_services();
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let tmp = tempfile::tempdir().unwrap();
    let id = std::process::id();
    let base = format!("{}/lade-test/toml-base-{id}:1", proxy.addr);
    let (_, base_layers) = push_hello_base(tmp.path(), &base);
    assert!(!base_layers.is_empty());
    let app = tmp.path().join("app");
    fs::create_dir_all(app.join("conf")).unwrap();
    fs::create_dir_all(app.join("target/release")).unwrap();
    fs::write(app.join("conf/app.conf"), "x = 1\n").unwrap();
    fs::write(app.join("target/release/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::write(
        app.join("lade.toml"),
        format!(
            "[image]\nfrom = \"{base}\"\n[[layer]]\nname = \"conf\"\nfrom = \"conf\"\n\
             into = \"/etc/app\"\nowner = \"1000:1000\"\n\
             [cargo]\nbin = \"target/release/tool\"\n"
        ),
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    let target = format!("{}/lade-test/toml-app-{id}:1", proxy.addr);
    let before = proxy.seen().len();
    common::lade(&cache)
        .args([
            "build",
            "--progress",
            "quiet",
            "--push",
            "-t",
            &target,
            "--spec",
        ])
        .arg(app.join("lade.toml"))
        .assert()
        .success();
    let seen = proxy.seen()[before..].to_vec();
    assert_mounted_not_downloaded(&seen, &base_layers, "lade-test/toml-base", &cache);
    // The image is whole: the registry serves its manifest with the base's layers first.
    let raw: Value = serde_json::from_str(&common::ok(common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/lade-test/toml-app-{id}:1", reg.addr),
    ])))
    .unwrap();
    let layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), base_layers.len() + 2, "{raw}");
    assert_eq!(&layers[..base_layers.len()], &base_layers[..], "{raw}");
}

/// `lade pull` / `lade push` against a registry that stops answering: with a 2 s timeout each
/// fails (after its bounded retries) with exit 1 and one line naming the host, the operation
/// and the stall. The child is killed after 90 s so that a hang fails the test instead of
/// blocking it.
#[test]
fn stalled_registries_fail_within_the_timeout_naming_host_and_operation() {
    use registry_support::{Stall, StallServer};
    let tmp = tempfile::tempdir().unwrap();
    let (cache, archive) = hello_archive(tmp.path());
    // (stall, command, words the error must contain besides the host)
    let cases: Vec<(Stall, &str, Vec<&str>)> = vec![
        (
            Stall::Silent,
            "pull",
            vec!["connecting to registry", "no response for 2 s"],
        ),
        (
            Stall::SilentAfterProbe,
            "pull",
            vec!["GET manifest for", "no response for 2 s"],
        ),
        (
            Stall::DripBody,
            "pull",
            vec!["GET manifest for", "stalled: ", "in 2 s"],
        ),
        (
            Stall::DripHeaders,
            "pull",
            vec!["GET manifest for", "no response for 2 s"],
        ),
        (
            Stall::SilentAfterProbe,
            "push",
            vec!["existence check of blob sha256:", "no response for 2 s"],
        ),
        (
            Stall::DripHeaders,
            "push",
            vec!["existence check of blob sha256:", "no response for 2 s"],
        ),
    ];
    std::thread::scope(|scope| {
        for (i, (stall, command, words)) in cases.iter().enumerate() {
            let (cache, archive) = (&cache, &archive);
            scope.spawn(move || {
                let server = StallServer::start(*stall);
                let image = format!("{}/x/stalled:1", server.addr);
                let mut c = common::lade(cache);
                c.timeout(std::time::Duration::from_secs(90));
                if *command == "pull" {
                    c.args(["pull", &image]);
                } else {
                    c.args(["push", "--push-jobs", "1"])
                        .arg(archive)
                        .arg(&image);
                }
                if i % 2 == 0 {
                    c.args(["--registry-timeout", "2"]);
                } else {
                    c.env("LADE_REGISTRY_TIMEOUT", "2");
                }
                // A child killed at 90 s has no exit code: this fails then.
                let err = one_error_line(&mut c);
                for w in words.iter().chain([&server.addr.as_str()]) {
                    assert!(err.contains(w), "{stall:?} {command}: {w:?} not in {err}");
                }
                if *stall != Stall::Silent {
                    // Retried as transient, but boundedly (5 attempts).
                    let n = server.stalled_requests().len();
                    assert!((2..=5).contains(&n), "{stall:?} {command}: {n} attempts");
                }
            });
        }
    });
}

/// A `400` (here to the final `PUT ?digest=` of each blob) is a permanent error: one request
/// per blob, then exit 1 naming the status, not five attempts and a re-upload each time.
#[test]
fn a_400_to_an_upload_is_one_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let (cache, archive) = hello_archive(tmp.path());
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    {
        let mut f = proxy.faults.lock().unwrap();
        f.fail_status = 400;
        f.fail_path = "digest=sha256".into();
        f.fail_always = true;
        f.retry_after = Some(String::new());
    }
    let err = one_error_line(
        common::lade(&cache)
            .timeout(std::time::Duration::from_secs(90))
            .args(["push", "--push-jobs", "1"])
            .arg(&archive)
            .arg(format!(
                "{}/lade-test/bad-request-{}:1",
                proxy.addr,
                std::process::id()
            )),
    );
    assert!(err.contains("400"), "{err}");
    assert!(err.contains(&proxy.addr), "{err}");
    let puts: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("digest=sha256"))
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
}

/// A registry answering `HEAD` with 200 for every blob, but with a size that is not the
/// blob's: the push uploads every blob instead of trusting it (the manifest push would
/// otherwise fail, or worse, succeed on a registry that has nothing).
#[test]
fn a_blob_head_with_the_wrong_size_does_not_skip_the_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let (cache, archive) = hello_archive(tmp.path());
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    proxy.faults.lock().unwrap().head_lie = true;
    let repo = format!("lade-test/head-liar-{}", std::process::id());
    common::lade(&cache)
        .timeout(std::time::Duration::from_secs(90))
        .arg("push")
        .arg(&archive)
        .arg(format!("{}/{repo}:1", proxy.addr))
        .assert()
        .success();
    let seen = proxy.seen();
    let heads = seen.iter().filter(|s| s.method == "HEAD").count();
    let uploads = seen
        .iter()
        .filter(|s| s.method == "PUT" && s.path.contains("digest=sha256"))
        .count();
    assert!(heads >= 2, "{seen:?}");
    assert_eq!(
        uploads, heads,
        "every blob HEAD lied, so every blob is uploaded: {seen:?}"
    );
    let out = common::skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/{repo}:1", reg.addr),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
