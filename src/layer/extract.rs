//! Safe layer extraction into a root directory.
//!
//! Every member name is cleaned lexically (`..` cannot climb above the root) and resolved
//! *inside* the root one component at a time with `openat(O_PATH | O_NOFOLLOW)`: symlinks
//! met on the way are read and their targets spliced in, with absolute targets restarting at
//! the root and `..` never leaving it — the semantics of `openat2(RESOLVE_IN_ROOT)`, done in
//! user space so it also works where `openat2` is unavailable or filtered. The final
//! component is never followed: it is created, replaced or removed with `*at` calls on the
//! parent directory's descriptor. Hard-link targets are resolved the same way, so they can
//! only name files inside the root.
//!
//! Structurally: every call that creates, removes or changes something takes a directory
//! descriptor resolved beneath the root and a [`Name`], a single component that cannot be
//! empty, `.` or `..` (checked when it is made). So no operation can address the root itself
//! or anything above it, whatever a member or whiteout is called. A whiteout whose hidden
//! name is not a valid `Name` (`.wh.`, `.wh..`, `.wh...`) rejects the layer.
//!
//! Layer semantics (OCI image spec, "Applying changesets"): `.wh.<name>` removes `<name>`
//! from lower layers, `.wh..wh..opq` removes everything lower layers put in its directory;
//! both never touch what the same layer extracts. Later members replace earlier ones of any
//! type (file ↔ directory ↔ symlink), as containerd does. Directory modes, owners and mtimes
//! are applied after all members (deepest first), so read-only directories can still be
//! filled and children do not disturb their parents' mtimes.
//!
//! No recursion that a layer controls: resolution, removal and opaque whiteouts walk with
//! explicit stacks, and hold one descriptor per walk (not one per level). Member names longer
//! than [`MAX_PATH_LEN`] bytes or deeper than [`MAX_DEPTH`] components are refused.
//!
//! FIFOs are always created; character and block devices only when `allow_devices` is set
//! and the process runs as root, otherwise they are skipped with one warning per process
//! (BuildKit rootless does the same).
//!
//! Not supported (documented limits): extracting into directories of *lower* layers that
//! are not writable by a non-root user; GNU sparse members; xattrs are applied best effort
//! (errors like `EPERM`/`ENOTSUP` ignored) and never on symlinks.

use super::reader::{TarEntryInfo, TarKind, TarReader};
use super::LayerError;
use crate::path::ImagePath;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Options for [`super::extract_layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// Create character/block device nodes (only effective when running as root);
    /// otherwise they are skipped. FIFOs are always created.
    pub allow_devices: bool,
    /// chown members to the uid/gid in the layer (needs root or a user namespace).
    pub preserve_owner: bool,
    /// Keep whiteouts in overlayfs form instead of applying them, for a layer extracted alone
    /// into an empty directory that becomes an overlay lowerdir: `.wh.<name>` becomes a 0:0
    /// character device `<name>`, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its
    /// directory. Overlay xattrs carried by the layer itself are dropped (a layer must not
    /// steer overlayfs). Needs root (mknod of the whiteout device).
    pub overlay_whiteouts: bool,
}

const OPAQUE: &[u8] = b".wh..wh..opq";
const WH: &[u8] = b".wh.";
const MAX_SYMLINKS: usize = 40;
/// Longest member name accepted (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Most components a member name may have. Far beyond any real image, low enough that every
/// consumer of an extracted tree (walks, removal) stays well inside its stack.
pub const MAX_DEPTH: usize = 1024;

/// Set once a device node was skipped, so the warning is printed once per process.
static DEVICES_SKIPPED: AtomicBool = AtomicBool::new(false);

/// One directory entry name: not empty, not `.` or `..`, no `/` and no NUL. The only kind
/// of name the mutating `*at` calls below accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name(CString);

/// Why bytes are not a [`Name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadName {
    Empty,
    Dot,
    DotDot,
    Slash,
    Nul,
}

impl BadName {
    fn reason(self) -> &'static str {
        match self {
            BadName::Empty => "an empty name",
            BadName::Dot => "\".\"",
            BadName::DotDot => "\"..\"",
            BadName::Slash => "a name containing '/'",
            BadName::Nul => "a name containing NUL",
        }
    }
}

impl From<BadName> for io::Error {
    fn from(b: BadName) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, b.reason())
    }
}

impl Name {
    pub(crate) fn new(b: &[u8]) -> Result<Name, BadName> {
        match b {
            b"" => Err(BadName::Empty),
            b"." => Err(BadName::Dot),
            b".." => Err(BadName::DotDot),
            _ if b.contains(&b'/') => Err(BadName::Slash),
            _ => CString::new(b).map(Name).map_err(|_| BadName::Nul),
        }
    }

    fn c(&self) -> &CStr {
        &self.0
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is a valid C string; the returned fd is owned by us.
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd >= 0 {
            // SAFETY: fd is a freshly opened descriptor nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Opens the directory `name` in `dir` for reading, never following a symlink.
fn open_subdir(dir: RawFd, name: &Name) -> io::Result<OwnedFd> {
    openat(
        dir,
        name.c(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// lstat of `name` in `dir`; `None` if it does not exist.
fn lstat_at(dir: RawFd, name: &Name) -> io::Result<Option<libc::stat>> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    match cvt(unsafe { libc::fstatat(dir, name.c().as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })
    {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn unlink_at(dir: RawFd, name: &Name, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid fd and string.
    cvt(unsafe { libc::unlinkat(dir, name.c().as_ptr(), flags) }).map(drop)
}

fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: buf is valid for buf.len() bytes; "" with an O_PATH symlink fd reads it.
        let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Names in the directory `fd` (without `.` and `..`).
fn list_dir(fd: RawFd) -> io::Result<Vec<Name>> {
    let dup = openat(fd, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // SAFETY: fdopendir takes ownership of the fd on success.
    let dirp = unsafe { libc::fdopendir(dup.as_raw_fd()) };
    if dirp.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(dup);
    let mut names = Vec::new();
    loop {
        // SAFETY: dirp is a valid DIR*; errno is reset to tell end-of-dir from errors.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            unsafe { libc::closedir(dirp) };
            if err.raw_os_error().unwrap_or(0) != 0 {
                return Err(err);
            }
            return Ok(names);
        }
        // SAFETY: d_name is a NUL-terminated string inside the dirent.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if let Ok(n) = Name::new(name.to_bytes()) {
            names.push(n);
        }
    }
}

/// Removes `name` in `dir` and, for a directory, everything below it. Never follows links.
/// Iterative, with one open descriptor per level being emptied.
fn remove_all_at(dir: RawFd, name: &Name) -> io::Result<()> {
    match unlink_at(dir, name, 0) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {}
        Err(e) => return Err(e),
    }
    /// A directory being emptied: its fd, its name in its parent, children left to remove.
    struct Level {
        fd: OwnedFd,
        name: Name,
        todo: Vec<Name>,
    }
    let open = |parent: RawFd, name: &Name| -> io::Result<Level> {
        let fd = open_subdir(parent, name)?;
        // Make sure we may delete the children even if the directory is read-only.
        // SAFETY: valid fd.
        unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) };
        let todo = list_dir(fd.as_raw_fd())?;
        Ok(Level {
            fd,
            name: name.clone(),
            todo,
        })
    };
    let mut stack = vec![open(dir, name)?];
    while let Some(top) = stack.last_mut() {
        match top.todo.pop() {
            Some(child) => match unlink_at(top.fd.as_raw_fd(), &child, 0) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {
                    let next = open(top.fd.as_raw_fd(), &child)?;
                    stack.push(next);
                }
                Err(e) => return Err(e),
            },
            None => {
                let done = stack.pop().expect("non-empty");
                drop(done.fd);
                let parent = stack.last().map_or(dir, |l| l.fd.as_raw_fd());
                unlink_at(parent, &done.name, libc::AT_REMOVEDIR)?;
            }
        }
    }
    Ok(())
}

fn split_components(p: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// `path` split into its parent and last component.
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

/// An over-long member name for an error line: its first 64 characters.
fn shortened(p: &ImagePath) -> String {
    let d = p.display();
    match d.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &d[..i]),
        None => d,
    }
}

struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

struct Extractor<'o> {
    root: OwnedFd,
    opts: &'o ExtractOptions,
    /// Root on the host: device nodes can be created (not in a user namespace, where euid 0
    /// has no CAP_MKNOD over the host's devices).
    may_mknod: bool,
    /// Paths (cleaned, relative) this layer created, with all their ancestors.
    ours: HashSet<Vec<u8>>,
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// The last parent directory resolved, reused for siblings. Shared (`Rc`): whoever uses
    /// the descriptor holds a reference, so replacing or clearing the cache can never close
    /// a descriptor still in use. Cleared whenever something is removed or a symlink
    /// created outside the cached directory's own children.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
}

impl Extractor<'_> {
    /// Resolves `path` (a cleaned relative path) to a directory inside the root, following
    /// symlinks as if the root were `/`. Missing directories are created when `create`.
    /// Holds one descriptor at a time: `..` reopens the parent from the root through the
    /// real directories walked so far.
    fn resolve_dir(&self, path: &[u8], create: bool) -> io::Result<OwnedFd> {
        let mut walked: Vec<Name> = Vec::new();
        let mut cur = self.root.try_clone()?;
        let mut queue: std::collections::VecDeque<Vec<u8>> =
            split_components(path).map(<[u8]>::to_vec).collect();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            match &c[..] {
                b"." => continue,
                b".." => {
                    if walked.pop().is_some() {
                        cur = self.reopen(&walked)?;
                    }
                    continue;
                }
                _ => {}
            }
            let name = Name::new(&c)?;
            let fd = match openat(
                cur.as_raw_fd(),
                name.c(),
                libc::O_PATH | libc::O_NOFOLLOW,
                0,
            ) {
                Ok(fd) => fd,
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    // SAFETY: valid fd and string.
                    let r =
                        cvt(unsafe { libc::mkdirat(cur.as_raw_fd(), name.c().as_ptr(), 0o755) });
                    if let Err(e) = r {
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e);
                        }
                    }
                    queue.push_front(c);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let st = fstat(fd.as_raw_fd())?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    walked.push(name);
                    cur = fd;
                }
                libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = readlink_fd(fd.as_raw_fd())?;
                    if target.starts_with(b"/") {
                        walked.clear();
                        cur = self.root.try_clone()?;
                    }
                    for t in split_components(&target).rev() {
                        queue.push_front(t.to_vec());
                    }
                }
                _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            }
        }
        Ok(cur)
    }

    /// The directory `names` below the root: real directories met by [`Self::resolve_dir`].
    fn reopen(&self, names: &[Name]) -> io::Result<OwnedFd> {
        let mut cur = self.root.try_clone()?;
        for n in names {
            cur = openat(
                cur.as_raw_fd(),
                n.c(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY,
                0,
            )?;
        }
        Ok(cur)
    }

    /// The directory `parent` (created if missing), from the cache when the previous member
    /// had the same parent. The caller holds its own reference to the descriptor.
    fn parent_fd(&mut self, parent: &[u8]) -> io::Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.cache {
            if p == parent {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = Rc::new(self.resolve_dir(parent, true)?);
        self.cache = Some((parent.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    fn entry(&mut self, info: &TarEntryInfo, data: &mut dyn Read) -> Result<(), LayerError> {
        let path = info.path.as_bytes();
        if path.is_empty() {
            return Ok(()); // the root itself ("./")
        }
        let entry_name = || String::from_utf8_lossy(&info.raw_name).into_owned();
        if path.len() > MAX_PATH_LEN {
            return Err(LayerError::PathLimit {
                entry: shortened(&info.path),
                what: format!("{} bytes long", path.len()),
                limit: format!("{MAX_PATH_LEN} bytes"),
            });
        }
        let depth = path.iter().filter(|&&b| b == b'/').count() + 1;
        if depth > MAX_DEPTH {
            return Err(LayerError::PathLimit {
                entry: shortened(&info.path),
                what: format!("{depth} components deep"),
                limit: format!("{MAX_DEPTH} components"),
            });
        }
        let (parent, name) = split_last(path);
        let err = |error: io::Error| LayerError::Extract {
            path: info.path.display(),
            error,
        };

        if name == OPAQUE {
            let dir = self.resolve_dir(parent, true).map_err(err)?;
            self.cache = None;
            if self.opts.overlay_whiteouts {
                return overlay_opaque(dir.as_raw_fd()).map_err(err);
            }
            return self.opaque(dir, parent).map_err(err);
        }
        if let Some(hidden) = name.strip_prefix(WH) {
            let hidden = Name::new(hidden).map_err(|b| LayerError::BadWhiteout {
                entry: entry_name(),
                target: b.reason(),
            })?;
            let mut victim = parent.to_vec();
            if !victim.is_empty() {
                victim.push(b'/');
            }
            victim.extend_from_slice(hidden.bytes());
            if self.ours.contains(&victim) {
                return Ok(());
            }
            if self.opts.overlay_whiteouts {
                let dir = self.parent_fd(parent).map_err(err)?;
                let dir = dir.as_raw_fd();
                return create_replacing(dir, &hidden, || {
                    // SAFETY: valid fd and C string.
                    cvt(unsafe { libc::mknodat(dir, hidden.c().as_ptr(), libc::S_IFCHR, 0) })
                        .map(drop)
                })
                .map_err(err);
            }
            let dir = match self.resolve_dir(parent, false) {
                Ok(d) => d,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    return Ok(())
                }
                Err(e) => return Err(err(e)),
            };
            // The removal may take a directory the cache points into.
            self.cache = None;
            return remove_all_at(dir.as_raw_fd(), &hidden).map_err(err);
        }
        let cname = Name::new(name).map_err(|b| err(b.into()))?;

        // Mark the member and its ancestors as this layer's.
        let mut p: &[u8] = path;
        while self.ours.insert(p.to_vec()) {
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }

        match info.kind {
            TarKind::Dir => {
                let dir = self.parent_fd(parent).map_err(err)?;
                let dir = dir.as_raw_fd();
                // SAFETY: valid fd and string.
                let mkdir = || cvt(unsafe { libc::mkdirat(dir, cname.c().as_ptr(), 0o700) });
                match mkdir() {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // A directory stays (and keeps its contents); anything else goes.
                        if !lstat_at(dir, &cname)
                            .map_err(err)?
                            .is_some_and(|st| is_dir(&st))
                        {
                            unlink_at(dir, &cname, 0).map_err(err)?;
                            mkdir().map_err(err)?;
                        }
                    }
                    r => {
                        r.map_err(err)?;
                    }
                }
                self.dirs.insert(
                    path.to_vec(),
                    DirMeta {
                        mode: info.mode,
                        uid: info.uid,
                        gid: info.gid,
                        mtime: info.mtime,
                        xattrs: info.xattrs.clone(),
                    },
                );
            }
            TarKind::File => {
                let dir = self.parent_fd(parent).map_err(err)?;
                let fd = create_replacing(dir.as_raw_fd(), &cname, || {
                    openat(
                        dir.as_raw_fd(),
                        cname.c(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                        0o600,
                    )
                })
                .map_err(err)?;
                let mut f = File::from(fd);
                let n = io::copy(data, &mut f).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        LayerError::Malformed(format!("{}: truncated data", info.path))
                    } else {
                        err(e)
                    }
                })?;
                if n != info.size {
                    return Err(LayerError::Malformed(format!(
                        "{}: truncated data",
                        info.path
                    )));
                }
                self.apply_fd(
                    f.as_raw_fd(),
                    info.mode,
                    info.uid,
                    info.gid,
                    info.mtime,
                    &info.xattrs,
                )
                .map_err(err)?;
            }
            TarKind::Symlink => {
                let dir = self.parent_fd(parent).map_err(err)?;
                let dir = dir.as_raw_fd();
                let target = cstring(info.link_target.as_deref().unwrap_or(b"")).map_err(err)?;
                create_replacing(dir, &cname, || {
                    // SAFETY: valid strings and fd.
                    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, cname.c().as_ptr()) })
                })
                .map_err(err)?;
                self.apply_at(dir, &cname, info.uid, info.gid, info.mtime)
                    .map_err(err)?;
            }
            TarKind::Hardlink => {
                let target = super::reader::clean_name(info.link_target.as_deref().unwrap_or(b""));
                let target = target.as_bytes();
                if target == path {
                    return Ok(());
                }
                if target.is_empty() {
                    return Err(err(io::Error::other("hard link to the root directory")));
                }
                let (tparent, tname) = split_last(target);
                let tdir = self.resolve_dir(tparent, false).map_err(|e| {
                    err(io::Error::new(
                        e.kind(),
                        format!("hard link target /{}: {e}", String::from_utf8_lossy(target)),
                    ))
                })?;
                let tname = Name::new(tname).map_err(|b| err(b.into()))?;
                match lstat_at(tdir.as_raw_fd(), &tname).map_err(err)? {
                    Some(st) if !is_dir(&st) => {}
                    _ => {
                        return Err(err(io::Error::other(format!(
                            "hard link target /{} is missing or a directory",
                            String::from_utf8_lossy(target)
                        ))))
                    }
                }
                let dir = self.parent_fd(parent).map_err(err)?;
                let dir = dir.as_raw_fd();
                // flags 0: a symlink target is linked itself, never followed.
                create_replacing(dir, &cname, || {
                    // SAFETY: valid fds and strings.
                    cvt(unsafe {
                        libc::linkat(
                            tdir.as_raw_fd(),
                            tname.c().as_ptr(),
                            dir,
                            cname.c().as_ptr(),
                            0,
                        )
                    })
                })
                .map_err(err)?;
            }
            TarKind::Fifo | TarKind::CharDevice | TarKind::BlockDevice => {
                let fmt = match info.kind {
                    TarKind::Fifo => libc::S_IFIFO,
                    TarKind::CharDevice => libc::S_IFCHR,
                    _ => libc::S_IFBLK,
                };
                if fmt != libc::S_IFIFO && !(self.opts.allow_devices && self.may_mknod) {
                    if self.opts.allow_devices && !DEVICES_SKIPPED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "device nodes in layers are skipped when not running as root on the \
                             host (first: {})",
                            info.path
                        );
                    }
                    return Ok(());
                }
                let dir = self.parent_fd(parent).map_err(err)?;
                let dir = dir.as_raw_fd();
                let dev = libc::makedev(info.dev_major, info.dev_minor);
                create_replacing(dir, &cname, || {
                    // SAFETY: valid fd and string.
                    cvt(unsafe { libc::mknodat(dir, cname.c().as_ptr(), fmt | 0o600, dev) })
                })
                .map_err(err)?;
                self.apply_path_mode(dir, &cname, info).map_err(err)?;
            }
            TarKind::Other(_) => {}
        }
        Ok(())
    }

    /// Opaque whiteout of the directory `dir` (logical path `logical`): removes everything
    /// below it this layer did not create. Iterative.
    fn opaque(&mut self, dir: OwnedFd, logical: &[u8]) -> io::Result<()> {
        // Pending subdirectories as (parent descriptor, name, logical path): descriptors
        // are shared by siblings, so at most one per level is open.
        let dir = Rc::new(dir);
        let mut todo: Vec<(Rc<OwnedFd>, Option<Name>, Vec<u8>)> =
            vec![(dir, None, logical.to_vec())];
        while let Some((parent, name, logical)) = todo.pop() {
            let fd = match name {
                Some(n) => Rc::new(open_subdir(parent.as_raw_fd(), &n)?),
                None => parent,
            };
            for child in list_dir(fd.as_raw_fd())? {
                let mut p = logical.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(child.bytes());
                if !self.ours.contains(&p) {
                    remove_all_at(fd.as_raw_fd(), &child)?;
                } else if lstat_at(fd.as_raw_fd(), &child)?.is_some_and(|st| is_dir(&st)) {
                    todo.push((Rc::clone(&fd), Some(child), p));
                }
            }
        }
        Ok(())
    }
}

/// Runs `create` (an exclusive create of `name` in `dir`); if something is already there,
/// removes it, whatever it is, and runs `create` again: later members replace earlier
/// ones. Most members are new, so this costs one system call for them.
fn create_replacing<T>(
    dir: RawFd,
    name: &Name,
    create: impl Fn() -> io::Result<T>,
) -> io::Result<T> {
    match create() {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            remove_all_at(dir, name)?;
            create()
        }
        r => r,
    }
}

impl Extractor<'_> {
    fn apply_fd(
        &self,
        fd: RawFd,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: i64,
        xattrs: &BTreeMap<String, Vec<u8>>,
    ) -> io::Result<()> {
        // SAFETY: plain syscalls on a valid fd.
        unsafe {
            if self.opts.preserve_owner {
                cvt(libc::fchown(fd, uid as libc::uid_t, gid as libc::gid_t))?;
            }
            // After chown, which clears setuid/setgid.
            cvt(libc::fchmod(fd, (mode & 0o7777) as libc::mode_t))?;
            for (k, v) in xattrs {
                if self.opts.overlay_whiteouts && is_overlay_xattr(k) {
                    continue;
                }
                if let Ok(k) = CString::new(k.as_bytes()) {
                    libc::fsetxattr(fd, k.as_ptr(), v.as_ptr().cast(), v.len(), 0);
                }
            }
            let t = [timespec(mtime), timespec(mtime)];
            cvt(libc::futimens(fd, t.as_ptr()))?;
        }
        Ok(())
    }

    /// Owner and times of a member that must not be opened (symlinks).
    fn apply_at(&self, dir: RawFd, name: &Name, uid: u64, gid: u64, mtime: i64) -> io::Result<()> {
        // SAFETY: plain syscalls on valid fds/strings.
        unsafe {
            if self.opts.preserve_owner {
                cvt(libc::fchownat(
                    dir,
                    name.c().as_ptr(),
                    uid as libc::uid_t,
                    gid as libc::gid_t,
                    libc::AT_SYMLINK_NOFOLLOW,
                ))?;
            }
            let t = [timespec(mtime), timespec(mtime)];
            cvt(libc::utimensat(
                dir,
                name.c().as_ptr(),
                t.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
        }
        Ok(())
    }

    /// Special files: owner, mode (the name was just created by us, so following is safe)
    /// and times.
    fn apply_path_mode(&self, dir: RawFd, name: &Name, info: &TarEntryInfo) -> io::Result<()> {
        self.apply_at(dir, name, info.uid, info.gid, info.mtime)?;
        // SAFETY: valid fd and string.
        cvt(unsafe {
            libc::fchmodat(
                dir,
                name.c().as_ptr(),
                (info.mode & 0o7777) as libc::mode_t,
                0,
            )
        })?;
        let t = [timespec(info.mtime), timespec(info.mtime)];
        cvt(unsafe {
            libc::utimensat(
                dir,
                name.c().as_ptr(),
                t.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        Ok(())
    }

    /// Directory metadata, deepest first.
    fn finish(&mut self) -> Result<(), LayerError> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (path, meta) in dirs.iter().rev() {
            let err = |error| LayerError::Extract {
                path: format!("/{}", String::from_utf8_lossy(path)),
                error,
            };
            let (parent, name) = split_last(path);
            let pfd = match self.resolve_dir(parent, false) {
                Ok(fd) => fd,
                Err(_) => continue, // removed or replaced later in the layer
            };
            let cname = Name::new(name).map_err(|b| err(b.into()))?;
            let fd = match open_subdir(pfd.as_raw_fd(), &cname) {
                Ok(fd) => fd,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(err(e)),
            };
            self.apply_fd(
                fd.as_raw_fd(),
                meta.mode,
                meta.uid,
                meta.gid,
                meta.mtime,
                &meta.xattrs,
            )
            .map_err(err)?;
        }
        Ok(())
    }
}

/// `trusted.overlay.*` / `user.overlay.*`: overlayfs's own attributes.
fn is_overlay_xattr(k: &str) -> bool {
    k.starts_with("trusted.overlay.") || k.starts_with("user.overlay.")
}

/// Whether this process is in a user namespace other than the initial one (rootless builds):
/// its `uid_map` is not the identity over all ids. There, `trusted.*` xattrs cannot be set and
/// overlayfs is mounted with `userxattr`, so whiteouts use `user.overlay.*`.
/// Read once: a rootless build's child enters its namespace before anything asks.
pub fn in_user_namespace() -> bool {
    static IN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
    })
}

/// Marks the directory behind the `O_PATH` descriptor `dir` opaque for overlayfs
/// (`user.overlay.opaque` in a user namespace, where overlayfs is mounted with `userxattr`).
fn overlay_opaque(dir: RawFd) -> io::Result<()> {
    let fd = openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let name = if in_user_namespace() {
        c"user.overlay.opaque"
    } else {
        c"trusted.overlay.opaque"
    };
    // SAFETY: valid fd, name and value buffer.
    cvt(unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) })
        .map(drop)
}

fn timespec(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    }
}

/// Extracts an uncompressed tar stream into `root` (created if missing).
pub(crate) fn extract_tar<R: Read>(
    tar: R,
    root: &Path,
    opts: &ExtractOptions,
) -> Result<(), LayerError> {
    let root_err = |error| LayerError::Extract {
        path: root.display().to_string(),
        error,
    };
    std::fs::create_dir_all(root).map_err(root_err)?;
    let croot = cstring(root.as_os_str().as_encoded_bytes()).map_err(root_err)?;
    let root_fd =
        openat(libc::AT_FDCWD, &croot, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(root_err)?;
    let mut x = Extractor {
        root: root_fd,
        opts,
        // SAFETY: geteuid cannot fail.
        may_mknod: unsafe { libc::geteuid() } == 0 && !in_user_namespace(),
        ours: HashSet::new(),
        dirs: BTreeMap::new(),
        cache: None,
    };
    let mut r = TarReader::new(tar);
    while let Some(info) = r.next_entry()? {
        x.entry(&info, &mut r)?;
    }
    x.finish()
}

/// Reads one regular file of a layer (see [`super::read_file_from_layer`]).
pub(crate) fn read_file<R: Read>(tar: R, want: &ImagePath) -> Result<Option<Vec<u8>>, LayerError> {
    let mut r = TarReader::new(tar);
    let mut found = None;
    while let Some(info) = r.next_entry()? {
        if &info.path != want {
            continue;
        }
        found = match info.kind {
            TarKind::File => {
                let mut v = Vec::with_capacity(info.size.min(1 << 20) as usize);
                r.read_to_end(&mut v).map_err(LayerError::BlobRead)?;
                Some(Ok(v))
            }
            TarKind::Hardlink | TarKind::Symlink => Some(Err(format!(
                "{} is a {} to {:?}; read that path instead",
                want,
                if info.kind == TarKind::Symlink {
                    "symlink"
                } else {
                    "hard link"
                },
                String::from_utf8_lossy(info.link_target.as_deref().unwrap_or(b""))
            ))),
            _ => None,
        };
    }
    match found {
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(msg)) => Err(LayerError::Unsupported(msg)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_address_the_root_or_its_parent() {
        assert_eq!(Name::new(b""), Err(BadName::Empty));
        assert_eq!(Name::new(b"."), Err(BadName::Dot));
        assert_eq!(Name::new(b".."), Err(BadName::DotDot));
        assert_eq!(Name::new(b"a/b"), Err(BadName::Slash));
        assert_eq!(Name::new(b"/"), Err(BadName::Slash));
        assert_eq!(Name::new(b"a\0b"), Err(BadName::Nul));
        for ok in [&b"..."[..], b".a", b"..a", b".wh.", b" ", b"\xff"] {
            assert_eq!(Name::new(ok).unwrap().bytes(), ok);
        }
    }

    fn tar_of(names: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in names {
            let mut b = [0u8; 512];
            b[..n.len()].copy_from_slice(n);
            b[100..108].copy_from_slice(b"0000644\0");
            b[108..124].copy_from_slice(b"0000000\x000000000\0");
            b[124..136].copy_from_slice(b"00000000000\0");
            b[136..148].copy_from_slice(b"00000000000\0");
            b[156] = b'0';
            b[257..265].copy_from_slice(b"ustar\x0000");
            b[148..156].copy_from_slice(b"        ");
            let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
            b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            v.extend_from_slice(&b);
        }
        v.extend_from_slice(&[0; 1024]);
        v
    }

    #[test]
    fn whiteouts_of_empty_dot_and_dotdot_reject_the_layer() {
        for (wh, target) in [
            (&b".wh."[..], "an empty name"),
            (b".wh..", "\".\""),
            (b".wh...", "\"..\""),
            (b"sub/.wh...", "\"..\""),
            (b"./.wh..", "\".\""),
        ] {
            let t = tempfile::tempdir().unwrap();
            let root = t.path().join("root");
            std::fs::create_dir_all(root.join("sub")).unwrap();
            std::fs::write(root.join("sub/keep"), b"k").unwrap();
            std::fs::write(t.path().join("canary"), b"c").unwrap();
            let err =
                extract_tar(&tar_of(&[wh])[..], &root, &ExtractOptions::default()).unwrap_err();
            match &err {
                LayerError::BadWhiteout { entry, target: t } => {
                    assert_eq!(entry.as_bytes(), wh);
                    assert_eq!(*t, target);
                }
                other => panic!("{}: {other}", String::from_utf8_lossy(wh)),
            }
            assert!(err.to_string().contains("refusing the layer"), "{err}");
            assert_eq!(std::fs::read(t.path().join("canary")).unwrap(), b"c");
            assert_eq!(std::fs::read(root.join("sub/keep")).unwrap(), b"k");
        }
    }

    /// A tar of one member whose name (too long for ustar's 100 bytes) is in a PAX record.
    fn pax_named(name: &[u8]) -> Vec<u8> {
        let mut pax = Vec::new();
        super::super::tar::pax_record(b"path", name, &mut pax);
        let mut member = tar_of(&[b"PaxHeaders/x"]);
        member.truncate(512);
        member[156] = b'x';
        member[124..136].copy_from_slice(format!("{:011o}\0", pax.len()).as_bytes());
        member[148..156].copy_from_slice(b"        ");
        let sum: u32 = member.iter().map(|&x| u32::from(x)).sum();
        member[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        member.extend_from_slice(&pax);
        member.resize(member.len().div_ceil(512) * 512, 0);
        member.extend_from_slice(&tar_of(&[b"placeholder"]));
        member
    }

    #[test]
    fn over_long_and_over_deep_names_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        // A ustar name holds 100 bytes: the deep name goes in a PAX record.
        let member = pax_named(deep.as_bytes());
        let err = extract_tar(&member[..], t.path(), &ExtractOptions::default()).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{} components deep; the limit is {MAX_DEPTH} components",
                MAX_DEPTH + 1
            )),
            "{err}"
        );
        assert!(!t.path().join("d").exists());

        // 4,097 bytes in 3 components: too long, whatever the depth.
        let long = format!(
            "{}/{}/{}",
            "a".repeat(255),
            "b".repeat(255),
            "c".repeat(3585)
        );
        assert_eq!(long.len(), MAX_PATH_LEN + 1);
        let member = pax_named(long.as_bytes());
        let err = extract_tar(&member[..], t.path(), &ExtractOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("4097 bytes long; the limit is 4096 bytes"),
            "{err}"
        );
        assert!(!t.path().join("a".repeat(255)).exists());
    }
}
