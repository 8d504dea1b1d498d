//! The build plan: what both frontends lower to and `exec` runs. Pure data, no I/O.
//!
//! A `Plan` is a DAG of `Stage`s (a stage's base may be another stage); each stage applies
//! `Step`s in order on top of its base. Layer steps say *which* files go where; `exec`
//! resolves them against the context and derives each step's cache key from the step's
//! definition and the content digests of its inputs (`cache_key`), never paths or mtimes.

mod chmod;
mod key;

pub use chmod::Chmod;
pub use key::cache_key;

use crate::image::Platform;
use crate::path::ImagePath;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub stages: Vec<Stage>,
    /// Index of the stage whose result is the image.
    pub target: usize,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Image names to tag the result with (`name:tag`).
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: Option<String>,
    pub base: Base,
    pub platform: Platform,
    pub steps: Vec<Step>,
    /// Where the stage's base is named (the FROM instruction, lade.toml's `from`), for errors
    /// of the stage that no step owns (loading the base). Not serialised.
    #[serde(skip)]
    pub location: Location,
}

impl Base {
    /// Parses how both frontends name an image: `scratch`, `oci:DIR[:TAG]`,
    /// `oci-archive:FILE[:TAG]` (relative paths against `dir`), or a registry reference.
    /// None for a name no registry could hold (it contains whitespace).
    pub fn from_image_name(image: &str, dir: &std::path::Path) -> Option<Base> {
        let split_tag = |rest: &str| -> (PathBuf, Option<String>) {
            let path = |p: &str| {
                if std::path::Path::new(p).is_absolute() {
                    PathBuf::from(p)
                } else {
                    dir.join(p)
                }
            };
            match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') && !t.is_empty() => (path(p), Some(t.to_string())),
                _ => (path(rest), None),
            }
        };
        if image.eq_ignore_ascii_case("scratch") {
            Some(Base::Scratch)
        } else if let Some(rest) = image.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest);
            Some(Base::OciLayout { dir, tag })
        } else if let Some(rest) = image.strip_prefix("oci-archive:") {
            let (file, tag) = split_tag(rest);
            Some(Base::OciArchive { file, tag })
        } else if image.chars().any(char::is_whitespace) {
            None
        } else {
            Some(Base::Registry {
                reference: image.to_string(),
            })
        }
    }
}

impl Plan {
    /// Which stages building the target needs (the target and what it reads, transitively).
    pub fn needed_stages(&self) -> Vec<bool> {
        let mut needed = vec![false; self.stages.len()];
        let mut todo = vec![self.target];
        while let Some(i) = todo.pop() {
            if !std::mem::replace(&mut needed[i], true) {
                todo.extend(self.stages[i].deps());
            }
        }
        needed
    }
}

impl Stage {
    /// The stages this one reads from: its base, its COPY --from sources and its RUN
    /// mounts' `from`.
    pub fn deps(&self) -> Vec<usize> {
        let mut deps = Vec::new();
        if let Base::Stage { index } = self.base {
            deps.push(index);
        }
        for step in &self.steps {
            if let Step::Run(r) = step {
                for m in &r.mounts {
                    if let Some(CopyFrom::Stage { index, .. }) = m.from() {
                        deps.push(*index);
                    }
                }
            }
            if let Step::Layer(l) = step {
                for set in &l.sources {
                    if let FileSet::Copy {
                        from: CopyFrom::Stage { index, .. },
                        ..
                    } = set
                    {
                        deps.push(*index);
                    }
                }
            }
        }
        deps
    }

    /// The registry reference of the stage's base, if it comes from a registry.
    pub fn base_reference(&self) -> Option<String> {
        match &self.base {
            Base::Registry { reference } => Some(reference.clone()),
            _ => None,
        }
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Base {
    Scratch,
    /// An OCI image layout directory, optionally a tag (`org.opencontainers.image.ref.name`).
    OciLayout {
        dir: PathBuf,
        tag: Option<String>,
    },
    /// A tarred OCI image layout.
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    /// A registry reference (pulled by the registry module).
    Registry {
        reference: String,
    },
    /// Another stage of this plan, by index.
    Stage {
        index: usize,
    },
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Step {
    /// Files that become one layer.
    Layer(LayerStep),
    /// A change to the image configuration; no layer.
    Config(ConfigEdit),
    /// A command run in a container over the stage's filesystem.
    Run(RunStep),
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerStep {
    /// A short name (`[[layer]] name`, or the Dockerfile instruction), shown in progress.
    pub name: String,
    /// The history entry's `created_by`.
    pub created_by: String,
    pub sources: Vec<FileSet>,
    /// The instruction or section that made the step; every error executing it names it.
    /// Not serialised: locations must not change cache keys.
    #[serde(skip)]
    pub location: Location,
}

/// Where a plan item was written (file, line, column), for errors found while executing it;
/// both frontends make one, and errors render it the same way (`FILE:LINE:COL`).
pub use crate::frontend::diag::Location;

/// Owner and permission rules applied to the files of a set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attrs {
    /// Mode of every regular file (replaces the host's).
    pub file_mode: Option<u32>,
    /// Mode of every directory.
    pub dir_mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    /// Without `file_mode`: files get 0o755 when executable on the host, else 0o644.
    /// When false, all files get 0o644. Ignored when `host_modes` applies.
    pub preserve_exec_bit: bool,
    /// Files and directories keep their permission bits as on the host (setuid, setgid and
    /// sticky included) where `file_mode`/`dir_mode` do not replace them: Dockerfile COPY/ADD
    /// from the context (BuildKit's rule), lade.toml `normalize-modes = false`. The build
    /// option `--normalize-modes` turns it off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_modes: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FileSet {
    /// A directory of the context (relative path), selected by globs, placed under `into`.
    /// Empty `include` means everything.
    Select {
        from: String,
        into: ImagePath,
        include: Vec<String>,
        exclude: Vec<String>,
        attrs: Attrs,
        /// Where `from` was written. Not serialised: locations must not change cache keys.
        #[serde(skip)]
        origin: Location,
        /// Where each `include` pattern was written.
        #[serde(skip)]
        include_origins: Vec<Location>,
    },
    /// Entries of a zip archive in the context (a jar), each to an image path.
    Zip {
        archive: String,
        entries: Vec<ZipEntry>,
        attrs: Attrs,
        #[serde(skip)]
        origin: Location,
    },
    /// A file lade generates (e.g. Jib's classpath file).
    Inline {
        path: ImagePath,
        #[serde(serialize_with = "as_lossy_str")]
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Dockerfile heredoc `--chown` as written (names resolved at exec time; replaces
        /// uid/gid).
        #[serde(skip_serializing_if = "Option::is_none")]
        chown: Option<String>,
        /// A Dockerfile heredoc's name: the file lands on the stage's filesystem like a COPY
        /// source (into `path` when that is an existing directory, through symlinks, parents
        /// kept), not as fresh 0755 root directories.
        #[serde(skip_serializing_if = "Option::is_none")]
        heredoc: Option<String>,
    },
    /// Dockerfile COPY/ADD: sources (wildcards allowed) from the context or another stage,
    /// copied with docker's rules (a directory's contents, not the directory itself).
    Copy {
        from: CopyFrom,
        sources: Vec<String>,
        dest: ImagePath,
        /// Sources go *inside* `dest` (it ends with `/`, or there are several sources).
        dest_is_dir: bool,
        exclude: Vec<String>,
        /// Keep each source's parent directories (`--parents`).
        parents: bool,
        /// `--chown` as written (names resolved against the stage's /etc/passwd at exec time).
        chown: Option<String>,
        /// `--chmod`: octal, or symbolic applied to each file's and directory's own mode.
        chmod: Option<Chmod>,
        /// ADD: unpack local tar archives into `dest`.
        unpack_archives: bool,
        /// `--link` (BuildKit's semantics): the files are copied onto an empty tree, so the
        /// layer does not depend on the stage below: the destination and its parents are not
        /// looked up (no symlink is followed, an existing directory is not copied into) and
        /// missing parents are written 0755 with the `--chown` owner.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        link: bool,
        #[serde(skip)]
        origin: Location,
    },
    /// Dockerfile `ADD <http(s) URL>`: one downloaded file, never unpacked.
    Url {
        url: String,
        /// Where the file goes (the URL's last path segment under a directory destination).
        path: ImagePath,
        /// `--checksum`: the download must have this digest; it stands for the content in
        /// the cache key, so a store that holds the blob does not download again.
        checksum: Option<crate::digest::Digest>,
        /// `--chown` as written (names resolved against the stage's /etc/passwd at exec time).
        chown: Option<String>,
        /// `--chmod`, applied to docker's 0600 for URL downloads.
        chmod: Option<Chmod>,
        /// The download's name (BuildKit's: the URL's last path segment), for when `path`
        /// turns out to be an existing directory of the stage.
        #[serde(skip)]
        file_name: String,
        #[serde(skip)]
        origin: Location,
    },
    /// Dockerfile WORKDIR: the directory and its missing parents, 0755 and owned by `user`
    /// (the stage's USER, names resolved in its passwd), created only when missing; an
    /// existing directory keeps its mode and owner.
    Workdir {
        path: ImagePath,
        user: Option<String>,
    },
    /// An empty directory.
    Dir {
        path: ImagePath,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

fn as_lossy_str<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// Where COPY reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CopyFrom {
    Context,
    Stage {
        index: usize,
        /// How messages name the stage (its `AS` name, else `stage-N`, as BuildKit's).
        #[serde(skip)]
        name: String,
    },
    Image {
        base: Base,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZipEntry {
    /// Name inside the archive.
    pub name: String,
    pub path: ImagePath,
}

/// One change to the image configuration, applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "set", content = "value", rename_all = "kebab-case")]
pub enum ConfigEdit {
    Entrypoint(Option<Vec<String>>),
    Cmd(Option<Vec<String>>),
    Env(String, String),
    WorkingDir(String),
    User(String),
    Label(String, String),
    ExposedPort(String),
    Volume(String),
    StopSignal(String),
    Author(String),
    Shell(Vec<String>),
    OnBuild(String),
    Healthcheck(Option<crate::image::Healthcheck>),
}

#[derive(Debug, Clone, Serialize)]
pub struct RunStep {
    /// argv: exec form as written, shell form already wrapped in the stage's SHELL.
    pub command: Vec<String>,
    /// `RUN --network` (or `lade build --network`).
    pub network: RunNetwork,
    /// Build ARGs in scope (and proxy build args), in order: the command sees them as
    /// environment where the image's Env does not set the name; the image does not keep them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<(String, String)>,
    /// `RUN --mount=…`, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<RunMount>,
    /// `RUN --security=insecure`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Files provided to the command during the step only, never in its layer (a heredoc
    /// with a `#!` line is executed from `/dev/pipes/NAME`, as BuildKit does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RunFile>,
    /// The history entry's `created_by` (BuildKit's: `RUN |N K=V… argv`). Not part of cache
    /// keys.
    pub created_by: String,
    /// The RUN instruction, for errors.
    #[serde(skip)]
    pub location: Location,
}

/// A file a RUN reads that is not on the stage's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunFile {
    /// Absolute path inside the container.
    pub path: String,
    pub content: String,
    pub mode: u32,
}

/// One `RUN --mount` (BuildKit's mount types and options). `from` is a stage or image,
/// resolved like `COPY --from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RunMount {
    /// Read-only (unless `rw`) view of the context (`from` None) or of `from` at `source`.
    Bind {
        target: String,
        source: Option<String>,
        from: Option<CopyFrom>,
        readwrite: bool,
    },
    /// A directory kept between builds, keyed by `id` (default: the target).
    Cache {
        target: String,
        id: Option<String>,
        sharing: CacheSharing,
        /// Where a new cache's first contents come from (`source` of it).
        from: Option<CopyFrom>,
        source: Option<String>,
        readonly: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// A build secret as a file (default `/run/secrets/ID`) or an environment variable.
    Secret {
        id: Option<String>,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// The SSH agent socket of `id`.
    Ssh {
        id: String,
        target: Option<String>,
        required: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
}

impl RunMount {
    /// The stage or image the mount reads, if any.
    pub fn from(&self) -> Option<&CopyFrom> {
        match self {
            RunMount::Bind { from, .. } | RunMount::Cache { from, .. } => from.as_ref(),
            _ => None,
        }
    }

    /// Sets where the mount reads from (the frontends resolve the name first).
    pub fn set_from(&mut self, f: CopyFrom) {
        if let RunMount::Bind { from, .. } | RunMount::Cache { from, .. } = self {
            *from = Some(f);
        }
    }

    /// The `type=` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            RunMount::Bind { .. } => "bind",
            RunMount::Cache { .. } => "cache",
            RunMount::Tmpfs { .. } => "tmpfs",
            RunMount::Secret { .. } => "secret",
            RunMount::Ssh { .. } => "ssh",
        }
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// The network a RUN step sees (docker's `--network`, BuildKit's `RUN --network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunNetwork {
    /// The host's network namespace and resolv.conf, as BuildKit's default gives a RUN access.
    #[default]
    Default,
    /// The host's network namespace, explicitly.
    Host,
    /// A fresh network namespace with only loopback.
    None,
}
