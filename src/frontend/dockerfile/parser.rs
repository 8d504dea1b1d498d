//! Dockerfile parser (placeholder with the agreed API; replaced by the parser branch).

#[derive(Debug, Clone, Default)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    pub expand: bool,
    pub chomp: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Node {
    pub cmd: String,
    pub original: String,
    pub flags: Vec<String>,
    pub values: Vec<String>,
    pub json: bool,
    pub start_line: usize,
    pub end_line: usize,
    pub heredocs: Vec<Heredoc>,
    pub next: Option<Box<Node>>,
}

#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub escape: char,
    pub directives: Vec<(String, String)>,
    pub instructions: Vec<Node>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

pub fn parse(_src: &str) -> Result<Dockerfile, ParseError> {
    Err(ParseError {
        line: 1,
        col: 1,
        message: "parser not merged".into(),
        hint: None,
    })
}

pub fn suggest_instruction(_word: &str) -> Option<&'static str> {
    None
}

impl ParseError {
    pub fn render(&self, file_name: &str, _src: &str) -> String {
        format!("{file_name}:{}:{}: {}", self.line, self.col, self.message)
    }
}
