//! The declarative `lade.toml` frontend (Jib-style): `[image]` settings, `[[layer]]` file
//! sets, and the `[java]` / `[cargo]` presets, lowered to a one-stage `plan::Plan`.
//!
//! Besides the spec itself this frontend reads only the `[java]` jar's directory listing (to
//! split it into layers); file selection happens in `exec` against the context.

mod java;
mod schema;

pub use schema::SpecFile;

/// `[java] maven`: what the frontend asks its caller for (it runs no build tool itself),
/// implemented over `hooks::maven` in `build.rs`.
pub trait MavenProjects {
    /// The Jib layers (sources are host paths: the plan's context becomes `/`) and the
    /// entrypoint of the Maven project; the error is one line.
    fn maven(&self, request: &MavenRequest) -> Result<(Vec<LayerStep>, Vec<String>), String>;
}

/// One `[java] maven` section.
#[derive(Debug, Clone)]
pub struct MavenRequest {
    pub pom: std::path::PathBuf,
    pub module: Option<String>,
    pub main_class: Option<String>,
    pub jvm_flags: Vec<String>,
    pub java: String,
}

/// A lowered spec and the directory its sources are relative to.
#[derive(Debug)]
pub struct Lowered {
    pub plan: Plan,
    /// The spec's directory, or `/` with `[java] maven`.
    pub context: std::path::PathBuf,
}

use crate::frontend::diag::{self, Location};
use crate::image::Platform;
use crate::path::ImagePath;
use crate::plan::{Attrs, Base, ConfigEdit, FileSet, LayerStep, Plan, Stage, Step};
use schema::{CargoSection, ImageSection, LayerSection, Port};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// An error in a spec, located at the value it is about.
#[derive(Debug, thiserror::Error)]
#[error("{rendered}")]
pub struct SpecError {
    pub location: Location,
    pub message: String,
    rendered: String,
}

/// Lowers one spec file. `file_name` is how errors name it; `spec_dir` anchors relative paths.
pub fn lower(
    file_name: &str,
    src: &str,
    spec_dir: &Path,
    platform_override: Option<&Platform>,
) -> Result<Plan, SpecError> {
    lower_with(file_name, src, spec_dir, platform_override, None).map(|l| l.plan)
}

/// [`lower`], with what `[java] maven` needs.
pub fn lower_with(
    file_name: &str,
    src: &str,
    spec_dir: &Path,
    platform_override: Option<&Platform>,
    maven: Option<&dyn MavenProjects>,
) -> Result<Lowered, SpecError> {
    let mut cx = Cx {
        file: file_name,
        src,
        prefix: None,
    };
    let spec: SpecFile = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.error(span, e.message().trim_end(), hint_for(e.message()))
    })?;
    let maven_pom = spec.java.as_ref().and_then(|j| j.get_ref().maven.clone());
    if maven_pom.is_some() {
        // Sources are host paths from `/`: the spec's own are its directory's.
        cx.prefix = Some(spec_dir.display().to_string());
    }

    let platform = match (platform_override, &spec.image.platform) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p
            .get_ref()
            .parse()
            .map_err(|e: crate::image::PlatformParseError| {
                cx.error(p.span(), &e.to_string(), None)
            })?,
        (None, None) => Platform::host(),
    };
    let base = base_of(&cx, &spec.image.from, spec_dir)?;

    let mut steps = Vec::new();
    for layer in &spec.layer {
        steps.push(Step::Layer(cx.layer(layer)?));
    }
    let mut entrypoint = None;
    if let Some(java) = &spec.java {
        let j = java.get_ref();
        match (&j.jar, &maven_pom) {
            (Some(jar), None) => {
                let lowered = java::lower(&cx, java, jar, spec_dir)?;
                steps.extend(lowered.layers.into_iter().map(Step::Layer));
                entrypoint = Some(lowered.entrypoint);
            }
            (None, Some(pom)) => {
                let projects = maven.ok_or_else(|| {
                    cx.error(pom.span(), "`maven` is read only by `lade build`", None)
                })?;
                let request = MavenRequest {
                    pom: spec_dir.join(pom.get_ref()),
                    module: j.module.clone(),
                    main_class: j.main_class.clone(),
                    jvm_flags: j.jvm_flags.clone(),
                    java: j.java.clone(),
                };
                let (layers, ep) = projects
                    .maven(&request)
                    .map_err(|e| cx.error(pom.span(), &e, None))?;
                steps.extend(layers.into_iter().map(Step::Layer));
                entrypoint = Some(ep);
            }
            (Some(jar), Some(_)) => {
                return Err(cx.error(jar.span(), "[java] takes `jar` or `maven`, not both", None))
            }
            (None, None) => {
                return Err(cx.error(
                    java.span(),
                    "[java] needs `jar` (an application jar) or `maven` (a pom.xml)",
                    None,
                ))
            }
        }
    }
    if let Some(cargo) = &spec.cargo {
        let (step, ep) = cx.cargo(cargo)?;
        steps.push(Step::Layer(step));
        entrypoint = Some(ep);
    }
    if spec.image.entrypoint.is_some() {
        entrypoint = spec.image.entrypoint.clone();
    }
    steps.extend(
        cx.config_edits(&spec.image, entrypoint)?
            .into_iter()
            .map(Step::Config),
    );

    Ok(Lowered {
        plan: Plan {
            stages: vec![Stage {
                name: None,
                base,
                platform,
                steps,
                location: cx.location(spec.image.from.span()),
            }],
            target: 0,
            annotations: spec.image.annotations.clone(),
            tags: spec.image.tags.clone(),
            cache_from: cx.caches(&spec, false, spec_dir)?,
            cache_to: cx.caches(&spec, true, spec_dir)?,
        },
        context: if maven_pom.is_some() {
            "/".into()
        } else {
            spec_dir.to_path_buf()
        },
    })
}

fn hint_for(message: &str) -> Option<&'static str> {
    message
        .contains("unknown field")
        .then_some("see README.md (lade.toml reference) for the keys each table accepts")
}

/// `scratch`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, or a registry reference.
fn base_of(cx: &Cx, from: &Spanned<String>, spec_dir: &Path) -> Result<Base, SpecError> {
    let s = from.get_ref().trim();
    if s.is_empty() {
        return Err(cx.error(
            from.span(),
            "`from` is empty",
            Some("use \"scratch\" for an empty base"),
        ));
    }
    Base::from_image_name(s, spec_dir)
        .ok_or_else(|| cx.error(from.span(), &format!("invalid image reference {s:?}"), None))
}

/// What every check needs to point into the spec.
pub(crate) struct Cx<'a> {
    file: &'a str,
    src: &'a str,
    /// With `[java] maven` the context is `/`: the spec's directory, put before its own
    /// relative sources.
    prefix: Option<String>,
}

impl Cx<'_> {
    /// A source directory relative to the spec, as the context sees it.
    fn source(&self, rel: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{}/{rel}", p.trim_end_matches('/')),
            None => rel.to_string(),
        }
    }

    /// `[cache]`'s `to` (`export`) or `from`, parsed; a local directory is relative to the
    /// spec's.
    fn caches(
        &self,
        spec: &SpecFile,
        export: bool,
        spec_dir: &Path,
    ) -> Result<Vec<crate::cache::CacheSpec>, SpecError> {
        let Some(c) = &spec.cache else {
            return Ok(Vec::new());
        };
        let values = if export { &c.to } else { &c.from };
        values
            .iter()
            .map(|v| {
                let mut s = crate::cache::CacheSpec::parse(v.get_ref(), export)
                    .map_err(|e| self.error(v.span(), &e.to_string(), None))?;
                if let crate::cache::Place::Local(d) = &mut s.place {
                    *d = spec_dir.join(&*d);
                }
                Ok(s)
            })
            .collect()
    }

    pub(crate) fn location(&self, span: Range<usize>) -> Location {
        Location::at_offset(self.file, self.src, span.start)
    }

    pub(crate) fn error(&self, span: Range<usize>, message: &str, hint: Option<&str>) -> SpecError {
        let location = self.location(span);
        let rendered = diag::render(&location, self.src, message, hint);
        SpecError {
            location,
            message: message.to_string(),
            rendered,
        }
    }

    fn image_path(&self, p: &Spanned<String>, what: &str) -> Result<ImagePath, SpecError> {
        ImagePath::parse_absolute(p.get_ref()).map_err(|e| {
            self.error(
                p.span(),
                &format!("`{what}` must be an absolute path in the image: {e}"),
                Some("write it with a leading /, e.g. \"/app\""),
            )
        })
    }

    fn owner(&self, owner: Option<&Spanned<String>>) -> Result<(u32, u32), SpecError> {
        let Some(o) = owner else { return Ok((0, 0)) };
        let parsed = o
            .get_ref()
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)));
        parsed.ok_or_else(|| {
            self.error(
                o.span(),
                &format!("owner {:?} is not numeric uid:gid", o.get_ref()),
                Some("e.g. owner = \"1000:1000\""),
            )
        })
    }

    fn layer(&self, l: &LayerSection) -> Result<LayerStep, SpecError> {
        let into = self.image_path(&l.into, "into")?;
        let (uid, gid) = self.owner(l.owner.as_ref())?;
        if Path::new(l.from.get_ref()).is_absolute()
            || l.from.get_ref().split('/').any(|c| c == "..")
        {
            return Err(self.error(
                l.from.span(),
                "`from` must be a directory inside the spec's directory",
                Some("use a relative path without `..`"),
            ));
        }
        for pattern in l.include.iter() {
            globset::Glob::new(pattern.get_ref())
                .map_err(|e| self.error(pattern.span(), &format!("bad glob: {e}"), None))?;
        }
        let attrs = Attrs {
            file_mode: l.mode.map(|m| m.0),
            dir_mode: l.dir_mode.map(|m| m.0),
            uid,
            gid,
            preserve_exec_bit: l.preserve_exec_bit,
            host_modes: !l.normalize_modes,
        };
        Ok(LayerStep {
            name: l.name.clone(),
            created_by: format!("lade layer {}", l.name),
            sources: vec![FileSet::Select {
                from: self.source(l.from.get_ref()),
                into,
                include: l.include.iter().map(|p| p.get_ref().clone()).collect(),
                exclude: l.exclude.clone(),
                attrs,
                origin: self.location(l.from.span()),
                include_origins: l.include.iter().map(|p| self.location(p.span())).collect(),
            }],
            location: self.location(l.from.span()),
        })
    }

    fn cargo(&self, c: &Spanned<CargoSection>) -> Result<(LayerStep, Vec<String>), SpecError> {
        let bin = c.get_ref().bin.get_ref();
        let (dir, name) = match bin.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n.to_string()),
            None => (".".to_string(), bin.clone()),
        };
        if name.is_empty() {
            return Err(self.error(c.get_ref().bin.span(), "`bin` must name a file", None));
        }
        let into = self.image_path(&Spanned::new(c.span(), c.get_ref().into.clone()), "into")?;
        let target = into.join_bytes(name.as_bytes());
        let origin = self.location(c.get_ref().bin.span());
        let step = LayerStep {
            name: format!("cargo {name}"),
            created_by: format!("lade cargo {name}"),
            sources: vec![FileSet::Select {
                from: self.source(&dir),
                into,
                include: vec![globset::escape(&name)],
                exclude: vec![],
                attrs: Attrs {
                    file_mode: Some(0o755),
                    dir_mode: None,
                    uid: 0,
                    gid: 0,
                    preserve_exec_bit: true,
                    host_modes: false,
                },
                origin: origin.clone(),
                include_origins: vec![origin.clone()],
            }],
            location: origin,
        };
        Ok((step, vec![target.display()]))
    }

    fn config_edits(
        &self,
        img: &ImageSection,
        entrypoint: Option<Vec<String>>,
    ) -> Result<Vec<ConfigEdit>, SpecError> {
        let mut edits = Vec::new();
        if let Some(ep) = entrypoint {
            edits.push(ConfigEdit::Entrypoint(Some(ep)));
        }
        if let Some(cmd) = &img.cmd {
            edits.push(ConfigEdit::Cmd(Some(cmd.clone())));
        }
        for (k, v) in &img.env {
            edits.push(ConfigEdit::Env(k.clone(), v.clone()));
        }
        if let Some(w) = &img.workdir {
            edits.push(ConfigEdit::WorkingDir(
                self.image_path(w, "workdir")?.display(),
            ));
        }
        if let Some(u) = &img.user {
            edits.push(ConfigEdit::User(u.clone()));
        }
        for (k, v) in &img.labels {
            edits.push(ConfigEdit::Label(k.clone(), v.clone()));
        }
        let mut ports = BTreeMap::new();
        for p in &img.ports {
            let text = match p.get_ref() {
                Port::Number(n) => n.to_string(),
                Port::Text(t) => t.clone(),
            };
            ports.insert(
                normalize_port(&text).ok_or_else(|| {
                    self.error(
                        p.span(),
                        &format!(
                            "invalid port {text:?}: a port is a number 1-65535, optionally \
                             with /tcp, /udp or /sctp"
                        ),
                        Some("e.g. 8080, \"8080/tcp\" or \"53/udp\""),
                    )
                })?,
                (),
            );
        }
        edits.extend(ports.into_keys().map(ConfigEdit::ExposedPort));
        for v in &img.volumes {
            edits.push(ConfigEdit::Volume(self.image_path(v, "volumes")?.display()));
        }
        if let Some(s) = &img.stop_signal {
            edits.push(ConfigEdit::StopSignal(s.clone()));
        }
        Ok(edits)
    }
}

/// `8080` → `8080/tcp`; `53/UDP` → `53/udp`; anything else is invalid.
pub fn normalize_port(p: &str) -> Option<String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let n: u32 = num.parse().ok()?;
    (n > 0 && n <= 65535 && matches!(proto.as_str(), "tcp" | "udp" | "sctp"))
        .then(|| format!("{n}/{proto}"))
}

#[cfg(test)]
mod tests;
