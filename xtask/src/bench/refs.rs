//! The reference tools of `cargo xtask bench` and what they need: a busybox base image built by
//! lade (an OCI layout for lade and buildah, loaded into a private dockerd for BuildKit), buildah,
//! BuildKit inside that dockerd, skopeo, and a `docker-registry` on 127.0.0.1 for the push rows.
//!
//! None of these is installed by the bench: a missing one makes its rows "not installed".
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::runs;
use crate::docker::{self, Dockerd, DOCKER_CLI};
use crate::proc::{run_ok, which};
use crate::registry::{self, Registry};

/// The tag BuildKit builds from (loaded into the private dockerd).
pub const DOCKER_BASE: &str = "lade-bench/busybox:1";

/// Everything the reference rows use, each either ready or the reason it is not.
pub struct Refs {
    /// Under a short /tmp scratch directory (dockerd's socket path is limited to 108 bytes).
    dir: PathBuf,
    /// The busybox base as an OCI layout directory with the tag `1`.
    pub base: Result<PathBuf, String>,
    pub buildah: Result<PathBuf, String>,
    /// A private dockerd that has [`DOCKER_BASE`].
    pub dockerd: Result<Dockerd, String>,
    pub skopeo: Result<PathBuf, String>,
    /// The Debian minbase (`oci:DIR:TAG`), loaded into dockerd as [`runs::DOCKER_DEBIAN`].
    pub debian: Result<String, String>,
    /// Why BuildKit cannot build on the Debian base when dockerd runs (its `docker load` failed).
    pub debian_in_dockerd: Option<String>,
    /// buildah's storage driver: overlay when a RUN works on it here, else vfs.
    pub buildah_driver: &'static str,
    /// `docker-registry` on PATH; the registry itself is started fresh for every push run.
    registry_bin: Result<(), String>,
    registry: RefCell<Option<Registry>>,
}

fn installed(bin: &str, package: &str) -> Result<PathBuf, String> {
    which(bin).ok_or_else(|| format!("not installed ({package})"))
}

impl Refs {
    /// Builds the base image with `lade`, then starts dockerd (when BuildKit rows are wanted) and
    /// loads the base into it. Failures are remembered per tool, never returned.
    /// `want_debian`: look for the Debian minbase (the D workloads are selected).
    pub fn start(dir: &Path, lade: &Path, want_dockerd: bool, want_debian: bool) -> Result<Self> {
        let base = base_image(&dir.join("base"), lade).map_err(|e| format!("base image: {e:#}"));
        let docker_tar = dir.join("base/docker.tar");
        let dockerd = match (&base, want_dockerd) {
            (_, false) => Err("not wanted".to_string()),
            (Err(e), true) => Err(e.clone()),
            (Ok(_), true) => start_dockerd(dir, &docker_tar),
        };
        let debian = if want_debian {
            runs::debian_layout()
        } else {
            Err("not wanted".into())
        };
        let debian_in_dockerd = match (&debian, &dockerd) {
            (Ok(layout), Ok(d)) => runs::debian_docker_archive(dir, lade, layout)
                .and_then(|tar| run_ok(d.cli().arg("load").arg("-i").arg(&tar)).map(|_| ()))
                .err()
                .map(|e| format!("loading the Debian base into dockerd: {e:#}")),
            _ => None,
        };
        let buildah = installed("buildah", "buildah");
        let buildah_driver = match (&buildah, &base) {
            (Ok(bin), Ok(layout)) => buildah_storage(bin, dir, layout),
            _ => "vfs",
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            base,
            buildah,
            buildah_driver,
            debian,
            debian_in_dockerd,
            dockerd,
            skopeo: installed("skopeo", "skopeo"),
            registry_bin: installed("docker-registry", "docker-registry").map(|_| ()),
            registry: RefCell::new(None),
        })
    }

    pub fn registry_missing(&self) -> Option<String> {
        self.registry_bin.as_ref().err().cloned()
    }

    /// Stops the registry of the previous run and starts one on empty storage (and a new port), so
    /// that no blob is already there and no client can mount one from an earlier repository.
    pub fn fresh_registry(&self) -> Result<()> {
        drop(self.registry.borrow_mut().take());
        let dir = self.dir.join("registry");
        super::fresh_dir(&dir)?;
        *self.registry.borrow_mut() = Some(registry::start_plain(&dir)?);
        Ok(())
    }

    /// `127.0.0.1:PORT` of the running registry.
    pub fn registry_addr(&self) -> String {
        self.registry
            .borrow()
            .as_ref()
            .map(|r| r.addr.clone())
            .unwrap_or_else(|| "127.0.0.1:0".into())
    }

    pub fn buildah_root(&self) -> PathBuf {
        self.dir.join("buildah")
    }

    /// Storage kept across runs for the no-op rebuild rows.
    pub fn buildah_warm_root(&self) -> PathBuf {
        self.dir.join("buildah-warm")
    }
}

/// overlay when `buildah bud` of a RUN on the busybox base works with it here, else vfs.
fn buildah_storage(bin: &Path, dir: &Path, layout: &Path) -> &'static str {
    let probe = dir.join("buildah-probe");
    let ctx = probe.join("ctx");
    let ok = std::fs::create_dir_all(&ctx)
        .and_then(|_| {
            std::fs::write(
                ctx.join("Dockerfile"),
                "ARG BASE\nFROM ${BASE}\nRUN echo hi > /x\n",
            )
        })
        .is_ok()
        && run_ok(&mut buildah(
            bin,
            "overlay",
            &probe,
            &format!("oci:{}:1", layout.display()),
            &ctx,
            None,
            false,
        ))
        .is_ok();
    let _ = run_ok(
        Command::new(bin)
            .args(["--storage-driver", "overlay", "--root"])
            .arg(probe.join("root"))
            .arg("--runroot")
            .arg(probe.join("run"))
            .args(["rmi", "-af"]),
    );
    let _ = std::fs::remove_dir_all(&probe);
    if ok {
        "overlay"
    } else {
        eprintln!("bench: buildah cannot use overlay storage here, using vfs");
        "vfs"
    }
}

/// A busybox image built by lade: `bin/busybox` (the static one from /bin) and `bin/sh ->
/// busybox`, written as an OCI layout (`dir/layout`, tag `1`) and a docker archive
/// (`dir/docker.tar`, tag [`DOCKER_BASE`]). Returns the layout directory.
fn base_image(dir: &Path, lade: &Path) -> Result<PathBuf> {
    super::fresh_dir(dir)?;
    docker::busybox_rootfs(&dir.join("rootfs"))?;
    let spec = dir.join("lade.toml");
    std::fs::write(
        &spec,
        "[image]\nfrom = \"scratch\"\n[[layer]]\nname = \"busybox\"\nfrom = \"rootfs\"\ninto = \"/\"\n",
    )?;
    let layout = dir.join("layout");
    for (output, tag) in [
        (
            format!("type=oci-layout,dest={}", layout.display()),
            "busybox:1",
        ),
        (
            format!("type=docker,dest={}", dir.join("docker.tar").display()),
            DOCKER_BASE,
        ),
    ] {
        run_ok(
            Command::new(lade)
                .arg("build")
                .arg("--spec")
                .arg(&spec)
                .arg("--cache-dir")
                .arg(dir.join("cache"))
                .args(["--progress", "quiet", "-o", &output, "-t", tag]),
        )?;
    }
    Ok(layout)
}

/// dockerd on overlay2 (what the bench README calls fair; vfs copies every layer) or else vfs,
/// with the base image loaded and tagged.
fn start_dockerd(dir: &Path, docker_tar: &Path) -> Result<Dockerd, String> {
    if !Path::new(DOCKER_CLI).exists() || which("dockerd").is_none() {
        return Err("not installed (docker.io)".into());
    }
    let mut errors = Vec::new();
    for driver in ["overlay2", "vfs"] {
        eprintln!("bench: starting dockerd ({driver})");
        match docker::start_with(dir, driver) {
            Ok(d) => {
                return match run_ok(d.cli().arg("load").arg("-i").arg(docker_tar)) {
                    Ok(_) => Ok(d),
                    Err(e) => Err(format!("docker load of the base image: {e:#}")),
                }
            }
            Err(e) => errors.push(format!("{driver}: {e:#}")),
        }
    }
    Err(format!("dockerd did not start: {}", errors.join("; ")))
}

/// A single-quoted word for bash.
fn quote(s: impl AsRef<std::ffi::OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

fn script(lines: &[String]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("set -e\n{}", lines.join("\n")));
    cmd
}

/// `buildah bud` of the workload's Dockerfile (`base`: `oci:DIR:TAG`) into `driver` storage under
/// `root`, then `buildah push` to an OCI archive `out` (gzip layers, like lade's output) unless
/// None. `layers`: keep a cached image per step (`--layers`, for the no-op rebuild rows).
pub fn buildah(
    buildah: &Path,
    driver: &str,
    root: &Path,
    base: &str,
    context: &Path,
    out: Option<&Path>,
    layers: bool,
) -> Command {
    let storage = format!(
        "--storage-driver {driver} --root {} --runroot {}",
        quote(root.join("root")),
        quote(root.join("run"))
    );
    let b = quote(buildah);
    let layers = if layers { " --layers" } else { "" };
    let mut lines = vec![format!(
        "{b} {storage} bud --isolation chroot{layers} --build-arg BASE={} -t x {}",
        quote(base),
        quote(context)
    )];
    if let Some(out) = out {
        lines.push(format!(
            "{b} {storage} push x {}",
            quote(format!("oci-archive:{}", out.display()))
        ));
    }
    script(&lines)
}

/// A BuildKit build in the private dockerd from the image `base` (cold with `no_cache`: `docker
/// build --no-cache`), then `docker save` (uncompressed layers). `network`: `none`, or `host` for
/// a Dockerfile that needs the network (dockerd has no bridge).
pub fn buildkit(
    d: &Dockerd,
    base: &str,
    network: &str,
    no_cache: bool,
    context: &Path,
    out: &Path,
    bust: Option<&str>,
) -> Command {
    let docker = format!("{} -H {}", quote(DOCKER_CLI), quote(&d.host));
    let no_cache = if no_cache { " --no-cache" } else { "" };
    let bust = bust
        .map(|b| format!(" --build-arg {}", quote(format!("BUST={b}"))))
        .unwrap_or_default();
    let cmd = script(&[
        format!(
            "{docker} build{no_cache} --network {network} --build-arg BASE={base}{bust} -t x {}",
            quote(context)
        ),
        format!("{docker} save -o {} x", quote(out)),
    ]);
    with_docker_env(cmd, d)
}

/// `docker build` of `context` as `image` with `extra`, then `docker push` of it (the two-runner
/// rows: a registry on 127.0.0.1, which dockerd reaches over plain HTTP).
pub fn buildkit_push(
    d: &Dockerd,
    base: &str,
    network: &str,
    context: &Path,
    image: &str,
    extra: &[&str],
) -> Command {
    let docker = format!("{} -H {}", quote(DOCKER_CLI), quote(&d.host));
    let extra: Vec<String> = extra.iter().map(|a| quote(Path::new(a))).collect();
    let cmd = script(&[
        format!(
            "{docker} build --network {network} --build-arg BASE={base} {} -t {image} {}",
            extra.join(" "),
            quote(context)
        ),
        format!("{docker} push -q {image}"),
    ]);
    with_docker_env(cmd, d)
}

/// The docker CLI's environment for the private dockerd, with BuildKit.
fn with_docker_env(mut cmd: Command, d: &Dockerd) -> Command {
    cmd.env("DOCKER_BUILDKIT", "1")
        .env("DOCKER_CONFIG", &d.config_dir)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY");
    cmd
}

/// Before a cold BuildKit run: no build cache, no image `x`.
pub fn buildkit_clean(d: &Dockerd) -> Result<()> {
    run_ok(d.cli().args(["builder", "prune", "-af"]))?;
    let _ = d.cli().args(["image", "rm", "-f", "x"]).output();
    Ok(())
}

pub fn skopeo_copy(skopeo: &Path, archive: &Path, dest: &str) -> Command {
    let mut cmd = Command::new(skopeo);
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{dest}"));
    cmd
}

/// CPU time and peak RSS of a daemon over one run: the work of a BuildKit build happens in
/// dockerd, not in the docker CLI that wait4(2) measures.
pub struct DaemonUsage {
    pid: u32,
    cpu_before: Duration,
}

impl DaemonUsage {
    /// Resets the daemon's peak RSS (clear_refs 5, Linux ≥ 4.0) and notes its CPU time so far.
    pub fn start(pid: u32) -> Result<Self> {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .context("resetting dockerd's peak RSS")?;
        Ok(Self {
            pid,
            cpu_before: cpu_time(pid)?,
        })
    }

    /// The daemon's CPU time since [`DaemonUsage::start`] and its peak RSS in KiB since then.
    pub fn finish(self) -> Result<(Duration, u64)> {
        let cpu = cpu_time(self.pid)?.saturating_sub(self.cpu_before);
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")?;
        Ok((cpu, hwm))
    }
}

/// utime + stime of a process, all its threads.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        bail!("unexpected /proc/{pid}/stat: {stat:?}");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {i} of /proc/{pid}/stat"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // Fields 14 and 15 of stat(5), counted from 1 with the name as field 2.
    let t = ticks(11)? + ticks(12)?;
    Ok(Duration::from_millis(t * 1000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_survives_single_quotes() {
        assert_eq!(quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn cpu_time_of_self() {
        assert!(cpu_time(std::process::id()).is_ok());
    }
}
