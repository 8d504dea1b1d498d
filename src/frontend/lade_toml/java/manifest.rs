//! The main section of a jar's `META-INF/MANIFEST.MF` (JAR File Specification): `Name: value`
//! lines, continuation lines starting with one space, ending at the first blank line.

/// Attributes of the manifest's main section, in file order.
#[derive(Debug, Default)]
pub(super) struct Manifest {
    attrs: Vec<(String, String)>,
}

use crate::frontend::percent_decode;

impl Manifest {
    pub(super) fn parse(bytes: &[u8]) -> Manifest {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut attrs: Vec<(String, String)> = Vec::new();
        for line in text.split("\r\n").flat_map(|l| l.split(['\n', '\r'])) {
            if line.is_empty() {
                break;
            }
            if let Some(rest) = line.strip_prefix(' ') {
                if let Some((_, value)) = attrs.last_mut() {
                    value.push_str(rest);
                }
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.strip_prefix(' ').unwrap_or(value);
                attrs.push((name.trim().to_string(), value.to_string()));
            }
        }
        Manifest { attrs }
    }

    /// The value of an attribute (names are case-insensitive), trimmed; `None` when absent or
    /// blank.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// `Class-Path`: space-separated relative URLs, percent-decoded.
    pub(super) fn class_path(&self) -> Vec<String> {
        self.get("Class-Path")
            .map(|cp| cp.split_whitespace().map(percent_decode).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_section_with_continuations_and_crlf() {
        let m = Manifest::parse(
            b"Manifest-Version: 1.0\r\nMain-Class: com.example.V\r\n ery.Long\r\nclass-path: lib/a.jar\r\n  lib/b%20c.jar\r\n\r\nName: x\r\nMain-Class: no\r\n",
        );
        assert_eq!(m.get("main-class"), Some("com.example.Very.Long"));
        assert_eq!(m.class_path(), ["lib/a.jar", "lib/b c.jar"]);
        assert_eq!(m.get("Start-Class"), None);
        assert_eq!(Manifest::parse(b"").get("Main-Class"), None);
    }
}
