//! What a build hands to its outputs: one image, or one image per platform under an OCI
//! index (`--platform linux/amd64,linux/arm64`).

use super::OutputError;
use crate::digest::Digest;
use crate::image::BuiltImage;
use crate::image::Platform;
use crate::image::{canonical_json, media_types, Descriptor, Index};
use crate::store::Store;
use std::collections::BTreeMap;

/// Annotations of the index over several platforms' manifests.
#[derive(Debug, Clone, Default)]
pub struct IndexAnnotations {
    /// On the index itself.
    pub index: BTreeMap<String, String>,
    /// On the index's descriptor of each manifest (of one platform's only, when given).
    pub descriptor: Vec<(Option<Platform>, String, String)>,
}

impl IndexAnnotations {
    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.descriptor.is_empty()
    }
}

pub struct Artifact {
    pub images: Vec<BuiltImage>,
    /// With several images or attestations: the index over their manifests (its bytes are in
    /// the store too).
    index: Option<(Vec<u8>, Digest)>,
    /// Attestation manifests, listed in the index after the images.
    pub attestations: Vec<crate::attest::Attestation>,
}

impl Artifact {
    pub fn single(image: BuiltImage) -> Artifact {
        Artifact {
            images: vec![image],
            index: None,
            attestations: Vec::new(),
        }
    }

    /// One image per platform, in the given order, under a new index written to the store.
    pub fn multi_platform(images: Vec<BuiltImage>, store: &Store) -> Result<Artifact, OutputError> {
        Artifact::assembled(images, Vec::new(), &IndexAnnotations::default(), store)
    }

    /// [`Artifact::multi_platform`] with attestation manifests (BuildKit's layout: an index
    /// even for one image, the attestation manifests after the images) and annotations on the
    /// index and on its descriptors of the manifests (`--annotation index:…`,
    /// `manifest-descriptor:…`). A single image without attestations has no index to carry
    /// annotations: that is an error, as in BuildKit.
    pub fn assembled(
        images: Vec<BuiltImage>,
        attestations: Vec<crate::attest::Attestation>,
        annotations: &IndexAnnotations,
        store: &Store,
    ) -> Result<Artifact, OutputError> {
        if images.len() == 1 && attestations.is_empty() {
            if !annotations.is_empty() {
                return Err(OutputError::Annotation(
                    "index and manifest-descriptor annotations need an index: build several \
                     --platform values (a single platform's image is a manifest)"
                        .into(),
                ));
            }
            return Ok(Artifact::single(images.into_iter().next().expect("one")));
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            manifests: images
                .iter()
                .map(|i| {
                    let mut d = manifest_descriptor(i);
                    d.platform = Some(i.platform.clone());
                    let own: BTreeMap<String, String> = annotations
                        .descriptor
                        .iter()
                        .filter(|(p, _, _)| p.as_ref().is_none_or(|p| p.matches(&i.platform)))
                        .map(|(_, k, v)| (k.clone(), v.clone()))
                        .collect();
                    d.annotations = (!own.is_empty()).then_some(own);
                    d
                })
                .chain(attestations.iter().map(|a| a.descriptor.clone()))
                .collect(),
            annotations: (!annotations.index.is_empty()).then(|| annotations.index.clone()),
        };
        let bytes = canonical_json(&index).expect("index serialises");
        let digest = store.put_bytes(&bytes)?;
        Ok(Artifact {
            images,
            index: Some((bytes, digest)),
            attestations,
        })
    }

    /// The one image, unless this is a multi-platform index.
    pub fn image(&self) -> Option<&BuiltImage> {
        match (&self.index, self.images.as_slice()) {
            (None, [one]) => Some(one),
            _ => None,
        }
    }

    /// The image of a single-platform build, with or without attestations (a docker archive
    /// holds it; `docker load` cannot read attestations).
    pub fn single_image(&self) -> Option<&BuiltImage> {
        match self.images.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// What a tag points to: the manifest, or the index.
    pub fn top(&self) -> Descriptor {
        match &self.index {
            Some((bytes, digest)) => {
                Descriptor::new(media_types::OCI_INDEX, digest.clone(), bytes.len() as u64)
            }
            None => manifest_descriptor(&self.images[0]),
        }
    }

    pub fn top_bytes(&self) -> &[u8] {
        match &self.index {
            Some((bytes, _)) => bytes,
            None => &self.images[0].manifest_bytes,
        }
    }

    /// Every blob the artifact consists of, each once, in a fixed order: the index, then
    /// per image its manifest, config and layers, then the attestations' blobs.
    pub fn blobs(&self) -> Vec<&Digest> {
        let mut seen = std::collections::BTreeSet::new();
        let index = self.index.iter().map(|(_, d)| d);
        let per_image = self.images.iter().flat_map(|i| {
            [&i.manifest_digest, &i.manifest.config.digest]
                .into_iter()
                .chain(i.manifest.layers.iter().map(|l| &l.digest))
        });
        let attestations = self.attestations.iter().flat_map(|a| &a.blobs);
        index
            .chain(per_image)
            .chain(attestations)
            .filter(|d| seen.insert(*d))
            .collect()
    }
}

fn manifest_descriptor(image: &BuiltImage) -> Descriptor {
    Descriptor::new(
        media_types::OCI_MANIFEST,
        image.manifest_digest.clone(),
        image.manifest_bytes.len() as u64,
    )
}
