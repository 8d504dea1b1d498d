//! Pinned compression settings and the block-parallel gzip encoder.
//!
//! **gzip** (pinned; a change here is a format change caught by the golden digests):
//! - backend: flate2 with the zlib-rs backend (its hash function does not depend on CPU
//!   features, so the bytes are the same on every machine), level 6 (gzip's default).
//! - header: `1f 8b 08 00 00000000 00 ff`: no FNAME, no FEXTRA, mtime 0, XFL 0, OS 255
//!   ("unknown") so the bytes do not depend on the host OS.
//! - body: the tar stream is cut into fixed [`GZIP_BLOCK`]-byte blocks (the last one
//!   shorter). Each block is compressed on its own as raw deflate, primed with the previous
//!   32 KiB of input as a preset dictionary (as pigz does), and ended with a sync flush (an
//!   empty stored block, byte aligned, never BFINAL). The blocks are concatenated, then a
//!   final empty fixed-Huffman block (`03 00`) ends the deflate stream, followed by the
//!   CRC-32 and ISIZE trailer. One gzip member. The bytes depend on the input only, never on
//!   the number of threads: blocks can be compressed in any order on any thread.
//! - incompressible blocks (already-compressed jars, archives, media, random data) are not
//!   searched for matches: when [`SAMPLES`] evenly spaced [`SAMPLE_LEN`]-byte slices of a
//!   block, each deflated at level 1, shrink to no less than [`STORE_RATIO_PERCENT`]% in
//!   total, the block is written as stored (uncompressed) deflate blocks of up to 65 535
//!   bytes. Deflate would save next to nothing there at many times the cost. The decision
//!   depends on the block's bytes only, so it is as reproducible as the rest.
//!
//! **zstd**: the `zstd` crate's bundled libzstd (version pinned by Cargo.lock), one frame,
//! level 3, single-threaded (`nbWorkers = 0`), checksum flag on, content-size flag off (the
//! size is unknown when streaming), no dictionary id, long-distance matching off. Input is
//! fed in the same fixed blocks as gzip, so even input segmentation is pinned.

use super::Compression;
use flate2::{Compress, Crc, FlushCompress, Status};
use std::io::{self, BufReader, Read, Write};

/// Size of the independently compressed gzip blocks (and of the pipeline's buffers).
pub(crate) const GZIP_BLOCK: usize = 1 << 20;
/// Deflate window: how much preceding input primes each block.
pub(crate) const DICT_LEN: usize = 32 * 1024;
pub(crate) const GZIP_LEVEL: u32 = 6;
pub(crate) const ZSTD_LEVEL: i32 = 3;

pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final fixed-Huffman deflate block.
pub(crate) const DEFLATE_END: [u8; 2] = [0x03, 0x00];

/// How many slices of a block are test-compressed to recognise incompressible data.
pub(crate) const SAMPLES: usize = 8;
pub(crate) const SAMPLE_LEN: usize = 8 * 1024;
/// Samples that deflate to at least this share of their size mark the block incompressible.
pub(crate) const STORE_RATIO_PERCENT: usize = 98;

/// Whether `data` is not worth deflating: its sampled slices barely shrink at level 1.
fn incompressible(data: &[u8]) -> io::Result<bool> {
    if data.len() < SAMPLES * SAMPLE_LEN * 2 {
        return Ok(false);
    }
    let step = (data.len() - SAMPLE_LEN) / (SAMPLES - 1);
    let mut out = Vec::with_capacity(SAMPLE_LEN + SAMPLE_LEN / 8 + 64);
    let mut packed = 0;
    for i in 0..SAMPLES {
        let sample = &data[i * step..i * step + SAMPLE_LEN];
        let mut z = Compress::new(flate2::Compression::new(1), false);
        out.clear();
        z.compress_vec(sample, &mut out, FlushCompress::Finish)
            .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
        // Did not fit: it grew, which is incompressible enough.
        packed += if z.total_in() < sample.len() as u64 {
            SAMPLE_LEN
        } else {
            out.len()
        };
    }
    Ok(packed * 100 >= SAMPLES * SAMPLE_LEN * STORE_RATIO_PERCENT)
}

/// `data` as stored deflate blocks (never BFINAL); starts and ends byte aligned.
fn stored_blocks(data: &[u8]) -> Vec<u8> {
    const MAX: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + data.len().div_ceil(MAX) * 5);
    for chunk in data.chunks(MAX) {
        let len = chunk.len() as u16;
        out.push(0); // BFINAL 0, BTYPE 00, padding to the byte boundary
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Compresses gzip blocks.
///
/// Every block gets a *fresh* deflate state. zlib-rs's `deflateReset` keeps the old window
/// bytes, and deflate reads (and hashes) a few bytes past the end of its input, so a reused
/// state makes a block's bytes depend on what that worker compressed before — i.e. on the
/// thread schedule. A fresh state has a zeroed window; the allocation (~300 KiB per 1 MiB
/// block) is cheap next to the compression itself.
pub(crate) struct BlockCompressor;

impl BlockCompressor {
    pub(crate) fn new() -> Self {
        BlockCompressor
    }

    /// Raw deflate of `data` primed with `dict`, ended by a sync flush, plus the block's CRC.
    pub(crate) fn compress(&mut self, dict: &[u8], data: &[u8]) -> io::Result<(Vec<u8>, Crc)> {
        let mut crc = Crc::new();
        crc.update(data);
        if incompressible(data)? {
            return Ok((stored_blocks(data), crc));
        }
        let mut z = Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
        if !dict.is_empty() {
            z.set_dictionary(dict)
                .map_err(|e| io::Error::other(format!("deflate dictionary: {e}")))?;
        }
        let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 1024);
        let start_in = z.total_in();
        loop {
            let consumed = (z.total_in() - start_in) as usize;
            if out.len() == out.capacity() {
                out.reserve(64 * 1024);
            }
            let before_out = z.total_out();
            let status = z
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
            let consumed = (z.total_in() - start_in) as usize;
            // Done once all input is in and the flush completed with room to spare.
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
            if matches!(status, Status::BufError) && z.total_out() == before_out {
                out.reserve(64 * 1024);
            }
        }
        Ok((out, crc))
    }
}

/// The gzip trailer for a stream with the given CRC / length.
pub(crate) fn gzip_trailer(crc: &Crc) -> [u8; 10] {
    let mut t = [0u8; 10];
    t[..2].copy_from_slice(&DEFLATE_END);
    t[2..6].copy_from_slice(&crc.sum().to_le_bytes());
    t[6..10].copy_from_slice(&crc.amount().to_le_bytes());
    t
}

/// A zstd encoder with the pinned settings, writing to `w`.
pub(crate) fn zstd_encoder<W: Write>(w: W) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    use zstd::zstd_safe::CParameter;
    let mut e = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
    e.set_parameter(CParameter::NbWorkers(0))?;
    e.set_parameter(CParameter::ChecksumFlag(true))?;
    e.set_parameter(CParameter::ContentSizeFlag(false))?;
    e.set_parameter(CParameter::DictIdFlag(false))?;
    e.set_parameter(CParameter::EnableLongDistanceMatching(false))?;
    Ok(e)
}

/// A reader of the uncompressed tar inside a layer blob. gzip accepts multi-member streams
/// (pigz/other tools), zstd accepts concatenated frames.
pub fn decompress<'a, R: Read + 'a>(r: R, compression: Compression) -> Box<dyn Read + 'a> {
    match compression {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            256 * 1024,
            r,
        ))),
        Compression::Zstd => match zstd::stream::read::Decoder::new(r) {
            Ok(d) => Box::new(d),
            Err(e) => Box::new(FailingReader(Some(e))),
        },
    }
}

struct FailingReader(Option<io::Error>);

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("zstd decoder failed to initialise")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip_blocks(data: &[u8], block: usize) -> Vec<u8> {
        let mut c = BlockCompressor::new();
        let mut out = GZIP_HEADER.to_vec();
        let mut crc = Crc::new();
        for (i, chunk) in data.chunks(block).enumerate() {
            let start = i * block;
            let dict = &data[start.saturating_sub(DICT_LEN)..start];
            let (z, c2) = c.compress(dict, chunk).unwrap();
            crc.combine(&c2);
            out.extend_from_slice(&z);
        }
        out.extend_from_slice(&gzip_trailer(&crc));
        out
    }

    #[test]
    fn block_gzip_round_trips_and_reuses_dictionary() {
        let mut data = Vec::new();
        for i in 0..200_000u32 {
            data.extend_from_slice(format!("line {} {}\n", i % 977, i * 7919 % 13).as_bytes());
        }
        let gz = gzip_blocks(&data, 64 * 1024);
        let mut back = Vec::new();
        decompress(&gz[..], Compression::Gzip)
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
        // Reusing the compressor gives the same bytes as fresh ones (no hidden state).
        let mut fresh = GZIP_HEADER.to_vec();
        let mut crc = Crc::new();
        for (i, chunk) in data.chunks(64 * 1024).enumerate() {
            let start = i * 64 * 1024;
            let (z, c2) = BlockCompressor::new()
                .compress(&data[start.saturating_sub(DICT_LEN)..start], chunk)
                .unwrap();
            crc.combine(&c2);
            fresh.extend_from_slice(&z);
        }
        fresh.extend_from_slice(&gzip_trailer(&crc));
        assert!(fresh == gz, "reused compressor differs from fresh ones");
    }

    #[test]
    fn incompressible_block_fits() {
        let data = noise(GZIP_BLOCK + 777, 0x1234_5678);
        let gz = gzip_blocks(&data, GZIP_BLOCK);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
    }

    fn noise(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        let mut t = Vec::new();
        let mut i = 0u32;
        while t.len() < len {
            t.extend_from_slice(format!("line {} {}\n", i % 977, i * 7919 % 13).as_bytes());
            i += 1;
        }
        t.truncate(len);
        t
    }

    #[test]
    fn incompressible_blocks_are_stored_and_others_deflated() {
        let random = noise(GZIP_BLOCK, 7);
        assert!(incompressible(&random).unwrap());
        let (z, _) = BlockCompressor::new().compress(&[], &random).unwrap();
        // Stored: the data plus 5 bytes per 65 535-byte block, and the bytes themselves.
        assert_eq!(z.len(), random.len() + random.len().div_ceil(65_535) * 5);
        assert_eq!(&z[5..105], &random[..100]);
        // Half text is worth deflating; so is all text; tiny blocks are never sampled.
        let mut mixed = noise(GZIP_BLOCK / 2, 9);
        mixed.extend(text(GZIP_BLOCK / 2));
        assert!(!incompressible(&mixed).unwrap());
        assert!(!incompressible(&text(GZIP_BLOCK)).unwrap());
        assert!(!incompressible(&noise(1000, 3)).unwrap());
    }

    #[test]
    fn stored_and_deflated_blocks_mix_in_one_stream() {
        // random, text that repeats the random block's tail (a match into the dictionary
        // of a stored block), random again, short text.
        let r1 = noise(GZIP_BLOCK, 11);
        let mut data = r1.clone();
        data.extend(text(GZIP_BLOCK - 5000));
        data.extend_from_slice(&r1[GZIP_BLOCK - 5000..]);
        data.extend(noise(GZIP_BLOCK + 300, 12));
        data.extend(text(4000));
        let gz = gzip_blocks(&data, GZIP_BLOCK);
        assert!(gz.len() < data.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).unwrap();
        // The system's gzip agrees, not only flate2.
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == data);
    }
}
