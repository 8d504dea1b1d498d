//! Hand-built tar headers (ustar + PAX extended headers).
//!
//! Format decisions (all of them pinned by golden-digest tests, so changing any of them is
//! a format change):
//! - Every entry gets one 512-byte ustar header (magic `ustar\0`, version `00`). Numeric
//!   fields are zero-padded octal followed by a NUL (`mode` holds permission bits only,
//!   `& 0o7777`, no file-type bits). `uname`/`gname` are empty, `devmajor`/`devminor` are
//!   `0000000\0` except for device nodes (typeflags `3`/`4`), where they hold the numbers;
//!   there is no atime/ctime anywhere.
//! - Names longer than 100 bytes are split into `prefix` (≤ 155) + `name` (≤ 100) at the
//!   *last* `/` that allows it (Go's archive/tar rule). Name bytes are written raw, whatever
//!   their encoding.
//! - When a value does not fit — name not splittable, link target > 100 bytes, size or mtime
//!   ≥ 8^11, uid/gid > 0o7777777 — or the entry has xattrs, a PAX extended header (typeflag
//!   `x`) precedes the entry. Its records are sorted by key bytes (`SCHILY.xattr.*` first,
//!   then `gid`, `linkpath`, `mtime`, `path`, `size`, `uid`). Overridden ustar fields hold
//!   the first bytes of the value (strings) or zero (numbers).
//! - PAX `path`/`linkpath` values are supposed to be UTF-8. A long non-UTF-8 name is still
//!   written raw into the PAX record (Go's archive/tar and GNU tar read the bytes back
//!   unchanged); short non-UTF-8 names never need PAX.
//! - The PAX header's own ustar header is named `PaxHeaders/<base name>` (non-printable or
//!   non-ASCII bytes replaced by `_`, truncated to 100 bytes), mode 0644, uid/gid 0, mtime 0.

use std::collections::BTreeMap;

pub(crate) const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;
/// Largest value of an 11-digit octal field (size, mtime): 8 GiB − 1.
pub(crate) const MAX_OCTAL_11: u64 = 0o77777777777;
/// Largest value of a 7-digit octal field (mode, uid, gid).
pub(crate) const MAX_OCTAL_7: u64 = 0o7777777;

pub(crate) const TYPE_FILE: u8 = b'0';
pub(crate) const TYPE_HARDLINK: u8 = b'1';
pub(crate) const TYPE_SYMLINK: u8 = b'2';
pub(crate) const TYPE_CHAR: u8 = b'3';
pub(crate) const TYPE_BLOCK: u8 = b'4';
pub(crate) const TYPE_DIR: u8 = b'5';
pub(crate) const TYPE_FIFO: u8 = b'6';
pub(crate) const TYPE_PAX: u8 = b'x';

/// What one entry's header says. `name` already carries the trailing `/` for directories.
pub(crate) struct HeaderFields<'a> {
    pub name: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub linkname: &'a [u8],
    /// Device numbers (character and block devices; 0 otherwise).
    pub devmajor: u32,
    pub devminor: u32,
    pub xattrs: &'a BTreeMap<String, Vec<u8>>,
}

/// Appends the header block(s) of one entry (PAX header + records if needed, then the ustar
/// header) to `out`. Data blocks are the caller's business.
pub(crate) fn encode_header(h: &HeaderFields<'_>, out: &mut Vec<u8>) {
    let mut pax: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();

    let (prefix, name): (&[u8], &[u8]) = if h.name.len() <= NAME_LEN {
        (b"", h.name)
    } else if let Some((p, n)) = split_ustar(h.name) {
        (p, n)
    } else {
        pax.insert(b"path".to_vec(), h.name.to_vec());
        (b"", &h.name[..NAME_LEN])
    };
    let linkname = if h.linkname.len() <= NAME_LEN {
        h.linkname
    } else {
        pax.insert(b"linkpath".to_vec(), h.linkname.to_vec());
        &h.linkname[..NAME_LEN]
    };
    let mut numeric = |key: &str, v: u64, max: u64| -> u64 {
        if v > max {
            pax.insert(key.as_bytes().to_vec(), v.to_string().into_bytes());
            0
        } else {
            v
        }
    };
    let size = numeric("size", h.size, MAX_OCTAL_11);
    let mtime = numeric("mtime", h.mtime, MAX_OCTAL_11);
    let uid = numeric("uid", h.uid, MAX_OCTAL_7);
    let gid = numeric("gid", h.gid, MAX_OCTAL_7);
    for (k, v) in h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k.as_bytes());
        pax.insert(key, v.clone());
    }

    if !pax.is_empty() {
        let mut records = Vec::new();
        for (k, v) in &pax {
            pax_record(k, v, &mut records);
        }
        let base = match h.name.strip_suffix(b"/") {
            Some(n) => n,
            None => h.name,
        };
        let base = base.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        let mut pax_name = b"PaxHeaders/".to_vec();
        pax_name.extend(base.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b
            } else {
                b'_'
            }
        }));
        pax_name.truncate(NAME_LEN);
        out.extend_from_slice(&ustar_block(
            b"",
            &pax_name,
            TYPE_PAX,
            0o644,
            0,
            0,
            records.len() as u64,
            0,
            b"",
            (0, 0),
        ));
        out.extend_from_slice(&records);
        pad_to_block(out, records.len() as u64);
    }

    out.extend_from_slice(&ustar_block(
        prefix,
        name,
        h.typeflag,
        h.mode,
        uid,
        gid,
        size,
        mtime,
        linkname,
        (h.devmajor, h.devminor),
    ));
}

/// Zero bytes needed after `len` data bytes to reach a block boundary.
pub(crate) fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

fn pad_to_block(out: &mut Vec<u8>, len: u64) {
    out.resize(out.len() + padding(len), 0);
}

/// Splits a name into ustar `prefix` / `name` at the last `/` that makes both fit.
pub(crate) fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= NAME_LEN {
        return None;
    }
    let mut limit = path.len().min(PREFIX_LEN + 1);
    if limit == path.len() && path[limit - 1] == b'/' {
        limit -= 1;
    }
    let i = path[..limit].iter().rposition(|&b| b == b'/')?;
    let (prefix, name) = (&path[..i], &path[i + 1..]);
    if i == 0 || name.is_empty() || name.len() > NAME_LEN || prefix.len() > PREFIX_LEN {
        return None;
    }
    Some((prefix, name))
}

/// One PAX record: `"<len> <key>=<value>\n"` where `<len>` counts the whole record.
pub(crate) fn pax_record(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let base = key.len() + value.len() + 3;
    let mut len = base + base.to_string().len();
    if len.to_string().len() != base.to_string().len() {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[allow(clippy::too_many_arguments)]
fn ustar_block(
    prefix: &[u8],
    name: &[u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    linkname: &[u8],
    (devmajor, devminor): (u32, u32),
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], u64::from(mode & 0o7777));
    octal(&mut b[108..116], uid);
    octal(&mut b[116..124], gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], mtime);
    b[156] = typeflag;
    b[157..157 + linkname.len()].copy_from_slice(linkname);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // 7 octal digits: every major/minor Linux can make (12 and 20 bits) fits.
    octal(&mut b[329..337], u64::from(devmajor) & MAX_OCTAL_7);
    octal(&mut b[337..345], u64::from(devminor) & MAX_OCTAL_7);
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    set_checksum(&mut b);
    b
}

/// Writes `v` as zero-padded octal filling all but the last byte, which is NUL.
fn octal(field: &mut [u8], mut v: u64) {
    let n = field.len() - 1;
    for i in (0..n).rev() {
        field[i] = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[n] = 0;
    debug_assert_eq!(v, 0, "value does not fit its tar field");
}

/// Header checksum: unsigned sum of all bytes with the checksum field counted as spaces,
/// stored as six octal digits, NUL, space.
pub(crate) fn set_checksum(b: &mut [u8; BLOCK]) {
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    octal(&mut b[148..155], u64::from(sum));
    b[155] = b' ';
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], typeflag: u8, size: u64, uid: u64, link: &[u8]) -> Vec<u8> {
        let x = BTreeMap::new();
        let mut out = Vec::new();
        encode_header(
            &HeaderFields {
                name,
                typeflag,
                mode: 0o4755,
                uid,
                gid: 7,
                size,
                mtime: 1_700_000_000,
                linkname: link,
                devmajor: 0,
                devminor: 0,
                xattrs: &x,
            },
            &mut out,
        );
        out
    }

    fn field(b: &[u8], range: std::ops::Range<usize>) -> &[u8] {
        let f = &b[range];
        let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
        &f[..end]
    }

    fn checksum_ok(b: &[u8]) -> bool {
        let mut c = [0u8; BLOCK];
        c.copy_from_slice(&b[..BLOCK]);
        let stored = c[148..156].to_vec();
        set_checksum(&mut c);
        stored == c[148..156]
    }

    #[test]
    fn short_name_is_a_single_ustar_block() {
        let b = header(b"usr/bin/sh", TYPE_FILE, 5, 0, b"");
        assert_eq!(b.len(), BLOCK);
        assert_eq!(field(&b, 0..100), b"usr/bin/sh");
        assert_eq!(&b[100..108], b"0004755\0");
        assert_eq!(&b[108..116], b"0000000\0");
        assert_eq!(&b[116..124], b"0000007\0");
        assert_eq!(&b[124..136], b"00000000005\0");
        assert_eq!(&b[136..148], b"14524770400\0");
        assert_eq!(b[156], b'0');
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert_eq!(field(&b, 265..297), b"");
        assert_eq!(field(&b, 297..329), b"");
        assert_eq!(&b[329..345], b"0000000\x000000000\0");
        assert!(checksum_ok(&b));
    }

    #[test]
    fn device_numbers_fill_devmajor_and_devminor() {
        let x = BTreeMap::new();
        let mut out = Vec::new();
        encode_header(
            &HeaderFields {
                name: b"dev/loop7",
                typeflag: TYPE_BLOCK,
                mode: 0o660,
                uid: 0,
                gid: 6,
                size: 0,
                mtime: 0,
                linkname: b"",
                devmajor: 7,
                devminor: 300,
                xattrs: &x,
            },
            &mut out,
        );
        assert_eq!(out.len(), BLOCK);
        assert_eq!(out[156], b'4');
        assert_eq!(&out[329..345], b"0000007\x000000454\0");
        assert!(checksum_ok(&out));
    }

    #[test]
    fn checksum_matches_the_spec_computation() {
        let b = header(b"a", TYPE_FILE, 0, 0, b"");
        let sum: u32 = b[..148]
            .iter()
            .chain(&[b' '; 8])
            .chain(&b[156..512])
            .map(|&x| u32::from(x))
            .sum();
        assert_eq!(&b[148..156], format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn names_of_100_and_101_bytes() {
        let n100 = vec![b'a'; 100];
        let b = header(&n100, TYPE_FILE, 0, 0, b"");
        assert_eq!(b.len(), BLOCK);
        assert_eq!(&b[0..100], &n100[..]);
        assert_eq!(field(&b, 345..500), b"");

        // 101 bytes with a slash: ustar split.
        let mut n101 = vec![b'd'; 50];
        n101.push(b'/');
        n101.extend(vec![b'f'; 50]);
        let b = header(&n101, TYPE_FILE, 0, 0, b"");
        assert_eq!(b.len(), BLOCK);
        assert_eq!(field(&b, 345..500), &[b'd'; 50][..]);
        assert_eq!(field(&b, 0..100), &[b'f'; 50][..]);

        // 101 bytes without a slash: PAX path.
        let n = vec![b'x'; 101];
        let b = header(&n, TYPE_FILE, 0, 0, b"");
        assert_eq!(b.len(), 3 * BLOCK);
        assert_eq!(b[156], TYPE_PAX);
        assert_eq!(
            field(&b, 0..100),
            format!("PaxHeaders/{}", "x".repeat(89)).as_bytes()
        );
        let rec = format!("111 path={}\n", "x".repeat(101));
        assert_eq!(rec.len(), 111);
        assert_eq!(&b[124..136], format!("{:011o}\0", rec.len()).as_bytes());
        assert_eq!(&b[BLOCK..BLOCK + rec.len()], rec.as_bytes());
        assert!(b[BLOCK + rec.len()..2 * BLOCK].iter().all(|&c| c == 0));
        assert_eq!(&b[2 * BLOCK..2 * BLOCK + 100], &n[..100]);
        assert!(checksum_ok(&b) && checksum_ok(&b[2 * BLOCK..]));
    }

    #[test]
    fn split_picks_the_last_fitting_slash() {
        // 255 bytes: 155-byte prefix + '/' + 99-byte name fits exactly.
        let mut n = vec![b'p'; 60];
        n.push(b'/');
        n.extend(vec![b'q'; 94]);
        n.push(b'/');
        n.extend(vec![b'r'; 99]);
        assert_eq!(n.len(), 255);
        let (p, f) = split_ustar(&n).unwrap();
        assert_eq!(p.len(), 155);
        assert_eq!(f, &[b'r'; 99][..]);
        let b = header(&n, TYPE_FILE, 0, 0, b"");
        assert_eq!(b.len(), BLOCK);

        // A directory name's trailing slash stays with the name part.
        let mut d = vec![b'a'; 120];
        d.extend_from_slice(b"/sub/");
        let (p, f) = split_ustar(&d).unwrap();
        assert_eq!((p.len(), f), (120, &b"sub/"[..]));

        // 255 bytes whose last component is too long: PAX.
        let mut n = vec![b'p'; 100];
        n.push(b'/');
        n.extend(vec![b'r'; 154]);
        assert!(split_ustar(&n).is_none());
        let b = header(&n, TYPE_FILE, 0, 0, b"");
        assert_eq!(b[156], TYPE_PAX);
    }

    #[test]
    fn non_utf8_names() {
        // Fits: written raw, no PAX.
        let n = b"dir/caf\xe9".to_vec();
        let b = header(&n, TYPE_FILE, 0, 0, b"");
        assert_eq!(b.len(), BLOCK);
        assert_eq!(field(&b, 0..100), &n[..]);
        // Long: PAX path with the raw bytes; PAX header name sanitised.
        let mut long = vec![0xffu8; 120];
        long.extend_from_slice(b"\xe9z");
        let b = header(&long, TYPE_FILE, 0, 0, b"");
        assert_eq!(b[156], TYPE_PAX);
        assert!(field(&b, 0..100).starts_with(b"PaxHeaders/____"));
        let mut rec = b"132 path=".to_vec();
        rec.extend_from_slice(&long);
        rec.push(b'\n');
        assert_eq!(rec.len(), 132);
        assert_eq!(&b[BLOCK..BLOCK + rec.len()], &rec[..]);
    }

    #[test]
    fn huge_size_uses_pax_size() {
        let size = 8u64 << 30; // 8 GiB: one more than the 11-digit octal maximum
        assert_eq!(size, MAX_OCTAL_11 + 1);
        let b = header(b"big", TYPE_FILE, size, 0, b"");
        assert_eq!(b[156], TYPE_PAX);
        assert_eq!(&b[BLOCK..BLOCK + 19], b"19 size=8589934592\n");
        assert_eq!(&b[2 * BLOCK + 124..2 * BLOCK + 136], b"00000000000\0");
        // Just below the limit: plain octal.
        let b = header(b"big", TYPE_FILE, MAX_OCTAL_11, 0, b"");
        assert_eq!(b.len(), BLOCK);
        assert_eq!(&b[124..136], b"77777777777\0");
    }

    #[test]
    fn large_uid_and_long_link_use_pax() {
        let b = header(b"l", TYPE_SYMLINK, 0, 0o7777777, b"t");
        assert_eq!(b.len(), BLOCK);
        assert_eq!(&b[108..116], b"7777777\0");
        assert_eq!(field(&b, 157..257), b"t");
        let target = vec![b'/'; 101];
        let b = header(b"l", TYPE_SYMLINK, 0, 100_000_000, &target);
        assert_eq!(b[156], TYPE_PAX);
        let mut expect = Vec::new();
        pax_record(b"linkpath", &target, &mut expect);
        pax_record(b"uid", b"100000000", &mut expect);
        assert_eq!(&b[BLOCK..BLOCK + expect.len()], &expect[..]);
        assert_eq!(&b[2 * BLOCK + 108..2 * BLOCK + 116], b"0000000\0");
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [0usize, 1, 4, 5, 6, 90, 93, 94, 95, 994, 995, 996, 9995] {
            let mut out = Vec::new();
            pax_record(b"k", &vec![b'v'; n], &mut out);
            let sp = out.iter().position(|&c| c == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value length {n}");
        }
    }

    #[test]
    fn xattrs_are_sorted_pax_records() {
        let mut x = BTreeMap::new();
        x.insert("user.b".to_string(), b"2".to_vec());
        x.insert("security.capability".to_string(), vec![1, 0, 0, 2]);
        let mut out = Vec::new();
        encode_header(
            &HeaderFields {
                name: b"f",
                typeflag: TYPE_FILE,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: 0,
                linkname: b"",
                devmajor: 0,
                devminor: 0,
                xattrs: &x,
            },
            &mut out,
        );
        let mut expect = Vec::new();
        pax_record(
            b"SCHILY.xattr.security.capability",
            &[1, 0, 0, 2],
            &mut expect,
        );
        pax_record(b"SCHILY.xattr.user.b", b"2", &mut expect);
        assert_eq!(&out[BLOCK..BLOCK + expect.len()], &expect[..]);
        assert_eq!(out.len(), 3 * BLOCK);
    }
}
