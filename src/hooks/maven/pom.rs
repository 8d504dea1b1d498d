//! The parts of a `pom.xml` `lade build --maven` needs, read with a small XML reader (elements,
//! text, comments, CDATA, the five entities and character references; attributes and
//! namespaces are skipped): coordinates with what the parent gives (`groupId`, `version`),
//! `packaging`, `modules`, `build/finalName`, the main class of maven-jar-plugin's manifest or
//! exec-maven-plugin's configuration, and `${…}` properties (own, then the parent's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One element: its local name, children and text.
#[derive(Debug, Default, Clone)]
pub struct Element {
    pub name: String,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of the element at `path` (`a/b/c`), if any and not blank.
    pub fn text_at(&self, path: &str) -> Option<String> {
        let mut e = self;
        for part in path.split('/') {
            e = e.child(part)?;
        }
        Some(e.text.trim().to_string()).filter(|t| !t.is_empty())
    }
}

/// Parses an XML document to its root element; the error says what and at which byte.
pub fn parse_xml(src: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut rest = src;
    let pos = |rest: &str| src.len() - rest.len();
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            stack
                .last_mut()
                .expect("root")
                .text
                .push_str(&unescape(rest));
            break;
        };
        stack
            .last_mut()
            .expect("root")
            .text
            .push_str(&unescape(&rest[..lt]));
        rest = &rest[lt..];
        let skip = |rest: &mut &str, end: &str| -> Result<(), String> {
            let i = rest
                .find(end)
                .ok_or_else(|| format!("unterminated markup at byte {}", pos(rest)))?;
            *rest = &rest[i + end.len()..];
            Ok(())
        };
        if rest.starts_with("<!--") {
            skip(&mut rest, "-->")?;
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let i = after
                .find("]]>")
                .ok_or_else(|| format!("unterminated CDATA at byte {}", pos(rest)))?;
            stack.last_mut().expect("root").text.push_str(&after[..i]);
            rest = &after[i + 3..];
        } else if rest.starts_with("<?") {
            skip(&mut rest, "?>")?;
        } else if rest.starts_with("<!") {
            skip(&mut rest, ">")?;
        } else if let Some(after) = rest.strip_prefix("</") {
            let i = after
                .find('>')
                .ok_or_else(|| format!("unterminated end tag at byte {}", pos(rest)))?;
            let name = local(after[..i].trim());
            let e = stack.pop().filter(|_| !stack.is_empty());
            match e {
                Some(e) if e.name == name => stack.last_mut().expect("root").children.push(e),
                _ => return Err(format!("unexpected </{name}> at byte {}", pos(rest))),
            }
            rest = &after[i + 1..];
        } else {
            let i = rest
                .find('>')
                .ok_or_else(|| format!("unterminated tag at byte {}", pos(rest)))?;
            let tag = &rest[1..i];
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name = local(tag.split_whitespace().next().unwrap_or(""));
            if name.is_empty() {
                return Err(format!("a tag without a name at byte {}", pos(rest)));
            }
            let e = Element {
                name: name.to_string(),
                ..Element::default()
            };
            if empty {
                stack.last_mut().expect("root").children.push(e);
            } else {
                stack.push(e);
            }
            rest = &rest[i + 1..];
        }
    }
    if stack.len() != 1 {
        let open = stack.last().map(|e| e.name.clone()).unwrap_or_default();
        return Err(format!("<{open}> is not closed"));
    }
    let doc = stack.pop().expect("root");
    doc.children
        .into_iter()
        .next()
        .ok_or_else(|| "no root element".to_string())
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let c = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What lade reads of one `pom.xml`.
#[derive(Debug, Clone)]
pub struct Pom {
    /// The pom file.
    pub file: PathBuf,
    pub group_id: String,
    pub artifact_id: String,
    pub version: String,
    pub packaging: String,
    pub modules: Vec<String>,
    pub final_name: String,
    /// maven-jar-plugin's `archive/manifest/mainClass`, else exec-maven-plugin's `mainClass`.
    pub main_class: Option<String>,
}

impl Pom {
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// `target/<finalName>.jar`.
    pub fn jar(&self) -> PathBuf {
        self.dir()
            .join("target")
            .join(format!("{}.jar", self.final_name))
    }

    pub fn is_snapshot(&self) -> bool {
        self.version.ends_with("-SNAPSHOT")
    }
}

/// Reads `file`, with what its parent gives when the parent is the pom at `relativePath`
/// (default `../pom.xml`) and names the same coordinates.
pub fn read(file: &Path) -> Result<Pom, String> {
    let (pom, _) = read_with_properties(file, 0)?;
    Ok(pom)
}

fn read_with_properties(
    file: &Path,
    depth: usize,
) -> Result<(Pom, BTreeMap<String, String>), String> {
    let src = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let root = parse_xml(&src).map_err(|e| format!("{}: {e}", file.display()))?;
    if root.name != "project" {
        return Err(format!(
            "{}: the root element is <{}>, not <project>",
            file.display(),
            root.name
        ));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    // The parent in the reactor, when it is there (else only what <parent> says).
    let parent = match root.child("parent") {
        Some(p) if depth < 16 => {
            let rel = p
                .text_at("relativePath")
                .unwrap_or_else(|| "../pom.xml".into());
            let mut path = dir.join(rel);
            if path.is_dir() {
                path = path.join("pom.xml");
            }
            let found = path
                .is_file()
                .then(|| read_with_properties(&path, depth + 1).ok())
                .flatten()
                .filter(|(pp, _)| Some(&pp.artifact_id) == p.text_at("artifactId").as_ref());
            Some((p, found))
        }
        _ => None,
    };
    let mut props: BTreeMap<String, String> = parent
        .as_ref()
        .and_then(|(_, f)| f.as_ref())
        .map(|(_, props)| props.clone())
        .unwrap_or_default();
    if let Some(p) = root.child("properties") {
        for c in &p.children {
            props.insert(c.name.clone(), c.text.trim().to_string());
        }
    }
    let from_parent = |key: &str| parent.as_ref().and_then(|(p, _)| p.text_at(key));
    let missing = |what: &str| format!("{}: no <{what}> (nor in <parent>)", file.display());
    let artifact_id = root
        .text_at("artifactId")
        .ok_or_else(|| format!("{}: no <artifactId>", file.display()))?;
    let group_id = root
        .text_at("groupId")
        .or_else(|| from_parent("groupId"))
        .ok_or_else(|| missing("groupId"))?;
    let version = root
        .text_at("version")
        .or_else(|| from_parent("version"))
        .ok_or_else(|| missing("version"))?;
    for (k, v) in [
        ("project.groupId", &group_id),
        ("project.artifactId", &artifact_id),
        ("project.version", &version),
        ("pom.version", &version),
        ("version", &version),
    ] {
        props.insert(k.into(), v.clone());
    }
    if let Some(pv) = from_parent("version") {
        props.insert("project.parent.version".into(), pv);
    }
    let interpolate = |s: String| interpolate(&s, &props);
    let (group_id, version) = (interpolate(group_id), interpolate(version));
    let plugin_config = |group: &str, artifact: &str, path: &str| {
        let plugins = root.child("build")?.child("plugins")?;
        plugins
            .children
            .iter()
            .filter(|p| {
                p.text_at("artifactId").as_deref() == Some(artifact)
                    && p.text_at("groupId").as_deref().unwrap_or(group) == group
            })
            .find_map(|p| p.text_at(&format!("configuration/{path}")))
    };
    let main_class = plugin_config(
        "org.apache.maven.plugins",
        "maven-jar-plugin",
        "archive/manifest/mainClass",
    )
    .or_else(|| plugin_config("org.codehaus.mojo", "exec-maven-plugin", "mainClass"))
    .map(interpolate);
    let final_name = root
        .text_at("build/finalName")
        .map(interpolate)
        .unwrap_or_else(|| format!("{artifact_id}-{version}"));
    let modules = root
        .child("modules")
        .map(|m| {
            m.children
                .iter()
                .filter(|c| c.name == "module")
                .map(|c| c.text.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    let pom = Pom {
        file: file.to_path_buf(),
        group_id,
        artifact_id,
        version,
        packaging: root.text_at("packaging").unwrap_or_else(|| "jar".into()),
        modules,
        final_name,
        main_class,
    };
    Ok((pom, props))
}

/// `${name}` replaced by its property; unknown ones stay as written.
fn interpolate(s: &str, props: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                match props.get(&after[..j]) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[i..i + 3 + j]),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_with_comments_cdata_entities_and_namespaces() {
        let e = parse_xml(
            "<?xml version=\"1.0\"?>\n<!-- c --><p:project xmlns:p=\"x\"><a>1 &amp; &#x32;</a>\
             <b><![CDATA[<raw>]]></b><c/><d x=\"y\">t</d></p:project>",
        )
        .unwrap();
        assert_eq!(e.name, "project");
        assert_eq!(e.text_at("a").as_deref(), Some("1 & 2"));
        assert_eq!(e.text_at("b").as_deref(), Some("<raw>"));
        assert_eq!(e.text_at("c"), None);
        assert_eq!(e.text_at("d").as_deref(), Some("t"));
        assert!(parse_xml("<a><b></a>").unwrap_err().contains("</a>"));
        assert!(parse_xml("<a>").unwrap_err().contains("not closed"));
    }

    #[test]
    fn interpolation_keeps_unknown_properties() {
        let props = BTreeMap::from([("v".to_string(), "1".to_string())]);
        assert_eq!(interpolate("a-${v}-${w}-${", &props), "a-1-${w}-${");
    }
}
