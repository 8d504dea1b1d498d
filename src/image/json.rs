//! Canonical JSON: object keys sorted by bytes, no insignificant whitespace. Going through
//! `serde_json::Value` sorts keys because its map is a BTreeMap (the `preserve_order` feature
//! must stay off), so every document has exactly one byte form.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("cannot serialise image document: {0}")]
pub struct CanonicalJsonError(serde_json::Error);

impl From<serde_json::Error> for CanonicalJsonError {
    fn from(e: serde_json::Error) -> Self {
        CanonicalJsonError(e)
    }
}

pub fn canonical_json<T: Serialize>(doc: &T) -> Result<Vec<u8>, CanonicalJsonError> {
    let value = serde_json::to_value(doc)?;
    Ok(serde_json::to_vec(&value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_compact() {
        #[derive(Serialize)]
        struct S {
            zeta: u8,
            alpha: Vec<u8>,
        }
        let out = canonical_json(&S {
            zeta: 1,
            alpha: vec![2, 3],
        })
        .unwrap();
        assert_eq!(out, br#"{"alpha":[2,3],"zeta":1}"#);
    }
}
