//! The `[java]` preset: splits an application jar into Jib's layers.

use super::schema::JavaSection;
use super::{Cx, SpecError};
use crate::plan::LayerStep;
use std::path::Path;
use toml::Spanned;

pub(super) struct JavaLowering {
    pub layers: Vec<LayerStep>,
    pub entrypoint: Vec<String>,
}

pub(super) fn lower(
    cx: &Cx,
    java: &Spanned<JavaSection>,
    _spec_dir: &Path,
) -> Result<JavaLowering, SpecError> {
    Err(cx.error(
        java.span(),
        "the [java] preset is not implemented yet",
        None,
    ))
}
