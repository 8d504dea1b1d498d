//! "Why did it rebuild?": every step's key is made of named inputs (its definition's fields,
//! each file's attributes and content, a RUN's command, environment and the chain below);
//! each build records them per step position (description file relative to the context,
//! stage, step, platform) in the store, and a step that misses the cache is reported with the
//! first input that differs from the previous build of the same step: this store's record,
//! else the one an imported cache (`--cache-from`) carries.
//!
//! Values are recorded as digests: build args and file contents never land in the store as
//! text.

use crate::digest::Digest;
use crate::plan::{FileSet, RunStep};
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// Version of the recorded inputs; a record of another version is "no earlier build".
const RECORD_FORMAT: &str = "lade-why-v1";

/// The named inputs of one step (or of a stage's base), in the order they are compared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepInputs {
    format: String,
    /// The step's cache key when these inputs were recorded.
    pub key: Option<Digest>,
    /// `(name, value digest)`. Names: `def:N:FIELD` (a field of the N-th file set),
    /// `opt:NAME` (a build option), `file:PATH` (an entry of the layer), `below` (the chain
    /// under a RUN), `env:NAME` / `arg:NAME`, `run:FIELD`, `base`.
    pub inputs: Vec<(String, String)>,
    /// What a reason names for a changed `base`: the base image's name and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_name: Option<String>,
}

impl StepInputs {
    /// Whether this record is of this lade's format (another is "no earlier build").
    pub fn is_current(&self) -> bool {
        self.format == RECORD_FORMAT
    }

    fn new(key: &Digest) -> StepInputs {
        StepInputs {
            format: RECORD_FORMAT.into(),
            key: Some(key.clone()),
            ..Default::default()
        }
    }

    fn push(&mut self, name: String, value: &[u8]) {
        self.inputs
            .push((name, Digest::of(value).hex()[..16].to_string()));
    }

    /// A value that holds no secret (a file's attributes and content digest), kept as is so
    /// a change can be told apart by part.
    fn push_raw(&mut self, name: String, value: String) {
        self.inputs.push((name, value));
    }
}

/// Where a step's record lives: the same step of the same description, stage and platform.
/// `file` must not depend on the machine (see [`description_name`]).
pub fn position(file: &str, stage: usize, step: Option<usize>, platform: &str) -> Digest {
    let step = step.map_or("base".to_string(), |s| s.to_string());
    Digest::of(format!("{RECORD_FORMAT}\0{file}\0{stage}\0{step}\0{platform}").as_bytes())
}

/// How a description file enters [`position`]: relative to the context's (canonical) `root`
/// when it is inside it, so runners with different checkout directories share positions.
pub fn description_name(file: &str, root: &std::path::Path) -> String {
    let path = std::path::Path::new(file);
    let relative = |p: &std::path::Path| {
        p.strip_prefix(root)
            .ok()
            .map(|r| r.to_string_lossy().into_owned())
    };
    relative(path)
        .or_else(|| relative(&path.canonicalize().ok()?))
        .unwrap_or_else(|| file.to_string())
}

/// The inputs of a stage's base: what the chain starts from; reasons name the base by `name`
/// and `digest` (its top layer's).
pub fn base_inputs(chain: &Digest, name: &str, digest: Option<&Digest>) -> StepInputs {
    let mut r = StepInputs::new(chain);
    r.push("base".into(), chain.to_string().as_bytes());
    r.base_name = Some(match digest {
        Some(d) => format!("{name} (top layer {d})"),
        None => name.to_string(),
    });
    r
}

/// The inputs of a layer step: each file set's fields, the build options that enter the
/// layer, then every entry (path → type, mode, owner, mtime, content digest).
pub fn layer_inputs(
    key: &Digest,
    sets: &[FileSet],
    options: &[(&str, String)],
    entries: Vec<(String, String)>,
) -> StepInputs {
    let mut r = StepInputs::new(key);
    for (i, set) in sets.iter().enumerate() {
        let value = serde_json::to_value(set).expect("plan steps serialise");
        if let serde_json::Value::Object(fields) = value {
            for (field, v) in fields {
                r.push(format!("def:{i}:{field}"), v.to_string().as_bytes());
            }
        }
    }
    for (name, v) in options {
        r.push(format!("opt:{name}"), v.as_bytes());
    }
    for (path, v) in entries {
        r.push_raw(format!("file:{path}"), v);
    }
    r
}

/// The value an entry contributes to [`layer_inputs`]: `kind|mode|uid:gid|mtime|content`,
/// so a difference can be told apart by part.
pub fn entry_value(kind: &str, mode: u32, uid: u32, gid: u32, mtime: u64, content: &str) -> String {
    format!("{kind}|{mode:o}|{uid}:{gid}|{mtime}|{content}")
}

/// What a RUN sees, besides its chain: [`super::stage::run_key`]'s parts, by name.
pub struct RunParts<'a> {
    pub below: &'a Digest,
    pub run: &'a RunStep,
    pub env: &'a [String],
    pub user: &'a str,
    pub workdir: &'a str,
    pub platform: String,
    pub options: &'a [(&'a str, String)],
    /// `--add-host` entries (in the key only when given).
    pub extra_hosts: &'a [super::run::ExtraHost],
    /// The content digests of the mounts' sources (binds, caches' `from`).
    pub mount_sources: &'a [Option<crate::layer::LayerDigests>],
}

/// The inputs of a RUN: the chain below, the command, each environment variable (build args
/// apart from ENV), USER, WORKDIR and the RUN's flags.
pub fn run_inputs(key: &Digest, p: &RunParts<'_>) -> StepInputs {
    let mut r = StepInputs::new(key);
    r.push("below".into(), p.below.to_string().as_bytes());
    r.push("run:command".into(), json(&p.run.command).as_bytes());
    for kv in p.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let from_arg = p.run.args.iter().any(|(a, _)| a == k);
        let prefix = if from_arg { "arg" } else { "env" };
        r.push(format!("{prefix}:{k}"), v.as_bytes());
    }
    r.push("run:user".into(), p.user.as_bytes());
    r.push("run:workdir".into(), p.workdir.as_bytes());
    r.push("run:network".into(), json(&p.run.network).as_bytes());
    r.push("run:mounts".into(), json(&p.run.mounts).as_bytes());
    r.push("run:security".into(), json(&p.run.insecure).as_bytes());
    r.push("run:files".into(), json(&p.run.files).as_bytes());
    r.push("run:platform".into(), p.platform.as_bytes());
    for (name, v) in p.options {
        r.push(format!("opt:{name}"), v.as_bytes());
    }
    if !p.extra_hosts.is_empty() {
        r.push("run:add-host".into(), json(p.extra_hosts).as_bytes());
    }
    for (i, m) in p.mount_sources.iter().enumerate() {
        if let Some(d) = m {
            r.push(
                format!("run:mount {i} source"),
                d.diff_id.to_string().as_bytes(),
            );
        }
    }
    r
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plan values serialise")
}

/// The first input of `now` that differs from `before`, as a reason line; `below` is what
/// a changed chain is reported as (the first change under the step in this build).
pub fn first_difference(before: &StepInputs, now: &StepInputs, below: Option<&str>) -> String {
    let old: std::collections::HashMap<&str, &str> = before
        .inputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let known: std::collections::HashSet<&str> =
        now.inputs.iter().map(|(k, _)| k.as_str()).collect();
    // Files last: a changed flag explains every file it changes.
    let (files, others): (Vec<_>, Vec<_>) =
        now.inputs.iter().partition(|(k, _)| k.starts_with("file:"));
    for (name, value) in others.into_iter().chain(files) {
        match old.get(name.as_str()) {
            Some(v) if v == value => continue,
            Some(old) => return changed(name, old, value, now, below),
            None => return added(name),
        }
    }
    // Something the previous build had and this one lacks.
    for (name, _) in &before.inputs {
        if !known.contains(name.as_str()) {
            return match name.strip_prefix("file:") {
                Some(path) => format!("{} removed", shown(path)),
                None => format!("{} removed", label(name)),
            };
        }
    }
    SAME_INPUTS.into()
}

/// The reason of a step whose inputs are those of its earlier build (its layer is gone).
pub const SAME_INPUTS: &str = "same inputs as the earlier build, but its layer is not available";

fn changed(name: &str, old: &str, value: &str, now: &StepInputs, below: Option<&str>) -> String {
    if name == "base" {
        let what = now.base_name.as_deref().unwrap_or("image");
        return format!("base image {what} changed");
    }
    if name == "below" {
        return match below {
            Some(b) => b.to_string(),
            None => "a step below changed".into(),
        };
    }
    if let Some(path) = name.strip_prefix("file:") {
        return format!("{} changed ({})", shown(path), file_change(old, value));
    }
    format!("{} changed", label(name))
}

fn added(name: &str) -> String {
    match name.strip_prefix("file:") {
        Some(path) => format!("{} added", shown(path)),
        None => format!("{} changed", label(name)),
    }
}

/// How a file appears in reasons: relative to the image root, like COPY destinations.
fn shown(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// How an input is named in a reason line.
fn label(name: &str) -> String {
    if let Some(k) = name.strip_prefix("arg:") {
        return format!("ARG {k}");
    }
    if let Some(k) = name.strip_prefix("env:") {
        return format!("ENV {k}");
    }
    if let Some(o) = name.strip_prefix("opt:") {
        return o.to_string();
    }
    if let Some(f) = name.strip_prefix("run:") {
        return match f {
            "command" => "the command".into(),
            "user" => "USER".into(),
            "workdir" => "WORKDIR".into(),
            "network" => "--network".into(),
            "mounts" => "--mount".into(),
            "security" => "--security".into(),
            "files" => "the heredoc".into(),
            "platform" => "the platform".into(),
            other => other.into(),
        };
    }
    if let Some(rest) = name.strip_prefix("def:") {
        let field = rest.split_once(':').map_or(rest, |(_, f)| f);
        return match field {
            "chmod" | "chown" | "link" | "parents" | "exclude" | "checksum" => {
                format!("--{field}")
            }
            "from" => "--from".into(),
            "sources" => "the sources".into(),
            "dest" | "into" | "path" => "the destination".into(),
            "unpack_archives" => "ADD/COPY".into(),
            other => other.replace('_', " "),
        };
    }
    name.to_string()
}

/// A file's change, told apart by part: `(content)`, `(mode)`, `(owner)`, `(type)`.
fn file_change(before: &str, now: &str) -> &'static str {
    let b: Vec<&str> = before.split('|').collect();
    let n: Vec<&str> = now.split('|').collect();
    match (b.as_slice(), n.as_slice()) {
        ([bk, ..], [nk, ..]) if bk.get(..1) != nk.get(..1) => "type",
        ([_, _, _, _, bc], [_, _, _, _, nc]) if bc != nc => "content",
        ([_, bm, ..], [_, nm, ..]) if bm != nm => "mode",
        ([_, _, bo, ..], [_, _, no, ..]) if bo != no => "owner",
        _ => "attributes",
    }
}

/// The store's records of earlier builds.
pub struct Records<'a> {
    pub store: &'a Store,
}

impl Records<'_> {
    pub fn get(&self, position: &Digest) -> Option<StepInputs> {
        self.store
            .record_get::<StepInputs>(position)
            .filter(StepInputs::is_current)
    }

    /// Keeps `now` as the latest build of the step at `position` (a failure to record only
    /// loses a future reason, never the build).
    pub fn put(&self, position: &Digest, now: &StepInputs) {
        if let Err(e) = self.store.record_put(position, now) {
            tracing::debug!("cannot record the inputs of a step: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> StepInputs {
        let entries = files
            .iter()
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect();
        layer_inputs(
            &Digest::of(format!("{files:?}").as_bytes()),
            &[],
            &[],
            entries,
        )
    }

    #[test]
    fn a_file_change_is_told_by_part() {
        let a = entry_value("f4:", 0o644, 0, 0, 0, "blake3:aa");
        let b = entry_value("f4:", 0o644, 0, 0, 0, "blake3:bb");
        let c = entry_value("f4:", 0o600, 0, 0, 0, "blake3:aa");
        let d = entry_value("f4:", 0o644, 1, 0, 0, "blake3:aa");
        let before = layer(&[("app/a", &a), ("app/x", &a)]);
        let r = |now: &[(&str, &str)]| first_difference(&before, &layer(now), None);
        assert_eq!(
            r(&[("app/a", &b), ("app/x", &a)]),
            "app/a changed (content)"
        );
        assert_eq!(r(&[("app/a", &a), ("app/x", &c)]), "app/x changed (mode)");
        assert_eq!(r(&[("app/a", &d), ("app/x", &a)]), "app/a changed (owner)");
        assert_eq!(r(&[("app/a", &a)]), "app/x removed");
        assert_eq!(
            r(&[("app/a", &a), ("app/b", &a), ("app/x", &a)]),
            "app/b added"
        );
    }

    #[test]
    fn build_args_and_env_are_named_apart() {
        let run = RunStep {
            command: vec!["sh".into(), "-c".into(), "make".into()],
            network: Default::default(),
            args: vec![("VERSION".into(), "1".into())],
            mounts: Vec::new(),
            insecure: false,
            files: Vec::new(),
            created_by: String::new(),
            location: crate::plan::Location::new("Dockerfile", 1, 1),
        };
        let below = Digest::of(b"below");
        let inputs = |env: &[&str]| {
            let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
            run_inputs(
                &Digest::of(format!("{env:?}").as_bytes()),
                &RunParts {
                    below: &below,
                    run: &run,
                    env: &env,
                    user: "",
                    workdir: "/",
                    platform: "linux/amd64".into(),
                    options: &[],
                    extra_hosts: &[],
                    mount_sources: &[],
                },
            )
        };
        let before = inputs(&["PATH=/bin", "VERSION=1"]);
        assert_eq!(
            first_difference(&before, &inputs(&["PATH=/bin", "VERSION=2"]), None),
            "ARG VERSION changed"
        );
        assert_eq!(
            first_difference(&before, &inputs(&["PATH=/usr/bin", "VERSION=1"]), None),
            "ENV PATH changed"
        );
        // Values are not kept as text.
        let json = serde_json::to_string(&before).unwrap();
        assert!(!json.contains("/bin"), "{json}");
    }
}
