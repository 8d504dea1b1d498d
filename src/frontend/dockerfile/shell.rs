//! Shell-word expansion (placeholder with the agreed API; replaced by the parser branch).

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

pub struct Lexer {
    _escape: char,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer { _escape: escape }
    }
    pub fn process_word(
        &self,
        word: &str,
        _env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, ShellError> {
        Ok(word.to_string())
    }
}
