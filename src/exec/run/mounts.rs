//! `RUN --mount` in the sandbox (BuildKit's `solver/llbsolver/mounts`): each plan
//! [`RunMount`] becomes a runtime mount of a host path, a tmpfs, or an environment variable,
//! with its mount point created in the root only when missing (and then left out of the
//! layer, as BuildKit ≥ 0.11 does).
//!
//! - `bind`: exec hands over the source as a layer of its own (the context's or a stage's
//!   files at `source`, copied like `COPY --link`), extracted once into the store; read-only,
//!   or with `rw` a snapshot over it whose writes are dropped after the step.
//! - `cache`: `<store>/run/cache/<sha256 of id (and of its from's digest)>[-N]`, never part
//!   of a layer or a key.
//!   `shared` holds a shared lock, `locked` an exclusive one (waiting for it), `private`
//!   takes the first instance no other step holds (a new, empty one when all are busy).
//!   `lade prune` removes the caches no build holds.
//! - `secret`: the value is read at the step (from [`Secrets`]) into a 0700 scratch
//!   directory in `/dev/shm` (else the store's tmp), bind-mounted read-only, removed after the
//!   step; or given as an environment variable (`env=`). Only the id reaches the plan, keys
//!   and messages.
//! - `ssh`: the agent socket of the id ([`SshAgents`]) bind-mounted at
//!   `/run/buildkit/ssh_agent.N`; the first ssh mount sets `SSH_AUTH_SOCK`.

use super::copy::copy_tree;
use super::executor::{sandbox, BindMount};
use super::layers::extracted;
use super::snapshot::Snapshot;
use super::{LowerLayer, RunError};
use crate::plan::{CacheSharing, RunMount};
use crate::store::Store;
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Where a build secret's value comes from (`lade build --secret`). Read only when a step
/// mounts it; never printed (`Debug` shows ids only).
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, SecretSource>);

/// Where the value is (a path or a variable's name: never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// The ids given, sorted (never the values).
    pub fn ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Adds one `--secret` value, docker's syntax: `id=ID[,type=file|env][,src|source=PATH]
    /// [,env=VAR]`; `id=ID` alone reads the environment variable ID. Relative paths are
    /// taken as given (against the current directory).
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
        for field in spec.split(',').filter(|f| !f.is_empty()) {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("--secret {spec}: expected key=value, got {field:?}"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "type" => kind = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                other => return Err(format!("--secret {spec}: unexpected key {other:?}")),
            }
        }
        let source = match (kind.as_deref(), src, env) {
            (Some("file") | None, Some(p), None) => SecretSource::File(p.into()),
            (Some("env") | None, None, Some(v)) | (Some("env"), Some(v), None) => {
                SecretSource::Env(v)
            }
            (Some("env") | None, None, None) => match &id {
                Some(i) => SecretSource::Env(i.clone()),
                None => return Err(format!("--secret {spec}: needs id=ID")),
            },
            (Some(t), _, _) if t != "file" && t != "env" => {
                return Err(format!("--secret {spec}: type must be file or env"))
            }
            _ => return Err(format!("--secret {spec}: give one of src=FILE or env=VAR")),
        };
        let id = match (id, &source) {
            (Some(i), _) => i,
            (None, SecretSource::File(p)) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("--secret {spec}: needs id=ID"))?,
            (None, SecretSource::Env(v)) => v.clone(),
        };
        if id.is_empty() {
            return Err(format!("--secret {spec}: needs id=ID"));
        }
        self.0.insert(id, source);
        Ok(())
    }

    /// Adds a secret already split into its id and source (compose's `secrets:`).
    pub fn insert(&mut self, id: String, source: SecretSource) {
        self.0.insert(id, source);
    }

    /// The value of `id`: None when no such secret was given (or its variable is unset).
    fn read(&self, id: &str) -> Option<Result<Vec<u8>, RunError>> {
        match self.0.get(id)? {
            SecretSource::File(p) => Some(std::fs::read(p).map_err(|e| {
                RunError::Sandbox(format!("secret {id}: cannot read {}: {e}", p.display()))
            })),
            SecretSource::Env(v) => std::env::var_os(v).map(|s| {
                use std::os::unix::ffi::OsStringExt;
                Ok(s.into_vec())
            }),
        }
    }
}

/// SSH agent sockets by id (`lade build --ssh default|ID=SOCKET`).
#[derive(Debug, Clone, Default)]
pub struct SshAgents(BTreeMap<String, PathBuf>);

impl SshAgents {
    /// Adds one `--ssh` value: `default` or `ID` alone is `$SSH_AUTH_SOCK`; `ID=PATH` a socket.
    /// Key files (BuildKit's `ID=KEY`) need an agent lade does not run: an error says so.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let (id, path) = match spec.split_once('=') {
            Some((id, paths)) => (id, PathBuf::from(paths.split(',').next().unwrap_or(""))),
            None => match std::env::var_os("SSH_AUTH_SOCK") {
                Some(s) if !s.is_empty() => (spec, PathBuf::from(s)),
                _ => {
                    return Err(format!(
                        "--ssh {spec}: SSH_AUTH_SOCK is not set (start ssh-agent, or pass \
                         {spec}=SOCKET)"
                    ))
                }
            },
        };
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => {
                return Err(format!(
                    "--ssh {spec}: {} is not an agent socket (key files are not supported: \
                     load the key into ssh-agent and pass its socket)",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("--ssh {spec}: {}: {e}", path.display())),
        }
        if id.is_empty() {
            return Err(format!("--ssh {spec}: empty id"));
        }
        self.0.insert(id.to_string(), path);
        Ok(())
    }
}

/// What the mounts of one step add to its process; dropping it releases them (snapshots of
/// `rw` binds, cache locks, secret files).
#[derive(Default)]
pub struct Mounted {
    pub binds: Vec<BindMount>,
    /// (target, size in bytes).
    pub tmpfs: Vec<(String, Option<u64>)>,
    pub env: Vec<String>,
    /// Mount points created in the root: left out of the diff.
    pub skip: HashSet<Vec<u8>>,
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

/// Prepares a writable snapshot over extracted directories (the runner's snapshotter).
pub type PrepareSnapshot<'a> = dyn Fn(&[PathBuf]) -> Result<Box<dyn Snapshot>, RunError> + 'a;

/// What [`mount_all`] needs besides the step.
pub struct MountCx<'a> {
    pub store: &'a Store,
    pub secrets: &'a Secrets,
    pub ssh: &'a SshAgents,
    pub snapshot: &'a PrepareSnapshot<'a>,
}

/// Sets up `mounts` (with `sources[i]` the layer of a bind's or cache's `from`) over the root.
pub fn mount_all(
    mounts: &[RunMount],
    sources: &[Option<LowerLayer>],
    root: &OwnedFd,
    workdir: &str,
    cx: &MountCx<'_>,
) -> Result<Mounted, RunError> {
    let mut out = Mounted::default();
    let mut ssh_count = 0;
    let mut caches: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (i, m) in mounts.iter().enumerate() {
        let source = sources.get(i).and_then(Option::as_ref);
        match m {
            RunMount::Bind {
                target, readwrite, ..
            } => {
                let layer = source.ok_or_else(|| {
                    RunError::Sandbox(format!("bind mount at {target}: no source layer given"))
                })?;
                let dir = extracted(cx.store, layer)?;
                let (host, keep): (PathBuf, Option<Box<dyn Snapshot>>) = if *readwrite {
                    let s = (cx.snapshot)(std::slice::from_ref(&dir))?;
                    (s.root().join(BIND_ENTRY), Some(s))
                } else {
                    (dir.join(BIND_ENTRY), None)
                };
                let is_dir = std::fs::symlink_metadata(&host)
                    .map_err(|e| sandbox(&host, e))?
                    .is_dir();
                let target = absolute(target, workdir);
                out.point(root, &target, is_dir)?;
                out.binds.push(BindMount {
                    source: host,
                    destination: target,
                    readonly: !readwrite,
                });
                if let Some(k) = keep {
                    out.keep.push(Box::new(k));
                }
            }
            RunMount::Tmpfs { target, size } => {
                let target = absolute(target, workdir);
                out.point(root, &target, true)?;
                out.tmpfs.push((target, *size));
            }
            RunMount::Cache {
                target,
                id,
                sharing,
                readonly,
                mode,
                uid,
                gid,
                ..
            } => {
                // BuildKit: the id defaults to the target as written.
                let id = id.clone().unwrap_or_else(|| target.clone());
                let target = absolute(target, workdir);
                let seed = match source {
                    Some(l) => Some(extracted(cx.store, l)?.join(BIND_ENTRY)),
                    None => None,
                };
                // As BuildKit's: a cache filled from a source is another cache than the
                // same id from another source (or none).
                let id = match source {
                    Some(l) => format!("{id}:{}", l.diff_id),
                    None => id,
                };
                let owner = (mode.unwrap_or(0o755), uid.unwrap_or(0), gid.unwrap_or(0));
                // The same id twice in one step: one directory (a second lock on it would
                // wait for this step itself), except for private, which gets its own.
                let held = (*sharing != CacheSharing::Private)
                    .then(|| caches.get(&id).cloned())
                    .flatten();
                let dir = match held {
                    Some(dir) => dir,
                    None => {
                        let (dir, lock) =
                            cache_dir(cx.store, &id, *sharing, owner, seed.as_deref())?;
                        out.keep.push(Box::new(lock));
                        caches.insert(id, dir.clone());
                        dir
                    }
                };
                out.point(root, &target, true)?;
                out.binds.push(BindMount {
                    source: dir,
                    destination: target,
                    readonly: *readonly,
                });
            }
            RunMount::Secret {
                id,
                target,
                env,
                required,
                mode,
                uid,
                gid,
            } => {
                let id = id.as_deref().or(env.as_deref()).unwrap_or_default();
                let value = match cx.secrets.read(id) {
                    Some(v) => v?,
                    None if *required => {
                        return Err(RunError::Sandbox(format!(
                            "secret {id} is required but was not given (lade build --secret \
                             id={id},src=FILE)"
                        )))
                    }
                    None => continue,
                };
                if let Some(var) = env {
                    let value = String::from_utf8(value).map_err(|_| {
                        RunError::Sandbox(format!("secret {id}: not UTF-8, cannot be env={var}"))
                    })?;
                    out.env.push(format!("{var}={value}"));
                    if target.is_none() {
                        continue;
                    }
                    // Both env and target: the file too (BuildKit mounts it as well).
                    let value = value.into_bytes();
                    out.secret_file(root, cx, id, target, value, (*mode, *uid, *gid), workdir)?;
                } else {
                    out.secret_file(root, cx, id, target, value, (*mode, *uid, *gid), workdir)?;
                }
            }
            RunMount::Ssh {
                id,
                target,
                required,
                ..
            } => {
                let Some(socket) = cx.ssh.0.get(id) else {
                    if *required {
                        return Err(RunError::Sandbox(format!(
                            "ssh agent {id} is required but was not given (lade build --ssh \
                             {id}=SOCKET)"
                        )));
                    }
                    continue;
                };
                let target = match target {
                    Some(t) => absolute(t, workdir),
                    None => format!("/run/buildkit/ssh_agent.{ssh_count}"),
                };
                if ssh_count == 0 {
                    out.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                ssh_count += 1;
                out.point(root, &target, false)?;
                out.binds.push(BindMount {
                    source: socket.clone(),
                    destination: target,
                    readonly: false,
                });
            }
        }
    }
    Ok(out)
}

/// The path under which exec puts a bind's source in its layer (the source itself: a file
/// or a directory's contents).
pub const BIND_ENTRY: &str = "m";

impl Mounted {
    fn point(&mut self, root: &OwnedFd, target: &str, is_dir: bool) -> Result<(), RunError> {
        if target == "/" {
            return Err(RunError::Sandbox(
                "invalid mount target \"/\": a mount cannot replace the root".into(),
            ));
        }
        let created = mount_point(root, target.trim_start_matches('/'), is_dir)
            .map_err(|e| sandbox(Path::new(target), e))?;
        self.skip.extend(created);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn secret_file(
        &mut self,
        root: &OwnedFd,
        cx: &MountCx<'_>,
        id: &str,
        target: &Option<String>,
        value: Vec<u8>,
        (mode, uid, gid): (Option<u32>, Option<u32>, Option<u32>),
        workdir: &str,
    ) -> Result<(), RunError> {
        let target = match target {
            Some(t) => absolute(t, workdir),
            None => format!("/run/secrets/{id}"),
        };
        // Memory, not disk, where the host has it: the value never touches the store.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            cx.store.root().join("tmp")
        };
        let dir =
            crate::store::scratch_dir_in(&base, "lade-secret-").map_err(|e| sandbox(&base, e))?;
        use std::os::unix::fs::PermissionsExt;
        // Traversable so that a non-root step user can reach its (0400 by default) file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(|e| sandbox(dir.path(), e))?;
        let file = dir.path().join("secret");
        let fd = rustix::fs::open(
            &file,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| sandbox(&file, e.into()))?;
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(uid.unwrap_or(0))),
            Some(rustix::fs::Gid::from_raw(gid.unwrap_or(0))),
        )
        .map_err(|e| sandbox(&file, e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode.unwrap_or(0o400) & 0o7777))
            .map_err(|e| sandbox(&file, e.into()))?;
        use std::io::Write;
        std::fs::File::from(fd)
            .write_all(&value)
            .map_err(|e| sandbox(&file, e))?;
        self.point(root, &target, false)?;
        self.binds.push(BindMount {
            source: file,
            destination: target,
            readonly: true,
        });
        self.keep.push(Box::new(dir));
        Ok(())
    }
}

/// `target` as an absolute, clean path (a relative one is taken against the workdir, as
/// BuildKit does); `..` never climbs above `/`.
fn absolute(target: &str, workdir: &str) -> String {
    let joined = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{workdir}/{target}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Creates the mount point `path` (relative to the root; a directory or, `is_dir` false, an
/// empty file) and its missing parents, keeping the mtimes of the directories they are made
/// in, and returns the paths created: the diff leaves them out. A path below a symlink or a
/// non-directory is left to the runtime (which resolves it inside the root).
pub fn mount_point(root: &OwnedFd, path: &str, is_dir: bool) -> std::io::Result<Vec<Vec<u8>>> {
    let mut created = Vec::new();
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
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
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o644),
                    )?;
                }
                super::runner::restore_mtime(&dir, &times)?;
                created.push(rel.as_bytes().to_vec());
                if !last {
                    dir = rustix::fs::openat(
                        &dir,
                        *c,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                }
            }
            // The file exists (a file where we need one), or a symlink / non-directory on
            // the way: nothing to create.
            Err(_) => break,
        }
    }
    Ok(created)
}

/// The directory of cache `id` for one step, and the lock that holds it until dropped.
fn cache_dir(
    store: &Store,
    id: &str,
    sharing: CacheSharing,
    (mode, uid, gid): (u32, u32, u32),
    seed: Option<&Path>,
) -> Result<(PathBuf, OwnedFd), RunError> {
    let base = cache_root(store);
    std::fs::create_dir_all(&base).map_err(|e| sandbox(&base, e))?;
    let name = crate::digest::Digest::of(id.as_bytes()).hex();
    let mut instance = 0usize;
    let (dir, lock) = loop {
        let dir = match instance {
            0 => base.join(&name),
            n => base.join(format!("{name}-{n}")),
        };
        let lock_path = lock_path(&dir);
        let lock = rustix::fs::open(
            &lock_path,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| sandbox(&lock_path, e.into()))?;
        let op = match sharing {
            CacheSharing::Shared => FlockOperation::LockShared,
            CacheSharing::Locked => FlockOperation::LockExclusive,
            CacheSharing::Private => FlockOperation::NonBlockingLockExclusive,
        };
        match rustix::fs::flock(&lock, op) {
            Ok(()) => break (dir, lock),
            Err(rustix::io::Errno::WOULDBLOCK) => instance += 1,
            Err(e) => return Err(sandbox(&lock_path, e.into())),
        }
    };
    if !dir.is_dir() {
        // Made aside and renamed into place: a step sharing the cache sees all of it or none.
        let tmp = crate::store::scratch_dir_in(&base, ".new-").map_err(|e| sandbox(&base, e))?;
        let fresh = tmp.path().join("d");
        std::fs::create_dir(&fresh).map_err(|e| sandbox(&fresh, e))?;
        if let Some(seed) = seed {
            copy_tree(seed, &fresh).map_err(|e| sandbox(seed, e))?;
        }
        std::os::unix::fs::chown(&fresh, Some(uid), Some(gid)).map_err(|e| sandbox(&fresh, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| sandbox(&fresh, e))?;
        match std::fs::rename(&fresh, &dir) {
            Ok(()) => {}
            // Another build made it first (shared): take theirs.
            Err(_) if dir.is_dir() => {}
            Err(e) => return Err(sandbox(&dir, e)),
        }
    }
    Ok((dir, lock))
}

fn cache_root(store: &Store) -> PathBuf {
    store.root().join("run").join("cache")
}

fn lock_path(dir: &Path) -> PathBuf {
    let mut p = dir.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Removes every cache mount no running build holds; returns how many.
pub fn prune_caches(store: &Store) -> std::io::Result<usize> {
    let base = cache_root(store);
    let entries = match std::fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut count = 0;
    for e in entries {
        let path = e?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || name.ends_with(".lock") || !path.is_dir() {
            continue;
        }
        let lock_path = lock_path(&path);
        let lock = rustix::fs::open(
            &lock_path,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        // A build holds it: keep it.
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        std::fs::remove_dir_all(&path)?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_and_clean() {
        assert_eq!(absolute("/a/./b/", "/w"), "/a/b");
        assert_eq!(absolute("cache", "/work"), "/work/cache");
        assert_eq!(absolute("../../../x", "/w"), "/x");
    }

    #[test]
    fn secret_flags_follow_docker() {
        let mut s = Secrets::default();
        s.add("id=tok,src=/run/tok").unwrap();
        s.add("id=a,type=env,env=A_VAR").unwrap();
        s.add("id=b,env=B_VAR").unwrap();
        s.add("id=c").unwrap();
        s.add("src=/x/key.pem").unwrap();
        assert_eq!(s.0["tok"], SecretSource::File("/run/tok".into()));
        assert_eq!(s.0["a"], SecretSource::Env("A_VAR".into()));
        assert_eq!(s.0["b"], SecretSource::Env("B_VAR".into()));
        assert_eq!(s.0["c"], SecretSource::Env("c".into()));
        assert_eq!(s.0["key.pem"], SecretSource::File("/x/key.pem".into()));
        assert!(s.add("id=x,type=vault,src=/y").is_err());
        assert!(s.add("id=x,colour=red").is_err());
        assert!(s.add("id=x,src=/a,env=B").is_err());
        // Debug names ids, never where values come from.
        assert_eq!(format!("{s:?}"), r#"{"a", "b", "c", "key.pem", "tok"}"#);
    }

    #[test]
    fn ssh_flags_need_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mut a = SshAgents::default();
        a.add(&format!("default={}", sock.display())).unwrap();
        assert_eq!(a.0["default"], sock);
        let file = dir.path().join("id_ed25519");
        std::fs::write(&file, "key").unwrap();
        let err = a.add(&format!("git={}", file.display())).unwrap_err();
        assert!(err.contains("is not an agent socket"), "{err}");
    }
}
