//! The SPDX 2.3 JSON document of an image: the image as the described package, the packages
//! its package databases list (dpkg, apk, Python distributions, Maven jars, Cargo.lock,
//! `cargo auditable` binaries) and the files this build placed, with their sha256.

use super::purl_escape;
use super::scan::Scanned;
use crate::image::BuiltImage;
use serde_json::{json, Value};
use std::io::Read;

/// One package found in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// The purl type: `deb`, `apk`, `pypi`, `maven`, `cargo`.
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    /// The package URL.
    pub purl: String,
    /// The file that lists it.
    pub found_in: String,
    /// The declared licence, when the record names one that is a valid SPDX expression.
    pub license: Option<String>,
}

/// Whether `s` is a syntactically valid SPDX licence expression: licence ids (optionally
/// `+`), `LicenseRef-`/`DocumentRef-…:LicenseRef-` refs, `AND`/`OR`/`WITH`, parentheses.
/// (Alpine's `L:` is mostly SPDX, but also holds words like `custom:foo`.)
fn is_spdx_expression(s: &str) -> bool {
    let spaced = s.replace('(', " ( ").replace(')', " ) ");
    let id = |t: &str| {
        let t = t.strip_suffix('+').unwrap_or(t);
        let t = match t.split_once(':') {
            Some((doc, r)) if doc.starts_with("DocumentRef-") && r.starts_with("LicenseRef-") => r,
            _ => t,
        };
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    // Alternating operand / operator, parentheses balanced.
    let (mut depth, mut want_operand) = (0usize, true);
    for t in spaced.split_whitespace() {
        match t {
            "(" if want_operand => depth += 1,
            ")" if !want_operand && depth > 0 => depth -= 1,
            "AND" | "OR" | "WITH" if !want_operand => want_operand = true,
            _ if want_operand && id(t) && !["AND", "OR", "WITH"].contains(&t) => {
                want_operand = false
            }
            _ => return false,
        }
    }
    depth == 0 && !want_operand
}

/// `KEY: value` paragraphs separated by blank lines (dpkg's status file, email-style
/// headers); continuation lines are skipped.
fn paragraphs(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut out = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !out.last().expect("one").is_empty() {
                out.push(Vec::new());
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.last_mut().expect("one").push((k, v.trim()));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn field<'a>(p: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn os_id(records: &std::collections::BTreeMap<String, Vec<u8>>, default: &str) -> String {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .filter_map(|p| records.get(*p))
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("ID=")
                        .map(|v| v.trim_matches('"').to_string())
                })
                .collect::<Vec<_>>()
        })
        .next()
        .unwrap_or_else(|| default.to_string())
}

/// Every package the image's records name, sorted.
pub fn packages(scanned: &Scanned) -> Vec<Package> {
    let mut out = Vec::new();
    for (path, bytes) in &scanned.records {
        let text = || String::from_utf8_lossy(bytes).into_owned();
        let found_in = format!("/{path}");
        let name = path.rsplit('/').next().unwrap_or(path);
        let mut add = |kind, name: &str, version: &str, purl: String, license: Option<&str>| {
            out.push(Package {
                kind,
                name: name.to_string(),
                version: version.to_string(),
                purl,
                found_in: found_in.clone(),
                license: license
                    .filter(|l| is_spdx_expression(l))
                    .map(str::to_string),
            })
        };
        if path == "var/lib/dpkg/status" {
            let distro = os_id(&scanned.records, "debian");
            for p in paragraphs(&text()) {
                let installed = field(&p, "Status").is_some_and(|s| s.ends_with(" installed"));
                if let (true, Some(n), Some(v)) =
                    (installed, field(&p, "Package"), field(&p, "Version"))
                {
                    let arch = field(&p, "Architecture").unwrap_or("all");
                    let purl = format!(
                        "pkg:deb/{distro}/{}@{}?arch={}",
                        purl_escape(n),
                        purl_escape(v),
                        purl_escape(arch)
                    );
                    add("deb", n, v, purl, None);
                }
            }
        } else if path == "lib/apk/db/installed" {
            let distro = os_id(&scanned.records, "alpine");
            for p in paragraphs(&text()) {
                if let (Some(n), Some(v)) = (field(&p, "P"), field(&p, "V")) {
                    let arch = field(&p, "A").unwrap_or("noarch");
                    let purl = format!(
                        "pkg:apk/{distro}/{}@{}?arch={}",
                        purl_escape(n),
                        purl_escape(v),
                        purl_escape(arch)
                    );
                    add("apk", n, v, purl, field(&p, "L"));
                }
            }
        } else if path.ends_with(".dist-info/METADATA") {
            let text = text();
            // The headers end at the first blank line.
            let head = text.split("\n\n").next().unwrap_or("");
            if let Some(p) = paragraphs(head).first() {
                if let (Some(n), Some(v)) = (field(p, "Name"), field(p, "Version")) {
                    let norm = n.to_lowercase().replace('_', "-");
                    let purl = format!("pkg:pypi/{}@{}", purl_escape(&norm), purl_escape(v));
                    add("pypi", n, v, purl, None);
                }
            }
        } else if name.ends_with(".jar") {
            for (group, artifact, version) in maven_coordinates(bytes) {
                let purl = format!(
                    "pkg:maven/{}/{}@{}",
                    purl_escape(&group),
                    purl_escape(&artifact),
                    purl_escape(&version)
                );
                add(
                    "maven",
                    &format!("{group}:{artifact}"),
                    &version,
                    purl,
                    None,
                );
            }
        } else if name == "Cargo.lock" {
            let Ok(lock) = toml::from_str::<toml::Value>(&text()) else {
                continue;
            };
            for p in lock
                .get("package")
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
            {
                if let (Some(n), Some(v)) = (
                    p.get("name").and_then(|v| v.as_str()),
                    p.get("version").and_then(|v| v.as_str()),
                ) {
                    let purl = format!("pkg:cargo/{}@{}", purl_escape(n), purl_escape(v));
                    add("cargo", n, v, purl, None);
                }
            }
        }
    }
    for (path, json) in &scanned.auditable {
        for (n, v) in super::auditable::packages(json) {
            out.push(Package {
                kind: "cargo",
                purl: format!("pkg:cargo/{}@{}", purl_escape(&n), purl_escape(&v)),
                name: n,
                version: v,
                found_in: format!("/{path}"),
                license: None,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `groupId`, `artifactId`, `version` of every `META-INF/maven/**/pom.properties` in a jar.
fn maven_coordinates(jar: &[u8]) -> Vec<(String, String, String)> {
    let Ok(mut zip) = zip::ZipArchive::new(std::io::Cursor::new(jar)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = zip
        .file_names()
        .filter(|n| n.starts_with("META-INF/maven/") && n.ends_with("/pom.properties"))
        .map(str::to_string)
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let mut text = String::new();
        let Ok(mut f) = zip.by_name(&n) else { continue };
        if f.read_to_string(&mut text).is_err() {
            continue;
        }
        let prop = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
        };
        if let (Some(g), Some(a), Some(v)) = (prop("groupId"), prop("artifactId"), prop("version"))
        {
            out.push((g, a, v));
        }
    }
    out
}

/// The SPDX 2.3 document (the predicate of the SBOM statement).
pub fn document(
    image: &BuiltImage,
    names: &[String],
    scanned: &Scanned,
    source_date_epoch: u64,
) -> Value {
    let image_name = names
        .first()
        .cloned()
        .unwrap_or_else(|| image.manifest_digest.to_string());
    let mut spdx_packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": image_name.clone(),
        "versionInfo": image.manifest_digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": image.manifest_digest.hex()}],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (i, p) in packages(scanned).iter().enumerate() {
        let id = format!("SPDXRef-Package-{}-{i}", p.kind);
        spdx_packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("listed in {}", p.found_in),
            "licenseDeclared": p.license.as_deref().unwrap_or("NOASSERTION"),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let files: Vec<Value> = scanned
        .placed
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let id = format!("SPDXRef-File-{i}");
            relationships.push(json!({
                "spdxElementId": "SPDXRef-Image",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
            json!({
                "SPDXID": id,
                "fileName": format!("./{}", f.path),
                "checksums": [
                    {"algorithm": "SHA1", "checksumValue": f.sha1},
                    {"algorithm": "SHA256", "checksumValue": f.sha256.hex()},
                ],
            })
        })
        .collect();
    if !files.is_empty() {
        // The image package holds the files: SPDX then wants them analysed, with the
        // verification code (SHA1 of the files' sorted SHA1s).
        let mut sha1s: Vec<&str> = scanned.placed.iter().map(|f| f.sha1.as_str()).collect();
        sha1s.sort();
        let code = hex::encode(<sha1::Sha1 as sha1::Digest>::digest(
            sha1s.concat().as_bytes(),
        ));
        spdx_packages[0]["filesAnalyzed"] = json!(true);
        spdx_packages[0]["packageVerificationCode"] = json!({"packageVerificationCodeValue": code});
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_name,
        // Derived from the image, not random: the same image has the same document.
        "documentNamespace": format!(
            "https://lade.dev/spdx/{}/{}",
            purl_escape(&image_name),
            image.manifest_digest.hex()
        ),
        "creationInfo": {
            "created": crate::exec::rfc3339(source_date_epoch),
            "creators": [format!("Tool: lade-{}", env!("CARGO_PKG_VERSION"))],
        },
        "documentDescribes": ["SPDXRef-Image"],
        "packages": spdx_packages,
        "files": files,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn dpkg_apk_python_and_cargo_records_name_their_packages() {
        let mut records = BTreeMap::new();
        records.insert(
            "var/lib/dpkg/status".to_string(),
            b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n".to_vec(),
        );
        records.insert(
            "lib/apk/db/installed".to_string(),
            b"C:Q1=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nT:the C library\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:custom:weird licence\n\nP:no-version\nA:x86_64\n\nV:1\n\n\n::\nP\n".to_vec(),
        );
        records.insert(
            "usr/lib/python3/dist-packages/Flask-3.0.0.dist-info/METADATA".to_string(),
            b"Metadata-Version: 2.1\nName: Flask\nVersion: 3.0.0\n\nName: not-a-header\n".to_vec(),
        );
        records.insert(
            "app/Cargo.lock".to_string(),
            b"version = 3\n[[package]]\nname = \"serde\"\nversion = \"1.0.1\"\n".to_vec(),
        );
        let scanned = Scanned {
            placed: Vec::new(),
            records,
            auditable: BTreeMap::new(),
        };
        let got: Vec<(&str, String, String)> = packages(&scanned)
            .into_iter()
            .map(|p| (p.kind, p.name, p.purl))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "apk",
                    "busybox".into(),
                    "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64".into()
                ),
                (
                    "apk",
                    "musl".into(),
                    "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64".into()
                ),
                ("cargo", "serde".into(), "pkg:cargo/serde@1.0.1".into()),
                (
                    "deb",
                    "libc6".into(),
                    "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64".into()
                ),
                ("pypi", "Flask".into(), "pkg:pypi/flask@3.0.0".into()),
            ]
        );
    }

    #[test]
    fn apk_licences_are_declared_when_they_are_spdx_expressions() {
        let mut records = BTreeMap::new();
        records.insert(
            "lib/apk/db/installed".to_string(),
            b"P:a\nV:1\nL:MIT\n\nP:b\nV:2\nL:GPL-2.0-or-later AND (BSD-3-Clause OR Apache-2.0 WITH LLVM-exception)\n\nP:c\nV:3\nL:custom:x\n\nP:d\nV:4\n".to_vec(),
        );
        let scanned = Scanned {
            placed: Vec::new(),
            records,
            auditable: BTreeMap::new(),
        };
        let got: Vec<Option<String>> = packages(&scanned).into_iter().map(|p| p.license).collect();
        assert_eq!(
            got,
            [
                Some("MIT".into()),
                Some(
                    "GPL-2.0-or-later AND (BSD-3-Clause OR Apache-2.0 WITH LLVM-exception)".into()
                ),
                None,
                None
            ]
        );
        for bad in [
            "",
            "AND",
            "MIT AND",
            "(MIT",
            "MIT)",
            "MIT OR OR GPL-2.0",
            "a b",
            "custom:x",
        ] {
            assert!(!is_spdx_expression(bad), "{bad}");
        }
        for good in [
            "GPL-2.0+",
            "LicenseRef-x",
            "DocumentRef-d:LicenseRef-y",
            "((MIT))",
        ] {
            assert!(is_spdx_expression(good), "{good}");
        }
    }

    #[test]
    fn auditable_lists_name_cargo_packages_of_their_binary() {
        let scanned = Scanned {
            placed: Vec::new(),
            records: BTreeMap::new(),
            auditable: BTreeMap::from([(
                "usr/bin/app".to_string(),
                br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},{"name":"serde","version":"1.0.1","source":"crates.io"}]}"#.to_vec(),
            )]),
        };
        let got: Vec<(String, String)> = packages(&scanned)
            .into_iter()
            .map(|p| (p.purl, p.found_in))
            .collect();
        assert_eq!(
            got,
            [("pkg:cargo/serde@1.0.1".into(), "/usr/bin/app".into())]
        );
    }
}
