//! The text report of `lade diff`: one line per difference, config first.

use super::{Change, ConfigChange, FileEntry, ImageDiff};
use std::fmt::Write;

fn short(d: &crate::digest::Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
}

fn value(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "(unset)".into(),
        Some(v) => v.to_string(),
    }
}

fn at(side: &str, e: &FileEntry) -> String {
    format!("{side}: layer {} {}", e.layer, short(&e.layer_digest))
}

fn field_change(field: &str, a: &FileEntry, b: &FileEntry) -> String {
    let pair = |x: String, y: String| format!("{field} {x} → {y}");
    match field {
        "kind" => pair(a.kind.into(), b.kind.into()),
        "content" => match (&a.content, &b.content) {
            (Some(x), Some(y)) => pair(short(x), short(y)),
            _ => pair(format!("{} bytes", a.size), format!("{} bytes", b.size)),
        },
        "mode" => pair(a.mode.clone(), b.mode.clone()),
        "owner" => pair(
            format!("{}:{}", a.uid, a.gid),
            format!("{}:{}", b.uid, b.gid),
        ),
        "link" => pair(
            a.link.clone().unwrap_or_default(),
            b.link.clone().unwrap_or_default(),
        ),
        "device" => pair(
            a.device.clone().unwrap_or_default(),
            b.device.clone().unwrap_or_default(),
        ),
        "mtime" => pair(a.mtime.to_string(), b.mtime.to_string()),
        _ => field.to_string(),
    }
}

fn config_line(out: &mut String, what: &str, c: &ConfigChange) {
    let _ = writeln!(
        out,
        "{what:<8}{}: {} → {}",
        c.field,
        value(&c.a),
        value(&c.b)
    );
}

/// The report, ending with a newline; for identical images one line saying so.
pub fn render_text(d: &ImageDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "a: {} {}", d.a.name, d.a.digest);
    let _ = writeln!(out, "b: {} {}", d.b.name, d.b.digest);
    if d.identical {
        out.push_str("identical\n");
        return out;
    }
    for c in &d.config {
        config_line(&mut out, "config", c);
    }
    for f in &d.files {
        match (f.change, &f.a, &f.b) {
            (Change::Added, _, Some(b)) => {
                let _ = writeln!(out, "added   {} {} ({})", f.path, b.kind, at("b", b));
            }
            (Change::Removed, Some(a), _) => {
                let _ = writeln!(out, "removed {} {} ({})", f.path, a.kind, at("a", a));
            }
            (Change::Changed, Some(a), Some(b)) => {
                let fields: Vec<String> = f.fields.iter().map(|x| field_change(x, a, b)).collect();
                let _ = writeln!(
                    out,
                    "changed {}: {} ({}, {})",
                    f.path,
                    fields.join(", "),
                    at("a", a),
                    at("b", b)
                );
            }
            _ => {}
        }
    }
    for c in &d.other {
        config_line(&mut out, "other", c);
    }
    out
}
