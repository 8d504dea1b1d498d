//! [`Executor`]: run one process in a prepared root filesystem (BuildKit's
//! `executor.Executor`), and [`OciRuntime`], the implementation over `crun` or `runc`.
//!
//! Each run gets a bundle directory under `<store>/run/bundles/` (config.json and the
//! `/etc` files) and a unique container id; the runtime keeps its state under
//! `<store>/run/state` (`--root`), so two lade processes, or a systemd-managed runtime, never
//! see each other's containers. While the container lives, SIGINT/SIGTERM runs
//! `<runtime> delete --force` on it before lade exits.

use super::hosts::ExtraHost;
use super::oci;
use super::RunError;
use crate::plan::RunNetwork;
use crate::store::{interrupt, Store};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// A host path bind-mounted into the process's root (for RUN mounts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub readonly: bool,
}

/// What to run and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE`, complete (HOSTNAME, HOME and PATH included by the caller).
    pub env: Vec<String>,
    /// Absolute, existing in the root.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub network: RunNetwork,
    pub mounts: Vec<BindMount>,
    /// `RUN --mount=type=tmpfs`: (target, size in bytes).
    pub tmpfs: Vec<(String, Option<u64>)>,
    /// `--add-host` lines of `/etc/hosts`.
    pub extra_hosts: Vec<ExtraHost>,
    /// `RUN --security=insecure` (allowed by `--allow security.insecure`): BuildKit's insecure
    /// mode, see [`oci::config`].
    pub insecure: bool,
}

/// Runs a process in a root filesystem and returns its exit code (128 + signal when killed).
/// Output (stdout and stderr merged) goes to `output` as it comes.
pub trait Executor: Send + Sync {
    fn run(
        &self,
        root: &Path,
        spec: &ProcessSpec,
        output: &(dyn Fn(&[u8]) + Sync),
    ) -> Result<i32, RunError>;
}

/// An OCI runtime binary (crun or runc) driven with `run --bundle`.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    binary: PathBuf,
    state: PathBuf,
    bundles: PathBuf,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl OciRuntime {
    /// The runtime at `binary` (`None`: `crun`, else `runc`, found on PATH), with its state
    /// under `store`.
    pub fn new(binary: Option<&Path>, store: &Store) -> Result<OciRuntime, RunError> {
        let binary = match binary {
            Some(b) if b.is_file() => b.to_path_buf(),
            Some(b) => {
                return Err(RunError::Sandbox(format!(
                    "OCI runtime {} does not exist: install crun (Debian package `crun`) or \
                     runc (`runc`), or pass --runtime with the path of one",
                    b.display()
                )))
            }
            None => default_runtime()?,
        };
        let run = store.root().join("run");
        let state = run.join("state");
        let bundles = run.join("bundles");
        for d in [&state, &bundles] {
            std::fs::create_dir_all(d).map_err(|e| sandbox(d, e))?;
        }
        Ok(OciRuntime {
            binary,
            state,
            bundles,
        })
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

pub(crate) fn sandbox(path: &Path, e: std::io::Error) -> RunError {
    RunError::Sandbox(format!("{}: {e}", path.display()))
}

/// crun, else runc. crun 1.x refuses to run on a host with hybrid cgroups whose v2 hierarchy
/// has controllers ("cgroups in hybrid mode not supported"); runc copes, so it is taken there.
fn default_runtime() -> Result<PathBuf, RunError> {
    let crun = find_on_path("crun");
    let runc = find_on_path("runc");
    let hybrid = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .map(|c| !c.trim().is_empty())
        .unwrap_or(false);
    match (crun, runc) {
        (Some(_), Some(runc)) if hybrid => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!("runtime: runc (crun does not support this host's hybrid cgroups)")
            });
            Ok(runc)
        }
        (Some(crun), _) => Ok(crun),
        (None, Some(runc)) => Ok(runc),
        (None, None) => Err(RunError::NoRuntime),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| crate::image::DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Stops and deletes the containers of lade processes that died without cleaning up
/// (SIGKILL): container ids are `lade-PID-N`, and a container whose PID is gone is stale.
/// Their bundles go too (unlocked `b-*` directories). Returns how many were removed.
pub fn sweep_stale(store: &Store) -> usize {
    let run = store.root().join("run");
    let state = run.join("state");
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(&state) {
        let stale: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| {
                let pid = id
                    .strip_prefix("lade-")
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<i32>().ok());
                pid.is_some_and(|p| {
                    p != std::process::id() as i32 && !Path::new(&format!("/proc/{p}")).exists()
                })
            })
            .collect();
        if !stale.is_empty() {
            if let Ok(binary) = default_runtime() {
                for id in stale {
                    if force_delete(&binary, &state, &id) {
                        removed += 1;
                    }
                }
            }
        }
    }
    removed
        + crate::store::sweep(
            &run.join("bundles"),
            &[crate::store::TempNames {
                prefix: "b-",
                suffix: "",
                dirs: true,
            }],
        )
}

/// `RUNTIME --root STATE delete --force ID`: kills the container's processes and removes it.
fn force_delete(binary: &Path, state: &Path, id: &str) -> bool {
    Command::new(binary)
        .arg("--root")
        .arg(state)
        .args(["delete", "--force"])
        .arg(id)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Executor for OciRuntime {
    fn run(
        &self,
        root: &Path,
        spec: &ProcessSpec,
        output: &(dyn Fn(&[u8]) + Sync),
    ) -> Result<i32, RunError> {
        let bundle = crate::store::scratch_dir_in(&self.bundles, "b-")
            .map_err(|e| sandbox(&self.bundles, e))?;
        let b = bundle.path();
        let write = |name: &str, bytes: &[u8]| {
            let p = b.join(name);
            std::fs::write(&p, bytes).map_err(|e| sandbox(&p, e))
        };
        write(
            "hosts",
            super::hosts::hosts_file(&spec.hostname, &spec.extra_hosts).as_bytes(),
        )?;
        write("hostname", format!("{}\n", spec.hostname).as_bytes())?;
        write("resolv.conf", &oci::resolv_conf())?;
        let mut config = oci::config(spec, root, b);
        if crate::layer::in_user_namespace() {
            oci::for_user_namespace(&mut config);
        }
        write(
            "config.json",
            &serde_json::to_vec(&config).map_err(|e| RunError::Sandbox(e.to_string()))?,
        )?;
        // The bundle is 0700 (scratch); the process may run as another user but only the
        // runtime (root) reads the bundle, and the bind mounts are of files inside it.
        let id = format!(
            "lade-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let (mut reader, writer) = std::io::pipe().map_err(|e| sandbox(b, e))?;
        let writer2 = writer.try_clone().map_err(|e| sandbox(b, e))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.state)
            .arg("run")
            .arg("--bundle")
            .arg(b)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        let guard = {
            let binary = self.binary.clone();
            let state = self.state.clone();
            let id = id.clone();
            interrupt::on_interrupt(move || {
                force_delete(&binary, &state, &id);
            })
        };
        let mut child = cmd.spawn().map_err(|e| {
            RunError::Sandbox(format!("cannot start {}: {e}", self.binary.display()))
        })?;
        // The parent's copies of the write end are gone with `cmd`: EOF comes when the
        // container (and everything it left running) closes its output.
        drop(cmd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => output(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(sandbox(b, e)),
            }
        }
        let status = child.wait().map_err(|e| sandbox(b, e))?;
        drop(guard);
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        tracing::debug!(id, code, "container exited");
        Ok(code)
    }
}
