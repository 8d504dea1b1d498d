//! OCI distribution-spec client: references, auth like docker (config.json, credential
//! helpers, bearer/basic challenges), pulling base images into the [`Store`], and pushing
//! built images (existence checks, cross-repository mounts, monolithic or chunked uploads,
//! resume after a broken connection, bounded retries with backoff of transient faults only:
//! 408, 429, 5xx, broken connections and stalls, see `timeout.rs`).
//!
//! Entry points: [`Reference::parse`], [`Client::new`] with [`ClientOptions`], then
//! [`Client::pull`] / [`Client::resolve`] / [`Client::manifest_digest`] for bases,
//! [`Client::push_image`] for results, [`login`] for `lade login`.
//!
//! [`Store`]: crate::store::Store

mod auth;
mod blobs;
mod client;
mod pull;
mod push;
mod reference;
mod timeout;

pub use auth::{
    credential_helper_get, docker_config_path, parse_challenges, parse_token_response,
    store_credentials, AuthConfig, Challenge, Credentials, Scope, TokenResponse,
};
pub use blobs::BlobSource;
pub use client::{login, Client, ClientOptions, RetryPolicy, DEFAULT_TIMEOUT};
pub use pull::{PullOptions, PulledImage, ResolvedImage};
pub use push::{PushOptions, PushReport};
pub use reference::{api_host, Reference, DEFAULT_REGISTRY, DOCKER_HUB_API_HOST};

use crate::digest::Digest;
use crate::store::StoreError;
use std::path::PathBuf;

/// Every failure of the registry client, each a one-line message without credentials.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },
    #[error("cannot reach registry {host}: {cause}")]
    Connect { host: String, cause: String },
    #[error("TLS error talking to registry {host}: {cause} (trust its CA with --registry-ca FILE, or allow it with --insecure-registry {host})")]
    Tls { host: String, cause: String },
    #[error("{host} is not an OCI registry: GET /v2/ answered {status}")]
    NotARegistry { host: String, status: u16 },
    #[error("authentication to {host} failed: {detail}")]
    Unauthorized { host: String, detail: String },
    #[error("access denied to {repository} on {host}: {detail}")]
    Denied {
        host: String,
        repository: String,
        detail: String,
    },
    #[error("{what} not found on {host}")]
    NotFound { host: String, what: String },
    #[error("registry {host} answered {status} to {what}: {detail}")]
    Status {
        host: String,
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what} failed after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("{what} from {host} does not match its digest {expected}: {detail}")]
    DigestMismatch {
        host: String,
        what: String,
        expected: Digest,
        detail: String,
    },
    #[error("{reference}: unsupported manifest type {media_type}{hint}")]
    UnsupportedManifest {
        reference: String,
        media_type: String,
        hint: &'static str,
    },
    #[error("{reference}: invalid manifest: {detail}")]
    InvalidManifest { reference: String, detail: String },
    #[error("{reference} has no image for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("auth file {path}: {detail}")]
    AuthFile { path: PathBuf, detail: String },
    #[error("credential helper {helper}: {detail}")]
    CredentialHelper { helper: String, detail: String },
    #[error("registry CA file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("cannot set up the HTTP client: {0}")]
    ClientSetup(String),
    #[error("reading blob {digest}: {detail}")]
    BlobSource { digest: Digest, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The registry name credentials are stored under, from what a user types after `lade login`
/// (`https://index.docker.io/v1/` → `docker.io`, `http://host:5000/` → `host:5000`).
pub fn auth_registry_name(input: &str) -> String {
    auth::normalise_key(input.trim())
}
