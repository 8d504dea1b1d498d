//! Registry client against the real CNCF distribution registry (`docker-registry`): the one CI
//! starts (`LADE_TEST_REGISTRY`, `LADE_TEST_TLS_*`) or, when unset, one started per test.

mod common;
mod registry_support;

use common::noise;
use lade::digest::Digest;
use lade::image::{
    canonical_json, media_types as mt, Descriptor, ImageConfig, Index, Manifest, Platform, RootFs,
};
use lade::registry::{
    login, AuthConfig, Client, ClientOptions, Credentials, PullOptions, PushOptions, PushReport,
    Reference, RegistryError, RetryPolicy,
};
use lade::store::Store;
use registry_support::{FaultProxy, StubRegistry, TestRegistry, TokenServer};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn opts() -> ClientOptions {
    ClientOptions {
        auth: AuthConfig::default(),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        connect_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    }
}

fn client() -> Client {
    Client::new(opts()).unwrap()
}

/// A unique repository name per test run (the CI registry is shared).
fn repo_name(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("lade-test/{name}-{}-{nanos}", std::process::id())
}

fn reference(addr: &str, repo: &str, tag: &str) -> Reference {
    Reference::parse(&format!("{addr}/{repo}:{tag}")).unwrap()
}

struct TestImage {
    manifest_bytes: Vec<u8>,
    digest: Digest,
    manifest: Manifest,
}

/// A small image built straight into the store: one gzip layer, a config, an OCI manifest.
fn build_image(store: &Store, payload: &[u8], arch: &str) -> TestImage {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(payload).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = store.put_bytes(&layer).unwrap();
    let config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![Digest::of(payload)],
        },
        ..ImageConfig::default()
    };
    let config_bytes = canonical_json(&config).unwrap();
    let config_digest = store.put_bytes(&config_bytes).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(mt::OCI_MANIFEST.into()),
        config: Descriptor::new(mt::OCI_CONFIG, config_digest, config_bytes.len() as u64),
        layers: vec![Descriptor::new(
            mt::OCI_LAYER_GZIP,
            layer_digest,
            layer.len() as u64,
        )],
        annotations: None,
    };
    let manifest_bytes = canonical_json(&manifest).unwrap();
    store.put_bytes(&manifest_bytes).unwrap();
    TestImage {
        digest: Digest::of(&manifest_bytes),
        manifest_bytes,
        manifest,
    }
}

/// A registry behind a fault proxy, and an amd64 image of `payload` in a fresh store (kept
/// alive by the `TempDir`): the set-up of every fault test, which then sets its own faults.
fn proxied(
    payload: &[u8],
) -> (
    TestRegistry,
    FaultProxy,
    tempfile::TempDir,
    Store,
    TestImage,
) {
    let reg = TestRegistry::open();
    let proxy = FaultProxy::start(reg.socket_addr());
    let (dir, store) = new_store();
    let img = build_image(&store, payload, "amd64");
    (reg, proxy, dir, store, img)
}

/// Push options that upload one blob at a time, so that the requests a fault hits come in a
/// known order.
fn one_at_a_time() -> PushOptions {
    PushOptions {
        jobs: 1,
        ..PushOptions::default()
    }
}

fn new_store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    (d, s)
}

/// Whether a tag exists, asked directly over HTTP (no lade code involved).
fn tag_exists(addr: &str, repo: &str, tag: &str) -> bool {
    let resp = reqwest::blocking::Client::new()
        .head(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("Accept", mt::OCI_MANIFEST)
        .send()
        .unwrap();
    resp.status().is_success()
}

fn skopeo_digest(addr: &str, repo: &str, tag: &str) -> String {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            &format!("docker://{addr}/{repo}:{tag}"),
        ])
        .output()
        .expect("skopeo must be installed");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

/// Pushes `img` straight to `reg` (no proxy, no faults) as `<new repository>:t`, for tests
/// that then pull it back through a proxy; returns the repository.
fn pushed(reg: &TestRegistry, store: &Store, img: &TestImage, name: &str) -> String {
    let repo = repo_name(name);
    client()
        .push_tagged(
            store,
            img,
            &reference(&reg.addr, &repo, "t"),
            &PushOptions::default(),
        )
        .unwrap();
    repo
}

/// Asserts that `client` pulls `img` from `target` into a fresh store.
fn assert_pulls(client: &Client, target: &Reference, img: &TestImage) {
    let (_d, store) = new_store();
    let pulled = client
        .pull(&store, target, &PullOptions::default())
        .unwrap();
    assert_eq!(pulled.image.manifest_digest, img.digest, "{target:?}");
}

/// Asserts that an independent client (skopeo) finds `img` under `addr/repo:tag`.
fn assert_serves(addr: &str, repo: &str, tag: &str, img: &TestImage) {
    assert_eq!(
        skopeo_digest(addr, repo, tag),
        img.digest.to_string(),
        "{addr}/{repo}:{tag}"
    );
}

/// Most pushes here send one `TestImage` under its target's own tag; the test still names
/// the store, target and options it pushes with.
trait PushTagged {
    fn push_tagged(
        &self,
        store: &Store,
        img: &TestImage,
        target: &Reference,
        opts: &PushOptions,
    ) -> Result<PushReport, RegistryError>;
}

impl PushTagged for Client {
    fn push_tagged(
        &self,
        store: &Store,
        img: &TestImage,
        target: &Reference,
        opts: &PushOptions,
    ) -> Result<PushReport, RegistryError> {
        let tags: Vec<String> = target.tag.iter().cloned().collect();
        self.push_image(
            store,
            target,
            &img.manifest_bytes,
            mt::OCI_MANIFEST,
            &tags,
            opts,
        )
    }
}

fn one_line(e: &RegistryError) -> String {
    let s = e.to_string();
    eprintln!("error message: {s}");
    assert!(!s.contains('\n'), "error is not one line: {s}");
    s
}

#[test]
fn round_trip_push_skopeo_pull_repush_and_mount() {
    let reg = TestRegistry::open();
    let (_d, store) = new_store();
    let img = build_image(&store, &noise(64 * 1024, 1), "amd64");
    let client = client();
    let repo1 = repo_name("roundtrip");
    let target = reference(&reg.addr, &repo1, "v1");
    let tags = vec!["v1".to_string(), "latest".to_string()];
    // Pushed twice under both tags: the second push finds everything there.
    let push_both_tags = || {
        client
            .push_image(
                &store,
                &target,
                &img.manifest_bytes,
                mt::OCI_MANIFEST,
                &tags,
                &PushOptions::default(),
            )
            .unwrap()
    };

    let report = push_both_tags();
    assert_eq!(report.manifest_digest, img.digest);
    assert_eq!(report.blobs_uploaded, 2);
    assert_eq!(report.blobs_skipped + report.blobs_mounted, 0);
    let blob_bytes: u64 = img.manifest.layers[0].size + img.manifest.config.size;
    assert_eq!(report.bytes_uploaded, blob_bytes);
    assert_eq!(
        report.references,
        vec![
            format!("{}/{repo1}:v1", reg.addr),
            format!("{}/{repo1}:latest", reg.addr),
            format!("{}/{repo1}@{}", reg.addr, img.digest),
        ]
    );

    // An independent client sees the same digest under both tags.
    assert_serves(&reg.addr, &repo1, "v1", &img);
    assert_serves(&reg.addr, &repo1, "latest", &img);
    assert_eq!(client.manifest_digest(&target).unwrap(), img.digest);

    // Pull into a fresh store: same manifest and blobs.
    let (_d2, store2) = new_store();
    let pulled = client
        .pull(&store2, &target, &PullOptions::default())
        .unwrap();
    assert_eq!(pulled.image.manifest_digest, img.digest);
    assert_eq!(pulled.image.manifest_bytes, img.manifest_bytes);
    assert_eq!(pulled.image.index_digest, None);
    assert_eq!(pulled.blobs_fetched, 2);
    for d in std::iter::once(&img.manifest.config).chain(&img.manifest.layers) {
        assert_eq!(
            store2.read_blob(&d.digest).unwrap(),
            store.read_blob(&d.digest).unwrap()
        );
    }
    assert_eq!(
        pulled.image.config_bytes,
        store.read_blob(&img.manifest.config.digest).unwrap()
    );
    // A second pull downloads nothing.
    let again = client
        .pull(&store2, &target, &PullOptions::default())
        .unwrap();
    assert_eq!((again.blobs_fetched, again.bytes_fetched), (0, 0));
    // By digest, too.
    let by_digest = Reference::parse(&format!("{}/{repo1}@{}", reg.addr, img.digest)).unwrap();
    assert_eq!(
        client
            .pull(&store2, &by_digest, &PullOptions::default())
            .unwrap()
            .image
            .manifest_digest,
        img.digest
    );

    // Second push: everything exists, 0 bytes uploaded.
    let report = push_both_tags();
    assert_eq!(report.bytes_uploaded, 0);
    assert_eq!((report.blobs_skipped, report.blobs_uploaded), (2, 0));

    // Another repository on the same registry: blobs are mounted, not uploaded.
    let repo2 = repo_name("mounted");
    let target2 = reference(&reg.addr, &repo2, "m");
    let report = client
        .push_tagged(
            &store,
            &img,
            &target2,
            &PushOptions {
                mount_from: Some(target.clone()),
                ..PushOptions::default()
            },
        )
        .unwrap();
    assert_eq!(report.bytes_uploaded, 0);
    assert_eq!((report.blobs_mounted, report.blobs_uploaded), (2, 0));
    assert_serves(&reg.addr, &repo2, "m", &img);
}

#[test]
fn multi_platform_index_push_and_platform_pull() {
    let reg = TestRegistry::open();
    let (_d, store) = new_store();
    let amd = build_image(&store, b"amd64 payload", "amd64");
    let arm = build_image(&store, b"arm64 payload", "arm64");
    let desc = |img: &TestImage, p: &str| {
        let mut d = Descriptor::new(
            mt::OCI_MANIFEST,
            img.digest.clone(),
            img.manifest_bytes.len() as u64,
        );
        d.platform = Some(p.parse().unwrap());
        d
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(mt::OCI_INDEX.into()),
        manifests: vec![desc(&amd, "linux/amd64"), desc(&arm, "linux/arm64")],
        annotations: None,
    };
    let index_bytes = canonical_json(&index).unwrap();
    let client = client();
    let repo = repo_name("multi");
    let target = reference(&reg.addr, &repo, "multi");
    let report = client
        .push_image(
            &store,
            &target,
            &index_bytes,
            mt::OCI_INDEX,
            &["multi".into()],
            &PushOptions::default(),
        )
        .unwrap();
    assert_eq!(report.manifest_digest, Digest::of(&index_bytes));
    assert_eq!(report.blobs_uploaded, 4);
    assert_eq!(
        client.manifest_digest(&target).unwrap(),
        Digest::of(&index_bytes)
    );

    let (_d2, store2) = new_store();
    let opts = PullOptions {
        platform: "linux/arm64/v8".parse::<Platform>().unwrap(),
        jobs: 2,
    };
    let pulled = client.pull(&store2, &target, &opts).unwrap();
    assert_eq!(pulled.image.manifest_digest, arm.digest);
    assert_eq!(pulled.image.index_digest, Some(Digest::of(&index_bytes)));
    assert!(store2.has_blob(&Digest::of(&index_bytes)));
    let err = client
        .pull(
            &store2,
            &target,
            &PullOptions {
                platform: "linux/s390x".parse().unwrap(),
                jobs: 1,
            },
        )
        .unwrap_err();
    let msg = one_line(&err);
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{msg}"
    );
    assert!(msg.contains("linux/amd64, linux/arm64"), "{msg}");
}

#[test]
fn chunked_upload_resumes_after_dropped_connection() {
    let (reg, proxy, _d, store, img) = proxied(&noise(3 << 20, 7));
    let layer = img.manifest.layers[0].size;
    assert!(layer > 3_000_000, "layer should be large: {layer}");
    // Cut the connection 300 KiB into the first large request body.
    proxy.faults.lock().unwrap().drop_body_after = Some(300 * 1024);
    let client = client();
    let repo = repo_name("chunked");
    let target = reference(&proxy.addr, &repo, "big");
    let opts = PushOptions {
        monolithic_limit: 1 << 20,
        chunk_size: 1 << 20,
        ..PushOptions::default()
    };
    let report = client.push_tagged(&store, &img, &target, &opts).unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    assert_eq!(proxy.drops(), 1);
    let seen = proxy.seen();
    let patches = seen.iter().filter(|s| s.method == "PATCH").count();
    assert!(patches >= 4, "expected chunked PATCHes, saw {patches}");
    // After the drop the client asked the registry for the upload's state.
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path.contains("/blobs/uploads/")),
        "no upload status request: {seen:?}"
    );
    // The registry has exactly our bytes.
    assert_serves(&reg.addr, &repo, "big", &img);
    let (_d2, store2) = new_store();
    client
        .pull(
            &store2,
            &reference(&reg.addr, &repo, "big"),
            &PullOptions::default(),
        )
        .unwrap();
    assert_eq!(
        store2.read_blob(&img.manifest.layers[0].digest).unwrap(),
        store.read_blob(&img.manifest.layers[0].digest).unwrap()
    );

    // A connection cut before any byte of the third chunk reached the registry: the
    // registry still has the session, so the client resumes at its reported offset instead
    // of starting over (one upload session, an upload-status GET answered 204).
    let repo2 = repo_name("resumed");
    {
        let mut f = proxy.faults.lock().unwrap();
        f.drop_body_after = Some(0);
        f.drop_skip = 2;
    }
    let before = proxy.seen().len();
    let report = client
        .push_tagged(
            &store,
            &img,
            &reference(&proxy.addr, &repo2, "big"),
            &PushOptions { jobs: 1, ..opts },
        )
        .unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    assert_eq!(proxy.drops(), 2);
    let seen = &proxy.seen()[before..];
    let posts = seen.iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 2, "one session per blob (no restart): {seen:?}");
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path.contains("/blobs/uploads/") && s.status == 204),
        "{seen:?}"
    );
    // Only the bytes of the layer and config were sent (no chunk sent twice).
    assert_eq!(
        report.bytes_uploaded,
        img.manifest.layers[0].size + img.manifest.config.size
    );
    assert_serves(&reg.addr, &repo2, "big", &img);
}

#[test]
fn monolithic_upload_survives_dropped_connection() {
    let (reg, proxy, _d, store, img) = proxied(&noise(200 * 1024, 9));
    proxy.faults.lock().unwrap().drop_body_after = Some(50 * 1024);
    let repo = repo_name("mono-drop");
    let report = client()
        .push_tagged(
            &store,
            &img,
            &reference(&proxy.addr, &repo, "t"),
            &PushOptions::default(),
        )
        .unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    assert_eq!(proxy.drops(), 1);
    assert_serves(&reg.addr, &repo, "t", &img);
    // docker-registry drops a session whose PUT broke after some bytes arrived (its state
    // token's offset no longer matches), so that upload started over. A PUT cut before any
    // byte arrived leaves the session as it was: the client asks for its offset and
    // finishes in the same session instead of opening another.
    let repo2 = repo_name("mono-resume");
    {
        let mut f = proxy.faults.lock().unwrap();
        f.drop_body_after = Some(0);
    }
    let before = proxy.seen().len();
    let report = client()
        .push_tagged(
            &store,
            &img,
            &reference(&proxy.addr, &repo2, "t"),
            &one_at_a_time(),
        )
        .unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    assert_eq!(proxy.drops(), 2);
    let seen = &proxy.seen()[before..];
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path.contains("/blobs/uploads/") && s.status == 204),
        "{seen:?}"
    );
    let posts = seen.iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 2, "one session per blob: {seen:?}");
    assert_serves(&reg.addr, &repo2, "t", &img);
}

#[test]
fn retries_500_and_429_then_succeeds() {
    let (reg, proxy, _d, store, img) = proxied(&noise(10_000, 3));
    let client = client();
    let repo = repo_name("retry");
    {
        let mut f = proxy.faults.lock().unwrap();
        f.fail_next = 3;
        f.fail_status = 500;
    }
    let target = reference(&proxy.addr, &repo, "r");
    let report = client
        .push_tagged(&store, &img, &target, &one_at_a_time())
        .unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    assert_eq!(proxy.seen().iter().filter(|s| s.status == 500).count(), 3);
    // 429 with Retry-After: 0 on uploads, during a push to another repository.
    {
        let mut f = proxy.faults.lock().unwrap();
        f.fail_next = 2;
        f.fail_status = 429;
        f.fail_path = "/blobs/uploads/".into();
    }
    let repo2 = repo_name("retry429");
    let report = client
        .push_tagged(
            &store,
            &img,
            &reference(&proxy.addr, &repo2, "r"),
            &PushOptions::default(),
        )
        .unwrap();
    assert_eq!(report.blobs_uploaded, 2);
    assert_eq!(proxy.seen().iter().filter(|s| s.status == 429).count(), 2);
    assert_serves(&reg.addr, &repo2, "r", &img);
    // And pulls retry too.
    {
        let mut f = proxy.faults.lock().unwrap();
        f.fail_next = 2;
        f.fail_status = 503;
        f.fail_path = String::new();
    }
    assert_pulls(&client, &target, &img);
}

#[test]
fn failing_registry_gives_bounded_clear_error_and_no_manifest() {
    let (reg, proxy, _d, store, img) = proxied(&noise(10_000, 4));
    {
        let mut f = proxy.faults.lock().unwrap();
        f.fail_always = true;
        f.fail_status = 503;
        f.fail_path = "/blobs/uploads/".into();
    }
    let repo = repo_name("down");
    let started = std::time::Instant::now();
    let err = client()
        .push_tagged(
            &store,
            &img,
            &reference(&proxy.addr, &repo, "never"),
            &PushOptions::default(),
        )
        .unwrap_err();
    let msg = one_line(&err);
    assert!(
        matches!(err, RegistryError::RetriesExhausted { attempts: 4, .. }),
        "{msg}"
    );
    assert!(msg.contains("blob sha256:"), "{msg}");
    assert!(msg.contains("503"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Bounded: at most 4 attempts per blob (2 blobs).
    let failed = proxy.seen().iter().filter(|s| s.status == 503).count();
    assert!(failed <= 8, "{failed} failed requests");
    assert!(!proxy.seen().iter().any(|s| s.path.contains("/manifests/")));
    assert!(!tag_exists(&reg.addr, &repo, "never"));
}

#[test]
fn clear_errors() {
    let reg = TestRegistry::open();
    let client = client();
    let (_d, store) = new_store();

    // Unknown host.
    let err = client
        .manifest_digest(&Reference::parse("no-such-host.invalid/x:1").unwrap())
        .unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::Connect { .. }), "{msg}");
    assert!(msg.contains("no-such-host.invalid"), "{msg}");

    // Nothing listening: bounded retries, then a clear error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = client
        .manifest_digest(&Reference::parse(&format!("127.0.0.1:{port}/x:1")).unwrap())
        .unwrap_err();
    let msg = one_line(&err);
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");

    // 404 tag.
    let missing = reference(&reg.addr, &repo_name("missing"), "nope");
    let err = client
        .pull(&store, &missing, &PullOptions::default())
        .unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::NotFound { .. }), "{msg}");
    assert!(msg.contains(":nope"), "{msg}");
    let err = client.manifest_digest(&missing).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");

    // Digest mismatch: a proxy flips a byte of every blob download.
    let img = build_image(&store, &noise(5_000, 5), "amd64");
    let repo = pushed(&reg, &store, &img, "lying");
    let proxy = FaultProxy::start(reg.socket_addr());
    proxy.faults.lock().unwrap().corrupt_blobs = true;
    let (_d2, store2) = new_store();
    let err = client
        .pull(
            &store2,
            &reference(&proxy.addr, &repo, "t"),
            &PullOptions::default(),
        )
        .unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{msg}");
    assert!(msg.contains("does not match its digest"), "{msg}");
    assert!(!store2.has_blob(&img.manifest.config.digest));

    // A blob missing from the store fails before any upload.
    let (_d3, empty) = new_store();
    let err = client
        .push_tagged(
            &empty,
            &img,
            &reference(&reg.addr, &repo, "x"),
            &PushOptions::default(),
        )
        .unwrap_err();
    assert!(one_line(&err).contains("missing from the store"), "{err}");
}

#[test]
fn schema1_manifests_are_refused_clearly() {
    // The real registry refuses schema 1 uploads, so a stub serves them, as old registries do:
    // signed (by media type), unsigned, and one only recognisable by its shape.
    let schema1 = br#"{"schemaVersion":1,"name":"x/old","tag":"1","architecture":"amd64","fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],"history":[{"v1Compatibility":"{}"}]}"#.to_vec();
    let stub = StubRegistry::start(vec![
        (
            "/v2/x/old/manifests/signed".into(),
            mt::DOCKER_SCHEMA1_SIGNED.into(),
            schema1.clone(),
        ),
        (
            "/v2/x/old/manifests/unsigned".into(),
            mt::DOCKER_SCHEMA1.into(),
            schema1.clone(),
        ),
        (
            "/v2/x/old/manifests/plain".into(),
            "application/json".into(),
            schema1,
        ),
    ]);
    let (_d, store) = new_store();
    let client = client();
    for tag in ["signed", "unsigned", "plain"] {
        let r = reference(&stub.addr, "x/old", tag);
        let err = client
            .pull(&store, &r, &PullOptions::default())
            .unwrap_err();
        let msg = one_line(&err);
        assert!(
            matches!(err, RegistryError::UnsupportedManifest { .. }),
            "{tag}: {msg}"
        );
        assert!(msg.contains("schema 1"), "{tag}: {msg}");
        assert!(msg.contains(&format!("x/old:{tag}")), "{tag}: {msg}");
    }
    // Not found stays not found.
    let err = client
        .pull(
            &store,
            &reference(&stub.addr, "x/old", "missing"),
            &PullOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

/// Retries of one kind of failure, measured: the proxy answers the first upload request of
/// a push with `status` (and `Retry-After: retry_after`); returns the time from that answer
/// to the next request of the push.
fn wait_after_failure(status: u16, retry_after: &str) -> Duration {
    let (reg, proxy, _d, store, img) = proxied(&noise(10_000, 21));
    {
        let mut f = proxy.faults.lock().unwrap();
        f.fail_next = 1;
        f.fail_status = status;
        f.fail_path = "/blobs/uploads/".into();
        f.retry_after = Some(retry_after.into());
    }
    // A backoff of 5 ms: a wait of a second can only come from Retry-After; max_delay
    // large enough not to cut it short.
    let client = Client::new(ClientOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(10),
        },
        ..opts()
    })
    .unwrap();
    let repo = repo_name(&format!("retry-after-{status}"));
    let report = client
        .push_tagged(
            &store,
            &img,
            &reference(&proxy.addr, &repo, "t"),
            &one_at_a_time(),
        )
        .unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    assert_serves(&reg.addr, &repo, "t", &img);
    let seen = proxy.seen();
    let i = seen.iter().position(|s| s.status == status).unwrap();
    assert_eq!(
        seen.iter().filter(|s| s.status == status).count(),
        1,
        "{seen:?}"
    );
    let next = &seen[i + 1];
    next.at.duration_since(seen[i].at)
}

#[test]
fn retry_after_in_seconds_is_honoured() {
    let waited = wait_after_failure(429, "1");
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert!(waited < Duration::from_millis(2500), "waited {waited:?}");
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    // Two seconds from now, in whole seconds: the wait is between 1 and 2 s.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{at}"), "+%a, %d %b %Y %H:%M:%S GMT"])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let date = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let waited = wait_after_failure(503, &date);
    assert!(waited >= Duration::from_millis(900), "{date}: {waited:?}");
    assert!(waited < Duration::from_millis(3000), "{date}: {waited:?}");
}

#[test]
fn request_timeout_408_is_retried_with_backoff() {
    let waited = wait_after_failure(408, "");
    assert!(waited < Duration::from_millis(900), "waited {waited:?}");
}
#[test]
fn tls_registry_with_basic_auth() {
    let reg = TestRegistry::tls_auth();
    let ca = reg.ca.clone().unwrap();
    let (user, password) = (reg.user.clone().unwrap(), reg.password.clone().unwrap());
    let (_d, store) = new_store();
    let img = build_image(&store, &noise(20_000, 11), "amd64");
    let repo = repo_name("tls");
    let target = reference(&reg.addr, &repo, "secure");
    let push = |client: &Client| client.push_tagged(&store, &img, &target, &PushOptions::default());

    // Untrusted certificate: a TLS error, not a silent fallback to HTTP.
    let err = push(&client()).unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::Tls { .. }), "{msg}");
    assert!(msg.contains("--registry-ca"), "{msg}");

    let with_ca = |auth: AuthConfig| {
        Client::new(ClientOptions {
            ca_files: vec![ca.clone()],
            auth,
            ..opts()
        })
        .unwrap()
    };
    // Trusted, but no credentials.
    let err = push(&with_ca(AuthConfig::default())).unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("log in"), "{msg}");

    // Wrong password: clear, and the password is not in the message.
    let mut wrong = AuthConfig::default();
    wrong.explicit.insert(
        reg.addr.clone(),
        Credentials::Basic {
            username: user.clone(),
            password: "wrong-password-xyz".into(),
        },
    );
    let err = push(&with_ca(wrong)).unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(!msg.contains("wrong-password-xyz"));

    // login: wrong password refused and nothing written; right one written with 0600.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("config.json");
    let login_opts = ClientOptions {
        ca_files: vec![ca.clone()],
        ..opts()
    };
    let err = login(&login_opts, &reg.addr, &user, "nope-nope", Some(&cfg)).unwrap_err();
    let msg = one_line(&err);
    assert!(msg.contains("wrong username or password"), "{msg}");
    assert!(!msg.contains("nope-nope"));
    assert!(!cfg.exists());
    login(&login_opts, &reg.addr, &user, &password, Some(&cfg)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Credentials from the written config.json: push and pull work.
    let client = with_ca(AuthConfig::from_file(&cfg));
    let report = push(&client).unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    assert_pulls(&client, &target, &img);

    // --insecure-registry for this host: TLS without verification works, no CA needed.
    let insecure = Client::new(ClientOptions {
        insecure_registries: vec![reg.addr.clone()],
        auth: AuthConfig::from_file(&cfg),
        ..opts()
    })
    .unwrap();
    assert_eq!(insecure.manifest_digest(&target).unwrap(), img.digest);
}

#[test]
fn bearer_token_flow_with_expiry_mid_push() {
    let (reg, proxy, _d, store, img) = proxied(&noise(30_000, 12));
    // Tokens are good for 3 requests only, so they expire many times during one push.
    let ts = TokenServer::start(3, Some(("tok-user", "tok-pass")));
    proxy.faults.lock().unwrap().bearer = Some(ts.clone());
    let repo1 = repo_name("bearer");
    let target = reference(&proxy.addr, &repo1, "b");

    // Anonymous: the token server refuses, and the error says so.
    let err = client()
        .push_tagged(&store, &img, &target, &PushOptions::default())
        .unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");

    let mut auth = AuthConfig::default();
    auth.explicit.insert(
        proxy.addr.clone(),
        Credentials::Basic {
            username: "tok-user".into(),
            password: "tok-pass".into(),
        },
    );
    let client = Client::new(ClientOptions { auth, ..opts() }).unwrap();
    let report = client
        .push_tagged(&store, &img, &target, &one_at_a_time())
        .unwrap();
    assert_eq!(report.manifest_digest, img.digest);
    let issued = ts.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        issued >= 3,
        "tokens should have been renewed mid-push, issued {issued}"
    );
    assert!(
        ts.scopes
            .lock()
            .unwrap()
            .contains(&format!("repository:{repo1}:pull,push")),
        "{:?}",
        ts.scopes.lock().unwrap()
    );
    assert_serves(&reg.addr, &repo1, "b", &img);

    // Mount from another repository: the token asks for pull on the source too.
    let repo2 = repo_name("bearer-mount");
    let report = client
        .push_tagged(
            &store,
            &img,
            &reference(&proxy.addr, &repo2, "m"),
            &PushOptions {
                mount_from: Some(target.clone()),
                ..PushOptions::default()
            },
        )
        .unwrap();
    assert_eq!(report.blobs_mounted, 2);
    assert!(ts
        .scopes
        .lock()
        .unwrap()
        .contains(&format!("repository:{repo1}:pull")));

    // Pull through the token flow.
    assert_pulls(&client, &target, &img);
}

#[test]
fn identity_token_is_exchanged_with_an_oauth2_refresh_token_post() {
    let (_reg, proxy, _d, store, img) = proxied(&noise(8_000, 31));
    // GET token requests would need basic credentials the client does not have: only the
    // refresh-token POST can get a token.
    let ts = TokenServer::start(100, Some(("nobody", "nothing")));
    proxy.faults.lock().unwrap().bearer = Some(ts.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    let write_cfg = |token: &str| {
        std::fs::write(
            &cfg,
            serde_json::json!({"auths": {proxy.addr.clone(): {"auth": "", "identitytoken": token}}})
                .to_string(),
        )
        .unwrap()
    };
    let client_from_cfg = || {
        Client::new(ClientOptions {
            auth: AuthConfig::from_file(&cfg),
            ..opts()
        })
        .unwrap()
    };
    let repo = repo_name("identitytoken");
    let target = reference(&proxy.addr, &repo, "t");
    let push = |c: &Client| c.push_tagged(&store, &img, &target, &PushOptions::default());

    write_cfg("good-refresh-token");
    let client = client_from_cfg();
    assert_eq!(push(&client).unwrap().manifest_digest, img.digest);
    assert_pulls(&client, &target, &img);
    let posts = ts.posts.lock().unwrap().clone();
    assert!(!posts.is_empty());
    assert_eq!(
        ts.bad_credentials.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let form: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{}", posts[0]))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {k} in {form:?}"))
    };
    assert_eq!(get("grant_type"), "refresh_token");
    assert_eq!(get("refresh_token"), "good-refresh-token");
    assert_eq!(get("service"), "lade-test-registry");
    assert_eq!(get("scope"), format!("repository:{repo}:pull,push"));
    assert!(!get("client_id").is_empty());

    // A revoked refresh token: one clear line, without the token.
    write_cfg("revoked-refresh-token-77");
    let err = push(&client_from_cfg()).unwrap_err();
    let msg = one_line(&err);
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{msg}");
    assert!(!msg.contains("revoked-refresh-token-77"), "{msg}");
}

#[test]
fn anonymous_bearer_token_flow_pulls() {
    let reg = TestRegistry::open();
    let (_d, store) = new_store();
    let img = build_image(&store, &noise(8_000, 32), "arm64");
    let repo = pushed(&reg, &store, &img, "anonymous");
    // Behind the proxy every request needs a bearer token; the token server grants one to
    // anyone (like Docker Hub for public images).
    let proxy = FaultProxy::start(reg.socket_addr());
    let ts = TokenServer::start(100, None);
    proxy.faults.lock().unwrap().bearer = Some(ts.clone());
    let target = reference(&proxy.addr, &repo, "t");
    let (_d2, store2) = new_store();
    let client = client();
    let pulled = client
        .pull(&store2, &target, &PullOptions::default())
        .unwrap();
    assert_eq!(pulled.image.manifest_digest, img.digest);
    assert_eq!(client.manifest_digest(&target).unwrap(), img.digest);
    assert!(ts.issued.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(
        ts.scopes
            .lock()
            .unwrap()
            .contains(&format!("repository:{repo}:pull")),
        "{:?}",
        ts.scopes.lock().unwrap()
    );
    assert!(ts.posts.lock().unwrap().is_empty());
    // Every request that reached the registry carried a token.
    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s.status == 401), "{seen:?}");
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path.contains("/blobs/sha256:") && s.status == 200),
        "{seen:?}"
    );
}

#[test]
fn a_download_cut_mid_blob_is_retried_and_verified() {
    let reg = TestRegistry::open();
    let (_d, store) = new_store();
    let img = build_image(&store, &noise(1 << 20, 33), "amd64");
    let repo = pushed(&reg, &store, &img, "cut-download");
    let proxy = FaultProxy::start(reg.socket_addr());
    let layer = &img.manifest.layers[0];
    // Config first is small; cut the first blob download larger than 100 KiB (the layer).
    proxy.faults.lock().unwrap().cut_download_after = Some(100 * 1024);
    let (_d2, store2) = new_store();
    let pulled = client()
        .pull(
            &store2,
            &reference(&proxy.addr, &repo, "t"),
            &PullOptions::default(),
        )
        .unwrap();
    assert_eq!(pulled.image.manifest_digest, img.digest);
    assert_eq!(proxy.drops(), 1);
    let layer_gets = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.path.ends_with(&format!("/blobs/{}", layer.digest)))
        .count();
    assert_eq!(layer_gets, 2, "{:?}", proxy.seen());
    assert_eq!(
        store2.read_blob(&layer.digest).unwrap(),
        store.read_blob(&layer.digest).unwrap()
    );
}
