//! Hand-built tar headers: ustar, with PAX extended headers only where ustar cannot hold a
//! value (long names or link targets, sizes ≥ 8 GiB, large ids, xattrs).

/// One header to write: a PAX record block (if needed) followed by the ustar block.
pub struct Header<'a> {
    pub path: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub link: &'a [u8],
    pub xattrs: &'a [(String, Vec<u8>)],
}

const USTAR_MAX_OCTAL_11: u64 = 0o77777777777;
const USTAR_MAX_OCTAL_7: u32 = 0o7777777;

/// Splits `path` into ustar (prefix, name) when it fits: name ≤ 100, prefix ≤ 155 bytes,
/// split at a `/`.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    if path.len() > 256 {
        return None;
    }
    // The split must leave name ≤ 100 and prefix ≤ 155; pick the first workable slash.
    (0..path.len())
        .filter(|&i| path[i] == b'/')
        .find(|&i| i <= 155 && path.len() - i - 1 <= 100 && path.len() - i - 1 > 0)
        .map(|i| (&path[..i], &path[i + 1..]))
}

fn octal(field: &mut [u8], value: u64) {
    // Zero-padded octal digits followed by a NUL, as GNU and Go write them.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// A PAX record: "<len> <key>=<value>\n", where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn ustar_block(h: &Header) -> [u8; 512] {
    let (path, typeflag, mode, uid, gid, size, mtime, link) = (
        h.path, h.typeflag, h.mode, h.uid, h.gid, h.size, h.mtime, h.link,
    );
    let mut b = [0u8; 512];
    let (prefix, name) = split_ustar(path).unwrap_or((&[], &path[..path.len().min(100)]));
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], u64::from(mode));
    octal(&mut b[108..116], u64::from(uid.min(USTAR_MAX_OCTAL_7)));
    octal(&mut b[116..124], u64::from(gid.min(USTAR_MAX_OCTAL_7)));
    octal(&mut b[124..136], size.min(USTAR_MAX_OCTAL_11));
    octal(&mut b[136..148], mtime.min(USTAR_MAX_OCTAL_11));
    b[156] = typeflag;
    let l = &link[..link.len().min(100)];
    b[157..157 + l.len()].copy_from_slice(l);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], 0);
    octal(&mut b[337..345], 0);
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    // Checksum: sum of all bytes with the checksum field read as spaces.
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// Appends the header block(s) for `h` to `out`.
pub fn encode(h: &Header, out: &mut Vec<u8>) {
    let mut pax = Vec::new();
    if split_ustar(h.path).is_none() {
        pax_record(&mut pax, "path", h.path);
    }
    if h.link.len() > 100 {
        pax_record(&mut pax, "linkpath", h.link);
    }
    if h.size > USTAR_MAX_OCTAL_11 {
        pax_record(&mut pax, "size", h.size.to_string().as_bytes());
    }
    if h.uid > USTAR_MAX_OCTAL_7 {
        pax_record(&mut pax, "uid", h.uid.to_string().as_bytes());
    }
    if h.gid > USTAR_MAX_OCTAL_7 {
        pax_record(&mut pax, "gid", h.gid.to_string().as_bytes());
    }
    if h.mtime > USTAR_MAX_OCTAL_11 {
        pax_record(&mut pax, "mtime", h.mtime.to_string().as_bytes());
    }
    for (k, v) in h.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{k}"), v);
    }
    if !pax.is_empty() {
        // The PAX header's own name is derived from the entry's, so it is deterministic.
        let base = h.path.rsplit(|&c| c == b'/').next().unwrap_or(b"");
        let mut name = b"PaxHeaders.0/".to_vec();
        name.extend_from_slice(&base[..base.len().min(80)]);
        out.extend_from_slice(&ustar_block(&Header {
            path: &name,
            typeflag: b'x',
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: pax.len() as u64,
            mtime: h.mtime.min(USTAR_MAX_OCTAL_11),
            link: b"",
            xattrs: &[],
        }));
        let padded = pax.len().div_ceil(512) * 512;
        pax.resize(padded, 0);
        out.extend_from_slice(&pax);
    }
    out.extend_from_slice(&ustar_block(h));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &[u8], size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(
            &Header {
                path,
                typeflag: b'0',
                mode: 0o644,
                uid: 0,
                gid: 0,
                size,
                mtime: 0,
                link: b"",
                xattrs: &[],
            },
            &mut out,
        );
        out
    }

    #[test]
    fn short_names_are_plain_ustar_with_a_valid_checksum() {
        let b = header(b"etc/hosts", 5);
        assert_eq!(b.len(), 512);
        assert_eq!(&b[..9], b"etc/hosts");
        let stored = u32::from_str_radix(std::str::from_utf8(&b[148..154]).unwrap(), 8).unwrap();
        let mut c = b.clone();
        c[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, c.iter().map(|&x| u32::from(x)).sum::<u32>());
        assert_eq!(&b[257..263], b"ustar\0");
    }

    #[test]
    fn long_names_split_or_use_pax() {
        let split = [b"d".repeat(120), b"/".to_vec(), b"f".repeat(90)].concat();
        let b = header(&split, 0);
        assert_eq!(b.len(), 512, "fits prefix/name");
        assert_eq!(&b[345..465], &b"d".repeat(120)[..]);
        let long = b"x".repeat(255);
        let b = header(&long, 0);
        assert_eq!(b.len(), 512 * 3, "pax header + records + entry");
        assert!(b[512..1024].windows(4).any(|w| w == b"path"));
        assert_eq!(b[156], b'x');
    }

    #[test]
    fn sizes_over_8_gib_get_a_pax_size_record() {
        let nine_gib = 9u64 << 30;
        let b = header(b"big", nine_gib);
        let records = String::from_utf8_lossy(&b[512..1024]);
        assert!(records.contains(&format!("size={nine_gib}\n")), "{records}");
        assert_eq!(&b[1024 + 124..1024 + 135], b"77777777777");
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", &b"a".repeat(95));
        let s = String::from_utf8(out.clone()).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, out.len());
    }
}
