//! `.dockerignore` patterns with moby patternmatcher's semantics: patterns are cleaned, `!`
//! marks exceptions, the last deciding pattern wins; each pattern becomes an exact, prefix
//! (`dir/**`), suffix (`**/x`) or regular-expression match as moby compiles it, and its
//! syntax is checked with Go `filepath.Match`'s rules.

/// How a pattern matches, as moby's patternmatcher decides when compiling it.
#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `dir/**`: anything starting with the part before `**`.
    Prefix,
    /// `**/x` or `**`: anything ending with the part after `**`.
    Suffix,
    /// The expression moby would build, matched by [`Glob`] without a regex engine.
    Glob(Glob),
    /// Patterns with `[`, `]` or `^`, which moby copies into its expression as they are.
    Regex(regex::Regex),
}

/// One element of a compiled pattern, matched like the regular expression moby writes for
/// it. Compiling is a pass over the pattern, so 100,000 patterns cost what reading them does
/// (a regex each took 10 s and 1.5 GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// One given character.
    Lit(char),
    /// `[^/]`.
    One,
    /// `[^/]*`.
    Star,
    /// `.*` (Go's `.`: anything but a newline).
    Any,
    /// Either go on with the next node or skip the next `n` (the `(.*/)?` of `**/` is
    /// `Skip(2), Any, Lit('/')`).
    Skip(usize),
}

/// A pattern as [`Node`]s, anchored at both ends.
#[derive(Debug, Clone, Default)]
struct Glob {
    nodes: Vec<Node>,
}

impl Glob {
    fn push_re(&mut self, re: &str) {
        match re {
            ".*" => self.nodes.push(Node::Any),
            "(.*/)?" => {
                self.nodes
                    .extend([Node::Skip(2), Node::Any, Node::Lit('/')]);
            }
            "[^/]*" => self.nodes.push(Node::Star),
            "[^/]" => self.nodes.push(Node::One),
            _ => unreachable!("not an expression compile writes: {re}"),
        }
    }

    /// Adds state `i` and what it reaches without consuming a character.
    fn enter(&self, states: &mut [bool], i: usize) {
        let mut todo = vec![i];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut states[i], true) {
                continue;
            }
            match self.nodes.get(i) {
                Some(Node::Star | Node::Any) => todo.push(i + 1),
                Some(Node::Skip(n)) => todo.extend([i + 1, i + 1 + n]),
                _ => {}
            }
        }
    }

    /// Whether the whole `path` matches: the set of states is followed character by
    /// character, so time is path length × pattern length and nothing recurses.
    fn is_match(&self, path: &str) -> bool {
        let n = self.nodes.len();
        let mut states = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        self.enter(&mut states, 0);
        for c in path.chars() {
            next.fill(false);
            let mut any = false;
            for (i, (&on, node)) in states.iter().zip(&self.nodes).enumerate() {
                if !on {
                    continue;
                }
                let to = match *node {
                    Node::Lit(l) if l == c => i + 1,
                    Node::One if c != '/' => i + 1,
                    Node::Star if c != '/' => i,
                    Node::Any if c != '\n' => i,
                    _ => continue,
                };
                self.enter(&mut next, to);
                any = true;
            }
            if !any {
                return false;
            }
            std::mem::swap(&mut states, &mut next);
        }
        states[n]
    }
}

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    cleaned: String,
    /// Number of `/`-separated segments of the pattern.
    dirs: usize,
    exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid .dockerignore pattern {pattern:?}: {message}")]
pub struct PatternError {
    pub pattern: String,
    pub message: String,
}

impl From<PatternError> for super::ContextError {
    fn from(e: PatternError) -> Self {
        super::ContextError::Pattern {
            pattern: e.pattern,
            message: e.message,
        }
    }
}

/// `filepath.Clean` for `/`-separated paths.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// Go's `filepath.Match` syntax check: a character class needs a member before its `]`, `-`
/// and `]` must be escaped inside it, and a pattern cannot end in a lone backslash.
fn validate(p: &str) -> Result<(), String> {
    let chars: Vec<char> = p.chars().collect();
    let bad = || Err("syntax error in pattern".to_string());
    // One class member, possibly escaped, that must be followed by more pattern.
    let member = |i: usize| -> Option<usize> {
        let c = *chars.get(i)?;
        if c == '-' || c == ']' {
            return None;
        }
        let next = if c == '\\' {
            chars.get(i + 1)?;
            i + 2
        } else {
            i + 1
        };
        chars.get(next)?;
        Some(next)
    };
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return bad();
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    if chars.get(i) == Some(&']') && ranges > 0 {
                        i += 1;
                        break;
                    }
                    let Some(next) = member(i) else { return bad() };
                    i = next;
                    if chars.get(i) == Some(&'-') {
                        let Some(next) = member(i + 1) else {
                            return bad();
                        };
                        i = next;
                    }
                    ranges += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Compiles a cleaned pattern as moby does: a regular expression unless a plain exact,
/// prefix or suffix comparison does the job.
fn compile(p: &str) -> Result<Kind, String> {
    compile_with(p, true)
}

/// [`compile`]; `glob_ok: false` builds moby's regular expression even where a [`Glob`] does.
fn compile_with(p: &str, glob_ok: bool) -> Result<Kind, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::from("^");
    // The same expression as nodes; unusable when moby's expression holds raw `[`, `]`, `^`.
    let mut glob = Glob::default();
    let mut raw_regex = false;
    // moby's match type while scanning; only `Regex` needs the expression.
    let mut kind = Kind::Exact;
    let mut use_regex = false;
    let mut i = 0;
    let mut token = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if matches!(kind, Kind::Exact) && !use_regex {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        glob.push_re(".*");
                        use_regex = true;
                    }
                } else {
                    re.push_str("(.*/)?");
                    glob.push_re("(.*/)?");
                    use_regex = true;
                }
                if token == 0 {
                    kind = Kind::Suffix;
                    use_regex = false;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                glob.push_re("[^/]*");
                use_regex = true;
            }
            '?' => {
                re.push_str("[^/]");
                glob.push_re("[^/]");
                use_regex = true;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
                glob.nodes.push(Node::Lit(ch));
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    re.push_str(&regex::escape(&next.to_string()));
                    glob.nodes.push(Node::Lit(next));
                    use_regex = true;
                }
                None => {
                    re.push_str("\\\\");
                    glob.nodes.push(Node::Lit('\\'));
                }
            },
            '[' | ']' => {
                re.push(ch);
                raw_regex = true;
                use_regex = true;
            }
            _ => {
                re.push(ch);
                raw_regex |= ch == '^';
                glob.nodes.push(Node::Lit(ch));
            }
        }
        token += 1;
    }
    if !use_regex {
        return Ok(kind);
    }
    if !raw_regex && glob_ok {
        return Ok(Kind::Glob(glob));
    }
    re.push('$');
    regex::Regex::new(&re)
        .map(Kind::Regex)
        .map_err(|e| e.to_string())
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            Kind::Glob(g) => g.is_match(path),
            Kind::Regex(r) => r.is_match(path),
        }
    }
}

/// `filepath.Dir` of `path` and its segments.
fn parent_dirs(path: &str) -> (String, Vec<String>) {
    let parent = match path.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => clean(&path[..i]),
        None => ".".to_string(),
    };
    let dirs = parent.split('/').map(str::to_string).collect();
    (parent, dirs)
}

impl PatternMatcher {
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut out = Vec::new();
        for raw in patterns {
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            // moby cleans before looking at `!`, so `!a/../b` is the plain pattern `b`.
            let mut p = clean(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(PatternError {
                        pattern: raw.clone(),
                        message: "illegal exclusion pattern: \"!\"".into(),
                    });
                }
                p.remove(0);
            }
            validate(&p).map_err(|message| PatternError {
                pattern: raw.clone(),
                message,
            })?;
            let kind = compile(&p).map_err(|message| PatternError {
                pattern: raw.clone(),
                message,
            })?;
            out.push(Pattern {
                dirs: p.split('/').count(),
                cleaned: p,
                exclusion,
                kind,
            });
        }
        Ok(PatternMatcher { patterns: out })
    }

    pub fn exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// moby's `Matches`: the path, or its parent cut to the pattern's depth, matches; the
    /// last deciding pattern wins.
    pub fn matches(&self, path: &str) -> bool {
        self.decide(path, |p, parents| {
            p.dirs <= parents.len() && p.matches(&parents[p.dirs - 1])
        })
    }

    /// moby's `MatchesOrParentMatches`: the path or any of its parent directories matches.
    pub fn matches_or_parent(&self, path: &str) -> bool {
        self.decide(path, |p, parents| parents.iter().any(|d| p.matches(d)))
    }

    /// Whether `path` is excluded. moby goes through all patterns, each one that matches
    /// setting "excluded" to whether it is an inclusion (skipping those that could not change
    /// it): that is the kind of the last matching pattern, found here from the end. `parent_hit`
    /// is given the path's parent directories cut to 1, 2, ... segments (none at the top).
    fn decide(&self, path: &str, parent_hit: impl Fn(&Pattern, &[String]) -> bool) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let (parent, dirs) = parent_dirs(path);
        let parents: Vec<String> = if parent == "." {
            Vec::new()
        } else {
            (1..=dirs.len()).map(|n| dirs[..n].join("/")).collect()
        };
        self.patterns
            .iter()
            .rev()
            .find(|p| p.matches(path) || parent_hit(p, &parents))
            .is_some_and(|p| !p.exclusion)
    }
}

/// One element of a COPY source wildcard segment.
enum SegTok<'a> {
    Star,
    One,
    Class { negate: bool, set: &'a [u8] },
    Lit(u8),
}

impl SegTok<'_> {
    /// Whether this one-byte element (not a star) takes `c`.
    fn takes(&self, c: u8) -> bool {
        match self {
            SegTok::Star => true,
            SegTok::One => true,
            SegTok::Lit(l) => *l == c,
            SegTok::Class { negate, set } => {
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    let lo = set[i];
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= lo <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= lo == c;
                        i += 1;
                    }
                }
                hit != *negate
            }
        }
    }
}

/// The elements of `pat`, or `None` when a `[` has no `]` (nothing matches then).
fn segment_tokens(pat: &[u8]) -> Option<Vec<SegTok<'_>>> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'*' => toks.push(SegTok::Star),
            b'?' => toks.push(SegTok::One),
            b'[' => {
                let rest = &pat[i + 1..];
                let close = rest.iter().skip(1).position(|&b| b == b']')? + 1;
                let (negate, set) = match rest[..close].split_first() {
                    Some((b'^' | b'!', r)) => (true, r),
                    _ => (false, &rest[..close]),
                };
                toks.push(SegTok::Class { negate, set });
                i += close + 1;
            }
            b'\\' if i + 1 < pat.len() => {
                toks.push(SegTok::Lit(pat[i + 1]));
                i += 1;
            }
            b => toks.push(SegTok::Lit(b)),
        }
        i += 1;
    }
    Some(toks)
}

/// Whether a file name matches one wildcard segment of a COPY source (`*`, `?`, `[...]`,
/// `\x`). Every element but `*` takes one byte, so a match needs to remember only the last
/// star: linear space, no recursion, and no exponential backtracking however many stars.
pub fn match_component(pat: &[u8], name: &[u8]) -> bool {
    let Some(toks) = segment_tokens(pat) else {
        return false;
    };
    let (mut t, mut n) = (0, 0);
    // The last star seen and where its match currently ends.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match toks.get(t) {
            Some(SegTok::Star) => {
                star = Some((t, n));
                t += 1;
            }
            Some(tok) if tok.takes(name[n]) => {
                t += 1;
                n += 1;
            }
            _ => match star {
                Some((st, sn)) => {
                    star = Some((st, sn + 1));
                    t = st + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    toks[t..].iter().all(|tok| matches!(tok, SegTok::Star))
}

/// A matcher for one COPY source segment with wildcards.
pub fn component_matcher(pat: &[u8]) -> Result<impl Fn(&[u8]) -> bool + '_, String> {
    validate(&String::from_utf8_lossy(pat))?;
    Ok(move |name: &[u8]| match_component(pat, name))
}

/// Reads a `.dockerignore`: comments and blank lines dropped, lines trimmed and cleaned, a
/// leading `/` removed (also after `!`).
pub fn read_ignore_file(content: &str) -> Vec<String> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut out = Vec::new();
    for line in content.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim().to_string();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim().to_string();
        }
        if !p.is_empty() {
            p = clean(&p);
            p = p.trim_start_matches('/').to_string();
            if p.is_empty() {
                p = "/".into();
            }
        }
        out.push(if invert { format!("!{p}") } else { p });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn regex_of(p: &str) -> regex::Regex {
        match compile_with(p, false).unwrap() {
            Kind::Regex(r) => r,
            other => panic!("{p}: {other:?}"),
        }
    }

    /// The recursive definition `match_component` replaced, as the reference.
    fn match_component_reference(pat: &[u8], name: &[u8]) -> bool {
        let Some(toks) = segment_tokens(pat) else {
            return false;
        };
        fn go(toks: &[SegTok], name: &[u8]) -> bool {
            match toks.split_first() {
                None => name.is_empty(),
                Some((SegTok::Star, rest)) => (0..=name.len()).any(|i| go(rest, &name[i..])),
                Some((tok, rest)) => {
                    name.first().is_some_and(|&c| tok.takes(c)) && go(rest, &name[1..])
                }
            }
        }
        go(&toks, name)
    }

    #[test]
    fn segment_wildcards_match_without_recursion() {
        assert!(match_component(b"*.txt", b"a.txt"));
        assert!(match_component(b"a[b-d]?", b"acx"));
        assert!(!match_component(b"a[^b-d]?", b"acx"));
        assert!(match_component(b"a\\*", b"a*"));
        assert!(!match_component(b"a\\*", b"ab"));
        assert!(!match_component(b"a[bc", b"ab"));
        let long = vec![b'?'; 1 << 20];
        assert!(match_component(&long, &vec![b'x'; 1 << 20]));
        let stars = b"*a".repeat(50);
        assert!(!match_component(&stars, &[b'a'; 49]));
        assert!(match_component(&stars, &[b'a'; 50]));
    }

    #[test]
    fn globs_match_like_mobys_expressions() {
        for (p, yes, no) in [
            ("a/*.x", &["a/b.x", "a/.x"][..], &["a/b/c.x", "b.x"][..]),
            ("a/**/b", &["a/b", "a/x/y/b"], &["a/xb", "ab"]),
            ("a/*/**", &["a/b/", "a/b/c/d"], &["a/b"]),
            ("x?y", &["x-y"], &["x/y", "xy"]),
            ("a\\*b", &["a*b"], &["axb"]),
            ("*.go", &["a.go"], &["a/b.go"]),
        ] {
            let Kind::Glob(g) = compile(p).unwrap() else {
                panic!("{p} is not a glob")
            };
            for y in yes {
                assert!(g.is_match(y), "{p} should match {y}");
            }
            for n in no {
                assert!(!g.is_match(n), "{p} should not match {n}");
            }
        }
        // Raw class brackets and `^` stay with the regex engine, as moby writes them.
        assert!(matches!(compile("a[bc]").unwrap(), Kind::Regex(_)));
        assert!(matches!(compile("a*^b").unwrap(), Kind::Regex(_)));
    }

    #[test]
    fn many_patterns_compile_without_a_regex_each_and_the_last_decides() {
        let mut pats: Vec<String> = (0..100_000).map(|i| format!("pat{i}/*.x")).collect();
        pats.push("keep/**".into());
        pats.push("!keep/me".into());
        let m = PatternMatcher::new(&pats).unwrap();
        assert!(m.patterns.iter().all(|p| !matches!(p.kind, Kind::Regex(_))));
        assert!(m.matches("pat99999/a.x"));
        assert!(!m.matches("pat99999/a/b.x"));
        assert!(m.matches_or_parent("pat5/a.x/inner"));
        assert!(m.matches("keep/you"));
        assert!(!m.matches("keep/me"));
        assert!(!m.matches("Dockerfile"));
    }

    proptest! {
        #[test]
        fn segment_matching_agrees_with_the_recursive_definition(
            pat in "[ab*?\\[\\]^!\\\\-]{0,8}",
            name in "[ab\\]\\\\-]{0,8}",
        ) {
            prop_assert_eq!(
                match_component(pat.as_bytes(), name.as_bytes()),
                match_component_reference(pat.as_bytes(), name.as_bytes())
            );
        }

        #[test]
        fn glob_and_regex_agree(
            pat in "[ab/*?.\\\\]{1,8}",
            path in "[ab/.\n]{0,8}",
        ) {
            let cleaned = clean(&pat);
            prop_assume!(validate(&cleaned).is_ok());
            if let Kind::Glob(g) = compile(&cleaned).unwrap() {
                prop_assert_eq!(g.is_match(&path), regex_of(&cleaned).is_match(&path));
            }
        }
    }
}
