//! Comparing two opened images: their configs field by field (`Env` and `Labels` by name),
//! then their flattened trees path by path.

use super::tree::{FileEntry, Tree};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A config field that differs; `None` where the image does not set it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigChange {
    /// `architecture`, `config.Cmd`, `config.Env.PATH`, `config.Labels.org.example`…
    pub field: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// A path whose entries differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileChange {
    /// Absolute, `/` for the root.
    pub path: String,
    pub change: Change,
    /// For `changed`: which of kind, content, mode, owner, link, xattrs, device, mtime.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<FileEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<FileEntry>,
}

/// Config fields compared one by one. `rootfs` (the layers' diff_ids) is left out: the file
/// tree shows what differs in the layers. `history` restates the instructions, so it is
/// compared only when nothing else explains a digest difference (see `super::compare`).
fn config_fields(config: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Some(top) = config.as_object() else {
        return out;
    };
    for (k, v) in top {
        match k.as_str() {
            "rootfs" | "history" => {}
            "config" | "container_config" => {
                let Some(inner) = v.as_object() else {
                    out.insert(k.clone(), v.clone());
                    continue;
                };
                for (ik, iv) in inner {
                    let field = format!("{k}.{ik}");
                    match (ik.as_str(), iv) {
                        ("Env", Value::Array(vars)) => {
                            for var in vars.iter().filter_map(Value::as_str) {
                                let (name, value) = var.split_once('=').unwrap_or((var, ""));
                                out.insert(format!("{field}.{name}"), Value::from(value));
                            }
                        }
                        ("Labels" | "ExposedPorts" | "Volumes", Value::Object(m)) => {
                            for (mk, mv) in m {
                                out.insert(format!("{field}.{mk}"), mv.clone());
                            }
                        }
                        (_, Value::Null) => {}
                        _ => {
                            out.insert(field, iv.clone());
                        }
                    }
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

pub fn configs(a: &Value, b: &Value) -> Vec<ConfigChange> {
    let (fa, fb) = (config_fields(a), config_fields(b));
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| ConfigChange {
            field: k.clone(),
            a: fa.get(k).cloned(),
            b: fb.get(k).cloned(),
        })
        .collect()
}

/// History entries that differ, by position (`history[3]`).
pub fn histories(a: &Value, b: &Value) -> Vec<ConfigChange> {
    let empty = Vec::new();
    let ha = a["history"].as_array().unwrap_or(&empty);
    let hb = b["history"].as_array().unwrap_or(&empty);
    (0..ha.len().max(hb.len()))
        .filter(|&i| ha.get(i) != hb.get(i))
        .map(|i| ConfigChange {
            field: format!("history[{i}]"),
            a: ha.get(i).cloned(),
            b: hb.get(i).cloned(),
        })
        .collect()
}

fn changed_fields(a: &FileEntry, b: &FileEntry) -> Vec<&'static str> {
    let mut f = Vec::new();
    if a.kind != b.kind {
        f.push("kind");
    }
    if a.content != b.content || a.size != b.size {
        f.push("content");
    }
    if a.mode != b.mode {
        f.push("mode");
    }
    if (a.uid, a.gid) != (b.uid, b.gid) {
        f.push("owner");
    }
    if a.link != b.link {
        f.push("link");
    }
    if a.xattrs != b.xattrs {
        f.push("xattrs");
    }
    if a.device != b.device {
        f.push("device");
    }
    if a.mtime != b.mtime {
        f.push("mtime");
    }
    f
}

fn display_path(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

pub fn trees(a: &Tree, b: &Tree) -> Vec<FileChange> {
    let mut out = Vec::new();
    let mut ia = a.iter().peekable();
    let mut ib = b.iter().peekable();
    loop {
        let order = match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (k, e) = ia.next().expect("peeked");
                out.push(FileChange {
                    path: display_path(k),
                    change: Change::Removed,
                    fields: Vec::new(),
                    a: Some(e.clone()),
                    b: None,
                });
            }
            std::cmp::Ordering::Greater => {
                let (k, e) = ib.next().expect("peeked");
                out.push(FileChange {
                    path: display_path(k),
                    change: Change::Added,
                    fields: Vec::new(),
                    a: None,
                    b: Some(e.clone()),
                });
            }
            std::cmp::Ordering::Equal => {
                let (k, ea) = ia.next().expect("peeked");
                let (_, eb) = ib.next().expect("peeked");
                let fields = changed_fields(ea, eb);
                if !fields.is_empty() {
                    out.push(FileChange {
                        path: display_path(k),
                        change: Change::Changed,
                        fields,
                        a: Some(ea.clone()),
                        b: Some(eb.clone()),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_and_labels_differ_by_name_and_rootfs_is_left_to_the_tree() {
        let a = json!({"architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin", "A=1"], "Labels": {"x": "1", "y": "2"}, "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:00"]}});
        let b = json!({"architecture": "amd64", "os": "linux",
            "config": {"Env": ["A=2", "PATH=/bin"], "Labels": {"x": "1"}, "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:11"]}});
        let changes = configs(&a, &b);
        assert_eq!(
            changes,
            vec![
                ConfigChange {
                    field: "config.Env.A".into(),
                    a: Some(json!("1")),
                    b: Some(json!("2"))
                },
                ConfigChange {
                    field: "config.Labels.y".into(),
                    a: Some(json!("2")),
                    b: None
                },
            ]
        );
    }
}
