//! What the Dockerfile instructions and build options put in the image config, checked in the
//! config JSON of the OCI layout `lade build` writes (BuildKit's behaviour is the reference):
//! HEALTHCHECK, ENTRYPOINT/CMD, USER, VOLUME, SHELL, STOPSIGNAL, MAINTAINER, EXPOSE, `--label`,
//! `FROM --platform`, the default PATH, ARG scoping and `--build-arg`, heredoc expansion,
//! COPY `--exclude`/`--parents`, stage references, parallel stages, the per-Dockerfile ignore
//! file, `# check=`, and the parser against BuildKit's on the dockerfile-json corpus.

mod common;

use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One `lade build` into an OCI layout.
struct Built {
    config: Value,
    config_path: PathBuf,
    /// The image's manifest digest (`containerimage.digest`).
    digest: String,
    layout: PathBuf,
    layers: Vec<PathBuf>,
    stderr: String,
}

fn build(ctx: &Path, extra: &[&str]) -> Built {
    let o = build_cmd(ctx, "out", extra).output().unwrap();
    assert!(
        o.status.success(),
        "lade build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_layout(
        &ctx.with_extension("out"),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `build` with `--build-arg` before each of `build_args` (`NAME=value`).
fn build_with_args(ctx: &Path, extra: &[&str], build_args: &[&str]) -> Built {
    let mut all = extra.to_vec();
    for a in build_args {
        all.extend(["--build-arg", a]);
    }
    build(ctx, &all)
}

fn build_cmd(ctx: &Path, out: &str, extra: &[&str]) -> assert_cmd::Command {
    let layout = ctx.with_extension(out);
    let _ = fs::remove_dir_all(&layout);
    let mut cmd = common::lade(&ctx.with_extension("cache"));
    cmd.args(["build", "--progress", "plain", "--output"])
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .arg("--metadata-file")
        .arg(layout.with_extension("meta.json"))
        .args(extra)
        .arg(ctx);
    cmd
}

fn read_layout(layout: &Path, stderr: String) -> Built {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let json = |p: PathBuf| -> Value { serde_json::from_slice(&fs::read(p).unwrap()).unwrap() };
    let index = json(layout.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let meta = json(layout.with_extension("meta.json"));
    let config_path = blob(manifest["config"]["digest"].as_str().unwrap());
    Built {
        config: json(config_path.clone()),
        config_path,
        digest: meta["containerimage.digest"].as_str().unwrap().to_string(),
        layout: layout.to_path_buf(),
        layers: manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| blob(l["digest"].as_str().unwrap()))
            .collect(),
        stderr,
    }
}

impl Built {
    /// The image's file tree: every layer unpacked in order into a fresh directory.
    fn rootfs(&self) -> PathBuf {
        let root = self.layout.with_extension("rootfs");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        for l in &self.layers {
            let st = Command::new("tar")
                .arg("-xzf")
                .arg(l)
                .arg("-C")
                .arg(&root)
                .status()
                .unwrap();
            assert!(st.success());
        }
        root
    }

    /// Every path of the image's file tree, relative, sorted.
    fn files(&self) -> Vec<String> {
        let root = self.rootfs();
        let mut out = Vec::new();
        let mut todo = vec![root.clone()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(&root).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    todo.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

/// A build context holding `Dockerfile` and the given files.
fn context(tmp: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = tmp.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (path, content) in files {
        let p = ctx.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    ctx
}

/// A base image in an OCI layout, made by lade from a lade.toml `[image]` section (so it
/// has no PATH unless the section sets one), with one file, /base.txt.
fn spec_base(tmp: &Path, image_section: &str) -> PathBuf {
    let ctx = tmp.join("base-ctx");
    fs::create_dir_all(ctx.join("rootfs")).unwrap();
    fs::write(ctx.join("rootfs/base.txt"), "base").unwrap();
    fs::write(
        ctx.join("lade.toml"),
        format!("[image]\nfrom = \"scratch\"\n{image_section}\n[[layer]]\nname = \"rootfs\"\nfrom = \"rootfs\"\ninto = \"/\"\n"),
    )
    .unwrap();
    let layout = tmp.join("base");
    common::lade(&tmp.join("base-cache"))
        .args(["build", "--progress", "quiet", "--spec"])
        .arg(ctx.join("lade.toml"))
        .arg("--output")
        .arg(format!("type=oci-layout,dest={}", layout.display()))
        .assert()
        .success();
    layout
}

/// A build that must fail: exit 1, no output written; returns stderr.
fn build_error(ctx: &Path, extra: &[&str]) -> String {
    let o = build_cmd(ctx, "err", extra).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a build error:\n{stderr}"
    );
    assert!(!ctx.with_extension("err").exists(), "half-written output");
    stderr
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn healthcheck_with_every_option_and_none() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "FROM scratch AS checked\nHEALTHCHECK --interval=1m30s --timeout=5s --start-period=10s --start-interval=500ms --retries=4 CMD wget -q -O- http://localhost/ || exit 1\nFROM checked AS exec\nHEALTHCHECK CMD [\"/bin/check\", \"--fast\"]\nFROM exec\nHEALTHCHECK NONE\n",
        &[],
    );
    let c = build(&ctx, &["--target", "checked"]).config;
    assert_eq!(
        c["config"]["Healthcheck"],
        json!({
            "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
            "Interval": 90_000_000_000i64,
            "Timeout": 5_000_000_000i64,
            "StartPeriod": 10_000_000_000i64,
            "StartInterval": 500_000_000,
            "Retries": 4
        })
    );
    // A later HEALTHCHECK replaces the inherited one entirely (no options carried over).
    let c = build(&ctx, &["--target", "exec"]).config;
    assert_eq!(
        c["config"]["Healthcheck"],
        json!({"Test": ["CMD", "/bin/check", "--fast"]})
    );
    let c = build(&ctx, &[]).config;
    assert_eq!(c["config"]["Healthcheck"], json!({"Test": ["NONE"]}));
}

#[test]
fn bad_healthcheck_values_are_located_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (ins, wanted) in [
        (
            "HEALTHCHECK --retries=-3 CMD true",
            "--retries cannot be negative (-3)",
        ),
        (
            "HEALTHCHECK --interval=10x CMD true",
            "--interval: invalid duration \"10x\"",
        ),
        ("HEALTHCHECK NONE --retries=1", "HEALTHCHECK NONE"),
        ("HEALTHCHECK --timeout=1s", "HEALTHCHECK needs CMD or NONE"),
        ("STOPSIGNAL SIGWHAT", "Invalid signal: SIGWHAT"),
    ] {
        let ctx = context(
            tmp.path(),
            &format!("FROM scratch\nLABEL a=b\n{ins}\n"),
            &[],
        );
        let err = build_error(&ctx, &[]);
        assert!(err.contains("Dockerfile:3:1:"), "{ins}: {err}");
        assert!(err.contains(wanted), "{ins}: expected {wanted:?} in {err}");
        assert!(err.contains(&format!("3 | {ins}")), "snippet: {err}");
    }
}

#[test]
fn entrypoint_resets_an_inherited_cmd_but_not_one_set_in_the_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let base = spec_base(
        tmp.path(),
        "cmd = [\"/base-cmd\"]\nentrypoint = [\"/base-ep\"]\n",
    );
    let b = base.display();
    let ctx = context(
        tmp.path(),
        &format!(
            "FROM oci:{b} AS inherited\nENTRYPOINT [\"/ep\"]\n\
             FROM oci:{b} AS cmd-first\nCMD [\"c\"]\nENTRYPOINT [\"/ep\"]\n\
             FROM oci:{b} AS ep-first\nENTRYPOINT /ep --shell\nCMD [\"c\"]\n\
             FROM oci:{b} AS untouched\nLABEL x=y\n\
             FROM cmd-first AS from-stage\nENTRYPOINT [\"/ep2\"]\n"
        ),
        &[],
    );
    let config = |target: &str| build(&ctx, &["--target", target]).config["config"].clone();
    let c = config("inherited");
    assert_eq!(c["Entrypoint"], json!(["/ep"]));
    assert!(
        c.get("Cmd").is_none_or(Value::is_null),
        "base CMD reset: {c}"
    );
    let c = config("cmd-first");
    assert_eq!(c["Entrypoint"], json!(["/ep"]));
    assert_eq!(c["Cmd"], json!(["c"]));
    let c = config("ep-first");
    assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/ep --shell"]));
    assert_eq!(c["Cmd"], json!(["c"]));
    let c = config("untouched");
    assert_eq!(c["Entrypoint"], json!(["/base-ep"]));
    assert_eq!(c["Cmd"], json!(["/base-cmd"]));
    // A CMD set in the stage one builds FROM is inherited, so ENTRYPOINT resets it.
    let c = config("from-stage");
    assert_eq!(c["Entrypoint"], json!(["/ep2"]));
    assert!(c.get("Cmd").is_none_or(Value::is_null), "{c}");
}

#[test]
fn user_volume_shell_stopsignal_maintainer_expose_and_cli_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "FROM scratch\nMAINTAINER Jane Doe <jane@example.com>\nARG U=app\nUSER ${U}:staff\nVOLUME /data /cache\nVOLUME [\"/json\", \"/logs\"]\nSHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nCMD echo $HOME\nSTOPSIGNAL SIGQUIT\nEXPOSE 80 53/udp 8000-8002/tcp 9000-9001/UDP\nLABEL keep=dockerfile override=dockerfile\n",
        &[],
    );
    let c = build(
        &ctx,
        &["--label", "override=cli", "--label", "org.example.new=1"],
    )
    .config;
    assert_eq!(c["author"], "Jane Doe <jane@example.com>");
    let cc = &c["config"];
    assert_eq!(cc["User"], "app:staff");
    assert_eq!(
        cc["Volumes"],
        json!({"/data": {}, "/cache": {}, "/json": {}, "/logs": {}})
    );
    assert_eq!(cc["Shell"], json!(["/bin/bash", "-eu", "-c"]));
    assert_eq!(cc["Cmd"], json!(["/bin/bash", "-eu", "-c", "echo $HOME"]));
    assert_eq!(cc["StopSignal"], "SIGQUIT");
    assert_eq!(
        cc["ExposedPorts"],
        json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}, "9000/udp": {}, "9001/udp": {}})
    );
    assert_eq!(
        cc["Labels"],
        json!({"keep": "dockerfile", "override": "cli", "org.example.new": "1"})
    );
}

#[test]
fn from_platform_sets_the_images_platform_and_the_stage_args() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "FROM --platform=linux/arm64 scratch AS arm\nARG TARGETPLATFORM\nLABEL tp=$TARGETPLATFORM\nFROM --platform=$BUILDPLATFORM scratch AS native\nFROM arm\n",
        &[],
    );
    let c = build(&ctx, &["--platform", "linux/amd64"]).config;
    assert_eq!(c["architecture"], "arm64");
    assert_eq!(c["os"], "linux");
    // TARGETPLATFORM is the build's target, not the stage's FROM --platform (as BuildKit).
    assert_eq!(c["config"]["Labels"]["tp"], "linux/amd64");
    let c = build(&ctx, &["--platform", "linux/arm64", "--target", "native"]).config;
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(c["architecture"], host, "BUILDPLATFORM is the host");
}

#[test]
fn every_stage_gets_dockers_default_path_unless_its_base_has_one() {
    let tmp = tempfile::tempdir().unwrap();
    let no_path = spec_base(&tmp.path().join("a"), "env = { A = \"1\" }\n");
    let with_path = spec_base(&tmp.path().join("b"), "env = { PATH = \"/bin\" }\n");
    let ctx = context(
        tmp.path(),
        &format!(
            "FROM scratch AS scratch-stage\nENV PATH=/opt/bin:$PATH\n\
             FROM oci:{} AS no-path\n\
             FROM oci:{} AS with-path\n",
            no_path.display(),
            with_path.display()
        ),
        &[],
    );
    let env = |target: &str| build(&ctx, &["--target", target]).config["config"]["Env"].clone();
    assert_eq!(
        env("scratch-stage"),
        json!([format!("PATH=/opt/bin:{}", &DEFAULT_PATH[5..])])
    );
    assert_eq!(env("no-path"), json!(["A=1", DEFAULT_PATH]));
    assert_eq!(env("with-path"), json!(["PATH=/bin"]));
}

#[test]
fn args_scoping_redeclaration_and_build_args() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "ARG GLOBAL=g1\nARG BASE=scratch\nFROM ${BASE} AS first\nARG V=1\nARG V=2\nARG GLOBAL\nARG DEF=default\nLABEL v=$V global=$GLOBAL def=$DEF\nFROM scratch\nLABEL v=${V:-unset} global=${GLOBAL:-unset}\nARG HTTP_PROXY\nLABEL proxy=${HTTP_PROXY:-none}\n",
        &[],
    );
    let first = build(&ctx, &["--target", "first"]).config;
    assert_eq!(
        first["config"]["Labels"],
        json!({"v": "2", "global": "g1", "def": "default"})
    );
    let b = build_with_args(
        &ctx,
        &["--target", "first"],
        &["DEF=cli", "GLOBAL=g2", "V=cli-v"],
    );
    assert_eq!(
        b.config["config"]["Labels"],
        json!({"v": "cli-v", "global": "g2", "def": "cli"})
    );
    // ARGs never reach the image's environment.
    assert_eq!(b.config["config"]["Env"], json!([DEFAULT_PATH]));

    // The next FROM ends the scope; the predefined proxy args need no ARG to be accepted
    // (no warning), are visible only where declared, and never reach the config.
    let b = build_with_args(
        &ctx,
        &[],
        &[
            "HTTP_PROXY=http://proxy:3128",
            "no_proxy=localhost",
            "NOT_DECLARED=1",
        ],
    );
    assert_eq!(
        b.config["config"]["Labels"],
        json!({"v": "unset", "global": "unset", "proxy": "http://proxy:3128"})
    );
    assert_eq!(b.config["config"]["Env"], json!([DEFAULT_PATH]));
    let warning = b
        .stderr
        .lines()
        .find(|l| l.contains("not consumed"))
        .unwrap_or_default()
        .to_string();
    assert!(warning.contains("NOT_DECLARED"), "{}", b.stderr);
    assert!(
        !warning.contains("proxy") && !warning.contains("PROXY"),
        "{warning}"
    );
    // Undeclared, a proxy arg's value is nowhere in the config (history included).
    let b = build_with_args(
        &ctx,
        &["--target", "first"],
        &["HTTPS_PROXY=http://secret:1"],
    );
    let raw = fs::read_to_string(&b.config_path).unwrap();
    assert!(!raw.contains("secret:1"), "{raw}");
    assert!(!b.stderr.contains("not consumed"), "{}", b.stderr);
}

#[test]
fn copy_heredocs_expand_unless_the_delimiter_is_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "FROM scratch\nARG name=world\nENV greeting=Hello\nCOPY <<EOF /expanded\n$greeting ${name}! \"q\" 'q' \\$name\nEOF\nCOPY <<'EOF' /quoted\n$greeting ${name}!\nEOF\nCOPY <<-\"EOF\" <<EOT /dir/\n\t$name\n\tEOF\n\t$name\nEOT\n",
        &[],
    );
    let root = build(&ctx, &[]).rootfs();
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(read("expanded"), "Hello world! \"q\" 'q' $name\n");
    assert_eq!(read("quoted"), "$greeting ${name}!\n");
    assert_eq!(
        read("dir/EOF"),
        "$name\n",
        "<<- strips tabs, quoted: no expansion"
    );
    assert_eq!(read("dir/EOT"), "\tworld\n");
}

#[test]
fn copy_exclude_and_parents_like_the_dockerfile_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "FROM scratch\nCOPY --exclude=*.txt --exclude=*.md hom* /mydir/\nCOPY ./x/a.txt ./y/a.txt /no_parents/\nCOPY --parents ./x/a.txt ./y/a.txt /parents/\n",
        &[
            ("home.txt", "1"),
            ("homer.md", "2"),
            ("hombre", "3"),
            ("x/a.txt", "xa"),
            ("y/a.txt", "ya"),
        ],
    );
    let files = build(&ctx, &[]).files();
    let under = |dir: &str| -> Vec<&str> {
        files
            .iter()
            .filter(|f| f.starts_with(dir))
            .map(String::as_str)
            .collect()
    };
    assert_eq!(under("mydir/"), ["mydir/hombre"]);
    assert_eq!(under("no_parents/"), ["no_parents/a.txt"]);
    assert_eq!(
        under("parents/"),
        [
            "parents/x",
            "parents/x/a.txt",
            "parents/y",
            "parents/y/a.txt"
        ]
    );
}

#[test]
fn stage_references_like_buildkit() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM scratch AS a\nCOPY --from=b a.txt /\nFROM scratch AS b\nCOPY --from=c a.txt /\nFROM scratch AS c\nCOPY --from=a a.txt /\n",
            &[
                "Dockerfile:2:1: circular dependency detected on stage: a",
                "a (COPY --from at line 2) → b (COPY --from at line 4) → c (COPY --from at line 6)",
            ],
        ),
        (
            "FROM scratch AS early\nCOPY --from=late a.txt /\nFROM scratch AS late\nCOPY a.txt /\nFROM early\n",
            &[
                "Dockerfile:2:1: cannot copy from stage \"late\", it needs to be defined before current stage \"early\"",
                "stage \"late\" starts at line 3",
            ],
        ),
        (
            "FROM scratch AS build\nCOPY a.txt /\nFROM scratch\nCOPY --from=biuld /a.txt /\n",
            &[
                "Dockerfile:4:1:",
                "no stage named \"biuld\" in this Dockerfile",
                "did you mean the stage \"build\"?",
            ],
        ),
        (
            "FROM scratch\nCOPY --from=3 /a.txt /\n",
            &["Dockerfile:2:1:", "invalid stage index 3"],
        ),
    ];
    for (df, wanted) in cases {
        let ctx = context(tmp.path(), df, &[("a.txt", "a")]);
        let err = build_error(&ctx, &[]);
        for w in *wanted {
            assert!(err.contains(w), "expected {w:?} in:\n{err}");
        }
    }
    // A stage the target does not need may copy from one defined later.
    let ctx = context(
        tmp.path(),
        "FROM scratch AS unused\nCOPY --from=final a.txt /\nFROM scratch AS final\nCOPY a.txt /\n",
        &[("a.txt", "a")],
    );
    assert!(build(&ctx, &[]).files().contains(&"a.txt".to_string()));
}

#[test]
fn independent_stages_in_parallel_give_the_same_digest_as_one_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let names: Vec<String> = (0..40).map(|i| format!("s{}/f{i}.txt", i % 4)).collect();
    for n in &names {
        files.push((n.as_str(), n.as_str()));
    }
    let ctx = context(
        tmp.path(),
        "FROM scratch AS s0\nCOPY s0 /s0/\nFROM scratch AS s1\nCOPY s1 /s1/\nENV ONE=1\nFROM scratch AS s2\nCOPY s2 /s2/\nFROM scratch AS s3\nCOPY s3 /s3/\nFROM scratch\nCOPY --from=s0 /s0 /all/0/\nCOPY --from=s1 /s1 /all/1/\nCOPY --from=s2 /s2 /all/2/\nCOPY --from=s3 /s3 /all/3/\n",
        &files,
    );
    let parallel = build(&ctx, &["--jobs", "4", "--no-cache"]);
    let serial = build(&ctx, &["--jobs", "1", "--no-cache"]);
    assert_eq!(parallel.digest, serial.digest);
    assert_eq!(
        serial
            .files()
            .iter()
            .filter(|f| f.ends_with(".txt"))
            .count(),
        40
    );
}

#[test]
fn the_default_dockerfiles_own_ignore_file_is_used_without_f() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "# syntax=docker/dockerfile:1\n# check=skip=JSONArgsRecommended;error=true\nFROM scratch\nCOPY . /ctx/\n",
        &[
            ("keep.txt", "k"),
            ("secret.env", "s"),
            ("dropped-by-dockerignore.txt", "d"),
            (".dockerignore", "dropped-by-dockerignore.txt\n"),
            ("Dockerfile.dockerignore", "*.env\n"),
        ],
    );
    let b = build(&ctx, &[]);
    let files = b.files();
    // `Dockerfile.dockerignore` replaces `.dockerignore`; the `# check=` directive is fine.
    assert!(files.contains(&"ctx/keep.txt".to_string()), "{files:?}");
    assert!(
        files.contains(&"ctx/dropped-by-dockerignore.txt".to_string()),
        "{files:?}"
    );
    assert!(!files.contains(&"ctx/secret.env".to_string()), "{files:?}");
    assert!(!b.stderr.contains("check"), "{}", b.stderr);
}

#[test]
fn parse_json_agrees_with_buildkit_on_the_whole_corpus() {
    let dir = common::testdata("dockerfile-json");
    let o = Command::new("python3")
        .arg(dir.join("compare.py"))
        .arg(env!("CARGO_BIN_EXE_lade"))
        .arg(dir.join("cases"))
        .arg("1.0")
        .output()
        .expect("python3 runs compare.py");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("parse agreement with BuildKit:"))
        .unwrap_or_else(|| panic!("no score in {stdout}"));
    let (ok, total) = line
        .split_once(':')
        .unwrap()
        .1
        .split('=')
        .next()
        .unwrap()
        .trim()
        .split_once('/')
        .unwrap();
    assert_eq!(ok, total, "{line}");
    let cases: usize = fs::read_dir(dir.join("cases"))
        .unwrap()
        .map(|g| fs::read_dir(g.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(
        total.parse::<usize>().unwrap(),
        cases,
        "every case is scored"
    );
}

/// Config-only Dockerfiles built by dockerd's own BuildKit (`DOCKER_BUILDKIT=1 docker
/// build`) and by lade (then `docker load`ed): `docker inspect` shows the same config. Only
/// instructions the test dockerd's (older) frontend knows are used.
#[test]
fn docker_inspect_agrees_with_dockerds_buildkit() {
    let _services = common::require_services();
    let cases = [
        "ARG G=global\nFROM scratch AS base\nCMD [\"/base-cmd\"]\nFROM base\nARG G\nARG V=3\nARG V=4\nLABEL a=1 \"b c\"=\"two words\" g=$G\nENV A=1 B=\"x y\"\nENV A=2 C=$A D=$V\nENV PATH=/opt/bin:$PATH\nUSER 1000:1000\nEXPOSE 80 53/udp 8000-8001\nVOLUME /data /cache\nSHELL [\"/bin/sh\", \"-eu\", \"-c\"]\nENTRYPOINT /ep --flag\nSTOPSIGNAL SIGQUIT\nHEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=2 CMD true\nCOPY a.txt /\n",
        "FROM scratch AS base\nCMD [\"c\"]\nHEALTHCHECK --retries=3 CMD [\"/check\"]\nWORKDIR /w\nFROM base\nENTRYPOINT [\"/ep\"]\nHEALTHCHECK NONE\nWORKDIR rel\nEXPOSE 7/UDP 9-10/tcp\nLABEL ${NOPE:-dflt}=x\n",
        "FROM scratch\nCMD c --x\nENTRYPOINT [\"/ep\"]\nENV K=k\nENV ${K}_1=$K\nARG K=arg\nENV AFTER=$K\nSTOPSIGNAL 9\nUSER app\n",
    ];
    for (i, df) in cases.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = context(tmp.path(), df, &[("a.txt", "a")]);
        let bk_tag = format!("lade-test/config-buildkit:{i}");
        let lade_tag = format!("lade-test/config-lade:{i}");
        common::ok(common::docker(&[
            "build",
            "--build-arg",
            "V=cli",
            "-t",
            &bk_tag,
            ctx.to_str().unwrap(),
        ]));
        let archive = tmp.path().join("lade.tar");
        common::lade(&tmp.path().join("cache"))
            .args(["build", "--progress", "quiet", "--build-arg", "V=cli"])
            .args(["-t", &lade_tag, "--output"])
            .arg(format!("type=docker,dest={}", archive.display()))
            .arg(&ctx)
            .assert()
            .success();
        common::ok(common::docker(&["load", "-i", archive.to_str().unwrap()]));
        let inspect = |tag: &str| -> Value {
            let out = common::ok(common::docker(&[
                "image",
                "inspect",
                "--format",
                "{{json .Config}}",
                tag,
            ]));
            serde_json::from_str(&out).unwrap()
        };
        let (bk, ours) = (inspect(&bk_tag), inspect(&lade_tag));
        common::docker(&["rmi", "-f", &bk_tag, &lade_tag]);
        for key in [
            "Env",
            "Labels",
            "User",
            "ExposedPorts",
            "Volumes",
            "Shell",
            "Cmd",
            "Entrypoint",
            "StopSignal",
            "Healthcheck",
            "WorkingDir",
        ] {
            assert_eq!(
                ours[key], bk[key],
                "case {i}, {key}: lade {ours} vs BuildKit {bk}"
            );
        }
        // Not vacuous: the interesting values are there.
        if i == 0 {
            assert_eq!(
                bk["Env"],
                json!([
                    format!("PATH=/opt/bin:{}", &DEFAULT_PATH[5..]),
                    "A=2",
                    "B=x y",
                    "C=1",
                    "D=cli"
                ])
            );
        }
    }
}

/// `path -> "type mode uid:gid size content"` of the file tree of `tag` as a container sees it
/// (`docker create` + `docker export`, unpacked as root with its modes and owners), mtimes
/// left out.
fn exported_tree(tag: &str, dir: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let id = common::ok(common::docker(&["create", tag, "/none"]));
    let id = id.trim();
    let tar = dir.with_extension("tar");
    let export = common::docker(&["export", "-o", tar.to_str().unwrap(), id]);
    common::docker(&["rm", "-f", id]);
    common::ok(export);
    fs::create_dir_all(dir).unwrap();
    let st = Command::new("tar")
        .args(["--numeric-owner", "--same-permissions", "-xf"])
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    let mut tree = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let ft = m.file_type();
        let (kind, content) = if ft.is_file() {
            (
                "f",
                String::from_utf8_lossy(&fs::read(e.path()).unwrap()).into_owned(),
            )
        } else if ft.is_symlink() {
            ("l", fs::read_link(e.path()).unwrap().display().to_string())
        } else if ft.is_dir() {
            ("d", String::new())
        } else {
            ("o", String::new())
        };
        let size = if ft.is_file() { m.len() } else { 0 };
        tree.insert(
            e.path().strip_prefix(dir).unwrap().display().to_string(),
            format!(
                "{kind} {:o} {}:{} {size} {content:?}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ),
        );
    }
    tree
}

/// COPY/ADD of a context whose files and directories have restrictive and special modes
/// (0600 … 4755, sticky and setgid directories), built by dockerd's BuildKit and by lade:
/// the two images' file trees agree in type, mode, owner, size and content.
#[test]
fn copied_file_trees_agree_with_dockerds_buildkit() {
    let _services = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        tmp.path(),
        "FROM scratch\nCOPY m /d/\nCOPY m/f600 /f\nCOPY m/f* /w/\nADD m /a/\nCOPY m/d700 /deep/er/\nCOPY m/d2755 /nos\nCOPY m /whole\nCOPY m/d1777 /deep2/er\n",
        &[],
    );
    common::write_mode_context(&ctx);
    let (bk_tag, lade_tag) = ("lade-test/modes-buildkit:1", "lade-test/modes-lade:1");
    common::ok(common::docker(&[
        "build",
        "-t",
        bk_tag,
        ctx.to_str().unwrap(),
    ]));
    let archive = tmp.path().join("lade.tar");
    common::lade(&tmp.path().join("cache"))
        .args(["build", "--progress", "quiet", "-t", lade_tag, "--output"])
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(&ctx)
        .assert()
        .success();
    common::ok(common::docker(&["load", "-i", archive.to_str().unwrap()]));
    let bk = exported_tree(bk_tag, &tmp.path().join("bk"));
    let ours = exported_tree(lade_tag, &tmp.path().join("lade"));
    common::docker(&["rmi", "-f", bk_tag, lade_tag]);
    // Not vacuous: BuildKit kept the modes on disk.
    assert_eq!(bk["f"], "f 600 0:0 7 \"m/f600\\n\"");
    assert!(bk["d/f4755"].starts_with("f 4755 "), "{bk:#?}");
    assert!(bk["d/d1777"].starts_with("d 1777 "), "{bk:#?}");
    let diff: Vec<String> = bk
        .keys()
        .chain(ours.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| bk.get(*k) != ours.get(*k))
        .map(|k| format!("{k}: BuildKit {:?}, lade {:?}", bk.get(k), ours.get(k)))
        .collect();
    assert!(diff.is_empty(), "file trees differ:\n{}", diff.join("\n"));
}
