//! The diff_id of a layer (the sha256 of its uncompressed tar), computed while the layer is
//! read for something else: one pass over the blob, never a second read.

use crate::digest::{Digest, Hasher};
use std::io::{self, Read};

/// A reader over an uncompressed layer stream that hashes every byte passing through.
/// Consumers (the extractor, a listing) stop at the tar's end-of-archive blocks;
/// [`DiffIdReader::finish`] reads what they left (the record padding) so the digest covers
/// the whole stream.
pub struct DiffIdReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> DiffIdReader<R> {
    pub fn new(inner: R) -> Self {
        DiffIdReader {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Reads the rest of the stream and returns the sha256 of all of it.
    pub fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for DiffIdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_what_the_consumer_left_unread() {
        let data = vec![7u8; 10_000];
        let mut r = DiffIdReader::new(&data[..]);
        let mut head = [0u8; 512];
        r.read_exact(&mut head).unwrap();
        assert_eq!(r.finish().unwrap(), Digest::of(&data));
    }
}
