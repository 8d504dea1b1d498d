//! An image's flattened file tree: every layer applied in order, whiteouts (`.wh.NAME`,
//! `.wh..wh..opq`) applied, each entry keeping the layer that put it there.

use super::open::OpenedImage;
use super::DiffError;
use crate::digest::Digest;
use crate::layer::{TarEntryInfo, TarKind};
use serde::Serialize;
use std::collections::BTreeMap;

/// One path of the flattened tree, as the topmost layer holding it left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    pub kind: &'static str,
    /// Permission bits with setuid/setgid/sticky, in octal (`0755`).
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    /// sha256 of a regular file's contents (a hard link: its target's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Digest>,
    /// Symlink target, or the path a hard link points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// `major,minor` of a device node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Index of the layer that introduced this version of the path (0 = bottom).
    pub layer: usize,
    pub layer_digest: Digest,
}

/// Path bytes (relative, no leading `/`) → entry.
pub type Tree = BTreeMap<Vec<u8>, FileEntry>;

/// Reads every layer of `image` once and flattens them.
pub fn flatten(image: &OpenedImage) -> Result<Tree, DiffError> {
    let mut tree = Tree::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let (blob, compression) = image.open_layer(layer)?;
        let members = crate::layer::list_layer_with_digests(blob, compression).map_err(|e| {
            DiffError::Image {
                image: image.name.clone(),
                message: format!("layer {} ({}): {e}", i, layer.digest),
            }
        })?;
        apply_layer(&mut tree, i, &layer.digest, members);
    }
    Ok(tree)
}

/// Removes everything below `dir` (not `dir` itself) that `keep` rejects.
fn remove_below(tree: &mut Tree, dir: &[u8], keep: impl Fn(&FileEntry) -> bool) {
    let doomed: Vec<Vec<u8>> = below(tree, dir)
        .filter(|(_, e)| !keep(e))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        tree.remove(&k);
    }
}

/// The entries strictly below `dir` ("" is the root).
fn below<'a>(tree: &'a Tree, dir: &[u8]) -> impl Iterator<Item = (&'a Vec<u8>, &'a FileEntry)> {
    let (lo, hi) = if dir.is_empty() {
        (Vec::new(), None)
    } else {
        let mut lo = dir.to_vec();
        lo.push(b'/');
        let mut hi = dir.to_vec();
        hi.push(b'/' + 1);
        (lo, Some(hi))
    };
    let root = dir.is_empty();
    tree.range(lo..)
        .take_while(move |(k, _)| hi.as_ref().is_none_or(|hi| k.as_slice() < hi.as_slice()))
        .filter(move |(k, _)| !(root && k.is_empty()))
}

pub(crate) fn apply_layer(
    tree: &mut Tree,
    index: usize,
    layer_digest: &Digest,
    members: Vec<(TarEntryInfo, Option<Digest>)>,
) {
    for (info, content) in members {
        let path = info.path.as_bytes().to_vec();
        let name = info.path.file_name();
        let parent = info
            .path
            .parent()
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default();
        if name == b".wh..wh..opq" {
            remove_below(tree, &parent, |e| e.layer == index);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let mut target = parent.clone();
            if !target.is_empty() {
                target.push(b'/');
            }
            target.extend_from_slice(hidden);
            remove_below(tree, &target, |_| false);
            tree.remove(&target);
            continue;
        }
        let kind = match info.kind {
            TarKind::File => "file",
            TarKind::Dir => "dir",
            TarKind::Symlink => "symlink",
            TarKind::Hardlink => "hardlink",
            TarKind::CharDevice => "char-device",
            TarKind::BlockDevice => "block-device",
            TarKind::Fifo => "fifo",
            TarKind::Other(_) => continue,
        };
        let link = info.link_target.as_ref().map(|l| match info.kind {
            TarKind::Hardlink => format!(
                "/{}",
                String::from_utf8_lossy(
                    crate::path::ImagePath::from_rel_bytes(l)
                        .unwrap_or_default()
                        .as_bytes()
                )
            ),
            _ => String::from_utf8_lossy(l).into_owned(),
        });
        let content = match info.kind {
            TarKind::Hardlink => info
                .link_target
                .as_ref()
                .and_then(|l| crate::path::ImagePath::from_rel_bytes(l))
                .and_then(|t| tree.get(t.as_bytes()))
                .and_then(|t| t.content.clone()),
            _ => content,
        };
        if info.kind != TarKind::Dir {
            // A non-directory replacing a directory hides what was below it.
            remove_below(tree, &path, |_| false);
        }
        let device = matches!(info.kind, TarKind::CharDevice | TarKind::BlockDevice)
            .then(|| format!("{},{}", info.dev_major, info.dev_minor));
        let xattrs = info
            .xattrs
            .iter()
            .map(|(k, v)| {
                let v = match std::str::from_utf8(v) {
                    Ok(s) if !s.contains('\0') => s.to_string(),
                    _ => format!("0x{}", hex::encode(v)),
                };
                (k.clone(), v)
            })
            .collect();
        tree.insert(
            path,
            FileEntry {
                kind,
                mode: format!("{:04o}", info.mode),
                uid: info.uid,
                gid: info.gid,
                size: info.size,
                mtime: info.mtime,
                content,
                link,
                xattrs,
                device,
                layer: index,
                layer_digest: layer_digest.clone(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ImagePath;

    fn member(path: &str, kind: TarKind) -> (TarEntryInfo, Option<Digest>) {
        (
            TarEntryInfo {
                path: ImagePath::from_rel_bytes(path.as_bytes()).unwrap(),
                raw_name: path.as_bytes().to_vec(),
                kind,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
                link_target: None,
                xattrs: BTreeMap::new(),
                dev_major: 0,
                dev_minor: 0,
            },
            (kind == TarKind::File).then(|| Digest::of(path.as_bytes())),
        )
    }

    fn paths(tree: &Tree) -> Vec<(String, usize)> {
        tree.iter()
            .map(|(k, e)| (String::from_utf8_lossy(k).into_owned(), e.layer))
            .collect()
    }

    #[test]
    fn whiteouts_remove_lower_entries_and_keep_the_introducing_layer() {
        let d0 = Digest::of(b"0");
        let d1 = Digest::of(b"1");
        let mut tree = Tree::new();
        apply_layer(
            &mut tree,
            0,
            &d0,
            vec![
                member("a", TarKind::Dir),
                member("a/x", TarKind::File),
                member("a/y", TarKind::File),
                member("b", TarKind::Dir),
                member("b/old", TarKind::File),
                member("c", TarKind::Dir),
                member("c/deep", TarKind::File),
                member("cc", TarKind::File),
            ],
        );
        apply_layer(
            &mut tree,
            1,
            &d1,
            vec![
                member("a/.wh.x", TarKind::File),
                member("b", TarKind::Dir),
                member("b/.wh..wh..opq", TarKind::File),
                member("b/new", TarKind::File),
                member("c", TarKind::File),
            ],
        );
        assert_eq!(
            paths(&tree),
            [
                ("a".into(), 0),
                ("a/y".into(), 0),
                ("b".into(), 1),
                ("b/new".into(), 1),
                ("c".into(), 1),
                ("cc".into(), 0),
            ]
        );
        assert_eq!(tree[&b"b/new".to_vec()].layer_digest, d1);
    }
}
