//! The RUN sandbox through the library API: `SandboxRunner` (crun/runc, overlay or copying
//! snapshots) over busybox base layers made here, checking the entries a RUN yields. Needs
//! root, an OCI runtime and busybox-static (installed by `cargo xtask test`); no services.

mod common;

use lade::digest::Digest;
use lade::exec::run::{
    LowerLayer, RunError, RunInput, RunOutput, SandboxRunner, SnapshotterChoice, StepRunner,
};
use lade::image::media_types;
use lade::layer::{write_layer, Compression, Entry, EntryKind, FileSource, LayerOptions};
use lade::path::ImagePath;
use lade::plan::{RunNetwork, RunStep};
use lade::store::Store;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn ip(s: &str) -> ImagePath {
    ImagePath::parse_absolute(s).unwrap()
}

fn file(path: &str, data: &[u8], mode: u32) -> Entry {
    Entry {
        path: ip(path),
        kind: EntryKind::File {
            source: FileSource::Bytes(Arc::new(data.to_vec())),
            size: data.len() as u64,
            link_key: None,
        },
        mode,
        uid: 0,
        gid: 0,
        mtime: 1000,
        xattrs: BTreeMap::new(),
    }
}

fn dir(path: &str, mode: u32) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        ..file(path, b"", mode)
    }
}

/// Stores `entries` as a gzip layer blob.
fn put_layer(store: &Store, entries: Vec<Entry>) -> LowerLayer {
    let w = store.blob_writer().unwrap();
    let (w, d) = write_layer(entries, LayerOptions::new(Compression::Gzip, 0), w).unwrap();
    w.commit().unwrap();
    LowerLayer {
        diff_id: d.diff_id,
        blob: d.digest,
        media_type: media_types::OCI_LAYER_GZIP.to_string(),
    }
}

/// Stores an uncompressed tar as a layer blob.
fn put_raw_layer(store: &Store, tar: &[u8]) -> LowerLayer {
    let digest = store.put_bytes(tar).unwrap();
    LowerLayer {
        diff_id: digest.clone(),
        blob: digest,
        media_type: media_types::OCI_LAYER_TAR.to_string(),
    }
}

/// busybox with `sh`, passwd/group with a user `app`, and files for RUNs to change.
fn busybox_base(store: &Store) -> Vec<LowerLayer> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static");
    let mut first = vec![
        dir("/bin", 0o755),
        file("/bin/busybox", &bb, 0o755),
        Entry {
            kind: EntryKind::Symlink {
                target: b"busybox".to_vec(),
            },
            ..file("/bin/sh", b"", 0o777)
        },
        dir("/etc", 0o755),
        file(
            "/etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            0o644,
        ),
        file(
            "/etc/group",
            b"root:x:0:\nwheel:x:10:app\napp:x:1000:\n",
            0o644,
        ),
        dir("/tmp", 0o1777),
    ];
    for name in [
        "id", "ls", "cat", "chmod", "chown", "rm", "mkdir", "echo", "touch",
    ] {
        first.push(Entry {
            kind: EntryKind::Hardlink {
                target: ip("/bin/busybox"),
            },
            ..file(&format!("/bin/{name}"), b"", 0o755)
        });
    }
    let second = vec![
        dir("/d", 0o755),
        file("/d/a", b"a\n", 0o644),
        file("/d/b", b"b\n", 0o644),
        file("/f", b"f\n", 0o644),
        file("/old", b"old\n", 0o644),
        dir("/keep", 0o755),
        file("/keep/k", b"k\n", 0o644),
        file("/same", b"same\n", 0o644),
    ];
    vec![put_layer(store, first), put_layer(store, second)]
}

struct Ran {
    result: Result<RunOutput, RunError>,
    output: String,
}

impl Ran {
    /// The step's output, or a panic with the error and what the step printed.
    fn ok(self) -> (RunOutput, String) {
        match self.result {
            Ok(out) => (out, self.output),
            Err(e) => panic!("{e}\n{}", self.output),
        }
    }
}

/// A store of its own with the busybox base in it, and a runner: where most tests start.
struct Sandbox {
    tmp: tempfile::TempDir,
    store: Store,
    lowers: Vec<LowerLayer>,
    runner: SandboxRunner,
}

impl Sandbox {
    fn new(choice: SnapshotterChoice) -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let lowers = busybox_base(&store);
        Sandbox {
            tmp,
            store,
            lowers,
            runner: SandboxRunner::new(None, choice),
        }
    }

    /// `script` as `user` in `/`, without network, on the base layers.
    fn run(&self, user: &str, script: &str) -> Ran {
        run(
            &self.runner,
            &self.store,
            &self.lowers,
            user,
            RunNetwork::None,
            script,
        )
    }
}

fn run(
    runner: &SandboxRunner,
    store: &Store,
    lowers: &[LowerLayer],
    user: &str,
    network: RunNetwork,
    script: &str,
) -> Ran {
    run_in("/", runner, store, lowers, user, network, script)
}

fn run_in(
    workdir: &str,
    runner: &SandboxRunner,
    store: &Store,
    lowers: &[LowerLayer],
    user: &str,
    network: RunNetwork,
    script: &str,
) -> Ran {
    let step = RunStep {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        network,
        args: Vec::new(),
        mounts: Vec::new(),
        insecure: false,
        files: Vec::new(),
        created_by: script.into(),
        location: lade::plan::Location::new("Dockerfile", 2, 1),
    };
    let out = Mutex::new(Vec::new());
    let sink = |b: &[u8]| out.lock().unwrap().extend_from_slice(b);
    let input = RunInput {
        step: &step,
        env: vec!["PATH=/bin".into()],
        user: user.into(),
        workdir: workdir.into(),
        platform: "linux/amd64".into(),
        extra_hosts: Vec::new(),
        lowers: lowers.to_vec(),
        mount_sources: Vec::new(),
        source_date_epoch: Some(5000),
        output: &sink,
    };
    let result = runner.run(&input, store);
    Ran {
        result,
        output: String::from_utf8_lossy(&out.into_inner().unwrap()).into_owned(),
    }
}

/// One line per entry: `path kind mode uid:gid [content]`, sorted, for comparisons.
fn summary(entries: &[Entry]) -> Vec<String> {
    let mut v: Vec<String> = entries
        .iter()
        .map(|e| {
            let kind = match &e.kind {
                EntryKind::Dir => "dir".to_string(),
                EntryKind::File { source, .. } => {
                    let data = match source {
                        FileSource::Host(p) => std::fs::read(p).unwrap(),
                        FileSource::Bytes(b) => b.to_vec(),
                    };
                    format!("file {:?}", String::from_utf8_lossy(&data))
                }
                EntryKind::Symlink { target } => {
                    format!("symlink {}", String::from_utf8_lossy(target))
                }
                EntryKind::Hardlink { target } => format!("hardlink {target}"),
                EntryKind::Whiteout => "whiteout".into(),
                EntryKind::Special { kind, major, minor } => {
                    format!("special {kind:?} {major},{minor}")
                }
                EntryKind::OpaqueWhiteout => "opaque".into(),
            };
            match e.kind {
                EntryKind::Whiteout | EntryKind::OpaqueWhiteout => format!("{} {kind}", e.path),
                _ => format!("{} {kind} {:o} {}:{}", e.path, e.mode, e.uid, e.gid),
            }
        })
        .collect();
    v.sort();
    v
}

const CHANGES: &str = "set -e; echo new > /new; echo more >> /f; rm /old; \
    rm -rf /d && mkdir /d && echo c > /d/c; chmod 600 /same; chown 1000:10 /keep/k; \
    mkdir -p /w/x; cat /same > /dev/null";

fn changes_with(choice: SnapshotterChoice) -> Vec<String> {
    let sb = Sandbox::new(choice);
    let (out, _) = sb.run("", CHANGES).ok();
    for e in &out.entries {
        assert!(e.mtime <= 5000, "{} mtime {} not clamped", e.path, e.mtime);
    }
    let s = summary(&out.entries);
    drop(out);
    s
}

fn expected_changes() -> Vec<String> {
    [
        "/d dir 755 0:0",
        "/d opaque",
        "/d/c file \"c\\n\" 644 0:0",
        "/f file \"f\\nmore\\n\" 644 0:0",
        "/keep dir 755 0:0",
        "/keep/k file \"k\\n\" 644 1000:10",
        "/new file \"new\\n\" 644 0:0",
        "/old whiteout",
        "/same file \"same\\n\" 600 0:0",
        "/w dir 755 0:0",
        "/w/x dir 755 0:0",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn overlay_run_yields_exactly_the_changes() {
    // No /etc/hosts, resolv.conf, hostname, /proc, /sys, /dev: the runtime's mount points are
    // not in the layer; /keep is there because its child changed.
    assert_eq!(changes_with(SnapshotterChoice::Overlay), expected_changes());
}

#[test]
fn copy_snapshotter_yields_the_same_entries() {
    assert_eq!(changes_with(SnapshotterChoice::Copy), expected_changes());
}

#[test]
fn nothing_changed_gives_no_entries_and_mount_points_stay_out() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    // A base without /etc, /proc, /sys or /dev at all.
    let bb = std::fs::read("/bin/busybox").unwrap();
    let lowers = vec![put_layer(
        &store,
        vec![
            file("/bin/busybox", &bb, 0o755),
            Entry {
                kind: EntryKind::Symlink {
                    target: b"busybox".to_vec(),
                },
                ..file("/bin/sh", b"", 0o777)
            },
        ],
    )];
    let runner = SandboxRunner::new(None, SnapshotterChoice::Auto);
    let ran = run(
        &runner,
        &store,
        &lowers,
        "",
        RunNetwork::Default,
        "/bin/busybox cat /etc/hosts /etc/hostname; /bin/busybox ls /proc/self > /dev/null",
    );
    let (out, output) = ran.ok();
    assert!(output.contains("buildkitsandbox"), "{output}");
    assert_eq!(summary(&out.entries), Vec::<String>::new());
}

#[test]
fn network_none_has_only_loopback_up() {
    let sb = Sandbox::new(SnapshotterChoice::Auto);
    let (_, output) = sb
        .run(
            "",
            "cat /proc/net/dev; echo routes:; cat /proc/net/route; \
             cat /sys/class/net/lo/operstate; cat /sys/class/net/lo/flags",
        )
        .ok();
    let ifaces: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim()))
        .filter(|n| !n.is_empty() && !n.contains('|') && *n != "routes")
        .collect();
    assert_eq!(ifaces, ["lo"], "{output}");
    let routes = output.split("routes:\n").nth(1).unwrap();
    assert_eq!(
        routes.lines().filter(|l| l.contains('\t')).count(),
        1,
        "only the header: {routes}"
    );
    // IFF_UP (0x1) set on lo.
    let flags = output.lines().last().unwrap().trim();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down: {output}");
}

#[test]
fn failure_reports_exit_code_and_output_tail() {
    let sb = Sandbox::new(SnapshotterChoice::Auto);
    let script = "for i in $(seq 1 30); do echo line$i; done; exit 3";
    let ran = sb.run("", script);
    match ran.result {
        Err(RunError::Failed {
            command,
            code,
            tail,
        }) => {
            assert_eq!(code, 3);
            assert_eq!(command, format!("/bin/sh -c {script}"));
            let want: Vec<String> = (21..=30).map(|i| format!("line{i}")).collect();
            assert_eq!(tail, want);
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("exit 3 succeeded"),
    }
    // stderr is in the output too.
    let ran = sb.run("", "echo to-stderr >&2; exit 4");
    match ran.result {
        Err(RunError::Failed { code: 4, tail, .. }) => assert_eq!(tail, ["to-stderr"]),
        other => panic!("{:?}", other.err()),
    }
    // Nothing of the snapshot is left in the store.
    let snaps: Vec<_> = std::fs::read_dir(sb.tmp.path().join("run/snapshots"))
        .unwrap()
        .collect();
    assert!(snaps.is_empty(), "{snaps:?}");
}

#[test]
fn user_by_name_and_by_uid_gid() {
    let sb = Sandbox::new(SnapshotterChoice::Auto);
    let script = "echo $(id -u) $(id -g) $(id -G) $HOME";
    let (_, output) = sb.run("app", script).ok();
    assert_eq!(output.trim(), "1000 1000 1000 10 /home/app");
    let (_, output) = sb.run("4242:4343", script).ok();
    assert_eq!(output.trim(), "4242 4343 4343 /");
    let err = sb.run("nobody", script).result.err().expect("unknown user");
    assert!(
        err.to_string().contains("unable to find user nobody"),
        "{err}"
    );
}

#[test]
fn same_command_same_layer_digest_in_two_stores() {
    let digest = |_: u32| {
        let sb = Sandbox::new(SnapshotterChoice::Auto);
        let (out, _) = sb.run("", "echo hi > /x && chmod 600 /x").ok();
        let (_, d) = write_layer(
            out.entries,
            LayerOptions::new(Compression::Gzip, 5000),
            std::io::sink(),
        )
        .unwrap();
        d.digest
    };
    let a: Digest = digest(1);
    // A second apart: a clock-dependent mtime would show up.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(a, digest(2));
}

/// A device member: `raw_member` with major/minor filled in.
fn raw_device(name: &[u8], typeflag: u8, major: u32, minor: u32) -> Vec<u8> {
    let mut m = common::raw_member(name, typeflag, b"", b"", 0o666);
    m[329..337].copy_from_slice(format!("{major:07o}\0").as_bytes());
    m[337..345].copy_from_slice(format!("{minor:07o}\0").as_bytes());
    m[148..156].copy_from_slice(b"        ");
    let sum: u32 = m[..512].iter().map(|&x| u32::from(x)).sum();
    m[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    m
}

#[test]
fn hostile_base_layer_cannot_write_outside_its_directory() {
    let canary = tempfile::tempdir().unwrap();
    let cdir = canary.path().to_str().unwrap().as_bytes().to_vec();
    let mut sb = Sandbox::new(SnapshotterChoice::Auto);
    let dots = [&b"../../../../../../../../../.."[..], &cdir, b"/dots"].concat();
    let hostile = put_raw_layer(
        &sb.store,
        &common::raw_tar(&[
            common::raw_member(&dots, b'0', b"", b"dots\n", 0o644),
            common::raw_member(b"evil", b'2', &cdir, b"", 0o777),
            common::raw_member(b"evil/through-link", b'0', b"", b"x\n", 0o644),
            common::raw_member(b"etcl", b'2', b"/etc", b"", 0o777),
            common::raw_member(b"etcl/lade-canary", b'0', b"", b"x\n", 0o644),
            raw_device(b"blk", b'4', 7, 0),
        ]),
    );
    sb.lowers.push(hostile);
    let (out, output) = sb
        .run(
            "",
            "echo pwn > /evil/from-run; cat /blk > /dev/null 2>/tmp/blk-err; cat /tmp/blk-err",
        )
        .ok();
    // The device node from the layer cannot be opened: the overlay root is mounted nodev
    // (EACCES); under a runtime with docker's device cgroup it would be EPERM.
    assert!(
        output.contains("Permission denied") || output.contains("Operation not permitted"),
        "{output}"
    );
    let host_files: Vec<_> = std::fs::read_dir(canary.path()).unwrap().collect();
    assert!(host_files.is_empty(), "{host_files:?}");
    assert!(!Path::new("/etc/lade-canary").exists());
    // What the layer wrote stayed inside: the escaping names landed under the root.
    let s = summary(&out.entries);
    assert!(
        s.iter()
            .any(|l| l.ends_with("/from-run file \"pwn\\n\" 644 0:0")),
        "{s:?}"
    );
    drop(out);

    // A hard link to a host file is refused when the layer is extracted.
    let victim = canary.path().join("victim");
    std::fs::File::create(&victim)
        .unwrap()
        .write_all(b"v")
        .unwrap();
    let hl = put_raw_layer(
        &sb.store,
        &common::raw_tar(&[common::raw_member(
            b"hl",
            b'1',
            victim.to_str().unwrap().as_bytes(),
            b"",
            0o644,
        )]),
    );
    sb.lowers.pop();
    sb.lowers.push(hl);
    assert!(matches!(
        sb.run("", "true").result,
        Err(RunError::Sandbox(_))
    ));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1);
}

#[test]
fn a_long_chain_of_lowers_mounts() {
    // 80 layers: their paths together exceed the page-size limit of overlay's `lowerdir=`.
    let mut sb = Sandbox::new(SnapshotterChoice::Overlay);
    for i in 0..80 {
        let layer = put_layer(
            &sb.store,
            vec![file(&format!("/l/{i}"), format!("{i}\n").as_bytes(), 0o644)],
        );
        sb.lowers.push(layer);
    }
    let (_, output) = sb.run("", "ls /l | wc -l; cat /l/0 /l/79").ok();
    let words: Vec<&str> = output.split_whitespace().collect();
    assert_eq!(words, ["80", "0", "79"]);
}

#[test]
fn the_same_layer_twice_in_the_chain_mounts() {
    // Two steps that made equal layers (`COPY f /f` again): one extracted directory, which
    // overlayfs refuses to take twice as a lowerdir.
    let mut sb = Sandbox::new(SnapshotterChoice::Overlay);
    let a = put_layer(
        &sb.store,
        vec![dir("/d", 0o755), file("/d/a", b"a\n", 0o644)],
    );
    let b = put_layer(
        &sb.store,
        vec![file("/d/a", b"b\n", 0o644), file("/d/b", b"b\n", 0o644)],
    );
    sb.lowers.extend([a.clone(), b, a]);
    let (_, output) = sb.run("", "cat /d/a /d/b").ok();
    assert_eq!(output, "a\nb\n");
}

/// Child mode of [`sigint_during_a_run_deletes_the_container_and_the_snapshot`]: this test
/// binary, re-run with `LADE_TEST_SIGINT_STORE` set, starts a RUN that sleeps.
fn sigint_child(store_dir: &str) {
    lade::store::interrupt::install();
    let store = Store::open(Path::new(store_dir)).unwrap();
    let lowers = busybox_base(&store);
    let runner = SandboxRunner::new(None, SnapshotterChoice::Overlay);
    let ran = run(
        &runner,
        &store,
        &lowers,
        "",
        RunNetwork::None,
        "exec sleep 60",
    );
    panic!("the RUN was not interrupted: {:?}", ran.result.err());
}

#[test]
fn sigint_during_a_run_deletes_the_container_and_the_snapshot() {
    if let Ok(dir) = std::env::var("LADE_TEST_SIGINT_STORE") {
        return sigint_child(&dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    // The child's test harness has threads before the test calls `interrupt::install`, as
    // `lade` has none: start it with the signals blocked, as `install` leaves them, so that
    // only its waiting thread takes them.
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd
        .args([
            "--exact",
            "sigint_during_a_run_deletes_the_container_and_the_snapshot",
            "--test-threads=1",
            "--nocapture",
        ])
        .env("LADE_TEST_SIGINT_STORE", tmp.path())
        .spawn()
        .unwrap();
    // Wait until the container runs: its sleep is a process whose root is the snapshot.
    let snapshots = tmp.path().join("run/snapshots");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let merged = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the RUN never started"
        );
        let m = std::fs::read_dir(&snapshots)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("merged"));
        if let Some(m) = m {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            if mounts.contains(m.to_str().unwrap()) && sleeping_in(tmp.path()) {
                // Let the runtime start the process (the test holds either way).
                std::thread::sleep(std::time::Duration::from_millis(300));
                break m;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(merged.to_str().unwrap()), "still mounted");
    let left: Vec<_> = std::fs::read_dir(&snapshots).unwrap().collect();
    assert!(left.is_empty(), "snapshot left: {left:?}");
    assert!(!sleeping_in(tmp.path()), "the container still runs");
}

/// The runtime has a container in the store's state directory (`<store>/run/state/<id>`).
fn sleeping_in(store: &Path) -> bool {
    std::fs::read_dir(store.join("run/state"))
        .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.path().is_dir())))
}

#[test]
fn missing_workdir_is_created_and_lands_in_the_layer() {
    let sb = Sandbox::new(SnapshotterChoice::Auto);
    let (out, output) = run_in(
        "/app/src",
        &sb.runner,
        &sb.store,
        &sb.lowers,
        "app",
        RunNetwork::None,
        "pwd",
    )
    .ok();
    assert_eq!(output.trim(), "/app/src");
    assert_eq!(
        summary(&out.entries),
        ["/app dir 755 0:0", "/app/src dir 755 0:0"]
    );
}

/// A `lade build` killed with SIGKILL mid-RUN leaves its container running, its overlay
/// mounted and its bundle behind; the next build on the same store removes all of it.
#[test]
fn a_sigkilled_run_is_cleaned_up_by_the_next_build() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // A busybox base as an OCI layout, made by lade itself.
    let root = tmp.path().join("root");
    common::busybox_rootfs(&root);
    let base = common::layout_from_rootfs_dir(&root, tmp.path(), &[]);

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN exec sleep 120\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lade"))
        .env("LADE_CACHE_DIR", &cache)
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!(
            "type=oci,dest={}",
            tmp.path().join("o.tar").display()
        ))
        .arg(&ctx)
        .spawn()
        .unwrap();
    let state = cache.join("run/state");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pid = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the RUN never started"
        );
        let pid = common::container_init_pids(&state)
            .first()
            .map(|&p| p as i32);
        if let Some(p) = pid {
            break p;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(cache.to_str().unwrap())
    };
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    assert!(mounted() && alive(), "SIGKILL left nothing to clean up");

    // Any build on the store sweeps what dead builds left.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("f"), "x").unwrap();
    std::fs::write(other.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    common::lade(&cache)
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!(
            "type=oci,dest={}",
            tmp.path().join("p.tar").display()
        ))
        .arg(&other)
        .assert()
        .success();
    // The runtime kills the container's process; it may take a moment to be reaped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!alive(), "the killed build's container still runs");
    assert!(!mounted(), "the killed build's snapshot is still mounted");
    for d in ["run/state", "run/snapshots", "run/bundles"] {
        let left: Vec<_> = std::fs::read_dir(cache.join(d)).unwrap().collect();
        assert!(left.is_empty(), "{d} still holds {left:?}");
    }
}

/// A block device node the step makes, in `/dev` or in the root, cannot be opened, under crun
/// (no cgroups: `nodev` mounts) and runc (docker's device cgroup); the standard nodes work.
#[test]
fn device_nodes_made_by_a_step_cannot_be_opened_with_either_runtime() {
    use std::os::unix::fs::MetadataExt;
    // The device of the disk this test runs on: one that exists and root could read.
    let dev = std::fs::metadata("/").unwrap().dev();
    let (major, minor) = match rustix::fs::major(dev) {
        0 => (7, 0),
        m => (m, rustix::fs::minor(dev)),
    };
    let sb = Sandbox::new(SnapshotterChoice::Overlay);
    let script = format!(
        "b=/bin/busybox; $b mknod /dev/lade-blk b {major} {minor}; $b mknod /blk b {major} {minor}; \
         for f in /dev/lade-blk /blk; do $b head -c1 $f > /dev/null 2>> /tmp/err; done; \
         $b cat /tmp/err; $b head -c4 /dev/zero | $b wc -c"
    );
    let runtimes = installed_runtimes();
    assert!(!runtimes.is_empty(), "neither crun nor runc is installed");
    for (name, binary) in runtimes {
        let runner = SandboxRunner::new(Some(binary), SnapshotterChoice::Overlay);
        let (_, output) = run(
            &runner,
            &sb.store,
            &sb.lowers,
            "",
            RunNetwork::None,
            &script,
        )
        .ok();
        let refused = output
            .lines()
            .filter(|l| l.contains("Permission denied") || l.contains("Operation not permitted"))
            .count();
        assert_eq!(refused, 2, "{name}: {output}");
        assert!(output.lines().any(|l| l.trim() == "4"), "{name}: {output}");
    }
}

/// crun and runc, where installed, with their paths.
fn installed_runtimes() -> Vec<(&'static str, std::path::PathBuf)> {
    ["crun", "runc"]
        .into_iter()
        .filter_map(|name| {
            ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
                .map(|p| (name, p))
        })
        .collect()
}

/// Docker's seccomp filter: a user namespace needs no capability, only the filter refuses it;
/// crun loads the filter lade compiled, runc compiles the config's section.
#[test]
fn the_seccomp_filter_refuses_new_namespaces_with_either_runtime() {
    let sb = Sandbox::new(SnapshotterChoice::Overlay);
    let script = "unshare -U true 2>&1; echo \"exit $?\"; echo ok > /f; cat /f";
    let runtimes = installed_runtimes();
    assert!(!runtimes.is_empty(), "neither crun nor runc is installed");
    for (name, binary) in runtimes {
        let runner = SandboxRunner::new(Some(binary), SnapshotterChoice::Overlay);
        let (_, output) = run(&runner, &sb.store, &sb.lowers, "", RunNetwork::None, script).ok();
        assert!(
            output.contains("Operation not permitted") && output.ends_with("exit 1\nok\n"),
            "{name}: {output}"
        );
    }
}
