//! Build-context access.
