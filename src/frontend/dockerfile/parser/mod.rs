//! Dockerfile parser (syntax only), faithful to BuildKit's `frontend/dockerfile/parser`.
//!
//! [`parse`] turns a Dockerfile into a list of instruction [`Node`]s: keyword, `--flags`, values
//! split per instruction the way BuildKit's dispatch table does, exec (JSON) form or not, line
//! span, heredoc bodies, and the inner instruction of `ONBUILD`. Nothing is expanded or checked
//! against the instruction's grammar here: quotes stay in `ENV` values, unknown keywords are
//! kept (with one empty value, as BuildKit keeps them), and that layer's errors belong to the
//! instruction layer. What does fail here is what BuildKit's parser rejects: a file without
//! instructions, `ENV`/`LABEL` without a value, a JSON array of non-strings, an unterminated
//! heredoc, a bad or repeated parser directive.
//!
//! The line handling: parser directives (`# syntax=`, `# escape=`) are only read in the leading
//! comment lines (`# check=` is an ordinary comment there, as in the reference parser); a line ending in the escape character (`\`, or `` ` `` after
//! `# escape=``) continues on the next, where comment lines and empty lines are skipped (the
//! latter with a warning); CRLF line ends and a leading UTF-8 BOM are accepted.

mod heredoc;
mod json;
mod line_parsers;
mod quote;
mod split_command;

pub use heredoc::{chomp_heredoc_content, parse_heredoc};
pub use quote::go_quote;

use line_parsers::parse_args;
use serde_json::{json, Value};
use split_command::split_command;
use std::collections::HashSet;
use std::fmt::Write;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character in effect: `\` unless `# escape=``.
    pub escape: char,
    /// Parser directives in file order, names lowercase: `("syntax", "docker/dockerfile:1")`.
    pub directives: Vec<(String, String)>,
    /// The instructions in file order.
    pub instructions: Vec<Node>,
    /// Things BuildKit accepts but warns about (empty continuation lines).
    pub warnings: Vec<ParseWarning>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The keyword, lowercase (`run`; an unknown keyword is kept as written, lowercased).
    pub cmd: String,
    /// The instruction's text with continuation lines joined (heredoc bodies not included).
    pub original: String,
    /// `--name=value` flags as written, quotes removed: `["--from=build", "--chmod=644"]`.
    pub flags: Vec<String>,
    /// The values, split per instruction: one per JSON element in exec form; for shell-form
    /// `RUN`/`CMD`/`ENTRYPOINT`/`SHELL` the rest of the line; for `ENV`/`LABEL` triples of
    /// name, value and separator (`"="`, or `""` for the legacy `ENV name value` form), with
    /// quotes still in the values; for `HEALTHCHECK` the type (`CMD`, `NONE`) then the command.
    pub values: Vec<String>,
    /// Exec (JSON array) form.
    pub json: bool,
    /// First line of the instruction, 1-based.
    pub start_line: usize,
    /// Last line, heredoc bodies and terminators included.
    pub end_line: usize,
    /// Heredoc bodies, in the order their `<<WORD`s appear.
    pub heredocs: Vec<Heredoc>,
    /// For `ONBUILD`, the instruction it wraps.
    pub next: Option<Box<Node>>,
    /// The comment lines right before the instruction (without `#`), as BuildKit keeps them for
    /// descriptions of stages and build arguments.
    pub comments: Vec<String>,
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heredoc {
    /// The terminator word, quotes removed.
    pub name: String,
    /// The body as written: every line with its line end, without the terminator line. Not
    /// chomped even for `<<-` (see [`chomp_heredoc_content`]).
    pub content: String,
    /// Whether variables in the body are expanded: false when any part of the word is quoted.
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body's lines (and the terminator may be indented
    /// with tabs).
    pub chomp: bool,
    /// The `N` of `N<<EOF`, 0 when absent.
    pub file_descriptor: u32,
}

/// A warning about a construct BuildKit accepts but plans to reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWarning {
    pub line: usize,
    pub message: String,
}

/// A syntax error, located at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl ParseError {
    fn new(line: usize, col: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            col,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error with its source line and a caret under the column:
    ///
    /// ```text
    /// Dockerfile:3:5: unterminated heredoc
    ///   3 | RUN <<EOF
    ///     |     ^
    /// hint: ...
    /// ```
    pub fn render(&self, file_name: &str, src: &str) -> String {
        let mut out = format!("{file_name}:{self}\n");
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        let text = src.split('\n').nth(self.line.wrapping_sub(1));
        if let Some(text) = text.filter(|_| !src.is_empty()) {
            let text = text.trim_end_matches(['\r', '\n']);
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            // Keep tabs in the caret line so the caret lines up with the source.
            let indent: String = text
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = writeln!(out, "  {num} | {text}");
            let _ = writeln!(out, "  {pad} | {indent}^");
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "hint: {hint}");
        }
        out
    }
}

/// The instruction keywords BuildKit knows.
pub const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The known instruction closest to `word` (case-insensitive edit distance of at most 2, and
/// less than the word's length), for "unknown instruction: CPOY (did you mean COPY?)". `None`
/// for a known instruction or nothing close.
pub fn suggest_instruction(word: &str) -> Option<&'static str> {
    let upper = word.to_uppercase();
    if INSTRUCTIONS.contains(&upper.as_str()) {
        return None;
    }
    let w: Vec<char> = upper.chars().collect();
    INSTRUCTIONS
        .iter()
        .map(|k| (levenshtein(&w, &k.chars().collect::<Vec<_>>()), *k))
        .filter(|(d, _)| *d <= 2 && *d < w.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(crate) fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Go's `bufio.Scanner` limit, which BuildKit inherits: a line (with its `\n`) may not be
/// longer than this.
const MAX_LINE: usize = 64 * 1024;

/// Parses a Dockerfile. A leading UTF-8 BOM and CRLF line ends are accepted.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let body = src.strip_prefix('\u{feff}').unwrap_or(src);
    let bom = src.len() - body.len();
    let mut lines: Vec<&str> = body.split_inclusive('\n').collect();
    // A line over the scanner's limit ends the input there and fails the parse (after any
    // error in what came before it).
    let too_long = lines.iter().enumerate().position(|(i, l)| {
        let len = l.len() + if i == 0 { bom } else { 0 };
        if l.ends_with('\n') {
            len > MAX_LINE
        } else {
            len >= MAX_LINE
        }
    });
    if let Some(i) = too_long {
        lines.truncate(i);
    }
    match (Parser::new(lines).run(), too_long) {
        (Ok(_), Some(i)) => Err(ParseError::new(
            i + 1,
            1,
            format!(
                "dockerfile line greater than max allowed size of {}",
                MAX_LINE - 1
            ),
        )),
        (r, _) => r,
    }
}

/// The state of BuildKit's directive parser: only the leading comment lines are looked at.
#[derive(Default)]
struct Directives {
    done: bool,
    seen: HashSet<String>,
}

impl Directives {
    /// `# name=value` with a known name, while still in the leading comments. Errors on a
    /// repeated directive.
    fn parse_line(&mut self, line: &str) -> Result<Option<(String, String)>, String> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((name, value)) = match_directive(rest.trim_start()) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_lowercase();
        // The reference parser (Dockerfile frontend before 1.8) predates `# check=`: to it that
        // line is a plain comment, which ends the directives, so a later `# escape=` is ignored.
        if !matches!(name.as_str(), "syntax" | "escape") {
            self.done = true;
            return Ok(None);
        }
        if !self.seen.insert(name.clone()) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        Ok(Some((name, value.to_string())))
    }
}

/// Go's RE2 `\s`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, BuildKit's directive pattern.
fn match_directive(s: &str) -> Option<(&str, &str)> {
    let name_len = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(s.len(), |(i, _)| i);
    if name_len == 0 {
        return None;
    }
    let (name, rest) = s.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    if rest.is_empty() {
        return None;
    }
    let value = rest.trim_matches(is_re_space);
    if value.is_empty() {
        // `.+?` needs one character: with only spaces after `=`, it takes the last one.
        let last = rest.char_indices().last()?.0;
        return Some((name, &rest[last..]));
    }
    Some((name, value))
}

/// Go's `trimNewline`: all trailing `\r` and `\n`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing escape character (and the spaces/tabs after it) that continues the line,
/// unless it is itself escaped. Returns the line and whether it ends the instruction.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape) {
        match before.chars().next_back() {
            None => return ("", false),
            Some(c) if c != escape => return (before, false),
            Some(_) => {}
        }
    }
    (line, true)
}

/// 1-based column of the first non-blank character of `line`.
fn first_col(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).count() + 1
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    next: usize,
    /// Lines consumed so far (the number of the last line read, 1-based).
    current: usize,
    escape: char,
    directives: Directives,
    found: Vec<(String, String)>,
}

impl<'a> Parser<'a> {
    fn new(lines: Vec<&'a str>) -> Self {
        Parser {
            lines,
            next: 0,
            current: 0,
            escape: '\\',
            directives: Directives::default(),
            found: Vec::new(),
        }
    }

    fn scan(&mut self) -> Option<&'a str> {
        let l = self.lines.get(self.next).copied();
        if l.is_some() {
            self.next += 1;
        }
        l
    }

    fn line_text(&self, line: usize) -> &'a str {
        self.lines
            .get(line.wrapping_sub(1))
            .map_or("", |l| trim_newline(l))
    }

    /// BuildKit's `processLine`: drop the line end (and leading blanks on an instruction's
    /// first line), look for a directive, and blank out comments.
    fn process_line(
        &mut self,
        raw: &'a str,
        strip_left: bool,
    ) -> Result<(&'a str, bool), ParseError> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        let line_no = self.current + 1;
        let directive = self
            .directives
            .parse_line(token)
            .map_err(|m| ParseError::new(line_no, first_col(raw), m))?;
        let is_directive = directive.is_some();
        if let Some((name, value)) = directive {
            if name == "escape" {
                self.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        let col = raw
                            .rfind(value.as_str())
                            .map_or(1, |i| raw[..i].chars().count() + 1);
                        return Err(ParseError::new(
                            line_no,
                            col,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        )
                        .hint("the escape directive accepts `# escape=\\` (the default) or `# escape=``"));
                    }
                };
            }
            self.found.push((name, value));
        }
        Ok((if is_comment(token) { "" } else { token }, is_directive))
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut instructions = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        while let Some(raw) = self.scan() {
            if is_comment(raw) {
                // BuildKit drops the line's first byte, whatever precedes the `#`.
                let c = String::from_utf8_lossy(&raw.as_bytes()[1..])
                    .trim()
                    .to_string();
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c);
                }
            }
            let (token, directive) = self.process_line(raw, true)?;
            if directive {
                comments.pop();
            }
            self.current += 1;
            let start_line = self.current;
            let (first, mut end_of_line) = trim_continuation(token, self.escape);
            if end_of_line && first.is_empty() {
                continue;
            }
            let mut line = first.to_string();
            let mut empty_continuation = false;
            while !end_of_line {
                let Some(raw) = self.scan() else { break };
                let (token, _) = self.process_line(raw, false)?;
                self.current += 1;
                if is_comment(raw) {
                    continue;
                }
                if token.trim_start().is_empty() {
                    empty_continuation = true;
                    continue;
                }
                let (part, eol) = trim_continuation(token, self.escape);
                line.push_str(part);
                end_of_line = eol;
            }
            if empty_continuation {
                warnings.push(ParseWarning {
                    line: self.current,
                    message: format!("Empty continuation line found in: {line}"),
                });
            }

            let at_start =
                |p: &Self, m: String| instruction_error(p.line_text(start_line), start_line, m);
            let mut node =
                new_node_from_line(&line, self.escape).map_err(|m| at_start(&self, m))?;
            node.comments = std::mem::take(&mut comments);

            if node.can_contain_heredoc() && line.contains("<<") {
                let docs = heredoc::heredocs_from_line(&line).map_err(|m| at_start(&self, m))?;
                for mut doc in docs {
                    let mut terminated = false;
                    while let Some(raw) = self.scan() {
                        self.current += 1;
                        let mut candidate = trim_newline(raw);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        doc.content.push_str(raw);
                    }
                    if !terminated {
                        return Err(self.unterminated(start_line, &doc.name));
                    }
                    node.heredocs.push(doc);
                }
            }
            node.set_lines(start_line, self.current);
            instructions.push(node);
        }
        if instructions.is_empty() {
            return Err(
                ParseError::new(self.current.max(1), 1, "file with no instructions")
                    .hint("a Dockerfile needs at least one instruction, such as FROM"),
            );
        }
        Ok(Dockerfile {
            escape: self.escape,
            directives: self.found,
            instructions,
            warnings,
        })
    }

    fn unterminated(&self, start_line: usize, name: &str) -> ParseError {
        let text = self.line_text(start_line);
        let col = text
            .find("<<")
            .map_or_else(|| first_col(text), |i| text[..i].chars().count() + 1);
        ParseError::new(start_line, col, "unterminated heredoc").hint(format!(
            "end the heredoc with a line containing only {name}"
        ))
    }
}

/// An error from an instruction's argument parser, located on its first line, with a hint.
fn instruction_error(text: &str, line: usize, message: String) -> ParseError {
    let mut col = first_col(text);
    let mut hint = None;
    if message == line_parsers::NOT_STRING_ARRAY {
        // Point at the array.
        col = text
            .find('[')
            .map_or(col, |i| text[..i].chars().count() + 1);
        hint = Some("quote every element, as in [\"sh\", \"-c\", \"echo hi\"], or use shell form");
    } else if message.ends_with("must have two arguments") {
        hint = Some("give a value: NAME=VALUE (or the legacy NAME VALUE)");
    } else if message.starts_with("Syntax error - can't find =") {
        hint = Some("every word must be NAME=VALUE; quote values that contain spaces");
    }
    let e = ParseError::new(line, col, message);
    match hint {
        Some(h) => e.hint(h),
        None => e,
    }
}

/// The deepest `ONBUILD ONBUILD ...` chain parsed (the instruction rejects any chain; the
/// parser only must not recurse without bound, as Go's growing stack lets BuildKit's).
const MAX_ONBUILD_NESTING: usize = 100;

/// One instruction from its joined line: keyword, flags, then the keyword's argument parser.
fn new_node_from_line(line: &str, escape: char) -> Result<Node, String> {
    node_from_line(line, escape, 0)
}

fn node_from_line(line: &str, escape: char, depth: usize) -> Result<Node, String> {
    if depth > MAX_ONBUILD_NESTING {
        return Err(format!(
            "ONBUILD nested more than {MAX_ONBUILD_NESTING} levels deep"
        ));
    }
    let (cmd, flags, rest) = split_command(line);
    let cmd = cmd.to_lowercase();
    let mut node = Node {
        original: line.to_string(),
        flags,
        ..Node::default()
    };
    if cmd == "onbuild" {
        if !rest.is_empty() {
            node.next = Some(Box::new(node_from_line(&rest, escape, depth + 1)?));
        }
    } else {
        let args = parse_args(&cmd, &rest, escape)?;
        node.values = args.values;
        node.json = args.json;
    }
    node.cmd = cmd;
    Ok(node)
}

impl Node {
    /// `RUN`, `COPY` and `ADD` in shell form (also inside `ONBUILD`) can have heredocs.
    fn can_contain_heredoc(&self) -> bool {
        let n = match (&self.next, self.cmd.as_str()) {
            (Some(inner), "onbuild") => inner,
            _ => self,
        };
        matches!(n.cmd.as_str(), "run" | "copy" | "add") && !n.json
    }

    fn set_lines(&mut self, start: usize, end: usize) {
        self.start_line = start;
        self.end_line = end;
        if let Some(inner) = &mut self.next {
            inner.set_lines(start, end);
        }
    }

    /// BuildKit's `Node.Dump`: `run ["--mount=x"] "echo hi"`, `onbuild (run "echo hi")`.
    pub fn dump(&self) -> String {
        let mut s = self.cmd.clone();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            let _ = write!(s, " [{}]", flags.join(" "));
        }
        for v in &self.values {
            s.push(' ');
            s.push_str(&go_quote(v));
        }
        if let Some(inner) = &self.next {
            let _ = write!(s, " ({})", inner.dump());
        }
        s.trim().to_string()
    }

    /// The JSON contract of `lade parse --format json` (see `testdata/dockerfile-json`).
    fn to_json(&self) -> Value {
        let inner = self.next.as_deref().filter(|_| self.cmd == "onbuild");
        let v = inner.unwrap_or(self);
        let values: Vec<&str> = if matches!(v.cmd.as_str(), "env" | "label") {
            v.values
                .chunks(3)
                .flat_map(|t| t.iter().take(2))
                .map(|s| c_str(s))
                .collect()
        } else if v.next.is_some() {
            // `ONBUILD ONBUILD RUN x`: BuildKit's inner ONBUILD holds its instruction in a
            // value-less node, which its value list reports as one empty string.
            vec![""]
        } else {
            v.values.iter().map(|s| c_str(s)).collect()
        };
        // BuildKit attaches an `ONBUILD RUN <<EOF` body to the ONBUILD node, but the reference
        // JSON reports the wrapped instruction's heredocs, which are none.
        let heredocs: Vec<Value> = v
            .heredocs
            .iter()
            .map(|h| {
                json!({"name": c_str(&h.name), "content": c_str(&h.content),
                       "expand": h.expand, "chomp": h.chomp})
            })
            .collect();
        json!({
            "cmd": self.cmd,
            "sub_cmd": inner.map(|n| n.cmd.as_str()),
            "json": v.json,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "flags": self.flags.iter().map(|s| c_str(s)).collect::<Vec<_>>(),
            "value": values,
            "heredocs": heredocs,
            "original": self.original,
        })
    }
}

/// A string up to its first NUL. The reference JSON was produced through a C-string boundary
/// that ends strings there, and a NUL cannot reach a process's arguments or environment anyway.
fn c_str(s: &str) -> &str {
    s.split('\0').next().unwrap_or(s)
}

impl Dockerfile {
    /// BuildKit's parser-test dump: one `(instruction)` line per instruction, no final newline.
    pub fn dump(&self) -> String {
        let lines: Vec<String> = self
            .instructions
            .iter()
            .map(|n| format!("({})", n.dump()))
            .collect();
        lines.join("\n")
    }

    /// One object per instruction: `cmd`, `sub_cmd`, `json`, `start_line`, `end_line`, `flags`,
    /// `value` (for `ENV`/`LABEL` the name/value pairs without separators), `heredocs` and
    /// `original`.
    pub fn to_json(&self) -> Value {
        Value::Array(self.instructions.iter().map(Node::to_json).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onbuild_chains_are_limited_not_a_stack_overflow() {
        let src = format!("FROM scratch\n{}RUN x\n", "ONBUILD ".repeat(8000));
        let e = parse(&src).unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "ONBUILD nested more than 100 levels deep")
        );
        let ok = format!("FROM scratch\n{}RUN x\n", "ONBUILD ".repeat(3));
        let df = parse(&ok).unwrap();
        assert_eq!(
            df.instructions[1].dump(),
            "onbuild (onbuild (onbuild (run \"x\")))"
        );
    }

    #[test]
    fn directives() {
        assert_eq!(match_directive("escape = `  "), Some(("escape", "`")));
        assert_eq!(match_directive("syntax=a b"), Some(("syntax", "a b")));
        assert_eq!(match_directive("escape=  "), Some(("escape", " ")));
        assert_eq!(match_directive("escape="), None);
        assert_eq!(match_directive("1x=y"), None);
        assert_eq!(match_directive("Comment here. x=y"), None);
    }

    #[test]
    fn continuation() {
        assert_eq!(trim_continuation("a \\  ", '\\'), ("a ", false));
        assert_eq!(trim_continuation("\\", '\\'), ("", false));
        assert_eq!(trim_continuation("a\\\\", '\\'), ("a\\\\", true));
        assert_eq!(trim_continuation("a`", '`'), ("a", false));
        assert_eq!(trim_continuation("a\\", '`'), ("a\\", true));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest_instruction("CPOY"), Some("COPY"));
        assert_eq!(suggest_instruction("form"), Some("FROM"));
        assert_eq!(suggest_instruction("ENTRYPONT"), Some("ENTRYPOINT"));
        assert_eq!(suggest_instruction("RUN"), None);
        assert_eq!(suggest_instruction("XYZZY"), None);
    }

    #[test]
    fn onbuild_heredoc_and_comments() {
        let df = parse("# stage\nFROM a\nONBUILD RUN <<EOF\nx\nEOF\n").unwrap();
        assert_eq!(df.instructions[0].comments, ["stage"]);
        let ob = &df.instructions[1];
        assert_eq!(ob.dump(), "onbuild (run \"<<EOF\")");
        assert_eq!((ob.start_line, ob.end_line), (3, 5));
        assert_eq!(ob.heredocs[0].content, "x\n");
    }

    #[test]
    fn empty_continuation_warnings_like_buildkit() {
        let src = "\nFROM alpine:3.6\n\nRUN valid \\\n    continuation\n\nRUN something \\\n\n    following \\\n\n    more\n\nRUN another \\\n\n    thing\n\nRUN non-indented \\\n# this is a comment\n   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n\t";
        let df = parse(src).unwrap();
        let w: Vec<&str> = df.warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(
            w,
            [
                "Empty continuation line found in: RUN something     following     more",
                "Empty continuation line found in: RUN another     thing"
            ]
        );
        assert_eq!(df.instructions[4].values, ["non-indented    after-comment"]);
    }

    #[test]
    fn empty_continuation_warns() {
        let df = parse("FROM a\nRUN a \\\n\n b\n").unwrap();
        assert_eq!(df.instructions[1].values, ["a  b"]);
        assert_eq!(df.warnings.len(), 1);
    }

    #[test]
    fn long_lines_fail() {
        let long = format!("FROM a\nRUN {}\n", "x".repeat(MAX_LINE));
        assert!(parse(&long)
            .unwrap_err()
            .message
            .contains("max allowed size"));
        let ok = format!("FROM a\nRUN {}\n", "x".repeat(MAX_LINE - 5));
        assert!(parse(&ok).is_ok());
    }
}
