//! Local tar archives that `ADD` unpacks: recognised by content like docker (a tar header after
//! decompression, whatever the file is called), compressed with gzip, zstd, bzip2, xz or not
//! at all. Layer blobs never use bzip2 or xz, so those decoders live here, not in `layer`.

use std::io::{BufReader, Read};
use std::path::Path;

/// How an archive `ADD` unpacks is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCompression {
    None,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl ArchiveCompression {
    /// Recognised by magic bytes; anything else is read as uncompressed.
    fn sniff(head: &[u8]) -> ArchiveCompression {
        match head {
            [0x1f, 0x8b, ..] => ArchiveCompression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => ArchiveCompression::Zstd,
            [b'B', b'Z', b'h', b'1'..=b'9', ..] => ArchiveCompression::Bzip2,
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => ArchiveCompression::Xz,
            _ => ArchiveCompression::None,
        }
    }

    /// A reader of the uncompressed bytes. Concatenated streams (pbzip2, pxz, pigz) are read
    /// whole, as tar and docker do.
    pub fn decompress<'a, R: Read + 'a>(self, r: R) -> Box<dyn Read + 'a> {
        use crate::layer::{decompress, Compression};
        match self {
            ArchiveCompression::None => decompress(r, Compression::None),
            ArchiveCompression::Gzip => decompress(r, Compression::Gzip),
            ArchiveCompression::Zstd => decompress(r, Compression::Zstd),
            ArchiveCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(
                BufReader::with_capacity(256 * 1024, r),
            )),
            ArchiveCompression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(
                BufReader::with_capacity(256 * 1024, r),
            )),
        }
    }
}

/// The compression of `path` if it is a tar archive (ADD unpacks it), None for any other
/// file (ADD copies it as is).
pub fn archive_kind(path: &Path) -> Result<Option<ArchiveCompression>, String> {
    let open = || std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()));
    let compression = ArchiveCompression::sniff(&head(&mut open()?));
    let tar_head = head(&mut compression.decompress(open()?));
    Ok(is_tar_header(&tar_head).then_some(compression))
}

/// The first 512 bytes (one tar block), fewer if the stream is shorter or cannot be read:
/// a file that does not decompress is not an archive, and ADD copies it.
fn head(r: &mut dyn Read) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    let _ = r.take(512).read_to_end(&mut buf);
    buf
}

/// A ustar/GNU tar header: the `ustar` magic at offset 257.
fn is_tar_header(block: &[u8]) -> bool {
    block.len() >= 262 && &block[257..262] == b"ustar"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_block() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[..5].copy_from_slice(b"a.txt");
        b[257..263].copy_from_slice(b"ustar\0");
        b
    }

    fn roundtrip(compressed: Vec<u8>, want: ArchiveCompression) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("archive");
        std::fs::write(&p, compressed).unwrap();
        assert_eq!(archive_kind(&p), Ok(Some(want)));
    }

    #[test]
    fn bzip2_and_xz_tars_are_recognised_by_content() {
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar_block()).unwrap();
        roundtrip(bz.finish().unwrap(), ArchiveCompression::Bzip2);

        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar_block()).unwrap();
        roundtrip(xz.finish().unwrap(), ArchiveCompression::Xz);

        roundtrip(tar_block(), ArchiveCompression::None);
    }

    #[test]
    fn compressed_non_tars_and_truncated_streams_are_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(b"just text, no tar header").unwrap();
        let p = dir.path().join("notes.bz2");
        std::fs::write(&p, bz.finish().unwrap()).unwrap();
        assert_eq!(archive_kind(&p), Ok(None));

        let p = dir.path().join("fake.xz");
        std::fs::write(&p, b"\xfd7zXZ\0 garbage").unwrap();
        assert_eq!(archive_kind(&p), Ok(None));
    }
}
