//! The step cache index: a step's content-based cache key → the record of what it produced
//! (e.g. a layer's digests), as one small JSON file per key.

use super::{Store, StoreError};
use crate::digest::Digest;
use serde::{de::DeserializeOwned, Serialize};

impl Store {
    fn step_path(&self, key: &Digest) -> std::path::PathBuf {
        self.root.join("steps").join(format!("{}.json", key.hex()))
    }

    /// The record stored for `key`, if any. An unreadable or stale record is a miss, never an
    /// error: the step is simply rebuilt.
    pub fn step_get<T: DeserializeOwned>(&self, key: &Digest) -> Option<T> {
        let bytes = std::fs::read(self.step_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn step_put<T: Serialize>(&self, key: &Digest, record: &T) -> Result<(), StoreError> {
        let path = self.step_path(key);
        let bytes = serde_json::to_vec(record).expect("step records serialise");
        super::write_atomic(&path, &bytes).map_err(super::io_err(&path))
    }
}

/// Records of earlier builds, one small JSON file per step position (`exec`'s "why did it
/// rebuild" inputs): unlike step records, they are overwritten by every build of the step.
impl Store {
    fn record_path(&self, position: &Digest) -> std::path::PathBuf {
        self.root
            .join(RECORDS_DIR)
            .join(format!("{}.json", position.hex()))
    }

    /// The record at `position`; unreadable or stale is none.
    pub fn record_get<T: DeserializeOwned>(&self, position: &Digest) -> Option<T> {
        let bytes = std::fs::read(self.record_path(position)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn record_put<T: Serialize>(
        &self,
        position: &Digest,
        record: &T,
    ) -> Result<(), StoreError> {
        let path = self.record_path(position);
        let bytes = serde_json::to_vec(record).expect("records serialise");
        super::write_atomic(&path, &bytes).map_err(super::io_err(&path))
    }
}

/// The directory of [`Store::record_get`]'s records.
pub(super) const RECORDS_DIR: &str = "builds";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Digest::of(b"key");
        assert_eq!(store.step_get::<Vec<u32>>(&key), None);
        store.step_put(&key, &vec![1u32, 2]).unwrap();
        assert_eq!(store.step_get::<Vec<u32>>(&key), Some(vec![1, 2]));
    }
}
