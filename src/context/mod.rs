//! Build-context access: selecting and walking files under a root without ever leaving it.
//! (Interim implementation; `.dockerignore` matching lives in `dockerignore`.)

pub mod dockerignore;

use rayon::prelude::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink {
        target: Vec<u8>,
    },
    /// A FIFO or device node, with its device numbers (0 for FIFOs).
    Special {
        kind: SpecialKind,
        major: u32,
        minor: u32,
    },
}

/// The special files a context (or an extracted image filesystem) can hold; sockets are not
/// among them (they cannot be put in a layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    Fifo,
    CharDevice,
    BlockDevice,
}

/// One file, directory or symlink of the context, with the metadata layers and caches need.
#[derive(Debug, Clone)]
pub struct ContextEntry {
    /// `/`-separated path relative to the selection base (raw bytes).
    pub rel_path: Vec<u8>,
    pub host_path: PathBuf,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("forbidden path outside the build context: {path}")]
    OutsideContext { path: String },
    #[error("{pattern}: no such file or directory in the context")]
    NotFound { pattern: String },
    #[error("include pattern {pattern:?} matched no file")]
    GlobMatchedNothing { pattern: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    #[error("{path}: {what} cannot be put in an image layer")]
    Unsupported { path: PathBuf, what: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A build context rooted at a host directory, with its `.dockerignore` patterns.
pub struct BuildContext {
    root: PathBuf,
    ignore: dockerignore::PatternMatcher,
}

impl BuildContext {
    pub fn new(root: &Path, ignore_patterns: &[String]) -> Result<Self, ContextError> {
        let root = root.canonicalize().map_err(io_err(root))?;
        let ignore = dockerignore::PatternMatcher::new(ignore_patterns)?;
        Ok(BuildContext { root, ignore })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Cleans `rel` (absolute paths count from the root, like docker) and refuses `..`
    /// that climbs out. Returns the root-relative components.
    fn clean(&self, rel: &str) -> Result<Vec<Vec<u8>>, ContextError> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        for c in Path::new(rel).components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(ContextError::OutsideContext {
                            path: rel.to_string(),
                        });
                    }
                }
                Component::Normal(n) => parts.push(n.as_bytes().to_vec()),
            }
        }
        Ok(parts)
    }

    /// Resolves a context path to a host path, following symlinks only while they stay
    /// inside the root (an absolute link target counts from the root).
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, ContextError> {
        self.resolve_with(rel, false)
    }

    /// [`resolve`](Self::resolve) that also follows a symlink in the last component (COPY's
    /// top-level sources, as BuildKit's FollowSymlinks): the host path of what `rel` names.
    pub fn resolve_followed(&self, rel: &str) -> Result<PathBuf, ContextError> {
        self.resolve_with(rel, true)
    }

    fn resolve_with(&self, rel: &str, follow_last: bool) -> Result<PathBuf, ContextError> {
        let mut todo: Vec<Vec<u8>> = self.clean(rel)?;
        todo.reverse();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop() {
            if part == b".." {
                if done.pop().is_none() {
                    return Err(ContextError::OutsideContext {
                        path: rel.to_string(),
                    });
                }
                continue;
            }
            if part == b"." {
                continue;
            }
            let mut host = self.root.clone();
            for d in &done {
                host.push(std::ffi::OsStr::from_bytes(d));
            }
            host.push(std::ffi::OsStr::from_bytes(&part));
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() && (follow_last || !todo.is_empty()) => {
                    links += 1;
                    if links > 40 {
                        return Err(ContextError::Io {
                            path: host,
                            source: std::io::Error::other("too many levels of symbolic links"),
                        });
                    }
                    let target = std::fs::read_link(&host).map_err(io_err(&host))?;
                    if target.is_absolute() {
                        return Err(ContextError::OutsideContext {
                            path: rel.to_string(),
                        });
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::ParentDir => todo.push(b"..".to_vec()),
                            Component::Normal(n) => todo.push(n.as_bytes().to_vec()),
                            _ => {}
                        }
                    }
                }
                _ => done.push(part),
            }
        }
        let mut host = self.root.clone();
        for d in &done {
            host.push(std::ffi::OsStr::from_bytes(d));
        }
        Ok(host)
    }

    /// The entry at `host` (a path under the root), named `rel_path`.
    pub fn entry(&self, rel_path: Vec<u8>, host: PathBuf) -> Result<ContextEntry, ContextError> {
        let m = std::fs::symlink_metadata(&host).map_err(io_err(&host))?;
        Self::entry_from(rel_path, host, &m)
    }

    fn entry_from(
        rel_path: Vec<u8>,
        host: PathBuf,
        m: &std::fs::Metadata,
    ) -> Result<ContextEntry, ContextError> {
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_symlink() {
            EntryKind::Symlink {
                target: std::fs::read_link(&host)
                    .map_err(io_err(&host))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            }
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let rdev = m.rdev();
            EntryKind::Special {
                kind: if ft.is_fifo() {
                    SpecialKind::Fifo
                } else if ft.is_char_device() {
                    SpecialKind::CharDevice
                } else {
                    SpecialKind::BlockDevice
                },
                major: if ft.is_fifo() { 0 } else { libc::major(rdev) },
                minor: if ft.is_fifo() { 0 } else { libc::minor(rdev) },
            }
        } else {
            return Err(ContextError::Unsupported {
                path: host,
                what: "a socket",
            });
        };
        Ok(ContextEntry {
            rel_path,
            kind,
            size: if ft.is_file() { m.len() } else { 0 },
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            host_path: host,
        })
    }

    fn rel_str(parts: &[Vec<u8>]) -> String {
        String::from_utf8_lossy(&parts.join(&b'/')).into_owned()
    }

    /// Every entry below `rel` (excluding `rel` itself), sorted by path bytes, with
    /// `.dockerignore` and `exclude` applied. Symlinks are kept, not followed.
    pub fn walk(&self, rel: &str, exclude: &[String]) -> Result<Vec<ContextEntry>, ContextError> {
        let base_parts = self.clean(rel)?;
        let base = self.resolve(rel)?;
        let excl = dockerignore::PatternMatcher::new(exclude)?;
        let base_rel = Self::rel_str(&base_parts);
        let walker = Walker {
            ctx: self,
            exclude: &excl,
            base_rel: &base_rel,
            descend_ignored: self.ignore.exclusions() || excl.exclusions(),
        };
        let mut out = walker.walk(&base)?;
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    /// COPY/ADD sources: a path with wildcards (`*`, `?`, `[..]` per component). The
    /// matches, sorted, with `rel_path` relative to the root.
    pub fn glob_sources(&self, pattern: &str) -> Result<Vec<ContextEntry>, ContextError> {
        let parts = self.clean(pattern)?;
        let has_magic = |p: &[u8]| p.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
        if !parts.iter().any(|p| has_magic(p)) {
            let host = self.resolve(pattern)?;
            let rel = Self::rel_str(&parts);
            if !rel.is_empty() && self.ignore.matches_or_parent(&rel) {
                return Err(ContextError::NotFound {
                    pattern: pattern.to_string(),
                });
            }
            if std::fs::symlink_metadata(&host).is_err() {
                return Err(ContextError::NotFound {
                    pattern: pattern.to_string(),
                });
            }
            return Ok(vec![self.entry(parts.join(&b'/'), host)?]);
        }
        // Expand component by component. Like fsutil's ResolveWildcards (a walk below the
        // path before the first wildcard, matched with filepath.Match: `*` and `**` alike stop
        // at `/`), that walk does not descend into symlinks.
        let mut current: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
        let mut walking = false;
        for part in &parts {
            let mut next = Vec::new();
            for prefix in &current {
                if walking {
                    let host = self.resolve(&Self::rel_str(prefix))?;
                    if !std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                        continue;
                    }
                }
                if !has_magic(part) {
                    let mut p = prefix.clone();
                    p.push(part.clone());
                    next.push(p);
                    continue;
                }
                let dir = self.resolve(&Self::rel_str(prefix))?;
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let matcher = dockerignore::component_matcher(part).map_err(|message| {
                    ContextError::Pattern {
                        pattern: pattern.to_string(),
                        message,
                    }
                })?;
                let mut names: Vec<Vec<u8>> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().as_bytes().to_vec())
                    .filter(|n| matcher(n))
                    .collect();
                names.sort();
                for n in names {
                    let mut p = prefix.clone();
                    p.push(n);
                    next.push(p);
                }
            }
            current = next;
            walking |= has_magic(part);
        }
        let mut out = Vec::new();
        for p in current {
            let rel = Self::rel_str(&p);
            if self.ignore.matches_or_parent(&rel) {
                continue;
            }
            let host = self.resolve(&rel)?;
            if std::fs::symlink_metadata(&host).is_ok() {
                out.push(self.entry(p.join(&b'/'), host)?);
            }
        }
        if out.is_empty() {
            return Err(ContextError::NotFound {
                pattern: pattern.to_string(),
            });
        }
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    /// lade.toml selection: entries under directory `from` matching any `include` glob
    /// (all when empty) and no `exclude` glob, plus the directories leading to them.
    pub fn select(
        &self,
        from: &str,
        include: &[String],
        exclude: &[String],
    ) -> Result<Vec<ContextEntry>, ContextError> {
        let base = self.resolve(from)?;
        match std::fs::metadata(&base) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ContextError::Io {
                    path: base,
                    source: std::io::Error::other("`from` is not a directory"),
                })
            }
            Err(e) => {
                return Err(ContextError::Io {
                    path: base,
                    source: e,
                })
            }
        }
        let glob = |pats: &[String]| -> Result<Vec<globset::GlobMatcher>, ContextError> {
            pats.iter()
                .map(|p| {
                    globset::GlobBuilder::new(p)
                        .literal_separator(true)
                        .build()
                        .map(|g| g.compile_matcher())
                        .map_err(|e| ContextError::Pattern {
                            pattern: p.clone(),
                            message: e.to_string(),
                        })
                })
                .collect()
        };
        let inc = glob(include)?;
        let exc = globset::GlobSet::new_from(exclude)?;
        let all = self.walk(from, &[])?;
        if inc.is_empty() && exclude.is_empty() {
            return Ok(all);
        }
        let mut hit = vec![false; inc.len()];
        let mut keep: std::collections::BTreeSet<Vec<u8>> = Default::default();
        for e in &all {
            let rel = String::from_utf8_lossy(&e.rel_path).into_owned();
            // An excluded directory takes everything below it along, like `.dockerignore`.
            if exc.is_match(&rel) || ancestors(&rel).any(|a| exc.is_match(a)) {
                continue;
            }
            let matched: Vec<usize> = inc
                .iter()
                .enumerate()
                .filter(|(_, g)| g.is_match(&rel))
                .map(|(i, _)| i)
                .collect();
            if inc.is_empty() || !matched.is_empty() {
                for i in matched {
                    hit[i] = true;
                }
                keep.insert(e.rel_path.clone());
                // The directories leading to a kept entry are kept too.
                let mut p = e.rel_path.as_slice();
                while let Some(i) = p.iter().rposition(|&b| b == b'/') {
                    p = &p[..i];
                    keep.insert(p.to_vec());
                }
            }
        }
        if let Some(i) = hit.iter().position(|h| !h) {
            return Err(ContextError::GlobMatchedNothing {
                pattern: include[i].clone(),
            });
        }
        Ok(all
            .into_iter()
            .filter(|e| keep.contains(&e.rel_path))
            .collect())
    }
}

/// The proper ancestors of a `/`-separated relative path, nearest first (`a/b/c` → `a/b`, `a`).
fn ancestors(rel: &str) -> impl Iterator<Item = &str> {
    let mut p = rel;
    std::iter::from_fn(move || {
        let i = p.rfind('/')?;
        p = &p[..i];
        Some(p)
    })
}

/// One `walk`: directories are read with `read_dir` and their entries stat'ed relative to
/// the open directory (no path lookup per file). The walk goes level by level, each level's
/// directories read in parallel, so a deep directory chain costs heap, not stack (a recursive
/// walk overflowed at ~1,000 levels); a path past `PATH_MAX` fails with the OS's error.
struct Walker<'a> {
    ctx: &'a BuildContext,
    exclude: &'a dockerignore::PatternMatcher,
    /// The walk's base, relative to the context root (what `.dockerignore` matches against).
    base_rel: &'a str,
    /// An ignored directory must still be walked when a `!` exception may re-include
    /// something below it.
    descend_ignored: bool,
}

/// A directory still to read: its host path and its path below the walk's base.
type PendingDir = (PathBuf, Vec<u8>);

impl Walker<'_> {
    /// Every entry below `base`, in no given order.
    fn walk(&self, base: &Path) -> Result<Vec<ContextEntry>, ContextError> {
        let mut out = Vec::new();
        let mut level: Vec<PendingDir> = vec![(base.to_path_buf(), Vec::new())];
        while !level.is_empty() {
            let read = level
                .par_iter()
                .map(|(host, below)| self.dir(host, below))
                .collect::<Result<Vec<_>, _>>()?;
            level = Vec::new();
            for (entries, subdirs) in read {
                out.extend(entries);
                level.extend(subdirs);
            }
        }
        Ok(out)
    }

    /// The entries directly in `host` (whose path below the base is `below`), and the
    /// subdirectories the walk must read next.
    fn dir(
        &self,
        host: &Path,
        below: &[u8],
    ) -> Result<(Vec<ContextEntry>, Vec<PendingDir>), ContextError> {
        let mut here = Vec::new();
        let mut subdirs = Vec::new();
        for item in std::fs::read_dir(host).map_err(io_err(host))? {
            let item = item.map_err(io_err(host))?;
            let name = item.file_name();
            let rel = if below.is_empty() {
                name.as_bytes().to_vec()
            } else {
                [below, b"/", name.as_bytes()].concat()
            };
            let rel_str = String::from_utf8_lossy(&rel);
            let ignored = if self.base_rel.is_empty() {
                self.ctx.ignore.matches_or_parent(&rel_str)
            } else {
                self.ctx
                    .ignore
                    .matches_or_parent(&format!("{}/{rel_str}", self.base_rel))
            } || self.exclude.matches_or_parent(&rel_str);
            let path = item.path();
            if ignored {
                let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && self.descend_ignored {
                    subdirs.push((path, rel));
                }
                continue;
            }
            let m = item.metadata().map_err(io_err(&path))?;
            if m.is_dir() {
                subdirs.push((path.clone(), rel.clone()));
            }
            here.push(BuildContext::entry_from(rel, path, &m)?);
        }
        Ok((here, subdirs))
    }
}

/// Compiled exclude globs for `select`.
trait GlobSetExt: Sized {
    fn new_from(pats: &[String]) -> Result<Self, ContextError>;
}

impl GlobSetExt for globset::GlobSet {
    fn new_from(pats: &[String]) -> Result<Self, ContextError> {
        let mut b = globset::GlobSetBuilder::new();
        for p in pats {
            b.add(
                globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| ContextError::Pattern {
                        pattern: p.clone(),
                        message: e.to_string(),
                    })?,
            );
        }
        b.build().map_err(|e| ContextError::Pattern {
            pattern: pats.join(","),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rels(v: &[ContextEntry]) -> Vec<String> {
        v.iter()
            .map(|e| String::from_utf8_lossy(&e.rel_path).into_owned())
            .collect()
    }

    #[test]
    fn an_excluded_directory_takes_its_contents_along() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("src");
        for f in [
            "keep/a.txt",
            "cache/x/y.txt",
            "cache/z.txt",
            "sub/cache/w.txt",
        ] {
            let p = from.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let ctx = BuildContext::new(tmp.path(), &[]).unwrap();
        let got = ctx.select("src", &[], &["cache".into()]).unwrap();
        assert_eq!(
            rels(&got),
            ["keep", "keep/a.txt", "sub", "sub/cache", "sub/cache/w.txt"]
        );
        let got = ctx.select("src", &[], &["**/cache".into()]).unwrap();
        assert_eq!(rels(&got), ["keep", "keep/a.txt", "sub"]);
        // An include that also matches files below an excluded directory does not bring
        // the directory back as their parent.
        let got = ctx
            .select("src", &["**/*.txt".into()], &["cache".into()])
            .unwrap();
        assert_eq!(
            rels(&got),
            ["keep", "keep/a.txt", "sub", "sub/cache", "sub/cache/w.txt"]
        );
    }
}
