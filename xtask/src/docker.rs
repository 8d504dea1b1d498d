//! A private dockerd: its own data root, exec root, pid file and socket inside a scratch
//! directory, no iptables, no bridge (containers run with `--network none`).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::proc::{run_ok, which, Daemon};

/// The Debian CLI: a newer docker CLI elsewhere on the PATH may want a buildx plugin.
pub const DOCKER_CLI: &str = "/usr/bin/docker";

pub struct Dockerd {
    daemon: Daemon,
    dir: PathBuf,
    /// `unix:///.../docker.sock`
    pub host: String,
    pub storage_driver: String,
    /// Whether `docker run --network none` of a busybox image printed what it should.
    pub run_works: bool,
    /// An empty DOCKER_CONFIG, so the CLI reads nothing from the user's ~/.docker.
    pub config_dir: PathBuf,
}

impl Dockerd {
    /// The process id of dockerd, where BuildKit does its work.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    pub fn cli(&self) -> Command {
        let mut c = Command::new(DOCKER_CLI);
        c.env("DOCKER_CONFIG", &self.config_dir)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .arg("-H")
            .arg(&self.host);
        c
    }

    /// Stops dockerd (which stops containerd and the containers); if it has to be killed, kills
    /// what it left behind too.
    pub fn stop(&mut self) {
        if !self.daemon.stop() {
            crate::proc::kill_processes_under(&self.dir);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts dockerd under `scratch` with the first storage driver that can run a container: vfs
/// (works everywhere, copies whole layers), then overlay2. `LADE_XTASK_STORAGE_DRIVER` picks one.
pub fn start(scratch: &Path) -> Result<Dockerd> {
    let drivers: Vec<String> = match std::env::var("LADE_XTASK_STORAGE_DRIVER") {
        Ok(d) if !d.is_empty() => vec![d],
        _ => vec!["vfs".into(), "overlay2".into()],
    };
    let mut errors = Vec::new();
    let mut fallback = None;
    for driver in &drivers {
        match start_with(scratch, driver) {
            Ok(mut d) => match probe_run(&d, scratch) {
                Ok(()) => {
                    d.run_works = true;
                    return Ok(d);
                }
                Err(e) => {
                    crate::signal::check()?;
                    eprintln!(
                        "xtask: dockerd ({driver}) started but cannot run a container: {e:#}"
                    );
                    errors.push(format!("{driver}: docker run: {e:#}"));
                    if fallback.is_none() {
                        fallback = Some(d);
                    }
                }
            },
            Err(e) => {
                crate::signal::check()?;
                eprintln!("xtask: dockerd with storage driver {driver} failed: {e:#}");
                errors.push(format!("{driver}: {e:#}"));
            }
        }
    }
    // A daemon that answers but cannot run containers still serves image tests (load, inspect);
    // the container tests will fail and say why.
    fallback.ok_or_else(|| anyhow::anyhow!("dockerd did not start:\n{}", errors.join("\n")))
}

/// Starts dockerd under `scratch` with storage driver `driver`, ready once `docker info` answers;
/// does not try to run a container.
pub fn start_with(scratch: &Path, driver: &str) -> Result<Dockerd> {
    let dockerd = which("dockerd").context("dockerd not found (package docker.io)")?;
    let dir = scratch.join(format!("docker-{driver}"));
    std::fs::create_dir_all(&dir)?;
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir)?;
    let sock = dir.join("docker.sock");
    let host = format!("unix://{}", sock.display());
    let mut cmd = Command::new(dockerd);
    cmd.arg("--storage-driver")
        .arg(driver)
        .args([
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
        ])
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("-H")
        .arg(&host)
        .env_remove("DOCKER_HOST");
    let daemon = Daemon::spawn(
        &format!("dockerd ({driver})"),
        cmd,
        &dir.join("dockerd.log"),
        Duration::from_secs(30),
    )?;
    let mut d = Dockerd {
        daemon,
        dir,
        host,
        storage_driver: driver.to_string(),
        run_works: false,
        config_dir,
    };
    let mut info = d.cli();
    info.args(["info", "--format", "{{.Driver}}"]);
    let Dockerd { daemon, .. } = &mut d;
    daemon.wait_ready(Duration::from_secs(60), || {
        info.output().map(|o| o.status.success()).unwrap_or(false)
    })?;
    Ok(d)
}

/// Imports a busybox image and runs `echo` in it without a network.
fn probe_run(d: &Dockerd, scratch: &Path) -> Result<()> {
    let root = scratch.join("probe-rootfs");
    let tar = scratch.join("probe-busybox.tar");
    busybox_rootfs(&root)?;
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )?;
    let image = "lade-xtask-probe:latest";
    run_ok(d.cli().arg("import").arg(&tar).arg(image))?;
    let out = run_ok(d.cli().args([
        "run",
        "--rm",
        "--network",
        "none",
        image,
        "/bin/sh",
        "-c",
        "echo hi",
    ]))?;
    let _ = d.cli().args(["rmi", "-f", image]).output();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&tar);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.trim() != "hi" {
        bail!("expected \"hi\", got {stdout:?}");
    }
    Ok(())
}

/// A minimal root filesystem: the static busybox as /bin/busybox and /bin/sh.
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("copying /bin/busybox")?;
    let sh = bin.join("sh");
    let _ = std::fs::remove_file(&sh);
    std::os::unix::fs::symlink("busybox", &sh)?;
    Ok(())
}
