//! Splitting an instruction line into keyword, `--flags` and the rest.

/// The whitespace of BuildKit's `[\t\v\f\r ]+` separator (no newline, no Unicode spaces).
pub(super) fn is_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `unicode.IsSpace` applied to a single byte, as BuildKit's byte-wise loops do: this
/// makes the UTF-8 continuation bytes 0x85 and 0xA0 "spaces".
pub(super) fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// Splits at the first run of separators: `[first, rest]`, or `[s]` without separators.
pub(super) fn split2(s: &str) -> (&str, Option<&str>) {
    match s.find(is_sep) {
        None => (s, None),
        Some(i) => (&s[..i], Some(s[i..].trim_start_matches(is_sep))),
    }
}

/// Splits on runs of separators (the input is trimmed, so there are no empty fields).
pub(super) fn split_all(s: &str) -> Vec<String> {
    s.split(is_sep)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// `KEYWORD --flag=x --other rest...` → (keyword, flags, rest), the rest trimmed.
pub(super) fn split_command(line: &str) -> (String, Vec<String>, String) {
    let (cmd, rest) = split2(line.trim());
    let (args, flags) = match rest {
        Some(rest) => extract_builder_flags(rest),
        None => (String::new(), Vec::new()),
    };
    (cmd.to_string(), flags, args.trim().to_string())
}

/// Takes the leading words that start with `--` as flags (a bare `--` ends them). Quotes group
/// and are removed, a backslash escapes the next byte.
///
/// The backslash is fixed, whatever `# escape=` says: that is the reference parser's behaviour
/// (the Dockerfile frontend before 1.15, which the JSON contract in `testdata/dockerfile-json`
/// is checked against). Frontend 1.15 switched to the escape directive's character here, which only
/// matters for a backslash or backtick inside a flag of a `# escape=\`` file.
///
/// Like BuildKit this walks bytes and widens each byte to a character, so a non-ASCII flag
/// value comes out Latin-1-decoded (`é` becomes `Ã©`); the instructions BuildKit accepts are
/// the ones lade accepts.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    let b = line.as_bytes();
    let rest_from = |pos: usize| String::from_utf8_lossy(&b[pos..]).into_owned();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote: Option<u8> = None;
    let mut in_word = false;
    let mut pos = 0;
    while pos < b.len() {
        let ch = b[pos];
        if !in_word {
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            // Only keep going if the next word starts with `--`.
            if ch != b'-' || b.get(pos + 1) != Some(&b'-') {
                return (rest_from(pos), words);
            }
            in_word = true;
        }
        match quote {
            None => {
                if is_space_byte(ch) {
                    if word == "--" {
                        return (rest_from(pos), words);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    blank_ok = false;
                    in_word = false;
                } else if ch == b'\'' || ch == b'"' {
                    quote = Some(ch);
                    blank_ok = true;
                } else if ch == b'\\' {
                    if let Some(&next) = b.get(pos + 1) {
                        word.push(char::from(next));
                        pos += 1;
                    }
                } else {
                    word.push(char::from(ch));
                }
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                } else if ch == b'\\' {
                    match b.get(pos + 1) {
                        Some(&next) => {
                            word.push(char::from(next));
                            pos += 1;
                        }
                        None => quote = None,
                    }
                } else {
                    word.push(char::from(ch));
                }
            }
        }
        pos += 1;
    }
    if in_word && word != "--" && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    (String::new(), words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_rest() {
        let (cmd, flags, rest) = split_command("COPY --from=a --chown=\"1 2\" -- x y");
        assert_eq!(cmd, "COPY");
        assert_eq!(flags, ["--from=a", "--chown=1 2"]);
        assert_eq!(rest, "x y");
        let (_, flags, rest) = split_command("CMD --doit -- [ ]");
        assert_eq!((flags, rest.as_str()), (vec!["--doit".to_string()], "[ ]"));
        let (_, flags, rest) = split_command("RUN --a=1");
        assert_eq!((flags, rest.as_str()), (vec!["--a=1".to_string()], ""));
        let (cmd, flags, rest) = split_command("  FROM\t  x  ");
        assert_eq!((cmd.as_str(), flags.len(), rest.as_str()), ("FROM", 0, "x"));
    }
}
