//! Layer writer / reader / extractor against real files and GNU tar.

mod common;

use common::{raw_member, raw_tar};

use lade::digest::Digest;
use lade::layer::*;
use lade::path::ImagePath;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn ip(s: &str) -> ImagePath {
    ImagePath::parse_absolute(s).unwrap()
}

fn ipb(b: &[u8]) -> ImagePath {
    ImagePath::from_rel_bytes(b).unwrap()
}

fn entry(path: ImagePath, kind: EntryKind, mode: u32) -> Entry {
    Entry {
        path,
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 1_600_000_000,
        xattrs: BTreeMap::new(),
    }
}

fn bytes(b: &[u8]) -> EntryKind {
    EntryKind::File {
        source: FileSource::Bytes(Arc::new(b.to_vec())),
        size: b.len() as u64,
        link_key: None,
    }
}

fn write(entries: Vec<Entry>, c: Compression) -> (Vec<u8>, LayerDigests) {
    write_layer(entries, LayerOptions::new(c, 0), Vec::new()).unwrap()
}

/// A tree exercising every entry kind, built on disk; returns (dir, entries).
fn host_tree() -> (tempfile::TempDir, Vec<Entry>) {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let mk = |rel: &str, data: &[u8], mode: u32| {
        let p = r.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    mk("bin/tool", b"#!/bin/sh\necho hi\n", 0o755);
    mk("bin/suid", b"\x7fELF not really", 0o4755);
    mk("etc/conf", b"key=value\n", 0o644);
    mk("hard/a", &vec![b'h'; 70_000], 0o640);
    fs::hard_link(r.join("hard/a"), r.join("hard/b")).unwrap();
    let long = format!("deep/{}", "x".repeat(120));
    mk(&long, b"long name\n", 0o600);
    let split = format!("{}/{}/f", "d".repeat(80), "e".repeat(60));
    mk(&split, b"split\n", 0o644);
    fs::create_dir(r.join("empty")).unwrap();
    fs::set_permissions(r.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir(r.join("links")).unwrap();
    std::os::unix::fs::symlink("../etc/conf", r.join("links/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/conf", r.join("links/abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", r.join("links/dangling")).unwrap();
    let long_target = format!("/{}/target", "t".repeat(150));
    std::os::unix::fs::symlink(&long_target, r.join("links/long")).unwrap();
    fs::write(r.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name\n").unwrap();

    let mut entries = Vec::new();
    for e in walkdir::WalkDir::new(r).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(r).unwrap().as_os_str().as_bytes();
        let md = e.path().symlink_metadata().unwrap();
        let kind = if md.is_dir() {
            EntryKind::Dir
        } else if md.file_type().is_symlink() {
            EntryKind::Symlink {
                target: fs::read_link(e.path())
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            }
        } else {
            EntryKind::File {
                source: FileSource::Host(e.path().to_path_buf()),
                size: md.len(),
                link_key: (md.nlink() > 1).then(|| (md.dev(), md.ino())),
            }
        };
        let mut en = entry(ipb(rel), kind, md.mode() & 0o7777);
        en.mtime = 1_650_000_000;
        entries.push(en);
    }
    entries.push(entry(
        ip("/hard/c"),
        EntryKind::Hardlink {
            target: ip("/etc/conf"),
        },
        0o644,
    ));
    (t, entries)
}

fn perm_string(kind: TarKind, mode: u32) -> String {
    let t = match kind {
        TarKind::Dir => 'd',
        TarKind::Symlink => 'l',
        TarKind::Hardlink => 'h',
        _ => '-',
    };
    let mut s = String::from(t);
    for (shift, special, ch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => ch,
            (true, false) => ch.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `tar -tv` output as (permissions, name, link) with names as raw bytes.
fn gnu_listing(tar_file: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let out = Command::new("tar")
        .args(["--quoting-style=literal", "--numeric-owner", "-tvf"])
        .arg(tar_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            // perm owner size date time name...
            let mut rest = line;
            let mut fields = Vec::new();
            for _ in 0..5 {
                let i = rest.iter().position(|&b| b == b' ').unwrap();
                fields.push(String::from_utf8_lossy(&rest[..i]).into_owned());
                rest = &rest[i..];
                while rest[0] == b' ' {
                    rest = &rest[1..];
                }
            }
            let find = |pat: &[u8]| rest.windows(pat.len()).position(|w| w == pat);
            let (name, link) = if let Some(i) = find(b" -> ") {
                (rest[..i].to_vec(), rest[i + 4..].to_vec())
            } else if let Some(i) = find(b" link to ") {
                (rest[..i].to_vec(), rest[i + 9..].to_vec())
            } else {
                (rest.to_vec(), Vec::new())
            };
            (fields[0].clone(), name, link)
        })
        .collect()
}

#[test]
fn host_tree_round_trips_through_gnu_tar_and_our_tools() {
    let (src, entries) = host_tree();
    let (tar, d) = write(entries.clone(), Compression::None);
    assert_eq!(d.digest, d.diff_id);
    assert_eq!(d.diff_id, Digest::of(&tar));
    assert_eq!(d.size, tar.len() as u64);
    assert_eq!(tar.len() % 512, 0);
    assert!(tar[tar.len() - 1024..].iter().all(|&b| b == 0));

    let work = tempfile::tempdir().unwrap();
    let tar_file = work.path().join("layer.tar");
    fs::write(&tar_file, &tar).unwrap();

    // Our lister agrees with GNU tar, entry by entry.
    let ours = list_layer(&tar[..], Compression::None).unwrap();
    let gnu = gnu_listing(&tar_file);
    let ours_as_gnu: Vec<_> = ours
        .iter()
        .map(|e| {
            (
                perm_string(e.kind, e.mode),
                e.raw_name.clone(),
                e.link_target.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(gnu, ours_as_gnu);

    // Sorted by bytes, parents first, dirs with '/', hard links to the first in order.
    let names: Vec<&[u8]> = ours.iter().map(|e| e.path.as_bytes()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let find = |p: &str| ours.iter().find(|e| e.path == ip(p)).unwrap();
    assert_eq!(find("/empty").raw_name, b"empty/");
    assert_eq!(find("/empty").mode, 0o700);
    assert_eq!(find("/bin/suid").mode, 0o4755);
    assert_eq!(find("/hard/a").kind, TarKind::File);
    assert_eq!(find("/hard/a").size, 70_000);
    assert_eq!(find("/hard/b").kind, TarKind::Hardlink);
    assert_eq!(find("/hard/b").link_target.as_deref(), Some(&b"hard/a"[..]));
    assert_eq!(find("/etc/conf").kind, TarKind::File);
    assert_eq!(
        find("/hard/c").link_target.as_deref(),
        Some(&b"etc/conf"[..])
    );
    assert_eq!(
        find("/links/dangling").link_target.as_deref(),
        Some(&b"nowhere"[..])
    );
    assert_eq!(
        find("/links/abs").link_target.as_deref(),
        Some(&b"/etc/conf"[..])
    );
    assert_eq!(find("/bin/tool").mtime, 1_650_000_000);
    assert_eq!(find("/bin/tool").uid, 0);
    assert!(ours.iter().any(|e| e.path.as_bytes() == b"caf\xe9"));

    // GNU tar extracts it to the same tree.
    let gx = work.path().join("gnu");
    fs::create_dir(&gx).unwrap();
    let st = Command::new("tar")
        .arg("-xpf")
        .arg(&tar_file)
        .arg("-C")
        .arg(&gx)
        .status()
        .unwrap();
    assert!(st.success());
    let ox = work.path().join("ours");
    extract_tar_into(&tar, &ox).unwrap();
    for root in [&gx, &ox] {
        compare_trees(src.path(), root);
        let a = fs::metadata(root.join("hard/a")).unwrap();
        let b = fs::metadata(root.join("hard/b")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard link preserved in {root:?}");
        assert_eq!(
            fs::metadata(root.join("hard/c")).unwrap().ino(),
            fs::metadata(root.join("etc/conf")).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(root.join("bin/tool")).unwrap().mtime(),
            1_650_000_000
        );
        assert_eq!(
            fs::metadata(root.join("empty")).unwrap().mtime(),
            1_650_000_000
        );
    }
}

/// Same names, kinds, modes, contents and link targets below both roots.
fn compare_trees(a: &Path, b: &Path) {
    let walk = |r: &Path| -> Vec<(PathBuf, u32, Vec<u8>)> {
        let mut v: Vec<_> = walkdir::WalkDir::new(r)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let md = e.path().symlink_metadata().unwrap();
                let content = if md.file_type().is_symlink() {
                    fs::read_link(e.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                } else if md.is_file() {
                    fs::read(e.path()).unwrap()
                } else {
                    Vec::new()
                };
                let rel = e.path().strip_prefix(r).unwrap().to_path_buf();
                (rel, md.mode() & 0o177777, content)
            })
            .collect();
        v.sort();
        v
    };
    let (wa, wb) = (walk(a), walk(b));
    // hard/c only exists in the layer (an explicit link).
    let wb: Vec<_> = wb
        .into_iter()
        .filter(|e| e.0 != Path::new("hard/c"))
        .collect();
    assert_eq!(wa.len(), wb.len());
    for (x, y) in wa.iter().zip(&wb) {
        assert_eq!((&x.0, x.1), (&y.0, y.1), "entry in {b:?}");
        assert!(x.2 == y.2, "content of {:?} in {b:?}", x.0);
    }
}

fn golden_entries() -> Vec<Entry> {
    let mut lorem = Vec::new();
    for i in 0..3000 {
        lorem.extend_from_slice(format!("lorem ipsum {} dolor sit amet\n", i % 37).as_bytes());
    }
    let mut with_xattr = entry(ip("/usr/bin/ping"), bytes(b"ping"), 0o755);
    with_xattr
        .xattrs
        .insert("security.capability".into(), vec![1, 0, 0, 2, 0, 32, 0, 0]);
    let mut owned = entry(ip("/home/user/.profile"), bytes(b"PATH=$PATH\n"), 0o644);
    owned.uid = 1000;
    owned.gid = 1000;
    vec![
        entry(ip("/app"), EntryKind::Dir, 0o755),
        entry(ip("/app/main.sh"), bytes(b"echo hello\n"), 0o755),
        entry(ip("/app/data.txt"), bytes(&lorem), 0o644),
        entry(
            ip("/app/link"),
            EntryKind::Symlink {
                target: b"main.sh".to_vec(),
            },
            0o777,
        ),
        entry(ip("/etc/os-release"), bytes(b"ID=lade\n"), 0o644),
        entry(ip("/old"), EntryKind::Whiteout, 0o644),
        entry(ip("/var/cache"), EntryKind::OpaqueWhiteout, 0o644),
        with_xattr,
        owned,
    ]
}

/// Pins the byte format (tar headers, gzip and zstd settings). A change here is a format
/// change: every image digest lade produces changes with it.
#[test]
fn golden_digests() {
    const NONE: &str = "sha256:63d4e6ea3dbaf4e2bf6c48db3d4970c42407164dc9c79409bc30396e93d28d1c";
    const GZIP: &str = "sha256:d99751d7de099decf790b28ad56f6e4d1d4891cdb187e5db61039b9621de498d";
    const ZSTD: &str = "sha256:1ef05f9056dcfc6841b573385ec7a520d965601e5ad1ac10aee133263a0f3d0c";
    let expect = [
        (Compression::None, NONE, NONE),
        (Compression::Gzip, GZIP, NONE),
        (Compression::Zstd, ZSTD, NONE),
    ];
    let mut got = Vec::new();
    for (c, _, _) in expect {
        let (blob, d) = write(golden_entries(), c);
        assert_eq!(d.digest, Digest::of(&blob));
        assert_eq!(d.size, blob.len() as u64);
        got.push(format!(
            "{c:?}: digest {} diff_id {} size {}",
            d.digest, d.diff_id, d.size
        ));
    }
    let got = got.join("\n");
    let want = expect
        .iter()
        .map(|(c, d, i)| format!("{c:?}: digest {d} diff_id {i} size"))
        .collect::<Vec<_>>();
    for (g, w) in got.lines().zip(&want) {
        assert!(g.starts_with(w.as_str()), "golden digests changed:\n{got}");
    }
}

#[test]
fn golden_layer_content() {
    let (tar, _) = write(golden_entries(), Compression::None);
    let names: Vec<String> = list_layer(&tar[..], Compression::None)
        .unwrap()
        .iter()
        .map(|e| String::from_utf8_lossy(&e.raw_name).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            ".wh.old",
            "app/",
            "app/data.txt",
            "app/link",
            "app/main.sh",
            "etc/",
            "etc/os-release",
            "home/",
            "home/user/",
            "home/user/.profile",
            "usr/",
            "usr/bin/",
            "usr/bin/ping",
            "var/",
            "var/cache/",
            "var/cache/.wh..wh..opq",
        ]
    );
    let l = list_layer(&tar[..], Compression::None).unwrap();
    let ping = l.iter().find(|e| e.path == ip("/usr/bin/ping")).unwrap();
    assert_eq!(
        ping.xattrs["security.capability"],
        vec![1, 0, 0, 2, 0, 32, 0, 0]
    );
    let home = l.iter().find(|e| e.path == ip("/home/user")).unwrap();
    assert_eq!((home.mode, home.uid, home.mtime), (0o755, 0, 0));
}

fn mixed_entries() -> Vec<Entry> {
    let mut v = Vec::new();
    for i in 0..40 {
        let data = if i % 3 == 0 {
            common::noise(100_000 + i * 1_000, i as u64)
        } else {
            let mut t = Vec::new();
            while t.len() < 150_000 + i * 3_000 {
                t.extend_from_slice(
                    format!("{i} the quick brown fox {}\n", t.len() % 97).as_bytes(),
                );
            }
            t
        };
        v.push(entry(ip(&format!("/data/f{i:03}")), bytes(&data), 0o644));
    }
    v
}

fn run(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} failed");
    out.stdout
}

#[test]
fn output_does_not_depend_on_thread_count_and_decodes_with_standard_tools() {
    let (tar, plain) = write(mixed_entries(), Compression::None);
    assert!(tar.len() > 5 << 20, "spans several gzip blocks");
    let mut first: Option<(Vec<u8>, LayerDigests)> = None;
    for threads in [1, 2, 3, 8] {
        let (gz, d) = write_layer_with_threads(
            mixed_entries(),
            LayerOptions::new(Compression::Gzip, 0),
            threads,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(d.diff_id, plain.diff_id);
        match &first {
            None => first = Some((gz, d)),
            Some((g1, d1)) => {
                assert!(g1 == &gz, "{threads} threads changed the bytes");
                assert_eq!(d1, &d);
            }
        }
    }
    let (gz, _) = first.unwrap();
    assert!(run("gzip", &["-dc"], &gz) == tar);
    assert!(run("gzip", &["-t"], &gz).is_empty());
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == tar);

    let (zst, dz) = write(mixed_entries(), Compression::Zstd);
    assert_eq!(dz.diff_id, plain.diff_id);
    assert!(run("zstd", &["-dc"], &zst) == tar);
    let (zst2, _) = write(mixed_entries(), Compression::Zstd);
    assert!(zst == zst2);

    // Our lister reads all three encodings.
    for (blob, c) in [
        (&tar, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        assert_eq!(list_layer(&blob[..], c).unwrap().len(), 41);
    }
}

#[test]
fn duplicates_parents_and_link_keys() {
    let mut a = entry(ip("/x/y/file"), bytes(b"old"), 0o644);
    a.uid = 5;
    let b = entry(ip("/x/y/file"), bytes(b"new"), 0o600);
    let single = entry(
        ip("/solo"),
        EntryKind::File {
            source: FileSource::Bytes(Arc::new(b"s".to_vec())),
            size: 1,
            link_key: Some((1, 99)),
        },
        0o644,
    );
    let root = entry(ImagePath::root(), EntryKind::Dir, 0o755);
    // An explicit hard link sorting before its target: the link's path carries the data.
    let early = entry(ip("/a"), EntryKind::Hardlink { target: ip("/z") }, 0o644);
    let z = entry(ip("/z"), bytes(b"zzz"), 0o640);
    let mut opts = LayerOptions::new(Compression::None, 42);
    opts.mtime = 42;
    let (tar, _) = write_layer(vec![a, root, b, single, early, z], opts, Vec::new()).unwrap();
    let l = list_layer(&tar[..], Compression::None).unwrap();
    let names: Vec<_> = l.iter().map(|e| e.raw_name.clone()).collect();
    assert_eq!(
        names,
        [&b"a"[..], b"solo", b"x/", b"x/y/", b"x/y/file", b"z"]
    );
    assert_eq!((l[0].kind, l[0].size, l[0].mode), (TarKind::File, 3, 0o640));
    assert_eq!(l[5].kind, TarKind::Hardlink);
    assert_eq!(l[5].link_target.as_deref(), Some(&b"a"[..]));
    assert_eq!(
        l[1].kind,
        TarKind::File,
        "a link key used once is a plain file"
    );
    assert_eq!((l[2].mode, l[2].mtime), (0o755, 42));
    assert_eq!((l[4].mode, l[4].uid), (0o600, 0), "later duplicate wins");
    assert_eq!(
        read_file_from_layer(&tar[..], Compression::None, &ip("/x/y/file")).unwrap(),
        Some(b"new".to_vec())
    );
    assert_eq!(
        read_file_from_layer(&tar[..], Compression::None, &ip("/nope")).unwrap(),
        None
    );
}

#[test]
fn whiteout_names_are_rejected_before_writing() {
    for bad in ["/app/.wh.secret", "/.wh..wh..opq", "/a/.wh.dir/file"] {
        let mut sink = Vec::new();
        let err = write_layer(
            vec![
                entry(ip("/a/ok"), bytes(b"1"), 0o644),
                entry(ip(bad), bytes(b"2"), 0o644),
            ],
            LayerOptions::new(Compression::Gzip, 0),
            &mut sink,
        )
        .unwrap_err();
        assert!(matches!(err, LayerError::WhiteoutName { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(bad), "{msg}");
        assert!(msg.contains("whiteout"), "{msg}");
        assert!(sink.is_empty(), "nothing written for {bad}");
    }
}

#[test]
fn dangling_hardlink_is_rejected_before_writing() {
    let mut sink = Vec::new();
    let err = write_layer(
        vec![entry(
            ip("/l"),
            EntryKind::Hardlink {
                target: ip("/missing"),
            },
            0o644,
        )],
        LayerOptions::new(Compression::None, 0),
        &mut sink,
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::DanglingHardlink { .. }), "{err}");
    assert!(sink.is_empty());
}

#[test]
fn unreadable_and_changed_files_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let host = |p: PathBuf, size| EntryKind::File {
        source: FileSource::Host(p),
        size,
        link_key: None,
    };
    // Missing file.
    let missing = t.path().join("gone");
    let err = write_layer(
        vec![entry(ip("/f"), host(missing.clone(), 3), 0o644)],
        LayerOptions::new(Compression::Gzip, 0),
        Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, LayerError::Read { path, .. } if path == &missing),
        "{err}"
    );
    assert!(err.to_string().contains("gone"), "{err}");
    // A directory where a file is expected.
    let err = write_layer(
        vec![entry(ip("/f"), host(t.path().to_path_buf(), 0), 0o644)],
        LayerOptions::new(Compression::Zstd, 0),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(&err, LayerError::Read { .. }), "{err}");
    assert!(err.to_string().contains("directory"), "{err}");
    // Size differs from what the caller saw.
    let f = t.path().join("f");
    fs::write(&f, b"12345").unwrap();
    let err = write_layer(
        vec![entry(ip("/f"), host(f, 3), 0o644)],
        LayerOptions::new(Compression::None, 0),
        Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Changed {
                expected: 3,
                actual: 5,
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// 2 GiB sparse file: streamed, bounded memory.

const SPARSE: u64 = 2 << 30;

/// Runs in a child process (see `huge_sparse_file_streams_with_bounded_memory`) so that
/// VmHWM measures this layer write alone.
#[test]
fn huge_sparse_file_child() {
    let Ok(path) = std::env::var("LADE_SPARSE_FILE") else {
        return; // only meaningful when spawned by the parent test
    };
    struct Capture {
        head: Vec<u8>,
        n: u64,
    }
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let keep = (512usize.saturating_sub(self.head.len())).min(b.len());
            self.head.extend_from_slice(&b[..keep]);
            self.n += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = entry(
        ip("/big"),
        EntryKind::File {
            source: FileSource::Host(path.into()),
            size: SPARSE,
            link_key: None,
        },
        0o644,
    );
    let (cap, d) = write_layer(
        vec![e],
        LayerOptions::new(Compression::None, 0),
        Capture {
            head: Vec::new(),
            n: 0,
        },
    )
    .unwrap();
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    println!("RESULT {} {} {} {}", d.diff_id, cap.n, hex(&cap.head), hwm);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn huge_sparse_file_streams_with_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("sparse");
    fs::File::create(&path).unwrap().set_len(SPARSE).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "huge_sparse_file_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LADE_SPARSE_FILE", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness prints "test huge_sparse_file_child ... " on the same line.
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| &l[i..]))
        .expect("child result");
    let f: Vec<&str> = line.split_whitespace().collect();
    let (diff_id, n, head_hex, hwm_kb) = (f[1], f[2], f[3], f[5]);

    // The stream is one 512-byte header, 2 GiB of zeros and the 1 KiB trailer.
    assert_eq!(n.parse::<u64>().unwrap(), 512 + SPARSE + 1024);
    let head: Vec<u8> = (0..512)
        .map(|i| u8::from_str_radix(&head_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(&head[..4], b"big\0");
    assert_eq!(&head[124..136], b"20000000000\0", "2 GiB in octal");
    // Independently computed diff_id: hash the header + zeros ourselves.
    let mut h = lade::digest::Hasher::new();
    h.update(&head);
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(SPARSE >> 20) {
        h.update(&zeros);
    }
    h.update(&[0u8; 1024]);
    assert_eq!(diff_id, h.finish().to_string());
    // What this proves: the whole 2 GiB went through a process whose peak RSS stayed far
    // below the file size (the writer streams through fixed 1 MiB buffers).
    let hwm: u64 = hwm_kb.parse().unwrap();
    assert!(hwm < 100 * 1024, "peak RSS {hwm} kB");
}

// ---------------------------------------------------------------------------------------
// Extraction.

/// Extracts an uncompressed layer `tar` into `root` with the default options.
fn extract_tar_into(tar: &[u8], root: &Path) -> Result<(), LayerError> {
    extract_layer(tar, Compression::None, root, &ExtractOptions::default())
}

#[test]
fn extraction_never_escapes_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let victim_abs = victim.to_str().unwrap().as_bytes().to_vec();
    let victim_rel = {
        // From root/up, a relative path with enough ../ to reach the victim.
        let mut v = b"../../../../../../../../..".to_vec();
        v.extend_from_slice(&victim_abs);
        v
    };
    let tar = raw_tar(&[
        raw_member(b"evil", b'2', b"/", b"", 0o777),
        raw_member(b"evil/etc/passwd", b'0', b"", b"pwned\n", 0o644),
        raw_member(b"up", b'2', b"../../../../../../../..", b"", 0o777),
        raw_member(b"up/tmp/x", b'0', b"", b"x\n", 0o644),
        raw_member(b"../../escape", b'0', b"", b"dots\n", 0o644),
        raw_member(b"/abs/file", b'0', b"", b"abs\n", 0o644),
        raw_member(b"abslink", b'2', &victim_abs, b"", 0o777),
        raw_member(b"abslink", b'0', b"", b"replaced link, not victim\n", 0o644),
        raw_member(b"rellink", b'2', &victim_rel, b"", 0o777),
        // A hard link to the victim through the symlink resolves inside the root (and there
        // is nothing there), so it fails instead of linking the host file.
    ]);
    extract_tar_into(&tar, &root).unwrap();
    assert_eq!(fs::read(root.join("etc/passwd")).unwrap(), b"pwned\n");
    assert_eq!(fs::read(root.join("tmp/x")).unwrap(), b"x\n");
    assert_eq!(fs::read(root.join("escape")).unwrap(), b"dots\n");
    assert_eq!(fs::read(root.join("abs/file")).unwrap(), b"abs\n");
    assert_eq!(
        fs::read(root.join("abslink")).unwrap(),
        b"replaced link, not victim\n"
    );
    assert!(!t.path().join("escape").exists());
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert_ne!(fs::read("/etc/passwd").unwrap(), b"pwned\n");

    // Writing through a symlink to an absolute host path lands inside the root.
    let tar = raw_tar(&[raw_member(
        &[&b"rellink"[..], b"/../inside"].concat(),
        b'0',
        b"",
        b"in\n",
        0o644,
    )]);
    let _ = extract_tar_into(&tar, &root);
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert!(!victim.parent().unwrap().join("inside").exists());

    // Hard links: to a host file (absolute, ../, or through an escaping symlink) → error.
    for target in [victim_abs.clone(), victim_rel.clone(), {
        let mut v = b"evil".to_vec();
        v.extend_from_slice(&victim_abs);
        v
    }] {
        let tar = raw_tar(&[raw_member(b"hl", b'1', &target, b"", 0o644)]);
        let err = extract_tar_into(&tar, &root).unwrap_err();
        assert!(matches!(err, LayerError::Extract { .. }), "{err}");
        assert_eq!(fs::metadata(&victim).unwrap().nlink(), 1);
    }
    // A hard link through ../ to a file that *is* in the root links that file.
    let tar = raw_tar(&[raw_member(b"hl", b'1', b"../../etc/passwd", b"", 0o644)]);
    extract_tar_into(&tar, &root).unwrap();
    assert_eq!(
        fs::metadata(root.join("hl")).unwrap().ino(),
        fs::metadata(root.join("etc/passwd")).unwrap().ino()
    );
    // Device nodes are skipped without the option.
    let tar = raw_tar(&[raw_member(b"dev/null", b'3', b"", b"", 0o666)]);
    extract_tar_into(&tar, &root).unwrap();
    assert!(fs::symlink_metadata(root.join("dev/null")).is_err());
}

#[test]
fn whiteouts_apply_across_layers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    let lower = vec![
        entry(ip("/a/keep"), bytes(b"keep"), 0o644),
        entry(ip("/a/gone"), bytes(b"gone"), 0o644),
        entry(ip("/a/dir/f"), bytes(b"f"), 0o644),
        entry(ip("/b/old1"), bytes(b"1"), 0o644),
        entry(ip("/b/sub/old2"), bytes(b"2"), 0o644),
        entry(ip("/c/x"), bytes(b"x"), 0o644),
        entry(ip("/bin/su"), bytes(b"su"), 0o4755),
    ];
    let upper = vec![
        entry(ip("/a/gone"), EntryKind::Whiteout, 0o644),
        entry(ip("/a/dir"), EntryKind::Whiteout, 0o644),
        entry(ip("/b"), EntryKind::OpaqueWhiteout, 0o644),
        entry(ip("/b/new"), bytes(b"new"), 0o644),
        entry(ip("/b/sub/new2"), bytes(b"n2"), 0o644),
        entry(ip("/b/-first"), bytes(b"sorts before the marker"), 0o644),
        entry(ip("/c"), EntryKind::Whiteout, 0o644),
        entry(ip("/c/x"), bytes(b"again"), 0o600),
    ];
    for (layer, c) in [(lower, Compression::Gzip), (upper, Compression::Zstd)] {
        let (blob, _) = write(layer, c);
        extract_layer(&blob[..], c, &root, &ExtractOptions::default()).unwrap();
    }
    assert_eq!(fs::read(root.join("a/keep")).unwrap(), b"keep");
    assert!(!root.join("a/gone").exists());
    assert!(!root.join("a/dir").exists());
    assert!(!root.join("b/old1").exists());
    assert!(!root.join("b/sub/old2").exists());
    assert_eq!(fs::read(root.join("b/new")).unwrap(), b"new");
    assert_eq!(fs::read(root.join("b/sub/new2")).unwrap(), b"n2");
    assert_eq!(
        fs::read(root.join("b/-first")).unwrap(),
        b"sorts before the marker"
    );
    // /c was whited out and recreated by the same layer: the new content stays.
    assert_eq!(fs::read(root.join("c/x")).unwrap(), b"again");
    let names: Vec<_> = fs::read_dir(root.join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.iter().any(|n| n.as_bytes().starts_with(b".wh.")));
    assert_eq!(
        fs::metadata(root.join("bin/su"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
}

#[test]
fn reads_gnu_and_pax_archives_from_gnu_tar() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let long_dir = "l".repeat(110);
    fs::create_dir_all(src.join(&long_dir)).unwrap();
    fs::write(src.join(&long_dir).join("file"), b"deep\n").unwrap();
    let long_target = format!("../{}", "q".repeat(130));
    std::os::unix::fs::symlink(&long_target, src.join("sym")).unwrap();
    fs::write(src.join("plain"), b"plain\n").unwrap();
    fs::set_permissions(src.join("plain"), fs::Permissions::from_mode(0o2755)).unwrap();
    for format in ["gnu", "posix", "oldgnu"] {
        let out = Command::new("tar")
            .args(["--sort=name", "--format", format, "-cf", "-", "-C"])
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        let tar = out.stdout;
        let l = list_layer(&tar[..], Compression::None).unwrap();
        let find = |p: String| {
            l.iter()
                .find(|e| e.path == ip(&p))
                .unwrap_or_else(|| panic!("{format}: {p} missing in {l:?}"))
        };
        assert_eq!(find(format!("/{long_dir}/file")).size, 5);
        assert_eq!(
            find("/sym".into()).link_target.as_deref(),
            Some(long_target.as_bytes())
        );
        assert_eq!(find("/plain".into()).mode, 0o2755);
        let root = t.path().join(format!("x-{format}"));
        extract_tar_into(&tar, &root).unwrap();
        assert_eq!(
            fs::read(root.join(&long_dir).join("file")).unwrap(),
            b"deep\n"
        );
        assert_eq!(
            fs::read_link(root.join("sym")).unwrap(),
            Path::new(&long_target)
        );
        assert_eq!(
            read_file_from_layer(&tar[..], Compression::None, &ip("/plain")).unwrap(),
            Some(b"plain\n".to_vec())
        );
    }
}

#[test]
fn extractor_reports_truncated_and_corrupt_layers() {
    let (tar, _) = write(golden_entries(), Compression::None);
    let t = tempfile::tempdir().unwrap();
    let err = extract_layer(
        &tar[..1500],
        Compression::None,
        t.path(),
        &ExtractOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Malformed(_)), "{err}");
    let mut bad = tar.clone();
    bad[600] ^= 0xff; // inside the second header
    let err = list_layer(&bad[..], Compression::None).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}
