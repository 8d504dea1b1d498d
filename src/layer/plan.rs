//! Turning the caller's entries into the exact, ordered list of tar members: validation,
//! de-duplication, whiteout names, missing parents and hard-link groups. Nothing here does
//! I/O, so every error it reports is raised before a byte reaches the sink.

use super::{Entry, EntryKind, FileSource, LayerError, SpecialKind};
use std::collections::{BTreeMap, HashMap};

pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub(crate) const OPAQUE_NAME: &[u8] = b".wh..wh..opq";

#[derive(Debug, Clone)]
pub(crate) enum Member {
    Dir,
    File {
        source: FileSource,
        size: u64,
    },
    Symlink(Vec<u8>),
    /// Hard link to an earlier member (its tar name, no leading or trailing `/`).
    Hardlink(Vec<u8>),
    /// FIFO or device node: typeflag, devmajor, devminor.
    Special(u8, u32, u32),
    /// Whiteout markers: empty regular files.
    Marker,
}

#[derive(Debug, Clone)]
pub(crate) struct Planned {
    /// Tar name without leading `/` and without the directory `/` suffix.
    pub name: Vec<u8>,
    pub member: Member,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        v.extend_from_slice(dir);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn split_parent(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (b"", p),
    }
}

fn lossy(b: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(b))
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Group {
    Key(u64, u64),
    Path(Vec<u8>),
}

/// Sorted tar members for `entries`; see [`super::write_layer`] for the rules.
pub(crate) fn plan(entries: Vec<Entry>, dir_mtime: u64) -> Result<Vec<Planned>, LayerError> {
    // 1. Validate names and de-duplicate by (path, is-opaque-marker): later entries win.
    let mut by_path: BTreeMap<(Vec<u8>, bool), Entry> = BTreeMap::new();
    for e in entries {
        let p = e.path.as_bytes();
        if let Some(bad) = p
            .split(|&b| b == b'/')
            .find(|c| c.starts_with(WHITEOUT_PREFIX))
        {
            return Err(LayerError::WhiteoutName {
                path: e.path.display(),
                name: String::from_utf8_lossy(bad).into_owned(),
            });
        }
        let opaque = matches!(e.kind, EntryKind::OpaqueWhiteout);
        if p.is_empty() && !opaque {
            continue; // the root itself is never a member
        }
        by_path.insert((p.to_vec(), opaque), e);
    }

    // 2. Tar names.
    let mut members: BTreeMap<Vec<u8>, Planned> = BTreeMap::new();
    let mut hardlinks: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut link_keys: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    for ((path, _), e) in by_path {
        let (name, member) = match e.kind {
            EntryKind::Dir => (path, Member::Dir),
            EntryKind::File {
                source,
                size,
                link_key,
            } => {
                if let Some(k) = link_key {
                    link_keys.insert(path.clone(), k);
                }
                (path, Member::File { source, size })
            }
            EntryKind::Symlink { target } => (path, Member::Symlink(target)),
            EntryKind::Special { kind, major, minor } => {
                let typeflag = match kind {
                    SpecialKind::Fifo => super::tar::TYPE_FIFO,
                    SpecialKind::CharDevice => super::tar::TYPE_CHAR,
                    SpecialKind::BlockDevice => super::tar::TYPE_BLOCK,
                };
                (path, Member::Special(typeflag, major, minor))
            }
            EntryKind::Hardlink { target } => {
                hardlinks.push((path.clone(), target.as_bytes().to_vec()));
                (path, Member::Hardlink(target.as_bytes().to_vec()))
            }
            EntryKind::Whiteout => {
                let (dir, base) = split_parent(&path);
                let mut wh = WHITEOUT_PREFIX.to_vec();
                wh.extend_from_slice(base);
                (join(dir, &wh), Member::Marker)
            }
            EntryKind::OpaqueWhiteout => (join(&path, OPAQUE_NAME), Member::Marker),
        };
        members.insert(
            name.clone(),
            Planned {
                name,
                member,
                mode: e.mode & 0o7777,
                uid: e.uid,
                gid: e.gid,
                mtime: e.mtime,
                xattrs: e.xattrs,
            },
        );
    }

    // 3. Missing parent directories.
    let mut missing: Vec<Vec<u8>> = Vec::new();
    for name in members.keys() {
        let mut p: &[u8] = name;
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if members.contains_key(p) {
                break;
            }
            missing.push(p.to_vec());
        }
    }
    for name in missing {
        members.entry(name.clone()).or_insert(Planned {
            name,
            member: Member::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: dir_mtime,
            xattrs: BTreeMap::new(),
        });
    }

    // 4. Hard-link groups: files sharing a link key, plus explicit hard links joined to the
    //    group of the file they (transitively) point to.
    let mut groups: HashMap<Group, Vec<Vec<u8>>> = HashMap::new();
    for (name, p) in &members {
        if let Member::File { .. } = p.member {
            let g = match link_keys.get(name) {
                Some(&(dev, ino)) => Group::Key(dev, ino),
                None => Group::Path(name.clone()),
            };
            groups.entry(g).or_default().push(name.clone());
        }
    }
    for (path, target) in hardlinks {
        let mut t = target.clone();
        let mut hops = 0;
        let file = loop {
            match members.get(&t).map(|p| &p.member) {
                Some(Member::File { .. }) => break t,
                Some(Member::Hardlink(next)) if hops < members.len() => {
                    t = next.clone();
                    hops += 1;
                }
                Some(_) => {
                    return Err(LayerError::HardlinkToNonFile {
                        path: lossy(&path),
                        target: lossy(&target),
                    })
                }
                None => {
                    return Err(LayerError::DanglingHardlink {
                        path: lossy(&path),
                        target: lossy(&target),
                    })
                }
            }
        };
        let g = match link_keys.get(&file) {
            Some(&(dev, ino)) => Group::Key(dev, ino),
            None => Group::Path(file),
        };
        groups.entry(g).or_default().push(path);
    }
    for (_, mut names) in groups {
        if names.len() < 2 {
            continue;
        }
        names.sort();
        let primary = names[0].clone();
        // The data comes from the first *file* of the group in sorted order.
        let data = names
            .iter()
            .find(|n| matches!(members[*n].member, Member::File { .. }))
            .cloned()
            .expect("every group has a file");
        if data != primary {
            let d = members[&data].clone();
            members.insert(
                primary.clone(),
                Planned {
                    name: primary.clone(),
                    ..d
                },
            );
        }
        for n in &names[1..] {
            members.get_mut(n).expect("group member").member = Member::Hardlink(primary.clone());
        }
    }

    Ok(members.into_values().collect())
}
