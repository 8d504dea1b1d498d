//! Source locations and the one way errors in user-written files are shown:
//! `FILE:LINE:COL: message`, the offending line, a caret, and an optional hint.

use serde::Serialize;
use std::fmt;

/// A 1-based position in a user-written file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The location of byte `offset` in `src`.
    pub fn at_offset(file: &str, src: &str, offset: usize) -> Location {
        let offset = offset.min(src.len());
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Location {
            file: file.to_string(),
            line,
            col,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// `FILE:LINE:COL: message` followed by the source line with a caret under the column.
pub fn render(loc: &Location, src: &str, message: &str, hint: Option<&str>) -> String {
    let mut out = format!("{loc}: {message}");
    if let Some(text) = src.lines().nth(loc.line.saturating_sub(1)) {
        let num = loc.line.to_string();
        let pad = " ".repeat(num.len());
        let caret_pad: String = text
            .chars()
            .take(loc.col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("\n {num} | {text}\n {pad} | {caret_pad}^"));
    }
    if let Some(h) = hint {
        out.push_str(&format!("\nhint: {h}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_and_caret() {
        let src = "a = 1\nbad = 2\n";
        let loc = Location::at_offset("x.toml", src, 6);
        assert_eq!((loc.line, loc.col), (2, 1));
        assert_eq!(
            render(&loc, src, "unknown key", Some("remove it")),
            "x.toml:2:1: unknown key\n 2 | bad = 2\n   | ^\nhint: remove it"
        );
    }
}
