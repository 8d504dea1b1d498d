//! `lade build [-f Dockerfile] CONTEXT`: the Dockerfile shapes users bring (Spring Boot, Flask,
//! multi-stage), built on a local busybox base, checked in the config, the file tree and a
//! real `docker run`; and the errors for bad Dockerfiles.

mod common;

/// The lade binary; every call below passes its own `--cache-dir`.
fn lade_cmd() -> assert_cmd::Command {
    common::lade(&std::env::temp_dir().join("lade-test-unused-cache"))
}

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A busybox base image in an OCI layout directory, built by lade itself from scratch.
fn busybox_base(dir: &Path) -> PathBuf {
    let ctx = dir.join("base-ctx");
    fs::create_dir_all(ctx.join("rootfs/bin")).unwrap();
    fs::create_dir_all(ctx.join("rootfs/etc")).unwrap();
    fs::copy("/bin/busybox", ctx.join("rootfs/bin/busybox")).unwrap();
    for tool in ["sh", "ls", "cat", "echo", "id", "stat", "env", "pwd"] {
        std::os::unix::fs::symlink("busybox", ctx.join("rootfs/bin").join(tool)).unwrap();
    }
    fs::write(
        ctx.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        ctx.join("rootfs/etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    fs::write(
        ctx.join("lade.toml"),
        "[image]\nenv = { PATH = \"/bin\" }\ncmd = [\"/bin/sh\"]\n[[layer]]\nname = \"rootfs\"\nfrom = \"rootfs\"\ninto = \"/\"\n",
    )
    .unwrap();
    let layout = dir.join("base");
    lade_cmd()
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .args(["-t", "busybox:1"])
        .assert()
        .success();
    layout
}

/// The build context `dir` holding `Dockerfile` and the given files.
fn context(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        fs::write(dir.join(path), content).unwrap();
    }
    dir.to_path_buf()
}

struct Image {
    config: Value,
    archive: PathBuf,
}

fn build(ctx: &Path, cache: &Path, out: &Path, extra: &[&str]) -> Image {
    let meta = out.with_extension("meta.json");
    let o = lade_cmd()
        .args(["build", "--progress", "plain", "--cache-dir"])
        .arg(cache)
        .arg("--output")
        .arg(format!("type=docker,dest={}", out.display()))
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
    let layout = out.with_extension("d");
    fs::create_dir_all(&layout).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(out)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap()
        .success());
    Image {
        config: config_named_in(&meta, &layout),
        archive: out.to_path_buf(),
    }
}

/// The image config that the metadata file `meta` names (`containerimage.config.digest`),
/// read from the blobs of the OCI layout `layout`.
fn config_named_in(meta: &Path, layout: &Path) -> Value {
    let meta: Value = serde_json::from_slice(&fs::read(meta).unwrap()).unwrap();
    let cfg = meta["containerimage.config.digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(cfg)).unwrap()).unwrap()
}

/// Runs the image in the test dockerd and returns its stdout.
fn docker_run(image: &Image, tag: &str, args: &[&str]) -> String {
    let load = common::docker(&["load", "-i", image.archive.to_str().unwrap()]);
    assert!(
        load.status.success(),
        "docker load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let mut run_args = vec!["run", "--rm", "--network", "none", tag];
    run_args.extend_from_slice(args);
    let out = common::docker(&run_args);
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::docker(&["rmi", "-f", tag]);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn spring_boot_shape() {
    let _services = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = tmp.path().join("app");
    fs::create_dir_all(ctx.join("target")).unwrap();
    fs::write(
        ctx.join("target/demo-0.0.1-SNAPSHOT.jar"),
        b"PK\x03\x04 not really a jar",
    )
    .unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        r#"ARG BASE
FROM ${BASE}
LABEL maintainer="dev@example.com" org.example.component=api
ENV SPRING_OUTPUT_ANSI_ENABLED=ALWAYS \
    JAVA_OPTS="-Xmx256m" \
    APP_HOME=/app
WORKDIR /app
ADD target/*.jar app.jar
ARG JAR_FILE
ADD target/${JAR_FILE} copy.jar
EXPOSE 8080
CMD ["sh", "-c", "ls -l /app && echo $JAVA_OPTS"]
"#,
    )
    .unwrap();
    let image = build(
        &ctx,
        &tmp.path().join("cache"),
        &tmp.path().join("spring.tar"),
        &[
            "--build-arg",
            &format!("BASE=oci:{}:1", base.display()),
            "--build-arg",
            "JAR_FILE=demo-0.0.1-SNAPSHOT.jar",
            "-t",
            "lade-test/spring:1",
        ],
    );
    let c = &image.config["config"];
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["Labels"]["maintainer"], "dev@example.com");
    assert_eq!(c["Labels"]["org.example.component"], "api");
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "JAVA_OPTS=-Xmx256m"));
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "PATH=/bin"),
        "base env kept"
    );
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["sh", "-c", "ls -l /app && echo $JAVA_OPTS"])
    );
    let out = docker_run(&image, "lade-test/spring:1", &[]);
    assert!(
        out.contains("app.jar") && out.contains("copy.jar") && out.contains("-Xmx256m"),
        "{out}"
    );
}

#[test]
fn flask_shape() {
    let _services = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = tmp.path().join("flask");
    fs::create_dir_all(ctx.join("app/templates")).unwrap();
    fs::write(ctx.join("app.py"), "print('hi')\n").unwrap();
    fs::write(ctx.join("requirements.txt"), "flask\n").unwrap();
    fs::write(ctx.join("app/templates/index.html"), "<p>hi</p>\n").unwrap();
    fs::write(ctx.join("secret.env"), "TOKEN=1\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "# secrets stay out\n*.env\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM oci:{}:1\nENV APP_PATH /opt/flask\nCOPY . $APP_PATH\nWORKDIR $APP_PATH\nEXPOSE 80\nCMD [\"sh\", \"-c\", \"ls -R $APP_PATH\"]\n",
            base.display()
        ),
    )
    .unwrap();
    let image = build(
        &ctx,
        &tmp.path().join("cache"),
        &tmp.path().join("flask.tar"),
        &["-t", "lade-test/flask:1"],
    );
    assert_eq!(image.config["config"]["WorkingDir"], "/opt/flask");
    let out = docker_run(&image, "lade-test/flask:1", &[]);
    assert!(
        out.contains("app.py") && out.contains("index.html") && out.contains("Dockerfile"),
        "{out}"
    );
    assert!(
        !out.contains("secret.env"),
        ".dockerignore must keep secret.env out: {out}"
    );
}

#[test]
fn multi_stage_with_copy_from_chown_chmod_and_target() {
    let _services = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let base = busybox_base(tmp.path());
    let ctx = tmp.path().join("ms");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("src/main.txt"), "built from source\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            r#"ARG BASE=oci:{}:1
FROM ${{BASE}} AS build
ARG VERSION=0
COPY src/ /build/
COPY --chmod=755 src/main.txt /build/bin/tool-${{VERSION}}

FROM build AS unused
COPY nothing-here /x

FROM ${{BASE}} AS final
COPY --from=build --chown=app:staff /build/ /opt/app/
CMD ["sh", "-c", "stat -c '%u:%g %a %n' /opt/app/main.txt /opt/app/bin/tool-*"]

FROM final AS debug
ENV DEBUG=1
"#,
            base.display()
        ),
    )
    .unwrap();
    let image = build(
        &ctx,
        &tmp.path().join("cache"),
        &tmp.path().join("ms.tar"),
        &[
            "--target",
            "final",
            "--build-arg",
            "VERSION=7",
            "-t",
            "lade-test/ms:1",
        ],
    );
    assert!(
        image.config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e != "DEBUG=1"),
        "--target final stops before debug"
    );
    let out = docker_run(&image, "lade-test/ms:1", &[]);
    assert!(out.contains("1000:50 644 /opt/app/main.txt"), "{out}");
    assert!(out.contains("1000:50 755 /opt/app/bin/tool-7"), "{out}");
}

#[test]
fn same_dockerfile_from_two_checkouts_gives_the_same_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for (i, mtime) in [(0, 1_000_000u64), (1, 1_700_000_000)] {
        let ctx = tmp.path().join(format!("checkout{i}"));
        fs::create_dir_all(ctx.join("site")).unwrap();
        for n in 0..10 {
            let p = ctx.join(format!("site/page{n}.html"));
            fs::write(&p, format!("<h1>{n}</h1>")).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime))
                .unwrap();
        }
        fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY site /srv/www\nLABEL a=b\n",
        )
        .unwrap();
        let meta = ctx.join("../meta.json");
        lade_cmd()
            .args([
                "build",
                "--progress",
                "quiet",
                "--platform",
                "linux/amd64",
                "--cache-dir",
            ])
            .arg(tmp.path().join(format!("cache{i}")))
            .arg("--metadata-file")
            .arg(&meta)
            .arg(&ctx)
            .assert()
            .success();
        let v: Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
        digests.push(v["containerimage.digest"].as_str().unwrap().to_string());
    }
    assert_eq!(digests[0], digests[1]);
}

fn build_error(dockerfile: &str, extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Dockerfile"), dockerfile).unwrap();
    fs::write(tmp.path().join("a.txt"), "a").unwrap();
    let out = tmp.path().join("out.tar");
    let o = lade_cmd()
        .args(["build", "--progress", "quiet", "--cache-dir"])
        .arg(tmp.path().join("cache"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", out.display()))
        .args(extra)
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a build error for {dockerfile:?}"
    );
    assert!(!out.exists());
    String::from_utf8_lossy(&o.stderr).replace(&tmp.path().display().to_string(), "[CTX]")
}

#[test]
fn bad_dockerfiles_give_precise_errors() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "unknown instruction",
            "FROM scratch\nCOPPY a.txt /\n",
            &[],
            &[
                "Dockerfile:2:1:",
                "unknown instruction: COPPY",
                "did you mean COPY?",
            ],
        ),
        (
            "unterminated heredoc",
            "FROM scratch\nCOPY <<EOF /x\nhello\n",
            &[],
            &["Dockerfile:2:"],
        ),
        (
            "missing FROM",
            "COPY a.txt /\n",
            &[],
            &["Dockerfile:1:1:", "before the first FROM"],
        ),
        (
            "unknown stage in --from",
            "FROM scratch AS build\nFROM scratch\nCOPY --from=builder /x /y\n",
            &[],
            &[
                "Dockerfile:3:1:",
                "no stage named \"builder\"",
                "did you mean the stage \"build\"?",
            ],
        ),
        (
            "undefined --target",
            "FROM scratch AS a\n",
            &["--target", "nope"],
            &["target stage \"nope\" could not be found", "a"],
        ),
        (
            "circular stage",
            "FROM scratch AS a\nCOPY --from=b a.txt /\nFROM scratch AS b\nCOPY --from=a a.txt /\n",
            &[],
            &[
                "Dockerfile:2:1:",
                "circular dependency detected on stage: a",
            ],
        ),
        (
            "COPY source not found",
            "FROM scratch\nCOPY missing.txt /\n",
            &[],
            &["Dockerfile:2", "missing.txt", "not found"],
        ),
        (
            "path outside context",
            "FROM scratch\nCOPY ../etc/passwd /\n",
            &[],
            &["Dockerfile:2", "outside the build context"],
        ),
        (
            "RUN on scratch has no shell",
            "FROM scratch\nRUN echo hi\n",
            &[],
            &[
                "Dockerfile:2",
                "/bin/sh -c echo hi",
                "exited with code",
                // runc: `stat /bin/sh: no such file or directory`; crun: `executable file
                // `/bin/sh` not found in $PATH: No such file or directory`.
                "no such file or directory",
            ],
        ),
    ];
    for (what, df, extra, wanted) in cases {
        let err = build_error(df, extra);
        for w in *wanted {
            assert!(
                err.to_lowercase().contains(&w.to_lowercase()),
                "{what}: expected {w:?} in:\n{err}"
            );
        }
    }
}

#[test]
fn add_unpacks_local_tar_archives_and_copies_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("src/pkg")).unwrap();
    fs::write(ctx.join("src/pkg/a.txt"), "a\n").unwrap();
    fs::write(ctx.join("src/pkg/b.txt"), "b\n").unwrap();
    for (name, flag) in [
        ("pkg.tar.gz", "-czf"),
        ("pkg.tar", "-cf"),
        ("pkg.tar.bz2", "-cjf"),
        // Named like a plain file: ADD goes by content, not by name.
        ("pkg-xz.bin", "-cJf"),
    ] {
        let ok = Command::new("tar")
            .arg("-C")
            .arg(ctx.join("src"))
            .arg(flag)
            .arg(ctx.join(name))
            .arg("pkg")
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    fs::write(ctx.join("notes.gz.txt"), "not an archive\n").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD pkg.tar.gz /opt/gz/\nADD pkg.tar /opt/plain/\nADD pkg.tar.bz2 /opt/bz2/\nADD pkg-xz.bin /opt/xz\nADD notes.gz.txt /opt/notes.txt\n").unwrap();
    let listing = layer_listing(&ctx, tmp.path(), false);
    assert_listed(
        &listing,
        &[
            "opt/gz/pkg/a.txt",
            "opt/gz/pkg/b.txt",
            "opt/plain/pkg/a.txt",
            "opt/bz2/pkg/a.txt",
            "opt/bz2/pkg/b.txt",
            "opt/xz/pkg/a.txt",
            "opt/xz/pkg/b.txt",
            "opt/notes.txt",
        ],
    );
    assert!(
        !listing.contains("pkg.tar") && !listing.contains("pkg-xz"),
        "archives are unpacked, not copied:\n{listing}"
    );
}

/// Builds `ctx` (an OCI archive under `tmp`) and lists the members of its own layers, one
/// line each: just the paths, or `tar -tv` lines (mode, owner, size, date, path) with
/// `verbose`. Panics unless the build succeeds.
fn layer_listing(ctx: &Path, tmp: &Path, verbose: bool) -> String {
    let out = tmp.join("image.tar");
    let meta = common::build_context(ctx, tmp, &format!("type=oci,dest={}", out.display()), &[]);
    let flags: &[&str] = if verbose { &["-v"] } else { &[] };
    meta["lade.layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| common::layer_listing(&out, l["digest"].as_str().unwrap(), flags))
        .collect()
}

/// The mode column of `path` in a `tar -tv` listing.
fn mode_of<'a>(listing: &'a str, path: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.split_whitespace().last() == Some(path))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{path} missing from:\n{listing}"))
}

#[test]
fn symbolic_chmod_applies_to_each_file_and_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(ctx.join("site/sub")).unwrap();
    fs::write(ctx.join("site/index.html"), "<p>hi</p>\n").unwrap();
    fs::write(ctx.join("site/sub/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        ctx.join("site/sub/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::write(ctx.join("tool"), "#!/bin/sh\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\n\
         COPY --chmod=a=rX site /srv/\n\
         ADD --chmod=u+x,g-r,o= tool /usr/local/bin/tool\n\
         COPY --chmod=go-rwx <<EOF /etc/secret\nshh\nEOF\n",
    )
    .unwrap();
    let listing = layer_listing(&ctx, tmp.path(), true);
    assert_eq!(mode_of(&listing, "srv/index.html"), "-r--r--r--");
    assert_eq!(mode_of(&listing, "srv/sub/"), "dr-xr-xr-x");
    assert_eq!(mode_of(&listing, "srv/sub/run.sh"), "-r-xr-xr-x");
    assert_eq!(mode_of(&listing, "usr/local/bin/tool"), "-rwx------");
    assert_eq!(mode_of(&listing, "etc/secret"), "-rw-------");

    let err = build_error("FROM scratch\nCOPY --chmod=u+y a.txt /\n", &[]);
    assert!(err.contains("Dockerfile:2:1:"), "{err}");
    assert!(err.contains("invalid chmod parameter: 'u+y'"), "{err}");
}

/// Builds `ctx` into an OCI layout `dest` tagged `1`; returns the layout's image config.
fn build_layout(ctx: &Path, cache: &Path, dest: &Path) -> Value {
    let meta = dest.with_extension("meta.json");
    let o = lade_cmd()
        .args(["build", "--progress", "quiet", "--cache-dir"])
        .arg(cache)
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", dest.display()))
        .args(["-t", "onbuild:1", "--metadata-file"])
        .arg(&meta)
        .arg(ctx)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "lade build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    config_named_in(&meta, dest)
}

#[test]
fn onbuild_triggers_and_base_env_apply_to_images_built_from_a_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let base_ctx = context(&tmp.path().join("base-ctx"), "FROM scratch\nENV PATH=/usr/bin:/bin HOME=/home/app\nWORKDIR /srv\nONBUILD COPY . /app\nONBUILD ENV X=1\n", &[]);
    let base = tmp.path().join("base");
    let base_config = build_layout(&base_ctx, &tmp.path().join("cache"), &base);
    assert_eq!(
        base_config["config"]["OnBuild"],
        serde_json::json!(["COPY . /app", "ENV X=1"])
    );

    let ctx = tmp.path().join("app");
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("src/main.txt"), "main\n").unwrap();
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM oci:{}:1\nCOPY a.txt in-base-workdir.txt\nENV PATH=/opt/x:$PATH\nWORKDIR $HOME\nCOPY a.txt .\n",
            base.display()
        ),
    )
    .unwrap();
    let config = build_layout(&ctx, &tmp.path().join("cache"), &tmp.path().join("out"));
    let c = &config["config"];
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"X=1"), "{env:?}");
    assert!(env.contains(&"PATH=/opt/x:/usr/bin:/bin"), "{env:?}");
    assert_eq!(c["WorkingDir"], "/home/app");
    assert!(c.get("OnBuild").is_none(), "OnBuild is not inherited: {c}");

    let listing = layer_listing(&ctx, tmp.path(), false);
    assert_listed(
        &listing,
        &[
            "app/a.txt",
            "app/src/main.txt",
            "app/Dockerfile",
            "srv/in-base-workdir.txt",
            "home/app/a.txt",
        ],
    );

    // A trigger that fails names itself and the FROM line.
    fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nONBUILD COPPY a.txt /b\n",
    )
    .unwrap();
    build_layout(&base_ctx, &tmp.path().join("cache"), &base);
    fs::write(
        ctx.join("Dockerfile"),
        format!("ARG V=1\nFROM oci:{}:1\n", base.display()),
    )
    .unwrap();
    let o = lade_cmd()
        .args(["build", "--progress", "quiet", "--cache-dir"])
        .arg(tmp.path().join("cache"))
        .arg(&ctx)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Dockerfile:2:1: ONBUILD trigger \"COPPY a.txt /b\""),
        "{err}"
    );
    assert!(err.contains("unknown instruction: COPPY"), "{err}");
}

#[test]
fn from_a_stage_runs_its_onbuild_instructions_but_does_not_keep_them() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        &tmp.path().join("ctx"),
        "FROM scratch AS template\nONBUILD COPY a.txt /triggered.txt\nFROM template\nENV DONE=1\n",
        &[("a.txt", "a\n")],
    );
    let config = build_layout(&ctx, &tmp.path().join("cache"), &tmp.path().join("out"));
    assert!(config["config"].get("OnBuild").is_none(), "{config}");
    let listing = layer_listing(&ctx, tmp.path(), false);
    assert_eq!(listing.trim(), "triggered.txt");
}

#[test]
fn base_env_is_read_from_an_oci_archive_too() {
    let tmp = tempfile::tempdir().unwrap();
    let base_ctx = context(
        &tmp.path().join("base-ctx"),
        "FROM scratch\nENV HOME=/home/app\nONBUILD LABEL triggered=yes\n",
        &[],
    );
    let archive = tmp.path().join("base.tar");
    lade_cmd()
        .args(["build", "--progress", "quiet", "--cache-dir"])
        .arg(tmp.path().join("cache"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(&base_ctx)
        .assert()
        .success();
    let ctx = context(
        &tmp.path().join("ctx"),
        &format!(
            "FROM oci-archive:{}\nENV CONF=$HOME/.config\n",
            archive.display()
        ),
        &[],
    );
    let config = build_layout(&ctx, &tmp.path().join("cache"), &tmp.path().join("out"));
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "CONF=/home/app/.config"),
        "{config}"
    );
    assert_eq!(config["config"]["Labels"]["triggered"], "yes");
}

/// A tiny HTTP/1.1 server on 127.0.0.1 in a thread: `GET <path>` of one of `files` answers 200
/// with its bytes, anything else 404. Returns its base URL and a count of requests served.
fn serve(
    files: Vec<(&'static str, Vec<u8>)>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match files.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not found\n".to_vec()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (base, count)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn add_url_downloads_one_file_with_dockers_name_and_mode() {
    let tool = b"#!/bin/sh\necho downloaded\n".to_vec();
    let (url, _) = serve(vec![("/dl/tool.sh", tool.clone())]);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        &tmp.path().join("ctx"),
        &format!(
            "FROM scratch\n\
             ADD {url}/dl/tool.sh /opt/\n\
             ADD --chmod=755 {url}/dl/tool.sh /usr/bin/tool\n"
        ),
        &[],
    );
    let listing = layer_listing(&ctx, tmp.path(), true);
    assert_eq!(mode_of(&listing, "opt/tool.sh"), "-rw-------", "{listing}");
    assert_eq!(mode_of(&listing, "usr/bin/tool"), "-rwxr-xr-x", "{listing}");
    let line = listing
        .lines()
        .find(|l| l.ends_with(" opt/tool.sh"))
        .unwrap();
    assert!(
        line.contains(&format!(" {} 1970-01-01 00:00 ", tool.len())),
        "size and SOURCE_DATE_EPOCH mtime: {line}"
    );
    // The bytes, not unpacked or changed.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && mkdir -p x && tar -xf image.tar -C x && for b in x/blobs/sha256/*; do tar -xzOf \"$b\" opt/tool.sh 2>/dev/null; done",
            tmp.path().display()
        ))
        .output()
        .unwrap();
    assert_eq!(o.stdout, tool);
}

#[test]
fn add_url_with_checksum_is_verified_and_cached_without_downloading() {
    let body = b"pinned content\n".to_vec();
    let (url, requests) = serve(vec![("/f.txt", body.clone())]);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        &tmp.path().join("ctx"),
        &format!(
            "FROM scratch\nADD --checksum=sha256:{} {url}/f.txt /etc/pinned\n",
            sha256_hex(&body)
        ),
        &[],
    );
    let first = layer_listing(&ctx, tmp.path(), true);
    assert_eq!(mode_of(&first, "etc/pinned"), "-rw-------");
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    let second = layer_listing(&ctx, tmp.path(), true);
    assert_eq!(first, second);
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a cached pinned download does not hit the network"
    );

    // The wrong checksum: a located error naming the URL, exit 1, no output.
    let err = build_error(
        &format!(
            "FROM scratch\nADD --checksum=sha256:{} {url}/f.txt /etc/pinned\n",
            "0".repeat(64)
        ),
        &[],
    );
    assert!(err.contains("Dockerfile:2:1: ADD "), "{err}");
    assert!(
        err.contains(&format!("{url}/f.txt: checksum mismatch")),
        "{err}"
    );
    assert!(
        err.contains(&format!("got sha256:{}", sha256_hex(&body))),
        "{err}"
    );
    assert!(
        err.contains(" 2 | ADD --checksum=sha256:000"),
        "snippet: {err}"
    );
}

#[test]
fn add_url_http_errors_name_the_url() {
    let (url, _) = serve(vec![]);
    let err = build_error(&format!("FROM scratch\nADD {url}/missing.txt /x\n"), &[]);
    assert!(
        err.contains(&format!(
            "Dockerfile:2:1: ADD {url}/missing.txt: HTTP 404 Not Found"
        )),
        "{err}"
    );
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = build_error(
        &format!("FROM scratch\nADD http://127.0.0.1:{port}/f /x\n"),
        &[],
    );
    assert!(
        err.contains(&format!("ADD http://127.0.0.1:{port}/f: ")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

#[test]
fn onbuild_triggers_and_base_env_come_from_a_registry_base_too() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let base_ctx = context(
        &tmp.path().join("base-ctx"),
        "FROM scratch\nENV HOME=/home/app\nONBUILD COPY . /app\n",
        &[],
    );
    let base = format!("{}/lade-test/onbuild-base:1", s.registry);
    lade_cmd()
        .args([
            "build",
            "--progress",
            "quiet",
            "--push",
            "-t",
            &base,
            "--cache-dir",
        ])
        .arg(tmp.path().join("cache"))
        .arg(&base_ctx)
        .assert()
        .success();

    let ctx = context(
        &tmp.path().join("ctx"),
        &format!("FROM {base}\nENV CONF=$HOME/.config\n"),
        &[("a.txt", "a\n")],
    );
    // A fresh store: the base's config comes from the registry while lowering.
    let config = build_layout(&ctx, &tmp.path().join("cache2"), &tmp.path().join("out"));
    let c = &config["config"];
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "CONF=/home/app/.config"),
        "{c}"
    );
    assert!(c.get("OnBuild").is_none(), "{c}");
    let listing = layer_listing(&ctx, tmp.path(), false);
    assert!(listing.lines().any(|l| l == "app/a.txt"), "{listing}");
}

/// Every path of `want` is a line of the layer listing.
#[track_caller]
fn assert_listed(listing: &str, want: &[&str]) {
    for w in want {
        assert!(
            listing.lines().any(|l| l == *w),
            "{w} missing from:\n{listing}"
        );
    }
}
