//! Variables in a compose file, as docker compose (compose-go's `template` and `dotenv`)
//! resolves them: `$VAR`, `${VAR}`, `${VAR:-default}` / `${VAR-default}`,
//! `${VAR:?error}` / `${VAR?error}`, `${VAR:+other}` / `${VAR+other}`, `$$` for a literal `$`;
//! defaults may hold variables themselves. Values come from the environment, then the
//! project's `.env` file.

use std::collections::BTreeMap;

/// Nesting of `${…}` inside defaults beyond this is an error, not a deep recursion.
const MAX_DEPTH: usize = 16;

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `${VAR:?message}` with VAR unset (or empty).
    #[error("required variable {name} is missing a value: {message}")]
    Required { name: String, message: String },
    #[error("invalid interpolation format for {text:?}: {reason}")]
    Invalid { text: String, reason: String },
}

/// Where variable values come from.
pub trait Lookup {
    fn get(&self, name: &str) -> Option<String>;
}

impl Lookup for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// Interpolates `s`. `unset` is told each variable that was used without a value and without
/// a default (it becomes the empty string, as docker compose warns).
pub fn interpolate(
    s: &str,
    vars: &dyn Lookup,
    unset: &mut dyn FnMut(&str),
) -> Result<String, TemplateError> {
    expand(s, vars, unset, 0)
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn expand(
    s: &str,
    vars: &dyn Lookup,
    unset: &mut dyn FnMut(&str),
    depth: usize,
) -> Result<String, TemplateError> {
    let invalid = |reason: &str| TemplateError::Invalid {
        text: s.to_string(),
        reason: reason.to_string(),
    };
    if depth > MAX_DEPTH {
        return Err(invalid("variables nested too deeply"));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let mut chars = after.chars();
        match chars.next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('{') => {
                let body_start = &after[1..];
                let end = closing_brace(body_start).ok_or_else(|| invalid("missing `}`"))?;
                let body = &body_start[..end];
                out.push_str(&braced(body, vars, unset, depth).map_err(|e| match e {
                    TemplateError::Invalid { reason, .. } => invalid(&reason),
                    other => other,
                })?);
                rest = &body_start[end + 1..];
            }
            Some(c) if is_name_start(c) => {
                let len = after
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(after.len());
                let name = &after[..len];
                match vars.get(name) {
                    Some(v) => out.push_str(&v),
                    None => unset(name),
                }
                rest = &after[len..];
            }
            // `$` before anything else stays as written (compose-go's pattern does not match).
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` closing a `${` whose body starts `s`, counting nested `${…}`.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn braced(
    body: &str,
    vars: &dyn Lookup,
    unset: &mut dyn FnMut(&str),
    depth: usize,
) -> Result<String, TemplateError> {
    let invalid = |reason: String| TemplateError::Invalid {
        text: format!("${{{body}}}"),
        reason,
    };
    let name_len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let name = &body[..name_len];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(invalid(format!("${{{body}}} is not a variable name")));
    }
    let op_text = &body[name_len..];
    let value = vars.get(name);
    if op_text.is_empty() {
        return Ok(value.unwrap_or_else(|| {
            unset(name);
            String::new()
        }));
    }
    let (colon, op_text) = match op_text.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, op_text),
    };
    let mut ops = op_text.chars();
    let op = ops.next();
    let arg = ops.as_str();
    // With `:`, an empty value counts as unset.
    let set = match &value {
        Some(v) => !(colon && v.is_empty()),
        None => false,
    };
    match op {
        Some('-') => {
            if set {
                Ok(value.unwrap_or_default())
            } else {
                expand(arg, vars, unset, depth + 1)
            }
        }
        Some('?') => {
            if set {
                Ok(value.unwrap_or_default())
            } else {
                Err(TemplateError::Required {
                    name: name.to_string(),
                    message: expand(arg, vars, unset, depth + 1)?,
                })
            }
        }
        Some('+') => {
            if set {
                expand(arg, vars, unset, depth + 1)
            } else {
                Ok(String::new())
            }
        }
        _ => Err(invalid(format!(
            "unexpected {:?} after the variable name {name}",
            &body[name_len..]
        ))),
    }
}

/// Parses a `.env` file as docker compose does: `KEY=VALUE` lines, `export ` prefixes,
/// `#` comments (a `#` after whitespace ends an unquoted value), 'single-quoted' values taken
/// as written, "double-quoted" ones with `\n`, `\t`, `\"`, `\\` escapes, and variables in
/// unquoted and double-quoted values interpolated from the lines above and `env`. Returns
/// the variables in file order, or the 1-based line of the first malformed one.
pub fn parse_dotenv(
    text: &str,
    env: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, raw)) = line.split_once('=') else {
            return Err((n + 1, format!("{line:?} is not KEY=VALUE")));
        };
        let key = key.trim();
        if key.is_empty() || !key.starts_with(is_name_start) || !key.chars().all(is_name_char) {
            return Err((n + 1, format!("{key:?} is not a variable name")));
        }
        let raw = raw.trim_start();
        let known = |out: &Vec<(String, String)>| {
            let mut m = env.clone();
            for (k, v) in out {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
            m
        };
        let value = if let Some(q) = raw.strip_prefix('\'') {
            let (v, _) = quoted(q, '\'', &mut lines).ok_or((n + 1, "unterminated '".into()))?;
            v
        } else if let Some(q) = raw.strip_prefix('"') {
            let (v, _) = quoted(q, '"', &mut lines).ok_or((n + 1, "unterminated \"".into()))?;
            let v = unescape(&v);
            interpolate(&v, &known(&out), &mut |_| {}).map_err(|e| (n + 1, e.to_string()))?
        } else {
            let v = match raw.find(" #").or_else(|| raw.find("\t#")) {
                Some(i) => &raw[..i],
                None => raw,
            };
            interpolate(v.trim_end(), &known(&out), &mut |_| {})
                .map_err(|e| (n + 1, e.to_string()))?
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// The text up to the closing `quote` (possibly on later lines), with the rest of its line.
fn quoted<'a>(
    first: &'a str,
    quote: char,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> Option<(String, &'a str)> {
    let mut acc = String::new();
    let mut cur = first;
    loop {
        let mut escaped = false;
        for (i, c) in cur.char_indices() {
            if quote == '"' && c == '\\' && !escaped {
                escaped = true;
                continue;
            }
            if c == quote && !escaped {
                acc.push_str(&cur[..i]);
                return Some((acc, &cur[i + 1..]));
            }
            escaped = false;
        }
        acc.push_str(cur);
        acc.push('\n');
        cur = lines.next()?.1;
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("TAG", "1.2"), ("EMPTY", ""), ("REG", "localhost:5000")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(s: &str) -> Result<(String, Vec<String>), TemplateError> {
        let mut unset = Vec::new();
        let out = interpolate(s, &vars(), &mut |n| unset.push(n.to_string()))?;
        Ok((out, unset))
    }

    fn ok(s: &str) -> String {
        run(s).unwrap().0
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(ok("app:$TAG"), "app:1.2");
        assert_eq!(ok("${REG}/app:${TAG}-x"), "localhost:5000/app:1.2-x");
        assert_eq!(ok("$TAG.$TAG"), "1.2.1.2");
        let (out, unset) = run("a${NOPE}b$ALSO_NOPE").unwrap();
        assert_eq!(out, "ab");
        assert_eq!(unset, vec!["NOPE", "ALSO_NOPE"]);
    }

    #[test]
    fn defaults_distinguish_unset_and_empty() {
        assert_eq!(ok("${NOPE:-d}"), "d");
        assert_eq!(ok("${NOPE-d}"), "d");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${TAG:-d}"), "1.2");
        assert_eq!(ok("${NOPE:-${TAG}}"), "1.2");
        assert_eq!(ok("${NOPE:-a-b:c}"), "a-b:c");
        assert_eq!(ok("${TAG:+set}"), "set");
        assert_eq!(ok("${EMPTY:+set}"), "");
        assert_eq!(ok("${EMPTY+set}"), "set");
        assert_eq!(ok("${NOPE+set}"), "");
    }

    #[test]
    fn required_variables_name_themselves_and_the_message() {
        let e = run("${NOPE:?set NOPE to the registry}").unwrap_err();
        assert_eq!(
            e,
            TemplateError::Required {
                name: "NOPE".into(),
                message: "set NOPE to the registry".into()
            }
        );
        assert!(run("${EMPTY:?x}").is_err());
        assert_eq!(ok("${EMPTY?x}"), "");
        assert_eq!(ok("${TAG:?x}"), "1.2");
    }

    #[test]
    fn dollar_dollar_and_lone_dollars() {
        assert_eq!(ok("$$TAG"), "$TAG");
        assert_eq!(ok("cost: 5$"), "cost: 5$");
        assert_eq!(ok("$1 $ {"), "$1 $ {");
        assert_eq!(ok("$${TAG}"), "${TAG}");
    }

    #[test]
    fn malformed_braces_are_errors() {
        assert!(matches!(run("${TAG"), Err(TemplateError::Invalid { .. })));
        assert!(matches!(run("${}"), Err(TemplateError::Invalid { .. })));
        assert!(matches!(run("${1X}"), Err(TemplateError::Invalid { .. })));
        assert!(matches!(run("${TAG!}"), Err(TemplateError::Invalid { .. })));
        let deep = format!("{}x{}", "${N:-".repeat(40), "}".repeat(40));
        assert!(matches!(run(&deep), Err(TemplateError::Invalid { .. })));
    }

    #[test]
    fn dotenv_lines() {
        let env: BTreeMap<String, String> = [("HOME".to_string(), "/home/u".to_string())].into();
        let text = "# comment\n\nA=1\nexport B = two words # note\nC='lit $A'\nD=\"x\\ny $A\"\nE=${A}-${HOME}\nF=\"multi\nline\"\nG=\n";
        let got = parse_dotenv(text, &env).unwrap();
        let m: BTreeMap<_, _> = got.into_iter().collect();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "lit $A");
        assert_eq!(m["D"], "x\ny 1");
        assert_eq!(m["E"], "1-/home/u");
        assert_eq!(m["F"], "multi\nline");
        assert_eq!(m["G"], "");
        assert_eq!(parse_dotenv("A=1\nnot a line\n", &env).unwrap_err().0, 2);
        assert_eq!(parse_dotenv("A='open\n", &env).unwrap_err().0, 1);
    }
}
