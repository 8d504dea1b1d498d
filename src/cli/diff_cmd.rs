//! `lade diff A B`: one `DiffRequest`, the report printed as text or JSON. Like diff(1): exit
//! 0 when the images are identical, 1 when they differ, 2 on trouble.

use super::args::{DiffArgs, DiffFormat, RegistryArgs};
use super::UsageError;
use crate::diff::{DiffRequest, ImageDiff};
use crate::image::Platform;
use crate::registry::ClientOptions;
use crate::store::Store;
use std::io::Write;
use std::process::ExitCode;

/// diff(1)'s exit code for trouble.
const EXIT_TROUBLE: u8 = 2;

pub(super) fn registry_options(a: &RegistryArgs) -> ClientOptions {
    ClientOptions {
        insecure_registries: a.insecure_registries.clone(),
        ca_files: a.registry_ca.clone(),
        timeout: a.timeout(),
        ..ClientOptions::default()
    }
}

pub(super) fn platform(p: &Option<String>) -> Result<Platform, UsageError> {
    match p {
        Some(p) => p
            .parse()
            .map_err(|e: crate::image::PlatformParseError| UsageError(e.to_string())),
        None => Ok(Platform::host()),
    }
}

/// Prints `d` in `format` on standard output.
pub(super) fn print(d: &ImageDiff, format: DiffFormat) -> anyhow::Result<()> {
    let text = match format {
        DiffFormat::Text => crate::diff::render_text(d),
        DiffFormat::Json => {
            let mut s = serde_json::to_string_pretty(d).expect("diff serialises");
            s.push('\n');
            s
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub fn run(a: &DiffArgs) -> anyhow::Result<ExitCode> {
    let req = DiffRequest {
        a: a.a.clone(),
        b: a.b.clone(),
        platform: platform(&a.platform)?,
        store_root: a.cache_dir.clone().unwrap_or_else(Store::default_root),
        registry: registry_options(&a.registry),
    };
    let d = match crate::diff::diff(&req) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_TROUBLE));
        }
    };
    print(&d, a.format)?;
    Ok(ExitCode::from(u8::from(!d.identical)))
}
