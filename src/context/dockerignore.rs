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
    Regex(regex::Regex),
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
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::from("^");
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
                        use_regex = true;
                    }
                } else {
                    re.push_str("(.*/)?");
                    use_regex = true;
                }
                if token == 0 {
                    kind = Kind::Suffix;
                    use_regex = false;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                use_regex = true;
            }
            '?' => {
                re.push_str("[^/]");
                use_regex = true;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => match chars.get(i) {
                Some(&next) => {
                    i += 1;
                    re.push_str(&regex::escape(&next.to_string()));
                    use_regex = true;
                }
                None => re.push_str("\\\\"),
            },
            '[' | ']' => {
                re.push(ch);
                use_regex = true;
            }
            _ => re.push(ch),
        }
        token += 1;
    }
    if !use_regex {
        return Ok(kind);
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
        self.decide(path, |p, parent, dirs| {
            parent != "." && p.dirs <= dirs.len() && p.matches(&dirs[..p.dirs].join("/"))
        })
    }

    /// moby's `MatchesOrParentMatches`: the path or any of its parent directories matches.
    pub fn matches_or_parent(&self, path: &str) -> bool {
        self.decide(path, |p, parent, dirs| {
            parent != "." && (1..=dirs.len()).any(|n| p.matches(&dirs[..n].join("/")))
        })
    }

    fn decide(&self, path: &str, parent_hit: impl Fn(&Pattern, &str, &[String]) -> bool) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let (parent, dirs) = parent_dirs(path);
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion cannot change a match, nor an exclusion a non-match.
            if p.exclusion != matched {
                continue;
            }
            if p.matches(path) || parent_hit(p, &parent, &dirs) {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

pub fn match_component(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| match_component(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && match_component(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&b| b == b']').map(|p| p + 1) else {
                return false;
            };
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negate, class) = match class.split_first() {
                Some((b'^', r)) | Some((b'!', r)) => (true, r),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                let lo = class[i];
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= lo <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= lo == c;
                    i += 1;
                }
            }
            hit != negate && match_component(after, name_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            name.first() == Some(&rest[0]) && match_component(&rest[1..], &name[1..])
        }
        Some((&p, rest)) => name.first() == Some(&p) && match_component(rest, &name[1..]),
    }
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
