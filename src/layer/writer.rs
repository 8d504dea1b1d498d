//! The streaming layer writer: planned members → tar bytes → sha256 (diff_id) → compression
//! → sha256 (digest) → sink, as a pipeline of threads connected by bounded channels of
//! fixed-size buffers.
//!
//! Threads: a *producer* (reads files, builds the tar stream into [`GZIP_BLOCK`]-byte
//! buffers, hashes the diff_id), for gzip `threads` *workers* compressing blocks
//! independently, and the caller's thread, which compresses zstd itself, puts the blocks back
//! in order, hashes the digest and writes the sink (so `W` needs no `Send`). At most
//! [`pool_size`] buffers are in flight; peak memory is about `2 × pool_size × 1 MiB` plus
//! one deflate state per worker, whatever the file sizes.

use super::compress::{
    gzip_trailer, zstd_encoder, BlockCompressor, DICT_LEN, GZIP_BLOCK, GZIP_HEADER,
};
use super::plan::{plan, Member, Planned};
use super::tar::{
    encode_header, padding, HeaderFields, BLOCK, TYPE_DIR, TYPE_FILE, TYPE_HARDLINK, TYPE_SYMLINK,
};
use super::{Compression, Entry, FileSource, LayerDigests, LayerError, LayerOptions};
use crate::digest::{Digest, Hasher, HashingWriter};
use flate2::Crc;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// One block of the tar stream on its way through the pipeline.
struct Chunk {
    seq: u64,
    /// Always `GZIP_BLOCK` long; the first `len` bytes are the payload.
    buf: Vec<u8>,
    len: usize,
    /// The 32 KiB of tar stream preceding this block (gzip only).
    dict: Vec<u8>,
}

struct Compressed {
    seq: u64,
    data: Vec<u8>,
    crc: Crc,
    /// The input buffer, returned to the pool once the block is written.
    buf: Vec<u8>,
}

/// Marker error: the consumer went away (it has its own error to report).
struct Cancelled;

fn pool_size(threads: usize) -> usize {
    4 * threads + 4
}

/// A process-wide cap on gzip blocks being compressed at once, across every layer written
/// concurrently (`--jobs`): each worker holds a slot only while it compresses one block, so
/// slots never wait on each other. Never changes the bytes.
struct Slots {
    held: usize,
    /// 0: no cap.
    limit: usize,
    /// The most slots ever held at once (for tests).
    peak: usize,
}

static SLOTS: (Mutex<Slots>, std::sync::Condvar) = (
    Mutex::new(Slots {
        held: 0,
        limit: 0,
        peak: 0,
    }),
    std::sync::Condvar::new(),
);

fn slots() -> std::sync::MutexGuard<'static, Slots> {
    SLOTS.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Caps how many gzip blocks the whole process compresses at once (0: no cap).
pub fn set_compression_limit(n: usize) {
    slots().limit = n;
    SLOTS.1.notify_all();
}

/// Held while one block is compressed.
struct Slot;

impl Slot {
    fn acquire() -> Slot {
        let mut s = slots();
        while s.limit > 0 && s.held >= s.limit {
            s = SLOTS.1.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.held += 1;
        s.peak = s.peak.max(s.held);
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        slots().held -= 1;
        SLOTS.1.notify_one();
    }
}

/// Default number of gzip workers: the machine's available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A second destination of the uncompressed tar stream (see [`super::write_layer_teed`]).
pub type Tee = Box<dyn Write + Send>;

pub(crate) fn write_layer_impl<W: Write>(
    entries: Vec<Entry>,
    opts: LayerOptions,
    threads: usize,
    sink: W,
    tee: Option<Tee>,
) -> Result<(W, LayerDigests), LayerError> {
    let (sink, digests) = write_impl(entries, opts, threads, sink, true, tee)?;
    Ok((sink, digests.expect("a hashed stream has digests")))
}

/// An uncompressed tar of `entries` whose digest nobody needs (an output archive): written
/// as a layer is, without hashing it.
pub(crate) fn write_tar_impl<W: Write>(
    entries: Vec<Entry>,
    mtime: u64,
    sink: W,
) -> Result<W, LayerError> {
    let opts = LayerOptions::new(Compression::None, mtime);
    Ok(write_impl(entries, opts, 1, sink, false, None)?.0)
}

/// The pipeline; `hash`: compute the digests (the tar stream's sha256 is the diff_id, and
/// the digest of an uncompressed blob too, so it is hashed once).
fn write_impl<W: Write>(
    entries: Vec<Entry>,
    opts: LayerOptions,
    threads: usize,
    sink: W,
    hash: bool,
    tee: Option<Tee>,
) -> Result<(W, Option<LayerDigests>), LayerError> {
    let members = plan(entries, opts.mtime)?;
    let threads = threads.max(1);
    let pool = pool_size(threads);
    let gzip = opts.compression == Compression::Gzip;

    std::thread::scope(|s| {
        let (full_tx, full_rx) = sync_channel::<Chunk>(pool);
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(pool);
        let producer = s.spawn(move || {
            let mut out = ChunkWriter {
                buf: vec![0; GZIP_BLOCK],
                len: 0,
                seq: 0,
                allocated: 1,
                pool,
                free: free_rx,
                tx: full_tx,
                hasher: hash.then(Hasher::new),
                tail: Vec::new(),
                keep_tail: gzip,
                tee,
            };
            let r = produce(&members, &mut out)?;
            Ok(r.and_then(|()| out.finish()))
        });

        let consumed = match opts.compression {
            Compression::None => consume_plain(full_rx, free_tx, sink),
            Compression::Zstd => consume_zstd(full_rx, free_tx, sink),
            Compression::Gzip => consume_gzip(s, threads, full_rx, free_tx, sink),
        };
        let produced = producer.join().expect("layer producer panicked");
        // A producer error explains why the stream ended early; report it first.
        let diff_id = match produced {
            Ok(Ok(d)) => d,
            Ok(Err(Cancelled)) => return Err(consumed.err().unwrap_or_else(cancelled_error)),
            Err(e) => return Err(e),
        };
        let (sink, digest, size) = consumed?;
        let digests = diff_id.map(|diff_id| LayerDigests {
            digest: digest.unwrap_or_else(|| diff_id.clone()),
            diff_id,
            size,
            compression: opts.compression,
        });
        Ok((sink, digests))
    })
}

fn cancelled_error() -> LayerError {
    LayerError::Write(io::Error::other("layer pipeline stopped"))
}

/// The sink, the digest of what was written to it (None: the same bytes as the tar stream,
/// whose digest the producer has) and its size.
type Consumed<W> = Result<(W, Option<Digest>, u64), LayerError>;

fn consume_plain<W: Write>(
    rx: Receiver<Chunk>,
    free: SyncSender<Vec<u8>>,
    mut sink: W,
) -> Consumed<W> {
    let mut size = 0;
    for c in rx {
        sink.write_all(&c.buf[..c.len]).map_err(LayerError::Write)?;
        size += c.len as u64;
        let _ = free.try_send(c.buf);
    }
    Ok((sink, None, size))
}

fn hashed<W>((sink, digest, size): (W, Digest, u64)) -> (W, Option<Digest>, u64) {
    (sink, Some(digest), size)
}

fn consume_zstd<W: Write>(rx: Receiver<Chunk>, free: SyncSender<Vec<u8>>, sink: W) -> Consumed<W> {
    let mut enc = zstd_encoder(HashingWriter::new(sink)).map_err(LayerError::Write)?;
    for c in rx {
        enc.write_all(&c.buf[..c.len]).map_err(LayerError::Write)?;
        let _ = free.try_send(c.buf);
    }
    let mut w = enc.finish().map_err(LayerError::Write)?;
    w.flush().map_err(LayerError::Write)?;
    Ok(hashed(w.finish()))
}

fn consume_gzip<'scope, W: Write>(
    s: &'scope std::thread::Scope<'scope, '_>,
    threads: usize,
    rx: Receiver<Chunk>,
    free: SyncSender<Vec<u8>>,
    sink: W,
) -> Consumed<W> {
    let rx = Arc::new(Mutex::new(rx));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<io::Result<Compressed>>();
    for _ in 0..threads {
        let rx = Arc::clone(&rx);
        let done = done_tx.clone();
        s.spawn(move || {
            let mut z = BlockCompressor::new();
            loop {
                let next = rx.lock().map(|r| r.recv());
                let Ok(Ok(c)) = next else { break };
                let slot = Slot::acquire();
                let r = z
                    .compress(&c.dict, &c.buf[..c.len])
                    .map(|(data, crc)| Compressed {
                        seq: c.seq,
                        data,
                        crc,
                        buf: c.buf,
                    });
                drop(slot);
                let failed = r.is_err();
                if done.send(r).is_err() || failed {
                    break;
                }
            }
        });
    }
    drop(done_tx);

    let mut w = HashingWriter::new(sink);
    let mut crc = Crc::new();
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Compressed> = BTreeMap::new();
    let mut header_written = false;
    // On error the workers stop once `rx` (the job queue) and `done_rx` are dropped: the
    // producer's sends fail, it drops its sender, workers see the channel closed.
    for r in done_rx {
        let c = r.map_err(LayerError::Write)?;
        waiting.insert(c.seq, c);
        while let Some(c) = waiting.remove(&next) {
            if !header_written {
                w.write_all(&GZIP_HEADER).map_err(LayerError::Write)?;
                header_written = true;
            }
            w.write_all(&c.data).map_err(LayerError::Write)?;
            crc.combine(&c.crc);
            let _ = free.try_send(c.buf);
            next += 1;
        }
    }
    if !waiting.is_empty() {
        return Err(cancelled_error());
    }
    if !header_written {
        w.write_all(&GZIP_HEADER).map_err(LayerError::Write)?;
    }
    w.write_all(&gzip_trailer(&crc))
        .map_err(LayerError::Write)?;
    w.flush().map_err(LayerError::Write)?;
    Ok(hashed(w.finish()))
}

/// The producer's end: fills fixed-size buffers with the tar stream, hashes it and ships
/// each full buffer down the pipeline.
struct ChunkWriter {
    buf: Vec<u8>,
    len: usize,
    seq: u64,
    allocated: usize,
    pool: usize,
    free: Receiver<Vec<u8>>,
    tx: SyncSender<Chunk>,
    /// None: nobody needs the stream's digest.
    hasher: Option<Hasher>,
    /// Last `DICT_LEN` bytes of the stream before the current buffer.
    tail: Vec<u8>,
    keep_tail: bool,
    /// Gets every byte of the tar stream as it is hashed; dropped (closed) on its first
    /// error or when the producer ends, whatever the outcome.
    tee: Option<Tee>,
}

impl ChunkWriter {
    fn ship(&mut self) -> Result<(), Cancelled> {
        let fresh = if self.allocated < self.pool {
            match self.free.try_recv() {
                Ok(b) => b,
                Err(_) => {
                    self.allocated += 1;
                    vec![0; GZIP_BLOCK]
                }
            }
        } else {
            self.free.recv().map_err(|_| Cancelled)?
        };
        let buf = std::mem::replace(&mut self.buf, fresh);
        let len = std::mem::replace(&mut self.len, 0);
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..len]);
        }
        if let Some(tee) = &mut self.tee {
            // The tee's reader reports its own failure; the layer goes on without it.
            if let Err(e) = tee.write_all(&buf[..len]) {
                tracing::debug!("layer tee closed: {e}");
                self.tee = None;
            }
        }
        let dict = if self.keep_tail {
            let mut next_tail = Vec::with_capacity(DICT_LEN);
            if len < DICT_LEN {
                let keep = DICT_LEN - len;
                next_tail.extend_from_slice(&self.tail[self.tail.len().saturating_sub(keep)..]);
            }
            next_tail.extend_from_slice(&buf[len.saturating_sub(DICT_LEN)..len]);
            std::mem::replace(&mut self.tail, next_tail)
        } else {
            Vec::new()
        };
        let seq = self.seq;
        self.seq += 1;
        self.tx
            .send(Chunk {
                seq,
                buf,
                len,
                dict,
            })
            .map_err(|_| Cancelled)
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), Cancelled> {
        while !data.is_empty() {
            let n = data.len().min(GZIP_BLOCK - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == GZIP_BLOCK {
                self.ship()?;
            }
        }
        Ok(())
    }

    fn zeros(&mut self, mut n: usize) -> Result<(), Cancelled> {
        while n > 0 {
            let k = n.min(GZIP_BLOCK - self.len);
            self.buf[self.len..self.len + k].fill(0);
            self.len += k;
            n -= k;
            if self.len == GZIP_BLOCK {
                self.ship()?;
            }
        }
        Ok(())
    }

    /// Streams exactly `size` bytes of `file` straight into the buffers. `Ok(Err(got))` if
    /// the file ended after `got` bytes.
    fn copy_from(&mut self, file: &mut File, size: u64) -> Result<io::Result<u64>, Cancelled> {
        let mut left = size;
        while left > 0 {
            let want = (GZIP_BLOCK - self.len).min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match file.read(&mut self.buf[self.len..self.len + want]) {
                Ok(0) => return Ok(Ok(size - left)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Ok(Err(e)),
            };
            self.len += n;
            left -= n as u64;
            if self.len == GZIP_BLOCK {
                self.ship()?;
            }
        }
        Ok(Ok(size))
    }

    fn finish(mut self) -> Result<Option<Digest>, Cancelled> {
        if self.len > 0 {
            self.ship()?;
        }
        Ok(self.hasher.map(Hasher::finish))
    }
}

/// The producer's result: the error kinds are kept apart so a consumer error wins over
/// the cancellation it caused.
fn produce(
    members: &[Planned],
    out: &mut ChunkWriter,
) -> Result<Result<(), Cancelled>, LayerError> {
    let mut hdr = Vec::with_capacity(4 * BLOCK);
    let mut name = Vec::new();
    for m in members {
        name.clear();
        name.extend_from_slice(&m.name);
        let mut dev = (0, 0);
        let (typeflag, size, link): (u8, u64, &[u8]) = match &m.member {
            Member::Dir => {
                name.push(b'/');
                (TYPE_DIR, 0, b"")
            }
            Member::File { size, .. } => (TYPE_FILE, *size, b""),
            Member::Marker => (TYPE_FILE, 0, b""),
            Member::Symlink(t) => (TYPE_SYMLINK, 0, t),
            Member::Hardlink(t) => (TYPE_HARDLINK, 0, t),
            Member::Special(t, major, minor) => {
                dev = (*major, *minor);
                (*t, 0, b"")
            }
        };
        // Open and check the file before its header goes out.
        let mut host = match &m.member {
            Member::File {
                source: FileSource::Host(p),
                size,
            } => Some((open_checked(p, *size)?, p)),
            Member::File {
                source: FileSource::Bytes(b),
                size,
            } if b.len() as u64 != *size => {
                return Err(LayerError::Changed {
                    path: m_display(&m.name).into(),
                    expected: *size,
                    actual: b.len() as u64,
                })
            }
            _ => None,
        };
        hdr.clear();
        encode_header(
            &HeaderFields {
                name: &name,
                typeflag,
                mode: m.mode,
                uid: u64::from(m.uid),
                gid: u64::from(m.gid),
                size,
                mtime: m.mtime,
                linkname: link,
                devmajor: dev.0,
                devminor: dev.1,
                xattrs: &m.xattrs,
            },
            &mut hdr,
        );
        if let Err(c) = out.write(&hdr) {
            return Ok(Err(c));
        }
        let body = match (&m.member, host.as_mut()) {
            (_, Some((f, p))) => match out.copy_from(f, size) {
                Err(c) => Err(c),
                Ok(Ok(got)) if got == size => Ok(()),
                Ok(Ok(got)) => {
                    return Err(LayerError::Changed {
                        path: p.to_path_buf(),
                        expected: size,
                        actual: got,
                    })
                }
                Ok(Err(e)) => {
                    return Err(LayerError::Read {
                        path: p.to_path_buf(),
                        error: e,
                    })
                }
            },
            (
                Member::File {
                    source: FileSource::Bytes(b),
                    ..
                },
                None,
            ) => out.write(b),
            _ => Ok(()),
        };
        if let Err(c) = body.and_then(|()| out.zeros(padding(size))) {
            return Ok(Err(c));
        }
    }
    Ok(out.zeros(2 * BLOCK))
}

fn m_display(name: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(name))
}

fn open_checked(p: &Path, size: u64) -> Result<File, LayerError> {
    let read_err = |error| LayerError::Read {
        path: p.to_path_buf(),
        error,
    };
    // O_NONBLOCK: opening a FIFO must not hang; it is rejected below. No effect on files.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(read_err)?;
    let md = f.metadata().map_err(read_err)?;
    let ft = md.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device() {
            "a special file"
        } else {
            "not a regular file"
        };
        return Err(read_err(io::Error::other(format!(
            "expected a regular file, found {what}"
        ))));
    }
    if md.size() != size {
        return Err(LayerError::Changed {
            path: p.to_path_buf(),
            expected: size,
            actual: md.size(),
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::ImagePath;

    fn text_layer(seed: u64) -> Vec<Entry> {
        let mut text = String::new();
        let mut x = seed;
        while text.len() < (6 << 20) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(&format!("{:x} w{} ", x >> 44, x % 89));
        }
        vec![Entry {
            path: ImagePath::parse_absolute("/t.txt").unwrap(),
            kind: super::super::EntryKind::File {
                size: text.len() as u64,
                source: FileSource::Bytes(Arc::new(text.into_bytes())),
                link_key: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }]
    }

    #[test]
    fn an_uncompressed_layer_is_hashed_once_and_an_archive_not_at_all() {
        let opts = LayerOptions::new(Compression::None, 0);
        let (bytes, d) = write_layer_impl(text_layer(7), opts, 2, Vec::new(), None).unwrap();
        assert_eq!(d.diff_id, Digest::of(&bytes));
        assert_eq!(d.digest, d.diff_id);
        assert_eq!(d.size, bytes.len() as u64);
        // The same bytes, unhashed.
        assert_eq!(write_tar_impl(text_layer(7), 0, Vec::new()).unwrap(), bytes);
        let gz = LayerOptions::new(Compression::Gzip, 0);
        let (blob, g) = write_layer_impl(text_layer(7), gz, 2, Vec::new(), None).unwrap();
        assert_eq!((g.diff_id, g.digest), (d.diff_id, Digest::of(&blob)));
    }

    #[test]
    fn the_compression_limit_holds_across_concurrent_layers() {
        let opts = LayerOptions::new(Compression::Gzip, 0);
        let free: Vec<Vec<u8>> = (1..=3)
            .map(|i| {
                write_layer_impl(text_layer(i), opts, 4, Vec::new(), None)
                    .unwrap()
                    .0
            })
            .collect();
        set_compression_limit(2);
        slots().peak = 0;
        let limited: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (1..=3)
                .map(|i| {
                    s.spawn(move || {
                        write_layer_impl(text_layer(i), opts, 4, Vec::new(), None)
                            .unwrap()
                            .0
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let peak = slots().peak;
        set_compression_limit(0);
        assert!(peak <= 2, "{peak} blocks compressed at once");
        assert!(peak >= 1);
        assert!(free == limited, "the limit changed the bytes");
    }

    /// A `Write` into shared bytes, to look at what a tee got after the writer dropped it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_tee_gets_the_whole_uncompressed_stream_and_the_blob_is_unchanged() {
        let opts = LayerOptions::new(Compression::Gzip, 0);
        let (plain, _) = write_layer_impl(text_layer(7), opts, 2, Vec::new(), None).unwrap();
        let tee = Shared::default();
        let (blob, d) = write_layer_impl(
            text_layer(7),
            opts,
            2,
            Vec::new(),
            Some(Box::new(tee.clone())),
        )
        .unwrap();
        assert!(blob == plain, "the tee changed the blob");
        let tar = tee.0.lock().unwrap().clone();
        assert!(tar.len() > 6 << 20);
        assert_eq!(Digest::of(&tar), d.diff_id);
    }
}
