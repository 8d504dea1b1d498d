//! Blobs by digest: `blobs/sha256/<hex>`, written through a hashing temp file.

use super::{io_err, Store, StoreError};
use crate::digest::{Digest, HashingWriter};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

impl Store {
    /// The directory every blob is under.
    pub fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let p = self.blob_path(digest);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::MissingBlob {
                expected: digest.clone(),
            }),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob {
                expected: digest.clone(),
            },
            _ => io_err(&p)(e),
        })
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::new();
        let p = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .map_err(io_err(&p))?;
        Ok(buf)
    }

    /// A writer for a new blob; nothing is visible in the store until `commit`.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let dir = self.tmp_dir();
        let tmp = super::interrupt::temp_file(&dir, super::BLOB_TEMP_PREFIX, "", 0o600)
            .map_err(io_err(&dir))?;
        let file = tmp.reopen().map_err(io_err(tmp.path()))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer()?;
            w.write_all(bytes)
                .map_err(io_err(self.tmp_dir().as_path()))?;
            w.commit()?;
        }
        Ok(digest)
    }

    /// Copies a blob from a reader into the store, verifying digest (and size, if given).
    pub fn import_blob(
        &self,
        reader: &mut dyn Read,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<(), StoreError> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        io::copy(reader, &mut w).map_err(io_err(self.tmp_dir().as_path()))?;
        w.commit_verified(expected, size)
    }
}

/// A blob being written: bytes go to a temp file in the store and are hashed on the way.
pub struct BlobWriter {
    store: Store,
    tmp: tempfile::NamedTempFile,
    inner: HashingWriter<BufWriter<File>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Moves the blob into place under its digest and returns the digest and size.
    pub fn commit(self) -> Result<(Digest, u64), StoreError> {
        self.commit_checked(None, None)
    }

    /// Like `commit`, but only when the content has the expected digest (and size, if given);
    /// otherwise the temp file is dropped and nothing enters the store.
    pub fn commit_verified(self, expected: &Digest, size: Option<u64>) -> Result<(), StoreError> {
        self.commit_checked(Some(expected), size).map(drop)
    }

    fn commit_checked(
        self,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Digest, u64), StoreError> {
        let (buf, digest, actual_size) = self.inner.finish();
        if let Some(expected) = expected.filter(|e| **e != digest) {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        if let Some(s) = size.filter(|s| *s != actual_size) {
            return Err(StoreError::SizeMismatch {
                expected: s,
                actual: actual_size,
            });
        }
        let tmp_path = self.tmp.path().to_path_buf();
        let file = buf
            .into_inner()
            .map_err(|e| io_err(&tmp_path)(e.into_error()))?;
        // Blobs are content, readable by anyone who can read the store (tempfile makes 0600).
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_err(&tmp_path))?;
        let dest = self.store.blob_path(&digest);
        if !dest.exists() {
            self.tmp
                .persist(&dest)
                .map_err(|e| io_err(&dest)(e.error))?;
        }
        Ok((digest, actual_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        assert_eq!(store.blob_size(&d).unwrap(), 5);
        let wrong = Digest::of(b"other");
        let err = store
            .import_blob(&mut &b"hello!"[..], &wrong, None)
            .unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }));
        assert!(!store.has_blob(&wrong));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
