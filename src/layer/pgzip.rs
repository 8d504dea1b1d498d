//! Parallel gzip with a fixed block layout: the tar stream is cut into 1 MiB blocks at fixed
//! offsets, each compressed on its own as raw deflate ending in a sync flush (the last one
//! finishes the stream), and the results are concatenated into one gzip member. The bytes
//! depend only on the input, never on how many threads compressed them.

use flate2::{Compress, Crc, FlushCompress, Status};
use rayon::prelude::*;
use std::io::{self, Write};

/// Input bytes per independently compressed block.
pub const BLOCK: usize = 1 << 20;
/// Blocks compressed per parallel batch (bounds memory: ~2 × BATCH × BLOCK).
const BATCH: usize = 8;

/// The fixed gzip header: no name, no mtime, no extra flags, OS "unknown" (255).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    filling: Vec<u8>,
    full: Vec<Vec<u8>>,
    crc: Crc,
    started: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32) -> Self {
        ParallelGzip {
            out,
            level,
            filling: Vec::with_capacity(BLOCK),
            full: Vec::new(),
            crc: Crc::new(),
            started: false,
        }
    }

    fn write_batch(&mut self, last: Option<Vec<u8>>) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&HEADER)?;
            self.started = true;
        }
        let mut blocks: Vec<(Vec<u8>, bool)> = std::mem::take(&mut self.full)
            .into_iter()
            .map(|b| (b, false))
            .collect();
        if let Some(l) = last {
            blocks.push((l, true));
        }
        let level = self.level;
        let done: Vec<io::Result<(Vec<u8>, Crc)>> = blocks
            .par_iter()
            .map(|(data, last)| compress_block(data, *last, level))
            .collect();
        for r in done {
            let (bytes, crc) = r?;
            self.crc.combine(&crc);
            self.out.write_all(&bytes)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.filling);
        self.write_batch(Some(last))?;
        let (sum, len) = (self.crc.sum(), self.crc.amount());
        self.out.write_all(&sum.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        Ok(self.out)
    }
}

fn compress_block(data: &[u8], last: bool, level: u32) -> io::Result<(Vec<u8>, Crc)> {
    let mut crc = Crc::new();
    crc.update(data);
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 1024);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == data.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => break,
            _ if all_in && room_left && !last => break,
            _ => {
                if !room_left {
                    out.reserve(64 * 1024);
                }
            }
        }
    }
    Ok((out, crc))
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (BLOCK - self.filling.len()).min(buf.len());
            self.filling.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.filling.len() == BLOCK {
                let block = std::mem::replace(&mut self.filling, Vec::with_capacity(BLOCK));
                self.full.push(block);
                if self.full.len() >= BATCH {
                    self.write_batch(None)?;
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], threads: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut w = ParallelGzip::new(Vec::new(), 6);
            for part in data.chunks(300_001) {
                w.write_all(part).unwrap();
            }
            w.finish().unwrap()
        })
    }

    #[test]
    fn decodes_and_is_independent_of_threads() {
        let mut data = Vec::new();
        for i in 0..(3 * BLOCK + 12345) {
            data.push(((i * 7919) % 251) as u8 ^ if i % 3 == 0 { (i >> 8) as u8 } else { 0 });
        }
        let one = gz(&data, 1);
        let many = gz(&data, 4);
        assert_eq!(one, many);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        let empty = gz(b"", 2);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn exact_block_multiple_round_trips() {
        let data = vec![7u8; 2 * BLOCK];
        let out = gz(&data, 2);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back.len(), data.len());
    }
}
