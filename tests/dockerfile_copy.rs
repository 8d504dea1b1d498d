//! COPY/ADD/WORKDIR against the stage's filesystem, as BuildKit does them: an existing
//! directory destination is copied into, parents keep the base's metadata (`--link` does not
//! look), WORKDIR leaves existing directories alone and creates missing ones as USER,
//! top-level symlink sources are followed inside the context, several sources need a
//! directory, `--chown` names come from the stage's own passwd, and files from images and
//! ADD archives keep their modes, owners and mtimes. Built on a local busybox base whose
//! layer has a 1777 /tmp, a home owned by 1000 and symlinked directories.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn lade_cmd() -> assert_cmd::Command {
    common::lade(&std::env::temp_dir().join("lade-test-unused-cache"))
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A busybox base in an OCI layout (tag `1`): one layer from a tar made with GNU tar, so the
/// base has what lade's own normalised context copies never produce: /tmp 1777,
/// /home/app 0750 owned 1000:1000, /var/run -> ../run, /lib -> usr/lib, and a 0600 file of
/// uid 1000 with a fixed mtime; /alib -> /usr/lib and /usr/bin/bb -> /bin/busybox are
/// absolute links.
fn base(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in [
        "bin", "etc", "tmp", "home/app", "run", "var", "usr/lib", "usr/bin",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "ls", "cat", "stat"] {
        symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    symlink("../run", root.join("var/run")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    // Absolute links, as images have them (the context refuses those).
    symlink("/usr/lib", root.join("alib")).unwrap();
    symlink("/bin/busybox", root.join("usr/bin/bb")).unwrap();
    fs::write(root.join("usr/lib/libx.so"), "elf\n").unwrap();
    fs::set_permissions(
        root.join("usr/lib/libx.so"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    fs::write(root.join("home/app/secret"), "s\n").unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("home/app"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(
        root.join("home/app/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let r = root.display();
    sh(&format!(
        "chown -R 1000:1000 {r}/home/app && touch -h -d @1000000000 {r}/home/app/secret && \
         tar --numeric-owner -C {r} -cf {dir}/rootfs.tar .",
        dir = dir.display()
    ));
    let layout = dir.join("base");
    common::layout_from_rootfs_tar(
        &dir.join("rootfs.tar"),
        "ENV PATH=/bin\nCMD [\"/bin/sh\"]\n",
        &layout,
        "1",
        &dir.join("cache"),
    );
    layout
}

/// Builds `ctx` into a docker archive (`tmp/image.tar`) and lists every layer with
/// `tar -tv --numeric-owner`, one listing per layer (base layers first).
fn build(ctx: &Path, tmp: &Path) -> (PathBuf, Vec<String>) {
    let out = tmp.join("image.tar");
    let meta = common::build_context(
        ctx,
        tmp,
        &format!("type=docker,dest={}", out.display()),
        &["-t", "lade-test/copy-tree:1"],
    );
    let layers = meta["lade.layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            common::layer_listing(
                &out,
                l["digest"].as_str().unwrap(),
                &["-v", "--numeric-owner"],
            )
        })
        .collect();
    (out, layers)
}

/// `mode owner` of `path` in a `tar -tv` listing, None when absent.
fn attrs(listing: &str, path: &str) -> Option<String> {
    listing.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // mode owner size date time path [-> target]
        let name = f.get(5)?;
        (*name == path).then(|| format!("{} {}", f[0], f[1]))
    })
}

#[track_caller]
fn assert_attrs(listing: &str, path: &str, want: &str) {
    assert_eq!(
        attrs(listing, path).as_deref(),
        Some(want),
        "{path} in:\n{listing}"
    );
}

fn build_error(ctx: &Path, dockerfile: &str) -> String {
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let out = ctx.join("../err-out.tar");
    let o = lade_cmd()
        .args(["build", "--progress", "quiet", "--cache-dir"])
        .arg(ctx.join("../err-cache"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .arg(ctx)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected an error for {dockerfile:?}"
    );
    assert!(!out.exists());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn destinations_and_parents_follow_the_stage_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM oci:{}:1\n\
             COPY a.txt /tmp\n\
             COPY a.txt /home/app/sub/\n\
             COPY --link a.txt /home/app/linked/\n\
             COPY a.txt /var/run/x.txt\n\
             COPY a.txt /lib/y.txt\n\
             WORKDIR /tmp\n\
             USER app\n\
             WORKDIR /data/www\n\
             COPY <<EOF /tmp\nhello\nEOF\n\
             COPY --link --chmod=644 a.txt /tmp/m/\n",
            base.display()
        ),
    )
    .unwrap();
    let (archive, layers) = build(&ctx, tmp.path());
    assert_eq!(layers.len(), 1 + 9, "{layers:#?}");
    let own = &layers[1..];
    // 1. An existing directory without a trailing slash is copied into; /tmp stays 1777.
    assert_attrs(&own[0], "tmp/a.txt", "-rw-r--r-- 0/0");
    assert_attrs(&own[0], "tmp/", "drwxrwxrwt 0/0");
    assert!(attrs(&own[0], "tmp").is_none(), "{}", own[0]);
    // 2. Existing parents keep mode and owner; the missing one is fresh 0755.
    assert_attrs(&own[1], "home/", "drwxr-xr-x 0/0");
    assert_attrs(&own[1], "home/app/", "drwxr-x--- 1000/1000");
    assert_attrs(&own[1], "home/app/sub/", "drwxr-xr-x 0/0");
    // --link looks at nothing below: its parents are its own, 0755 root, and they win over
    // the base's when the layer is applied (BuildKit's documented behaviour, moby#44956).
    assert_attrs(&own[2], "home/app/", "drwxr-xr-x 0/0");
    assert_attrs(&own[2], "home/app/linked/a.txt", "-rw-r--r-- 0/0");
    // Symlinked parents are followed inside the image, never replaced by directories.
    assert_attrs(&own[3], "run/x.txt", "-rw-r--r-- 0/0");
    assert!(!own[3].contains("var/"), "{}", own[3]);
    assert_attrs(&own[4], "usr/lib/y.txt", "-rw-r--r-- 0/0");
    assert!(attrs(&own[4], "lib/").is_none(), "{}", own[4]);
    // 3. WORKDIR on an existing directory changes nothing; a missing one is created as USER.
    assert_eq!(own[5].trim(), "", "WORKDIR /tmp layer: {}", own[5]);
    assert_attrs(&own[6], "data/", "drwxr-xr-x 1000/1000");
    assert_attrs(&own[6], "data/www/", "drwxr-xr-x 1000/1000");
    // A heredoc lands like a COPY source: into the existing directory, its mode kept.
    assert_attrs(&own[7], "tmp/EOF", "-rw-r--r-- 0/0");
    assert_attrs(&own[7], "tmp/", "drwxrwxrwt 0/0");
    // BuildKit links only without --chmod: this copy looks at the stage again. The parent it
    // creates gets the octal --chmod, as BuildKit's MkdirAll does.
    assert_attrs(&own[8], "tmp/", "drwxrwxrwt 0/0");
    assert_attrs(&own[8], "tmp/m/", "drw-r--r-- 0/0");
    assert_attrs(&own[8], "tmp/m/a.txt", "-rw-r--r-- 0/0");

    if common::services().is_some() {
        let tag = "lade-test/copy-tree:1";
        let load = common::docker(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
        let out = common::docker(&[
            "run", "--rm", "--network", "none", "--user", "0", tag, "sh", "-c",
            "stat -c '%a %u %n' /tmp /home/app /data/www && cat /tmp/a.txt /run/x.txt && ls -l /var/run /lib | cut -c1",
        ]);
        common::docker(&["rmi", "-f", tag]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.starts_with("1777 0 /tmp\n755 0 /home/app\n755 1000 /data/www\na\na\nl\nl"),
            "{out}"
        );
    }
}

#[test]
fn several_sources_need_a_directory_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a.jar"), "a").unwrap();
    fs::write(ctx.join("b.jar"), "b").unwrap();
    let from = format!("FROM oci:{}:1\n", base.display());
    for (copy, line) in [
        ("COPY a.jar b.jar /app.jar\n", 2),
        ("COPY *.jar app.jar\n", 2),
        ("ADD *.jar /opt/app\n", 2),
    ] {
        let err = build_error(&ctx, &format!("{from}{copy}"));
        assert!(err.contains(&format!("Dockerfile:{line}")), "{err}");
        assert!(
            err.contains(
                "more than one source file, the destination must be a directory and end with a /"
            ),
            "{err}"
        );
    }
    // Into an existing directory (no slash needed) or one ending in `/`: fine.
    fs::write(
        ctx.join("Dockerfile"),
        format!("{from}COPY *.jar /tmp\nCOPY a.jar b.jar /opt/\nCOPY a.jar /one.jar\n"),
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    assert!(attrs(&layers[1], "tmp/a.jar").is_some() && attrs(&layers[1], "tmp/b.jar").is_some());
    assert!(attrs(&layers[2], "opt/b.jar").is_some());
    assert_attrs(&layers[3], "one.jar", "-rw-r--r-- 0/0");
}

#[test]
fn top_level_symlinks_are_followed_inside_the_context_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("dir/real")).unwrap();
    fs::write(ctx.join("real.txt"), "real\n").unwrap();
    fs::write(ctx.join("dir/real/f"), "f\n").unwrap();
    symlink("real.txt", ctx.join("link.txt")).unwrap();
    symlink("real", ctx.join("dir/inner")).unwrap();
    symlink("dir", ctx.join("dirlink")).unwrap();
    fs::write(tmp.path().join("outside.txt"), "secret\n").unwrap();
    fs::create_dir_all(tmp.path().join("outside-dir")).unwrap();
    fs::write(tmp.path().join("outside-dir/s"), "secret\n").unwrap();
    symlink("../outside.txt", ctx.join("out.txt")).unwrap();
    symlink("../outside-dir", ctx.join("outdir")).unwrap();
    symlink("/etc/hostname", ctx.join("abs")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY link.txt /f/\nCOPY link.txt /g.txt\nCOPY dirlink /d/\n",
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    assert_attrs(&layers[0], "f/link.txt", "-rw-r--r-- 0/0");
    assert_attrs(&layers[1], "g.txt", "-rw-r--r-- 0/0");
    // Inside a copied directory a symlink stays a link.
    assert_attrs(&layers[2], "d/inner", "lrwxrwxrwx 0/0");
    assert_attrs(&layers[2], "d/real/f", "-rw-r--r-- 0/0");

    for src in ["out.txt", "outdir", "abs"] {
        let err = build_error(
            &ctx,
            &format!("FROM scratch\nCOPY a b\nCOPY {src} /x/\n").replace("COPY a b\n", ""),
        );
        assert!(err.contains("Dockerfile:2"), "{src}: {err}");
        assert!(
            err.contains("forbidden path outside the build context"),
            "{src}: {err}"
        );
    }
}

#[test]
fn chown_owners_come_from_the_stage_account_files() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM oci:{}:1\n\
             COPY --chown=1234 a.txt /o1\n\
             COPY <<EOF /etc/passwd\nroot:x:0:0:root:/root:/bin/sh\nsvc:x:2000:2001::/srv:/bin/sh\nEOF\n\
             COPY <<EOF /etc/group\nroot:x:0:\nsvc:x:2001:\nops:x:3000:\nEOF\n\
             COPY --chown=svc:ops a.txt /o2\n\
             COPY --chown=svc <<EOF /o3\nhi\nEOF\n\
             USER svc\n\
             WORKDIR /w\n",
            base.display()
        ),
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    let own = &layers[1..];
    // BuildKit: a numeric user without a group is its own gid.
    assert_attrs(&own[0], "o1", "-rw-r--r-- 1234/1234");
    assert_attrs(&own[3], "o2", "-rw-r--r-- 2000/3000");
    assert_attrs(&own[4], "o3", "-rw-r--r-- 2000/2001");
    assert_attrs(&own[5], "w/", "drwxr-xr-x 2000/2001");

    let err = build_error(
        &ctx,
        &format!("FROM oci:{}:1\nCOPY --chown=svc a.txt /o\n", base.display()),
    );
    assert!(
        err.contains("Dockerfile:2") && err.contains("unable to find user svc"),
        "{err}"
    );
}

#[test]
fn files_from_images_and_archives_keep_modes_owners_and_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("src/pkg")).unwrap();
    fs::write(ctx.join("src/pkg/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        ctx.join("src/pkg/run.sh"),
        fs::Permissions::from_mode(0o4750),
    )
    .unwrap();
    let c = ctx.display();
    sh(&format!(
        "tar -C {c}/src --owner=7 --group=8 --mtime=@1200000000 -cf {c}/pkg.tar pkg && \
         zstd -q {c}/pkg.tar -o {c}/pkg.tar.zst"
    ));
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM oci:{b}:1 AS src\n\
             FROM oci:{b}:1\n\
             COPY --from=src /home/app /copied/\n\
             COPY --from=oci:{b}:1 /home/app/secret /img-secret\n\
             ADD pkg.tar /plain/\n\
             ADD pkg.tar.zst /zst/\n\
             ADD --chown=9:9 pkg.tar /owned/\n\
             COPY src/pkg/run.sh /ctx.sh\n\
             COPY --from=src /alib/libx.so /libx.so\n\
             COPY --from=src /usr/bin/bb /bb\n",
            b = base.display()
        ),
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    let own = &layers[1..];
    let line = |l: &str, p: &str| {
        l.lines()
            .find(|x| x.ends_with(&format!(" {p}")))
            .unwrap_or_else(|| panic!("{p} missing from {l}"))
            .to_string()
    };
    // --from: mode, owner and mtime of the source image.
    assert_attrs(&own[0], "copied/secret", "-rw------- 1000/1000");
    assert!(
        line(&own[0], "copied/secret").contains("2001-09-09"),
        "{}",
        own[0]
    );
    assert_attrs(&own[1], "img-secret", "-rw------- 1000/1000");
    // ADD archives (plain and zstd): as the tar says.
    for (l, dir) in [(&own[2], "plain"), (&own[3], "zst")] {
        assert_attrs(l, &format!("{dir}/pkg/run.sh"), "-rwsr-x--- 7/8");
        assert_attrs(l, &format!("{dir}/pkg/"), "drwxr-xr-x 7/8");
        assert!(
            line(l, &format!("{dir}/pkg/run.sh")).contains("2008-01-10"),
            "{l}"
        );
    }
    assert_attrs(&own[4], "owned/pkg/run.sh", "-rwsr-x--- 9/9");
    // The context's bits are kept too (BuildKit's context transfer); owner and mtime are not.
    assert_attrs(&own[5], "ctx.sh", "-rwsr-x--- 0/0");
    // Absolute links in an image resolve inside it; a top-level link is followed and the
    // copy keeps the name as written.
    assert_attrs(&own[6], "libx.so", "-rwxr-xr-x 0/0");
    assert!(
        line(&own[7], "bb").starts_with("-rwxr-xr-x 0/0 "),
        "{}",
        own[7]
    );
}

/// A one-file HTTP server on 127.0.0.1: every request gets `body`. Returns the base URL.
fn serve(body: &'static [u8]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    base
}

#[test]
fn add_url_lands_in_an_existing_directory() {
    let url = serve(b"tool\n");
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM oci:{}:1\nADD {url}/dl/tool.sh /tmp\nADD {url}/dl/tool.sh /var/run/t.sh\n",
            base.display()
        ),
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    assert_attrs(&layers[1], "tmp/tool.sh", "-rw------- 0/0");
    assert_attrs(&layers[1], "tmp/", "drwxrwxrwt 0/0");
    assert_attrs(&layers[2], "run/t.sh", "-rw------- 0/0");
}

/// A context for the wildcard, --parents and --exclude tests: `top.txt`, `a/1.txt`,
/// `a/b/2.txt`, `a/b/c/3.txt`, `a/b2/c/4.txt`, `x/y/f.txt` and `lnk -> a` (a symlinked
/// directory).
fn tree_ctx(tmp: &Path) -> PathBuf {
    let ctx = tmp.join("ctx");
    for f in [
        "top.txt",
        "a/1.txt",
        "a/b/2.txt",
        "a/b/c/3.txt",
        "a/b2/c/4.txt",
        "x/y/f.txt",
    ] {
        let p = ctx.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, f).unwrap();
    }
    symlink("a", ctx.join("lnk")).unwrap();
    ctx
}

/// The paths of a `tar -tv` listing.
fn names(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect()
}

/// The layer listing names exactly `want`, in order; the whole listing is shown otherwise.
fn assert_names(listing: &str, want: &[&str]) {
    assert_eq!(names(listing), want, "{listing}");
}

#[test]
fn source_wildcards_match_one_component_per_star_like_buildkit() {
    // fsutil's ResolveWildcards matches what follows the first wildcard with filepath.Match,
    // where `*` (and so `**`) never crosses `/`, and its walk does not enter symlinks.
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tree_ctx(tmp.path());
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\n\
         COPY **/*.txt /w/\n\
         COPY a/[0-9].txt a/b/?.txt a/[^x]*/c/*.txt /c/\n\
         COPY lnk/*.txt /s/\n\
         COPY --parents **/*.txt /p/\n",
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    assert_eq!(names(&layers[0]), ["w/", "w/1.txt"], "{}", layers[0]);
    assert_names(
        &layers[1],
        &["c/", "c/1.txt", "c/2.txt", "c/3.txt", "c/4.txt"],
    );
    // The path before the first wildcard is resolved through the link.
    assert_eq!(names(&layers[2]), ["s/", "s/1.txt"], "{}", layers[2]);
    // --parents patterns are include patterns: `**` crosses directories (not the link).
    assert_names(
        &layers[3],
        &[
            "p/",
            "p/a/",
            "p/a/1.txt",
            "p/a/b/",
            "p/a/b/2.txt",
            "p/a/b/c/",
            "p/a/b/c/3.txt",
            "p/a/b2/",
            "p/a/b2/c/",
            "p/a/b2/c/4.txt",
            "p/top.txt",
            "p/x/",
            "p/x/y/",
            "p/x/y/f.txt",
        ],
    );
    // A wildcard does not walk into the symlinked directory.
    let err = build_error(&ctx, "FROM scratch\nCOPY l?k/b/2.txt /s/\n");
    assert!(
        err.contains("Dockerfile:2") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn copy_parents_keeps_what_follows_the_dot_pivot() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tree_ctx(tmp.path());
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\n\
         COPY --parents ./a/./b/**/*.txt /p/\n\
         COPY --parents a/b*/./c /q/\n\
         COPY --parents ./a/./zz* /s/\n\
         COPY --parents --exclude=b/c ./a/./b /r/\n\
         COPY --parents x/y a/b/c/3.txt /t\n",
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    assert_names(
        &layers[0],
        &["p/", "p/b/", "p/b/2.txt", "p/b/c/", "p/b/c/3.txt"],
    );
    // Each directory the pivot's wildcard names contributes what follows `/./`.
    assert_names(&layers[1], &["q/", "q/c/", "q/c/3.txt", "q/c/4.txt"]);
    // A wildcard that matches nothing copies nothing, but the destination is made.
    assert_eq!(names(&layers[2]), ["s/"], "{}", layers[2]);
    // --exclude counts from the pivot.
    assert_names(&layers[3], &["r/", "r/b/", "r/b/2.txt"]);
    // Without a pivot the whole path is kept; the destination is a directory.
    assert_names(
        &layers[4],
        &[
            "t/",
            "t/a/",
            "t/a/b/",
            "t/a/b/c/",
            "t/a/b/c/3.txt",
            "t/x/",
            "t/x/y/",
            "t/x/y/f.txt",
        ],
    );
    // A source without wildcards must exist.
    let err = build_error(&ctx, "FROM scratch\nCOPY --parents ./a/./nope /p/\n");
    assert!(
        err.contains("Dockerfile:2") && err.contains("\"a/./nope\" not found"),
        "{err}"
    );
}

#[test]
fn copy_exclude_applies_below_copied_directories_like_dockerignore() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tree_ctx(tmp.path());
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\n\
         COPY --exclude=b --exclude=!b/c a /e/\n\
         COPY --exclude=**/*.txt --exclude=!**/3.txt --exclude=lnk --exclude=Dockerfile . /f/\n\
         COPY --exclude=*.txt a /g/\n\
         COPY --exclude=c a/b* /h/\n",
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    // An exception re-includes below an excluded directory, which comes along as a parent.
    assert_names(
        &layers[0],
        &[
            "e/",
            "e/1.txt",
            "e/b/",
            "e/b/c/",
            "e/b/c/3.txt",
            "e/b2/",
            "e/b2/c/",
            "e/b2/c/4.txt",
        ],
    );
    // `**` crosses directories; directories stay (x/y), their excluded files do not.
    assert_names(
        &layers[1],
        &[
            "f/",
            "f/a/",
            "f/a/b/",
            "f/a/b/c/",
            "f/a/b/c/3.txt",
            "f/a/b2/",
            "f/a/b2/c/",
            "f/x/",
            "f/x/y/",
        ],
    );
    // `*` stays in its directory (moby/buildkit#5509): only the top file of `a` goes.
    assert_names(
        &layers[2],
        &[
            "g/",
            "g/b/",
            "g/b/2.txt",
            "g/b/c/",
            "g/b/c/3.txt",
            "g/b2/",
            "g/b2/c/",
            "g/b2/c/4.txt",
        ],
    );
    // With a wildcard source, patterns count from each directory it matched.
    assert_eq!(names(&layers[3]), ["h/", "h/2.txt"], "{}", layers[3]);
}

#[test]
fn directories_and_files_do_not_replace_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let ctx = tmp.path().join("ctx");
    for f in ["d/x", "root/lib/x", "t/home", "m/tmp/n", "m/home/app/n"] {
        let p = ctx.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, f).unwrap();
    }
    let from = format!("FROM oci:{}:1\n", base.display());
    for (copy, want) in [
        // fsutil: a directory where the stage has a file or a symlink...
        (
            "COPY d /etc/passwd\n",
            "cannot copy to non-directory: /etc/passwd",
        ),
        // ...which is BuildKit's error for a tree with /lib onto a usr-merged base.
        ("COPY root/ /\n", "cannot copy to non-directory: /lib"),
        // ...and a file where it has a directory.
        ("COPY t/ /\n", "cannot replace to directory /home with file"),
    ] {
        let err = build_error(&ctx, &format!("{from}WORKDIR /\n{copy}"));
        assert!(err.contains("Dockerfile:3") && err.contains(want), "{err}");
    }
    // Directories merge into existing ones, which keep their mode and owner (not even
    // --chown/--chmod change them); a file replaces a file.
    fs::write(
        ctx.join("Dockerfile"),
        format!("{from}COPY --chown=1000:1000 --chmod=700 m/ /\nCOPY d/x /etc/passwd\n"),
    )
    .unwrap();
    let (_, layers) = build(&ctx, tmp.path());
    assert_attrs(&layers[1], "tmp/", "drwxrwxrwt 0/0");
    assert_attrs(&layers[1], "home/app/", "drwxr-x--- 1000/1000");
    assert_attrs(&layers[1], "tmp/n", "-rwx------ 1000/1000");
    assert_attrs(&layers[2], "etc/passwd", "-rw-r--r-- 0/0");
}

#[test]
fn add_archive_whiteout_members_reach_the_layer_as_whiteouts() {
    // BuildKit unpacks ADD archives with moby/go-archive's Untar (AUFS format, no whiteout
    // converter): `.wh.` members become plain files of that name, so the exported layer
    // carries them and they hide the base's files once the image is run.
    let tmp = tempfile::tempdir().unwrap();
    let base = base(tmp.path());
    let ctx = tmp.path().join("ctx");
    let t = tmp.path().join("t");
    for f in [
        "home/app/.wh.secret",
        "usr/lib/.wh..wh..opq",
        "usr/lib/new.so",
    ] {
        let p = t.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "").unwrap();
    }
    fs::create_dir_all(&ctx).unwrap();
    sh(&format!(
        "tar --numeric-owner -C {} -cf {}/w.tar home usr",
        t.display(),
        ctx.display()
    ));
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM oci:{}:1\nADD w.tar /\n", base.display()),
    )
    .unwrap();
    let (archive, layers) = build(&ctx, tmp.path());
    let own = &layers[1];
    for p in [
        "home/app/.wh.secret",
        "usr/lib/.wh..wh..opq",
        "usr/lib/new.so",
    ] {
        assert!(attrs(own, p).is_some(), "{p} in:\n{own}");
    }
    if common::services().is_some() {
        let tag = "lade-test/copy-tree:1";
        let load = common::docker(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
        let out = common::docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            "0",
            tag,
            "sh",
            "-c",
            "ls -A /home/app /usr/lib",
        ]);
        common::docker(&["rmi", "-f", tag]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/home/app:\n\n/usr/lib:\nnew.so\n"
        );
    }
}

/// `path -> mode` of the image built from `ctx` with `extra` options: every layer's `tar -tv`
/// listing, later layers winning.
fn image_modes(ctx: &Path, tmp: &Path, extra: &[&str]) -> std::collections::BTreeMap<String, u32> {
    let out = tmp.join("modes.tar");
    let meta = common::build_context(
        ctx,
        tmp,
        &format!("type=docker,dest={}", out.display()),
        extra,
    );
    let mut modes = std::collections::BTreeMap::new();
    for l in meta["lade.layers"].as_array().unwrap() {
        let listing = common::layer_listing(
            &out,
            l["digest"].as_str().unwrap(),
            &["-v", "--numeric-owner"],
        );
        for line in listing.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[1], "0/0", "{line}");
            modes.insert(
                f[5].trim_end_matches('/').to_string(),
                common::mode_bits(f[0]),
            );
        }
    }
    modes
}

/// COPY/ADD from the context keep each file's and directory's permission bits as on disk
/// (BuildKit's rule), whatever the form of the copy; `--chmod` replaces them, also on the
/// parents it creates; `--normalize-modes` maps them to 0644/0755 by the exec bit; a chmod
/// of a context file changes the layer (the cache key holds the modes).
#[test]
fn copies_from_the_context_keep_the_modes_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    common::write_mode_context(&ctx);
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\n\
         COPY m /d/\n\
         COPY m/f600 /f\n\
         COPY --link m /l/\n\
         COPY --parents m/d700 m/f2755 /p/\n\
         COPY m/f* /w/\n\
         ADD m /a/\n\
         COPY --chmod=0600 m/d751 /new/sub/\n",
    )
    .unwrap();
    // (image path, context path) of every copy.
    let mut want: Vec<(String, &str)> = vec![("f".into(), "m/f600")];
    for (rel, _, _) in &common::CONTEXT_MODES[1..] {
        let below = rel.strip_prefix("m").unwrap();
        for d in ["d", "l", "a"] {
            want.push((format!("{d}{below}"), rel));
        }
        if rel.starts_with("m/f") {
            want.push((format!("w/{}", &rel[2..]), rel));
        }
    }
    for p in ["m", "m/d700", "m/d700/in.txt", "m/f2755"] {
        want.push((format!("p/{p}"), p));
    }
    let disk = |rel: &str| {
        common::CONTEXT_MODES
            .iter()
            .find(|(r, _, _)| *r == rel)
            .map(|&(_, m, dir)| (m, dir))
            .unwrap()
    };
    let kept = image_modes(&ctx, tmp.path(), &[]);
    for (path, rel) in &want {
        assert_eq!(
            kept.get(path.as_str()),
            Some(&disk(rel).0),
            "{path} from {rel}: want {:o}, got {:?}",
            disk(rel).0,
            kept.get(path.as_str()).map(|m| format!("{m:o}"))
        );
    }
    // A copied directory's contents go into a destination made like a parent (fsutil's
    // MkdirAll): 0755, or the octal --chmod (fsutil since 2025, docker >= 28.1).
    for d in ["d", "l", "a", "p"] {
        assert_eq!(kept[d], 0o755, "{d}");
    }
    assert_eq!(kept["new/sub"], 0o600);
    assert_eq!(kept["new"], 0o600);

    let normal = image_modes(&ctx, tmp.path(), &["--normalize-modes"]);
    for (path, rel) in &want {
        let (m, dir) = disk(rel);
        let n = if dir || m & 0o111 != 0 { 0o755 } else { 0o644 };
        assert_eq!(normal.get(path.as_str()), Some(&n), "{path} from {rel}");
    }
    assert_eq!(normal["new/sub"], 0o600);

    // A chmod alone (same content) reaches the image: it is part of the layer's key.
    fs::set_permissions(ctx.join("m/f640"), fs::Permissions::from_mode(0o600)).unwrap();
    let again = image_modes(&ctx, tmp.path(), &[]);
    assert_eq!(again["d/f640"], 0o600);
    assert_eq!(again["w/f640"], 0o600);
}

/// A context checked out twice under the same umask builds the same image; under umask 002
/// instead of 022 its modes, and so the digest, differ, unless `--normalize-modes` pins them
/// (which under 022 changes nothing).
#[test]
fn other_umasks_give_other_digests_unless_modes_are_normalized() {
    let tmp = tempfile::tempdir().unwrap();
    let digest = |umask: &str, name: &str, extra: &[&str]| -> String {
        let ctx = tmp.path().join(name);
        sh(&format!(
            "umask {umask} && mkdir -p {d}/src/sub && printf 'a\\n' > {d}/src/a.txt && \
             printf 'echo\\n' > {d}/src/sub/run.sh && chmod +x {d}/src/sub/run.sh && \
             printf 'FROM scratch\\nCOPY src /app/\\n' > {d}/Dockerfile",
            d = ctx.display()
        ));
        let meta = common::build_context(
            &ctx,
            tmp.path(),
            &format!("type=oci,dest={}", tmp.path().join("out.tar").display()),
            extra,
        );
        meta["containerimage.digest"].as_str().unwrap().to_string()
    };
    let a = digest("022", "a", &[]);
    let b = digest("022", "b", &[]);
    let c = digest("002", "c", &[]);
    assert_eq!(a, b, "two checkouts under umask 022");
    assert_ne!(
        a, c,
        "umask 002 makes group-writable files, which the image keeps"
    );
    let a_n = digest("022", "a", &["--normalize-modes"]);
    let c_n = digest("002", "c", &["--normalize-modes"]);
    assert_eq!(a_n, c_n, "--normalize-modes pins the modes");
    assert_eq!(
        a_n, a,
        "under umask 022 the host's modes are the normalized ones"
    );
}
