//! Attestations of a built image (`lade build --sbom --provenance`), attached as BuildKit
//! attaches them: per platform image, one attestation manifest in the image index (platform
//! `unknown/unknown`, annotations `vnd.docker.reference.type=attestation-manifest` and
//! `vnd.docker.reference.digest=<image manifest digest>`), whose layers are in-toto
//! statements (`application/vnd.in-toto+json`, annotation `in-toto.io/predicate-type`).
//!
//! - `scan`: the image's flattened files, with the package databases' contents.
//! - `auditable`: `cargo auditable` dependency lists in ELF binaries.
//! - `sbom`: SPDX 2.3 JSON from them.
//! - `provenance`: SLSA provenance v1 from the build's inputs.
//!
//! Everything is deterministic: no wall-clock time (the build's `SOURCE_DATE_EPOCH`, else
//! 1970), no random identifiers (the SPDX namespace is derived from the image digest).

mod auditable;
mod provenance;
mod sbom;
mod scan;

pub use provenance::{context_digest, BuildInputs};
pub use sbom::Package;

use crate::digest::Digest;
use crate::image::{canonical_json, media_types, BuiltImage, Descriptor, Manifest, Platform};
use crate::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
pub const IN_TOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
pub const REFERENCE_DIGEST_ANNOTATION: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("reading layer {layer} for the SBOM: {message}")]
    Layer { layer: Digest, message: String },
    #[error("reading the build context for the provenance: {0}")]
    Context(String),
}

/// Which attestations to make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttestOptions {
    pub sbom: bool,
    pub provenance: bool,
    /// `--secret` ids: a build arg of the same name is left out of the provenance.
    pub secret_ids: Vec<String>,
}

impl AttestOptions {
    pub fn any(&self) -> bool {
        self.sbom || self.provenance
    }
}

/// An attestation manifest written to the store: its descriptor for the image index and every
/// blob it consists of (manifest, config, statements).
#[derive(Debug, Clone)]
pub struct Attestation {
    pub descriptor: Descriptor,
    pub blobs: Vec<Digest>,
}

/// Makes the attestation manifest of `image` (whose layers must all be in the store) and
/// writes its blobs to the store. `names` are the image's tags (the statements' subjects).
pub fn attest(
    image: &BuiltImage,
    names: &[String],
    inputs: &BuildInputs,
    opts: &AttestOptions,
    store: &Store,
) -> Result<Attestation, AttestError> {
    let subject = subjects(image, names);
    let mut statements = Vec::new();
    if opts.sbom {
        let scanned = scan::scan(image, store)?;
        let doc = sbom::document(image, names, &scanned, inputs.source_date_epoch);
        statements.push((SPDX_PREDICATE, statement(&subject, SPDX_PREDICATE, doc)));
    }
    if opts.provenance {
        let predicate = provenance::predicate(image, inputs);
        statements.push((
            SLSA_PROVENANCE_V1,
            statement(&subject, SLSA_PROVENANCE_V1, predicate),
        ));
    }
    let mut layers = Vec::new();
    let mut blobs = Vec::new();
    for (predicate_type, doc) in statements {
        let bytes = canonical_json(&doc).expect("a statement serialises");
        let digest = store.put_bytes(&bytes)?;
        let mut d = Descriptor::new(IN_TOTO_MEDIA_TYPE, digest.clone(), bytes.len() as u64);
        d.annotations = Some(BTreeMap::from([(
            PREDICATE_TYPE_ANNOTATION.to_string(),
            predicate_type.to_string(),
        )]));
        layers.push(d);
        blobs.push(digest);
    }
    // BuildKit's attestation manifest config: a valid image config for an unknown platform,
    // its diff_ids the statements' digests; readers ignore it.
    let config = json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": blobs},
    });
    let config_bytes = canonical_json(&config).expect("config serialises");
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest = Manifest::oci(
        Descriptor::new(
            media_types::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers,
        None,
    );
    let manifest_bytes = canonical_json(&manifest).expect("manifest serialises");
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    let mut descriptor = Descriptor::new(
        media_types::OCI_MANIFEST,
        manifest_digest.clone(),
        manifest_bytes.len() as u64,
    );
    descriptor.platform = Some(Platform {
        os: "unknown".into(),
        architecture: "unknown".into(),
        variant: None,
    });
    descriptor.annotations = Some(BTreeMap::from([
        (
            REFERENCE_DIGEST_ANNOTATION.to_string(),
            image.manifest_digest.to_string(),
        ),
        (
            REFERENCE_TYPE_ANNOTATION.to_string(),
            ATTESTATION_MANIFEST.to_string(),
        ),
    ]));
    let mut all = vec![manifest_digest, config_digest];
    all.extend(blobs);
    Ok(Attestation {
        descriptor,
        blobs: all,
    })
}

/// The statements' subjects: the image manifest under each tag as a `pkg:docker` purl (as
/// BuildKit names them), or `_` for an image without a name.
fn subjects(image: &BuiltImage, names: &[String]) -> Value {
    let digest = json!({"sha256": image.manifest_digest.hex()});
    let platform = purl_escape(&image.platform.to_string());
    let mut out: Vec<Value> = names
        .iter()
        .map(|n| {
            let (repo, tag) = match n.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (n.as_str(), "latest"),
            };
            json!({
                "name": format!("pkg:docker/{repo}@{}?platform={platform}", purl_escape(tag)),
                "digest": digest,
            })
        })
        .collect();
    if out.is_empty() {
        out.push(json!({"name": "_", "digest": digest}));
    }
    Value::Array(out)
}

fn statement(subject: &Value, predicate_type: &str, predicate: Value) -> Value {
    json!({
        "_type": IN_TOTO_STATEMENT_V1,
        "subject": subject,
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

/// Percent-encodes everything but unreserved characters (purl components).
pub(crate) fn purl_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_components_are_percent_encoded() {
        assert_eq!(purl_escape("1:2.3+dfsg-1"), "1%3A2.3%2Bdfsg-1");
        assert_eq!(purl_escape("linux/amd64"), "linux%2Famd64");
    }
}
