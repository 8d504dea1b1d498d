//! A metadata-only view of an image filesystem (type, mode, owner, mtime per path), built
//! from layer listings with whiteouts applied. COPY/ADD/WORKDIR consult the stage's tree the
//! way BuildKit's file ops see the mounted snapshot: whether a destination is an existing
//! directory, which parents exist (and keep their metadata), where symlinks lead. It is also
//! how files copied out of another image or an ADD archive keep their modes and owners.

use super::ExecError;
use crate::image::Descriptor;
use crate::layer::{Entry, EntryKind, TarEntryInfo, TarKind};
use crate::store::Store;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink(Vec<u8>),
    /// Devices, FIFOs.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

/// Paths are image paths without the leading `/`; the root is always a directory.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<Vec<u8>, Node>,
}

const WH: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const MAX_LINKS: usize = 40;

impl Tree {
    /// The filesystem `layers` produce, in order. Each layer's listing is kept in the step
    /// cache (it depends on the blob's digest only), so a blob is read once per store; the
    /// blobs of layers without a cached listing must be in the store.
    /// Each layer read is checked against its diff_id in `config` (a cached listing was
    /// checked when it was made: its key holds the diff_id).
    pub fn from_layers(
        image: &str,
        layers: &[Descriptor],
        config: &crate::image::ImageConfig,
        store: &Store,
    ) -> Result<Tree, ExecError> {
        let mut t = Tree::default();
        for (l, diff_id) in super::verify::with_diff_ids(image, layers, config)? {
            t.apply_members(&layer_members(image, l, diff_id, store)?);
        }
        Ok(t)
    }

    /// Applies one tar (a layer, an ADD archive): its whiteouts hide what was there, then its
    /// members land.
    pub fn apply_tar(&mut self, infos: Vec<TarEntryInfo>) {
        let members: Vec<Member> = infos.into_iter().map(Member::from).collect();
        self.apply_members(&members);
    }

    fn apply_members(&mut self, members: &[Member]) {
        for m in members {
            let (dir, name) = split(&m.path);
            if name == OPAQUE {
                self.remove_below(dir);
            } else if let Some(hidden) = name.strip_prefix(WH) {
                self.remove(&join(dir, hidden));
            }
        }
        for m in members {
            let p = m.path.as_slice();
            if p.is_empty() || split(p).1.starts_with(WH) {
                continue;
            }
            let kind = match m.kind {
                b'd' => NodeKind::Dir,
                b'f' => NodeKind::File,
                b'l' => NodeKind::Symlink(m.target.clone()),
                b'h' => {
                    // A hard link is the file it names, metadata included.
                    let target =
                        crate::path::ImagePath::from_rel_bytes(&m.target).unwrap_or_default();
                    if let Some(n) = self.nodes.get(target.as_bytes()).cloned() {
                        self.insert(p, n);
                    }
                    continue;
                }
                _ => NodeKind::Other,
            };
            self.insert(
                p,
                Node {
                    kind,
                    mode: m.mode & 0o7777,
                    uid: m.uid,
                    gid: m.gid,
                    mtime: m.mtime,
                },
            );
        }
    }

    /// Records what a layer lade writes puts at each path.
    pub fn apply_entries(&mut self, entries: &[Entry]) {
        for e in entries {
            let kind = match &e.kind {
                EntryKind::Dir => NodeKind::Dir,
                EntryKind::File { .. } | EntryKind::Hardlink { .. } => NodeKind::File,
                EntryKind::Symlink { target } => NodeKind::Symlink(target.clone()),
                EntryKind::Special { .. } => NodeKind::Other,
                EntryKind::Whiteout => {
                    self.remove(e.path.as_bytes());
                    continue;
                }
                EntryKind::OpaqueWhiteout => {
                    self.remove_below(e.path.as_bytes());
                    continue;
                }
            };
            self.insert(
                e.path.as_bytes(),
                Node {
                    kind,
                    mode: e.mode & 0o7777,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime,
                },
            );
        }
    }

    /// Puts `node` at `path`; a non-directory replaces whatever was below the path.
    pub fn insert(&mut self, path: &[u8], node: Node) {
        if path.is_empty() {
            return;
        }
        if node.kind != NodeKind::Dir {
            self.remove_below(path);
        }
        self.nodes.insert(path.to_vec(), node);
    }

    fn remove(&mut self, path: &[u8]) {
        self.nodes.remove(path);
        self.remove_below(path);
    }

    fn remove_below(&mut self, dir: &[u8]) {
        if dir.is_empty() {
            self.nodes.clear();
            return;
        }
        let mut lo = Vec::with_capacity(dir.len() + 1);
        lo.extend_from_slice(dir);
        lo.push(b'/');
        let from = (
            std::ops::Bound::Included(&lo[..]),
            std::ops::Bound::Unbounded,
        );
        // Usually nothing is below: then nothing is allocated.
        let doomed: Vec<Vec<u8>> = self
            .nodes
            .range::<[u8], _>(from)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&lo))
            .cloned()
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// The node at `path` exactly as stored (symlinks not followed). The root is a 0755 dir.
    pub fn get(&self, path: &[u8]) -> Option<&Node> {
        static ROOT: Node = Node {
            kind: NodeKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        if path.is_empty() {
            return Some(&ROOT);
        }
        self.nodes.get(path)
    }

    /// `path` with every symlink on the way followed inside the tree, as containerd's
    /// `fs.RootPath` does for BuildKit: absolute targets count from the root and `..` stops
    /// at it, so the result never leaves the tree. Components that do not exist are kept.
    pub fn resolve(&self, path: &[u8]) -> Vec<u8> {
        let mut todo: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut done: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_slice() {
                b"." => continue,
                b".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            done.push(c);
            let here = done.join(&b'/');
            if let Some(Node {
                kind: NodeKind::Symlink(target),
                ..
            }) = self.nodes.get(&here)
            {
                links += 1;
                if links > MAX_LINKS {
                    break;
                }
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                todo.extend(
                    target
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(<[u8]>::to_vec),
                );
            }
        }
        done.join(&b'/')
    }
}

/// The filesystem a stage's steps build on: its base image's layers (read only when a step
/// asks, so a registry base is downloaded only for decisions that need it) plus what the
/// stage's earlier steps wrote.
pub struct StageFs<'a> {
    base: &'a super::BaseImage,
    store: &'a Store,
    registry: Option<&'a crate::registry::Client>,
    pull: super::PullPolicy,
    tree: Option<Tree>,
    /// Entries recorded before the base tree was needed, applied when it is.
    pending: Vec<Entry>,
    /// /etc/passwd and /etc/group as this stage last wrote them.
    passwd: Option<crate::layer::FileSource>,
    group: Option<crate::layer::FileSource>,
    base_accounts: Option<(String, String)>,
    /// What steps recorded from the first RUN found in the cache on, in order, read only
    /// when a step needs the tree or the account files (a shared-cache hit's blob may not
    /// be here at all until then).
    queue: Vec<Recorded>,
}

/// A step's record in [`StageFs::queue`].
enum Recorded {
    Entries(Vec<Entry>),
    Layer(Descriptor, crate::digest::Digest),
}

impl<'a> StageFs<'a> {
    pub fn new(
        base: &'a super::BaseImage,
        store: &'a Store,
        registry: Option<&'a crate::registry::Client>,
        pull: super::PullPolicy,
    ) -> Self {
        StageFs {
            base,
            store,
            registry,
            pull,
            tree: None,
            pending: Vec::new(),
            passwd: None,
            group: None,
            base_accounts: None,
            queue: Vec::new(),
        }
    }

    /// The stage's tree as the next step sees it.
    pub fn tree(&mut self) -> Result<&Tree, ExecError> {
        self.settle()?;
        self.tree_so_far()
    }

    /// Reads what [`Self::queue`] holds, in order.
    fn settle(&mut self) -> Result<(), ExecError> {
        for r in std::mem::take(&mut self.queue) {
            match r {
                Recorded::Entries(e) => self.record_now(&e),
                Recorded::Layer(l, diff_id) => self.record_layer_now(&l, &diff_id)?,
            }
        }
        Ok(())
    }

    /// The tree with what was recorded before the queue.
    fn tree_so_far(&mut self) -> Result<&Tree, ExecError> {
        if self.tree.is_none() {
            let base = self.base;
            let unlisted: Vec<Descriptor> =
                super::verify::with_diff_ids(&base.name, &base.layers, &base.config)?
                    .filter(|(l, diff_id)| !listing_cached(l, diff_id, self.store))
                    .map(|(l, _)| l.clone())
                    .collect();
            super::fetch_layers(
                &unlisted,
                self.base.origin.as_ref(),
                self.store,
                self.registry,
                self.pull,
            )?;
            let mut t = Tree::from_layers(&base.name, &base.layers, &base.config, self.store)?;
            t.apply_entries(&std::mem::take(&mut self.pending));
            self.tree = Some(t);
        }
        Ok(self.tree.as_ref().expect("just built"))
    }

    /// What a step's layer adds, for the steps after it.
    pub fn record(&mut self, entries: &[Entry]) {
        if self.queue.is_empty() {
            self.record_now(entries)
        } else {
            self.queue.push(Recorded::Entries(entries.to_vec()))
        }
    }

    fn record_now(&mut self, entries: &[Entry]) {
        for e in entries {
            let slot = match e.path.as_bytes() {
                b"etc/passwd" => &mut self.passwd,
                b"etc/group" => &mut self.group,
                _ => continue,
            };
            *slot = match &e.kind {
                EntryKind::File { source, .. } => Some(source.clone()),
                _ => None,
            };
        }
        match &mut self.tree {
            Some(t) => t.apply_entries(entries),
            None => self.pending.extend(entries.iter().cloned()),
        }
    }

    /// What a layer lade already wrote (a RUN found in the cache) adds, for the steps after
    /// it: its listing (cached by digest) enters the tree, its account files replace the
    /// stage's.
    pub fn record_layer(
        &mut self,
        layer: &Descriptor,
        diff_id: &crate::digest::Digest,
    ) -> Result<(), ExecError> {
        self.queue
            .push(Recorded::Layer(layer.clone(), diff_id.clone()));
        Ok(())
    }

    fn record_layer_now(
        &mut self,
        layer: &Descriptor,
        diff_id: &crate::digest::Digest,
    ) -> Result<(), ExecError> {
        const IMAGE: &str = "a RUN layer of this build";
        let fetch = |fs: &Self| {
            super::fetch_layers(
                std::slice::from_ref(layer),
                None,
                fs.store,
                fs.registry,
                fs.pull,
            )
        };
        if !listing_cached(layer, diff_id, self.store) {
            fetch(self)?;
        }
        let members = layer_members(IMAGE, layer, diff_id, self.store)?;
        let accounts = [b"etc/passwd".as_slice(), b"etc/group".as_slice()];
        if accounts.iter().any(|path| {
            members.iter().any(|m| m.path == *path)
                && self
                    .store
                    .step_get::<String>(&accounts_key(layer, diff_id, path))
                    .is_none()
        }) {
            fetch(self)?;
        }
        for (path, slot) in [
            (b"etc/passwd".as_slice(), &mut self.passwd),
            (b"etc/group".as_slice(), &mut self.group),
        ] {
            if members.iter().any(|m| m.path == path) {
                let key = accounts_key(layer, diff_id, path);
                if let Some(text) = self.store.step_get::<String>(&key) {
                    *slot = Some(crate::layer::FileSource::Bytes(std::sync::Arc::new(
                        text.into_bytes(),
                    )));
                    continue;
                }
                let name = format!("/{}", String::from_utf8_lossy(path));
                let mut config = crate::image::ImageConfig::default();
                config.rootfs.diff_ids = vec![diff_id.clone()];
                let text = super::sources::read_from_layers(
                    IMAGE,
                    std::slice::from_ref(layer),
                    &config,
                    &name,
                    self.store,
                )?;
                self.store.step_put(&key, &text)?;
                *slot = Some(crate::layer::FileSource::Bytes(std::sync::Arc::new(
                    text.into_bytes(),
                )));
            }
        }
        self.tree_so_far()?;
        self.tree
            .as_mut()
            .expect("built above")
            .apply_members(&members);
        Ok(())
    }

    /// `user[:group]` to numbers against the stage's account files (see `owner_of`).
    pub fn owner(&mut self, spec: &str, strict: bool) -> Result<(u32, u32), String> {
        let named = spec.split(':').any(|p| p.parse::<u32>().is_err());
        if !named {
            return super::sources::owner_of(spec, "", "", strict);
        }
        self.settle().map_err(|e| e.to_string())?;
        let read = |s: &crate::layer::FileSource| match s {
            crate::layer::FileSource::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
            crate::layer::FileSource::Host(p) => std::fs::read(p)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("{}: {e}", p.display())),
        };
        if self.base_accounts.is_none() && (self.passwd.is_none() || self.group.is_none()) {
            let load = || -> Result<(String, String), ExecError> {
                super::fetch_layers(
                    &self.base.layers,
                    self.base.origin.as_ref(),
                    self.store,
                    self.registry,
                    self.pull,
                )?;
                let b = self.base;
                let read = |path| {
                    super::sources::read_from_layers(
                        &b.name, &b.layers, &b.config, path, self.store,
                    )
                };
                Ok((read("/etc/passwd")?, read("/etc/group")?))
            };
            self.base_accounts = Some(load().map_err(|e| e.to_string())?);
        }
        let (bp, bg) = self.base_accounts.clone().unwrap_or_default();
        let passwd = self.passwd.as_ref().map(read).transpose()?.unwrap_or(bp);
        let group = self.group.as_ref().map(read).transpose()?.unwrap_or(bg);
        super::sources::owner_of(spec, &passwd, &group, strict)
    }
}

/// One tar member as the tree needs it; `kind` is `d`, `f`, `l`, `h` or `o` (other).
struct Member {
    path: Vec<u8>,
    kind: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    target: Vec<u8>,
}

impl From<TarEntryInfo> for Member {
    fn from(i: TarEntryInfo) -> Member {
        Member {
            path: i.path.as_bytes().to_vec(),
            kind: match i.kind {
                TarKind::Dir => b'd',
                TarKind::File => b'f',
                TarKind::Symlink => b'l',
                TarKind::Hardlink => b'h',
                _ => b'o',
            },
            mode: i.mode,
            uid: i.uid as u32,
            gid: i.gid as u32,
            mtime: i.mtime.max(0) as u64,
            target: i.link_target.unwrap_or_default(),
        }
    }
}

/// An account file a layer holds: its path in the image (`etc/passwd`) and its bytes.
pub(super) type AccountFile = (&'static [u8], std::sync::Arc<Vec<u8>>);

/// Caches the account files (`etc/passwd`, `etc/group`) a RUN's new layer holds, so a rebuild
/// that finds the RUN cached takes them from here instead of searching the layer for them.
pub(super) fn remember_accounts(
    layer: &Descriptor,
    diff_id: &crate::digest::Digest,
    files: &[AccountFile],
    store: &Store,
) -> Result<(), ExecError> {
    for (path, bytes) in files {
        let text = String::from_utf8_lossy(bytes).into_owned();
        store.step_put(&accounts_key(layer, diff_id, path), &text)?;
    }
    Ok(())
}

/// What a shared cache carries about a layer besides its blob, so a runner that never
/// downloads the blob still knows what the layer holds for the steps after it: its listing
/// and its account files (`etc/passwd`, `etc/group`), as this store caches them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerNotes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub accounts: std::collections::BTreeMap<String, String>,
}

/// The notes of a layer whose blob (or listing) the store has; `None` otherwise.
pub fn layer_notes(store: &Store, d: &crate::layer::LayerDigests) -> Option<LayerNotes> {
    let desc = Descriptor::new(d.compression.oci_media_type(), d.digest.clone(), d.size);
    if !store.has_blob(&d.digest) && !listing_cached(&desc, &d.diff_id, store) {
        return None;
    }
    let members = layer_members("a cached layer", &desc, &d.diff_id, store).ok()?;
    let mut notes = LayerNotes {
        listing: store.step_get::<String>(&listing_key(&desc, &d.diff_id)),
        accounts: Default::default(),
    };
    for path in [b"etc/passwd".as_slice(), b"etc/group".as_slice()] {
        if !members.iter().any(|m| m.path == path) {
            continue;
        }
        let text = match store.step_get::<String>(&accounts_key(&desc, &d.diff_id, path)) {
            Some(t) => t,
            None => {
                let mut config = crate::image::ImageConfig::default();
                config.rootfs.diff_ids = vec![d.diff_id.clone()];
                let name = format!("/{}", String::from_utf8_lossy(path));
                super::sources::read_from_layers(
                    "a cached layer",
                    std::slice::from_ref(&desc),
                    &config,
                    &name,
                    store,
                )
                .ok()?
            }
        };
        notes
            .accounts
            .insert(String::from_utf8_lossy(path).into_owned(), text);
    }
    Some(notes)
}

/// Caches a shared cache's notes of a layer, as if this store had read the layer.
pub fn seed_layer_notes(
    store: &Store,
    d: &crate::layer::LayerDigests,
    notes: &LayerNotes,
) -> Result<(), crate::store::StoreError> {
    let desc = Descriptor::new(d.compression.oci_media_type(), d.digest.clone(), d.size);
    if let Some(l) = &notes.listing {
        store.step_put(&listing_key(&desc, &d.diff_id), l)?;
    }
    for (path, text) in &notes.accounts {
        if path == "etc/passwd" || path == "etc/group" {
            store.step_put(&accounts_key(&desc, &d.diff_id, path.as_bytes()), text)?;
        }
    }
    Ok(())
}

/// The step-cache key of an account file (`etc/passwd`, `etc/group`) a layer holds.
fn accounts_key(
    l: &Descriptor,
    diff_id: &crate::digest::Digest,
    path: &[u8],
) -> crate::digest::Digest {
    crate::plan::cache_key(
        &(
            "lade-layer-accounts-v1",
            l.digest.to_string(),
            diff_id.to_string(),
            String::from_utf8_lossy(path).into_owned(),
        ),
        None,
        &[],
    )
}

/// The step-cache key of a layer's listing: the blob and the diff_id it was verified
/// against (an image claiming another diff_id for the same blob reads it again, and fails).
fn listing_key(l: &Descriptor, diff_id: &crate::digest::Digest) -> crate::digest::Digest {
    crate::plan::cache_key(
        &(
            "lade-tree-listing-v2",
            l.digest.to_string(),
            diff_id.to_string(),
        ),
        None,
        &[],
    )
}

/// Reads a layer this build wrote and caches its listing (a failure only means the next
/// build reads it again).
pub fn cache_listing(store: &Store, d: &crate::layer::LayerDigests) {
    let desc = Descriptor::new(d.compression.oci_media_type(), d.digest.clone(), d.size);
    if let Err(e) = layer_members("a RUN layer of this build", &desc, &d.diff_id, store) {
        tracing::debug!("listing layer {}: {e}", d.digest);
    }
}

/// Whether `l`'s listing is cached (its blob need not be fetched for the tree).
pub fn listing_cached(l: &Descriptor, diff_id: &crate::digest::Digest, store: &Store) -> bool {
    store.step_get::<String>(&listing_key(l, diff_id)).is_some()
}

/// A layer's members, from the cache or by reading the blob (and then cached). The cached
/// form is one line per member: kind, octal mode, uid, gid, mtime, hex path, hex target.
fn layer_members(
    image: &str,
    l: &Descriptor,
    diff_id: &crate::digest::Digest,
    store: &Store,
) -> Result<Vec<Member>, ExecError> {
    let key = listing_key(l, diff_id);
    if let Some(text) = store.step_get::<String>(&key) {
        let parsed: Option<Vec<Member>> = text
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                let [kind, mode, uid, gid, mtime, path, target] = f.as_slice() else {
                    return None;
                };
                Some(Member {
                    kind: *kind.as_bytes().first()?,
                    mode: u32::from_str_radix(mode, 8).ok()?,
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                    mtime: mtime.parse().ok()?,
                    path: hex::decode(path).ok()?,
                    target: hex::decode(target).ok()?,
                })
            })
            .collect();
        if let Some(members) = parsed {
            return Ok(members);
        }
    }
    let members: Vec<Member> = super::verify::read_layer(store, image, l, diff_id, |r| {
        Ok(crate::layer::list_layer(
            r,
            crate::layer::Compression::None,
        )?)
    })?
    .into_iter()
    .map(Member::from)
    .collect();
    let mut text = String::new();
    for m in &members {
        text.push_str(&format!(
            "{}\t{:o}\t{}\t{}\t{}\t{}\t{}\n",
            m.kind as char,
            m.mode,
            m.uid,
            m.gid,
            m.mtime,
            hex::encode(&m.path),
            hex::encode(&m.target)
        ));
    }
    store.step_put(&key, &text)?;
    Ok(members)
}

fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (b"", p),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: NodeKind) -> Node {
        Node {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let mut t = Tree::default();
        t.insert(b"run", node(NodeKind::Dir));
        t.insert(b"var", node(NodeKind::Dir));
        t.insert(b"var/run", node(NodeKind::Symlink(b"../run".to_vec())));
        t.insert(b"lib", node(NodeKind::Symlink(b"/usr/lib".to_vec())));
        t.insert(b"up", node(NodeKind::Symlink(b"../../../x".to_vec())));
        assert_eq!(t.resolve(b"var/run/app"), b"run/app");
        assert_eq!(t.resolve(b"lib/foo"), b"usr/lib/foo");
        assert_eq!(t.resolve(b"up"), b"x");
        t.insert(b"loop", node(NodeKind::Symlink(b"loop".to_vec())));
        let _ = t.resolve(b"loop/a");
    }

    #[test]
    fn layer_listings_are_cached_by_digest() {
        use crate::layer::{write_layer, Compression, LayerOptions};
        use crate::path::ImagePath;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entry = |p: &str, kind: EntryKind, mode: u32| Entry {
            path: ImagePath::parse_absolute(p).unwrap(),
            kind,
            mode,
            uid: 7,
            gid: 8,
            mtime: 99,
            xattrs: BTreeMap::new(),
        };
        let entries = vec![
            entry("/tmp", EntryKind::Dir, 0o1777),
            entry(
                "/lib",
                EntryKind::Symlink {
                    target: b"usr/lib".to_vec(),
                },
                0o777,
            ),
        ];
        let (tar, _) =
            write_layer(entries, LayerOptions::new(Compression::None, 0), Vec::new()).unwrap();
        let digest = store.put_bytes(&tar).unwrap();
        let l = Descriptor::new(
            crate::image::media_types::OCI_LAYER_TAR,
            digest.clone(),
            tar.len() as u64,
        );
        // Uncompressed: the diff_id is the blob's digest.
        let mut config = crate::image::ImageConfig::default();
        config.rootfs.diff_ids = vec![digest.clone()];
        let mut liar = config.clone();
        liar.rootfs.diff_ids = vec![crate::digest::Digest::of(b"something else")];
        let e = Tree::from_layers("oci:liar", std::slice::from_ref(&l), &liar, &store)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("base image oci:liar: layer "), "{e}");
        assert!(e.contains(&digest.to_string()), "{e}");
        assert!(!listing_cached(&l, &liar.rootfs.diff_ids[0], &store));
        let e = Tree::from_layers(
            "oci:short",
            std::slice::from_ref(&l),
            &Default::default(),
            &store,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lists 0 diff_ids for 1 layers"), "{e}");

        let first = Tree::from_layers("oci:x", std::slice::from_ref(&l), &config, &store).unwrap();
        assert!(listing_cached(&l, &digest, &store));
        // The cached listing does not vouch for another diff_id claim on the same blob.
        assert!(!listing_cached(&l, &liar.rootfs.diff_ids[0], &store));
        std::fs::remove_file(store.blob_path(&digest)).unwrap();
        let again = Tree::from_layers("oci:x", &[l], &config, &store).unwrap();
        let tmp = again.get(b"tmp").unwrap();
        assert_eq!((tmp.mode, tmp.uid, tmp.gid, tmp.mtime), (0o1777, 7, 8, 99));
        assert_eq!(again.resolve(b"lib/x"), b"usr/lib/x");
        assert_eq!(first.nodes, again.nodes);
    }

    #[test]
    fn a_file_replacing_a_directory_hides_its_contents() {
        let mut t = Tree::default();
        t.insert(b"a", node(NodeKind::Dir));
        t.insert(b"a/b", node(NodeKind::File));
        t.insert(b"a", node(NodeKind::File));
        assert!(t.get(b"a/b").is_none());
    }
}
