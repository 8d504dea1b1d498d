//! The exec-form test of `RUN ["a", "b"]`: does the argument decode, as Go's `encoding/json`
//! would decode it into `[]any`, to an array of strings?
//!
//! Written by hand rather than with `serde_json` to reproduce Go's decoder where the two differ:
//! lone UTF-16 surrogates become U+FFFD instead of an error, nesting deeper than 10000 is a
//! syntax error, and a number out of `float64` range is a (deferred) type error, which makes the
//! parser fall back to shell form rather than reject the line. The reference parser (Dockerfile
//! frontend before 1.9) reads the array with a `json.Decoder`, which stops after the first
//! value: whatever follows the closing `]` (`CMD ["a"] x`) is ignored, not a reason for shell
//! form. (Frontend 1.9 switched to `json.Unmarshal`, which makes such a line shell form.)

/// Why a candidate JSON array was not a string array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JsonError {
    /// Not JSON (or a decode error): the instruction is in shell form.
    NotJson,
    /// Valid JSON array with a non-string element: BuildKit rejects the instruction.
    NotStringArray,
}

const MAX_DEPTH: usize = 10000;

/// Decodes the JSON array of strings that `s` starts with; text after its `]` is ignored.
pub(super) fn parse_string_array(s: &str) -> Result<Vec<String>, JsonError> {
    let mut p = Parser {
        s: s.as_bytes(),
        src: s,
        pos: 0,
        range_error: false,
    };
    let (strings, all_strings) = p.top_array().ok_or(JsonError::NotJson)?;
    // Go reports the saved number-range error from Unmarshal; the element types are only
    // checked after a successful decode.
    if p.range_error {
        return Err(JsonError::NotJson);
    }
    if !all_strings {
        return Err(JsonError::NotStringArray);
    }
    Ok(strings)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
    range_error: bool,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.s.get(self.pos) == Some(&b)).then(|| self.pos += 1)
    }

    /// The top-level array: its string elements and whether all elements were strings.
    fn top_array(&mut self) -> Option<(Vec<String>, bool)> {
        self.eat(b'[')?;
        let mut out = Vec::new();
        let mut all_strings = true;
        self.ws();
        if self.eat(b']').is_some() {
            return Some((out, true));
        }
        loop {
            self.ws();
            if self.s.get(self.pos) == Some(&b'"') {
                out.push(self.string()?);
            } else {
                all_strings = false;
                self.skip_value(1)?;
            }
            self.ws();
            match self.s.get(self.pos)? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some((out, all_strings));
                }
                _ => return None,
            }
        }
    }

    /// Skips one value without recursion (depth is bounded only by `MAX_DEPTH`).
    fn skip_value(&mut self, base_depth: usize) -> Option<()> {
        let mut stack: Vec<u8> = Vec::new();
        loop {
            // A value is expected here.
            self.ws();
            match *self.s.get(self.pos)? {
                b'"' => {
                    self.string()?;
                }
                open @ (b'[' | b'{') => {
                    self.pos += 1;
                    stack.push(open);
                    if base_depth + stack.len() > MAX_DEPTH {
                        return None;
                    }
                    self.ws();
                    let close = if open == b'[' { b']' } else { b'}' };
                    if self.eat(close).is_some() {
                        stack.pop();
                    } else {
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                _ => self.number()?,
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&top) = stack.last() else {
                    return Some(());
                };
                self.ws();
                match (top, *self.s.get(self.pos)?) {
                    (_, b',') => {
                        self.pos += 1;
                        if top == b'{' {
                            self.key()?;
                        }
                        break;
                    }
                    (b'[', b']') | (b'{', b'}') => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => return None,
                }
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Option<()> {
        self.ws();
        if self.s.get(self.pos) != Some(&b'"') {
            return None;
        }
        self.string()?;
        self.ws();
        self.eat(b':')
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        if self.s[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        self.eat(b'-');
        match self.s.get(self.pos)? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.s.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.s.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = &self.src[start..self.pos];
        if text.parse::<f64>().map_or(true, |f| f.is_infinite()) {
            self.range_error = true;
        }
        Some(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.src.get(at..at + 4)?;
        if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let rest = &self.src[self.pos..];
            let c = rest.chars().next()?;
            match c {
                '"' => {
                    self.pos += 1;
                    return Some(out);
                }
                '\\' => {
                    let e = *self.s.get(self.pos + 1)?;
                    self.pos += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4(self.pos)?;
                            self.pos += 4;
                            out.push(self.utf16(u));
                        }
                        _ => return None,
                    }
                }
                c if (c as u32) < 0x20 => return None,
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// Decodes a `\uXXXX` escape already read as `u`, pairing surrogates like Go (an unpaired
    /// surrogate is U+FFFD and the next escape is decoded on its own).
    fn utf16(&mut self, u: u32) -> char {
        if (0xD800..0xDC00).contains(&u) && self.src[self.pos..].starts_with("\\u") {
            if let Some(lo) = self
                .hex4(self.pos + 2)
                .filter(|l| (0xDC00..0xE000).contains(l))
            {
                self.pos += 6;
                let c = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                return char::from_u32(c).unwrap_or('\u{fffd}');
            }
        }
        char::from_u32(u).unwrap_or('\u{fffd}')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        assert_eq!(parse_string_array("[]"), Ok(vec![]));
        assert_eq!(
            parse_string_array("[ \"a\" ,\t\"b\" ] "),
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_string_array(r#"["\u0041\ud83d\ude00\ud800x\/"]"#),
            Ok(vec!["A😀\u{fffd}x/".into()])
        );
        assert_eq!(
            parse_string_array(r#"["a", 1]"#),
            Err(JsonError::NotStringArray)
        );
        assert_eq!(
            parse_string_array(r#"["a", {"k": [null, true]}]"#),
            Err(JsonError::NotStringArray)
        );
        assert_eq!(
            parse_string_array(r#"["a", 1e999]"#),
            Err(JsonError::NotJson)
        );
        assert_eq!(parse_string_array(r#"["a",]"#), Err(JsonError::NotJson));
        assert_eq!(parse_string_array(r#"["a"] x"#), Ok(vec!["a".into()]));
        assert_eq!(parse_string_array(r#"["a"]]["b"]"#), Ok(vec!["a".into()]));
        assert_eq!(
            parse_string_array(r#"[1] x"#),
            Err(JsonError::NotStringArray)
        );
        assert_eq!(parse_string_array("['a']"), Err(JsonError::NotJson));
        assert_eq!(parse_string_array("[\"a\tb\"]"), Err(JsonError::NotJson));
        assert_eq!(parse_string_array("[01]"), Err(JsonError::NotJson));
        let deep = format!("[{}{}]", "[".repeat(20000), "]".repeat(20000));
        assert_eq!(parse_string_array(&deep), Err(JsonError::NotJson));
    }
}
