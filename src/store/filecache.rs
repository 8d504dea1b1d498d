//! The file-digest cache: remembers the sha256 of a context file by its stat stamp (path,
//! size, mtime, inode, ctime), so an unchanged context is not re-read. A stamp mismatch is a
//! miss; the content is then hashed again, so a touched-but-equal file still yields the same
//! digest and the same step cache key.

use super::{io_err, Store, StoreError};
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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

#[derive(Serialize, Deserialize)]
struct Record {
    path: PathBuf,
    stamp: FileStamp,
    digest: Digest,
}

/// A loaded snapshot of the cache plus what this build learned; `save` merges both back.
pub struct FileDigestCache {
    file: PathBuf,
    known: HashMap<PathBuf, (FileStamp, Digest)>,
    learned: Mutex<Vec<Record>>,
}

impl FileDigestCache {
    pub fn get(&self, path: &Path, stamp: &FileStamp) -> Option<Digest> {
        let (s, d) = self.known.get(path)?;
        (s == stamp).then(|| d.clone())
    }

    pub fn insert(&self, path: &Path, stamp: FileStamp, digest: Digest) {
        self.learned.lock().expect("cache lock").push(Record {
            path: path.to_path_buf(),
            stamp,
            digest,
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
        let mut merged = load(&self.file);
        for r in learned {
            merged.insert(r.path, (r.stamp, r.digest));
        }
        let mut records: Vec<Record> = merged
            .into_iter()
            .map(|(path, (stamp, digest))| Record {
                path,
                stamp,
                digest,
            })
            .collect();
        records.sort_by(|a, b| a.path.cmp(&b.path));
        let bytes = serde_json::to_vec(&records).expect("file cache serialises");
        super::write_atomic(&self.file, &bytes).map_err(io_err(&self.file))
    }
}

fn load(file: &Path) -> HashMap<PathBuf, (FileStamp, Digest)> {
    let Ok(bytes) = std::fs::read(file) else {
        return HashMap::new();
    };
    let records: Vec<Record> = serde_json::from_slice(&bytes).unwrap_or_default();
    records
        .into_iter()
        .map(|r| (r.path, (r.stamp, r.digest)))
        .collect()
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
        cache.insert(Path::new("/x"), stamp, Digest::of(b"x"));
        cache.save().unwrap();
        let cache = store.file_digest_cache();
        assert_eq!(cache.get(Path::new("/x"), &stamp), Some(Digest::of(b"x")));
        assert_eq!(
            cache.get(Path::new("/x"), &FileStamp { size: 9, ..stamp }),
            None
        );
    }
}
