//! Downloads for `ADD <http(s) URL>`: streamed into the blob store, hashed on the way, and
//! with `--checksum` verified before anything enters the store.

use crate::digest::Digest;
use crate::store::{Store, StoreError};
use std::time::Duration;

/// Downloads `url` into `store`; returns the content's digest. With `expected`, content of
/// another digest is refused and not stored. Errors are one line naming the URL.
pub fn fetch(url: &str, expected: Option<&Digest>, store: &Store) -> Result<Digest, String> {
    let fail = |what: String| format!("ADD {url}: {what}");
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("lade/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // The blocking client's timeout bounds each wait (for the response head, then each
        // read of the body), not the whole download: a stalled server is an error, a big
        // file is not.
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| fail(one_line(&e)))?;
    tracing::debug!(url, "downloading");
    // The URL is in `fail`'s prefix already.
    let mut resp = client
        .get(url)
        .send()
        .map_err(|e| fail(one_line(&e.without_url())))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    let mut w = store.blob_writer().map_err(|e| fail(e.to_string()))?;
    resp.copy_to(&mut w)
        .map_err(|e| fail(one_line(&e.without_url())))?;
    match expected {
        None => w.commit().map(|(d, _)| d).map_err(|e| fail(e.to_string())),
        Some(want) => match w.commit_verified(want, None) {
            Ok(()) => Ok(want.clone()),
            Err(StoreError::DigestMismatch { expected, actual }) => Err(fail(format!(
                "checksum mismatch: expected {expected}, got {actual}"
            ))),
            Err(e) => Err(fail(e.to_string())),
        },
    }
}

/// An error and its causes on one line (reqwest's own message hides "connection refused").
fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
