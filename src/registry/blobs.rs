//! Where a push reads blob bytes from: the store, or an image layout (a directory, or an
//! archive read in place), so `lade push out.tar` streams blobs straight out of the tar.

use crate::digest::Digest;
use crate::image::ImageLayout;
use crate::store::Store;
use std::io::{self, Read};

/// Blobs a push can read.
pub trait BlobSource: Sync {
    /// The blob's size, or `None` when this source does not have it.
    fn blob_size(&self, digest: &Digest) -> Option<u64>;
    /// A reader over the blob from `offset` to its end.
    fn open_blob_at(&self, digest: &Digest, offset: u64) -> io::Result<Box<dyn Read + Send>>;
    /// The store behind this source, if any: blobs it lacks may then be fetched into it
    /// (from the base image's repository) before they are uploaded.
    fn store(&self) -> Option<&Store> {
        None
    }
    /// A whole (small) blob: a child manifest of an index.
    fn read_blob(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_blob_at(digest, 0)?.read_to_end(&mut buf)?;
        Ok(buf)
    }
}

impl BlobSource for Store {
    fn blob_size(&self, digest: &Digest) -> Option<u64> {
        Store::blob_size(self, digest).ok()
    }
    fn open_blob_at(&self, digest: &Digest, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut f = self.open_blob(digest).map_err(io::Error::other)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(f))
    }
    fn store(&self) -> Option<&Store> {
        Some(self)
    }
}

impl BlobSource for ImageLayout {
    fn blob_size(&self, digest: &Digest) -> Option<u64> {
        ImageLayout::blob_size(self, digest)
    }
    fn open_blob_at(&self, digest: &Digest, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        ImageLayout::open_blob_at(self, digest, offset)
    }
}
