//! Content digests (`sha256:<hex>`) and a hashing writer used wherever bytes are produced.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

/// A sha256 content digest. Only sha256 is produced; other algorithms are rejected on parse.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

#[derive(Debug, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
pub struct DigestParseError(pub String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
    pub fn from_raw(raw: [u8; 32]) -> Digest {
        Digest(raw)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The 64 hex characters, without the algorithm prefix (the blob file name).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DigestParseError(s.to_string());
        let hex_part = s.strip_prefix("sha256:").ok_or_else(err)?;
        if hex_part.len() != 64
            || hex_part
                .bytes()
                .any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(err());
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut raw).map_err(|_| err())?;
        Ok(Digest(raw))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The BLAKE3 hash of an input file's content, as cache keys see it. It never leaves the
/// store: blobs and image documents are named by sha256 `Digest`s. BLAKE3 because a cold
/// build hashes every input file once before writing anything, and BLAKE3 is several times
/// faster than sha256 and splits one big file across threads.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }
    pub fn from_raw(raw: [u8; 32]) -> ContentHash {
        ContentHash(raw)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Hashes a reader to its end, in 4 MiB pieces each spread over the rayon pool, so
    /// memory stays bounded while a big file still uses every core.
    pub fn of_reader(r: &mut impl io::Read) -> io::Result<ContentHash> {
        const PIECE: usize = 4 << 20;
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; PIECE];
        loop {
            let mut filled = 0;
            while filled < PIECE {
                match r.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(ContentHash(*h.finalize().as_bytes()));
            }
            if filled >= 256 * 1024 {
                h.update_rayon(&buf[..filled]);
            } else {
                h.update(&buf[..filled]);
            }
            if filled < PIECE {
                return Ok(ContentHash(*h.finalize().as_bytes()));
            }
        }
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Incremental sha256 over a byte stream.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// A writer that hashes and counts everything passing through it to an inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
            count: 0,
        }
    }
    /// The inner writer, the digest of all bytes written and their number.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.count)
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let d = Digest::of(b"");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert!("sha512:00".parse::<Digest>().is_err());
        assert!("sha256:E3B0".parse::<Digest>().is_err());
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(n, 3);
        assert_eq!(d, Digest::of(b"abc"));
    }

    #[test]
    fn content_hash_of_a_reader_matches_the_one_shot_hash() {
        // Sizes around the 4 MiB piece boundary and the parallel threshold.
        for len in [0usize, 1, 256 * 1024, (4 << 20) - 1, 4 << 20, (9 << 20) + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let streamed = ContentHash::of_reader(&mut &data[..]).unwrap();
            assert_eq!(streamed, ContentHash::of(&data), "length {len}");
        }
        assert_eq!(
            ContentHash::of(b"").to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
