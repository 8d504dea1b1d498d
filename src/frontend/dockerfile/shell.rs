//! Shell-word expansion of Dockerfile words.
