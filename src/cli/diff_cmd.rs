//! `lade diff A B`: one `DiffRequest`, the report printed as text or JSON. Like diff(1): exit
//! 0 when the images are identical, 1 when they differ, 2 on trouble.
//! `lade verify REF …`: one `VerifyRequest`; exit 0 when the rebuild matches, else the diff
//! and exit 1.

use super::args::{DiffArgs, DiffFormat, RegistryArgs, VerifyArgs};
use super::UsageError;
use crate::diff::{DiffRequest, ImageDiff};
use crate::image::Platform;
use crate::registry::ClientOptions;
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
        store_root: a.store.root(),
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

pub fn run_verify(a: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut build = super::build::input_request(&a.input, None)?;
    build.exec.normalize_modes = a.normalize_modes;
    let progress = super::progress::Progress::new(a.progress);
    let req = crate::verify::VerifyRequest {
        published: a.reference.clone(),
        build,
    };
    let v = crate::verify::verify(req, &progress).map_err(|e| match e {
        crate::verify::VerifyError::Build(b) => super::build::cli_error(b),
        other => other.into(),
    })?;
    match &v.diff {
        None => {
            eprintln!("verified {}: the rebuild gives {}", a.reference, v.rebuilt);
            Ok(ExitCode::SUCCESS)
        }
        Some(d) => {
            eprintln!(
                "{} is {}, the rebuild gives {}:",
                a.reference, v.published, v.rebuilt
            );
            print(d, a.format)?;
            Ok(ExitCode::from(super::EXIT_FAILURE))
        }
    }
}
