//! `.dockerignore` patterns (moby patternmatcher semantics: Go `filepath.Match` per path
//! segment, `**` for any number of segments, `!` exceptions, the last matching pattern wins).

/// One compiled pattern.
#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<Vec<u8>>,
    exclusion: bool,
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

/// `filepath.Clean` for `/`-separated patterns.
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

impl PatternMatcher {
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut out = Vec::new();
        for raw in patterns {
            let mut p = raw.trim().to_string();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].to_string();
                if p.is_empty() {
                    return Err(PatternError {
                        pattern: raw.clone(),
                        message: "illegal exclusion pattern: \"!\"".into(),
                    });
                }
            }
            let p = clean(&p);
            let segments: Vec<Vec<u8>> = p
                .trim_start_matches('/')
                .split('/')
                .map(|s| s.as_bytes().to_vec())
                .collect();
            for s in &segments {
                validate_segment(s).map_err(|message| PatternError {
                    pattern: raw.clone(),
                    message,
                })?;
            }
            out.push(Pattern {
                segments,
                exclusion,
            });
        }
        Ok(PatternMatcher { patterns: out })
    }

    pub fn exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` itself is matched (the last matching pattern decides).
    pub fn matches(&self, path: &str) -> bool {
        let segs = path_segments(path);
        let mut matched = false;
        for p in &self.patterns {
            if match_segments(&p.segments, &segs) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether `path` or one of its parent directories is matched.
    pub fn matches_or_parent(&self, path: &str) -> bool {
        let segs = path_segments(path);
        let mut matched = false;
        for p in &self.patterns {
            let hit = (1..=segs.len()).any(|n| match_segments(&p.segments, &segs[..n]));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

fn path_segments(path: &str) -> Vec<Vec<u8>> {
    let c = clean(path);
    c.trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

fn match_segments(pat: &[Vec<u8>], path: &[Vec<u8>]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first.as_slice() == b"**" => {
            (0..=path.len()).any(|i| match_segments(rest, &path[i..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, prest)) => match_component(first, seg) && match_segments(rest, prest),
            None => false,
        },
    }
}

fn validate_segment(s: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => {
                if i + 1 >= s.len() {
                    return Err("syntax error in pattern (trailing backslash)".into());
                }
                i += 2;
            }
            b'[' => {
                let close = s[i + 1..]
                    .iter()
                    .position(|&b| b == b']')
                    .ok_or("syntax error in pattern (unclosed [)")?;
                i += close + 2;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Go's `filepath.Match` for one path segment: `*`, `?`, `[...]` classes, `\` escapes.
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
    validate_segment(pat)?;
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
