//! Build hooks: a build tool's project to an image in one command. `cargo` is `cargo lade`
//! (a crate's binary on scratch with its ELF runtime closure, `elf`); `compose` is
//! `lade compose build` (the Compose Specification's `build:` sections).

pub mod cargo;
pub mod compose;
pub mod elf;
pub mod maven;
