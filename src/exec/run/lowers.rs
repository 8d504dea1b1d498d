//! The merged view of extracted lower layers (overlay form: whiteouts are 0:0 character
//! devices, opaque directories carry `trusted.overlay.opaque=y`), read without ever following
//! a symlink: each path is looked up component by component with `lstat`, and a component that
//! is not a real directory hides everything below it, as in overlayfs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A 0:0 character device: overlayfs's whiteout.
pub fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// `trusted.overlay.opaque` or `user.overlay.opaque` is `y` on the directory `path`.
pub fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|k| matches!(getxattr(path, k), Ok(Some(v)) if v == b"y"))
}

/// `path` (not followed) has the extended attribute `name`.
pub fn has_xattr(path: &Path, name: &str) -> bool {
    matches!(getxattr(path, name), Ok(Some(_)))
}

fn getxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 16];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(None),
        Err(rustix::io::Errno::RANGE) => Ok(Some(Vec::new())),
        Err(e) => Err(e.into()),
    }
}

/// Extended attributes of `path` (not followed) without overlayfs's own.
pub fn xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(out),
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size + 256];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.starts_with("trusted.overlay.")
            || name.starts_with("user.overlay.")
            || name.starts_with("trusted.lade.")
        {
            continue;
        }
        let len = match rustix::fs::lgetxattr_query(path, name) {
            Ok(l) => l,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut v = vec![0u8; len];
        let l = rustix::fs::lgetxattr(path, name, &mut v[..])?;
        v.truncate(l);
        out.insert(name.to_string(), v);
    }
    Ok(out)
}

pub fn split(rel: &[u8]) -> Vec<&[u8]> {
    rel.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect()
}

enum Loc {
    /// Present; the flag tells whether an ancestor in this layer is opaque.
    Found(PathBuf, Metadata, bool),
    /// Not in this layer; `opaque` when an ancestor in this layer hides the layers below.
    Missing { opaque: bool },
    /// Removed by this layer (whiteout, or an ancestor that is not a directory).
    Hidden,
}

fn locate(layer: &Path, comps: &[&[u8]]) -> Loc {
    let mut p = layer.to_path_buf();
    let mut opaque = false;
    for (i, c) in comps.iter().enumerate() {
        p.push(OsStr::from_bytes(c));
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => return Loc::Missing { opaque },
        };
        if is_whiteout(&m) {
            return Loc::Hidden;
        }
        if i + 1 == comps.len() {
            return Loc::Found(p, m, opaque);
        }
        if !m.is_dir() {
            return Loc::Hidden;
        }
        opaque |= is_opaque(&p);
    }
    let m = match std::fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(_) => return Loc::Missing { opaque },
    };
    Loc::Found(p, m, false)
}

/// Extracted layer directories, looked up as one filesystem.
#[derive(Debug, Clone)]
pub struct LowerView {
    /// Top layer first.
    layers: Vec<PathBuf>,
}

impl LowerView {
    /// `layers` bottom first, as images list them.
    pub fn new(layers: &[PathBuf]) -> LowerView {
        LowerView {
            layers: layers.iter().rev().cloned().collect(),
        }
    }

    /// The topmost visible file at `rel` (relative, no leading `/`) and its metadata.
    pub fn lookup(&self, rel: &[u8]) -> Option<(PathBuf, Metadata)> {
        let comps = split(rel);
        for layer in &self.layers {
            match locate(layer, &comps) {
                Loc::Found(p, m, _) => return Some((p, m)),
                Loc::Hidden | Loc::Missing { opaque: true } => return None,
                Loc::Missing { opaque: false } => {}
            }
        }
        None
    }

    /// Names visible in the directory `rel` (empty if it is not a directory).
    pub fn children(&self, rel: &[u8]) -> BTreeSet<Vec<u8>> {
        let comps = split(rel);
        let mut seen = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in &self.layers {
            let (p, m, opaque_above) = match locate(layer, &comps) {
                Loc::Found(p, m, o) => (p, m, o),
                Loc::Hidden | Loc::Missing { opaque: true } => break,
                Loc::Missing { opaque: false } => continue,
            };
            if !m.is_dir() {
                break;
            }
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    let name = e.file_name().as_bytes().to_vec();
                    let wh = e.metadata().map(|m| is_whiteout(&m)).unwrap_or(false);
                    if wh {
                        hidden.insert(name);
                    } else if !hidden.contains(&name) {
                        seen.insert(name);
                    }
                }
            }
            if opaque_above || is_opaque(&p) {
                break;
            }
        }
        seen
    }
}
