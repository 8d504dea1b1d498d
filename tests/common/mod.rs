//! Shared helpers for the integration tests (`mod common;` in each test file): the services that
//! `cargo xtask test` starts, thin wrappers around the reference tools (docker, skopeo, umoci), a
//! busybox root filesystem, the `lade` binary, and validation against the OCI image-spec schemas.
//!
//! Services: `cargo xtask test` always starts a private dockerd and two registries on 127.0.0.1 and
//! describes them in `LADE_TEST_*` variables (see `xtask/src/test.rs`). A test that needs them
//! calls [`require_services`], which **fails** the test when they are missing — it never skips,
//! because a skipped test would let a run without services look green. Plain `cargo test` (or
//! `cargo xtask test --no-services`) therefore fails those tests; run `cargo xtask test`.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The services described by the `LADE_TEST_*` environment.
#[derive(Debug, Clone)]
pub struct Services {
    /// The docker CLI (`LADE_TEST_DOCKER`).
    pub docker: PathBuf,
    /// `unix:///...` of the private dockerd (`LADE_TEST_DOCKER_HOST`).
    pub docker_host: String,
    /// An empty `DOCKER_CONFIG` directory (`LADE_TEST_DOCKER_CONFIG`), if given.
    pub docker_config: Option<PathBuf>,
    /// `127.0.0.1:PORT`: plain HTTP, no auth, delete enabled (`LADE_TEST_REGISTRY`).
    pub registry: String,
    /// `127.0.0.1:PORT`: HTTPS with basic auth (`LADE_TEST_TLS_REGISTRY`).
    pub tls_registry: String,
    /// PEM of the CA of the TLS registry (`LADE_TEST_TLS_CA`).
    pub tls_ca: PathBuf,
    /// A directory with that CA as `ca.crt`, for `--cert-dir` options (`LADE_TEST_TLS_CERT_DIR`).
    pub tls_cert_dir: PathBuf,
    pub tls_user: String,
    pub tls_password: String,
}

/// The services, if the environment describes them (`LADE_TEST_SERVICES=1`).
pub fn services() -> Option<Services> {
    if std::env::var("LADE_TEST_SERVICES").ok()? != "1" {
        return None;
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let docker_host = var("LADE_TEST_DOCKER_HOST")?;
    let tls_ca = PathBuf::from(var("LADE_TEST_TLS_CA")?);
    Some(Services {
        docker: var("LADE_TEST_DOCKER")
            .unwrap_or_else(|| "/usr/bin/docker".into())
            .into(),
        docker_host,
        docker_config: var("LADE_TEST_DOCKER_CONFIG").map(PathBuf::from),
        registry: var("LADE_TEST_REGISTRY")?,
        tls_registry: var("LADE_TEST_TLS_REGISTRY")?,
        tls_cert_dir: var("LADE_TEST_TLS_CERT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| tls_ca.parent().unwrap_or(Path::new("/")).to_path_buf()),
        tls_ca,
        tls_user: var("LADE_TEST_TLS_USER")?,
        tls_password: var("LADE_TEST_TLS_PASSWORD")?,
    })
}

/// The services, or a test failure saying how to get them.
#[track_caller]
pub fn require_services() -> Services {
    match services() {
        Some(s) => s,
        None => panic!(
            "this test needs dockerd and the test registries: run it through `cargo xtask test` \
             (LADE_TEST_SERVICES and the other LADE_TEST_* variables are not set)"
        ),
    }
}

/// The Debian bookworm bases `cargo xtask test` makes once with debootstrap (xtask/src/debian.rs).
pub struct DebianBases {
    /// `oci:DIR:TAG` of the minbase (`LADE_TEST_DEBIAN_LAYOUT`).
    pub minbase: String,
    /// `oci:DIR:TAG` of the minbase + python3, pip, gcc, libc6-dev
    /// (`LADE_TEST_DEBIAN_PYTHON_LAYOUT`).
    pub python_gcc: String,
    /// The wheels of Flask and its dependencies (`LADE_TEST_WHEELS`).
    pub wheels: PathBuf,
}

/// The Debian bases, or a test failure saying why they are missing.
#[track_caller]
pub fn require_debian() -> DebianBases {
    if let Ok(e) = std::env::var("LADE_TEST_DEBIAN_ERROR") {
        panic!("xtask could not make the Debian bases: {e}");
    }
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run this test through `cargo xtask test`, which makes the Debian bases")
        })
    };
    DebianBases {
        minbase: var("LADE_TEST_DEBIAN_LAYOUT"),
        python_gcc: var("LADE_TEST_DEBIAN_PYTHON_LAYOUT"),
        wheels: PathBuf::from(var("LADE_TEST_WHEELS")),
    }
}

/// `oci:DIR:TAG` of the JRE base `cargo xtask test` makes once (Debian minbase +
/// openjdk-17-jre-headless, `LADE_TEST_JRE_LAYOUT`), or a test failure saying why it is missing.
#[track_caller]
pub fn require_jre() -> String {
    if let Ok(e) = std::env::var("LADE_TEST_JRE_ERROR") {
        panic!("xtask could not make the JRE base: {e}");
    }
    std::env::var("LADE_TEST_JRE_LAYOUT").unwrap_or_else(|_| {
        panic!("LADE_TEST_JRE_LAYOUT is not set: run this test through `cargo xtask test`")
    })
}

/// A `docker -H <private dockerd>` command.
pub fn docker_cmd() -> Command {
    let s = require_services();
    let mut c = Command::new(&s.docker);
    if let Some(cfg) = &s.docker_config {
        c.env("DOCKER_CONFIG", cfg);
    }
    c.env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env("DOCKER_BUILDKIT", "1")
        .arg("-H")
        .arg(&s.docker_host);
    c
}

/// Runs docker against the private dockerd.
pub fn docker(args: &[&str]) -> Output {
    output(docker_cmd().args(args))
}

/// Runs skopeo. `--insecure-policy` so no `/etc/containers/policy.json` is needed; registries
/// still need `--tls-verify=false` (plain) or `--cert-dir`/`--creds` (TLS).
pub fn skopeo(args: &[&str]) -> Output {
    output(Command::new("skopeo").arg("--insecure-policy").args(args))
}

/// Runs umoci.
pub fn umoci(args: &[&str]) -> Output {
    output(Command::new("umoci").args(args))
}

/// Runs a command, panicking only if it cannot be started.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Panics with stdout and stderr unless the command succeeded; returns its stdout.
#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift): incompressible enough that gzip keeps them
/// large, the same for the same `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A minimal root filesystem under `dir`: `bin/busybox` (a copy of Debian's static
/// `/bin/busybox`, package busybox-static) and `bin/sh -> busybox`.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copy /bin/busybox (install busybox-static, or run `cargo xtask test`)");
    let sh = bin.join("sh");
    let _ = std::fs::remove_file(&sh);
    std::os::unix::fs::symlink("busybox", &sh).unwrap();
}

/// Every file under `dir` (walked by `find`) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let list = ok(output(Command::new("find").arg(dir).args(["-type", "f"])));
    list.lines()
        .filter(|f| {
            std::fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .map(str::to_string)
        .collect()
}

/// A tar of the directory `root` (entries owned by root, plus tar options `opts`) at `tar`.
pub fn tar_rootfs(root: &Path, tar: &Path, opts: &[&str]) {
    ok(output(
        Command::new("tar")
            .args(["--owner=0", "--group=0"])
            .args(opts)
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(tar)
            .arg("."),
    ));
}

/// The root filesystem directory `root` as the OCI layout `tmp/base` (tag `1`, `ENV
/// PATH=/bin`, store `tmp/base-cache`), through a tar with options `tar_opts`; returns its
/// `FROM` reference.
pub fn layout_from_rootfs_dir(root: &Path, tmp: &Path, tar_opts: &[&str]) -> String {
    let tar = tmp.join("base-rootfs.tar");
    tar_rootfs(root, &tar, tar_opts);
    layout_from_rootfs_tar(
        &tar,
        "ENV PATH=/bin\n",
        &tmp.join("base"),
        "1",
        &tmp.join("base-cache"),
    )
}

/// Builds the root filesystem tarball `rootfs_tar` into an OCI layout at `layout` with lade
/// (`FROM scratch`, `ADD rootfs.tar /`, then `instructions`), tagged `tag`, its store in
/// `cache`; returns the `FROM` reference `oci:LAYOUT:TAG`. ADD keeps the tar's modes, owners
/// and mtimes, so a test's base can hold what a context copy never produces. The build
/// context stays at `LAYOUT.ctx` (to build the same base into another output).
pub fn layout_from_rootfs_tar(
    rootfs_tar: &Path,
    instructions: &str,
    layout: &Path,
    tag: &str,
    cache: &Path,
) -> String {
    let ctx = layout.with_extension("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::rename(rootfs_tar, ctx.join("rootfs.tar")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD rootfs.tar /\n{instructions}"),
    )
    .unwrap();
    lade(cache)
        .args(["build", "--progress", "quiet", "-t", &format!("base:{tag}")])
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .arg(&ctx)
        .assert()
        .success();
    format!("oci:{}:{tag}", layout.display())
}

/// Loads the docker archive `tar` into the private dockerd, runs `tag` there once with no
/// network (`docker run --rm --network none`), removes the image and returns what it printed.
pub fn docker_run_offline(tar: &Path, tag: &str) -> String {
    ok(docker(&["load", "-i", tar.to_str().unwrap()]));
    let out = ok(docker(&["run", "--rm", "--network", "none", tag]));
    docker(&["rmi", "-f", tag]);
    out
}

/// Imports a busybox image into the private dockerd as `tag` (`docker import` of a tar of
/// [`busybox_rootfs`]).
pub fn docker_import_busybox(tag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    busybox_rootfs(&root);
    let tar = tmp.path().join("busybox.tar");
    ok(output(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    ));
    ok(docker(&["import", tar.to_str().unwrap(), tag]));
}

/// The `lade` binary built for these tests, with its store in `cache_dir` (through
/// `LADE_CACHE_DIR`; an explicit `--cache-dir` wins over it), `SOURCE_DATE_EPOCH` unset and
/// no HTTP proxy.
pub fn lade(cache_dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_lade"));
    c.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RUST_LOG")
        // Test servers listen on 127.0.0.1; a proxy from the environment must not get in.
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env("LADE_CACHE_DIR", cache_dir);
    c
}

/// `lade build` of the Dockerfile context `ctx` with its store in `tmp/cache`, writing
/// `output` (an `--output` value) with `extra` arguments; panics with lade's stderr unless the
/// build succeeds. Returns the metadata file's JSON.
pub fn build_context(ctx: &Path, tmp: &Path, output: &str, extra: &[&str]) -> serde_json::Value {
    let meta = tmp.join("meta.json");
    let o = lade(&tmp.join("cache"))
        .args(["build", "--progress", "quiet", "--output", output])
        .arg("--metadata-file")
        .arg(&meta)
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "lade build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap()
}

/// Reads a member of an uncompressed tar (an OCI or docker archive) with the system tar.
pub fn tar_member(archive: &Path, member: &str) -> Vec<u8> {
    let out = output(Command::new("tar").arg("-xOf").arg(archive).arg(member));
    assert!(
        out.status.success(),
        "tar -xOf {member}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A JSON member of an OCI archive.
pub fn archive_json(archive: &Path, member: &str) -> serde_json::Value {
    serde_json::from_slice(&tar_member(archive, member)).unwrap()
}

/// `blobs/sha256/HEX` of a digest.
pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// The manifest of an OCI archive's one image.
pub fn archive_manifest(archive: &Path) -> serde_json::Value {
    let index = archive_json(archive, "index.json");
    archive_json(
        archive,
        &blob_path(index["manifests"][0]["digest"].as_str().unwrap()),
    )
}

/// The layer digests of the first image in the OCI archive `archive`, base first.
pub fn archive_layers(archive: &Path) -> Vec<String> {
    archive_manifest(archive)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// GNU tar's listing (`tar -t` with `flags`, e.g. `["-v", "--numeric-owner"]`) of the layer
/// blob `digest` (`sha256:...`) in `archive`; tar detects the blob's compression itself.
pub fn layer_listing(archive: &Path, digest: &str, flags: &[&str]) -> String {
    let hex = digest.trim_start_matches("sha256:");
    let blob = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        blob.path(),
        tar_member(archive, &format!("blobs/sha256/{hex}")),
    )
    .unwrap();
    ok(output(
        Command::new("tar")
            .env("TZ", "UTC")
            .arg("-t")
            .args(flags)
            .arg("-f")
            .arg(blob.path()),
    ))
}

/// `testdata/<rel>` in this repository.
pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// The folder of the OCI image-spec JSON schemas (opencontainers/image-spec at 13cff54).
pub fn schema_dir() -> PathBuf {
    testdata("oci-image-spec/schema")
}

/// Validation errors of `json` against one of the image-spec schemas, named by file
/// (`image-manifest-schema.json`) or short name (`manifest`, `index`, `config`, `layout`,
/// `descriptor`). Empty when valid. Works offline: every `$ref` resolves to a file in
/// [`schema_dir`] by its last path segment, whatever base URI the schemas' `id`s give it.
pub fn schema_errors(json: &serde_json::Value, schema: &str) -> Vec<String> {
    let file = match schema {
        "manifest" => "image-manifest-schema.json",
        "index" => "image-index-schema.json",
        "config" => "config-schema.json",
        "layout" => "image-layout-schema.json",
        "descriptor" => "content-descriptor.json",
        other => other,
    };
    let root = read_schema(file).unwrap_or_else(|e| panic!("{e}"));
    errors_against(&root, jsonschema::Draft::Draft4, file, json)
}

/// Validation errors of `json` against the schema `root` (formats checked; `$ref`s to other
/// files resolve in [`schema_dir`]).
fn errors_against(
    root: &serde_json::Value,
    draft: jsonschema::Draft,
    name: &str,
    json: &serde_json::Value,
) -> Vec<String> {
    let validator = jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true)
        .with_retriever(SchemaDir)
        .build(root)
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"));
    validator
        .iter_errors(json)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

/// Panics with every violation unless `json` is valid against the draft-07 schema
/// `testdata/attest-schemas/<file>` (SPDX 2.3, in-toto Statement v1, SLSA provenance v1).
#[track_caller]
pub fn validate_attestation(json: &serde_json::Value, file: &str) {
    let path = testdata("attest-schemas").join(file);
    let root: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let errors = errors_against(&root, jsonschema::Draft::Draft7, file, json);
    assert!(
        errors.is_empty(),
        "not valid against {file}:\n  {}\ndocument: {}",
        errors.join("\n  "),
        serde_json::to_string_pretty(json).unwrap()
    );
}

/// Panics with every violation unless `json` is valid against the schema (see [`schema_errors`]).
#[track_caller]
pub fn validate_with_schemas(json: &serde_json::Value, schema: &str) {
    let errors = schema_errors(json, schema);
    assert!(
        errors.is_empty(),
        "not a valid {schema}:\n  {}\ndocument: {}",
        errors.join("\n  "),
        serde_json::to_string_pretty(json).unwrap()
    );
}

fn read_schema(file: &str) -> Result<serde_json::Value, String> {
    let path = schema_dir().join(file);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// Resolves any URI to the schema file named by its last path segment; never uses the network.
struct SchemaDir;

impl jsonschema::Retrieve for SchemaDir {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.path().as_str();
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.ends_with(".json") && !name.contains("..") {
            return Ok(read_schema(name)?);
        }
        Err(format!("no offline schema for {}", uri.as_str()).into())
    }
}

/// Runs a command and returns its exit status and peak RSS in KiB.
///
/// The measuring is left to GNU time (`/usr/bin/time`, which forks the command from its own
/// small process): a child spawned straight from this test binary inherits the binary's
/// high-water RSS at exec, so wait4 would report the test process's peak (hundreds of MiB
/// while other tests of the binary hold big buffers), not the command's.
pub fn run_measured(cmd: &mut Command) -> (std::process::ExitStatus, i64) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["--format", "%M", "--output"])
        .arg(report.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let status = timed
        .status()
        .expect("GNU time (Debian's `time`) runs the command");
    let text = std::fs::read_to_string(report.path()).unwrap();
    // A command killed by a signal makes time write a line about it before the number.
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak RSS from GNU time: {text:?}"));
    (status, kib)
}

/// The context paths of the permission-bit tests, below `m/`, with their modes on disk:
/// what BuildKit's context transfer keeps (setuid, setgid and sticky included). `true`: a
/// directory.
pub const CONTEXT_MODES: &[(&str, u32, bool)] = &[
    ("m", 0o750, true),
    ("m/f600", 0o600, false),
    ("m/f640", 0o640, false),
    ("m/f700", 0o700, false),
    ("m/f751", 0o751, false),
    ("m/f2755", 0o2755, false),
    ("m/f4755", 0o4755, false),
    ("m/d700", 0o700, true),
    ("m/d700/in.txt", 0o644, false),
    ("m/d751", 0o751, true),
    ("m/d2755", 0o2755, true),
    ("m/d1777", 0o1777, true),
];

/// Writes [`CONTEXT_MODES`] into `ctx` (modes set explicitly, so the umask does not matter).
pub fn write_mode_context(ctx: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (rel, _, dir) in CONTEXT_MODES {
        let p = ctx.join(rel);
        if *dir {
            std::fs::create_dir_all(&p).unwrap();
        } else {
            std::fs::write(&p, format!("{rel}\n")).unwrap();
        }
    }
    // Children first, so a 0600-like directory never blocks writing below it.
    for (rel, mode, _) in CONTEXT_MODES.iter().rev() {
        std::fs::set_permissions(ctx.join(rel), std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// The permission bits of an `ls -l`/`tar -tv` mode string (`drwsr-s--T`).
pub fn mode_bits(s: &str) -> u32 {
    let c: Vec<char> = s.chars().collect();
    assert_eq!(c.len(), 10, "mode string {s:?}");
    let mut m = 0;
    for (i, &ch) in c[1..].iter().enumerate() {
        let bit = 1 << (8 - i);
        match ch {
            '-' => {}
            'r' | 'w' | 'x' => m |= bit,
            's' | 't' => m |= bit,
            'S' | 'T' => {}
            other => panic!("mode string {s:?}: {other:?}"),
        }
        if matches!(ch, 's' | 'S' | 't' | 'T') {
            m |= match i {
                2 => 0o4000,
                5 => 0o2000,
                _ => 0o1000,
            };
        }
    }
    m
}

/// A hand-made ustar member (for names and links lade's writer would never produce: hostile
/// layers). `typeflag` as in tar (`b'0'` file, `b'1'` hard link, `b'2'` symlink, `b'3'` char
/// device, …); owner 0:0, mtime 0.
pub fn raw_member(name: &[u8], typeflag: u8, link: &[u8], data: &[u8], mode: u32) -> Vec<u8> {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    b[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = typeflag;
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..265].copy_from_slice(b"ustar\x0000");
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut v = b.to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// An uncompressed tar of [`raw_member`]s with its end-of-archive blocks.
pub fn raw_tar(members: &[Vec<u8>]) -> Vec<u8> {
    let mut v: Vec<u8> = members.concat();
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// The non-root user with /etc/subuid and /etc/subgid ranges that `cargo xtask test` makes
/// (`LADE_TEST_ROOTLESS_USER`, xtask/src/rootless.rs), or a test failure saying why there is
/// none.
#[track_caller]
pub fn require_rootless_user() -> String {
    if let Ok(e) = std::env::var("LADE_TEST_ROOTLESS_ERROR") {
        panic!("xtask could not make the rootless test user: {e}");
    }
    std::env::var("LADE_TEST_ROOTLESS_USER").unwrap_or_else(|_| {
        panic!(
            "LADE_TEST_ROOTLESS_USER is not set: run this test through `cargo xtask test`, \
             which makes a user with subordinate ids"
        )
    })
}

/// `sha256:<hex>` of `b`.
pub fn sha(b: &[u8]) -> String {
    format!("sha256:{:x}", <sha2::Sha256 as sha2::Digest>::digest(b))
}

/// Writes `b` as a blob of the layout `layout`; returns its digest.
pub fn put_blob(layout: &Path, b: &[u8]) -> String {
    let d = sha(b);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
        b,
    )
    .unwrap();
    d
}

/// An OCI layout at `layout` holding one image tagged `1` made of `layers` (uncompressed),
/// with a consistent config (diff_ids) and manifest.
pub fn oci_layout(layout: &Path, layers: &[Vec<u8>]) -> PathBuf {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let digests: Vec<String> = layers.iter().map(|l| put_blob(layout, l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": digests},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": put_blob(layout, &config),
            "size": config.len(),
        },
        "layers": layers.iter().zip(&digests).map(|(l, d)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d,
            "size": l.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put_blob(layout, &manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    layout.to_path_buf()
}

/// The init process of each container an OCI runtime keeps state for under `state` (its
/// `--root`): runc writes it to `ID/state.json` (`init_process_pid`), crun to `ID/status`
/// (`pid`).
pub fn container_init_pids(state: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(state) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let dir = e.ok()?.path();
        [("state.json", "init_process_pid"), ("status", "pid")]
            .iter()
            .find_map(|(file, key)| {
                let b = std::fs::read(dir.join(file)).ok()?;
                serde_json::from_slice::<serde_json::Value>(&b).ok()?[key].as_u64()
            })
    })
    .filter(|&p| p > 0)
    .map(|p| p as u32)
    .collect()
}

/// The attestations of an OCI archive (`lade build --sbom --provenance -o type=oci`).
pub struct Attached {
    /// The image index the archive's index.json points to.
    pub index: serde_json::Value,
    /// The attestation manifest's descriptor in it (there must be exactly one).
    pub descriptor: serde_json::Value,
    pub manifest_bytes: Vec<u8>,
    /// Per layer: its `in-toto.io/predicate-type` annotation and the statement's bytes.
    pub statements: Vec<(String, Vec<u8>)>,
}

impl Attached {
    /// The statement of `predicate_type`, parsed.
    pub fn statement(&self, predicate_type: &str) -> serde_json::Value {
        let (_, bytes) = self
            .statements
            .iter()
            .find(|(t, _)| t == predicate_type)
            .unwrap_or_else(|| panic!("no {predicate_type} statement"));
        serde_json::from_slice(bytes).unwrap()
    }
}

/// The blob `digest` (`sha256:...`) of an OCI archive.
pub fn archive_blob(archive: &Path, digest: &str) -> Vec<u8> {
    tar_member(
        archive,
        &format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")),
    )
}

/// Reads the attestation manifest of a one-platform OCI archive and its statements (each
/// layer must be `application/vnd.in-toto+json`).
pub fn attached(archive: &Path) -> Attached {
    use serde_json::Value;
    let top: Value = serde_json::from_slice(&tar_member(archive, "index.json")).unwrap();
    let index_digest = top["manifests"][0]["digest"].as_str().unwrap();
    let index: Value = serde_json::from_slice(&archive_blob(archive, index_digest)).unwrap();
    let atts: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest")
        .collect();
    assert_eq!(atts.len(), 1, "{index}");
    let descriptor = atts[0].clone();
    let manifest_bytes = archive_blob(archive, descriptor["digest"].as_str().unwrap());
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let statements = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.in-toto+json", "{manifest}");
            (
                l["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                archive_blob(archive, l["digest"].as_str().unwrap()),
            )
        })
        .collect();
    Attached {
        index,
        descriptor,
        manifest_bytes,
        statements,
    }
}
