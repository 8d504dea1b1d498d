//! Dockerfile parser (syntax only).
