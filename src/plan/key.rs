//! Cache keys: sha256 over a step's canonical definition and its inputs' content digests.

use crate::digest::{Digest, Hasher};
use serde::Serialize;

/// The key of a step: its definition (as canonical JSON), the key of what it builds on, and
/// the content digests of its inputs, in order. Host paths and timestamps never enter it.
pub fn cache_key<T: Serialize>(
    definition: &T,
    parent: Option<&Digest>,
    inputs: &[Digest],
) -> Digest {
    let mut h = Hasher::new();
    h.update(b"lade-step-v1\0");
    let def = crate::image::canonical_json(definition).expect("plan steps serialise");
    h.update(&(def.len() as u64).to_le_bytes());
    h.update(&def);
    if let Some(p) = parent {
        h.update(p.to_string().as_bytes());
    }
    h.update(b"\0");
    for d in inputs {
        h.update(d.to_string().as_bytes());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_definition_and_inputs_only() {
        let a = cache_key(&"copy a", None, &[Digest::of(b"1")]);
        assert_eq!(a, cache_key(&"copy a", None, &[Digest::of(b"1")]));
        assert_ne!(a, cache_key(&"copy b", None, &[Digest::of(b"1")]));
        assert_ne!(a, cache_key(&"copy a", None, &[Digest::of(b"2")]));
        assert_ne!(
            a,
            cache_key(&"copy a", Some(&Digest::of(b"p")), &[Digest::of(b"1")])
        );
    }
}
