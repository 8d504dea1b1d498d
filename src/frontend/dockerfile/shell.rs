//! Shell-word expansion of Dockerfile words, with the semantics of BuildKit's
//! `frontend/dockerfile/shell` lexer.
//!
//! A word is processed left to right: single quotes keep everything literally, double quotes
//! keep everything but `$` expansions and escapes of `"`, `$` and the escape character, the
//! escape character (`\` or `` ` ``) outside quotes makes the next character literal, and
//! `$VAR` / `${VAR...}` expand from an environment. [`Lexer::process_word`] returns the single
//! resulting word (spaces kept), [`Lexer::process_words`] splits the result into words the way
//! BuildKit does: text that came from an unquoted expansion or unquoted literal text is split on
//! whitespace, quoted text is not.
//!
//! Supported `${}` forms: `${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`, `${VAR+w}`,
//! `${VAR:?msg}`, `${VAR?msg}`, `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`, `${VAR/p/r}`
//! and `${VAR//p/r}`, where `p` is a shell pattern with `*` and `?`.

mod pattern;

use std::collections::BTreeSet;

/// An error while expanding a word: an unterminated quote or `${`, a bad substitution, or a
/// `${VAR?message}` whose variable is unset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ShellError {
    /// The word being processed.
    pub word: String,
    /// What went wrong, in BuildKit's words.
    pub message: String,
}

/// The result of [`Lexer::process_word_with_matches`]: the expanded word and which variables
/// it referenced, found or not (BuildKit uses these for its unused/undefined-ARG checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub result: String,
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// Shell-word lexer. `new` gives BuildKit's default behaviour; the `raw_*`/`skip_unset_env`
/// switches exist for the parser's heredoc detection, which needs the word's original spelling.
#[derive(Debug, Clone)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
    skip_process_quotes: bool,
}

impl Lexer {
    /// A lexer whose escape character is `escape` (`\` by default in a Dockerfile, `` ` `` with
    /// `# escape=``).
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Treat quotes as ordinary characters (BuildKit's `SkipProcessQuotes`, used to expand
    /// the body of a heredoc, where a quote is just text).
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Keep quote characters in the output.
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output.
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written (`$X`, `${X:-y}`) instead of expanding
    /// them to the empty string.
    pub fn skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Expands `word` into one string (quotes removed, spaces kept).
    pub fn process_word(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ShellError> {
        Ok(self.process_word_with_matches(word, env)?.result)
    }

    /// Like [`Lexer::process_word`], also reporting which variables were looked up.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Expansion, ShellError> {
        let mut sw = ShellWord::new(self, word, env);
        let (result, _) = sw.process(word)?;
        Ok(Expansion {
            result,
            matched: sw.matched,
            unmatched: sw.unmatched,
        })
    }

    /// Expands `word` and splits the result into words.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<String>, ShellError> {
        let mut sw = ShellWord::new(self, word, env);
        Ok(sw.process(word)?.1)
    }
}

/// Accumulates the words of `process_words`. `in_word` can be true with an empty buffer (after
/// `""`), and, as in BuildKit, an empty word is never emitted.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

/// The state of one expansion: the input as characters and a cursor.
struct ShellWord<'a> {
    lex: &'a Lexer,
    env: &'a dyn Fn(&str) -> Option<String>,
    chars: Vec<char>,
    pos: usize,
    raw_escapes: bool,
    /// How many words (the top one and each nested `${...}` word) are being processed.
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// The deepest nesting of `${A:-${B:-...}}` words accepted. Each level is a few recursive
/// calls, so unbounded input would overflow the stack (BuildKit's Go stack grows instead);
/// no real Dockerfile nests more than a handful.
pub const MAX_NESTING: usize = 100;

/// An error before it is wrapped with the word it came from.
type Res<T> = Result<T, String>;

impl<'a> ShellWord<'a> {
    fn new(lex: &'a Lexer, word: &str, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        ShellWord {
            lex,
            env,
            chars: word.chars().collect(),
            pos: 0,
            raw_escapes: lex.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process(&mut self, source: &str) -> Result<(String, Vec<String>), ShellError> {
        self.process_stop_on(None, self.lex.raw_escapes)
            .map_err(|message| ShellError {
                word: source.to_string(),
                message,
            })
    }

    /// Processes up to the end of input or up to `stop` (consumed). `raw_escapes` applies for
    /// the duration of the call (BuildKit keeps escapes in `#`/`%`/`/` patterns so that `\*`
    /// stays a literal star).
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Res<(String, Vec<String>)> {
        if self.depth >= MAX_NESTING {
            return Err(format!(
                "substitutions nested more than {MAX_NESTING} levels deep"
            ));
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(&mut self, stop: Option<char>) -> Res<(String, Vec<String>)> {
        let mut result = String::new();
        // Each level has its own word buffer. (BuildKit 73ed6825 shares one buffer between a
        // word and a nested `${...}` inside it, which drops the text before the `${` from
        // `ProcessWords`; that is a bug, not a behaviour worth copying.)
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '\'' if !self.lex.skip_process_quotes => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' if !self.lex.skip_process_quotes => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape character makes the next one literal; at the end of the
                        // input it is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(unmatched(&stop.to_string()));
        }
        Ok((result, words.finish()))
    }

    /// Consumes an opening quote, which the word keeps when quotes stay raw.
    fn open_quote(&mut self) -> String {
        let open = self.next();
        match open {
            Some(q) if self.lex.raw_quotes => q.to_string(),
            _ => String::new(),
        }
    }

    fn close_quote(&self, result: &mut String, quote: char) {
        if self.lex.raw_quotes {
            result.push(quote);
        }
    }

    fn process_single_quote(&mut self) -> Res<String> {
        // Everything up to the next `'` is literal; a single quote cannot be escaped inside.
        let mut result = self.open_quote();
        loop {
            match self.next() {
                None => return Err(unmatched("single-quote")),
                Some('\'') => {
                    self.close_quote(&mut result, '\'');
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Res<String> {
        // Literal except `$` expansions; the escape character only escapes `"`, `$` and
        // itself, before anything else it stays.
        let mut result = self.open_quote();
        loop {
            match self.peek() {
                None => return Err(unmatched("double-quote")),
                Some('"') => {
                    self.pos += 1;
                    self.close_quote(&mut result, '"');
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(mut ch) => {
                    self.pos += 1;
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                self.pos += 1;
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = (self.env)(name);
        if v.is_some() {
            self.matched.insert(name.to_string());
        } else {
            self.unmatched.insert(name.to_string());
        }
        v
    }

    fn process_dollar(&mut self) -> Res<String> {
        self.pos += 1; // the `$`
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // the `{`
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut modifier: String = first.map(String::from).unwrap_or_else(|| "\u{fffd}".into());
        match first {
            Some('}') => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':' | '+' | '-' | '?' | '#' | '%') => {
                let null_is_unset = first == Some(':');
                let op = if null_is_unset {
                    let c = self.next();
                    modifier.push(c.unwrap_or('\u{fffd}'));
                    c
                } else {
                    first
                };
                let raw = matches!(op, Some('#' | '%'));
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({modifier}) in substitution"));
                }
                let word = self.word_until('}', raw, "syntax error: missing '}'")?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
                match op {
                    Some('-') => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    Some('+') => Ok(if unset { String::new() } else { word }),
                    Some('?') => match value {
                        None => Err(required(&name, &word, "is not allowed to be unset")),
                        Some(v) if null_is_unset && v.is_empty() => {
                            Err(required(&name, &word, "is not allowed to be empty"))
                        }
                        Some(v) => Ok(v),
                    },
                    Some(c @ ('#' | '%')) => {
                        // `#`/`%` remove the shortest match, `##`/`%%` the longest.
                        let (greedy, pat) = match word.strip_prefix(c) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let value = value.unwrap_or_default();
                        let r = if c == '%' {
                            pattern::trim_suffix(pat, &value, greedy)
                        } else {
                            pattern::trim_prefix(pat, &value, greedy)
                        };
                        r.map_err(|e| format!("invalid pattern ({pat}) in substitution: {e}"))
                    }
                    _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let pat = self.word_until('/', true, "syntax error: missing '/' in ${}")?;
                let replacement = self.word_until('}', true, "syntax error: missing '}'")?;
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pat}/{replacement}}}"));
                }
                pattern::replace(&pat, &value.unwrap_or_default(), &replacement, replace_all)
                    .map_err(|e| format!("invalid pattern ({pat}) in substitution: {e}"))
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    /// The word of a `${name<op>word}` up to `stop` (consumed); `missing` is the error when
    /// the input ends first.
    fn word_until(&mut self, stop: char, raw: bool, missing: &str) -> Res<String> {
        match self.process_stop_on(Some(stop), raw) {
            Ok((w, _)) => Ok(w),
            Err(_) if self.peek().is_none() => Err(missing.into()),
            Err(e) => Err(e),
        }
    }

    /// Reads a variable name: letters, digits and `_`; a name starting with a digit is all
    /// digits (positional parameter), and a special parameter (`$@`, `$#`, ...) is one char.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

/// POSIX special parameters (never set in a Dockerfile, but parsed as names).
/// The error of `${name?word}` / `${name:?word}`: the word, or `default` when it is empty.
fn required(name: &str, word: &str, default: &str) -> String {
    let why = if word.is_empty() { default } else { word };
    format!("{name}: {why}")
}

/// The error for a quote, brace or other closing character missing before the end.
fn unmatched(what: &str) -> String {
    format!("unexpected end of statement while looking for matching {what}")
}

fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "FOO" => Some("foo/bar/baz.tar.gz".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("a  b".into()),
            _ => None,
        }
    }

    fn word(s: &str) -> Result<String, ShellError> {
        Lexer::new('\\').process_word(s, &env)
    }

    #[test]
    fn nesting_is_limited_not_a_stack_overflow() {
        let nest = |n: usize| format!("{}x{}", "${A:-".repeat(n), "}".repeat(n));
        assert_eq!(word(&nest(MAX_NESTING - 1)).unwrap(), "x");
        let err = word(&nest(10_000)).unwrap_err();
        assert_eq!(
            err.message,
            "substitutions nested more than 100 levels deep"
        );
        let quoted = format!("{}x{}", "\"${A:-".repeat(10_000), "}\"".repeat(10_000));
        assert!(word(&quoted).is_err());
    }

    #[test]
    fn trims_prefix_and_suffix_patterns() {
        assert_eq!(word("${FOO#*/}").unwrap(), "bar/baz.tar.gz");
        assert_eq!(word("${FOO##*/}").unwrap(), "baz.tar.gz");
        assert_eq!(word("${FOO%.*}").unwrap(), "foo/bar/baz.tar");
        assert_eq!(word("${FOO%%.*}").unwrap(), "foo/bar/baz");
        assert_eq!(word("${FOO#nomatch}").unwrap(), "foo/bar/baz.tar.gz");
        assert_eq!(word("${FOO%.gz}").unwrap(), "foo/bar/baz.tar");
        // Only `*`, `?` and `\` can be escaped in a pattern.
        assert!(word("${FOO%\\.gz}").is_err());
    }

    #[test]
    fn skipping_quotes_keeps_them_as_text_like_a_heredoc_body() {
        let lex = Lexer::new('\\').skip_process_quotes(true);
        let body = |s: &str| lex.process_word(s, &env).unwrap();
        assert_eq!(
            body("'$FOO' \"${SP}\"\n"),
            "'foo/bar/baz.tar.gz' \"a  b\"\n"
        );
        // An unmatched quote is no error, and escapes still apply.
        assert_eq!(body("it's \\$FOO \\\\"), "it's $FOO \\");
        assert!(word("it's").is_err());
    }

    #[test]
    fn replaces_first_or_all() {
        assert_eq!(word("${FOO/\\//-}").unwrap(), "foo-bar/baz.tar.gz");
        assert_eq!(word("${FOO//\\//-}").unwrap(), "foo-bar-baz.tar.gz");
        assert_eq!(word("${FOO//a?/X}").unwrap(), "foo/bX/bX.tX.gz");
        assert!(word("${FOO/a").is_err());
    }

    #[test]
    fn colon_forms_treat_empty_as_unset() {
        assert_eq!(word("${EMPTY-x}").unwrap(), "");
        assert_eq!(word("${EMPTY:-x}").unwrap(), "x");
        assert_eq!(word("${EMPTY+x}").unwrap(), "x");
        assert_eq!(word("${EMPTY:+x}").unwrap(), "");
        assert!(word("${EMPTY:?}").is_err());
        assert_eq!(word("${EMPTY?}").unwrap(), "");
        let e = word("${NOPE?must be set}").unwrap_err();
        assert_eq!(e.message, "NOPE: must be set");
        assert!(word("${FOO:#x}").is_err());
    }

    #[test]
    fn words_split_unquoted_expansions_only() {
        let lex = Lexer::new('\\');
        assert_eq!(lex.process_words("x $SP", &env).unwrap(), ["x", "a", "b"]);
        assert_eq!(lex.process_words("x \"$SP\"", &env).unwrap(), ["x", "a  b"]);
        assert_eq!(
            lex.process_words("a${NOPE:-b c}", &env).unwrap(),
            ["ab", "c"]
        );
    }

    #[test]
    fn reports_matched_and_unmatched() {
        let e = Lexer::new('\\')
            .process_word_with_matches("$FOO ${NOPE:-x} $EMPTY", &env)
            .unwrap();
        assert_eq!(e.matched.into_iter().collect::<Vec<_>>(), ["EMPTY", "FOO"]);
        assert_eq!(e.unmatched.into_iter().collect::<Vec<_>>(), ["NOPE"]);
    }

    /// Cases of BuildKit's `TestProcessWithMatches` for patterns and replacements.
    #[test]
    fn buildkit_pattern_cases() {
        // (input, environment, expected word or None for an error)
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            ("${FOO=:aaa}", &[("FOO", "x")], None),
            ("${FOO=}", &[], None),
            (
                r"${FOO#()[]{\}^$.\*\?|\\}",
                &[("FOO", r"()[]{}^$.*?|\x")],
                Some("x"),
            ),
            (r"${FOO%%\**}", &[("FOO", "xx**")], Some("xx")),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y")),
            ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], Some("xyy")),
            ("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Some("xxyy")),
            ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy")),
            ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy")),
            (r"${FOO#?\?}", &[("FOO", "???y")], Some("?y")),
            (
                "${ABC:-.}${FOO%x}${ABC:-.}",
                &[("FOO", "xxyy")],
                Some(".xxyy."),
            ),
            (r"${FOO%%\**\*}", &[("FOO", "a***yy*")], Some("a")),
            ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy")),
            (
                "${FOO%%$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
            ),
            ("${FOO:#}", &[], None),
            ("${FOO:##}", &[], None),
            ("${FOO:%}", &[], None),
            ("${FOO:%%}", &[], None),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
                Some("/foo.*/*.txt - /foo..*.txt"),
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                Some("/tmp/bar.txt - /bar.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "/a/foo/b/c.txt"),
                    ("NEEDLE", "/?/"),
                    ("REPLACEMENT", "/"),
                ],
                Some("/foo/b/c.txt - /foo/c.txt"),
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "http://google.de"),
                    ("NEEDLE", "http://"),
                    ("REPLACEMENT", "https://"),
                ],
                Some("https://google.de"),
            ),
            (
                r"${FOO//\//\/}",
                &[("FOO", "/tmp/foo.txt")],
                Some(r"\/tmp\/foo.txt"),
            ),
            (
                "${FOO/$BAR/ww}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("wwxxyy"),
            ),
            ("${FOO//ww}", &[("FOO", "xxyy")], None),
            ("${FOO//}", &[("FOO", "xxyy")], None),
            ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy")),
            ("${FOO///}", &[], Some("")),
        ];
        let lex = Lexer::new('\\');
        for (input, envs, want) in cases {
            let get = |k: &str| {
                envs.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            let got = lex.process_word(input, &get);
            match want {
                Some(w) => assert_eq!(got.as_deref(), Ok(*w), "{input}"),
                None => assert!(got.is_err(), "{input} gave {got:?}"),
            }
        }
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        assert_eq!(lex.process_word("C:\\a` b", &env).unwrap(), "C:\\a b");
    }

    #[test]
    fn raw_modes_keep_spelling_and_unset_refs() {
        let lex = Lexer::new('\\')
            .raw_quotes(true)
            .raw_escapes(true)
            .skip_unset_env(true);
        let words = lex
            .process_words("RUN <<'E' a\\ b $X ${Y:-z}", &env)
            .unwrap();
        assert_eq!(words, ["RUN", "<<'E'", "a\\ b", "$X", "${Y:-z}"]);
    }
}
