//! `lade build` and `lade plan`: arguments → one validated `BuildRequest` → frontend → plan
//! → exec → outputs.

use super::args::ProgressMode;
use super::args::{
    BuildArgs, CompressionArg, InputArgs, LoadArg, LockArgs, NetworkArg, PlanArgs, PullArg,
    RegistryArgs, SnapshotterArg,
};
use super::progress::Progress;
use super::UsageError;
use crate::build::{BuildError, BuildRequest, Description};
use crate::exec::run::{ExtraHost, RunSettings, SandboxRunner, SnapshotterChoice};
use crate::exec::{self, ExecOptions};
use crate::frontend::dockerfile::lower::NamedContext;
use crate::image::Platform;
use crate::layer::Compression;
use crate::lock::LockMode;
use crate::output::{self, Target};
use crate::plan::Base;
use crate::registry::ClientOptions;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) fn source_date_epoch() -> Result<u64, UsageError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            UsageError(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
        _ => Ok(0),
    }
}

fn key_values(
    flag: &str,
    items: &[String],
    from_env: bool,
) -> Result<std::collections::BTreeMap<String, String>, UsageError> {
    let mut m = std::collections::BTreeMap::new();
    for item in items {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None if from_env => match std::env::var(item) {
                Ok(v) => (item.clone(), v),
                Err(_) => continue,
            },
            None => return Err(UsageError(format!("{flag} {item:?}: expected KEY=VALUE"))),
        };
        if k.is_empty() {
            return Err(UsageError(format!("{flag} {item:?}: the name is empty")));
        }
        m.insert(k, v);
    }
    Ok(m)
}

/// `--secret` and `--ssh`, checked (a missing file is found when a step mounts it).
fn secrets_and_agents(
    a: &InputArgs,
) -> Result<(exec::run::Secrets, exec::run::SshAgents), UsageError> {
    let mut secrets = exec::run::Secrets::default();
    for s in &a.secrets {
        secrets.add(s).map_err(UsageError)?;
    }
    let mut agents = exec::run::SshAgents::default();
    for s in &a.ssh {
        agents.add(s).map_err(UsageError)?;
    }
    Ok((secrets, agents))
}

/// The request `lade plan` and `lade build` share: what to build, for which platforms, with
/// which store and registry settings; no outputs.
pub(super) fn input_request(
    a: &InputArgs,
    maven: Option<&crate::hooks::maven::MavenImage>,
) -> Result<BuildRequest, UsageError> {
    // `--platform a,b`: one image per platform, under an index.
    let mut platforms: Vec<Platform> = Vec::new();
    for p in a.platform.iter().flat_map(|p| p.split(',')) {
        let p: Platform = p
            .trim()
            .parse()
            .map_err(|e: crate::image::PlatformParseError| UsageError(e.to_string()))?;
        if platforms.contains(&p) {
            return Err(UsageError(format!("--platform names {p} twice")));
        }
        platforms.push(p);
    }
    let platform = platforms.first().cloned();
    let description = match (&a.spec, &a.context) {
        _ if maven.is_some() => {
            let m = maven.expect("checked");
            Description::Plan {
                plan: Box::new(m.plan.clone()),
                context: m.context.clone(),
                name: m.module_dir.join("pom.xml").display().to_string(),
            }
        }
        (Some(spec), _) => Description::Spec(spec.clone()),
        (None, Some(context)) => Description::Dockerfile {
            file: a.file.clone(),
            context: context.clone(),
            opts: Box::new(crate::frontend::dockerfile::lower::LowerOptions {
                build_args: key_values("--build-arg", &a.build_args, true)?,
                target: a.target.clone(),
                platform: platform.clone(),
                labels: key_values("--label", &a.labels, false)?,
                context_dir: context.clone(),
                base_configs: None,
                named_contexts: named_contexts(&a.build_contexts)?,
                network: match a.network {
                    NetworkArg::Default => crate::plan::RunNetwork::Default,
                    NetworkArg::Host => crate::plan::RunNetwork::Host,
                    NetworkArg::None => crate::plan::RunNetwork::None,
                },
            }),
        },
        (None, None) => return Err(UsageError("nothing to build: give a context directory (`lade build [-f Dockerfile] DIR`) or `--spec lade.toml`".into())),
    };
    let compression = match a.compression {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Zstd => Compression::Zstd,
        CompressionArg::None => Compression::None,
    };
    let store_root = a.store.root();
    let (secrets, agents) = secrets_and_agents(a)?;
    let secret_ids = secrets.ids();
    let exec = ExecOptions {
        compression,
        runner: Some(Arc::new(
            SandboxRunner::new(
                a.runtime.clone(),
                match a.snapshotter {
                    SnapshotterArg::Auto => SnapshotterChoice::Auto,
                    SnapshotterArg::Overlay => SnapshotterChoice::Overlay,
                    SnapshotterArg::Copy => SnapshotterChoice::Copy,
                },
            )
            .with_mounts(secrets, agents),
        )),
        run_settings: RunSettings {
            extra_hosts: a
                .add_hosts
                .iter()
                .map(|h| ExtraHost::parse(h).map_err(UsageError))
                .collect::<Result<_, _>>()?,
            allow_insecure: false,
        },
        ..ExecOptions::new(source_date_epoch()?)
    };
    Ok(BuildRequest {
        platforms,
        attest: crate::attest::AttestOptions {
            secret_ids,
            ..Default::default()
        },
        ..BuildRequest::new(
            description,
            store_root,
            exec,
            client_options(&a.registry),
            a.registry.push_jobs.max(1),
        )
    })
}

/// `--build-context NAME=DIR|docker-image://REF|oci-layout://DIR[:TAG]`.
fn named_contexts(items: &[String]) -> Result<BTreeMap<String, NamedContext>, UsageError> {
    let mut out = BTreeMap::new();
    for item in items {
        let bad = |m: &str| UsageError(format!("--build-context {item:?}: {m}"));
        let (name, value) = item
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| {
                bad("expected NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://DIR[:TAG]")
            })?;
        let context = if let Some(reference) = value.strip_prefix("docker-image://") {
            crate::registry::Reference::parse(reference).map_err(|e| bad(&e.to_string()))?;
            NamedContext::Image(Base::Registry {
                reference: reference.to_string(),
            })
        } else if let Some(layout) = value.strip_prefix("oci-layout://") {
            // A `:TAG` after the last `/`; BuildKit's `@sha256:` digests are not taken.
            let (dir, tag) = match layout.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t.to_string())),
                _ => (layout, None),
            };
            if layout.contains('@') {
                return Err(bad(
                    "oci-layout:// takes DIR[:TAG]; a @digest is not supported",
                ));
            }
            NamedContext::Image(Base::OciLayout {
                dir: std::path::absolute(dir).map_err(|e| bad(&e.to_string()))?,
                tag,
            })
        } else if value.contains("://") || value.starts_with("git@") {
            return Err(bad(
                "only directories, docker-image:// and oci-layout:// are supported (no URLs or \
                 Git repositories)",
            ));
        } else {
            let dir = std::path::Path::new(value);
            let dir = dir
                .canonicalize()
                .ok()
                .filter(|d| d.is_dir())
                .ok_or_else(|| bad("not a directory"))?;
            NamedContext::Local(dir)
        };
        if out.insert(name.to_ascii_lowercase(), context).is_some() {
            return Err(bad(&format!("{name:?} is given twice")));
        }
    }
    Ok(out)
}

pub(super) fn client_options(a: &RegistryArgs) -> ClientOptions {
    ClientOptions {
        insecure_registries: a.insecure_registries.clone(),
        ca_files: a.registry_ca.clone(),
        ..ClientOptions::default()
    }
}

fn build_request(
    a: &BuildArgs,
    maven: Option<&crate::hooks::maven::MavenImage>,
) -> Result<BuildRequest, UsageError> {
    let mut req = input_request(&a.input, maven)?;
    req.lock = if a.lock {
        LockMode::Update
    } else if a.locked {
        LockMode::Locked
    } else {
        LockMode::Use
    };
    req.attest.sbom = a.sbom;
    req.attest.provenance = a.provenance;
    let exec = &mut req.exec;
    exec.no_cache = a.no_cache;
    exec.run_settings.allow_insecure = allows_insecure(&a.allow)?;
    exec.normalize_modes = a.normalize_modes;
    exec.pull = match a.pull {
        PullArg::Newer => exec::PullPolicy::Newer,
        PullArg::Missing => exec::PullPolicy::Missing,
        PullArg::Never => exec::PullPolicy::Never,
        PullArg::Always => exec::PullPolicy::Always,
    };
    let (outputs, push) = outputs(&a.outputs, a.push)?;
    let to_stdout = outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Target::Oci {
                    dest: output::Dest::Stdout
                } | Target::Docker {
                    dest: output::Dest::Stdout
                } | Target::Tar {
                    dest: output::Dest::Stdout
                }
            )
        })
        .count();
    if to_stdout > 1 {
        return Err(UsageError(
            "only one --output can go to standard output".into(),
        ));
    }
    if a.quiet && to_stdout > 0 {
        return Err(UsageError(
            "-q prints the image ID on standard output: an --output cannot go there too".into(),
        ));
    }
    for t in &a.tags {
        output::split_tag(t).map_err(|e| UsageError(e.to_string()))?;
    }
    let (manifest_annotations, index_annotations) = annotations(&a.annotations)?;
    if a.jobs == Some(0) {
        return Err(UsageError("--jobs must be at least 1".into()));
    }
    let mut tags = a.tags.clone();
    // Jib's default name; a push goes only where the user said.
    if let (Some(m), true, false) = (maven, tags.is_empty(), push) {
        tags.push(m.name.clone());
    }
    let cache_spec = |v: &String, export: bool| {
        crate::cache::CacheSpec::parse(v, export).map_err(|e| UsageError(e.to_string()))
    };
    Ok(BuildRequest {
        cache_from: a
            .cache_from
            .iter()
            .map(|v| cache_spec(v, false))
            .collect::<Result<_, _>>()?,
        cache_to: a
            .cache_to
            .iter()
            .map(|v| cache_spec(v, true))
            .collect::<Result<_, _>>()?,
        outputs,
        tags,
        iidfile: a.iidfile.clone(),
        metadata_file: a.metadata_file.clone(),
        digest_file: a.digest_file.clone(),
        jobs: a.jobs,
        manifest_annotations,
        index_annotations,
        load: a.load.map(|l| match l {
            LoadArg::Docker => output::Engine::Docker,
            LoadArg::Podman => output::Engine::Podman,
        }),
        ..req
    })
}

/// `-o` values, files first, then one push (`--push` is `-o type=registry`); and whether
/// there is a push.
pub(super) fn outputs(specs: &[String], push: bool) -> Result<(Vec<Target>, bool), UsageError> {
    let mut outputs = specs
        .iter()
        .map(|o| o.parse::<Target>().map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let push = push || outputs.contains(&Target::Registry);
    outputs.retain(|o| *o != Target::Registry);
    if push {
        outputs.push(Target::Registry);
    }
    Ok((outputs, push))
}

/// `--allow` values: whether `security.insecure` is among them. BuildKit's other
/// entitlements have nothing to allow here (`network.host`: RUN steps may use the host's
/// network without it) or no counterpart (`device`), which is said.
fn allows_insecure(allow: &[String]) -> Result<bool, UsageError> {
    let mut insecure = false;
    for e in allow.iter().map(|e| e.trim()) {
        match e {
            "security.insecure" => insecure = true,
            "network.host" => {}
            other => {
                return Err(UsageError(format!(
                    "--allow {other:?}: unknown entitlement (lade knows security.insecure and \
                     network.host)"
                )))
            }
        }
    }
    Ok(insecure)
}

/// Manifest annotations (per platform when one is named) and the index's.
type Annotations = (
    Vec<(Option<Platform>, String, String)>,
    output::IndexAnnotations,
);

/// `--annotation [TYPE[,TYPE...][PLATFORM]:]KEY=VALUE`, buildx's forms: TYPE is `manifest`
/// (the default), `index` or `manifest-descriptor`; `[os/arch]` limits a manifest or
/// descriptor annotation to one platform.
fn annotations(items: &[String]) -> Result<Annotations, UsageError> {
    let mut manifest = Vec::new();
    let mut index = output::IndexAnnotations::default();
    for item in items {
        let bad = |m: &str| UsageError(format!("--annotation {item:?}: {m}"));
        let (left, value) = item
            .split_once('=')
            .ok_or_else(|| bad("expected [TYPE:]KEY=VALUE"))?;
        let (types, key) = match left.split_once(':') {
            Some((t, k)) => (t, k),
            None => ("manifest", left),
        };
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        let (types, platform) = match types.split_once('[') {
            Some((t, rest)) => {
                let p = rest
                    .strip_suffix(']')
                    .ok_or_else(|| bad("a platform is written [os/arch] right after the type"))?;
                let p: Platform = p
                    .parse()
                    .map_err(|e: crate::image::PlatformParseError| bad(&e.to_string()))?;
                (t, Some(p))
            }
            None => (types, None),
        };
        for t in types.split(',') {
            match t.trim() {
                "manifest" => manifest.push((platform.clone(), key.to_string(), value.to_string())),
                "manifest-descriptor" => {
                    index
                        .descriptor
                        .push((platform.clone(), key.to_string(), value.to_string()))
                }
                "index" if platform.is_some() => {
                    return Err(bad(
                        "an index spans every platform; index annotations take none",
                    ))
                }
                "index" => {
                    index.index.insert(key.to_string(), value.to_string());
                }
                "index-descriptor" => {
                    return Err(bad(
                        "index-descriptor annotations are not supported by lade (the layout's \
                         index.json names the image by tag only)",
                    ))
                }
                other => {
                    return Err(bad(&format!(
                        "unknown type {other:?} (known: manifest, index, manifest-descriptor)"
                    )))
                }
            }
        }
    }
    Ok((manifest, index))
}

/// A build error for `main`: usage errors keep their exit code 2.
pub(super) fn cli_error(e: BuildError) -> anyhow::Error {
    match e {
        BuildError::Usage(m) => UsageError(m).into(),
        other => other.into(),
    }
}

pub fn run_build(a: &BuildArgs) -> anyhow::Result<ExitCode> {
    let progress = Progress::new(if a.quiet {
        ProgressMode::Quiet
    } else {
        a.progress
    });
    let maven = match &a.maven.maven {
        Some(dir) => Some(maven_image(dir, &a.maven, &progress)?),
        None => None,
    };
    let req = build_request(a, maven.as_ref())?;
    let result = crate::build::build(&req, &progress).map_err(cli_error)?;
    if let Some(m) = &maven {
        use crate::hooks::maven::{write_image_files, Built};
        let image = result.artifact.image();
        let files = write_image_files(
            &m.module_dir,
            &Built {
                tags: &result.tags,
                image_id: image
                    .map(|i| i.config_digest.to_string())
                    .unwrap_or_default(),
                image_digest: result.artifact.top().digest.to_string(),
                pushed: req.outputs.contains(&Target::Registry),
            },
        )?;
        progress.note(&format!(
            "wrote {} and {}",
            files[0].display(),
            files[1].display()
        ));
    }
    if a.quiet {
        let id = match result.artifact.image() {
            Some(image) => image.config_digest.clone(),
            None => result.artifact.top().digest,
        };
        std::io::Write::write_all(&mut std::io::stdout().lock(), format!("{id}\n").as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(said) = &result.loaded {
        for line in said.lines() {
            progress.note(line);
        }
    }
    for r in &result.pushed {
        progress.note(&format!(
            "pushed {} ({} bytes uploaded, {} blobs uploaded, {} mounted, {} already there)",
            r.references.join(", "),
            r.bytes_uploaded,
            r.blobs_uploaded,
            r.blobs_mounted,
            r.blobs_skipped
        ));
    }
    progress.note(&format!("image {}", result.artifact.top().digest));
    if req.outputs.is_empty() && req.load.is_none() {
        progress.note(&no_output_note(&req.store_root));
    }
    Ok(ExitCode::SUCCESS)
}

/// What a build without an output says (buildx warns likewise): where the image is and how to
/// get it out.
fn no_output_note(store: &std::path::Path) -> String {
    format!(
        "note: no output given, the image stays in the store ({}) only; \
         --load loads it into docker, --push pushes it (with -t), \
         -o type=oci,dest=image.tar writes it to a file",
        store.display()
    )
}

/// `--maven DIR`: the project read, its class path had from Maven, the image planned.
fn maven_image(
    dir: &std::path::Path,
    a: &super::args::MavenArgs,
    progress: &Progress,
) -> anyhow::Result<crate::hooks::maven::MavenImage> {
    use crate::hooks::maven;
    let opts = maven::MavenOptions {
        project: dir.to_path_buf(),
        module: a.module.clone(),
        main_class: a.main_class.clone(),
        jvm_flags: a.jvm_flags.clone(),
        base: a.base.clone(),
        user: a.user.clone(),
        ports: a.ports.clone(),
        java: None,
        mvn: None,
    };
    let project = maven::project(&opts)?;
    progress.note(&format!(
        "maven: {}:{}:{} ({} class path entries: {})",
        project.module.group_id,
        project.module.artifact_id,
        project.module.version,
        project.classpath.len(),
        project.classpath_from
    ));
    Ok(maven::plan(&project, &opts)?)
}

/// `lade lock`: writes the lock file and prints its path.
pub fn run_lock(a: &LockArgs) -> anyhow::Result<ExitCode> {
    let req = input_request(&a.input, None)?;
    let (path, lock) = crate::build::lock(&req, &exec::Quiet).map_err(cli_error)?;
    println!("{}: {} base(s) pinned", path.display(), lock.images.len());
    Ok(ExitCode::SUCCESS)
}

pub fn run_plan(a: &PlanArgs) -> anyhow::Result<ExitCode> {
    let req = input_request(&a.input, None)?;
    let (plan, keys) = crate::build::plan(&req, &exec::Quiet).map_err(cli_error)?;
    let mut doc = serde_json::to_value(&plan).expect("plan serialises");
    for (stage, stage_keys) in doc["stages"]
        .as_array_mut()
        .expect("stages")
        .iter_mut()
        .zip(keys)
    {
        for (step, key) in stage["steps"]
            .as_array_mut()
            .expect("steps")
            .iter_mut()
            .zip(stage_keys)
        {
            if let Some(k) = key {
                step["cache_key"] = serde_json::json!(k);
            }
        }
    }
    let mut out = serde_json::to_string_pretty(&doc).expect("plan serialises");
    out.push('\n');
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(items: &[&str]) -> Result<Annotations, UsageError> {
        annotations(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn annotations_take_buildx_type_prefixes() {
        let (manifest, index) = parse(&[
            "org.opencontainers.image.source=https://git.example/a.git",
            "index:org.opencontainers.image.vendor=foo",
            "index,manifest:both=1",
            "manifest[linux/arm64]:only=arm",
            "manifest-descriptor:d=x",
        ])
        .unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(
            manifest,
            vec![
                (
                    None,
                    "org.opencontainers.image.source".to_string(),
                    "https://git.example/a.git".to_string()
                ),
                (None, "both".into(), "1".into()),
                (Some(arm), "only".into(), "arm".into()),
            ]
        );
        assert_eq!(
            index.index.into_iter().collect::<Vec<_>>(),
            vec![
                ("both".to_string(), "1".to_string()),
                ("org.opencontainers.image.vendor".into(), "foo".into())
            ]
        );
        assert_eq!(index.descriptor, vec![(None, "d".into(), "x".into())]);
    }

    #[test]
    fn bad_annotations_are_usage_errors() {
        for bad in [
            "novalue",
            "=v",
            "bogus:k=v",
            "index[linux/amd64]:k=v",
            "manifest[linux/amd64:k=v",
            "index-descriptor:k=v",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
    }
}
