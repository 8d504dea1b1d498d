//! A compose file's services as far as building goes: `image:` and `build:` (short form
//! `build: DIR`, or `context`, `dockerfile`, `dockerfile_inline`, `args`, `target`, `labels`,
//! `tags`, `platforms`, `no_cache`, `pull`, `network`, `cache_from`, `cache_to`, `secrets`
//! (from the top-level `secrets:` with `file:` or `environment:`), `ssh`). Every string value is interpolated
//! first (`.env` beside the file, the environment winning over it), as docker compose does;
//! YAML anchors and `<<` merge keys work as in compose files.

use super::interpolate::{self, TemplateError};
use super::ComposeError;
use crate::exec::run::SecretSource;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// The file names `docker compose` looks for, in its order.
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

#[derive(Debug, Clone)]
pub struct Project {
    /// `name:`, else `COMPOSE_PROJECT_NAME`, else the directory's name (normalised).
    pub name: String,
    /// The compose file, as given.
    pub file: PathBuf,
    pub services: Vec<Service>,
    /// Variables used without a value, keys lade ignores: what docker compose warns about.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub image: Option<String>,
    pub build: Option<BuildSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// Absolute (relative ones against the compose file's directory).
    pub context: PathBuf,
    pub dockerfile: DockerfileSource,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Besides the image name.
    pub tags: Vec<String>,
    pub platforms: Vec<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// RUN's network: `default`, `host` or `none`.
    pub network: Option<String>,
    /// `cache_from` and `cache_to` (`--cache-from`/`--cache-to` values; a bare reference is
    /// `type=registry,ref=REF`, as compose takes it).
    pub cache_from: Vec<crate::cache::CacheSpec>,
    pub cache_to: Vec<crate::cache::CacheSpec>,
    /// `secrets`: the id `RUN --mount=type=secret,id=ID` names → where its value is.
    pub secrets: BTreeMap<String, SecretSource>,
    /// `ssh`: `--ssh` values (`default`, `ID`, `ID=SOCKET`), checked when the service builds.
    pub ssh: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// Absolute (relative ones against the context).
    File(PathBuf),
    Inline(String),
}

impl Service {
    /// The image's name: `image:`, else `<project>-<service>` as docker compose names it.
    pub fn image_name(&self, project: &str) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| format!("{project}-{}", self.name))
    }

    /// Every name the built image gets: the image name, then `build.tags`.
    pub fn tags(&self, project: &str) -> Vec<String> {
        let mut tags = vec![self.image_name(project)];
        if let Some(b) = &self.build {
            for t in &b.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        tags
    }
}

/// Reads and interpolates `file`; `env` is the process environment (it wins over `.env`).
pub fn load(file: &Path, env: &BTreeMap<String, String>) -> Result<Project, ComposeError> {
    let file_name = file.display().to_string();
    let file_err = |message: String| ComposeError::File {
        file: file_name.clone(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| file_err(format!("cannot read: {e}")))?;
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir
        .canonicalize()
        .map_err(|e| file_err(format!("its directory: {e}")))?;
    let mut vars = env.clone();
    let dotenv = dir.join(".env");
    match std::fs::read_to_string(&dotenv) {
        Ok(t) => {
            let parsed =
                interpolate::parse_dotenv(&t, env).map_err(|(line, m)| ComposeError::File {
                    file: format!("{}:{line}", dotenv.display()),
                    message: m,
                })?;
            for (k, v) in parsed {
                vars.entry(k).or_insert(v);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ComposeError::File {
                file: dotenv.display().to_string(),
                message: format!("cannot read: {e}"),
            })
        }
    }
    parse(&file_name, &text, &dir, &vars)
}

/// Parses compose text; `dir` anchors relative paths, `vars` are the interpolation values.
pub fn parse(
    file_name: &str,
    text: &str,
    dir: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Project, ComposeError> {
    let file_err = |message: String| ComposeError::File {
        file: file_name.to_string(),
        message,
    };
    let docs = YamlLoader::load_from_str(text).map_err(|e| ComposeError::File {
        file: format!("{file_name}:{}:{}", e.marker().line(), e.marker().col() + 1),
        message: format!("invalid YAML: {}", e.info()),
    })?;
    let mut root = match docs.into_iter().next() {
        Some(y @ Yaml::Hash(_)) => y,
        Some(Yaml::Null) | None => return Err(file_err("the file is empty".into())),
        Some(_) => return Err(file_err("the top level must be a mapping".into())),
    };
    merge_keys(&mut root, 0);
    let mut warnings = Vec::new();
    let mut unset: Vec<String> = Vec::new();
    let mut path = Vec::new();
    interpolate_tree(&mut root, &mut path, vars, &mut unset)
        .map_err(|(path, e)| located(file_name, &path, e.to_string()))?;
    unset.dedup();
    for name in unset {
        warnings.push(format!(
            "the {name:?} variable is not set; defaulting to a blank string"
        ));
    }

    let name = match &root["name"] {
        Yaml::String(s) if !s.is_empty() => s.clone(),
        Yaml::BadValue | Yaml::Null => vars
            .get("COMPOSE_PROJECT_NAME")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
        _ => return Err(file_err("name: must be a string".into())),
    };
    let name = normalize_project_name(&name)
        .ok_or_else(|| file_err(format!("project name {name:?} has no letter or digit")))?;

    let top_secrets = top_level_secrets(&root["secrets"], dir, &file_err)?;
    let services = match &root["services"] {
        Yaml::Hash(h) => h,
        Yaml::BadValue | Yaml::Null => return Err(file_err("no services".into())),
        _ => return Err(file_err("services: must be a mapping".into())),
    };
    let mut out = Vec::new();
    for (k, v) in services {
        let Yaml::String(svc) = k else {
            return Err(file_err("services: a service name must be a string".into()));
        };
        let err = |key: &str, message: String| ComposeError::Service {
            file: file_name.to_string(),
            service: svc.clone(),
            key: key.to_string(),
            message,
        };
        let (image, build) = match v {
            Yaml::Hash(_) => (&v["image"], &v["build"]),
            Yaml::Null => (&Yaml::BadValue, &Yaml::BadValue),
            _ => return Err(file_err(format!("services.{svc}: must be a mapping"))),
        };
        let image = match image {
            Yaml::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Yaml::BadValue | Yaml::Null => None,
            Yaml::String(_) => return Err(err("image", "is empty".into())),
            _ => return Err(err("image", "must be a string".into())),
        };
        let build = match build {
            Yaml::BadValue | Yaml::Null => None,
            b => Some(build_spec(b, dir, vars, &top_secrets, &err, &mut warnings)?),
        };
        out.push(Service {
            name: svc.clone(),
            image,
            build,
        });
    }
    Ok(Project {
        name,
        file: PathBuf::from(file_name),
        services: out,
        warnings,
    })
}

/// An error at `path` of the document: a service's key, else a top-level one.
fn located(file: &str, path: &[String], message: String) -> ComposeError {
    match path {
        [s, svc, rest @ ..] if s == "services" && !rest.is_empty() => ComposeError::Service {
            file: file.to_string(),
            service: svc.clone(),
            key: rest.join("."),
            message,
        },
        _ => ComposeError::File {
            file: file.to_string(),
            message: format!("{}: {message}", path.join(".")),
        },
    }
}

/// Docker compose's rule: lowercase, only `[a-z0-9_-]`, starting with a letter or digit.
pub fn normalize_project_name(name: &str) -> Option<String> {
    let n: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    let n = n.trim_start_matches(['_', '-']).to_string();
    (!n.is_empty()).then_some(n)
}

/// YAML merge keys (`<<: *anchor`, `<<: [*a, *b]`), as compose files use them with `x-`
/// anchors: keys of the merged mappings the mapping does not set itself. Bounded depth.
fn merge_keys(y: &mut Yaml, depth: usize) {
    if depth > 64 {
        return;
    }
    match y {
        Yaml::Hash(h) => {
            let key = Yaml::String("<<".into());
            if let Some(m) = h.remove(&key) {
                let sources = match m {
                    Yaml::Array(a) => a,
                    other => vec![other],
                };
                for s in sources {
                    if let Yaml::Hash(src) = s {
                        for (k, v) in src {
                            if !h.contains_key(&k) {
                                h.insert(k, v);
                            }
                        }
                    }
                }
            }
            for (_, v) in h.iter_mut() {
                merge_keys(v, depth + 1);
            }
        }
        Yaml::Array(a) => a.iter_mut().for_each(|v| merge_keys(v, depth + 1)),
        _ => {}
    }
}

type TreeError = (Vec<String>, TemplateError);

/// Interpolates every string value (not keys) in place.
fn interpolate_tree(
    y: &mut Yaml,
    path: &mut Vec<String>,
    vars: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<(), TreeError> {
    match y {
        Yaml::String(s) => {
            *s = interpolate::interpolate(s, vars, &mut |n| unset.push(n.to_string()))
                .map_err(|e| (path.clone(), e))?;
        }
        Yaml::Hash(h) => {
            for (k, v) in h.iter_mut() {
                path.push(scalar_text(k).unwrap_or_else(|| "?".into()));
                interpolate_tree(v, path, vars, unset)?;
                path.pop();
            }
        }
        Yaml::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate_tree(v, path, vars, unset)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// A scalar as compose reads it into a string (`8080`, `true`, `1.5`).
fn scalar_text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The top-level `secrets:` by name: where the value is, or why a build cannot use it
/// (`external:` and `name:` secrets live in a swarm, not on this machine).
type TopSecrets = BTreeMap<String, Result<SecretSource, String>>;

fn top_level_secrets(
    y: &Yaml,
    dir: &Path,
    file_err: &dyn Fn(String) -> ComposeError,
) -> Result<TopSecrets, ComposeError> {
    let h = match y {
        Yaml::BadValue | Yaml::Null => return Ok(TopSecrets::new()),
        Yaml::Hash(h) => h,
        _ => return Err(file_err("secrets: must be a mapping".into())),
    };
    let mut out = TopSecrets::new();
    for (k, v) in h {
        let name = scalar_text(k)
            .ok_or_else(|| file_err("secrets: a secret's name must be a string".into()))?;
        let source = match (&v["file"], &v["environment"]) {
            (Yaml::String(f), Yaml::BadValue) => Ok(SecretSource::File(dir.join(f))),
            (Yaml::BadValue, Yaml::String(e)) => Ok(SecretSource::Env(e.clone())),
            (Yaml::BadValue, Yaml::BadValue) if matches!(v, Yaml::Hash(_)) => Err(format!(
                "secret {name:?} has neither file: nor environment:, which is all a build can read"
            )),
            _ => {
                return Err(file_err(format!(
                    "secrets.{name}: give one of file: PATH or environment: VAR"
                )))
            }
        };
        out.insert(name, source);
    }
    Ok(out)
}

/// `build.secrets`: `- NAME`, or `- source: NAME` with `target: ID` (the id the Dockerfile
/// mounts; NAME when not given), each NAME one of the top-level `secrets:`.
fn build_secrets(
    y: &Yaml,
    top: &TopSecrets,
    err: &dyn Fn(&str, String) -> ComposeError,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, SecretSource>, ComposeError> {
    let key = "build.secrets";
    let items = match y {
        Yaml::BadValue | Yaml::Null => return Ok(BTreeMap::new()),
        Yaml::Array(a) => a,
        _ => return Err(err(key, "must be a list".into())),
    };
    let mut out = BTreeMap::new();
    for item in items {
        let (name, target) = match item {
            Yaml::Hash(h) => {
                for (k, _) in h {
                    match scalar_text(k).as_deref() {
                        Some("source" | "target") => {}
                        Some(k @ ("uid" | "gid" | "mode")) => warnings.push(
                            err(
                                key,
                                format!("{k} ignored: the Dockerfile's RUN --mount sets it"),
                            )
                            .to_string(),
                        ),
                        k => {
                            return Err(err(
                                key,
                                format!("unknown key {:?} of a secret", k.unwrap_or("?")),
                            ))
                        }
                    }
                }
                let name = scalar_text(&item["source"])
                    .ok_or_else(|| err(key, "an entry needs source: NAME".into()))?;
                let target = match &item["target"] {
                    Yaml::BadValue | Yaml::Null => None,
                    t => Some(
                        scalar_text(t)
                            .ok_or_else(|| err(key, "target: must be a string".into()))?,
                    ),
                };
                (name, target)
            }
            v => (
                scalar_text(v)
                    .ok_or_else(|| err(key, "entries must be names or mappings".into()))?,
                None,
            ),
        };
        let source = match top.get(&name) {
            Some(Ok(s)) => s.clone(),
            Some(Err(m)) => return Err(err(key, m.clone())),
            None => return Err(err(key, format!("unknown secret {name:?}"))),
        };
        let id = target.unwrap_or(name);
        if id.is_empty() {
            return Err(err(key, "a secret's target is empty".into()));
        }
        out.insert(id, source);
    }
    Ok(out)
}

/// `build.ssh`: a list of `default`, `ID` or `ID=PATH`, or a mapping `ID: PATH`; a relative
/// PATH is against the compose file's directory.
fn build_ssh(
    y: &Yaml,
    dir: &Path,
    err: &dyn Fn(&str, String) -> ComposeError,
) -> Result<Vec<String>, ComposeError> {
    let key = "build.ssh";
    let entry = |id: &str, path: Option<&str>| -> Result<String, ComposeError> {
        if id.is_empty() {
            return Err(err(key, "an entry's id is empty".into()));
        }
        Ok(match path {
            Some(p) => format!("{id}={}", dir.join(p).display()),
            None => id.to_string(),
        })
    };
    match y {
        Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
        Yaml::Array(a) => a
            .iter()
            .map(|v| {
                let s = scalar_text(v)
                    .ok_or_else(|| err(key, "entries must be default or ID=PATH".into()))?;
                match s.split_once('=') {
                    Some((id, p)) => entry(id, Some(p)),
                    None => entry(&s, None),
                }
            })
            .collect(),
        Yaml::Hash(h) => {
            h.iter()
                .map(|(k, v)| {
                    let id =
                        scalar_text(k).ok_or_else(|| err(key, "keys must be strings".into()))?;
                    match v {
                        Yaml::Null => entry(&id, None),
                        v => entry(
                            &id,
                            Some(&scalar_text(v).ok_or_else(|| {
                                err(&format!("{key}.{id}"), "must be a path".into())
                            })?),
                        ),
                    }
                })
                .collect()
        }
        _ => Err(err(key, "must be a list or a mapping".into())),
    }
}

fn build_spec(
    b: &Yaml,
    dir: &Path,
    vars: &BTreeMap<String, String>,
    top_secrets: &TopSecrets,
    err: &dyn Fn(&str, String) -> ComposeError,
    warnings: &mut Vec<String>,
) -> Result<BuildSpec, ComposeError> {
    let context_of = |s: &str, key: &str| -> Result<PathBuf, ComposeError> {
        if s.contains("://") || s.starts_with("git@") {
            return Err(err(
                key,
                format!("{s:?}: remote build contexts are not supported; clone it and give the directory"),
            ));
        }
        Ok(dir.join(s))
    };
    let h = match b {
        Yaml::String(s) => {
            let context = context_of(s, "build")?;
            return Ok(BuildSpec {
                dockerfile: DockerfileSource::File(context.join("Dockerfile")),
                context,
                args: BTreeMap::new(),
                target: None,
                labels: BTreeMap::new(),
                tags: Vec::new(),
                platforms: Vec::new(),
                no_cache: false,
                pull: false,
                network: None,
                cache_from: Vec::new(),
                cache_to: Vec::new(),
                secrets: BTreeMap::new(),
                ssh: Vec::new(),
            });
        }
        Yaml::Hash(h) => h,
        _ => return Err(err("build", "must be a directory or a mapping".into())),
    };
    let string = |key: &str| -> Result<Option<String>, ComposeError> {
        match &b[key] {
            Yaml::BadValue | Yaml::Null => Ok(None),
            v => scalar_text(v)
                .map(Some)
                .ok_or_else(|| err(&format!("build.{key}"), "must be a string".into())),
        }
    };
    let boolean = |key: &str| -> Result<bool, ComposeError> {
        match &b[key] {
            Yaml::BadValue | Yaml::Null => Ok(false),
            Yaml::Boolean(v) => Ok(*v),
            _ => Err(err(&format!("build.{key}"), "must be true or false".into())),
        }
    };
    let list = |key: &str| -> Result<Vec<String>, ComposeError> {
        match &b[key] {
            Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
            Yaml::Array(a) => a
                .iter()
                .map(|v| {
                    scalar_text(v).ok_or_else(|| {
                        err(&format!("build.{key}"), "must be a list of strings".into())
                    })
                })
                .collect(),
            _ => Err(err(&format!("build.{key}"), "must be a list".into())),
        }
    };
    for (k, _) in h {
        let Some(k) = scalar_text(k) else {
            return Err(err("build", "keys must be strings".into()));
        };
        match k.as_str() {
            "context" | "dockerfile" | "dockerfile_inline" | "args" | "target" | "labels"
            | "tags" | "platforms" | "no_cache" | "pull" | "network" | "cache_from"
            | "cache_to" | "secrets" | "ssh" => {}
            "shm_size" | "isolation" | "ulimits" => {
                warnings.push(
                    err(
                        &format!("build.{k}"),
                        "ignored: lade keeps its own layer cache and has no such setting".into(),
                    )
                    .to_string(),
                );
            }
            "additional_contexts" | "extra_hosts" | "privileged" | "entitlements" => {
                return Err(err(
                    &format!("build.{k}"),
                    "not supported by lade yet; the build would differ from docker compose's"
                        .into(),
                ))
            }
            x if x.starts_with("x-") => {}
            other => {
                return Err(err(
                    &format!("build.{other}"),
                    "unknown key of the Compose Specification's build section".into(),
                ))
            }
        }
    }
    let context = context_of(
        &string("context")?.unwrap_or_else(|| ".".into()),
        "build.context",
    )?;
    let dockerfile = match (string("dockerfile")?, string("dockerfile_inline")?) {
        (Some(_), Some(_)) => {
            return Err(err(
                "build.dockerfile_inline",
                "dockerfile and dockerfile_inline cannot both be set".into(),
            ))
        }
        (Some(f), None) => DockerfileSource::File(context.join(f)),
        (None, Some(text)) => DockerfileSource::Inline(text),
        (None, None) => DockerfileSource::File(context.join("Dockerfile")),
    };
    let network = string("network")?;
    if let Some(n) = &network {
        if !matches!(n.as_str(), "default" | "host" | "none") {
            return Err(err(
                "build.network",
                format!("{n:?}: lade's RUN steps know default, host and none"),
            ));
        }
    }
    let caches = |key: &str, export: bool| -> Result<Vec<crate::cache::CacheSpec>, ComposeError> {
        list(key)?
            .iter()
            .map(|v| {
                let v = if v.contains('=') {
                    v.clone()
                } else {
                    format!("type=registry,ref={v}")
                };
                crate::cache::CacheSpec::parse(&v, export)
                    .map_err(|e| err(&format!("build.{key}"), e.to_string()))
            })
            .collect()
    };
    Ok(BuildSpec {
        context,
        dockerfile,
        args: key_values(&b["args"], "build.args", err, Some(vars))?,
        target: string("target")?,
        labels: key_values(&b["labels"], "build.labels", err, None)?,
        tags: list("tags")?,
        platforms: list("platforms")?,
        no_cache: boolean("no_cache")?,
        pull: boolean("pull")?,
        network,
        cache_from: caches("cache_from", false)?,
        cache_to: caches("cache_to", true)?,
        secrets: build_secrets(&b["secrets"], top_secrets, err, warnings)?,
        ssh: build_ssh(&b["ssh"], dir, err)?,
    })
}

/// A mapping or a `KEY=VALUE` list. A key without a value (`- KEY`, `KEY:`) takes its value
/// from `resolve` (args: the environment, then `.env`, as docker compose resolves them) and
/// is left out when that has none (the Dockerfile's default applies); without `resolve`
/// (labels) it is an empty value.
fn key_values(
    y: &Yaml,
    key: &str,
    err: &dyn Fn(&str, String) -> ComposeError,
    resolve: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ComposeError> {
    let mut out = BTreeMap::new();
    let valueless = |out: &mut BTreeMap<String, String>, k: String| match resolve {
        Some(vars) => {
            if let Some(v) = vars.get(&k) {
                out.insert(k, v.clone());
            }
        }
        None => {
            out.insert(k, String::new());
        }
    };
    match y {
        Yaml::BadValue | Yaml::Null => {}
        Yaml::Hash(h) => {
            for (k, v) in h {
                let k = scalar_text(k).ok_or_else(|| err(key, "keys must be strings".into()))?;
                match v {
                    Yaml::Null => valueless(&mut out, k),
                    v => {
                        let v = scalar_text(v)
                            .ok_or_else(|| err(&format!("{key}.{k}"), "must be a string".into()))?;
                        out.insert(k, v);
                    }
                }
            }
        }
        Yaml::Array(a) => {
            for v in a {
                let s = scalar_text(v)
                    .ok_or_else(|| err(key, "entries must be KEY=VALUE strings".into()))?;
                match s.split_once('=') {
                    Some((k, v)) => {
                        out.insert(k.to_string(), v.to_string());
                    }
                    None => valueless(&mut out, s),
                }
            }
        }
        _ => return Err(err(key, "must be a mapping or a list".into())),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_ok(text: &str, v: &[(&str, &str)]) -> Project {
        parse("compose.yaml", text, Path::new("/proj/shop"), &vars(v)).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse("compose.yaml", text, Path::new("/proj/shop"), &vars(&[]))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn flask_and_redis_shape() {
        let p = parse_ok(
            "services:\n  web:\n    build: .\n    image: ${REG:-localhost:5000}/web:${TAG}\n    ports:\n      - \"8000:5000\"\n  redis:\n    image: \"redis:alpine\"\n",
            &[("TAG", "7")],
        );
        assert_eq!(p.name, "shop");
        assert_eq!(p.services.len(), 2);
        let web = &p.services[0];
        assert_eq!(web.image.as_deref(), Some("localhost:5000/web:7"));
        let b = web.build.as_ref().unwrap();
        assert_eq!(b.context, Path::new("/proj/shop/."));
        assert_eq!(
            b.dockerfile,
            DockerfileSource::File("/proj/shop/./Dockerfile".into())
        );
        assert_eq!(p.services[1].build, None);
        assert_eq!(p.services[1].image.as_deref(), Some("redis:alpine"));
    }

    #[test]
    fn long_form_build() {
        let p = parse_ok(
            r#"
name: My_Shop
x-common: &common
  args: {FROM_ANCHOR: "1"}
services:
  api:
    build:
      <<: *common
      context: ./api
      dockerfile: docker/Dockerfile.prod
      target: runtime
      labels: ["team=shop", "tier"]
      tags: ["localhost:5000/api:${TAG:?TAG is required}"]
      platforms: [linux/amd64]
      no_cache: true
      network: none
  worker:
    build:
      context: worker
      dockerfile_inline: |
        FROM scratch
        COPY job $$HOME/
      args:
        - PORT=8080
        - FROM_ENV
"#,
            &[("TAG", "2"), ("FROM_ENV", "e")],
        );
        assert_eq!(p.name, "my_shop");
        let api = p.services[0].build.as_ref().unwrap();
        assert_eq!(api.context, Path::new("/proj/shop/./api"));
        assert_eq!(
            api.dockerfile,
            DockerfileSource::File("/proj/shop/./api/docker/Dockerfile.prod".into())
        );
        assert_eq!(api.target.as_deref(), Some("runtime"));
        assert_eq!(api.args, vars(&[("FROM_ANCHOR", "1")]));
        assert_eq!(api.labels, vars(&[("team", "shop"), ("tier", "")]));
        assert_eq!(api.tags, vec!["localhost:5000/api:2"]);
        assert_eq!(api.platforms, vec!["linux/amd64"]);
        assert!(api.no_cache && !api.pull);
        assert_eq!(api.network.as_deref(), Some("none"));
        assert_eq!(
            p.services[0].tags("my_shop"),
            vec!["my_shop-api", "localhost:5000/api:2"]
        );
        let worker = p.services[1].build.as_ref().unwrap();
        assert_eq!(
            worker.dockerfile,
            DockerfileSource::Inline("FROM scratch\nCOPY job $HOME/\n".into())
        );
        assert_eq!(worker.args, vars(&[("PORT", "8080"), ("FROM_ENV", "e")]));
    }

    #[test]
    fn cache_from_and_cache_to_are_build_cache_specs() {
        let p = parse_ok(
            "services:\n  api:\n    build:\n      context: .\n      cache_from:\n        - localhost:5000/api:cache\n        - type=local,src=/c\n      cache_to:\n        - type=registry,ref=localhost:5000/api:cache,mode=max\n",
            &[],
        );
        let b = p.services[0].build.as_ref().unwrap();
        assert_eq!(b.cache_from.len(), 2);
        assert_eq!(
            b.cache_from[0].place.to_string(),
            b.cache_to[0].place.to_string()
        );
        assert_eq!(
            b.cache_from[1].place,
            crate::cache::Place::Local("/c".into())
        );
        assert_eq!(b.cache_to[0].mode, crate::cache::Mode::Max);
        let e = parse_err(
            "services:\n  api:\n    build:\n      context: .\n      cache_to:\n        - type=local,src=x\n",
        );
        assert!(
            e.starts_with("compose.yaml: services.api.build.cache_to: "),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_file_service_and_key() {
        let e = parse_err("services:\n  api:\n    build:\n      context: .\n      dockerfiel: x\n");
        assert_eq!(
            e,
            "compose.yaml: services.api.build.dockerfiel: unknown key of the Compose \
             Specification's build section"
        );
        let e = parse_err("services:\n  api:\n    image: \"x:${TAG:?set TAG}\"\n");
        assert_eq!(
            e,
            "compose.yaml: services.api.image: required variable TAG is missing a value: set TAG"
        );
        let e = parse_err("services:\n  api:\n    build:\n      privileged: true\n");
        assert!(
            e.starts_with("compose.yaml: services.api.build.privileged: not supported"),
            "{e}"
        );
        let e = parse_err("services:\n  api:\n    build:\n      args: 3\n");
        assert_eq!(
            e,
            "compose.yaml: services.api.build.args: must be a mapping or a list"
        );
        let e = parse_err("services:\n  api: [\n");
        assert!(e.starts_with("compose.yaml:3:"), "{e}");
        let e = parse_err(
            "services:\n  api:\n    build:\n      dockerfile: a\n      dockerfile_inline: b\n",
        );
        assert!(e.contains("services.api.build.dockerfile_inline"), "{e}");
        let e = parse_err("services:\n  api:\n    build: https://github.com/x/y.git\n");
        assert!(e.contains("services.api.build: \"https"), "{e}");
    }

    #[test]
    fn build_secrets_short_and_long_syntax_and_ssh() {
        let p = parse_ok(
            r#"
secrets:
  npm_token:
    file: ./secrets/npm
  gh:
    environment: GH_TOKEN
  swarm:
    external: true
services:
  api:
    build:
      context: .
      secrets:
        - npm_token
        - source: gh
          target: github
          mode: 0400
      ssh:
        - default
        - work=/run/agent.sock
        - rel=${SOCK}
  worker:
    build:
      context: .
      ssh:
        default:
        deploy: /tmp/deploy.sock
"#,
            &[("SOCK", "agent.sock")],
        );
        let api = p.services[0].build.as_ref().unwrap();
        assert_eq!(
            api.secrets.iter().collect::<Vec<_>>(),
            vec![
                (&"github".to_string(), &SecretSource::Env("GH_TOKEN".into())),
                (
                    &"npm_token".to_string(),
                    &SecretSource::File("/proj/shop/./secrets/npm".into())
                ),
            ]
        );
        assert_eq!(
            api.ssh,
            vec![
                "default",
                "work=/run/agent.sock",
                "rel=/proj/shop/agent.sock"
            ]
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("services.api.build.secrets: mode ignored")),
            "{:?}",
            p.warnings
        );
        let worker = p.services[1].build.as_ref().unwrap();
        assert!(worker.secrets.is_empty());
        assert_eq!(worker.ssh, vec!["default", "deploy=/tmp/deploy.sock"]);
    }

    #[test]
    fn build_secret_errors_name_the_file_service_and_key() {
        let e = parse_err("services:\n  api:\n    build:\n      secrets: [x]\n");
        assert_eq!(
            e,
            "compose.yaml: services.api.build.secrets: unknown secret \"x\""
        );
        let e = parse_err(
            "secrets:\n  x:\n    environment: X\nservices:\n  api:\n    build:\n      secrets:\n        - target: y\n",
        );
        assert_eq!(
            e,
            "compose.yaml: services.api.build.secrets: an entry needs source: NAME"
        );
        let e = parse_err(
            "secrets:\n  x:\n    external: true\nservices:\n  api:\n    build:\n      secrets: [x]\n",
        );
        assert!(
            e.starts_with("compose.yaml: services.api.build.secrets: secret \"x\" has neither"),
            "{e}"
        );
        let e = parse_err("secrets:\n  x: 3\nservices:\n  api:\n    build: .\n");
        assert_eq!(
            e,
            "compose.yaml: secrets.x: give one of file: PATH or environment: VAR"
        );
        let e = parse_err("services:\n  api:\n    build:\n      ssh: default\n");
        assert_eq!(
            e,
            "compose.yaml: services.api.build.ssh: must be a list or a mapping"
        );
    }

    #[test]
    fn unset_variables_warn_and_project_name_falls_back() {
        let p = parse_ok(
            "services:\n  a:\n    image: x${NOPE}\n",
            &[("COMPOSE_PROJECT_NAME", "Other")],
        );
        assert_eq!(p.name, "other");
        assert_eq!(p.services[0].image.as_deref(), Some("x"));
        assert_eq!(p.services[0].image_name("other"), "x");
        assert!(p.warnings[0].contains("\"NOPE\" variable is not set"));
        assert_eq!(normalize_project_name("-My App.2"), Some("myapp2".into()));
    }

    #[test]
    fn dotenv_beside_the_file_and_environment_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "TAG=from-dotenv\nREG=dotenv-reg\n").unwrap();
        let f = dir.path().join("compose.yaml");
        std::fs::write(
            &f,
            "services:\n  a:\n    image: ${REG}/a:${TAG}\n    build: .\n",
        )
        .unwrap();
        let p = load(&f, &vars(&[("TAG", "from-env")])).unwrap();
        assert_eq!(
            p.services[0].image.as_deref(),
            Some("dotenv-reg/a:from-env")
        );
    }
}
