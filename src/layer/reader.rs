//! A streaming tar reader for layers written by any tool: ustar, PAX (`x` local headers;
//! `g` global headers are read and ignored), GNU long names/links (`L`/`K`), GNU base-256
//! numbers, old v7 headers. GNU sparse files are rejected.

use super::LayerError;
use crate::path::ImagePath;
use std::collections::BTreeMap;
use std::io::{self, Read};

/// The type of a tar member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// Any other typeflag (e.g. `V` volume labels); skipped by the extractor.
    Other(u8),
}

/// One member of a layer as listed by [`super::list_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntryInfo {
    /// The member name, cleaned (no leading `/` or `./`, no `..` above the root, no
    /// trailing `/`).
    pub path: ImagePath,
    /// The name exactly as stored (after PAX / GNU long-name processing).
    pub raw_name: Vec<u8>,
    pub kind: TarKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Size of the member's data (0 for anything but regular files).
    pub size: u64,
    pub mtime: i64,
    /// Symlink target (raw) or hard-link target (raw name of the linked member).
    pub link_target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub dev_major: u32,
    pub dev_minor: u32,
}

pub(crate) struct TarReader<R> {
    inner: R,
    /// Unread data bytes of the current member.
    remaining: u64,
    /// Padding after the current member's data.
    pad: u64,
    done: bool,
}

fn malformed(msg: impl Into<String>) -> LayerError {
    LayerError::Malformed(msg.into())
}

fn blob_err(e: io::Error) -> LayerError {
    LayerError::BlobRead(e)
}

/// Reads as many bytes as possible into `buf`; returns the count (short only at EOF).
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn parse_numeric(field: &[u8], what: &str) -> Result<u64, LayerError> {
    if field[0] & 0x80 != 0 {
        // GNU base-256: big-endian, first byte's top bit is the marker (0xff = negative).
        if field[0] == 0xff {
            return Err(malformed(format!("negative {what} in tar header")));
        }
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            if v >> 56 != 0 {
                return Err(malformed(format!("{what} too large in tar header")));
            }
            v = (v << 8) | u64::from(b);
        }
        return Ok(v);
    }
    let s = cstr(field);
    let s: Vec<u8> = s.iter().copied().filter(|&b| b != b' ').collect();
    if s.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&s).map_err(|_| malformed(format!("bad {what} field")))?;
    u64::from_str_radix(text, 8).map_err(|_| malformed(format!("bad {what} field {text:?}")))
}

fn checksum_ok(b: &[u8; 512]) -> Result<bool, LayerError> {
    let stored = parse_numeric(&b[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { x };
        unsigned += u64::from(x);
        signed += i64::from(x as i8);
    }
    Ok(stored == unsigned || stored as i64 == signed)
}

/// PAX records of one extended header.
/// PAX records as (key, value) byte strings, in file order.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_pax(data: &[u8]) -> Result<PaxRecords, LayerError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed("PAX record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("bad PAX record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(malformed("bad PAX record"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("PAX record without '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn pax_number(v: &[u8], what: &str) -> Result<u64, LayerError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(format!("bad PAX {what} {:?}", String::from_utf8_lossy(v))))
}

/// Cleans a member name into an image path (lexically; `..` never climbs above the root).
pub(crate) fn clean_name(raw: &[u8]) -> ImagePath {
    ImagePath::from_rel_bytes(raw).unwrap_or_default()
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        TarReader {
            inner,
            remaining: 0,
            pad: 0,
            done: false,
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), LayerError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(blob_err)?;
        if copied != n {
            return Err(malformed("unexpected end of layer inside a member"));
        }
        Ok(())
    }

    fn read_block(&mut self, b: &mut [u8; 512]) -> Result<bool, LayerError> {
        match read_full(&mut self.inner, b).map_err(blob_err)? {
            0 => Ok(false),
            512 => Ok(true),
            _ => Err(malformed("truncated tar header")),
        }
    }

    fn read_small(&mut self, size: u64, what: &str) -> Result<Vec<u8>, LayerError> {
        if size > 16 << 20 {
            return Err(malformed(format!("{what} of {size} bytes is too large")));
        }
        let mut v = vec![0; size as usize];
        if read_full(&mut self.inner, &mut v).map_err(blob_err)? != v.len() {
            return Err(malformed(format!("truncated {what}")));
        }
        self.skip(super::tar::padding(size) as u64)?;
        Ok(v)
    }

    /// The next member's header; its data can then be read through `self` (as `Read`).
    pub(crate) fn next_entry(&mut self) -> Result<Option<TarEntryInfo>, LayerError> {
        if self.done {
            return Ok(None);
        }
        let left = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.skip(left)?;

        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut b = [0u8; 512];
        loop {
            if !self.read_block(&mut b)? || b.iter().all(|&x| x == 0) {
                // End of archive (two zero blocks, one, or none: all accepted).
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(&b)? {
                return Err(malformed("tar header checksum mismatch"));
            }
            let typeflag = b[156];
            let size = parse_numeric(&b[124..136], "size")?;
            match typeflag {
                b'x' => pax.extend(parse_pax(&self.read_small(size, "PAX header")?)?),
                b'g' => {
                    self.read_small(size, "PAX global header")?;
                }
                b'L' => {
                    let v = self.read_small(size, "GNU long name")?;
                    long_name = Some(cstr(&v).to_vec());
                }
                b'K' => {
                    let v = self.read_small(size, "GNU long link")?;
                    long_link = Some(cstr(&v).to_vec());
                }
                _ => break,
            }
        }

        let typeflag = b[156];
        let ustar = &b[257..263] == b"ustar\0";
        let mut name = match long_name {
            Some(n) => n,
            None => {
                let n = cstr(&b[0..100]);
                let prefix = cstr(&b[345..500]);
                if ustar && !prefix.is_empty() {
                    let mut v = prefix.to_vec();
                    v.push(b'/');
                    v.extend_from_slice(n);
                    v
                } else {
                    n.to_vec()
                }
            }
        };
        let mut link = long_link.unwrap_or_else(|| cstr(&b[157..257]).to_vec());
        let mut size = parse_numeric(&b[124..136], "size")?;
        let mut uid = parse_numeric(&b[108..116], "uid")?;
        let mut gid = parse_numeric(&b[116..124], "gid")?;
        let mut mtime = parse_numeric(&b[136..148], "mtime")? as i64;
        let mode = (parse_numeric(&b[100..108], "mode")? & 0o7777) as u32;
        let mut xattrs = BTreeMap::new();
        for (k, v) in pax {
            match &k[..] {
                b"path" => name = v,
                b"linkpath" => link = v,
                b"size" => size = pax_number(&v, "size")?,
                b"uid" => uid = pax_number(&v, "uid")?,
                b"gid" => gid = pax_number(&v, "gid")?,
                b"mtime" => {
                    let s = String::from_utf8_lossy(&v);
                    let int = s.split('.').next().unwrap_or("0");
                    mtime = int
                        .parse()
                        .map_err(|_| malformed(format!("bad PAX mtime {s:?}")))?;
                }
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let key = String::from_utf8_lossy(&k[13..]).into_owned();
                    xattrs.insert(key, v);
                }
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(LayerError::Unsupported(
                        "sparse files (GNU.sparse PAX records) in layers".into(),
                    ))
                }
                _ => {}
            }
        }
        let kind = match typeflag {
            b'0' | b'7' => TarKind::File,
            0 if name.ends_with(b"/") => TarKind::Dir,
            0 => TarKind::File,
            b'1' => TarKind::Hardlink,
            b'2' => TarKind::Symlink,
            b'3' => TarKind::CharDevice,
            b'4' => TarKind::BlockDevice,
            b'5' => TarKind::Dir,
            b'6' => TarKind::Fifo,
            b'S' => {
                return Err(LayerError::Unsupported(
                    "GNU sparse members in layers".into(),
                ))
            }
            other => TarKind::Other(other),
        };
        // Header-only types carry no data whatever their size field says.
        let data = match kind {
            TarKind::File | TarKind::Other(_) => size,
            _ => 0,
        };
        self.remaining = data;
        self.pad = super::tar::padding(data) as u64;
        let (dev_major, dev_minor) = match kind {
            TarKind::CharDevice | TarKind::BlockDevice => (
                parse_numeric(&b[329..337], "devmajor")? as u32,
                parse_numeric(&b[337..345], "devminor")? as u32,
            ),
            _ => (0, 0),
        };
        let link_target = match kind {
            TarKind::Symlink | TarKind::Hardlink => Some(link),
            _ => None,
        };
        Ok(Some(TarEntryInfo {
            path: clean_name(&name),
            raw_name: name,
            kind,
            mode,
            uid,
            gid,
            size: data,
            mtime,
            link_target,
            xattrs,
            dev_major,
            dev_minor,
        }))
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer ended inside a member's data",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
