//! The file-digest cache: remembers the content hash (BLAKE3) of a context file by its stat stamp (path,
//! size, mtime, inode, ctime), so an unchanged context is not re-read. A stamp mismatch is a
//! miss; the content is then hashed again, so a touched-but-equal file still yields the same
//! digest and the same step cache key.
//!
//! Members of archives (a `[java]` jar's entries) are remembered the same way, under
//! `ARCHIVE!/NAME` with the archive's stamp and the member's own size, so an unchanged jar
//! is neither decompressed nor opened to key its layers. No real file can share such a
//! record: it would need the archive's inode.

use super::{io_err, Store, StoreError};
use crate::digest::ContentHash;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

struct Record {
    path: Box<[u8]>,
    stamp: FileStamp,
    digest: ContentHash,
    size: u64,
}

/// What is known of one path: its stamp, content hash, content size.
type Known = (FileStamp, ContentHash, u64);

/// A loaded snapshot of the cache plus what this build learned; `save` merges both back.
pub struct FileDigestCache {
    file: PathBuf,
    /// By the path's bytes: hashing a `Path` walks its components, several times slower.
    known: HashMap<Box<[u8]>, Known>,
    learned: Mutex<Vec<Record>>,
}

impl FileDigestCache {
    pub fn get(&self, path: &Path, stamp: &FileStamp) -> Option<ContentHash> {
        let (s, d, _) = self.known.get(path.as_os_str().as_bytes())?;
        (s == stamp).then_some(*d)
    }

    pub fn insert(&self, path: &Path, stamp: FileStamp, digest: ContentHash) {
        self.learned.lock().expect("cache lock").push(Record {
            path: path.as_os_str().as_bytes().into(),
            stamp,
            digest,
            size: stamp.size,
        });
    }

    /// The content hash and size of member `name` of the archive at `archive`, if the
    /// archive's stamp is the one they were learned with.
    pub fn get_member(
        &self,
        archive: &Path,
        name: &str,
        stamp: &FileStamp,
    ) -> Option<(ContentHash, u64)> {
        let (s, d, size) = self.known.get(&member_path(archive, name))?;
        (s == stamp).then_some((*d, *size))
    }

    pub fn insert_member(
        &self,
        archive: &Path,
        name: &str,
        stamp: FileStamp,
        digest: ContentHash,
        size: u64,
    ) {
        self.learned.lock().expect("cache lock").push(Record {
            path: member_path(archive, name),
            stamp,
            digest,
            size,
        });
    }

    /// Writes the merged cache back, under the store's lock so concurrent builds don't lose
    /// each other's entries.
    pub fn save(self) -> Result<(), StoreError> {
        let learned = self.learned.into_inner().expect("cache lock");
        if learned.is_empty() {
            return Ok(());
        }
        let lock_path = self.file.with_extension("lock");
        let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        // What another build saved meanwhile stays, unless this one learned the same path.
        let mut known = load(&self.file);
        for r in &learned {
            known.remove(&r.path);
        }
        let mut records: Vec<(Box<[u8]>, Known)> = known.into_iter().collect();
        records.extend(
            learned
                .into_iter()
                .map(|r| (r.path, (r.stamp, r.digest, r.size))),
        );
        // Stable: of one path learned twice, the later is kept.
        records.sort_by(|a, b| a.0.cmp(&b.0));
        records.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        let mut out = Vec::with_capacity(MAGIC.len() + records.len() * 160);
        out.extend_from_slice(MAGIC);
        for (p, (st, d, size)) in &records {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(&st.size.to_le_bytes());
            out.extend_from_slice(&st.mtime_ns.to_le_bytes());
            out.extend_from_slice(&st.ctime_ns.to_le_bytes());
            out.extend_from_slice(&st.ino.to_le_bytes());
            out.extend_from_slice(&st.dev.to_le_bytes());
            out.extend_from_slice(d.as_bytes());
            out.extend_from_slice(&size.to_le_bytes());
        }
        super::write_atomic(&self.file, &out).map_err(io_err(&self.file))
    }
}

/// File format: magic, then per record: u32 path length, path bytes (any bytes: host paths
/// need not be UTF-8), size u64, mtime i128, ctime i128, ino u64, dev u64, 32 BLAKE3 bytes,
/// content size u64; all little-endian. A damaged file (or an older format) is a cold
/// cache, never an error.
const MAGIC: &[u8] = b"lade-file-digests-v3\n";

fn member_path(archive: &Path, name: &str) -> Box<[u8]> {
    [archive.as_os_str().as_bytes(), b"!/", name.as_bytes()]
        .concat()
        .into()
}

fn load(file: &Path) -> HashMap<Box<[u8]>, Known> {
    let Ok(bytes) = std::fs::read(file) else {
        return HashMap::new();
    };
    parse(&bytes).unwrap_or_default()
}

fn parse(bytes: &[u8]) -> Option<HashMap<Box<[u8]>, Known>> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = (rest.get(..n)?, rest.get(n..)?);
        rest = b;
        Some(a)
    };
    let mut map = HashMap::new();
    while let Some(len) = take(4) {
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let path: Box<[u8]> = take(len)?.into();
        let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mtime_ns = i128::from_le_bytes(take(16)?.try_into().ok()?);
        let ctime_ns = i128::from_le_bytes(take(16)?.try_into().ok()?);
        let ino = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let dev = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let digest = ContentHash::from_raw(take(32)?.try_into().ok()?);
        let content_size = u64::from_le_bytes(take(8)?.try_into().ok()?);
        map.insert(
            path,
            (
                FileStamp {
                    size,
                    mtime_ns,
                    ctime_ns,
                    ino,
                    dev,
                },
                digest,
                content_size,
            ),
        );
    }
    Some(map)
}

impl Store {
    pub fn file_digest_cache(&self) -> FileDigestCache {
        let file = self.root.join("files").join("digests.json");
        FileDigestCache {
            known: load(&file),
            file,
            learned: Mutex::new(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_digests_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stamp = FileStamp {
            size: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            ino: 4,
            dev: 5,
        };
        let cache = store.file_digest_cache();
        cache.insert(Path::new("/x"), stamp, ContentHash::of(b"x"));
        cache.insert(
            Path::new(std::ffi::OsStr::from_bytes(b"/caf\xe9")),
            stamp,
            ContentHash::of(b"y"),
        );
        cache.save().unwrap();
        let cache = store.file_digest_cache();
        assert_eq!(
            cache.get(Path::new("/x"), &stamp),
            Some(ContentHash::of(b"x"))
        );
        assert_eq!(
            cache.get(Path::new(std::ffi::OsStr::from_bytes(b"/caf\xe9")), &stamp),
            Some(ContentHash::of(b"y"))
        );
        assert_eq!(
            cache.get(Path::new("/x"), &FileStamp { size: 9, ..stamp }),
            None
        );
    }

    #[test]
    fn archive_members_are_keyed_by_the_archive_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stamp = FileStamp {
            size: 100,
            mtime_ns: 2,
            ctime_ns: 3,
            ino: 4,
            dev: 5,
        };
        let jar = Path::new("/ctx/app.jar");
        let cache = store.file_digest_cache();
        cache.insert_member(jar, "a/B.class", stamp, ContentHash::of(b"B"), 7);
        cache.insert(jar, stamp, ContentHash::of(b"jar"));
        cache.save().unwrap();
        let cache = store.file_digest_cache();
        assert_eq!(
            cache.get_member(jar, "a/B.class", &stamp),
            Some((ContentHash::of(b"B"), 7))
        );
        assert_eq!(cache.get(jar, &stamp), Some(ContentHash::of(b"jar")));
        assert_eq!(cache.get_member(jar, "a/C.class", &stamp), None);
        let touched = FileStamp {
            mtime_ns: 9,
            ..stamp
        };
        assert_eq!(cache.get_member(jar, "a/B.class", &touched), None);
    }
}
