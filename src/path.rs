//! `ImagePath`: a path inside an image's filesystem, kept apart from host paths by type.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A normalised absolute path inside an image, stored without the leading `/` as raw bytes
/// (image paths need not be UTF-8). The root is the empty path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ImagePath(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImagePathError {
    #[error("image path {0:?} must be absolute")]
    Relative(String),
    #[error("image path {0:?} contains a NUL byte")]
    Nul(String),
}

impl ImagePath {
    pub fn root() -> ImagePath {
        ImagePath(Vec::new())
    }

    /// Parses an absolute path, cleaning `.`, `..` (never above `/`) and repeated slashes.
    pub fn parse_absolute(p: &str) -> Result<ImagePath, ImagePathError> {
        if !p.starts_with('/') {
            return Err(ImagePathError::Relative(p.to_string()));
        }
        Self::clean_bytes(p.as_bytes()).ok_or_else(|| ImagePathError::Nul(p.to_string()))
    }

    /// Resolves `p` against `base` the way WORKDIR and COPY destinations are: absolute paths
    /// stand alone, relative ones are joined to `base`.
    pub fn resolve(base: &ImagePath, p: &str) -> Result<ImagePath, ImagePathError> {
        if p.starts_with('/') {
            return Self::parse_absolute(p);
        }
        let mut joined = b"/".to_vec();
        joined.extend_from_slice(&base.0);
        joined.push(b'/');
        joined.extend_from_slice(p.as_bytes());
        Self::clean_bytes(&joined).ok_or_else(|| ImagePathError::Nul(p.to_string()))
    }

    fn clean_bytes(p: &[u8]) -> Option<ImagePath> {
        if p.contains(&0) {
            return None;
        }
        let mut parts: Vec<&[u8]> = Vec::new();
        for part in p.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        Some(ImagePath(parts.join(&b'/')))
    }

    /// Appends one relative component path (already clean, no leading `/`) given as bytes.
    pub fn join_bytes(&self, rel: &[u8]) -> ImagePath {
        let mut s = b"/".to_vec();
        s.extend_from_slice(&self.0);
        s.push(b'/');
        s.extend_from_slice(rel);
        Self::clean_bytes(&s).unwrap_or_else(|| self.clone())
    }

    /// The path without leading slash, as stored in tar headers.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_rel_bytes(b: &[u8]) -> Option<ImagePath> {
        let mut s = b"/".to_vec();
        s.extend_from_slice(b);
        Self::clean_bytes(&s)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn parent(&self) -> Option<ImagePath> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Some(ImagePath(self.0[..i].to_vec())),
            None => Some(ImagePath::root()),
        }
    }

    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// `/a/b` style display (lossy for non-UTF-8 bytes).
    pub fn display(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl Serialize for ImagePath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.display())
    }
}

impl<'de> Deserialize<'de> for ImagePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImagePath::parse_absolute(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_resolves() {
        let p = ImagePath::parse_absolute("//usr/./local/../bin/").unwrap();
        assert_eq!(p.as_bytes(), b"usr/bin");
        assert_eq!(
            ImagePath::parse_absolute("/../..").unwrap(),
            ImagePath::root()
        );
        let base = ImagePath::parse_absolute("/app").unwrap();
        assert_eq!(
            ImagePath::resolve(&base, "lib/x").unwrap().display(),
            "/app/lib/x"
        );
        assert_eq!(ImagePath::resolve(&base, "/etc").unwrap().display(), "/etc");
        assert!(ImagePath::parse_absolute("rel").is_err());
        assert_eq!(p.parent().unwrap().display(), "/usr");
        assert_eq!(p.file_name(), b"bin");
    }
}
