//! Pushing: every blob confirmed (exists, mounted, or uploaded monolithically / in chunks with
//! resume), then the manifest, then each tag.

use super::auth::Scope;
use super::blobs::BlobSource;
use super::client::{error_body_summary, Client, Failure, Host};
use super::timeout::request_deadline;
use super::{Reference, RegistryError};
use crate::digest::Digest;
use crate::image::{media_types as mt, Descriptor, Index, Manifest};
use reqwest::blocking::{Body, Response};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The image the pushed one is built on (its base): on the same registry, blobs the
    /// target lacks are mounted from its repository instead of uploaded. Blobs the source
    /// lacks (base layers never downloaded) are taken from it: mounted, or else fetched into
    /// the store and uploaded — fetched first when it lives on another registry.
    pub mount_from: Option<Reference>,
    /// Blobs the source lacks that another repository holds (shared-cache hits never
    /// downloaded): on the target's registry they are mounted from there, or fetched from
    /// there into the store and uploaded.
    pub blob_origins: std::collections::HashMap<Digest, Reference>,
    /// Parallel blob uploads (`--push-jobs`).
    pub jobs: usize,
    /// Blobs smaller than this go in one `PUT`; larger ones in `PATCH` chunks.
    pub monolithic_limit: u64,
    /// Size of one `PATCH` chunk.
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            mount_from: None,
            blob_origins: Default::default(),
            jobs: 4,
            // Measured against docker-registry with a 540 MB layer: one streamed PUT is the
            // fastest (each extra request of a chunked upload costs the registry a commit of
            // its upload state). Past 1 GiB, 256 MiB chunks bound what a broken connection
            // costs (the upload resumes at the registry's offset instead of restarting).
            monolithic_limit: 1 << 30,
            chunk_size: 256 << 20,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub manifest_digest: Digest,
    /// Full references pushed: `registry/repo:tag` for each tag, and `registry/repo@digest`.
    pub references: Vec<String>,
    /// Blob bytes sent in successful upload requests.
    pub bytes_uploaded: u64,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub blobs_uploaded: usize,
}

/// Where blobs missing from a push's source come from: the base image, through the store.
struct LazyBlobs<'a> {
    base: &'a Reference,
    store: &'a crate::store::Store,
    same_registry: bool,
}

enum BlobOutcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

/// Why an upload attempt stopped.
enum UploadFailure {
    /// Retry, resuming the session if the registry still has it.
    Retry {
        cause: String,
        after: Option<std::time::Duration>,
    },
    /// The session is gone or inconsistent: start a new one.
    Restart(String),
    Fatal(RegistryError),
}

impl From<Failure> for UploadFailure {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Retry { cause, after } => UploadFailure::Retry { cause, after },
            Failure::Fatal(e) => UploadFailure::Fatal(e),
        }
    }
}

impl From<RegistryError> for UploadFailure {
    fn from(e: RegistryError) -> Self {
        UploadFailure::Fatal(e)
    }
}

impl Client {
    /// Pushes an image (manifest or index) whose blobs are in `blobs` (the store, or a layout
    /// or archive read in place) to `target`'s repository (its tag/digest are ignored), then
    /// tags it with each of `tags` (none: by digest only). For an index, each child manifest
    /// is read from `blobs` and pushed by digest first. The manifest is only sent after
    /// every blob is confirmed present.
    pub fn push_image(
        &self,
        blobs: &dyn BlobSource,
        target: &Reference,
        manifest_bytes: &[u8],
        media_type: &str,
        tags: &[String],
        opts: &PushOptions,
    ) -> Result<PushReport, RegistryError> {
        let host = self.host(&target.registry)?;
        let mount_from = opts
            .mount_from
            .as_ref()
            .filter(|m| m.registry == target.registry && m.repository != target.repository)
            .map(|m| m.repository.clone());
        // Where blobs missing from `blobs` come from (see `PushOptions::mount_from`).
        let lazy = match (&opts.mount_from, blobs.store()) {
            (Some(base), Some(store)) => Some(LazyBlobs {
                base,
                store,
                same_registry: base.registry == target.registry,
            }),
            _ => None,
        };
        let mut scope = Scope::push(&target.repository, mount_from.as_deref());
        for o in opts.blob_origins.values() {
            if o.registry == target.registry
                && o.repository != target.repository
                && !scope.mount_from.contains(&o.repository)
            {
                scope.mount_from.push(o.repository.clone());
            }
        }
        let digest = Digest::of(manifest_bytes);
        let mut report = PushReport {
            manifest_digest: digest.clone(),
            references: Vec::new(),
            bytes_uploaded: 0,
            blobs_skipped: 0,
            blobs_mounted: 0,
            blobs_uploaded: 0,
        };
        self.push_tree(
            &host,
            &scope,
            blobs,
            lazy.as_ref(),
            target,
            manifest_bytes,
            media_type,
            mount_from.as_deref(),
            opts,
            &mut report,
            0,
        )?;
        for tag in tags {
            let r = target.with_tag(tag);
            Reference::parse(&r.to_string())?; // validates the tag
            self.put_manifest(&host, &scope, target, tag, manifest_bytes, media_type)?;
            report.references.push(r.to_string());
        }
        if tags.is_empty() {
            self.put_manifest(
                &host,
                &scope,
                target,
                &digest.to_string(),
                manifest_bytes,
                media_type,
            )?;
        }
        report
            .references
            .push(format!("{}@{digest}", target.name()));
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn push_tree(
        &self,
        host: &Host,
        scope: &Scope,
        blobs: &dyn BlobSource,
        lazy: Option<&LazyBlobs>,
        target: &Reference,
        bytes: &[u8],
        media_type: &str,
        mount_from: Option<&str>,
        opts: &PushOptions,
        report: &mut PushReport,
        depth: u32,
    ) -> Result<(), RegistryError> {
        let bad = |detail: String| RegistryError::InvalidManifest {
            reference: target.name(),
            detail,
        };
        if media_type == mt::OCI_INDEX || media_type == mt::DOCKER_MANIFEST_LIST {
            if depth > 0 {
                return Err(bad("nested index".into()));
            }
            let index: Index = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
            for child in &index.manifests {
                let child_bytes =
                    blobs
                        .read_blob(&child.digest)
                        .map_err(|e| RegistryError::BlobSource {
                            digest: child.digest.clone(),
                            detail: e.to_string(),
                        })?;
                self.push_tree(
                    host,
                    scope,
                    blobs,
                    lazy,
                    target,
                    &child_bytes,
                    &child.media_type,
                    mount_from,
                    opts,
                    report,
                    depth + 1,
                )?;
                self.put_manifest(
                    host,
                    scope,
                    target,
                    &child.digest.to_string(),
                    &child_bytes,
                    &child.media_type,
                )?;
            }
            return Ok(());
        }
        if media_type != mt::OCI_MANIFEST && media_type != mt::DOCKER_MANIFEST {
            return Err(RegistryError::UnsupportedManifest {
                reference: target.name(),
                media_type: media_type.to_string(),
                hint: " (push expects an OCI or Docker schema2 manifest or index)",
            });
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let mut blobs_of: Vec<&Descriptor> = Vec::new();
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !blobs_of.iter().any(|b| b.digest == d.digest) {
                blobs_of.push(d);
            }
        }
        // Fail before any network traffic when a blob is neither in the source nor to be
        // taken from the base image.
        let mut missing: Vec<Descriptor> = Vec::new();
        for d in &blobs_of {
            match blobs.blob_size(&d.digest) {
                Some(size) if size != d.size => {
                    return Err(bad(format!(
                        "blob {} is {size} bytes in the source but {} in the manifest",
                        d.digest, d.size
                    )))
                }
                Some(_) => {}
                None if lazy.is_some() || self.origin_of(d, target, opts).is_some() => {
                    missing.push((*d).clone())
                }
                None => {
                    return Err(match blobs.store() {
                        Some(_) => crate::store::StoreError::MissingBlob {
                            expected: d.digest.clone(),
                        }
                        .into(),
                        None => RegistryError::BlobSource {
                            digest: d.digest.clone(),
                            detail: "not in the image's blobs".into(),
                        },
                    })
                }
            }
        }
        // Base layers on another registry: fetch them first, then push them as ours.
        let mut lazy_repo: Option<&str> = None;
        let base_missing: Vec<Descriptor> = missing
            .iter()
            .filter(|m| self.origin_of(m, target, opts).is_none())
            .cloned()
            .collect();
        if let (Some(l), false) = (lazy, base_missing.is_empty()) {
            if l.same_registry {
                lazy_repo = Some(&l.base.repository);
            } else {
                self.fetch_blobs(l.store, l.base, &base_missing, opts.jobs)?;
            }
        }
        let blobs_of: Vec<(&Descriptor, bool)> = blobs_of
            .iter()
            .map(|d| (*d, missing.iter().any(|m| m.digest == d.digest)))
            .collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let bytes_up = AtomicU64::new(0);
        let counts = [
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ];
        let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
        let workers = opts.jobs.clamp(1, blobs_of.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(d, is_missing)) = blobs_of.get(i) else {
                        return;
                    };
                    // A base blob not in the source: from the base's repository on this
                    // registry, or (other registry) already fetched into the store above.
                    // A cache hit's blob: from its repository on this registry.
                    let origin = self
                        .origin_of(d, target, opts)
                        .filter(|_| is_missing)
                        .map(|o| o.repository.as_str());
                    let (src, from, fetch_from): (&dyn BlobSource, _, _) =
                        match (is_missing, origin, lazy) {
                            (true, Some(o), _) => (
                                blobs.store().map_or(blobs, |s| s as &dyn BlobSource),
                                Some(o).filter(|o| *o != target.repository),
                                Some(o),
                            ),
                            (true, None, Some(l)) => {
                                (l.store as &dyn BlobSource, mount_from, lazy_repo)
                            }
                            _ => (blobs, mount_from, None),
                        };
                    match self.push_blob(
                        host,
                        scope,
                        src,
                        &target.repository,
                        d,
                        from,
                        fetch_from,
                        opts,
                    ) {
                        Ok(BlobOutcome::Skipped) => {
                            counts[0].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(BlobOutcome::Mounted) => {
                            counts[1].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(BlobOutcome::Uploaded(n)) => {
                            counts[2].fetch_add(1, Ordering::Relaxed);
                            bytes_up.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e);
        }
        report.blobs_skipped += counts[0].load(Ordering::Relaxed);
        report.blobs_mounted += counts[1].load(Ordering::Relaxed);
        report.blobs_uploaded += counts[2].load(Ordering::Relaxed);
        report.bytes_uploaded += bytes_up.into_inner();
        Ok(())
    }

    /// Where `d` comes from if the source lacks it: its entry in `blob_origins`, when on the
    /// target's registry.
    fn origin_of<'o>(
        &self,
        d: &Descriptor,
        target: &Reference,
        opts: &'o PushOptions,
    ) -> Option<&'o Reference> {
        opts.blob_origins
            .get(&d.digest)
            .filter(|o| o.registry == target.registry)
    }

    /// `PUT /v2/<repo>/manifests/<reference>`, checking the digest the registry computed.
    fn put_manifest(
        &self,
        host: &Host,
        scope: &Scope,
        target: &Reference,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let url = self.url(
            host,
            &format!("{}/manifests/{reference}", target.repository),
        );
        let what = format!("manifest {}:{reference}", target.name());
        let resp = self.retrying(&|| format!("push of {what}"), || {
            self.send(host, scope, &|h| {
                h.put(url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec())
            })
        })?;
        if !resp.status().is_success() {
            return Err(self.status_error(
                host,
                &target.repository,
                &format!("push of {what}"),
                resp,
            ));
        }
        let expected = Digest::of(bytes);
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok())
        {
            if d != expected {
                return Err(RegistryError::DigestMismatch {
                    host: host.name.clone(),
                    what: format!("pushed {what}"),
                    expected,
                    detail: format!("registry stored {d}"),
                });
            }
        }
        tracing::debug!(%what, "manifest pushed");
        Ok(())
    }

    /// Makes sure one blob exists in the target repository. `fetch_from`: the blob is not in
    /// `blobs` yet; if it can be neither found nor mounted, fetch it from that repository of
    /// the same registry into the store (`blobs`), then upload it.
    #[allow(clippy::too_many_arguments)]
    fn push_blob(
        &self,
        host: &Host,
        scope: &Scope,
        blobs: &dyn BlobSource,
        repository: &str,
        d: &Descriptor,
        mount_from: Option<&str>,
        fetch_from: Option<&str>,
        opts: &PushOptions,
    ) -> Result<BlobOutcome, RegistryError> {
        let what = format!("blob {} to {}/{repository}", d.digest, host.name);
        // 1. Exists already?
        let head_url = self.url(host, &format!("{repository}/blobs/{}", d.digest));
        let exists = self.retrying(&|| format!("existence check of {what}"), || {
            let resp = self.send(host, scope, &|h| h.head(head_url.clone()))?;
            match resp.status() {
                // A registry that answers 200 to everything must not make a push skip a
                // blob: only the blob's own size confirms it (skopeo and docker trust 200).
                s if s.is_success() => {
                    let size = resp
                        .headers()
                        .get(CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    if size != Some(d.size) {
                        tracing::warn!(
                            digest = %d.digest,
                            expected = d.size,
                            answered = ?size,
                            "registry claims to have the blob with another size; uploading it"
                        );
                    }
                    Ok(size == Some(d.size))
                }
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(Failure::Fatal(self.status_error(
                    host,
                    repository,
                    &format!("existence check of {what}"),
                    resp,
                ))),
            }
        })?;
        if exists {
            return Ok(BlobOutcome::Skipped);
        }
        // 2. Mount from another repository, or start an upload session.
        let mut session: Option<Url> = None;
        if let Some(from) = mount_from {
            let mut url = self.url(host, &format!("{repository}/blobs/uploads/"));
            url.query_pairs_mut()
                .append_pair("mount", &d.digest.to_string())
                .append_pair("from", from);
            let resp = self.retrying(&|| format!("mount of {what} from {from}"), || {
                self.send(host, scope, &|h| {
                    h.post(url.clone()).header(CONTENT_LENGTH, 0)
                })
            })?;
            match resp.status() {
                StatusCode::CREATED => return Ok(BlobOutcome::Mounted),
                StatusCode::ACCEPTED => session = Some(location(host, &resp)?),
                _ => {
                    return Err(self.status_error(
                        host,
                        repository,
                        &format!("mount of {what}"),
                        resp,
                    ))
                }
            }
        }
        if let (Some(from), Some(store)) = (fetch_from, blobs.store()) {
            if !store.has_blob(&d.digest) {
                tracing::debug!(digest = %d.digest, %from, "fetching a base blob to upload it");
                self.fetch_blob(host, store, from, d)?;
            }
        }
        // 3. Upload, resuming or restarting after failures, within the retry budget.
        let monolithic = d.size < opts.monolithic_limit;
        let chunk = opts.chunk_size.max(1);
        let mut offset: u64 = 0;
        let mut sent: u64 = 0;
        let mut failures = 0u32;
        // Whether the session in use was resumed after a broken request.
        let mut resumed = false;
        loop {
            let attempt = (|| -> Result<(), UploadFailure> {
                let mut url = match session.take() {
                    Some(u) => u,
                    None => {
                        offset = 0;
                        self.start_upload(host, scope, repository)?
                    }
                };
                if !monolithic {
                    while offset < d.size {
                        let end = (offset + chunk).min(d.size);
                        // Keep the session for resuming if this chunk fails.
                        session = Some(url.clone());
                        let resp =
                            self.upload_request(host, scope, blobs, d, &url, offset, end, false)?;
                        match resp.status() {
                            StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                            }
                            StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE => {
                                session = None;
                                return Err(UploadFailure::Restart(format!(
                                    "upload session lost ({})",
                                    error_body_summary(&self.small_body(resp))
                                )));
                            }
                            _ => {
                                return Err(UploadFailure::Fatal(self.status_error(
                                    host,
                                    repository,
                                    &format!("chunk upload of {what}"),
                                    resp,
                                )))
                            }
                        }
                        url = location(host, &resp)?;
                        sent += end - offset;
                        offset = end;
                    }
                }
                // Final PUT: the whole blob (monolithic) or no body (chunked).
                session = Some(url.clone());
                // After a resume `offset` is what the registry already has of a monolithic
                // upload too: only the rest is sent.
                let (from, to) = if monolithic {
                    (offset, d.size)
                } else {
                    (d.size, d.size)
                };
                let resp = self.upload_request(host, scope, blobs, d, &url, from, to, true)?;
                match resp.status() {
                    StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::ACCEPTED => {
                        sent += to - from;
                        session = None;
                        Ok(())
                    }
                    StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE => {
                        // The session expired or lost track: a new session is a new request,
                        // not a repeat of this one.
                        session = None;
                        Err(UploadFailure::Restart(format!(
                            "registry rejected the upload ({})",
                            error_body_summary(&self.small_body(resp))
                        )))
                    }
                    StatusCode::BAD_REQUEST if resumed => {
                        // DIGEST_INVALID after resuming a session a broken connection left:
                        // the registry kept bytes we cannot see; start over once. A 400 to
                        // a clean upload is permanent (below).
                        resumed = false;
                        session = None;
                        Err(UploadFailure::Restart(format!(
                            "registry rejected the upload ({})",
                            error_body_summary(&self.small_body(resp))
                        )))
                    }
                    _ => Err(UploadFailure::Fatal(self.status_error(
                        host,
                        repository,
                        &format!("upload of {what}"),
                        resp,
                    ))),
                }
            })();
            let (cause, after) = match attempt {
                Ok(()) => return Ok(BlobOutcome::Uploaded(sent)),
                Err(UploadFailure::Fatal(e)) => return Err(e),
                Err(UploadFailure::Restart(cause)) => {
                    session = None;
                    (cause, None)
                }
                Err(UploadFailure::Retry { cause, after }) => (cause, after),
            };
            failures += 1;
            tracing::debug!(%what, failures, %cause, "upload attempt failed");
            if failures >= self.options().retry.max_attempts {
                return Err(RegistryError::RetriesExhausted {
                    what: format!("upload of {what}"),
                    attempts: failures,
                    last: cause,
                });
            }
            std::thread::sleep(self.options().retry.delay(failures, after));
            // Resume: ask the registry how much of the session it has, for a monolithic PUT
            // as for a chunk (docker-registry forgets a session whose request broke after
            // some bytes arrived: then the status request fails and the upload starts over).
            if let Some(url) = session.take() {
                match self.upload_status(host, scope, &url) {
                    Some((u, have)) if have <= d.size => {
                        tracing::debug!(%what, offset = have, "resuming upload");
                        session = Some(u);
                        offset = have;
                        resumed = true;
                    }
                    _ => session = None,
                }
            }
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/` → the session URL.
    fn start_upload(
        &self,
        host: &Host,
        scope: &Scope,
        repository: &str,
    ) -> Result<Url, UploadFailure> {
        let url = self.url(host, &format!("{repository}/blobs/uploads/"));
        let resp = self.send(host, scope, &|h| {
            h.post(url.clone()).header(CONTENT_LENGTH, 0)
        })?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(UploadFailure::Fatal(self.status_error(
                host,
                repository,
                &format!("starting an upload to {repository}"),
                resp,
            )));
        }
        Ok(location(host, &resp)?)
    }

    /// Sends bytes `from..to` of a blob: a `PATCH` chunk, or the final `PUT ?digest=` (with
    /// whatever remains, possibly nothing). Streams from the source.
    #[allow(clippy::too_many_arguments)]
    fn upload_request(
        &self,
        host: &Host,
        scope: &Scope,
        blobs: &dyn BlobSource,
        d: &Descriptor,
        url: &Url,
        from: u64,
        to: u64,
        last: bool,
    ) -> Result<Response, UploadFailure> {
        let mut target = url.clone();
        if last {
            target
                .query_pairs_mut()
                .append_pair("digest", &d.digest.to_string());
        }
        let open_err: Mutex<Option<String>> = Mutex::new(None);
        let make = |h: &reqwest::blocking::Client| {
            let len = to - from;
            let body = if len == 0 {
                Body::from(Vec::new())
            } else {
                match blobs.open_blob_at(&d.digest, from) {
                    Ok(f) => Body::sized(f.take(len), len),
                    Err(e) => {
                        *open_err.lock().unwrap() = Some(e.to_string());
                        Body::from(Vec::new())
                    }
                }
            };
            let mut r = if last {
                h.put(target.clone())
            } else {
                h.patch(target.clone())
            };
            r = r
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, len);
            if !last {
                r = r.header("Content-Range", format!("{from}-{}", to - 1));
            }
            r.timeout(request_deadline(self.options().timeout, len))
                .body(body)
        };
        let resp = self.send(host, scope, &make);
        if let Some(e) = open_err.into_inner().unwrap() {
            return Err(UploadFailure::Fatal(RegistryError::BlobSource {
                digest: d.digest.clone(),
                detail: e,
            }));
        }
        Ok(resp?)
    }

    /// `GET` on an upload session: its current URL and how many bytes the registry has.
    fn upload_status(&self, host: &Host, scope: &Scope, url: &Url) -> Option<(Url, u64)> {
        let resp = self.send(host, scope, &|h| h.get(url.clone())).ok()?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return None;
        }
        let range = resp.headers().get("range")?.to_str().ok()?.to_string();
        let next = location(host, &resp).unwrap_or_else(|_| url.clone());
        let end = range
            .trim()
            .trim_start_matches("bytes=")
            .split_once('-')?
            .1
            .parse::<u64>()
            .ok()?;
        // "0-0" is ambiguous (nothing or one byte); treat it as nothing, which a registry
        // accepts or answers with 416 (then we restart).
        let have = if end == 0 { 0 } else { end + 1 };
        Some((next, have))
    }
}

/// The `Location` of an upload response, resolved against the registry's base URL.
fn location(host: &Host, resp: &Response) -> Result<Url, RegistryError> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Status {
            host: host.name.clone(),
            what: "upload".into(),
            status: resp.status().as_u16(),
            detail: "response has no Location header".into(),
        })?;
    host.base.join(loc).map_err(|e| RegistryError::Status {
        host: host.name.clone(),
        what: "upload".into(),
        status: resp.status().as_u16(),
        detail: format!("bad Location header: {e}"),
    })
}
