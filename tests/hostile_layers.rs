//! Hostile and unusual layers on every path that extracts one: `ADD x.tar`, `COPY --from` a
//! stage whose base carries the layer, and `COPY --from` an `oci:` image. Assertions are on
//! the host filesystem around the extraction roots (a canary beside them, their parent's
//! mode), and on the tar headers of the layers lade writes.

mod common;

use common::{oci_layout, sha};

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One ustar member: `(name, typeflag, link target, data, devmajor, devminor)`.
type RawMember<'a> = (&'a str, u8, &'a str, &'a [u8], u32, u32);

/// An uncompressed tar of hand-made ustar members (names our writer would never produce).
fn raw_tar(members: &[RawMember<'_>]) -> Vec<u8> {
    let mut v = Vec::new();
    for (name, typeflag, link, data, major, minor) in members {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name.as_bytes());
        let mode = if *typeflag == b'5' { 0o755 } else { 0o640 };
        b[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        b[108..124].copy_from_slice(b"0000000\x000000000\0");
        b[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        b[136..148].copy_from_slice(b"00000000000\0");
        b[156] = *typeflag;
        b[157..157 + link.len()].copy_from_slice(link.as_bytes());
        b[257..265].copy_from_slice(b"ustar\x0000");
        b[329..337].copy_from_slice(format!("{major:07o}\0").as_bytes());
        b[337..345].copy_from_slice(format!("{minor:07o}\0").as_bytes());
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        v.extend_from_slice(&b);
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(512) * 512, 0);
    }
    v.extend_from_slice(&[0; 1024]);
    v
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Runs `lade build` of `ctx` (store `cache`, scratch `$TMPDIR` = `tmpdir`) into an OCI
/// archive `out`.
fn lade_build(ctx: &Path, cache: &Path, tmpdir: &Path, out: &Path) -> std::process::Output {
    common::lade(cache)
        .args(["build", "--progress", "quiet", "--output"])
        .arg(format!("type=oci,dest={}", out.display()))
        .env("TMPDIR", tmpdir)
        .arg(ctx)
        .output()
        .unwrap()
}

const HOSTILE: [&str; 3] = [".wh..", ".wh...", ".wh."];

#[test]
fn add_of_a_tar_with_hostile_whiteouts_is_refused_and_touches_nothing_around_the_root() {
    for wh in HOSTILE {
        let t = tempfile::tempdir().unwrap();
        let ctx = t.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(
            ctx.join("x.tar"),
            raw_tar(&[("keep", b'0', "", b"k", 0, 0), (wh, b'0', "", b"", 0, 0)]),
        )
        .unwrap();
        fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD x.tar /dest/\n").unwrap();
        // ADD unpacks into $TMPDIR/lade-add-*: the canary sits beside that root.
        let scratch = t.path().join("scratch");
        fs::create_dir_all(&scratch).unwrap();
        fs::set_permissions(&scratch, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(scratch.join("canary"), b"alive").unwrap();
        let out = t.path().join("o.tar");
        let o = lade_build(&ctx, &t.path().join("cache"), &scratch, &out);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{wh}: {stderr}");
        assert!(
            stderr.contains(&format!("whiteout {wh:?}")) && stderr.contains("refusing the layer"),
            "{wh}: {stderr}"
        );
        assert!(stderr.contains("unpacking x.tar"), "{stderr}");
        assert_eq!(fs::read(scratch.join("canary")).unwrap(), b"alive", "{wh}");
        assert_eq!(mode_of(&scratch), 0o755, "{wh}");
        assert!(!out.exists(), "{wh}: output written");
        assert_eq!(fs::read(ctx.join("x.tar")).unwrap().len() % 512, 0);
    }
}

#[test]
fn copy_from_a_stage_or_an_image_with_a_hostile_base_layer_is_refused() {
    for wh in HOSTILE {
        let t = tempfile::tempdir().unwrap();
        let lower = raw_tar(&[
            ("a/", b'5', "", b"", 0, 0),
            ("a/file", b'0', "", b"base", 0, 0),
        ]);
        let hostile = raw_tar(&[(wh, b'0', "", b"", 0, 0)]);
        let layout = oci_layout(&t.path().join("base"), &[lower, hostile.clone()]);
        let ctx = t.path().join("ctx");
        fs::create_dir_all(&ctx).unwrap();
        let cache = t.path().join("cache");
        // COPY --from extracts into <store>/tmp/stage-*: the canary sits beside that root.
        let store_tmp = cache.join("tmp");
        fs::create_dir_all(&store_tmp).unwrap();
        fs::set_permissions(&store_tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(store_tmp.join("canary-kept"), b"alive").unwrap();
        for dockerfile in [
            format!(
                "FROM oci:{}:1 AS base\nFROM scratch\nCOPY --from=base /a/file /f\n",
                layout.display()
            ),
            format!(
                "FROM scratch\nCOPY --from=oci:{}:1 /a/file /f\n",
                layout.display()
            ),
        ] {
            fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
            let out = t.path().join("o.tar");
            let o = lade_build(&ctx, &cache, t.path(), &out);
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{wh} {dockerfile}: {stderr}");
            assert!(
                stderr.contains(&format!("layer {}", sha(&hostile)))
                    && stderr.contains(&format!("whiteout {wh:?}")),
                "{wh} {dockerfile}: {stderr}"
            );
            assert_eq!(
                fs::read(store_tmp.join("canary-kept")).unwrap(),
                b"alive",
                "{wh}"
            );
            assert_eq!(mode_of(&store_tmp), 0o755, "{wh}");
            assert!(!out.exists());
        }
    }
}

/// `(path, type, content or link target)` of every entry below `root`, sorted.
fn tree(root: &Path) -> Vec<(String, char, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type();
        let (kind, data) = if ft.is_dir() {
            ('d', Vec::new())
        } else if ft.is_symlink() {
            (
                'l',
                fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            )
        } else if ft.is_fifo() {
            ('p', Vec::new())
        } else {
            ('f', fs::read(e.path()).unwrap())
        };
        out.push((rel, kind, data));
    }
    out
}

/// `umoci unpack` of `layout:tag` into `bundle`; returns the rootfs.
fn umoci_unpack(image: &str, bundle: &Path) -> PathBuf {
    common::ok(common::umoci(&[
        "unpack",
        "--image",
        image,
        bundle.to_str().unwrap(),
    ]));
    bundle.join("rootfs")
}

#[test]
fn directories_replaced_by_files_and_symlinks_extract_like_umoci() {
    let t = tempfile::tempdir().unwrap();
    // One layer: a directory with a file in it, then a file of the same name (EBADF before);
    // then a second layer turns var/run/ into a symlink, and adds through it.
    let l1 = raw_tar(&[
        ("d/", b'5', "", b"", 0, 0),
        ("d/in", b'0', "", b"in", 0, 0),
        ("d", b'0', "", b"now a file", 0, 0),
        ("e", b'0', "", b"file first", 0, 0),
        ("e/", b'5', "", b"", 0, 0),
        ("e/x", b'0', "", b"then a dir", 0, 0),
        ("var/", b'5', "", b"", 0, 0),
        ("var/run/", b'5', "", b"", 0, 0),
        ("var/run/pid", b'0', "", b"1", 0, 0),
        ("run/", b'5', "", b"", 0, 0),
        ("p", b'6', "", b"", 0, 0),
    ]);
    let l2 = raw_tar(&[
        ("var/run", b'2', "/run", b"", 0, 0),
        ("var/z", b'0', "", b"z", 0, 0),
        ("l", b'2', "d", b"", 0, 0),
        ("l/", b'5', "", b"", 0, 0),
        ("l/y", b'0', "", b"symlink replaced by a dir", 0, 0),
    ]);
    let layout = oci_layout(&t.path().join("base"), &[l1, l2]);
    let reference = umoci_unpack(
        &format!("{}:1", layout.display()),
        &t.path().join("umoci-base"),
    );

    let ctx = t.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for (n, dockerfile) in [
        format!(
            "FROM oci:{}:1 AS base\nFROM scratch\nCOPY --from=base / /\n",
            layout.display()
        ),
        format!("FROM scratch\nCOPY --from=oci:{}:1 / /\n", layout.display()),
    ]
    .iter()
    .enumerate()
    {
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let out = t.path().join(format!("layout-{n}"));
        let meta = t.path().join("meta.json");
        let o = common::lade(&t.path().join("cache"))
            .args(["build", "--progress", "quiet", "--output"])
            .arg(format!("type=oci-layout,dest={}", out.display()))
            .args(["-t", "out:1", "--metadata-file"])
            .arg(&meta)
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{dockerfile}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let ours = umoci_unpack(
            &format!("{}:1", out.display()),
            &t.path().join(format!("umoci-{n}")),
        );
        assert_eq!(tree(&ours), tree(&reference), "{dockerfile}");
    }
    // What umoci (and containerd) make of it, spelled out.
    assert_eq!(fs::read(reference.join("d")).unwrap(), b"now a file");
    assert_eq!(fs::read(reference.join("e/x")).unwrap(), b"then a dir");
    assert_eq!(
        fs::read_link(reference.join("var/run")).unwrap(),
        Path::new("/run")
    );
    assert!(reference.join("l").is_dir());
}

/// The `tar -tv` lines of every layer of the OCI archive `out` whose build wrote `meta`.
fn layer_listings(out: &Path, meta: &serde_json::Value) -> Vec<String> {
    meta["lade.layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            common::layer_listing(
                out,
                l["digest"].as_str().unwrap(),
                &["-v", "--numeric-owner"],
            )
        })
        .collect()
}

fn line_of<'a>(listing: &'a str, path: &str) -> Option<&'a str> {
    listing.lines().find(|l| l.ends_with(&format!(" {path}")))
}

#[test]
fn fifos_and_devices_round_trip_through_add_and_copy_from() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("special.tar"),
        raw_tar(&[
            ("dev/", b'5', "", b"", 0, 0),
            ("dev/null", b'3', "", b"", 1, 3),
            ("dev/loop7", b'4', "", b"", 7, 300),
            ("run/fifo", b'6', "", b"", 0, 0),
        ]),
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS a\nADD special.tar /x/\nCOPY pipe /x/run/ctxfifo\nFROM a\nCOPY --from=a /x/ /y/\n",
    )
    .unwrap();
    // A FIFO in the build context is copied as one too (fsutil sends FIFOs and devices).
    assert!(Command::new("mkfifo")
        .arg(ctx.join("pipe"))
        .status()
        .unwrap()
        .success());
    let out = t.path().join("o.tar");
    let meta = common::build_context(
        &ctx,
        t.path(),
        &format!("type=oci,dest={}", out.display()),
        &[],
    );
    let listings = layer_listings(&out, &meta);
    assert_eq!(listings.len(), 3, "{listings:?}");
    let ctx_fifo = line_of(&listings[1], "x/run/ctxfifo").expect(&listings[1]);
    assert!(ctx_fifo.starts_with("prw-"), "{ctx_fifo}");
    let copied = line_of(&listings[2], "y/run/ctxfifo").expect(&listings[2]);
    assert!(copied.starts_with("prw-"), "{copied}");
    for (listing, dir) in [&listings[0], &listings[2]].into_iter().zip(["x", "y"]) {
        let fifo = line_of(listing, &format!("{dir}/run/fifo")).expect(listing);
        assert!(fifo.starts_with("prw-r----- 0/0 "), "{fifo}");
        let chr = line_of(listing, &format!("{dir}/dev/null")).expect(listing);
        assert!(
            chr.starts_with("crw-r----- 0/0 ") && chr.contains(" 1,3 "),
            "{chr}"
        );
        let blk = line_of(listing, &format!("{dir}/dev/loop7")).expect(listing);
        assert!(
            blk.starts_with("brw-r----- 0/0 ") && blk.contains(" 7,300 "),
            "{blk}"
        );
    }
}

#[test]
fn device_nodes_are_skipped_with_one_warning_when_not_root() {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("special.tar"),
        raw_tar(&[
            ("dev/null", b'3', "", b"", 1, 3),
            ("dev/zero", b'3', "", b"", 1, 5),
            ("run/fifo", b'6', "", b"", 0, 0),
        ]),
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD special.tar /x/\n",
    )
    .unwrap();
    for p in [ctx.join("special.tar"), ctx.join("Dockerfile")] {
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = t.path().join("o.tar");
    let o = common::output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_lade"))
            .args(["build", "--progress", "quiet", "--cache-dir"])
            .arg(t.path().join("cache"))
            .arg("--output")
            .arg(format!("type=oci,dest={}", out.display()))
            .arg("--metadata-file")
            .arg(t.path().join("meta.json"))
            .env("TMPDIR", t.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("LADE_LOG")
            .arg(&ctx),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("device nodes"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("not running as root"), "{stderr}");
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(t.path().join("meta.json")).unwrap()).unwrap();
    let listing = &layer_listings(&out, &meta)[0];
    assert!(line_of(listing, "x/run/fifo").is_some(), "{listing}");
    assert!(line_of(listing, "x/dev/null").is_none(), "{listing}");
    assert_eq!(fs::metadata(ctx.join("special.tar")).unwrap().uid(), 0);
}

#[test]
fn add_of_a_very_deep_member_fails_cleanly_without_leftovers() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    // 2,000 components: a PAX path (ustar names hold 100 bytes).
    let deep = vec!["a"; 2000].join("/") + "/f";
    let mut record = format!(" path={deep}\n");
    let mut len = record.len();
    len += len.to_string().len();
    record = format!("{len}{record}");
    assert_eq!(record.len(), len);
    let mut tar = raw_tar(&[("PaxHeaders/f", b'x', "", record.as_bytes(), 0, 0)]);
    tar.truncate(tar.len() - 1024);
    tar.extend_from_slice(&raw_tar(&[("f", b'0', "", b"deep", 0, 0)]));
    fs::write(ctx.join("deep.tar"), tar).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD deep.tar /\n").unwrap();
    let scratch = t.path().join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let out = t.path().join("o.tar");
    let o = lade_build(&ctx, &t.path().join("cache"), &scratch, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2001 components deep; the limit is 1024 components"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left behind"
    );
    assert!(!out.exists());
}
