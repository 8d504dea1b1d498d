//! RUN on Debian bookworm bases (issue #13 acceptance): the two seed Dockerfiles (cron from the
//! Debian mirror, a Flask app from local wheels) and a multi-stage gcc build, each built by
//! `lade build`, `docker load`ed and run in the test dockerd. The bases are made once by
//! `cargo xtask test` with debootstrap (xtask/src/debian.rs); run these with
//! `cargo xtask test --no-lint -- --test run_debian`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

/// Writes `files` (path, contents) under `tmp/ctx` with the Dockerfile; returns the context.
fn context(tmp: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = tmp.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, data) in files {
        let p = ctx.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    ctx
}

/// `lade build --progress plain` of `ctx` into a docker archive tagged `tag`, then `docker
/// load`; panics with lade's output unless both succeed. Returns lade's stderr (the step log).
fn build_and_load(ctx: &Path, tmp: &Path, tag: &str) -> String {
    let archive = tmp.join("image.tar");
    let o = common::lade(&tmp.join("cache"))
        .args(["build", "--progress", "plain", "-t", tag, "--output"])
        .arg(format!("type=docker,dest={}", archive.display()))
        .arg(ctx)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "lade build failed ({}):\n{log}",
        o.status
    );
    common::ok(common::docker(&["load", "-i", archive.to_str().unwrap()]));
    log
}

/// `docker run --rm --network none IMAGE ARGS...`; panics unless it succeeds; returns stdout.
fn docker_run(tag: &str, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm", "--network", "none", tag];
    all.extend(args);
    common::ok(common::docker(&all))
}

fn inspect(tag: &str, format: &str) -> String {
    common::ok(common::docker(&[
        "image", "inspect", "--format", format, tag,
    ]))
    .trim()
    .to_string()
}

/// The cron seed: `apt-get install` from the Debian mirror the machine's apt sources name (the
/// one test allowed to reach the network), a COPY and a chmod RUN over it, `CMD cron -f`.
#[test]
fn cron_seed_builds_and_runs_uses_the_debian_mirror() {
    let _services = common::require_services();
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {}\n\
         RUN apt-get update && apt-get install -y cron\n\
         COPY hello-cron /etc/cron.d/hello-cron\n\
         RUN chmod 0644 /etc/cron.d/hello-cron && crontab /etc/cron.d/hello-cron\n\
         CMD [\"cron\",\"-f\"]\n",
        debian.minbase
    );
    let crontab = "* * * * * echo hello >> /var/log/cron.log 2>&1\n";
    let ctx = context(tmp.path(), &dockerfile, &[("hello-cron", crontab)]);
    let tag = "lade-test/debian-cron:1";
    let first = build_and_load(&ctx, tmp.path(), tag);
    assert!(
        first.contains("RUN apt-get update && apt-get install -y cron: "),
        "no output of the apt-get RUN in the step log:\n{first}"
    );
    let out = docker_run(
        tag,
        &[
            "sh",
            "-c",
            "command -v cron; stat -c '%a %U' /etc/cron.d/hello-cron; crontab -l; \
             dpkg-query -W -f '${Status}\\n' cron",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "/usr/sbin/cron",
            "644 root",
            crontab.trim_end(),
            "install ok installed"
        ],
        "{out}"
    );
    assert_eq!(inspect(tag, "{{json .Config.Cmd}}"), r#"["cron","-f"]"#);
    // The step's /etc/resolv.conf and /etc/hostname (the base has neither) are not in the image.
    let out = docker_run(
        tag,
        &["sh", "-c", "ls /var/lib/dpkg/info/cron.list; echo ok"],
    );
    assert!(out.ends_with("ok\n"), "{out}");
    // A second build with nothing changed runs no RUN: every layer is cached and no step
    // output is streamed.
    let again = build_and_load(&ctx, tmp.path(), tag);
    let ran: Vec<&str> = again.lines().filter(|l| l.starts_with("RUN ")).collect();
    assert!(ran.is_empty(), "the rebuild ran steps:\n{again}");
    let cached = again
        .lines()
        .filter(|l| l.starts_with("layer RUN ") && l.contains(": cached "))
        .count();
    assert_eq!(cached, 2, "{again}");
    common::docker(&["rmi", "-f", tag]);
}

/// The Flask seed on the Debian python base: pip installs from a wheel directory brought in by
/// COPY (`--no-index`: no network), and the image imports Flask and serves a request.
#[test]
fn flask_app_installs_from_local_wheels() {
    let _services = common::require_services();
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {}\n\
         # bookworm's python3 is marked externally managed (PEP 668); an image owns its Python.\n\
         ENV PIP_BREAK_SYSTEM_PACKAGES=1\n\
         WORKDIR /app\n\
         COPY wheels /wheels\n\
         COPY requirements.txt .\n\
         RUN pip install --no-cache-dir --no-index --find-links /wheels -r requirements.txt\n\
         COPY app.py .\n\
         CMD [\"python3\", \"app.py\"]\n",
        debian.python_gcc
    );
    let app = "import importlib.metadata\n\
               from flask import Flask\n\
               app = Flask(__name__)\n\
               @app.route('/')\n\
               def hello():\n    return 'hello from flask'\n\
               print('flask', importlib.metadata.version('flask'))\n\
               print(app.test_client().get('/').get_data(as_text=True))\n";
    let ctx = context(
        tmp.path(),
        &dockerfile,
        &[("requirements.txt", "flask\n"), ("app.py", app)],
    );
    let wheels = ctx.join("wheels");
    fs::create_dir(&wheels).unwrap();
    let mut flask_version = None;
    for e in fs::read_dir(&debian.wheels).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".whl") {
            continue;
        }
        if let Some(rest) = name.strip_prefix("flask-") {
            flask_version = rest.split('-').next().map(String::from);
        }
        fs::copy(e.path(), wheels.join(&name)).unwrap();
    }
    let flask_version = flask_version.expect("a flask wheel in LADE_TEST_WHEELS");
    let tag = "lade-test/debian-flask:1";
    build_and_load(&ctx, tmp.path(), tag);
    let out = docker_run(tag, &[]);
    assert_eq!(
        out,
        format!("flask {flask_version}\nhello from flask\n"),
        "{out}"
    );
    common::docker(&["rmi", "-f", tag]);
}

/// Multi-stage: gcc in a builder stage on the Debian base compiles a static binary, the final
/// stage (`FROM scratch`) takes it with `COPY --from`, and docker runs it.
#[test]
fn multi_stage_gcc_builder_feeds_a_scratch_image() {
    let _services = common::require_services();
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM {} AS builder\n\
         WORKDIR /src\n\
         COPY hello.c .\n\
         RUN mkdir -p /out && gcc -O2 -static -o /out/hello hello.c\n\
         FROM scratch\n\
         COPY --from=builder /out/hello /hello\n\
         CMD [\"/hello\", \"world\"]\n",
        debian.python_gcc
    );
    let hello_c = "#include <stdio.h>\n\
                   int main(int argc, char **argv) {\n\
                   \x20   printf(\"hello %s from gcc %d\\n\", argc > 1 ? argv[1] : \"?\", __GNUC__);\n\
                   \x20   return 0;\n}\n";
    let ctx = context(tmp.path(), &dockerfile, &[("hello.c", hello_c)]);
    let tag = "lade-test/debian-gcc:1";
    build_and_load(&ctx, tmp.path(), tag);
    let out = docker_run(tag, &[]);
    // bookworm's gcc is 12.
    assert_eq!(out, "hello world from gcc 12\n");
    common::docker(&["rmi", "-f", tag]);
}

/// Two independent stages' RUNs run at the same time: each RUN uses the host network namespace
/// (`--network default`), where stage `a` listens on an abstract unix socket and waits for
/// stage `b` to connect and send its greeting. Run one after the other, `a` would wait for a
/// peer that never comes and fail after its timeout (a failure bound, not a timing assert).
#[test]
fn independent_stages_runs_run_in_parallel() {
    let _services = common::require_services();
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("lade-test-par-{}", std::process::id());
    let listen = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.bind('\\0{name}'); s.listen(); \
         s.settimeout(120); c, _ = s.accept(); open('/a.txt', 'wb').write(c.recv(64))"
    );
    let connect = format!(
        "import socket, time\n\
         for _ in range(1200):\n\
         \x20   s = socket.socket(socket.AF_UNIX)\n\
         \x20   try:\n\
         \x20       s.connect('\\0{name}'); break\n\
         \x20   except OSError:\n\
         \x20       time.sleep(0.1)\n\
         s.sendall(b'hello from b'); s.close(); open('/b.txt', 'w').write('sent')\n"
    );
    let dockerfile = format!(
        "FROM {base} AS a\n\
         RUN python3 -c \"{listen}\"\n\
         FROM {base} AS b\n\
         COPY connect.py /\n\
         RUN python3 /connect.py\n\
         FROM {minbase}\n\
         COPY --from=a /a.txt /a.txt\n\
         COPY --from=b /b.txt /b.txt\n\
         CMD [\"cat\", \"/a.txt\", \"/b.txt\"]\n",
        base = debian.python_gcc,
        minbase = debian.minbase,
    );
    let ctx = context(tmp.path(), &dockerfile, &[("connect.py", &connect)]);
    let tag = "lade-test/debian-parallel:1";
    let log = build_and_load(&ctx, tmp.path(), tag);
    assert_eq!(docker_run(tag, &[]), "hello from bsent");
    // Both RUNs are in the plain step log.
    for needle in ["python3 -c", "python3 /connect.py"] {
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }
    common::docker(&["rmi", "-f", tag]);
}
