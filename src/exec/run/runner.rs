//! [`SandboxRunner`]: the [`StepRunner`] that extracts the lowers, prepares a snapshot,
//! resolves USER, creates WORKDIR and the runtime's mount points, runs the command with an
//! [`Executor`] and diffs the snapshot to layer entries.

use super::copy::Copy;
use super::diff::DiffOptions;
use super::executor::{BindMount, Executor, OciRuntime, ProcessSpec};
use super::layers::extracted;
use super::mounts::{mount_all, MountCx, Secrets, SshAgents};
use super::oci::{HOSTNAME, MOUNT_DIRS, MOUNT_FILES};
use super::snapshot::{Overlay, Snapshot, Snapshotter};
use super::user::resolve_user;
use super::{RunError, RunInput, RunOutput, StepRunner};
use crate::store::Store;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::collections::HashSet;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Which snapshotter a [`SandboxRunner`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotterChoice {
    /// overlayfs, or the copying snapshotter when overlayfs cannot be mounted (said once in
    /// the progress output).
    #[default]
    Auto,
    Overlay,
    Copy,
}

/// Runs RUN steps in an OCI runtime over snapshots in the store.
#[derive(Debug, Default)]
pub struct SandboxRunner {
    runtime: Option<PathBuf>,
    snapshotter: SnapshotterChoice,
    /// `Auto` after the first overlay failure: the copying snapshotter from then on.
    overlay_failed: OnceLock<String>,
    /// The fallback was named in a step's output (once per build).
    fallback_named: std::sync::atomic::AtomicBool,
    /// `--secret` and `--ssh`: what `RUN --mount=type=secret|ssh` can mount.
    secrets: Secrets,
    ssh: SshAgents,
    /// Foreign platforms whose emulator was named (once per build).
    platforms_named: Mutex<HashSet<String>>,
}

const TAIL_LINES: usize = 10;

impl SandboxRunner {
    /// `runtime`: the OCI runtime binary (`--runtime`); `None` finds crun, else runc, on PATH.
    pub fn new(runtime: Option<PathBuf>, snapshotter: SnapshotterChoice) -> SandboxRunner {
        SandboxRunner {
            runtime,
            snapshotter,
            overlay_failed: OnceLock::new(),
            fallback_named: Default::default(),
            secrets: Secrets::default(),
            ssh: SshAgents::default(),
            platforms_named: Default::default(),
        }
    }

    /// The build secrets and ssh agents RUN mounts may use.
    pub fn with_mounts(mut self, secrets: Secrets, ssh: SshAgents) -> SandboxRunner {
        self.secrets = secrets;
        self.ssh = ssh;
        self
    }

    fn prepare(&self, lowers: &[PathBuf], store: &Store) -> Result<Box<dyn Snapshot>, RunError> {
        match self.snapshotter {
            SnapshotterChoice::Overlay => Overlay.prepare(lowers, store),
            SnapshotterChoice::Copy => Copy.prepare(lowers, store),
            SnapshotterChoice::Auto => {
                if self.overlay_failed.get().is_none() {
                    match Overlay.prepare(lowers, store) {
                        Ok(s) => return Ok(s),
                        Err(e) => {
                            let reason = e.to_string();
                            tracing::info!("snapshotter: copy ({reason})");
                            let _ = self.overlay_failed.set(reason);
                        }
                    }
                }
                Copy.prepare(lowers, store)
            }
        }
    }
}

impl StepRunner for SandboxRunner {
    fn check_platform(&self, platform: &crate::image::Platform) -> Result<Option<String>, String> {
        let dir = super::binfmt::default_dir();
        match super::binfmt::support(platform, &crate::image::Platform::host(), &dir)? {
            super::binfmt::Support::Native => Ok(None),
            super::binfmt::Support::Emulated(h) => {
                let mut said = self
                    .platforms_named
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                Ok(said.insert(platform.to_string()).then(|| {
                    format!(
                        "RUN for {platform}: emulated through binfmt_misc handler {} ({})",
                        h.name, h.interpreter
                    )
                }))
            }
        }
    }

    fn run(&self, input: &RunInput<'_>, store: &Store) -> Result<RunOutput, RunError> {
        // Root, or root of the user namespace a rootless build runs in (`userns`).
        if !rustix::process::geteuid().is_root() {
            return Err(RunError::Sandbox(super::userns::why_not()));
        }
        let runtime = OciRuntime::new(self.runtime.as_deref(), store)?;
        let lowers = input
            .lowers
            .iter()
            .map(|l| extracted(store, l))
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot = self.prepare(&lowers, store)?;
        if let Some(reason) = self.overlay_failed.get() {
            if !self
                .fallback_named
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                (input.output)(format!("lade: snapshotter: copy ({reason})\n").as_bytes());
            }
        }
        let root = snapshot.root().to_path_buf();
        let root_fd = rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| sandbox(&root, e))?;

        let passwd = read_in_root(&root_fd, "etc/passwd");
        let group = read_in_root(&root_fd, "etc/group");
        let user = resolve_user(&input.user, passwd.as_deref(), group.as_deref())
            .map_err(|e| RunError::Sandbox(format!("USER {}: {e}", input.user)))?;

        let workdir = if input.workdir.is_empty() {
            "/"
        } else {
            input.workdir.as_str()
        };
        mkdir_in_root(&root_fd, workdir).map_err(|e| sandbox(Path::new(workdir), e))?;
        let mut skip = mount_points(&root_fd).map_err(|e| sandbox(&root, e))?;
        let prepare = |dirs: &[PathBuf]| self.prepare(dirs, store);
        let mounted = mount_all(
            &input.step.mounts,
            &input.mount_sources,
            &root_fd,
            workdir,
            &MountCx {
                store,
                secrets: &self.secrets,
                ssh: &self.ssh,
                snapshot: &prepare,
            },
        )?;
        skip.extend(mounted.skip.iter().cloned());

        // Heredoc scripts (`RUN <<EOF` with a shebang) are files the step reads, bind-mounted
        // read-only from a scratch directory: never part of the root, so never of the layer.
        let files = step_files(input, store)?;
        let mut env = step_env(&input.env, &user.home);
        env.extend(mounted.env.iter().cloned());
        let mut mounts = files.1;
        mounts.extend(mounted.binds.iter().cloned());
        let spec = ProcessSpec {
            args: input.step.command.clone(),
            env,
            cwd: workdir.to_string(),
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids.clone(),
            hostname: HOSTNAME.to_string(),
            network: input.step.network,
            mounts,
            tmpfs: mounted.tmpfs.clone(),
            extra_hosts: input.extra_hosts.clone(),
            insecure: input.step.insecure,
        };
        let recent = Mutex::new(Vec::<u8>::new());
        let sink = |chunk: &[u8]| {
            (input.output)(chunk);
            let mut r = recent.lock().unwrap_or_else(|e| e.into_inner());
            r.extend_from_slice(chunk);
            if r.len() > 16 * 1024 {
                let cut = r.len() - 8 * 1024;
                r.drain(..cut);
            }
        };
        let code = runtime.run(&root, &spec, &sink)?;
        if code != 0 {
            let r = recent.into_inner().unwrap_or_else(|e| e.into_inner());
            return Err(RunError::Failed {
                command: input.step.command.join(" ").trim_end().to_string(),
                code,
                tail: tail(&r, TAIL_LINES),
            });
        }
        drop(root_fd);
        let entries = snapshot.diff(&DiffOptions {
            skip,
            source_date_epoch: input.source_date_epoch,
        })?;
        // The mounts (rw snapshots, cache locks, secret files) go before the root's snapshot.
        drop(mounted);
        Ok(RunOutput {
            entries,
            keep: Box::new(snapshot),
        })
    }
}

/// Writes the step's [`crate::plan::RunFile`]s into a scratch directory of the store (kept
/// alive by the returned guard) and returns their read-only bind mounts.
fn step_files(
    input: &RunInput<'_>,
    store: &Store,
) -> Result<(Option<crate::store::OwnedTempDir>, Vec<BindMount>), RunError> {
    if input.step.files.is_empty() {
        return Ok((None, Vec::new()));
    }
    let tmp = store.root().join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| sandbox(&tmp, e))?;
    let dir = crate::store::scratch_dir_in(&tmp, "run-files-").map_err(|e| sandbox(&tmp, e))?;
    // The runtime reads the files as the step's user: the directory must be traversable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| sandbox(dir.path(), e))?;
    let mut mounts = Vec::new();
    for (i, f) in input.step.files.iter().enumerate() {
        let host = dir.path().join(format!("f{i}"));
        std::fs::write(&host, f.content.as_bytes()).map_err(|e| sandbox(&host, e))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(|e| sandbox(&host, e))?;
        mounts.push(BindMount {
            source: host,
            destination: f.path.clone(),
            readonly: true,
        });
    }
    Ok((Some(dir), mounts))
}

fn sandbox(p: &Path, e: impl Into<std::io::Error>) -> RunError {
    super::executor::sandbox(p, e.into())
}

/// The last `n` lines of `bytes` (a partial first line dropped when it was cut).
pub fn tail(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// The step's environment: `env` plus `PATH` and `HOME` where it lacks them. No `HOSTNAME`:
/// BuildKit sets the hostname (`buildkitsandbox`) but not that variable (docker run does).
pub fn step_env(env: &[String], home: &str) -> Vec<String> {
    let has = |k: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
    };
    let mut out = env.to_vec();
    if !has("PATH") {
        out.push(format!("PATH={}", crate::image::DEFAULT_PATH));
    }
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// Opens `rel` inside the root as if the root were `/` (symlinks cannot leave it).
fn open_in_root(root: &OwnedFd, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

fn read_in_root(root: &OwnedFd, rel: &str) -> Option<String> {
    let fd = open_in_root(root, rel, OFlags::RDONLY).ok()?;
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Creates the directory `path` (absolute, in the image) and missing parents inside the root,
/// following symlinks only within it.
fn mkdir_in_root(root: &OwnedFd, path: &str) -> std::io::Result<()> {
    let mut prefix = String::new();
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let parent = if prefix.is_empty() {
            root.try_clone()?
        } else {
            open_in_root(root, &prefix, OFlags::RDONLY | OFlags::DIRECTORY)?
        };
        match rustix::fs::mkdirat(&parent, c, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(c);
    }
    if !prefix.is_empty() {
        open_in_root(root, &prefix, OFlags::RDONLY | OFlags::DIRECTORY)?;
    }
    Ok(())
}

/// Creates the mount points the runtime needs that the root lacks (`/proc`, `/sys`, `/dev`,
/// the `/etc` files), keeping the mtimes of the directories they are created in, and returns
/// the paths created: they are left out of the diff. A path below a symlink is left to the
/// runtime (which resolves it inside the root).
fn mount_points(root: &OwnedFd) -> std::io::Result<HashSet<Vec<u8>>> {
    let mut created = HashSet::new();
    for (path, is_dir) in MOUNT_DIRS
        .iter()
        .map(|p| (*p, true))
        .chain(MOUNT_FILES.iter().map(|p| (*p, false)))
    {
        let comps: Vec<&str> = path.split('/').collect();
        let mut dir = root.try_clone()?;
        let mut rel = String::new();
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(c);
            let next = rustix::fs::openat(
                &dir,
                *c,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            match next {
                Ok(fd) => dir = fd,
                Err(rustix::io::Errno::NOENT) => {
                    let times = rustix::fs::fstat(&dir)?;
                    if is_dir || !last {
                        rustix::fs::mkdirat(&dir, *c, Mode::from_raw_mode(0o755))?;
                    } else {
                        rustix::fs::openat(
                            &dir,
                            *c,
                            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                            Mode::from_raw_mode(0o644),
                        )?;
                    }
                    restore_mtime(&dir, &times)?;
                    created.insert(rel.as_bytes().to_vec());
                    if !last {
                        dir = rustix::fs::openat(
                            &dir,
                            *c,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                            Mode::empty(),
                        )?;
                    }
                }
                // The file exists (a file where we need one), or a symlink / non-directory on
                // the way: nothing to create.
                Err(_) => break,
            }
        }
    }
    Ok(created)
}

pub(super) fn restore_mtime(dir: impl AsFd, st: &rustix::fs::Stat) -> std::io::Result<()> {
    use rustix::fs::{Timespec, Timestamps};
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rustix::fs::futimens(dir, &t)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let out = b"1\n2\n\n3\n4\n";
        assert_eq!(tail(out, 2), ["3", "4"]);
        assert_eq!(tail(out, 10), ["1", "2", "3", "4"]);
    }

    #[test]
    fn env_gets_defaults_only_where_missing() {
        let env = step_env(&["PATH=/x".into(), "A=1".into()], "/home/app");
        assert_eq!(env, ["PATH=/x", "A=1", "HOME=/home/app"]);
        let env = step_env(&["HOME=/h".into()], "/root");
        assert!(env.contains(&"HOME=/h".to_string()));
        assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin")));
    }
}
