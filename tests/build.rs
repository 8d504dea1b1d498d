//! `lade build` and `lade plan` from a lade.toml, end to end: archives that skopeo, umoci,
//! the OCI schemas and a real dockerd accept; reproducibility across checkouts; the cache;
//! edge-case file trees; and the errors users see.

mod common;

/// The lade binary; every call below passes its own `--cache-dir`.
fn lade_cmd() -> assert_cmd::Command {
    common::lade(&std::env::temp_dir().join("lade-test-unused-cache"))
}

use serde_json::Value;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of `testdata/hello` with busybox in place, in a temp dir.
fn hello_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("hello");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/hello"),
        &ctx,
    );
    fs::copy("/bin/busybox", ctx.join("rootfs/bin/busybox")).expect("busybox-static is installed");
    ctx
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

struct Built {
    archive: PathBuf,
    metadata: Value,
}

fn build(spec: &Path, cache: &Path, out: &Path, extra: &[&str]) -> Built {
    let meta = out.with_extension("meta.json");
    let mut cmd = lade_cmd();
    cmd.args(["build", "--progress", "plain", "--spec"])
        .arg(spec)
        .arg("--cache-dir")
        .arg(cache);
    cmd.arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg("--metadata-file")
        .arg(&meta)
        .args(extra);
    cmd.assert().success();
    Built {
        archive: out.to_path_buf(),
        metadata: serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap(),
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Unpacks an OCI archive (tagged `latest`) with umoci under `dir` and returns the rootfs.
fn umoci_rootfs(archive: &Path, dir: &Path) -> PathBuf {
    let layout = dir.join("umoci-layout");
    let bundle = dir.join("umoci-bundle");
    fs::create_dir(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout));
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--rootless")
        .arg("--image")
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

use common::tar_member;

#[test]
fn hello_image_is_accepted_by_skopeo_umoci_and_the_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let built = build(
        &ctx.join("lade.toml"),
        &tmp.path().join("cache"),
        &tmp.path().join("hello.tar"),
        &[],
    );

    let inspect: Value = serde_json::from_str(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", built.archive.display()))))
    .unwrap();
    assert_eq!(inspect["Digest"], built.metadata["containerimage.digest"]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspect["Labels"]["org.opencontainers.image.title"], "hello");

    // Every JSON document in the archive validates against the OCI schemas.
    let index: Value = serde_json::from_slice(&tar_member(&built.archive, "index.json")).unwrap();
    common::validate_with_schemas(&index, "image-index-schema.json");
    common::validate_with_schemas(
        &serde_json::from_slice(&tar_member(&built.archive, "oci-layout")).unwrap(),
        "image-layout-schema.json",
    );
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: Value = serde_json::from_slice(&tar_member(
        &built.archive,
        &format!("blobs/sha256/{mdigest}"),
    ))
    .unwrap();
    common::validate_with_schemas(&manifest, "image-manifest-schema.json");
    let cdigest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let config: Value = serde_json::from_slice(&tar_member(
        &built.archive,
        &format!("blobs/sha256/{cdigest}"),
    ))
    .unwrap();
    common::validate_with_schemas(&config, "config-schema.json");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["config"]["WorkingDir"], "/srv");
    assert_eq!(config["config"]["User"], "1000:1000");
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );

    // umoci unpacks it into a runtime bundle with the files in place.
    let rootfs = umoci_rootfs(&built.archive, tmp.path());
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(
        fs::metadata(rootfs.join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );
    assert!(rootfs.join("usr/share/hello/hello.sh").is_file());
}

#[test]
fn hello_image_runs_in_docker() {
    let services = common::require_services();
    let _ = services;
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let tar = tmp.path().join("hello-docker.tar");
    lade_cmd()
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .arg("--output")
        .arg(format!("type=docker,dest={}", tar.display()))
        .args(["-t", "lade-test/hello:1"])
        .assert()
        .success();
    let load = common::docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let out = common::docker(&["run", "--rm", "--network", "none", "lade-test/hello:1"]);
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from lade, world in /srv as 1000 (from cmd)"
    );
    let inspect = common::docker(&["inspect", "lade-test/hello:1"]);
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let c = &v[0]["Config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/bin/sh", "/usr/share/hello/hello.sh"])
    );
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Labels"]["org.example.team"], "lade");
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=world"));
    assert!(c["ExposedPorts"].get("8080/tcp").is_some());
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Cmd"], serde_json::json!(["(from cmd)"]));
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    common::docker(&["rmi", "-f", "lade-test/hello:1"]);
}

/// A context whose files are equal but whose metadata is not: mtimes, modes from the umask,
/// creation order (so inode order).
fn make_tree(root: &Path, reverse: bool, umask_mode: u32, mtime: i64) {
    let mut names: Vec<String> = (0..40).map(|i| format!("d{}/f{i:02}.txt", i % 4)).collect();
    if reverse {
        names.reverse();
    }
    for n in &names {
        let p = root.join("files").join(n);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("content of {n}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666 & !umask_mode)).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64);
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let tool = root.join("files/bin/tool");
    fs::create_dir_all(tool.parent().unwrap()).unwrap();
    fs::write(&tool, "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o777 & !umask_mode)).unwrap();
    fs::write(root.join("lade.toml"), "[image]\nfrom = \"scratch\"\nplatform = \"linux/amd64\"\nentrypoint = [\"/app/bin/tool\"]\n\n[[layer]]\nname = \"files\"\nfrom = \"files\"\ninto = \"/app\"\n").unwrap();
}

#[test]
fn equal_contents_give_byte_identical_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        tmp.path().join("checkout-a"),
        tmp.path().join("other/checkout-b"),
    );
    make_tree(&a, false, 0o022, 1_000_000);
    make_tree(&b, true, 0o002, 2_000_000_000);
    let one = build(
        &a.join("lade.toml"),
        &tmp.path().join("cache-a"),
        &tmp.path().join("a.tar"),
        &["--jobs", "1"],
    );
    let two = build(
        &b.join("lade.toml"),
        &tmp.path().join("cache-b"),
        &tmp.path().join("b.tar"),
        &["--jobs", "4"],
    );
    assert_eq!(
        fs::read(&one.archive).unwrap(),
        fs::read(&two.archive).unwrap(),
        "archives differ"
    );
    // The golden digest pins the bytes of layers, config and manifest across lade versions:
    // change it only with a deliberate, announced format change.
    assert_eq!(
        one.metadata["containerimage.digest"], GOLDEN_MANIFEST,
        "manifest digest changed"
    );

    let later = build(
        &a.join("lade.toml"),
        &tmp.path().join("cache-a"),
        &tmp.path().join("c.tar"),
        &[],
    );
    assert_eq!(later.metadata["containerimage.digest"], GOLDEN_MANIFEST);
    let mut cmd = lade_cmd();
    cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    let meta = tmp.path().join("sde.json");
    cmd.args(["build", "--progress", "quiet", "--spec"])
        .arg(a.join("lade.toml"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache-a"))
        .arg("--metadata-file")
        .arg(&meta);
    cmd.assert().success();
    let sde: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_ne!(
        sde["containerimage.digest"], GOLDEN_MANIFEST,
        "SOURCE_DATE_EPOCH must change the image"
    );
}

const GOLDEN_MANIFEST: &str =
    "sha256:7d0165dd68a76e96b412b61f0b323c7eb743696a141af595693d92563f878fbd";

fn plain_build(spec: &Path, cache: &Path) -> (String, String) {
    let out = lade_cmd()
        .args(["build", "--progress", "plain", "--spec"])
        .arg(spec)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn rebuilds_reuse_layers_whose_content_did_not_change() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    make_tree(&ctx, false, 0o022, 1_000_000);
    fs::create_dir_all(ctx.join("more")).unwrap();
    fs::write(ctx.join("more/x.txt"), "x").unwrap();
    let spec = ctx.join("lade.toml");
    let mut text = fs::read_to_string(&spec).unwrap();
    text.push_str("\n[[layer]]\nname = \"more\"\nfrom = \"more\"\ninto = \"/more\"\n");
    fs::write(&spec, &text).unwrap();
    let cache = tmp.path().join("cache");

    let (first, _) = plain_build(&spec, &cache);
    assert_eq!(first.matches(": done").count(), 2, "{first}");
    let (again, _) = plain_build(&spec, &cache);
    assert_eq!(again.matches(": cached").count(), 2, "{again}");

    // Touched (new mtime, same bytes) and a renamed context: still cache hits.
    let t = std::time::SystemTime::now();
    fs::File::options()
        .write(true)
        .open(ctx.join("files/d0/f00.txt"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let moved = tmp.path().join("renamed");
    fs::rename(&ctx, &moved).unwrap();
    let (renamed, _) = plain_build(&moved.join("lade.toml"), &cache);
    assert_eq!(renamed.matches(": cached").count(), 2, "{renamed}");

    // One changed file: only its layer is rebuilt.
    fs::write(moved.join("more/x.txt"), "changed").unwrap();
    let (changed, _) = plain_build(&moved.join("lade.toml"), &cache);
    assert!(changed.contains("layer files: cached"), "{changed}");
    assert!(changed.contains("layer more: done"), "{changed}");
}

#[test]
fn edge_case_trees_round_trip_through_umoci() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    let t = ctx.join("t");
    fs::create_dir_all(t.join("empty/dir")).unwrap();
    let long100 = "n".repeat(101);
    let long255 = "m".repeat(255);
    let deep = t.join("a".repeat(60)).join("b".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join(&long255), "deep").unwrap();
    fs::write(t.join(&long100), "long").unwrap();
    use std::os::unix::ffi::OsStrExt;
    fs::write(
        t.join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1")),
        "non-utf8",
    )
    .unwrap();
    fs::write(t.join("exec.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(t.join("exec.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(t.join("target"), "linked").unwrap();
    fs::hard_link(t.join("target"), t.join("hardlink")).unwrap();
    symlink("target", t.join("rel-link")).unwrap();
    symlink("/etc/passwd", t.join("abs-link")).unwrap();
    symlink("does-not-exist", t.join("dangling")).unwrap();
    fs::write(
        ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"t\"\nfrom = \"t\"\ninto = \"/t\"\n",
    )
    .unwrap();
    let built = build(
        &ctx.join("lade.toml"),
        &tmp.path().join("cache"),
        &tmp.path().join("e.tar"),
        &["--compression", "zstd"],
    );
    assert!(built.metadata["lade.layers"][0]["mediaType"]
        .as_str()
        .unwrap()
        .ends_with("+zstd"));

    // umoci 0.4 predates zstd layers: the tree is checked through a gzip build of it.
    let gz = build(
        &ctx.join("lade.toml"),
        &tmp.path().join("cache"),
        &tmp.path().join("g.tar"),
        &["-t", "edge:latest"],
    );
    let r = umoci_rootfs(&gz.archive, tmp.path()).join("t");
    assert_eq!(
        fs::read_to_string(r.join("a".repeat(60)).join("b".repeat(60)).join(&long255)).unwrap(),
        "deep"
    );
    assert_eq!(fs::read_to_string(r.join(&long100)).unwrap(), "long");
    assert_eq!(
        fs::read_to_string(r.join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1"))).unwrap(),
        "non-utf8"
    );
    assert!(r.join("empty/dir").is_dir());
    assert_eq!(
        fs::metadata(r.join("exec.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        fs::metadata(r.join("target")).unwrap().permissions().mode() & 0o777,
        0o644
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(r.join("target")).unwrap().ino(),
        fs::metadata(r.join("hardlink")).unwrap().ino(),
        "hard link kept"
    );
    assert_eq!(
        fs::read_link(r.join("rel-link")).unwrap(),
        Path::new("target")
    );
    assert_eq!(
        fs::read_link(r.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(r.join("dangling")).unwrap(),
        Path::new("does-not-exist")
    );
}

fn failing_build(spec: &Path, out: &Path) -> (i32, String) {
    let o = lade_cmd()
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(spec)
        .arg("--cache-dir")
        .arg(out.parent().unwrap().join("cache"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .output()
        .unwrap();
    assert!(!out.exists(), "no output file may be left behind");
    let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".lade-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bad_specs_name_the_line_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    fs::create_dir_all(ctx.join("files")).unwrap();
    fs::write(ctx.join("files/a.txt"), "a").unwrap();
    let cases = [
        ("unknown key", "[image]\nentrypiont = [\"x\"]\n", "lade.toml:2:1: unknown field `entrypiont`"),
        ("wrong type", "[image]\nports = [true]\n", "lade.toml:2:"),
        ("glob matching nothing", "[image]\n[[layer]]\nname = \"a\"\nfrom = \"files\"\ninto = \"/x\"\ninclude = [\"**/*.jar\"]\n", "lade.toml:6:12:"),
        ("missing from dir", "[image]\n[[layer]]\nname = \"a\"\nfrom = \"nope\"\ninto = \"/x\"\n", "lade.toml:4:8:"),
        ("relative into", "[image]\n[[layer]]\nname = \"a\"\nfrom = \"files\"\ninto = \"x\"\n", "lade.toml:5:8: `into` must be an absolute path"),
    ];
    for (what, spec, expected) in cases {
        fs::write(ctx.join("lade.toml"), spec).unwrap();
        let (code, stderr) = failing_build(&ctx.join("lade.toml"), &ctx.join("out.tar"));
        assert!(code == 1 || code == 2, "{what}: exit code {code}");
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn whiteout_names_and_unreadable_files_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path();
    fs::create_dir_all(ctx.join("files")).unwrap();
    fs::write(ctx.join("files/.wh.secret"), "x").unwrap();
    fs::write(
        ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"a\"\nfrom = \"files\"\ninto = \"/x\"\n",
    )
    .unwrap();
    let (code, stderr) = failing_build(&ctx.join("lade.toml"), &ctx.join("out.tar"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains(".wh.secret") && stderr.contains("whiteout"),
        "{stderr}"
    );

    fs::remove_file(ctx.join("files/.wh.secret")).unwrap();
    // A socket stands in for an unreadable file (root reads any mode): it cannot be put in
    // a layer (FIFOs and devices can), and the error names it.
    let _sock = std::os::unix::net::UnixListener::bind(ctx.join("files/sock")).unwrap();
    let (code, stderr) = failing_build(&ctx.join("lade.toml"), &ctx.join("out.tar"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("files/sock") && stderr.contains("a socket cannot be put"),
        "{stderr}"
    );
}

#[test]
fn docker_archive_streams_to_stdout_and_plan_prints_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let out = lade_cmd()
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .args(["--output", "type=docker,dest=-", "-t", "x/y:z"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let tar = tmp.path().join("stdout.tar");
    fs::write(&tar, &out.stdout).unwrap();
    let manifest: Value = serde_json::from_slice(&tar_member(&tar, "manifest.json")).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["lade-hello:latest", "x/y:z"])
    );

    let plan = lade_cmd()
        .args(["plan", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(plan.status.success());
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let steps = plan["stages"][0]["steps"].as_array().unwrap();
    assert!(steps[0]["cache_key"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn a_2_gib_sparse_file_streams_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("data")).unwrap();
    let big = fs::File::create(ctx.join("data/sparse.img")).unwrap();
    big.set_len(2 << 30).unwrap();
    fs::write(
        ctx.join("lade.toml"),
        "[image]\n[[layer]]\nname = \"data\"\nfrom = \"data\"\ninto = \"/data\"\n",
    )
    .unwrap();
    let meta = tmp.path().join("meta.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lade"));
    cmd.args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"));
    cmd.arg("--metadata-file")
        .arg(&meta)
        .args(["--compression", "none"]);
    let (status, rss_kib) = common::run_measured(&mut cmd);
    assert!(status.success());
    assert!(
        rss_kib < 100 * 1024,
        "peak RSS {rss_kib} KiB for a 2 GiB file"
    );
    // The (uncompressed) layer is a tar whose listing has the whole file and whose sha256,
    // computed here by the system's sha256sum, is the diff_id lade recorded.
    let meta: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    let layer = &meta["lade.layers"][0];
    let blob = tmp.path().join("cache/blobs/sha256").join(
        layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let listing = run(Command::new("tar").arg("-tvf").arg(&blob));
    assert!(
        listing.contains(" 2147483648 ") && listing.contains("data/sparse.img"),
        "{listing}"
    );
    let sum = run(Command::new("sha256sum").arg(&blob));
    assert_eq!(
        format!("sha256:{}", sum.split_whitespace().next().unwrap()),
        layer["diffID"].as_str().unwrap()
    );
}

/// A Spring Boot-style fat jar: release and SNAPSHOT libraries, classes, resources, loader.
fn spring_boot_jar(path: &Path, app_class: &[u8]) {
    use std::io::Write;
    let f = fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\nMain-Class: org.springframework.boot.loader.launch.JarLauncher\r\nStart-Class: com.example.App\r\n\r\n".to_vec()),
        ("org/springframework/boot/loader/launch/JarLauncher.class", b"loader".to_vec()),
        ("BOOT-INF/classes/com/example/App.class", app_class.to_vec()),
        ("BOOT-INF/classes/application.properties", b"server.port=8080\n".to_vec()),
        ("BOOT-INF/lib/spring-core-6.1.0.jar", vec![1u8; 4096]),
        ("BOOT-INF/lib/internal-lib-1.0-SNAPSHOT.jar", vec![2u8; 2048]),
    ];
    for (name, content) in files {
        z.start_file(name, opts).unwrap();
        z.write_all(&content).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn java_preset_splits_a_spring_boot_jar_into_jib_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("app");
    fs::create_dir_all(ctx.join("target")).unwrap();
    fs::write(
        ctx.join("lade.toml"),
        "[image]\nplatform = \"linux/amd64\"\n[java]\njar = \"target/app.jar\"\n",
    )
    .unwrap();
    spring_boot_jar(&ctx.join("target/app.jar"), b"class v1");
    let one = build(
        &ctx.join("lade.toml"),
        &tmp.path().join("cache"),
        &tmp.path().join("one.tar"),
        &[],
    );
    spring_boot_jar(&ctx.join("target/app.jar"), b"class v2, changed");
    let two = build(
        &ctx.join("lade.toml"),
        &tmp.path().join("cache"),
        &tmp.path().join("two.tar"),
        &[],
    );

    let layers = |b: &Built| -> Vec<String> {
        b.metadata["lade.layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (layers(&one), layers(&two));
    assert_eq!(
        a.len(),
        5,
        "dependencies, spring-boot-loader, snapshot dependencies, resources, classes"
    );
    let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    assert_eq!(changed, [4], "only the classes layer changes");

    let index: Value = serde_json::from_slice(&tar_member(&one.archive, "index.json")).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: Value =
        serde_json::from_slice(&tar_member(&one.archive, &format!("blobs/sha256/{m}"))).unwrap();
    let c = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let config: Value =
        serde_json::from_slice(&tar_member(&one.archive, &format!("blobs/sha256/{c}"))).unwrap();
    let ep: Vec<&str> = config["config"]["Entrypoint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ep.first(), Some(&"java"));
    assert!(ep.last().unwrap().contains("JarLauncher"), "{ep:?}");
    // The classes layer holds the class, the snapshot layer the SNAPSHOT jar.
    let layer_files = |i: usize| common::layer_listing(&one.archive, &a[i], &[]);
    assert!(layer_files(4).contains("app/BOOT-INF/classes/com/example/App.class"));
    assert!(layer_files(2).contains("internal-lib-1.0-SNAPSHOT.jar"));
    assert!(layer_files(0).contains("spring-core-6.1.0.jar"));
}

#[test]
fn two_builds_can_share_one_store_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    make_tree(&ctx, false, 0o022, 1_000_000);
    let cache = tmp.path().join("shared-cache");
    let spawn = |out: &str| {
        Command::new(env!("CARGO_BIN_EXE_lade"))
            .args(["build", "--progress", "quiet", "--spec"])
            .arg(ctx.join("lade.toml"))
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--output")
            .arg(format!("type=oci,dest={}", tmp.path().join(out).display()))
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a.tar"), spawn("b.tar"));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    assert_eq!(
        fs::read(tmp.path().join("a.tar")).unwrap(),
        fs::read(tmp.path().join("b.tar")).unwrap()
    );
    let leftovers = fs::read_dir(cache.join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "temp files left in the store");
}

#[test]
fn output_files_get_the_users_umask_not_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let (archive, layout, iid) = (
        tmp.path().join("out.tar"),
        tmp.path().join("layout"),
        tmp.path().join("iid"),
    );
    // The shell sets the umask, then becomes lade.
    let build_with_umask = |umask: &str, output: String, extra: &[&Path]| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(assert_cmd::cargo::cargo_bin("lade"))
            .args(["build", "--progress", "quiet", "--spec"])
            .arg(ctx.join("lade.toml"))
            .arg("--cache-dir")
            .arg(tmp.path().join("cache"))
            .arg("--output")
            .arg(output);
        if let [iid] = extra {
            cmd.arg("--iidfile").arg(iid);
        }
        assert!(cmd.status().unwrap().success());
    };
    build_with_umask(
        "027",
        format!("type=oci,dest={}", archive.display()),
        &[&iid],
    );
    build_with_umask(
        "022",
        format!("type=oci-layout,dest={}", layout.display()),
        &[],
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&archive), 0o640);
    assert_eq!(mode(&iid), 0o640);
    assert_eq!(mode(&layout.join("index.json")), 0o644);
    for blob in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        assert_eq!(mode(&blob.unwrap().path()), 0o644);
    }
}

/// Without `--cache-dir`, the store is `$LADE_CACHE_DIR`, else `$XDG_CACHE_HOME/lade`, else
/// `~/.cache/lade`: each build's layer blob lands in the store it should.
#[test]
fn the_default_store_follows_lade_cache_dir_then_xdg_then_home() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let build = |env: &[(&str, &Path)]| {
        let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_lade"));
        c.env_remove("LADE_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("SOURCE_DATE_EPOCH")
            .args(["build", "--progress", "quiet", "--spec"])
            .arg(ctx.join("lade.toml"))
            .arg("-o")
            .arg(format!(
                "type=oci,dest={}",
                tmp.path().join("out.tar").display()
            ));
        for (k, v) in env {
            c.env(k, v);
        }
        c.assert().success();
    };
    let blobs = |store: &Path| -> usize {
        walkdir::WalkDir::new(store)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.path().to_string_lossy().contains("sha256"))
            .count()
    };
    let (explicit, xdg, home) = (
        tmp.path().join("explicit"),
        tmp.path().join("xdg"),
        tmp.path().join("home"),
    );
    build(&[
        ("LADE_CACHE_DIR", &explicit),
        ("XDG_CACHE_HOME", &xdg),
        ("HOME", &home),
    ]);
    assert!(blobs(&explicit) > 0, "LADE_CACHE_DIR holds the blobs");
    assert!(!xdg.exists() && !home.exists());
    build(&[("XDG_CACHE_HOME", &xdg), ("HOME", &home)]);
    assert!(
        blobs(&xdg.join("lade")) > 0,
        "$XDG_CACHE_HOME/lade holds the blobs"
    );
    assert!(!home.exists());
    build(&[("HOME", &home)]);
    assert!(
        blobs(&home.join(".cache/lade")) > 0,
        "~/.cache/lade holds the blobs"
    );
}

/// `--progress auto` draws indicatif spinners when stderr is a terminal (outside CI), and
/// writes plain lines when it is not; `quiet` writes nothing. The terminal is `script`'s pty.
#[test]
fn progress_auto_draws_on_a_terminal_and_writes_plain_lines_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let args = |cache: &str| {
        format!(
            "build --progress auto --spec {} --cache-dir {} -o type=oci,dest={}",
            ctx.join("lade.toml").display(),
            tmp.path().join(cache).display(),
            tmp.path().join(format!("{cache}.tar")).display()
        )
    };
    let lade = env!("CARGO_BIN_EXE_lade");
    let on_tty = Command::new("script")
        .args(["-qec", &format!("{lade} {}", args("tty")), "/dev/null"])
        .env_remove("CI")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&on_tty.stdout);
    assert!(on_tty.status.success(), "{tty}");
    // indicatif clears and redraws its line; plain mode never writes escapes.
    assert!(
        tty.contains("\u{1b}[2K"),
        "no redraw on a terminal: {tty:?}"
    );
    assert!(tty.contains("layer rootfs: done"), "{tty:?}");
    assert!(!tty.contains("layer rootfs: writing"), "{tty:?}");

    let piped = lade_cmd()
        .args(args("pipe").split(' '))
        .env_remove("CI")
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success(), "{plain}");
    assert!(plain.contains("layer rootfs: writing"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "{plain:?}");

    let quiet = lade_cmd()
        .args(args("quiet").replace("auto", "quiet").split(' '))
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(quiet.stderr.is_empty(), "{:?}", quiet.stderr);
}

/// `lade build` of the Dockerfile context `ctx` to `out` (an OCI archive): the exit code and
/// stderr (`-1`: killed by a signal, e.g. SIGABRT on a stack overflow).
fn dockerfile_build(ctx: &Path, out: &Path) -> (i32, String) {
    let o = lade_cmd()
        .args(["build", "--progress", "quiet", "--cache-dir"])
        .arg(out.with_extension("cache"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(ctx)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A chain of `depth` directories `a/a/…` under `root`; returns
/// the chain's relative path. Made with relative `mkdir`s, as the whole path may pass PATH_MAX.
fn directory_chain(root: &Path, depth: usize) -> String {
    let rel = vec!["a"; depth].join("/");
    let mut dir = fs::File::open(root).unwrap();
    for _ in 0..depth {
        use std::os::fd::AsRawFd;
        let a = std::ffi::CString::new("a").unwrap();
        // SAFETY: a valid directory fd and NUL-terminated name.
        unsafe {
            assert_eq!(libc::mkdirat(dir.as_raw_fd(), a.as_ptr(), 0o755), 0);
            let fd = libc::openat(
                dir.as_raw_fd(),
                a.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            dir = std::os::fd::FromRawFd::from_raw_fd(fd);
        }
    }
    rel
}

#[test]
fn deep_inputs_fail_with_a_message_not_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let out = tmp.path().join("out.tar");

    // `${A:-${A:-…}}` 10,000 deep.
    let n = 10_000;
    let label = format!("{}x{}", "${A:-".repeat(n), "}".repeat(n));
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nLABEL x={label}\n"),
    )
    .unwrap();
    let (code, stderr) = dockerfile_build(&ctx, &out);
    assert_eq!(code, 1, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stderr.contains("Dockerfile:2:") && stderr.contains("nested more than 100 levels"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(!out.exists());

    // A 1,000-level directory chain is copied whole (the walk overflowed before).
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n").unwrap();
    let chain = directory_chain(&ctx, 1000);
    let (code, stderr) = dockerfile_build(&ctx, &out);
    assert_eq!(code, 0, "{stderr}");
    let index: serde_json::Value =
        serde_json::from_slice(&common::tar_member(&out, "index.json")).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&common::tar_member(
        &out,
        &format!(
            "blobs/sha256/{}",
            manifest_digest.trim_start_matches("sha256:")
        ),
    ))
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let listing = common::layer_listing(&out, layer, &[]);
    assert!(
        listing.contains(&format!("app/{chain}/\n")),
        "deepest directory missing"
    );
    fs::remove_file(&out).unwrap();

    // A 3,000-level chain: its paths pass PATH_MAX, an error naming the path, not an abort.
    let ctx3 = tmp.path().join("ctx3");
    fs::create_dir_all(&ctx3).unwrap();
    fs::write(ctx3.join("Dockerfile"), "FROM scratch\nCOPY . /app/\n").unwrap();
    directory_chain(&ctx3, 3000);
    let (code, stderr) = dockerfile_build(&ctx3, &out);
    assert_eq!(code, 1, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stderr.contains("a/a/a/a") && stderr.contains("File name too long"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(!out.exists());
}
