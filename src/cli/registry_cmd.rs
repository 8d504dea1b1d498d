//! `lade push`, `lade pull`, `lade login`, and the registry client the other commands share.

use super::args::{LoginArgs, PullArgs, PushArgs, RegistryArgs};
use super::UsageError;
use crate::exec::{import_image, ImportedImage};
use crate::image::{BuiltImage, ImageLayout, Platform};
use crate::output::{self, Target};
use crate::plan::Base;
use crate::registry::{Client, ClientOptions, PushOptions, Reference};
use crate::store::Store;
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

pub fn client(a: &RegistryArgs) -> anyhow::Result<Arc<Client>> {
    let opts = ClientOptions {
        insecure_registries: a.insecure_registries.clone(),
        ca_files: a.registry_ca.clone(),
        timeout: a.timeout(),
        ..ClientOptions::default()
    };
    Ok(Arc::new(Client::new(opts)?))
}

pub fn push_options(a: &RegistryArgs, mount_from: Option<Reference>) -> PushOptions {
    PushOptions {
        jobs: a.push_jobs.max(1),
        mount_from,
        ..PushOptions::default()
    }
}

/// An imported image as the outputs see a built one.
fn as_built(i: ImportedImage, platform: Platform) -> BuiltImage {
    let config_digest = i.manifest.config.digest.clone();
    let base_layers = i.manifest.layers.len();
    BuiltImage {
        manifest: i.manifest,
        manifest_bytes: i.manifest_bytes,
        manifest_digest: i.manifest_digest,
        config: i.config,
        config_digest,
        platform,
        cached: Vec::new(),
        base_origin: None,
        base_layers,
    }
}

/// `oci-archive:FILE[:TAG]`, `oci:DIR[:TAG]`, or a plain path (a directory is a layout, a
/// file an archive).
fn source_base(s: &str) -> Base {
    let cwd = PathBuf::from(".");
    if let Some(base) = Base::from_image_name(s, &cwd)
        .filter(|b| !matches!(b, Base::Registry { .. } | Base::Scratch))
    {
        return base;
    }
    if std::path::Path::new(s).is_dir() {
        Base::OciLayout {
            dir: s.into(),
            tag: None,
        }
    } else {
        Base::OciArchive {
            file: s.into(),
            tag: None,
        }
    }
}

pub fn run_push(a: &PushArgs) -> anyhow::Result<ExitCode> {
    let dest = Reference::parse(&a.destination).map_err(|e| UsageError(e.to_string()))?;
    let platform = Platform::host();
    // Read the layout or archive in place: its manifest and config are read, its layers only
    // streamed to the registry if the registry lacks them (a re-push reads no layer at all).
    let (layout, tag) = match source_base(&a.source) {
        Base::OciLayout { dir, tag } => (ImageLayout::dir(&dir), tag),
        Base::OciArchive { file, tag } => (
            ImageLayout::archive(&file).with_context(|| format!("reading {}", file.display()))?,
            tag,
        ),
        _ => unreachable!("source_base gives a layout or an archive"),
    };
    // The whole image as tagged: a multi-platform index is pushed with every platform's
    // manifest (the host platform only picks among several untagged entries).
    let (desc, manifest_bytes) = layout
        .select(tag.as_deref(), &platform)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("reading {}", a.source))?;
    let client = client(&a.registry)?;
    let tag = dest.tag.clone().unwrap_or_else(|| "latest".into());
    let report = client.push_image(
        &layout,
        &dest,
        &manifest_bytes,
        &desc.media_type,
        std::slice::from_ref(&tag),
        &push_options(&a.registry, None),
    )?;
    eprintln!(
        "pushed {}@{}: {} bytes uploaded, {} blobs uploaded, {} mounted, {} already there",
        dest.name(),
        report.manifest_digest,
        report.bytes_uploaded,
        report.blobs_uploaded,
        report.blobs_mounted,
        report.blobs_skipped
    );
    if let Some(f) = &a.digest_file {
        output::write_small_file(f, report.manifest_digest.to_string().as_bytes())
            .with_context(|| format!("writing {}", f.display()))?;
    }
    if let Some(f) = &a.metadata_file {
        let json = serde_json::json!({
            "containerimage.digest": report.manifest_digest,
            "containerimage.descriptor": {
                "mediaType": desc.media_type,
                "digest": report.manifest_digest,
                "size": manifest_bytes.len(),
            },
            "image.name": report.references[..report.references.len() - 1].join(","),
            "lade.pushed": report.references,
        });
        output::write_small_file(
            f,
            &serde_json::to_vec_pretty(&json).expect("metadata serialises"),
        )
        .with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_pull(a: &PullArgs) -> anyhow::Result<ExitCode> {
    let r = Reference::parse(&a.reference).map_err(|e| UsageError(e.to_string()))?;
    let platform = match &a.platform {
        Some(p) => p
            .parse()
            .map_err(|e: crate::image::PlatformParseError| UsageError(e.to_string()))?,
        None => Platform::host(),
    };
    let targets = a
        .outputs
        .iter()
        .map(|o| o.parse::<Target>().map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let store = Store::open(&a.store.root())?;
    let client = client(&a.registry)?;
    let imported = import_image(
        &Base::Registry {
            reference: a.reference.clone(),
        },
        &platform,
        &store,
        Some(&client),
    )?;
    let image = as_built(imported, platform);
    let tags = vec![r.to_string()];
    for t in &targets {
        output::write(
            t,
            &output::Artifact::single(image.clone()),
            &tags,
            &store,
            None,
        )?;
    }
    eprintln!("pulled {} ({})", r, image.manifest_digest);
    Ok(ExitCode::SUCCESS)
}

pub fn run_login(a: &LoginArgs) -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(UsageError("no password on standard input".into()).into());
    }
    let opts = ClientOptions {
        insecure_registries: a.registry_args.insecure_registries.clone(),
        ca_files: a.registry_args.registry_ca.clone(),
        timeout: a.registry_args.timeout(),
        ..ClientOptions::default()
    };
    let path = crate::registry::login(&opts, &a.registry, &a.username, password, None)?;
    eprintln!("Login Succeeded (credentials stored in {})", path.display());
    Ok(ExitCode::SUCCESS)
}
