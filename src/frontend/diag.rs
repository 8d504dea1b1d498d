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
    pub fn new(file: impl Into<String>, line: usize, col: usize) -> Location {
        Location {
            file: file.into(),
            line,
            col,
        }
    }

    /// The first non-blank character of 1-based `line` in `src` (where an instruction starts).
    pub fn line_start(file: &str, src: &str, line: usize) -> Location {
        let col = src.lines().nth(line.saturating_sub(1)).map_or(1, |t| {
            t.chars().take_while(|c| c.is_whitespace()).count() + 1
        });
        Location::new(file, line, col)
    }

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

/// Characters of a source line shown around the column; longer lines are cut with `…`.
pub const SNIPPET_WIDTH: usize = 120;

/// `FILE:LINE:COL: message` followed by the source line with a caret under the column. A
/// line longer than [`SNIPPET_WIDTH`] characters is cut around the column, so a 10 MB line
/// does not become a 10 MB message.
pub fn render(loc: &Location, src: &str, message: &str, hint: Option<&str>) -> String {
    let mut out = format!("{loc}: {}", clip_words(message));
    if let Some(text) = src.lines().nth(loc.line.saturating_sub(1)) {
        let num = loc.line.to_string();
        let pad = " ".repeat(num.len());
        let (shown, caret_at) = window(text, loc.col.saturating_sub(1));
        let caret_pad: String = shown
            .chars()
            .take(caret_at)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("\n {num} | {shown}\n {pad} | {caret_pad}^"));
    }
    if let Some(h) = hint {
        out.push_str(&format!("\nhint: {}", clip_words(h)));
    }
    out
}

/// At most [`SNIPPET_WIDTH`] characters of `text` around character index `col` (0-based),
/// with `…` where it was cut, and the caret's character index in the result.
pub fn window(text: &str, col: usize) -> (String, usize) {
    let len = text.chars().count();
    if len <= SNIPPET_WIDTH {
        return (text.to_string(), col);
    }
    let col = col.min(len);
    let start = col
        .saturating_sub(SNIPPET_WIDTH / 2)
        .min(len - SNIPPET_WIDTH);
    let end = start + SNIPPET_WIDTH;
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(text.chars().skip(start).take(SNIPPET_WIDTH));
    if end < len {
        shown.push('…');
    }
    (shown, col - start + usize::from(start > 0))
}

/// `message` with every word (run of non-blank characters) longer than [`SNIPPET_WIDTH`]
/// cut to its start, `…` and its last characters: messages quote user input (a word, a
/// reference, a whole instruction), which may be megabytes long.
pub fn clip_words(message: &str) -> std::borrow::Cow<'_, str> {
    const TAIL: usize = 10;
    let long = |w: &str| w.chars().nth(SNIPPET_WIDTH).is_some();
    if !message.split_whitespace().any(long) {
        return message.into();
    }
    let mut out = String::with_capacity(4 * SNIPPET_WIDTH);
    let mut rest = message;
    while !rest.is_empty() {
        let blank = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..blank]);
        rest = &rest[blank..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if long(word) {
            let n = word.chars().count();
            out.extend(word.chars().take(SNIPPET_WIDTH - TAIL));
            out.push('…');
            out.extend(word.chars().skip(n - TAIL));
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.into()
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

    #[test]
    fn long_lines_are_cut_around_the_column() {
        let line = format!("{}BAD{}", "a".repeat(5000), "b".repeat(5000));
        let src = format!("x\n{line}\n");
        let loc = Location::new("Dockerfile", 2, 5001);
        let out = render(&loc, &src, "here", None);
        let lines: Vec<&str> = out.lines().collect();
        let shown = lines[1].trim_start_matches(" 2 | ");
        assert_eq!(shown.chars().count(), SNIPPET_WIDTH + 2);
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        // The caret is under the B of BAD.
        let caret = lines[2].trim_start_matches("   | ").chars().count() - 1;
        assert_eq!(shown.chars().nth(caret), Some('B'));
        assert_eq!(&shown[shown.find("BAD").unwrap()..][..3], "BAD");
    }

    #[test]
    fn cut_at_the_ends_of_a_long_line() {
        let src = "z".repeat(1000);
        let start = render(&Location::new("f", 1, 1), &src, "m", None);
        assert!(start.contains(&format!(" 1 | {}…\n", "z".repeat(SNIPPET_WIDTH))));
        assert!(start.ends_with("| ^"));
        let end = render(&Location::new("f", 1, 1000), &src, "m", None);
        assert!(end.contains(&format!(" 1 | …{}\n", "z".repeat(SNIPPET_WIDTH))));
        assert!(end.ends_with(&format!("| {}^", " ".repeat(SNIPPET_WIDTH))));
    }

    #[test]
    fn long_words_of_messages_are_clipped() {
        assert_eq!(
            clip_words("short words\tstay  as is"),
            "short words\tstay  as is"
        );
        let long = format!("\"{}\"", "é".repeat(10_000));
        let message = format!("unknown instruction: {long} (line 2)");
        let clipped = clip_words(&message);
        let want = format!(
            "unknown instruction: \"{}…{}\" (line 2)",
            "é".repeat(SNIPPET_WIDTH - 11),
            "é".repeat(9)
        );
        assert_eq!(clipped, want);
    }
}
