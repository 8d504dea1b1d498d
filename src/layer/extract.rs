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
//! Layer semantics (OCI image spec, "Applying changesets"): `.wh.<name>` removes `<name>`
//! from lower layers, `.wh..wh..opq` removes everything lower layers put in its directory;
//! both never touch what the same layer extracts. Directory modes, owners and mtimes are
//! applied after all members (deepest first), so read-only directories can still be filled
//! and children do not disturb their parents' mtimes.
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

/// Options for [`super::extract_layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// Create character/block device nodes (only effective when running as root);
    /// otherwise they are skipped. FIFOs are always created.
    pub allow_devices: bool,
    /// chown members to the uid/gid in the layer (needs root or a user namespace).
    pub preserve_owner: bool,
}

const OPAQUE: &[u8] = b".wh..wh..opq";
const WH: &[u8] = b".wh.";
const MAX_SYMLINKS: usize = 40;

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

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// lstat of `name` in `dir`; `None` if it does not exist.
fn lstat_at(dir: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    match cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
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
fn list_dir(fd: RawFd) -> io::Result<Vec<CString>> {
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
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
}

/// Removes `name` in `dir` and, for a directory, everything below it. Never follows links.
fn remove_all_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: plain syscalls on valid strings/fds.
    match cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }) {
        Ok(_) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {}
        Err(e) => return Err(e),
    }
    let sub = openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    // Make sure we may delete the children even if the directory is read-only.
    unsafe { libc::fchmod(sub.as_raw_fd(), 0o700) };
    for child in list_dir(sub.as_raw_fd())? {
        remove_all_at(sub.as_raw_fd(), &child)?;
    }
    drop(sub);
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) })?;
    Ok(())
}

fn split_components(p: &[u8]) -> Vec<&[u8]> {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect()
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
    euid: u32,
    /// Paths (cleaned, relative) this layer created, with all their ancestors.
    ours: HashSet<Vec<u8>>,
    dirs: BTreeMap<Vec<u8>, DirMeta>,
    /// The last parent directory resolved, reused for siblings. Cleared whenever anything
    /// is removed or a symlink created (either may change what a path resolves to).
    cache: Option<(Vec<u8>, OwnedFd)>,
}

impl Extractor<'_> {
    /// Resolves `path` (a cleaned relative path) to a directory inside the root, following
    /// symlinks as if the root were `/`. Missing directories are created when `create`.
    fn resolve_dir(&self, path: &[u8], create: bool) -> io::Result<OwnedFd> {
        let mut stack: Vec<OwnedFd> = vec![self.root.try_clone()?];
        let mut queue: std::collections::VecDeque<Vec<u8>> = split_components(path)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            if c == b"." {
                continue;
            }
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let cur = stack.last().expect("root").as_raw_fd();
            let cname = cstring(&c)?;
            let fd = match openat(cur, &cname, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                Ok(fd) => fd,
                Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                    // SAFETY: valid fd and string.
                    let r = cvt(unsafe { libc::mkdirat(cur, cname.as_ptr(), 0o755) });
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
                libc::S_IFDIR => stack.push(fd),
                libc::S_IFLNK => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = readlink_fd(fd.as_raw_fd())?;
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for t in split_components(&target).into_iter().rev() {
                        queue.push_front(t.to_vec());
                    }
                }
                _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            }
        }
        Ok(stack.pop().expect("root"))
    }

    fn parent_fd(&mut self, parent: &[u8]) -> io::Result<RawFd> {
        if !matches!(&self.cache, Some((p, _)) if p == parent) {
            let fd = self.resolve_dir(parent, true)?;
            self.cache = Some((parent.to_vec(), fd));
        }
        Ok(self.cache.as_ref().expect("cached").1.as_raw_fd())
    }

    fn entry(&mut self, info: &TarEntryInfo, data: &mut dyn Read) -> Result<(), LayerError> {
        let path = info.path.as_bytes().to_vec();
        if path.is_empty() {
            return Ok(()); // the root itself ("./")
        }
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (path[..i].to_vec(), path[i + 1..].to_vec()),
            None => (Vec::new(), path.clone()),
        };
        let err = |error: io::Error| LayerError::Extract {
            path: info.path.display(),
            error,
        };

        if name == OPAQUE {
            let dir = self.resolve_dir(&parent, true).map_err(err)?;
            self.cache = None;
            return self.opaque(dir.as_raw_fd(), &parent).map_err(err);
        }
        if let Some(hidden) = name.strip_prefix(WH) {
            let mut victim = parent.clone();
            if !victim.is_empty() {
                victim.push(b'/');
            }
            victim.extend_from_slice(hidden);
            if self.ours.contains(&victim) || hidden.is_empty() {
                return Ok(());
            }
            let dir = match self.resolve_dir(&parent, false) {
                Ok(d) => d,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    return Ok(())
                }
                Err(e) => return Err(err(e)),
            };
            self.cache = None;
            return remove_all_at(dir.as_raw_fd(), &cstring(hidden).map_err(err)?).map_err(err);
        }

        // Mark the member and its ancestors as this layer's.
        let mut p: &[u8] = &path;
        loop {
            if !self.ours.insert(p.to_vec()) {
                break;
            }
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }

        let cname = cstring(&name).map_err(err)?;
        match info.kind {
            TarKind::Dir => {
                let dir = self.parent_fd(&parent).map_err(err)?;
                match lstat_at(dir, &cname).map_err(err)? {
                    Some(st) if is_dir(&st) => {}
                    existing => {
                        if existing.is_some() {
                            remove_all_at(dir, &cname).map_err(err)?;
                        }
                        // SAFETY: valid fd and string.
                        cvt(unsafe { libc::mkdirat(dir, cname.as_ptr(), 0o700) }).map_err(err)?;
                    }
                }
                self.dirs.insert(
                    path.clone(),
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
                let dir = self.parent_fd(&parent).map_err(err)?;
                self.clear_slot(dir, &cname).map_err(err)?;
                let fd = openat(
                    dir,
                    &cname,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
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
                let dir = self.parent_fd(&parent).map_err(err)?;
                self.clear_slot(dir, &cname).map_err(err)?;
                let target = cstring(info.link_target.as_deref().unwrap_or(b"")).map_err(err)?;
                // SAFETY: valid strings and fd.
                cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, cname.as_ptr()) })
                    .map_err(err)?;
                self.apply_at(dir, &cname, info.uid, info.gid, info.mtime)
                    .map_err(err)?;
                self.cache = None;
            }
            TarKind::Hardlink => {
                let target = super::reader::clean_name(info.link_target.as_deref().unwrap_or(b""));
                let target = target.as_bytes();
                if target == path.as_slice() {
                    return Ok(());
                }
                if target.is_empty() {
                    return Err(err(io::Error::other("hard link to the root directory")));
                }
                let (tparent, tname) = match target.iter().rposition(|&b| b == b'/') {
                    Some(i) => (&target[..i], &target[i + 1..]),
                    None => (&b""[..], target),
                };
                let tdir = self.resolve_dir(tparent, false).map_err(|e| {
                    err(io::Error::new(
                        e.kind(),
                        format!("hard link target /{}: {e}", String::from_utf8_lossy(target)),
                    ))
                })?;
                let tname = cstring(tname).map_err(err)?;
                match lstat_at(tdir.as_raw_fd(), &tname).map_err(err)? {
                    Some(st) if !is_dir(&st) => {}
                    _ => {
                        return Err(err(io::Error::other(format!(
                            "hard link target /{} is missing or a directory",
                            String::from_utf8_lossy(target)
                        ))))
                    }
                }
                let dir = self.parent_fd(&parent).map_err(err)?;
                self.clear_slot(dir, &cname).map_err(err)?;
                // flags 0: a symlink target is linked itself, never followed.
                // SAFETY: valid fds and strings.
                cvt(unsafe {
                    libc::linkat(tdir.as_raw_fd(), tname.as_ptr(), dir, cname.as_ptr(), 0)
                })
                .map_err(err)?;
            }
            TarKind::Fifo | TarKind::CharDevice | TarKind::BlockDevice => {
                let fmt = match info.kind {
                    TarKind::Fifo => libc::S_IFIFO,
                    TarKind::CharDevice => libc::S_IFCHR,
                    _ => libc::S_IFBLK,
                };
                if fmt != libc::S_IFIFO && !(self.opts.allow_devices && self.euid == 0) {
                    return Ok(());
                }
                let dir = self.parent_fd(&parent).map_err(err)?;
                self.clear_slot(dir, &cname).map_err(err)?;
                let dev = libc::makedev(info.dev_major, info.dev_minor);
                // SAFETY: valid fd and string.
                cvt(unsafe { libc::mknodat(dir, cname.as_ptr(), fmt | 0o600, dev) })
                    .map_err(err)?;
                self.apply_path_mode(dir, &cname, info).map_err(err)?;
            }
            TarKind::Other(_) => {}
        }
        Ok(())
    }

    /// Makes room for a non-directory member at `name`.
    fn clear_slot(&mut self, dir: RawFd, name: &CStr) -> io::Result<()> {
        if let Some(st) = lstat_at(dir, name)? {
            if is_dir(&st) {
                // Removing a directory can invalidate the cached parent (if it was below).
                let keep = self.cache.take();
                remove_all_at(dir, name)?;
                drop(keep);
            } else {
                // SAFETY: valid fd and string.
                cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) })?;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir: RawFd, logical: &[u8]) -> io::Result<()> {
        for child in list_dir(dir)? {
            let mut p = logical.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(child.to_bytes());
            if !self.ours.contains(&p) {
                remove_all_at(dir, &child)?;
            } else if lstat_at(dir, &child)?.is_some_and(|st| is_dir(&st)) {
                let sub = openat(
                    dir,
                    &child,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                self.opaque(sub.as_raw_fd(), &p)?;
            }
        }
        Ok(())
    }

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
    fn apply_at(&self, dir: RawFd, name: &CStr, uid: u64, gid: u64, mtime: i64) -> io::Result<()> {
        // SAFETY: plain syscalls on valid fds/strings.
        unsafe {
            if self.opts.preserve_owner {
                cvt(libc::fchownat(
                    dir,
                    name.as_ptr(),
                    uid as libc::uid_t,
                    gid as libc::gid_t,
                    libc::AT_SYMLINK_NOFOLLOW,
                ))?;
            }
            let t = [timespec(mtime), timespec(mtime)];
            cvt(libc::utimensat(
                dir,
                name.as_ptr(),
                t.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            ))?;
        }
        Ok(())
    }

    /// Special files: owner, mode (the name was just created by us, so following is safe)
    /// and times.
    fn apply_path_mode(&self, dir: RawFd, name: &CStr, info: &TarEntryInfo) -> io::Result<()> {
        self.apply_at(dir, name, info.uid, info.gid, info.mtime)?;
        // SAFETY: valid fd and string.
        cvt(unsafe {
            libc::fchmodat(dir, name.as_ptr(), (info.mode & 0o7777) as libc::mode_t, 0)
        })?;
        let t = [timespec(info.mtime), timespec(info.mtime)];
        cvt(unsafe { libc::utimensat(dir, name.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
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
            let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], &path[..]),
            };
            let pfd = match self.resolve_dir(parent, false) {
                Ok(fd) => fd,
                Err(_) => continue, // removed or replaced later in the layer
            };
            let cname = cstring(name).map_err(err)?;
            let fd = match openat(
                pfd.as_raw_fd(),
                &cname,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
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
        euid: unsafe { libc::geteuid() },
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
