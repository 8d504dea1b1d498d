//! The SLSA provenance v1 predicate of a build: what went in (the Dockerfile or lade.toml and
//! the context by digest, build args, target, platform), the bases it resolved, the builder.

use crate::digest::Digest;
use crate::image::{BuiltImage, Platform};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The `buildType` of lade's provenance.
pub const BUILD_TYPE: &str = "https://lade.dev/provenance/build/v1";
/// The builder's id (its version follows as `@VERSION`).
pub const BUILDER_ID: &str = "https://lade.dev/builder";

/// What a build read, as the provenance records it.
#[derive(Debug, Clone, Default)]
pub struct BuildInputs {
    /// `dockerfile` or `lade.toml`.
    pub description_kind: String,
    pub description_digest: Option<Digest>,
    /// Of the context as the build saw it (`.dockerignore` applied): paths, kinds, modes and
    /// contents.
    pub context_digest: Option<Digest>,
    /// Build args, those named like a `--secret` id removed.
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Registry bases per platform: reference as named, resolved manifest digest.
    pub bases: Vec<(String, Platform, Digest)>,
    /// `SOURCE_DATE_EPOCH` (0: not set; no timestamps then).
    pub source_date_epoch: u64,
}

fn digest_set(d: &Digest) -> Value {
    json!({"sha256": d.hex()})
}

pub fn predicate(image: &BuiltImage, inputs: &BuildInputs) -> Value {
    let mut external = Map::new();
    if let Some(d) = &inputs.description_digest {
        external.insert(
            inputs.description_kind.clone(),
            json!({"digest": digest_set(d)}),
        );
    }
    if let Some(d) = &inputs.context_digest {
        external.insert("context".into(), json!({"digest": digest_set(d)}));
    }
    external.insert("buildArgs".into(), json!(inputs.build_args));
    if let Some(t) = &inputs.target {
        external.insert("target".into(), json!(t));
    }
    external.insert("platform".into(), json!(image.platform.to_string()));
    let deps: Vec<Value> = inputs
        .bases
        .iter()
        .filter(|(_, p, _)| *p == image.platform)
        .map(|(reference, platform, digest)| {
            let name = reference.split('@').next().unwrap_or(reference);
            json!({
                "uri": format!(
                    "pkg:docker/{name}?platform={}",
                    super::purl_escape(&platform.to_string())
                ),
                "digest": digest_set(digest),
            })
        })
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    let mut run_details = json!({
        "builder": {
            "id": format!("{BUILDER_ID}@{version}"),
            "version": {"lade": version},
        },
    });
    if inputs.source_date_epoch != 0 {
        let t = crate::exec::rfc3339(inputs.source_date_epoch);
        run_details["metadata"] = json!({"startedOn": t, "finishedOn": t});
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "resolvedDependencies": deps,
        },
        "runDetails": run_details,
    })
}

/// The digest of a build context: every entry's path, kind, mode and contents (a symlink's
/// target), in path order. Owners and times are left out (they differ between checkouts).
pub fn context_digest(ctx: &crate::context::BuildContext) -> Result<Digest, String> {
    use crate::context::EntryKind;
    let mut h = crate::digest::Hasher::new();
    for e in ctx.walk(".", &[]).map_err(|e| e.to_string())? {
        h.update(&e.rel_path);
        h.update(b"\0");
        match &e.kind {
            EntryKind::Dir => h.update(format!("dir {:o}", e.mode & 0o7777).as_bytes()),
            EntryKind::File => {
                let mut f = std::fs::File::open(&e.host_path)
                    .map_err(|err| format!("{}: {err}", e.host_path.display()))?;
                let mut w = crate::digest::HashingWriter::new(std::io::sink());
                std::io::copy(&mut f, &mut w)
                    .map_err(|err| format!("{}: {err}", e.host_path.display()))?;
                h.update(format!("file {:o} {}", e.mode & 0o7777, w.finish().1).as_bytes());
            }
            EntryKind::Symlink { target } => {
                h.update(b"symlink ");
                h.update(target);
            }
            EntryKind::Special { major, minor, .. } => {
                h.update(format!("special {major},{minor}").as_bytes())
            }
        }
        h.update(b"\n");
    }
    Ok(h.finish())
}
