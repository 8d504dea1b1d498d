//! Reading an OCI image layout where it lies: a directory, or an image archive (a plain tar
//! of a layout, as `type=oci`/`type=docker` outputs and `docker save` write) read in place.
//! For an archive only the tar headers are read to learn where each member's bytes start;
//! blobs are then read by seeking, so finding an image's manifest never touches its layers.

use super::{media_types, Descriptor, Index, Platform};
use crate::digest::Digest;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The annotation naming an image in an index (`oci:DIR:TAG`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image layout in a directory or in a tar archive.
#[derive(Debug, Clone)]
pub enum ImageLayout {
    Dir(PathBuf),
    Archive {
        file: PathBuf,
        /// Member path (without `./`) → (offset of its content, size).
        members: HashMap<String, (u64, u64)>,
    },
}

impl ImageLayout {
    /// A layout directory as it is.
    pub fn dir(dir: &Path) -> ImageLayout {
        ImageLayout::Dir(dir.to_path_buf())
    }

    /// An archive: reads the tar headers (seeking over contents) to index its members.
    pub fn archive(file: &Path) -> io::Result<ImageLayout> {
        let mut f = File::open(file)?;
        let members = scan_tar(&mut f)?;
        Ok(ImageLayout::Archive {
            file: file.to_path_buf(),
            members,
        })
    }

    fn describe(&self) -> String {
        match self {
            ImageLayout::Dir(d) => d.display().to_string(),
            ImageLayout::Archive { file, .. } => file.display().to_string(),
        }
    }

    /// Size of a file of the layout (`index.json`, `blobs/sha256/…`), if present.
    pub fn file_size(&self, rel: &str) -> Option<u64> {
        match self {
            ImageLayout::Dir(d) => std::fs::metadata(d.join(rel))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
            ImageLayout::Archive { members, .. } => members.get(rel).map(|(_, size)| *size),
        }
    }

    /// A reader over a file of the layout, from `offset` to its end.
    pub fn open_at(&self, rel: &str, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        match self {
            ImageLayout::Dir(d) => {
                let mut f = File::open(d.join(rel))?;
                f.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(f))
            }
            ImageLayout::Archive { file, members } => {
                let (start, size) = *members.get(rel).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{rel} is not in {}", file.display()),
                    )
                })?;
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(start + offset.min(size)))?;
                Ok(Box::new(f.take(size.saturating_sub(offset))))
            }
        }
    }

    /// A whole (small) file of the layout.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        self.open_at(rel, 0)
            .and_then(|mut r| r.read_to_end(&mut buf))
            .map_err(|e| format!("{}: {rel}: {e}", self.describe()))?;
        Ok(buf)
    }

    /// A blob, verified against its descriptor (for manifests, indexes and configs).
    pub fn read_blob(&self, d: &Descriptor) -> Result<Vec<u8>, String> {
        let bytes = self.read(&blob_path(&d.digest))?;
        if bytes.len() as u64 != d.size || Digest::of(&bytes) != d.digest {
            return Err(format!(
                "blob {} in {} does not match its descriptor",
                d.digest,
                self.describe()
            ));
        }
        Ok(bytes)
    }

    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        self.file_size(&blob_path(d))
    }

    pub fn open_blob_at(&self, d: &Digest, offset: u64) -> io::Result<Box<dyn Read + Send>> {
        self.open_at(&blob_path(d), offset)
    }

    /// The image manifest (descriptor and bytes) named by `tag`, or the only image, or the
    /// one for `platform`; an index or manifest list is followed to `platform`'s manifest.
    pub fn resolve(
        &self,
        tag: Option<&str>,
        platform: &Platform,
    ) -> Result<(Descriptor, Vec<u8>), String> {
        let desc = self.top(tag, platform)?;
        let manifest = resolve_index(&desc, platform, &|d| self.read_blob(d))?;
        let bytes = self.read_blob(&manifest)?;
        Ok((manifest, bytes))
    }

    /// What `tag` names in `index.json` (or its only entry) as it is: a manifest, or a whole
    /// index / manifest list with every platform (what a push sends). Only when several
    /// untagged entries exist is `platform` used to pick one.
    pub fn select(
        &self,
        tag: Option<&str>,
        platform: &Platform,
    ) -> Result<(Descriptor, Vec<u8>), String> {
        let desc = self.top(tag, platform)?;
        if matches!(
            desc.media_type.as_str(),
            media_types::DOCKER_SCHEMA1 | media_types::DOCKER_SCHEMA1_SIGNED
        ) {
            return Err(SCHEMA1_UNSUPPORTED.into());
        }
        let bytes = self.read_blob(&desc)?;
        Ok((desc, bytes))
    }

    fn top(&self, tag: Option<&str>, platform: &Platform) -> Result<Descriptor, String> {
        let index: Index = serde_json::from_slice(&self.read("index.json")?)
            .map_err(|e| format!("index.json: {e}"))?;
        let candidates: Vec<&Descriptor> = match tag {
            Some(t) => index
                .manifests
                .iter()
                .filter(|d| {
                    d.annotations
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_some_and(|r| r == t)
                })
                .collect(),
            None => index.manifests.iter().collect(),
        };
        let desc = match candidates.as_slice() {
            [] => {
                return Err(format!(
                    "no image tagged {:?} in index.json",
                    tag.unwrap_or("")
                ))
            }
            [one] => *one,
            many => platform
                .best_match(many.iter().copied(), |d| d.platform.as_ref())
                .ok_or_else(|| {
                    format!(
                        "{} images in index.json and none for {platform}; name one with :TAG",
                        many.len()
                    )
                })?,
        };
        Ok(desc.clone())
    }
}

const SCHEMA1_UNSUPPORTED: &str =
    "Docker schema 1 manifests are not supported; re-push the image with a current tool";

/// `blobs/<algorithm>/<hex>`
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// Follows an index (or Docker manifest list) to the manifest for `platform`.
pub fn resolve_index(
    desc: &Descriptor,
    platform: &Platform,
    read: &dyn Fn(&Descriptor) -> Result<Vec<u8>, String>,
) -> Result<Descriptor, String> {
    match desc.media_type.as_str() {
        media_types::OCI_MANIFEST | media_types::DOCKER_MANIFEST => Ok(desc.clone()),
        media_types::OCI_INDEX | media_types::DOCKER_MANIFEST_LIST => {
            let index: Index = serde_json::from_slice(&read(desc)?)
                .map_err(|e| format!("index {}: {e}", desc.digest))?;
            let m = platform
                .best_match(&index.manifests, |m| m.platform.as_ref())
                .ok_or_else(|| format!("no manifest for {platform} in index {}", desc.digest))?;
            resolve_index(m, platform, read)
        }
        media_types::DOCKER_SCHEMA1 | media_types::DOCKER_SCHEMA1_SIGNED => {
            Err(SCHEMA1_UNSUPPORTED.into())
        }
        other => Err(format!("unsupported manifest media type {other}")),
    }
}

/// Indexes the regular files of a tar by path, seeking over their contents. Understands
/// ustar, PAX (`path`, `size`) and GNU long names; other entries are skipped.
fn scan_tar(f: &mut File) -> io::Result<HashMap<String, (u64, u64)>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a tar: {m}"));
    let mut members = HashMap::new();
    let mut pos: u64 = 0;
    let mut long_name: Option<String> = None;
    let mut pax: HashMap<String, String> = HashMap::new();
    let mut header = [0u8; 512];
    loop {
        f.seek(SeekFrom::Start(pos))?;
        match f.read_exact(&mut header) {
            Ok(()) => {}
            // Some writers stop without the two zero blocks.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !members.is_empty() => break,
            Err(e) => return Err(e),
        }
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let computed: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u64
                }
            })
            .sum();
        if parse_octal(&header[148..156]) != Some(computed) {
            return Err(bad("bad header checksum"));
        }
        let mut size = parse_size(&header[124..136]).ok_or_else(|| bad("bad size field"))?;
        if let Some(s) = pax.get("size").and_then(|s| s.parse().ok()) {
            size = s;
        }
        let data = pos + 512;
        let next = data + size.div_ceil(512) * 512;
        match header[156] {
            b'x' => {
                pax = parse_pax(&read_member(f, data, size)?);
                pos = next;
                continue;
            }
            b'g' => {}
            b'L' => {
                let mut name = read_member(f, data, size)?;
                while name.last() == Some(&0) {
                    name.pop();
                }
                long_name = Some(String::from_utf8_lossy(&name).into_owned());
                pos = next;
                continue;
            }
            b'0' | 0 | b'7' => {
                let name = match (pax.remove("path"), long_name.take()) {
                    (Some(p), _) => p,
                    (None, Some(l)) => l,
                    (None, None) => {
                        let field = |r: std::ops::Range<usize>| {
                            let b = &header[r];
                            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                            String::from_utf8_lossy(&b[..end]).into_owned()
                        };
                        let name = field(0..100);
                        let prefix = if &header[257..262] == b"ustar" {
                            field(345..500)
                        } else {
                            String::new()
                        };
                        if prefix.is_empty() {
                            name
                        } else {
                            format!("{prefix}/{name}")
                        }
                    }
                };
                let name = name.trim_start_matches("./").trim_start_matches('/');
                members.insert(name.to_string(), (data, size));
            }
            _ => {}
        }
        pax.clear();
        long_name = None;
        pos = next;
    }
    Ok(members)
}

fn read_member(f: &mut File, offset: u64, size: u64) -> io::Result<Vec<u8>> {
    if size > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "tar extended header larger than 1 MiB",
        ));
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; size as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Octal, or GNU base-256 (high bit of the first byte set) for large sizes.
fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    parse_octal(field)
}

/// PAX records: `"<len> key=value\n"`.
fn parse_pax(bytes: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(sp) = rest.iter().position(|&b| b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        if len <= sp + 1 || len > rest.len() {
            break;
        }
        let record = &rest[sp + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&record[..eq]).into_owned(),
                String::from_utf8_lossy(&record[eq + 1..]).into_owned(),
            );
        }
        rest = &rest[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn archive_members_are_found_without_reading_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("layout");
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        let long = "d".repeat(120);
        std::fs::create_dir_all(root.join(&long)).unwrap();
        std::fs::write(root.join("index.json"), b"{}").unwrap();
        std::fs::write(root.join("blobs/sha256/aa"), vec![7u8; 3000]).unwrap();
        std::fs::write(root.join(&long).join("f"), b"long name").unwrap();
        let tar = tmp.path().join("x.tar");
        // GNU tar writes ./-prefixed names and a GNU long-name entry; --format=pax uses PAX.
        for format in ["gnu", "pax"] {
            let st = Command::new("tar")
                .arg(format!("--format={format}"))
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
            let l = ImageLayout::archive(&tar).unwrap();
            assert_eq!(l.read("index.json").unwrap(), b"{}");
            assert_eq!(l.file_size("blobs/sha256/aa"), Some(3000));
            let mut tail = Vec::new();
            l.open_at("blobs/sha256/aa", 2990)
                .unwrap()
                .read_to_end(&mut tail)
                .unwrap();
            assert_eq!(tail, vec![7u8; 10]);
            assert_eq!(l.read(&format!("{long}/f")).unwrap(), b"long name");
            assert!(l.read("missing").is_err());
        }
    }

    #[test]
    fn sizes_in_octal_and_base256() {
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[10] = 2;
        assert_eq!(parse_size(&big), Some(513));
        assert_eq!(
            parse_pax(b"20 path=blobs/x/yyy\n11 size=42\n").get("size"),
            Some(&"42".to_string())
        );
    }
}
