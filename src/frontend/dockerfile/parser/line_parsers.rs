//! How each instruction's arguments become value nodes, following BuildKit's dispatch table:
//! JSON-or-string (`RUN`, `CMD`, `ENTRYPOINT`, `SHELL`), JSON-or-words (`ADD`, `COPY`,
//! `VOLUME`), words (`FROM`, `EXPOSE`), name/value triples (`ENV`, `LABEL`), words with quotes
//! kept (`ARG`), one string (`MAINTAINER`, `USER`, `WORKDIR`, `STOPSIGNAL`) and `HEALTHCHECK`.
//! Unknown keywords are not an error at this level: BuildKit keeps them with one empty value.

use super::json::{parse_string_array, JsonError};
use super::split_command::{is_space_byte, split2, split_all};

/// The values of one instruction and whether they came from JSON (exec form).
#[derive(Debug, Default)]
pub(super) struct Args {
    pub values: Vec<String>,
    pub json: bool,
}

impl Args {
    fn words(values: Vec<String>) -> Self {
        Args {
            values,
            json: false,
        }
    }
}

pub(super) const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Parses `rest` for the (lowercase) keyword `cmd`; `ONBUILD` is handled by the caller.
pub(super) fn parse_args(cmd: &str, rest: &str, escape: char) -> Result<Args, String> {
    match cmd {
        "add" | "copy" | "volume" => maybe_json_to_list(rest),
        "arg" => Ok(Args::words(parse_words(rest, escape))),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(rest),
        "env" => name_val(rest, "ENV", escape),
        "label" => name_val(rest, "LABEL", escape),
        "expose" | "from" => Ok(Args::words(split_all(rest))),
        "healthcheck" => health_config(rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => Ok(Args::words(if rest.is_empty() {
            vec![]
        } else {
            vec![rest.to_string()]
        })),
        // BuildKit's parseIgnore: an empty value node.
        _ => Ok(Args::words(vec![String::new()])),
    }
}

/// Exec form when `rest` is a JSON string array, `None` when it is not JSON (shell form), an
/// error for a JSON array with non-string elements.
fn json(rest: &str) -> Result<Option<Args>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match parse_string_array(rest) {
        Ok(values) => Ok(Some(Args { values, json: true })),
        Err(JsonError::NotJson) => Ok(None),
        Err(JsonError::NotStringArray) => Err(NOT_STRING_ARRAY.to_string()),
    }
}

fn maybe_json(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::default());
    }
    Ok(json(rest)?.unwrap_or_else(|| Args::words(vec![rest.to_string()])))
}

fn maybe_json_to_list(rest: &str) -> Result<Args, String> {
    Ok(json(rest)?.unwrap_or_else(|| Args::words(split_all(rest))))
}

/// `HEALTHCHECK [flags] TYPE [args]`: the type word, then the rest like `CMD`.
fn health_config(rest: &str) -> Result<Args, String> {
    // BuildKit scans bytes here; see `is_space_byte`.
    let b = rest.as_bytes();
    let sep = b.iter().position(|&c| is_space_byte(c)).unwrap_or(b.len());
    if sep == 0 {
        return Ok(Args::default());
    }
    let next = b[sep..]
        .iter()
        .position(|&c| !is_space_byte(c))
        .map_or(b.len(), |i| sep + i);
    let typ = String::from_utf8_lossy(&b[..sep]).into_owned();
    let tail = String::from_utf8_lossy(&b[next..]);
    let cmd = maybe_json(&tail)?;
    let mut values = vec![typ];
    values.extend(cmd.values);
    Ok(Args {
        values,
        json: cmd.json,
    })
}

/// Splits into words on whitespace, keeping quotes and escapes in the words (they are removed
/// when the instruction is expanded); quoted spaces do not split.
pub(super) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let mut ch = chars[i];
        if !in_word {
            if ch.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
        }
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    in_word = false;
                    i += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if i + 1 == chars.len() {
                        // An escape at the very end is dropped.
                        i += 1;
                        continue;
                    }
                    // Unquoted, the escape and the next character both stay.
                    word.push(ch);
                    i += 1;
                    ch = chars[i];
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                // Inside double quotes the escape character escapes; inside single quotes it
                // is literal.
                if ch == escape && q != '\'' {
                    if i + 1 == chars.len() {
                        quote = None;
                        i += 1;
                        continue;
                    }
                    word.push(ch);
                    i += 1;
                    ch = chars[i];
                }
                word.push(ch);
            }
        }
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// `ENV`/`LABEL`: `name value` (legacy, one pair, separator `""`) or `name=value ...`
/// (separator `"="`), as triples name, value, separator.
fn name_val(rest: &str, key: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::default());
    };
    if !first.contains('=') {
        let (name, value) = split2(rest);
        let Some(value) = value else {
            return Err(format!("{key} must have two arguments"));
        };
        return Ok(Args::words(vec![name.into(), value.into(), String::new()]));
    }
    let mut values = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        values.extend([name.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(Args::words(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"abc="123 456" def"#, '\\'),
            [r#"abc="123 456""#, "def"]
        );
        assert_eq!(parse_words(r"a\ b c\", '\\'), [r"a\ b", "c"]);
        assert_eq!(parse_words(r#"'' x"#, '\\'), ["''", "x"]);
    }

    #[test]
    fn env_forms() {
        let a = name_val("A=1 B=\"x y\"", "ENV", '\\').unwrap();
        assert_eq!(a.values, ["A", "1", "=", "B", "\"x y\"", "="]);
        let a = name_val("D four  five", "ENV", '\\').unwrap();
        assert_eq!(a.values, ["D", "four  five", ""]);
        assert_eq!(
            name_val("PATH", "ENV", '\\').unwrap_err(),
            "ENV must have two arguments"
        );
        assert!(name_val("A=1 B", "LABEL", '\\').is_err());
    }

    #[test]
    fn healthcheck_type_then_command() {
        let a = health_config("CMD [\"x\"]").unwrap();
        assert_eq!(
            (a.values, a.json),
            (vec!["CMD".to_string(), "x".to_string()], true)
        );
        assert_eq!(health_config("NONE").unwrap().values, ["NONE"]);
    }
}
