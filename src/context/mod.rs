//! Build-context access (placeholder with the agreed API; replaced by the context branch).
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub enum EntryKind {
    Dir,
    File,
    Symlink { target: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct ContextEntry {
    pub rel_path: Vec<u8>,
    pub host_path: PathBuf,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("pattern {pattern} matched no file")]
    GlobMatchedNothing { pattern: String },
    #[error("not implemented")]
    Todo,
    #[error("{pattern} not found")]
    NotFound { pattern: String },
}

pub struct BuildContext {
    root: PathBuf,
}

impl BuildContext {
    pub fn new(root: &Path, _ignore: &[String]) -> Result<Self, ContextError> {
        Ok(BuildContext {
            root: root.to_path_buf(),
        })
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn resolve(&self, _rel: &str) -> Result<PathBuf, ContextError> {
        Err(ContextError::Todo)
    }
    pub fn select(
        &self,
        _from: &str,
        _include: &[String],
        _exclude: &[String],
    ) -> Result<Vec<ContextEntry>, ContextError> {
        Err(ContextError::Todo)
    }
}

impl BuildContext {
    pub fn glob_sources(&self, _pattern: &str) -> Result<Vec<ContextEntry>, ContextError> {
        Err(ContextError::Todo)
    }
    pub fn walk(&self, _rel: &str, _exclude: &[String]) -> Result<Vec<ContextEntry>, ContextError> {
        Err(ContextError::Todo)
    }
}

pub mod dockerignore {
    pub fn read_ignore_file(_c: &str) -> Vec<String> {
        Vec::new()
    }
    pub struct PatternMatcher;
    impl PatternMatcher {
        pub fn new(_p: &[String]) -> Result<Self, super::ContextError> {
            Ok(PatternMatcher)
        }
        pub fn matches(&self, _path: &str) -> bool {
            false
        }
    }
}
