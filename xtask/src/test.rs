//! `cargo xtask test`: lint, start the services, run `cargo test --workspace` with the
//! `LADE_TEST_*` contract in its environment, stop the services, exit with cargo's code.
//!
//! The contract (read by `tests/common/mod.rs`):
//!
//! | variable | value |
//! |---|---|
//! | `LADE_TEST_SERVICES` | `1` when everything below is set |
//! | `LADE_TEST_DOCKER` | the docker CLI to use (`/usr/bin/docker`) |
//! | `LADE_TEST_DOCKER_HOST` | `unix:///tmp/.../docker.sock` of a private dockerd |
//! | `LADE_TEST_DOCKER_CONFIG` | an empty directory to use as `DOCKER_CONFIG` |
//! | `LADE_TEST_REGISTRY` | `127.0.0.1:PORT`, plain HTTP, no auth, delete enabled |
//! | `LADE_TEST_TLS_REGISTRY` | `127.0.0.1:PORT`, HTTPS + basic auth |
//! | `LADE_TEST_TLS_CA` | PEM of the CA that signed its certificate (SAN IP:127.0.0.1) |
//! | `LADE_TEST_TLS_CERT_DIR` | a directory holding that CA as `ca.crt` (`skopeo --cert-dir`) |
//! | `LADE_TEST_TLS_USER`, `LADE_TEST_TLS_PASSWORD` | its credentials |
//! | `LADE_TEST_DEBIAN_LAYOUT` | `oci:DIR:TAG` of a Debian bookworm minbase (`debootstrap`) |
//! | `LADE_TEST_DEBIAN_PYTHON_LAYOUT` | `oci:DIR:TAG` of that minbase + python3, pip, gcc, libc6-dev |
//! | `LADE_TEST_WHEELS` | a directory of the wheels of Flask and its dependencies (cp311) |
//! | `LADE_TEST_DEBIAN_ERROR` | instead of the three above: why they could not be made |
//! | `LADE_TEST_ROOTLESS_USER` | a non-root user with /etc/subuid and /etc/subgid ranges (`xtask/src/rootless.rs`) |
//! | `LADE_TEST_ROOTLESS_ERROR` | instead: why there is none |
//! | `LADE_TEST_BUSYBOX_ARM64` | a static aarch64 busybox (Debian `busybox-static:arm64`) |
//! | `LADE_TEST_BUSYBOX_ARM64_ERROR` | instead: why it could not be had |
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::docker::{self, Dockerd};
use crate::proc::Scratch;
use crate::registry::{self, Registry, TlsAuth};
use crate::{cargo, debian, deps, foreign, repo_root, rootless, signal};

struct Options {
    services: bool,
    lint: bool,
    keep: bool,
    cargo_args: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        services: true,
        lint: true,
        keep: false,
        cargo_args: Vec::new(),
    };
    let mut it = args.iter();
    for a in it.by_ref() {
        match a.as_str() {
            "--no-services" => o.services = false,
            "--no-lint" => o.lint = false,
            "--keep" => o.keep = true,
            "--" => break,
            other => bail!("unknown option {other:?} (cargo test arguments go after `--`)"),
        }
    }
    o.cargo_args = it.cloned().collect();
    Ok(o)
}

pub fn run(args: &[String]) -> Result<ExitCode> {
    let opts = parse(args)?;
    signal::install();
    if opts.lint {
        lint()?;
    }
    if !opts.services {
        return cargo_test(&opts.cargo_args, &[]);
    }
    deps::ensure(deps::TEST)?;
    // Made (or found in the cache) before the daemons start: the first run takes minutes.
    let debian = debian_env();
    let rootless = rootless_env();
    let foreign = foreign_env();
    signal::check()?;
    let mut services = Services::start()?;
    if opts.keep {
        services.scratch.keep();
    }
    println!("xtask: {}", services.summary());
    let mut env = services.env();
    env.extend(debian);
    env.extend(rootless);
    env.extend(foreign);
    let code = cargo_test(&opts.cargo_args, &env);
    drop(services);
    code
}

/// The foreign-platform part: an arm64 busybox, and (as root) binfmt_misc with qemu-aarch64.
/// Without a handler the tests check lade's error instead, so that is only reported.
fn foreign_env() -> Vec<(&'static str, String)> {
    println!("xtask: binfmt_misc: {}", foreign::ensure_binfmt());
    match foreign::busybox_arm64() {
        Ok(p) => vec![("LADE_TEST_BUSYBOX_ARM64", p.display().to_string())],
        Err(e) => {
            let e = format!("{e:#}");
            eprintln!("xtask: warning: no arm64 busybox; its tests will fail:\n{e}");
            vec![("LADE_TEST_BUSYBOX_ARM64_ERROR", e)]
        }
    }
}

/// The Debian bases' part of the contract. Failing to make them (an unreachable mirror) fails
/// only the tests that use them, with the reason: the other tests still run.
fn debian_env() -> Vec<(&'static str, String)> {
    match debian::ensure() {
        Ok(b) => vec![
            ("LADE_TEST_DEBIAN_LAYOUT", b.minbase),
            ("LADE_TEST_DEBIAN_PYTHON_LAYOUT", b.python_gcc),
            ("LADE_TEST_WHEELS", b.wheels.display().to_string()),
        ],
        Err(e) => {
            let e = format!("{e:#}");
            eprintln!("xtask: warning: the Debian bases are missing; their tests will fail:\n{e}");
            vec![("LADE_TEST_DEBIAN_ERROR", e)]
        }
    }
}

/// The rootless RUN tests' user (`LADE_TEST_ROOTLESS_USER`), or why there is none
/// (`LADE_TEST_ROOTLESS_ERROR`: those tests fail with it).
fn rootless_env() -> Vec<(&'static str, String)> {
    match rootless::ensure() {
        Ok(user) => vec![("LADE_TEST_ROOTLESS_USER", user.to_string())],
        Err(e) => vec![("LADE_TEST_ROOTLESS_ERROR", format!("{e:#}"))],
    }
}

fn lint() -> Result<()> {
    let root = repo_root();
    let fmt = cargo()
        .current_dir(&root)
        .args(["fmt", "--all", "--check"])
        .status()
        .context("running cargo fmt")?;
    if !fmt.success() {
        bail!("`cargo fmt --all --check` failed: run `cargo fmt --all` (or pass --no-lint)");
    }
    let clippy = cargo()
        .current_dir(&root)
        .args(["clippy", "--workspace", "--all-targets", "--quiet"])
        .args(["--", "-D", "warnings"])
        .status()
        .context("running cargo clippy")?;
    if !clippy.success() {
        bail!(
            "`cargo clippy --workspace --all-targets -- -D warnings` failed: fix the warnings \
             above (or pass --no-lint)"
        );
    }
    Ok(())
}

/// Everything started for one test run; dropping it stops the daemons (fields drop in order),
/// then removes the scratch directory.
struct Services {
    dockerd: Dockerd,
    registry: Registry,
    tls_registry: Registry,
    tls: TlsAuth,
    scratch: Scratch,
}

impl Services {
    fn start() -> Result<Self> {
        let scratch = Scratch::new("lade-xtask")?;
        let dockerd = docker::start(scratch.path())?;
        signal::check()?;
        let registry = registry::start_plain(&scratch.path().join("registry"))?;
        signal::check()?;
        let (tls_registry, tls) = registry::start_tls(&scratch.path().join("registry-tls"))?;
        Ok(Self {
            dockerd,
            registry,
            tls_registry,
            tls,
            scratch,
        })
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let s = |p: &std::path::Path| p.display().to_string();
        vec![
            ("LADE_TEST_SERVICES", "1".into()),
            ("LADE_TEST_DOCKER", docker::DOCKER_CLI.into()),
            ("LADE_TEST_DOCKER_HOST", self.dockerd.host.clone()),
            ("LADE_TEST_DOCKER_CONFIG", s(&self.dockerd.config_dir)),
            ("LADE_TEST_REGISTRY", self.registry.addr.clone()),
            ("LADE_TEST_TLS_REGISTRY", self.tls_registry.addr.clone()),
            ("LADE_TEST_TLS_CA", s(&self.tls.ca)),
            ("LADE_TEST_TLS_CERT_DIR", s(&self.tls.cert_dir)),
            ("LADE_TEST_TLS_USER", self.tls.user.clone()),
            ("LADE_TEST_TLS_PASSWORD", self.tls.password.clone()),
        ]
    }

    fn summary(&self) -> String {
        format!(
            "services: dockerd (storage {}, docker run {}) at {}; registry {}; TLS registry {} \
             (user {})",
            self.dockerd.storage_driver,
            if self.dockerd.run_works {
                "ok"
            } else {
                "FAILS"
            },
            self.dockerd.host,
            self.registry.addr,
            self.tls_registry.addr,
            self.tls.user
        )
    }
}

/// Runs `cargo test --workspace ARGS` with `env` in its own process group, and forwards a stop
/// signal to that whole group: cargo does not pass SIGTERM on to the test binaries it runs, and the
/// group must not be ours, which we may share with the shell or CI runner that started us.
fn cargo_test(args: &[String], env: &[(&'static str, String)]) -> Result<ExitCode> {
    let mut cmd: Command = cargo();
    cmd.current_dir(repo_root())
        .args(["test", "--workspace"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .process_group(0);
    let mut child = cmd.spawn().context("running cargo test")?;
    let pgid = child.id() as libc::pid_t;
    let mut forwarded = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(sig) = signal::received() {
            match forwarded {
                None => {
                    // SAFETY: plain kill(2) on the process group we created.
                    unsafe { libc::kill(-pgid, sig) };
                    forwarded = Some(std::time::Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(10) => {
                    // SAFETY: as above.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if forwarded.is_some() {
        // Test binaries cargo left behind when it died first.
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    if code != 0 {
        eprintln!("xtask: cargo test failed ({status})");
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
