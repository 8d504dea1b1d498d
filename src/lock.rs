//! `lade.lock`: every registry base a build description names (FROM, `COPY --from` and
//! `RUN --mount from=` images),
//! per platform, pinned to its image manifest digest. A build with a lock resolves the pinned
//! digests and never looks a tag up; the file is TOML, entries sorted by reference then
//! platform, so it diffs well and is the same wherever it is written.

use crate::digest::Digest;
use crate::image::Platform;
use crate::plan::{Base, CopyFrom, FileSet, Plan, RunMount, Step};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file name, next to the lade.toml or Dockerfile.
pub const LOCK_FILE: &str = "lade.lock";

/// What a build does with the lock file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Use the lock file if there is one (a base it lacks is resolved by tag, with the
    /// floating-tag warning).
    #[default]
    Use,
    /// `--locked`: fail when there is no lock file or it lacks a base the description names.
    Locked,
    /// `--lock`: resolve every base again, write the lock file, build with it.
    Update,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("writing {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} does not pin {reference} for {platform} (--locked): run `lade lock`")]
    Missing {
        path: PathBuf,
        reference: String,
        platform: String,
    },
}

/// One pinned base.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockEntry {
    /// As the description names it (`debian:bookworm`, `registry:5000/base:1`).
    pub reference: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The image manifest for that platform.
    pub digest: Digest,
}

/// The contents of a lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub version: u32,
    #[serde(default, rename = "image")]
    pub images: Vec<LockEntry>,
}

impl Lock {
    /// The pinned manifest digest of `reference` for `platform`.
    pub fn get(&self, reference: &str, platform: &Platform) -> Option<&Digest> {
        let platform = platform.to_string();
        self.images
            .iter()
            .find(|e| e.reference == reference && e.platform == platform)
            .map(|e| &e.digest)
    }

    pub fn insert(&mut self, reference: &str, platform: &Platform, digest: Digest) {
        let platform = platform.to_string();
        self.images
            .retain(|e| !(e.reference == reference && e.platform == platform));
        self.images.push(LockEntry {
            reference: reference.to_string(),
            platform,
            digest,
        });
        self.images.sort();
    }

    /// The file's text: a header comment, `version = 1`, then one `[[image]]` per entry.
    pub fn to_toml(&self) -> String {
        let mut lock = self.clone();
        lock.version = 1;
        lock.images.sort();
        lock.images.dedup();
        let body = toml::to_string(&lock).expect("a lock serialises");
        format!("# Written by `lade lock`: the base images of this build, pinned.\n{body}")
    }

    /// Reads `path`; `None` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Lock>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(LockError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        let lock: Lock = toml::from_str(&text).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        if lock.version != 1 {
            return Err(LockError::Parse {
                path: path.to_path_buf(),
                message: format!("lock file version {} is not 1", lock.version),
            });
        }
        Ok(Some(lock))
    }

    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        crate::store::write_atomic(path, self.to_toml().as_bytes()).map_err(|error| {
            LockError::Write {
                path: path.to_path_buf(),
                error,
            }
        })
    }

    /// `reference` pinned as `reference@digest`, when the lock has it and the reference does
    /// not already carry a digest.
    pub fn pin(&self, reference: &str, platform: &Platform) -> Option<String> {
        if reference.contains('@') {
            return None;
        }
        self.get(reference, platform)
            .map(|d| format!("{reference}@{d}"))
    }
}

/// Calls `f` on every base `plan` reads with the platform of the stage reading it: stage
/// bases, `COPY --from` images and `RUN --mount from=` images.
fn visit_bases(plan: &mut Plan, mut f: impl FnMut(&mut Base, &Platform)) {
    for stage in &mut plan.stages {
        let platform = stage.platform.clone();
        f(&mut stage.base, &platform);
        for step in &mut stage.steps {
            match step {
                Step::Layer(l) => {
                    for set in &mut l.sources {
                        if let FileSet::Copy {
                            from: CopyFrom::Image { base },
                            ..
                        } = set
                        {
                            f(base, &platform);
                        }
                    }
                }
                Step::Run(r) => {
                    for m in &mut r.mounts {
                        if let RunMount::Bind {
                            from: Some(CopyFrom::Image { base }),
                            ..
                        }
                        | RunMount::Cache {
                            from: Some(CopyFrom::Image { base }),
                            ..
                        } = m
                        {
                            f(base, &platform);
                        }
                    }
                }
                Step::Config(_) => {}
            }
        }
    }
}

/// Every registry base `plan` names with the platform it is read for, in plan order,
/// without repeats: stage bases, `COPY --from` and `RUN --mount from=` images.
pub fn registry_bases(plan: &Plan) -> Vec<(String, Platform)> {
    let mut out: Vec<(String, Platform)> = Vec::new();
    visit_bases(&mut plan.clone(), |base, platform| {
        if let Base::Registry { reference } = base {
            let item = (reference.clone(), platform.clone());
            if !out.contains(&item) {
                out.push(item);
            }
        }
    });
    out
}

/// Replaces every registry base of `plan` the lock pins with its pinned form.
pub fn pin_plan(plan: &mut Plan, lock: &Lock) {
    visit_bases(plan, |base, platform| {
        if let Base::Registry { reference } = base {
            if let Some(p) = lock.pin(reference, platform) {
                *reference = p;
            }
        }
    });
}

/// Whether a reference floats: a tag without a digest.
pub fn is_floating(reference: &str) -> bool {
    !reference.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sorted_and_round_trip() {
        let amd = "linux/amd64".parse::<Platform>().unwrap();
        let arm = "linux/arm64".parse::<Platform>().unwrap();
        let mut lock = Lock::default();
        lock.insert("r:5000/b:1", &arm, Digest::of(b"2"));
        lock.insert("r:5000/a:1", &amd, Digest::of(b"0"));
        lock.insert("r:5000/b:1", &amd, Digest::of(b"1"));
        lock.insert("r:5000/b:1", &arm, Digest::of(b"3"));
        let text = lock.to_toml();
        let read: Lock = toml::from_str(&text).unwrap();
        let order: Vec<(&str, &str)> = read
            .images
            .iter()
            .map(|e| (e.reference.as_str(), e.platform.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("r:5000/a:1", "linux/amd64"),
                ("r:5000/b:1", "linux/amd64"),
                ("r:5000/b:1", "linux/arm64")
            ]
        );
        assert_eq!(read.get("r:5000/b:1", &arm), Some(&Digest::of(b"3")));
        assert_eq!(
            read.pin("r:5000/b:1", &amd),
            Some(format!("r:5000/b:1@{}", Digest::of(b"1")))
        );
        assert_eq!(read.pin("r:5000/c:1", &amd), None);
    }
}
