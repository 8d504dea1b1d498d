//! RUN: the seam between exec, which schedules a stage's steps, chains their cache keys and
//! writes layers, and the sandbox that runs one command over the stage's filesystem and hands
//! back what it changed as layer entries. exec never mounts or spawns anything itself; the
//! implementation behind [`StepRunner`] never decides what is cached or how layers are written
//! (BuildKit's solver / executor split).

mod binfmt;
mod copy;
mod diff;
mod executor;
mod hosts;
mod layers;
mod lowers;
mod mounts;
mod oci;
mod runner;
mod seccomp;
mod security;
mod snapshot;
mod user;
pub mod userns;

pub use copy::Copy;
pub use diff::{tree_to_entries, upper_to_entries, CopiedDirs, DiffOptions};
pub use executor::{
    sweep_stale as sweep_stale_containers, BindMount, Executor, OciRuntime, ProcessSpec,
};
pub use hosts::ExtraHost;
pub use layers::{extracted, unpack_while_writing, Unpacking};
pub use lowers::LowerView;
pub use mounts::{prune_caches, SecretSource, Secrets, SshAgents, BIND_ENTRY};
pub use runner::{SandboxRunner, SnapshotterChoice};
pub use seccomp::compile_ahead as compile_seccomp_filter_ahead;
pub use snapshot::{sweep_stale as sweep_stale_snapshots, Overlay, Snapshot, Snapshotter};
pub use user::{resolve_user, ResolvedUser, UserError};

use crate::digest::Digest;
use crate::image::Platform;
use crate::layer::Entry;
use crate::plan::RunStep;
use crate::store::Store;
use std::any::Any;

/// One layer below the RUN, bottom first. Its blob is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerLayer {
    /// sha256 of the uncompressed tar: the key of its extracted snapshot.
    pub diff_id: Digest,
    /// The blob as stored (compressed as `media_type` says).
    pub blob: Digest,
    pub media_type: String,
}

/// Everything a RUN executes with. exec fills it from the stage state at the step.
pub struct RunInput<'a> {
    pub step: &'a RunStep,
    /// `KEY=VALUE`: the image config's Env (with docker's default PATH when it has none), then
    /// the build ARGs in scope that Env does not set. ARGs are not persisted in the config.
    pub env: Vec<String>,
    /// The stage's USER as written (`name`, `uid`, `name:group`, `uid:gid`); empty for root.
    /// Resolved against the stage's own `/etc/passwd` and `/etc/group` by the runner.
    pub user: String,
    /// The stage's WORKDIR (absolute); `/` when unset. Created when missing.
    pub workdir: String,
    /// `os/arch[/variant]` of the stage.
    pub platform: String,
    /// `--add-host` entries for the step's `/etc/hosts`.
    pub extra_hosts: Vec<ExtraHost>,
    pub lowers: Vec<LowerLayer>,
    /// One per `step.mounts`: for a bind, and a cache with `from`, the layer holding its
    /// source at [`BIND_ENTRY`] (exec copies it there); None for the others.
    pub mount_sources: Vec<Option<LowerLayer>>,
    /// `SOURCE_DATE_EPOCH` when the user set it: newer mtimes in the diff are clamped to it.
    pub source_date_epoch: Option<u64>,
    /// Receives the step's output (stdout and stderr, merged), a chunk at a time.
    pub output: &'a (dyn Fn(&[u8]) + Sync),
}

/// What a RUN changed. `entries` may name files inside the snapshot
/// ([`crate::layer::FileSource::Host`]); `keep` holds the snapshot until the layer is written
/// and releases it when dropped.
pub struct RunOutput {
    pub entries: Vec<Entry>,
    pub keep: Box<dyn Any + Send + Sync>,
}

/// Runs a RUN step. One implementation runs an OCI runtime over overlayfs snapshots; tests
/// above this seam use in-memory fakes.
pub trait StepRunner: Send + Sync {
    fn run(&self, input: &RunInput<'_>, store: &Store) -> Result<RunOutput, RunError>;

    /// Whether steps for `platform` can run here, asked before any layer of a stage with RUN
    /// steps is written: `Ok(Some(how))` when they run other than natively (said once in the
    /// progress output), `Err` with one sentence naming the platform and what to install.
    /// By default only the host's platform runs.
    fn check_platform(&self, platform: &Platform) -> Result<Option<String>, String> {
        let host = Platform::host();
        if platform.os == host.os && platform.architecture == host.architecture {
            Ok(None)
        } else {
            Err(format!(
                "RUN for {platform} on a {host} host is not supported yet"
            ))
        }
    }
}

/// Build-wide settings of RUN steps, from `lade build` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSettings {
    /// `--add-host NAME:IP`: lines of every step's `/etc/hosts`, in order. Part of RUN keys
    /// (as in BuildKit, where they are part of the exec op).
    pub extra_hosts: Vec<ExtraHost>,
    /// `--allow security.insecure`: BuildKit's entitlement, without which
    /// `RUN --security=insecure` is an error. Not part of keys: it only allows.
    pub allow_insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command ran and exited non-zero (or was killed by a signal: 128 + signal).
    #[error("{command} exited with code {code}{}", tail_text(.tail))]
    Failed {
        command: String,
        code: i32,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// No OCI runtime on this machine.
    #[error("RUN needs an OCI runtime: install crun (Debian package `crun`) or runc, or pass --runtime PATH")]
    NoRuntime,
    #[error("{0}")]
    Sandbox(String),
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last output:\n  {}", tail.join("\n  "))
    }
}
