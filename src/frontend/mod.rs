//! Frontends: each turns a user's build description into a `plan::Plan`.

pub mod diag;
pub mod dockerfile;
pub mod spec;
