//! Shell patterns of `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`: `*` (any run of characters), `?`
//! (one character) and literals, where `\*`, `\?` and `\\` are literal and `\}` / `\/` stand
//! for `}` / `/`. BuildKit turns them into Go regular expressions; this module implements the
//! same matching directly, with Go's leftmost-first preference (lazy `*` for `#`/`%`, greedy
//! otherwise) and Go's `.`, which does not match a newline.

use std::collections::HashMap;

/// The most `*` a pattern may have: the matcher recurses once per star. (Go's regexp, which
/// BuildKit uses, has a size limit of its own; no real pattern comes near either.)
const MAX_STARS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

fn compile(pattern: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            // `**` matches what `*` does (with either preference); one star keeps the
            // matcher's recursion, one level per star, shallower.
            '*' if toks.last() == Some(&Tok::Star) => {}
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Any),
            '\\' => {
                // `}` and `/` had to be escaped to be part of `${}`; the escape is not part of
                // the pattern.
                if matches!(it.peek(), Some('}' | '/')) {
                    continue;
                }
                match it.next() {
                    Some(e @ ('*' | '?' | '\\')) => toks.push(Tok::Lit(e)),
                    other => {
                        return Err(format!(
                            "invalid escape '\\{}'",
                            other.unwrap_or('\u{fffd}')
                        ))
                    }
                }
            }
            _ => toks.push(Tok::Lit(c)),
        }
    }
    let stars = toks.iter().filter(|t| **t == Tok::Star).count();
    if stars > MAX_STARS {
        return Err(format!("more than {MAX_STARS} '*' wildcards"));
    }
    Ok(toks)
}

/// A compiled pattern matched against one text, with memoised failures so that many stars stay
/// polynomial.
struct Matcher<'a> {
    toks: &'a [Tok],
    text: &'a [char],
    greedy: bool,
    memo: HashMap<(usize, usize), Option<usize>>,
}

impl Matcher<'_> {
    /// The end of the preferred match of `toks[i..]` starting at `pos`, trying alternatives in
    /// the order a backtracking regex engine would (which is what Go's leftmost-first RE2 returns).
    fn at(&mut self, mut i: usize, mut pos: usize) -> Option<usize> {
        // A run of literals and `?` has one way to match: walk it without recursing, so the
        // recursion depth is the number of stars (bounded by `MAX_STARS`), not the length.
        loop {
            match self.toks.get(i) {
                None => return Some(pos),
                Some(Tok::Lit(c)) => match self.text.get(pos) {
                    Some(t) if t == c => {}
                    _ => return None,
                },
                Some(Tok::Any) => match self.text.get(pos) {
                    Some(t) if *t != '\n' => {}
                    _ => return None,
                },
                Some(Tok::Star) => break,
            }
            i += 1;
            pos += 1;
        }
        if let Some(r) = self.memo.get(&(i, pos)) {
            return *r;
        }
        let max = self.text[pos..]
            .iter()
            .position(|c| *c == '\n')
            .unwrap_or(self.text.len() - pos);
        let r = if self.greedy {
            (0..=max).rev().find_map(|k| self.at(i + 1, pos + k))
        } else {
            (0..=max).find_map(|k| self.at(i + 1, pos + k))
        };
        self.memo.insert((i, pos), r);
        r
    }

    /// The leftmost match at or after `from`, as (start, end).
    fn find(&mut self, from: usize) -> Option<(usize, usize)> {
        (from..=self.text.len()).find_map(|s| self.at(0, s).map(|e| (s, e)))
    }
}

fn matcher<'a>(toks: &'a [Tok], text: &'a [char], greedy: bool) -> Matcher<'a> {
    Matcher {
        toks,
        text,
        greedy,
        memo: HashMap::new(),
    }
}

/// `${VAR#p}` / `${VAR##p}`: removes the shortest (longest if `greedy`) prefix matching `pattern`.
pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let toks = compile(pattern)?;
    let text: Vec<char> = value.chars().collect();
    Ok(match matcher(&toks, &text, greedy).at(0, 0) {
        Some(end) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// `${VAR%p}` / `${VAR%%p}`: the suffix counterpart, done like BuildKit by reversing both the
/// pattern (keeping escapes before what they escape) and the value.
pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed_value: String = value.chars().rev().collect();
    let r = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(r.chars().rev().collect())
}

fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            out.push(chars[i + 1]);
            out.push('\\');
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out.reverse();
    out.into_iter().collect()
}

/// `${VAR/p/r}` (first match) and `${VAR//p/r}` (all matches, greedy `*`).
pub(super) fn replace(pattern: &str, value: &str, repl: &str, all: bool) -> Result<String, String> {
    let toks = compile(pattern)?;
    let text: Vec<char> = value.chars().collect();
    let mut m = matcher(&toks, &text, true);
    let slice = |a: usize, b: usize| text[a..b].iter().collect::<String>();
    if !all {
        return Ok(match m.find(0) {
            Some((s, e)) => slice(0, s) + repl + &slice(e, text.len()),
            None => value.to_string(),
        });
    }
    // Go's Regexp.ReplaceAllString: no replacement for an empty match right after the previous
    // match, always advance, and expand `$0`/`${name}` templates in the replacement.
    let mut out = String::new();
    let (mut search, mut last_end) = (0, 0);
    while search <= text.len() {
        let Some((s, e)) = m.find(search) else { break };
        out.push_str(&slice(last_end, s));
        if e > last_end || s == 0 {
            out.push_str(&expand_template(repl, &slice(s, e)));
        }
        last_end = e;
        search = if search + 1 > e { search + 1 } else { e };
    }
    out.push_str(&slice(last_end.min(text.len()), text.len()));
    Ok(out)
}

/// Go's `Regexp.Expand` for a regex without groups: `$$` is `$`, `$0`/`${0}` the match, any
/// other `$name`/`${name}` nothing, and a malformed `$` stays as is.
fn expand_template(template: &str, whole: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let (brace, body) = match rest.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let len: usize = body
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .map(char::len_utf8)
            .sum();
        let name = &body[..len];
        let after = &body[len..];
        let ok = !name.is_empty() && (!brace || after.starts_with('}'));
        if !ok {
            out.push('$');
            continue;
        }
        rest = if brace { &after[1..] } else { after };
        if name == "0" {
            out.push_str(whole);
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_patterns_do_not_recurse_per_character() {
        let long = "ab".repeat(200_000);
        assert_eq!(trim_prefix(&long, &format!("{long}c"), false).unwrap(), "c");
        assert_eq!(trim_suffix(&long, &format!("c{long}"), true).unwrap(), "c");
        let stars = "*a".repeat(MAX_STARS);
        let text = format!("{}b", "a".repeat(MAX_STARS));
        assert_eq!(trim_prefix(&stars, &text, false).unwrap(), "b");
        let err = trim_prefix(&format!("{stars}*?"), "x", true).unwrap_err();
        assert_eq!(err, "more than 1000 '*' wildcards");
        // A run of stars is one star.
        assert_eq!(trim_prefix(&"*".repeat(5000), "abc", false).unwrap(), "abc");
        assert_eq!(trim_prefix("a**c", "abbcc", true).unwrap(), "");
    }

    #[test]
    fn reverse_keeps_escapes_in_front() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
        assert_eq!(reverse_pattern("abc"), "cba");
    }

    #[test]
    fn lazy_and_greedy_prefixes() {
        assert_eq!(trim_prefix("a*", "aXaY", false).unwrap(), "XaY");
        assert_eq!(trim_prefix("a*", "aXaY", true).unwrap(), "");
        assert_eq!(trim_prefix("*a", "XaYa", false).unwrap(), "Ya");
        assert_eq!(trim_suffix("a*", "XaYa", false).unwrap(), "XaY");
        assert_eq!(trim_suffix("a*", "XaYa", true).unwrap(), "X");
        // Go's `.` does not cross a newline.
        assert_eq!(trim_prefix("*b", "a\nb", true).unwrap(), "a\nb");
    }

    #[test]
    fn replace_all_like_go() {
        assert_eq!(replace("o", "foo", "0", true).unwrap(), "f00");
        assert_eq!(replace("", "abc", "-", true).unwrap(), "-a-b-c-");
        assert_eq!(replace("*", "abc", "-", true).unwrap(), "-");
        assert_eq!(replace("x*", "abc", "-", true).unwrap(), "abc");
        assert_eq!(replace("b", "abc", "[$0]", true).unwrap(), "a[b]c");
        assert_eq!(replace("b", "abc", "$$x$y", true).unwrap(), "a$xc");
        assert_eq!(replace("b", "abc", "$0", false).unwrap(), "a$0c");
        assert!(replace("\\x", "abc", "", true).is_err());
    }
}
