//! Deterministic layer tarballs.
