//! The declarative `lade.toml` frontend.
