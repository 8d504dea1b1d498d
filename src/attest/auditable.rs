//! `cargo auditable`'s dependency list in a Rust binary: an ELF section `.dep-v0` holding
//! zlib-compressed JSON `{"packages":[{"name","version","source",...}]}`. Binaries are
//! untrusted input: a malformed ELF or section yields nothing, and the JSON is read to at
//! most [`MAX_JSON`] bytes.

use object::{Object, ObjectSection};
use std::io::Read;

/// The ELF magic every scanned file is checked for before it is kept further.
pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Largest decompressed dependency list.
pub const MAX_JSON: u64 = 8 << 20;

/// The decompressed `.dep-v0` JSON of an ELF file in memory, if it has a readable one.
pub fn dep_section(elf: &[u8]) -> Option<Vec<u8>> {
    dep_section_in(elf)
}

/// The same for an ELF file on disk, read where its headers point (not buffered whole).
pub fn dep_section_of_file(file: &std::fs::File) -> Option<Vec<u8>> {
    let cache = object::ReadCache::new(file);
    dep_section_in(&cache)
}

fn dep_section_in<'data, R: object::ReadRef<'data>>(data: R) -> Option<Vec<u8>> {
    if data.read_bytes_at(0, 4).ok()? != ELF_MAGIC {
        return None;
    }
    let file = object::File::parse(data).ok()?;
    let section = file.section_by_name(".dep-v0")?;
    // Bounded before it is read: zlib grows data by well under 1%, so a larger section
    // cannot inflate to at most MAX_JSON bytes.
    if section.size() > 2 * MAX_JSON {
        return None;
    }
    inflate(section.data().ok()?)
}

/// zlib data decompressed, if valid and at most [`MAX_JSON`] bytes.
fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_JSON + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= MAX_JSON).then_some(out)
}

/// `(name, version)` of every package the list names, except the local crates (the
/// binary's own workspace, which has no registry coordinates).
pub fn packages(json: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct List {
        packages: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        name: String,
        version: String,
        #[serde(default)]
        source: Option<String>,
    }
    let Ok(list) = serde_json::from_slice::<List>(json) else {
        return Vec::new();
    };
    list.packages
        .into_iter()
        .filter(|p| p.source.as_deref() != Some("local"))
        .map(|p| (p.name, p.version))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn dependency_lists_name_their_non_local_packages() {
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"itoa","version":"1.0.11","source":"crates.io","kind":"runtime"},{"name":"gitdep","version":"0.2.0","source":"git"}]}"#;
        assert_eq!(
            packages(json),
            [
                ("itoa".to_string(), "1.0.11".to_string()),
                ("gitdep".to_string(), "0.2.0".to_string())
            ]
        );
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"packages":[{"name":1}]}"#,
            b"\xff\xfe",
        ] {
            assert!(packages(bad).is_empty());
        }
    }

    #[test]
    fn malformed_binaries_and_bombs_yield_nothing() {
        // Not ELF, truncated ELF, garbage after the magic.
        for bad in [
            &b""[..],
            b"\x7fEL",
            b"\x7fELF",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0",
            b"#!/bin/sh\n",
        ] {
            assert_eq!(dep_section(bad), None);
        }
        let mut junk = ELF_MAGIC.to_vec();
        junk.extend((0..4096u32).map(|i| (i * 7919 % 251) as u8));
        assert_eq!(dep_section(&junk), None);
        // A real binary without the section.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(exe.starts_with(ELF_MAGIC));
        assert_eq!(dep_section(&exe), None);
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(dep_section_of_file(&file), None);
    }

    #[test]
    fn decompression_is_bounded() {
        let bomb = zlib(&vec![b' '; (MAX_JSON + 1) as usize]);
        assert_eq!(inflate(&bomb), None);
        assert_eq!(inflate(&zlib(b"{}")).as_deref(), Some(&b"{}"[..]));
        assert_eq!(inflate(b"not zlib"), None);
        let at_limit = zlib(&vec![b' '; MAX_JSON as usize]);
        assert_eq!(inflate(&at_limit).map(|v| v.len() as u64), Some(MAX_JSON));
    }
}
