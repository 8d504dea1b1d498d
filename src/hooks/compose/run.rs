//! Building a project's services: one `lade::build` per service with a `build:` section, the
//! services of a wave at once (rayon), each later wave after the images it reads. A service's
//! image that another service reads goes to an OCI layout in a scratch directory, and the
//! reader's request takes it from there instead of a registry.

use super::order;
use super::{DockerfileSource, Project, Service};
use crate::build::{local_image_key, BuildError, BuildRequest, Description};
use crate::digest::Digest;
use crate::exec::run::{Secrets, SshAgents, StepRunner};
use crate::exec::Observer;
use crate::frontend::dockerfile::lower::LowerOptions;
use crate::image::Platform;
use crate::layer::LayerDigests;
use crate::output::Target;
use crate::plan::{Base, RunNetwork};
use crate::registry::PushReport;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    /// A service's own setting is wrong (a platform name).
    #[error("{file}: services.{service}.{key}: {message}")]
    Setting {
        file: String,
        service: String,
        key: String,
        message: String,
    },
    #[error("{file}: services.{service}: build failed")]
    Build {
        file: String,
        service: String,
        #[source]
        source: Box<BuildError>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// What every service's build shares (store, exec options, registry access); `description`,
/// `platforms`, `outputs`, `tags` and `local_images` are set per service.
pub struct Shared {
    pub template: Box<dyn Fn() -> BuildRequest + Sync>,
    /// The runner for a service with `build.secrets` or `build.ssh`: the template's, with
    /// those mounts.
    pub runner_with_mounts: Box<dyn Fn(Secrets, SshAgents) -> Arc<dyn StepRunner> + Sync>,
    pub push: bool,
}

/// One built service.
#[derive(Debug)]
pub struct Built {
    pub service: String,
    pub tags: Vec<String>,
    pub digest: Digest,
    pub pushed: Vec<PushReport>,
}

/// The services to build: those named (all with a `build:` section when none are), plus the
/// built services whose images they read. Returns their indices in `project.services` and,
/// per index, the services it waits for.
pub fn selection(
    project: &Project,
    named: &[String],
) -> Result<BTreeMap<usize, BTreeSet<usize>>, RunError> {
    let built: Vec<usize> = (0..project.services.len())
        .filter(|&i| project.services[i].build.is_some())
        .collect();
    // Which built service an image name stands for.
    let mut by_image: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &built {
        for t in project.services[i].tags(&project.name) {
            if let Some(k) = local_image_key(&t) {
                by_image.insert(k, i);
            }
        }
    }
    let deps_of = |i: usize| -> BTreeSet<usize> {
        let s = &project.services[i];
        let b = s
            .build
            .as_ref()
            .expect("built services have a build section");
        let text = match &b.dockerfile {
            DockerfileSource::Inline(t) => t.clone(),
            DockerfileSource::File(f) => std::fs::read_to_string(f).unwrap_or_default(),
        };
        order::images_read(&text, &b.args)
            .iter()
            .filter_map(|r| by_image.get(&local_image_key(r)?).copied())
            .filter(|&j| j != i)
            .collect()
    };
    let mut todo: Vec<usize> = if named.is_empty() {
        built.clone()
    } else {
        let mut v = Vec::new();
        for n in named {
            match project.services.iter().position(|s| &s.name == n) {
                Some(i) if project.services[i].build.is_some() => v.push(i),
                // docker compose skips a named service without a build section.
                Some(_) => {}
                None => {
                    return Err(RunError::Usage(format!(
                        "{}: no such service: {n}",
                        project.file.display()
                    )))
                }
            }
        }
        v
    };
    let mut out = BTreeMap::new();
    while let Some(i) = todo.pop() {
        if out.contains_key(&i) {
            continue;
        }
        let d = deps_of(i);
        todo.extend(d.iter().copied());
        out.insert(i, d);
    }
    Ok(out)
}

/// Builds the selected services, wave by wave; `observer` sees each service's progress with
/// the service's name in front, and `service NAME: building` / `built` lines.
pub fn build(
    project: &Project,
    named: &[String],
    shared: &Shared,
    observer: &dyn Observer,
) -> Result<Vec<Built>, RunError> {
    let sel = selection(project, named)?;
    let index: Vec<usize> = sel.keys().copied().collect();
    let pos = |i: usize| index.iter().position(|&x| x == i).expect("selected");
    let deps: Vec<BTreeSet<usize>> = index
        .iter()
        .map(|i| sel[i].iter().map(|&d| pos(d)).collect())
        .collect();
    let waves = order::waves(&deps).map_err(|cycle| {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&p| project.services[index[p]].name.as_str())
            .collect();
        RunError::Usage(format!(
            "{}: services {} build on each other's images in a cycle",
            project.file.display(),
            names.join(", ")
        ))
    })?;
    let read_by_others: BTreeSet<usize> = deps.iter().flatten().copied().collect();
    // Layouts of images other services read; removed with everything in it when done (or on
    // SIGINT); named so that a killed run's leftovers are swept like ADD's scratch.
    let scratch = crate::store::scratch_dir_in(
        &std::env::temp_dir(),
        &format!("{}compose-", crate::store::ADD_DIR_PREFIX),
    )
    .map_err(|source| RunError::Io {
        what: "making a scratch directory".into(),
        source,
    })?;
    let layout_of = |p: usize| scratch.path().join(format!("image-{p}"));

    let mut results: Vec<Option<Built>> = (0..index.len()).map(|_| None).collect();
    for wave in waves {
        for &p in &wave {
            observer.note(&format!(
                "service {}: building",
                project.services[index[p]].name
            ));
        }
        let out: Mutex<Vec<(usize, Result<Built, RunError>)>> = Mutex::new(Vec::new());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(wave.len())
            .build()
            .map_err(|e| RunError::Io {
                what: "starting worker threads".into(),
                source: std::io::Error::other(e),
            })?;
        pool.scope(|s| {
            for &p in &wave {
                let out = &out;
                let deps = &deps[p];
                let layout_of = &layout_of;
                let index = &index;
                let read_by_others = &read_by_others;
                let scratch = scratch.path();
                s.spawn(move |_| {
                    let svc = &project.services[index[p]];
                    let local = local_images(project, deps, index, layout_of);
                    let layout = read_by_others.contains(&p).then(|| layout_of(p));
                    let r = build_one(project, svc, shared, local, layout, scratch, observer);
                    out.lock().expect("results lock").push((p, r));
                });
            }
        });
        let mut failed = None;
        let mut outcomes = out.into_inner().expect("results lock");
        outcomes.sort_by_key(|(p, _)| *p);
        for (p, r) in outcomes {
            let name = &project.services[index[p]].name;
            match r {
                Ok(b) => {
                    observer.note(&format!("service {name}: built {}", b.digest));
                    results[p] = Some(b);
                }
                Err(e) => {
                    observer.note(&format!("service {name}: failed"));
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

/// For a service's dependencies: each of their names → the layout its image went to.
fn local_images(
    project: &Project,
    deps: &BTreeSet<usize>,
    index: &[usize],
    layout_of: &dyn Fn(usize) -> PathBuf,
) -> BTreeMap<String, Base> {
    let mut m = BTreeMap::new();
    for &d in deps {
        for t in project.services[index[d]].tags(&project.name) {
            let (Some(key), Ok((_, tag))) = (local_image_key(&t), crate::output::split_tag(&t))
            else {
                continue;
            };
            m.insert(
                key,
                Base::OciLayout {
                    dir: layout_of(d),
                    tag: Some(tag.to_string()),
                },
            );
        }
    }
    m
}

fn build_one(
    project: &Project,
    svc: &Service,
    shared: &Shared,
    local_images: BTreeMap<String, Base>,
    layout: Option<PathBuf>,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Built, RunError> {
    let file = project.file.display().to_string();
    let b = svc
        .build
        .as_ref()
        .expect("built services have a build section");
    let setting = |key: &str, message: String| RunError::Setting {
        file: file.clone(),
        service: svc.name.clone(),
        key: key.to_string(),
        message,
    };
    let dockerfile = match &b.dockerfile {
        DockerfileSource::File(f) => f.clone(),
        DockerfileSource::Inline(text) => {
            let f = scratch.join(format!("{}.dockerfile_inline", svc.name));
            std::fs::write(&f, text).map_err(|source| RunError::Io {
                what: format!("writing {}", f.display()),
                source,
            })?;
            f
        }
    };
    let mut platforms = Vec::new();
    for p in &b.platforms {
        platforms.push(
            p.parse::<Platform>()
                .map_err(|e| setting("build.platforms", e.to_string()))?,
        );
    }
    let mut req = (shared.template)();
    req.description = Description::Dockerfile {
        file: Some(dockerfile),
        context: b.context.clone(),
        opts: Box::new(LowerOptions {
            build_args: b.args.clone(),
            target: b.target.clone(),
            platform: platforms.first().cloned(),
            labels: b.labels.clone(),
            context_dir: b.context.clone(),
            base_configs: None,
            named_contexts: Default::default(),
            network: match b.network.as_deref() {
                Some("host") => RunNetwork::Host,
                Some("none") => RunNetwork::None,
                _ => RunNetwork::Default,
            },
        }),
    };
    req.platforms = platforms;
    req.exec.no_cache |= b.no_cache;
    req.cache_from = b.cache_from.clone();
    req.cache_to = b.cache_to.clone();
    if b.pull {
        req.exec.pull = crate::exec::PullPolicy::Always;
    }
    if !b.secrets.is_empty() || !b.ssh.is_empty() {
        let mut secrets = Secrets::default();
        for (id, source) in &b.secrets {
            secrets.insert(id.clone(), source.clone());
        }
        let mut agents = SshAgents::default();
        for s in &b.ssh {
            agents.add(s).map_err(|m| setting("build.ssh", m))?;
        }
        req.attest.secret_ids = secrets.ids();
        req.exec.runner = Some((shared.runner_with_mounts)(secrets, agents));
    }
    req.tags = svc.tags(&project.name);
    req.local_images = local_images;
    req.outputs = Vec::new();
    if let Some(dir) = layout {
        req.outputs.push(Target::OciLayout { dir });
    }
    if shared.push {
        req.outputs.push(Target::Registry);
    }
    let prefixed = Prefixed {
        service: &svc.name,
        inner: observer,
    };
    let result = crate::build::build(&req, &prefixed).map_err(|source| RunError::Build {
        file: file.clone(),
        service: svc.name.clone(),
        source: Box::new(source),
    })?;
    Ok(Built {
        service: svc.name.clone(),
        tags: result.tags,
        digest: result.artifact.top().digest.clone(),
        pushed: result.pushed,
    })
}

/// Progress of one service: its name in front of every step and line.
struct Prefixed<'a> {
    service: &'a str,
    inner: &'a dyn Observer,
}

impl Observer for Prefixed<'_> {
    fn step_started(&self, name: &str) {
        self.inner
            .step_started(&format!("{}: {name}", self.service))
    }
    fn step_finished(&self, name: &str, layer: &LayerDigests, cached: bool) {
        self.inner
            .step_finished(&format!("{}: {name}", self.service), layer, cached)
    }
    fn note(&self, line: &str) {
        self.inner.note(&format!("{}: {line}", self.service))
    }
    fn step_output(&self, name: &str, chunk: &[u8]) {
        self.inner
            .step_output(&format!("{}: {name}", self.service), chunk)
    }
}
