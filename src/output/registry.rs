//! The registry target: the artifact pushed to the repository of every tag.

use super::{Artifact, OutputError};
use crate::registry::{Client, PushOptions, PushReport, Reference};
use crate::store::Store;

/// Pushes `artifact` to the registry of every tag; tags of one repository go in one push.
pub fn push(
    artifact: &Artifact,
    tags: &[String],
    store: &Store,
    client: &Client,
    opts: &PushOptions,
) -> Result<Vec<PushReport>, OutputError> {
    let mut by_repo: std::collections::BTreeMap<String, (Reference, Vec<String>)> =
        Default::default();
    for t in tags {
        let r = Reference::parse(t).map_err(|e| OutputError::Tag {
            tag: t.clone(),
            message: e.to_string(),
        })?;
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        by_repo
            .entry(r.name())
            .or_insert_with(|| (r.clone(), Vec::new()))
            .1
            .push(tag);
    }
    let media_type = artifact.top().media_type;
    by_repo
        .values()
        .map(|(r, tags)| {
            client
                .push_image(store, r, artifact.top_bytes(), &media_type, tags, opts)
                .map_err(OutputError::Registry)
        })
        .collect()
}
