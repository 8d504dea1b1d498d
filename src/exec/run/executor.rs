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
use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

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
    flavor: Flavor,
}

/// Which runtime a binary is, for the options only one of them has.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flavor {
    Runc,
    /// crun, started in a mount namespace of its own whose `/sys/fs/cgroup` shows only the
    /// devices hierarchy `devices` (see [`crun_cgroups`]); `None`: crun as the host is.
    Crun {
        devices: Option<Arc<CString>>,
    },
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
        let flavor = flavor_of(&binary);
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
            flavor,
        })
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `RUNTIME --root STATE`, set up to run on this host (see [`Flavor::Crun`]).
    fn command(&self) -> Command {
        runtime_command(&self.binary, &self.flavor, &self.state)
    }
}

/// crun by its file name (`crun`, `crun-1.8`...), else runc's command line.
fn flavor_of(binary: &Path) -> Flavor {
    let crun = binary
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("crun"));
    if !crun {
        return Flavor::Runc;
    }
    static DEVICES: OnceLock<Option<Arc<CString>>> = OnceLock::new();
    let devices = DEVICES.get_or_init(|| {
        // In a user namespace the host's mounts are locked: nothing can be unmounted.
        if crate::layer::in_user_namespace() {
            return None;
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        crun_cgroups(&info).map(Arc::new)
    });
    Flavor::Crun {
        devices: devices.clone(),
    }
}

/// Where crun finds cgroups, from `/proc/self/mountinfo`: on a cgroup v1 or hybrid host whose
/// `/sys/fs/cgroup` is a tmpfs of hierarchies, the mount point of the `devices` hierarchy
/// (directly below it), which is all crun is shown (`None`: a v2 host, or another layout).
///
/// crun 1.x refuses a hybrid host whose v2 hierarchy holds controllers ("cgroups in hybrid
/// mode not supported"), and a RUN sets no limits: creating and removing its cgroup in ten
/// hierarchies was most of crun's start time. The devices hierarchy stays: docker's device
/// cgroup keeps a device node in a layer or made by the step closed. The step stays in lade's
/// own cgroups for the others, as a buildah chroot step does. Hiding works by a fresh tmpfs on
/// `/sys/fs/cgroup` (unmounting the hierarchies alone would show the tmpfs's directories below
/// them, where crun would then make directories that nobody removes).
fn crun_cgroups(mountinfo: &str) -> Option<CString> {
    use std::os::unix::ffi::OsStrExt;
    let root = Path::new("/sys/fs/cgroup");
    let mut root_is_tmpfs = false;
    let mut devices = None;
    for line in mountinfo.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = mount.split(' ').nth(4) else {
            continue;
        };
        let point = super::snapshot::unescape_mountinfo(point);
        let mut fs = fs.split(' ');
        let (Some(fstype), Some(_), Some(options)) = (fs.next(), fs.next(), fs.next()) else {
            continue;
        };
        if point == root {
            // A later mount on the same point hides the earlier one.
            root_is_tmpfs = fstype == "tmpfs";
            devices = None;
        } else if fstype == "cgroup"
            && point.parent() == Some(root)
            && options.split(',').any(|o| o == "devices")
        {
            devices = Some(point);
        }
    }
    let devices = devices.filter(|_| root_is_tmpfs)?;
    CString::new(devices.as_os_str().as_bytes()).ok()
}

fn runtime_command(binary: &Path, flavor: &Flavor, state: &Path) -> Command {
    let mut cmd = Command::new(binary);
    if let Flavor::Crun {
        devices: Some(devices),
    } = flavor
    {
        use std::os::unix::process::CommandExt;
        let devices = Arc::clone(devices);
        // SAFETY: between fork and exec the closure only makes system calls on data made
        // before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || crun_namespace(&devices));
        }
    }
    cmd.arg("--root").arg(state);
    cmd
}

/// In the forked child before crun runs: a private mount namespace (receiving the host's
/// mounts, sending none back) whose `/sys/fs/cgroup` is an empty tmpfs with only the devices
/// hierarchy mounted back at `devices` (see [`crun_cgroups`]). Makes no allocation.
fn crun_namespace(devices: &CString) -> std::io::Result<()> {
    use rustix::mount::*;
    // SAFETY: a new mount namespace for this single-threaded child, which execs next.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
    mount_change(
        c"/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )?;
    let kept = open_tree(
        rustix::fs::CWD,
        devices.as_c_str(),
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    unmount(c"/sys/fs/cgroup", UnmountFlags::DETACH)?;
    mount(
        c"tmpfs",
        c"/sys/fs/cgroup",
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        c"mode=755",
    )?;
    rustix::fs::mkdirat(
        rustix::fs::CWD,
        devices.as_c_str(),
        rustix::fs::Mode::from_raw_mode(0o755),
    )?;
    move_mount(
        &kept,
        c"",
        rustix::fs::CWD,
        devices.as_c_str(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

pub(crate) fn sandbox(path: &Path, e: std::io::Error) -> RunError {
    RunError::Sandbox(format!("{}: {e}", path.display()))
}

/// crun, else runc: crun (C, not a Go binary that re-executes itself) with its cgroup in one
/// hierarchy ([`crun_cgroups`]) starts a container in about half of runc's time. Where the
/// cgroups cannot be hidden from it (rootless: the host's mounts are locked; another layout)
/// crun 1.x refuses a hybrid cgroup host ("cgroups in hybrid mode not supported"): runc there.
fn default_runtime() -> Result<PathBuf, RunError> {
    let crun = find_on_path("crun");
    let runc = find_on_path("runc");
    let hybrid = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .map(|c| !c.trim().is_empty())
        .unwrap_or(false);
    match (crun, runc) {
        (Some(crun), Some(runc))
            if hybrid && matches!(flavor_of(&crun), Flavor::Crun { devices: None }) =>
        {
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
    runtime_command(binary, &flavor_of(binary), state)
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
        let mut cmd = self.command();
        cmd.arg("run")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crun_is_shown_only_the_devices_hierarchy() {
        let hybrid = "\
29 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 29 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
34 29 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
35 29 0:32 / /sys/fs/cgroup/my\\040devices rw,nosuid shared:15 - cgroup cgroup rw,devices
36 29 0:33 / /sys/fs/cgroup/cpuset rw,nosuid shared:16 - cgroup cgroup rw,cpuset
38 23 0:35 / /work rw - ext4 /dev/vda rw
";
        assert_eq!(
            crun_cgroups(hybrid).unwrap().to_str().unwrap(),
            "/sys/fs/cgroup/my devices"
        );
        // A v2-only host: nothing to hide.
        let v2 = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(crun_cgroups(v2), None);
        // Hierarchies without a tmpfs above them, or a devices hierarchy elsewhere: as is.
        let bare = "35 23 0:32 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n";
        assert_eq!(crun_cgroups(bare), None);
        let elsewhere = "\
29 23 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw
35 29 0:32 / /cgroup/devices rw - cgroup cgroup rw,devices
";
        assert_eq!(crun_cgroups(elsewhere), None);
    }

    #[test]
    fn crun_is_known_by_its_file_name() {
        assert_eq!(flavor_of(Path::new("/usr/sbin/runc")), Flavor::Runc);
        assert_eq!(flavor_of(Path::new("/opt/bin/youki")), Flavor::Runc);
        assert!(matches!(
            flavor_of(Path::new("/usr/bin/crun")),
            Flavor::Crun { .. }
        ));
    }
}
