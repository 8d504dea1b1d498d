//! `lade build --maven [DIR]`: a Maven project to an image laid out as Jib's Maven plugin does,
//! without a plugin. lade reads the `pom.xml` files ([`pom`]), asks Maven for the runtime class
//! path once (`mvn dependency:build-classpath` in the project directory, so the user's
//! `.mvn/maven.config`, settings and offline mode apply; or reads the file a build already
//! wrote), and plans one layer per kind under `/app`, in Jib's order: release dependencies,
//! snapshot dependencies, project-module dependencies (jars of the reactor), resources,
//! classes, then the JVM argument files; entrypoint `java [FLAGS] -cp @/app/jib-classpath-file
//! MAIN`. After the build, `target/lade-image.json` and `target/lade-image.digest` describe the
//! image (Jib's `jib-image.json` and `jib-image.digest`).
//!
//! Files come from anywhere on the host (the local Maven repository, the reactor), so the
//! plan's context is `/` and every source is a host path below it.

pub mod pom;

use crate::image::Platform;
use crate::path::ImagePath;
use crate::plan::{Attrs, Base, Chmod, ConfigEdit, CopyFrom, FileSet, LayerStep, Location, Plan};
use crate::plan::{Stage, Step};
use pom::Pom;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The class path file lade asks Maven for (and reads when a build already wrote it), in the
/// module's `target/`.
pub const CLASSPATH_FILE: &str = "lade-classpath.txt";
/// Jib's layer names, in Jib's order.
pub const LAYERS: [&str; 6] = [
    "dependencies",
    "snapshot dependencies",
    "project dependencies",
    "resources",
    "classes",
    "jvm arg files",
];

#[derive(Debug, thiserror::Error)]
pub enum MavenError {
    #[error("{0}")]
    Pom(String),
    #[error("{0}")]
    Choice(String),
    #[error("running {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed ({status}) in {dir}")]
    Failed {
        what: String,
        status: String,
        dir: PathBuf,
    },
    #[error("{0}")]
    Missing(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the user asked for (flags, or `[java]` in lade.toml).
#[derive(Debug, Clone, Default)]
pub struct MavenOptions {
    /// The project directory (with `pom.xml`), or the pom file itself.
    pub project: PathBuf,
    /// A module of the reactor (its artifactId or directory).
    pub module: Option<String>,
    pub main_class: Option<String>,
    pub jvm_flags: Vec<String>,
    /// The base image (default: `eclipse-temurin:17-jre`, as Jib's for Java 17).
    pub base: Option<String>,
    pub user: Option<String>,
    /// `8080`, `53/udp`.
    pub ports: Vec<String>,
    /// The `java` of the entrypoint (default: `java`).
    pub java: Option<String>,
    /// The Maven executable (default: the project's `mvnw`, else `mvn` on PATH).
    pub mvn: Option<PathBuf>,
}

/// Jib's default base for Java 17 applications.
pub const DEFAULT_BASE: &str = "eclipse-temurin:17-jre";
const APP_ROOT: &str = "/app";

/// The project as lade found it.
#[derive(Debug, Clone)]
pub struct Project {
    /// The module the image is made of.
    pub module: Pom,
    /// Every pom of the reactor (the root's modules, recursively), the module included.
    pub reactor: Vec<Pom>,
    /// The runtime class path, in Maven's order.
    pub classpath: Vec<PathBuf>,
    /// How the class path was had, for the report.
    pub classpath_from: String,
}

/// Reads the poms, picks the module and gets its runtime class path.
pub fn project(opts: &MavenOptions) -> Result<Project, MavenError> {
    let root_file = if opts.project.is_dir() || !opts.project.exists() {
        opts.project.join("pom.xml")
    } else {
        opts.project.clone()
    };
    if !root_file.is_file() {
        return Err(MavenError::Missing(format!(
            "no pom.xml in {}: `lade build --maven DIR` needs a Maven project directory",
            opts.project.display()
        )));
    }
    let root_file = root_file
        .canonicalize()
        .map_err(|e| MavenError::Missing(format!("{}: {e}", root_file.display())))?;
    let root = pom::read(&root_file).map_err(MavenError::Pom)?;
    let mut reactor = Vec::new();
    collect_reactor(&root, &mut reactor, 0)?;
    let module = choose_module(&root, &reactor, opts.module.as_deref())?.clone();
    if opts.main_class.is_none() && module.main_class.is_none() {
        return Err(no_main_class(&module));
    }
    let (classpath, classpath_from) = classpath(&root, &module, &reactor, opts)?;
    Ok(Project {
        module,
        reactor,
        classpath,
        classpath_from,
    })
}

fn no_main_class(module: &Pom) -> MavenError {
    MavenError::Missing(format!(
        "{}: no main class: give --main-class, or set maven-jar-plugin's \
         <archive><manifest><mainClass>",
        module.file.display()
    ))
}

fn collect_reactor(pom: &Pom, out: &mut Vec<Pom>, depth: usize) -> Result<(), MavenError> {
    out.push(pom.clone());
    if depth > 16 {
        return Ok(());
    }
    for m in &pom.modules {
        let mut file = pom.dir().join(m);
        if file.is_dir() {
            file = file.join("pom.xml");
        }
        let child = pom::read(&file)
            .map_err(|e| MavenError::Pom(format!("module {m:?} of {}: {e}", pom.file.display())))?;
        collect_reactor(&child, out, depth + 1)?;
    }
    Ok(())
}

fn choose_module<'a>(
    root: &Pom,
    reactor: &'a [Pom],
    wanted: Option<&str>,
) -> Result<&'a Pom, MavenError> {
    let jars: Vec<&Pom> = reactor.iter().filter(|p| p.packaging != "pom").collect();
    let names = || {
        jars.iter()
            .map(|p| p.artifact_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(w) = wanted {
        let w = w.trim_end_matches('/');
        return jars
            .iter()
            .find(|p| {
                p.artifact_id == w
                    || p.dir().file_name().is_some_and(|d| d == w)
                    || p.dir() == root.dir().join(w)
            })
            .copied()
            .ok_or_else(|| {
                MavenError::Choice(format!(
                    "--module {w:?}: no such module in {} (modules: {})",
                    root.file.display(),
                    names()
                ))
            });
    }
    if root.packaging != "pom" {
        return Ok(&reactor[0]);
    }
    let with_main: Vec<&Pom> = jars
        .iter()
        .filter(|p| p.main_class.is_some())
        .copied()
        .collect();
    match (with_main.as_slice(), jars.as_slice()) {
        ([one], _) | ([], [one]) => Ok(one),
        _ => Err(MavenError::Choice(format!(
            "{} is a reactor of several modules ({}): choose one with --module NAME",
            root.file.display(),
            names()
        ))),
    }
}

/// The module's `target/lade-classpath.txt` when it is there and not older than the poms (the
/// hook's `dependency:build-classpath` execution wrote it in this build), else Maven's answer
/// to `dependency:build-classpath` run in the reactor's directory.
fn classpath(
    root: &Pom,
    module: &Pom,
    reactor: &[Pom],
    opts: &MavenOptions,
) -> Result<(Vec<PathBuf>, String), MavenError> {
    let file = module.dir().join("target").join(CLASSPATH_FILE);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // Not older than any pom it depends on (the module's, the reactor's).
    let poms = reactor.iter().map(|p| &p.file).chain([&module.file]);
    let newest_pom = poms.filter_map(|p| mtime(p)).max();
    let fresh = matches!((mtime(&file), newest_pom), (Some(f), Some(p)) if f >= p);
    let from = if fresh {
        format!("read {}", file.display())
    } else {
        let mvn = opts.mvn.clone().unwrap_or_else(|| {
            let wrapper = root.dir().join("mvnw");
            if wrapper.is_file() {
                wrapper
            } else {
                PathBuf::from("mvn")
            }
        });
        let mut cmd = Command::new(&mvn);
        cmd.current_dir(root.dir()).arg("-q");
        let siblings = reactor.len() > 1;
        if siblings {
            // The module and the modules it needs; `compile` lets Maven resolve a sibling
            // from the reactor (its output directory) without a repository.
            let rel = module
                .dir()
                .strip_prefix(root.dir())
                .unwrap_or(module.dir());
            let rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel
            };
            cmd.arg("-pl").arg(rel).arg("-am").arg("compile");
        }
        cmd.arg("dependency:build-classpath")
            .arg(format!("-Dmdep.outputFile=target/{CLASSPATH_FILE}"))
            .arg("-Dmdep.includeScope=runtime");
        let what = format!(
            "{} -q{} dependency:build-classpath",
            mvn.display(),
            if siblings {
                " -pl MODULE -am compile"
            } else {
                ""
            }
        );
        let status = cmd
            .stdin(Stdio::null())
            // Maven's output to stderr: stdout may be the image (`-o type=oci,dest=-`).
            .stdout(std::io::stderr())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|source| MavenError::Spawn {
                what: what.clone(),
                source,
            })?;
        if !status.success() {
            return Err(MavenError::Failed {
                what,
                status: status.to_string(),
                dir: root.dir().to_path_buf(),
            });
        }
        what
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| MavenError::Missing(format!("reading {}: {e}", file.display())))?;
    let entries = text
        .trim()
        .split(':')
        .filter(|e| !e.trim().is_empty())
        .map(|e| PathBuf::from(e.trim()))
        .collect();
    Ok((entries, from))
}

/// A planned Maven image.
pub struct MavenImage {
    pub plan: Plan,
    /// `/`: sources are host paths.
    pub context: PathBuf,
    /// `artifactId:version` (Jib's default image name).
    pub name: String,
    /// The module's directory (where `target/lade-image.json` goes).
    pub module_dir: PathBuf,
    /// Per layer (Jib's names), the image paths of its files, sorted.
    pub layer_files: Vec<(String, Vec<String>)>,
}

/// Where a class path entry goes.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    Release,
    Snapshot,
    Project,
}

/// The Jib layers of the project, the entrypoint and, per layer, its files.
#[derive(Debug)]
pub struct JibLayers {
    pub steps: Vec<Step>,
    pub entrypoint: Vec<String>,
    pub layer_files: Vec<(String, Vec<String>)>,
}

/// The layers of the project, as [`plan`] lays them out.
pub fn layers(project: &Project, opts: &MavenOptions) -> Result<JibLayers, MavenError> {
    let module = &project.module;
    let location = Location::at_offset(&module.file.display().to_string(), "", 0);
    let app = ImagePath::parse_absolute(APP_ROOT).expect("absolute");
    let libs = app.join_bytes(b"libs");
    let main = opts
        .main_class
        .clone()
        .or_else(|| module.main_class.clone())
        .ok_or_else(|| no_main_class(module))?;
    let classes_dir = module.dir().join("target/classes");
    if !classes_dir.is_dir() {
        return Err(MavenError::Missing(format!(
            "{} does not exist: build the module first (mvn package)",
            classes_dir.display()
        )));
    }

    // Dependencies: (kind, host file, file name in /app/libs).
    let mut deps: Vec<(Kind, PathBuf, String)> = Vec::new();
    for entry in &project.classpath {
        let (kind, file) = if entry.is_dir() {
            // A sibling's output directory (Maven resolved it from the reactor): its jar.
            let sibling = module_of_output(entry).ok_or_else(|| {
                MavenError::Missing(format!(
                    "class path entry {} is a directory but no module's target/classes",
                    entry.display()
                ))
            })?;
            let jar = sibling.jar();
            if !jar.is_file() {
                return Err(MavenError::Missing(format!(
                    "module {} is not packaged ({} does not exist): run mvn package first",
                    sibling.artifact_id,
                    jar.display()
                )));
            }
            (Kind::Project, jar)
        } else if is_module_output(entry) {
            (Kind::Project, entry.clone())
        } else if entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("SNAPSHOT"))
        {
            (Kind::Snapshot, entry.clone())
        } else {
            (Kind::Release, entry.clone())
        };
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| MavenError::Missing(format!("class path entry {}", file.display())))?;
        if let Some((_, other, _)) = deps.iter().find(|(_, _, n)| *n == file_name) {
            return Err(MavenError::Choice(format!(
                "class path entries {} and {} would both be {}",
                other.display(),
                file.display(),
                libs.join_bytes(file_name.as_bytes())
            )));
        }
        deps.push((kind, file, file_name));
    }

    let attrs = Attrs {
        file_mode: Some(0o644),
        dir_mode: Some(0o755),
        uid: 0,
        gid: 0,
        preserve_exec_bit: false,
        host_modes: false,
    };
    let mut layer_files: Vec<(String, Vec<String>)> = Vec::new();
    let mut steps = Vec::new();
    for (kind, layer) in [
        (Kind::Release, LAYERS[0]),
        (Kind::Snapshot, LAYERS[1]),
        (Kind::Project, LAYERS[2]),
    ] {
        // Jib's 0755 directories (a COPY's --chmod would give them the files' mode).
        let mut sources: Vec<FileSet> = [&app, &libs]
            .into_iter()
            .map(|d| FileSet::Dir {
                path: d.clone(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            })
            .collect();
        let mut files = Vec::new();
        for (_, file, file_name) in deps.iter().filter(|(k, _, _)| *k == kind) {
            // Through links (Debian's repository links jars to /usr/share/java): the file.
            let real = file.canonicalize().map_err(|e| {
                MavenError::Missing(format!("class path entry {}: {e}", file.display()))
            })?;
            let dest = libs.join_bytes(file_name.as_bytes());
            files.push(dest.display());
            sources.push(FileSet::Copy {
                from: CopyFrom::Context,
                sources: vec![real.display().to_string()],
                dest,
                dest_is_dir: false,
                exclude: vec![],
                parents: false,
                chown: None,
                chmod: Some(Chmod::Octal(0o644)),
                unpack_archives: false,
                link: false,
                origin: location.clone(),
            });
        }
        if !files.is_empty() {
            steps.push(layer_step(layer, sources, &location));
        }
        files.sort();
        layer_files.push((layer.to_string(), files));
    }
    // Resources and classes: the module's output directory split as Jib does.
    let classes_rel = classes_dir.display().to_string();
    for (layer, into, include, exclude) in [
        (
            LAYERS[3],
            "resources",
            vec![],
            vec!["**/*.class".to_string()],
        ),
        (LAYERS[4], "classes", vec!["**/*.class".to_string()], vec![]),
    ] {
        let mut files = list_files(&classes_dir, &classes_dir)
            .into_iter()
            .filter(|f| f.ends_with(".class") == (layer == LAYERS[4]))
            .map(|f| {
                app.join_bytes(into.as_bytes())
                    .join_bytes(f.as_bytes())
                    .display()
            })
            .collect::<Vec<_>>();
        files.sort();
        if !files.is_empty() {
            steps.push(layer_step(
                layer,
                vec![FileSet::Select {
                    from: classes_rel.clone(),
                    into: app.join_bytes(into.as_bytes()),
                    include_origins: vec![location.clone(); include.len()],
                    include,
                    exclude,
                    attrs: attrs.clone(),
                    origin: location.clone(),
                }],
                &location,
            ));
        }
        layer_files.push((layer.to_string(), files));
    }
    // Jib's class path for Java 9+: resources, classes, then each dependency in order.
    let mut classpath = vec![
        app.join_bytes(b"resources").display(),
        app.join_bytes(b"classes").display(),
    ];
    classpath.extend(
        deps.iter()
            .map(|(_, _, n)| libs.join_bytes(n.as_bytes()).display()),
    );
    let cp_file = app.join_bytes(b"jib-classpath-file");
    let main_file = app.join_bytes(b"jib-main-class-file");
    let inline = |path: &ImagePath, content: String| FileSet::Inline {
        path: path.clone(),
        content: content.into_bytes(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        chown: None,
        heredoc: None,
    };
    steps.push(layer_step(
        LAYERS[5],
        vec![
            inline(&cp_file, classpath.join(":")),
            inline(&main_file, main.clone()),
        ],
        &location,
    ));
    layer_files.push((
        LAYERS[5].to_string(),
        vec![cp_file.display(), main_file.display()],
    ));

    let mut entrypoint = vec![opts.java.clone().unwrap_or_else(|| "java".into())];
    entrypoint.extend(opts.jvm_flags.iter().cloned());
    entrypoint.extend(["-cp".into(), format!("@{cp_file}"), main]);
    Ok(JibLayers {
        steps,
        entrypoint,
        layer_files,
    })
}

/// Plans the image of the project.
pub fn plan(project: &Project, opts: &MavenOptions) -> Result<MavenImage, MavenError> {
    let module = &project.module;
    let location = Location::at_offset(&module.file.display().to_string(), "", 0);
    let JibLayers {
        mut steps,
        entrypoint,
        layer_files,
    } = layers(project, opts)?;
    let mut edits = vec![
        ConfigEdit::Entrypoint(Some(entrypoint)),
        ConfigEdit::Cmd(None),
    ];
    if let Some(u) = &opts.user {
        edits.push(ConfigEdit::User(u.clone()));
    }
    let mut ports = std::collections::BTreeSet::new();
    for p in &opts.ports {
        ports.insert(
            crate::frontend::lade_toml::normalize_port(p).ok_or_else(|| {
                MavenError::Choice(format!(
                    "invalid port {p:?}: a port is a number 1-65535, optionally with /tcp, /udp \
                     or /sctp"
                ))
            })?,
        );
    }
    edits.extend(ports.into_iter().map(ConfigEdit::ExposedPort));
    for (k, v) in [
        ("org.opencontainers.image.title", &module.artifact_id),
        ("org.opencontainers.image.version", &module.version),
    ] {
        edits.push(ConfigEdit::Label(k.into(), v.clone()));
    }
    steps.extend(edits.into_iter().map(Step::Config));

    let base_name = opts.base.as_deref().unwrap_or(DEFAULT_BASE).trim();
    let base = Base::from_image_name(base_name, module.dir())
        .ok_or_else(|| MavenError::Choice(format!("invalid base image reference {base_name:?}")))?;
    Ok(MavenImage {
        plan: Plan {
            stages: vec![Stage {
                name: None,
                base,
                platform: Platform::host(),
                steps,
                location,
            }],
            target: 0,
            annotations: BTreeMap::new(),
            tags: Vec::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
        },
        context: PathBuf::from("/"),
        name: format!("{}:{}", module.artifact_id, module.version),
        module_dir: module.dir().to_path_buf(),
        layer_files,
    })
}

/// A jar in a module's `target/` (beside its `pom.xml`): a project-module dependency, which a
/// repository's jar never is.
fn is_module_output(file: &Path) -> bool {
    file.parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .is_some_and(|m| m.join("pom.xml").is_file())
}

/// The module whose `target/classes` is `dir`.
fn module_of_output(dir: &Path) -> Option<Pom> {
    let target = dir.parent().filter(|_| dir.ends_with("classes"))?;
    let module = target.parent().filter(|_| target.ends_with("target"))?;
    pom::read(&module.join("pom.xml")).ok()
}

fn layer_step(name: &str, sources: Vec<FileSet>, location: &Location) -> Step {
    Step::Layer(LayerStep {
        name: name.to_string(),
        created_by: format!("lade maven {name}"),
        sources,
        location: location.clone(),
    })
}

/// Regular files and links under `dir`, relative to `base`, `/`-separated.
fn list_files(dir: &Path, base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(list_files(&p, base)),
            Ok(_) => {
                if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
            Err(_) => {}
        }
    }
    out
}

/// What the build made, for [`write_image_files`].
pub struct Built<'a> {
    /// The tags the image got (the first one is "the image").
    pub tags: &'a [String],
    /// The config's digest (Jib's `imageId`).
    pub image_id: String,
    /// The manifest's (or index's) digest.
    pub image_digest: String,
    pub pushed: bool,
}

/// Writes `target/lade-image.json` (Jib's `jib-image.json` keys: `image`, `imageId`,
/// `imageDigest`, `tags`, `imagePushed`) and `target/lade-image.digest` in the module's
/// directory; returns their paths.
pub fn write_image_files(module_dir: &Path, built: &Built) -> Result<[PathBuf; 2], MavenError> {
    let target = module_dir.join("target");
    let image = built.tags.first().cloned().unwrap_or_default();
    let tags: Vec<String> = built
        .tags
        .iter()
        .filter_map(|t| {
            crate::output::split_tag(t)
                .ok()
                .map(|(_, tag)| tag.to_string())
        })
        .collect();
    let doc = serde_json::json!({
        "image": image,
        "imageId": built.image_id,
        "imageDigest": built.image_digest,
        "tags": tags,
        "imagePushed": built.pushed,
    });
    let json_path = target.join("lade-image.json");
    let digest_path = target.join("lade-image.digest");
    let json = serde_json::to_vec_pretty(&doc).expect("json");
    for (path, bytes) in [
        (&json_path, json.as_slice()),
        (&digest_path, built.image_digest.as_bytes()),
    ] {
        std::fs::create_dir_all(&target)
            .and_then(|_| crate::output::write_small_file(path, bytes))
            .map_err(|source| MavenError::Write {
                path: path.clone(),
                source,
            })?;
    }
    Ok([json_path, digest_path])
}

/// `[java] maven` of lade.toml, for the frontend.
pub struct SpecProjects;

impl crate::frontend::lade_toml::MavenProjects for SpecProjects {
    fn maven(
        &self,
        r: &crate::frontend::lade_toml::MavenRequest,
    ) -> Result<(Vec<LayerStep>, Vec<String>), String> {
        let opts = MavenOptions {
            project: r.pom.clone(),
            module: r.module.clone(),
            main_class: r.main_class.clone(),
            jvm_flags: r.jvm_flags.clone(),
            java: Some(r.java.clone()),
            ..MavenOptions::default()
        };
        let project = project(&opts).map_err(|e| e.to_string())?;
        let jib = layers(&project, &opts).map_err(|e| e.to_string())?;
        let layers = jib
            .steps
            .into_iter()
            .filter_map(|s| match s {
                Step::Layer(l) => Some(l),
                _ => None,
            })
            .collect();
        Ok((layers, jib.entrypoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    const POM: &str = "<project><groupId>g</groupId><artifactId>ARTIFACT</artifactId>\
                       <version>1.0</version></project>";

    /// Release, snapshot and project-module jars each go to their own Jib layer, in class
    /// path order in the class path file; a sibling's output directory is its jar.
    #[test]
    fn class_path_entries_are_split_as_jib_does() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        write(&t.join("app/pom.xml"), &POM.replace("ARTIFACT", "app"));
        write(&t.join("app/target/classes/a/Main.class"), "c");
        write(&t.join("app/target/classes/a.properties"), "r");
        write(&t.join("lib/pom.xml"), &POM.replace("ARTIFACT", "lib"));
        write(&t.join("lib/target/lib-1.0.jar"), "j");
        std::fs::create_dir_all(t.join("lib/target/classes")).unwrap();
        write(&t.join("repo/x/x-2.jar"), "x");
        write(&t.join("repo/s/s-1.0-SNAPSHOT.jar"), "s");
        let module = pom::read(&t.join("app/pom.xml")).unwrap();
        let project = Project {
            reactor: vec![module.clone()],
            module,
            classpath: vec![
                t.join("repo/s/s-1.0-SNAPSHOT.jar"),
                t.join("lib/target/classes"),
                t.join("repo/x/x-2.jar"),
            ],
            classpath_from: String::new(),
        };
        let opts = MavenOptions {
            main_class: Some("a.Main".into()),
            ..MavenOptions::default()
        };
        let jib = layers(&project, &opts).unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            jib.layer_files,
            vec![
                (LAYERS[0].into(), s(&["/app/libs/x-2.jar"])),
                (LAYERS[1].into(), s(&["/app/libs/s-1.0-SNAPSHOT.jar"])),
                (LAYERS[2].into(), s(&["/app/libs/lib-1.0.jar"])),
                (LAYERS[3].into(), s(&["/app/resources/a.properties"])),
                (LAYERS[4].into(), s(&["/app/classes/a/Main.class"])),
                (
                    LAYERS[5].into(),
                    s(&["/app/jib-classpath-file", "/app/jib-main-class-file"])
                ),
            ]
        );
        let cp = jib.steps.iter().find_map(|st| match st {
            Step::Layer(l) if l.name == LAYERS[5] => match &l.sources[0] {
                FileSet::Inline { content, .. } => {
                    Some(String::from_utf8(content.clone()).unwrap())
                }
                _ => None,
            },
            _ => None,
        });
        assert_eq!(
            cp.as_deref(),
            Some(
                "/app/resources:/app/classes:/app/libs/s-1.0-SNAPSHOT.jar:/app/libs/lib-1.0.jar:\
                 /app/libs/x-2.jar"
            )
        );
        assert_eq!(
            jib.entrypoint,
            ["java", "-cp", "@/app/jib-classpath-file", "a.Main"]
        );

        // A sibling not packaged yet is named.
        std::fs::remove_file(t.join("lib/target/lib-1.0.jar")).unwrap();
        let e = layers(&project, &opts).unwrap_err().to_string();
        assert!(e.contains("module lib is not packaged"), "{e}");
    }

    #[test]
    fn parent_gives_group_and_version_and_properties() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        write(
            &t.join("pom.xml"),
            "<project><groupId>org.p</groupId><artifactId>parent</artifactId>\
             <version>2.0-SNAPSHOT</version><packaging>pom</packaging>\
             <properties><main>org.p.Main</main></properties>\
             <modules><module>m</module></modules></project>",
        );
        write(
            &t.join("m/pom.xml"),
            "<project><parent><groupId>org.p</groupId><artifactId>parent</artifactId>\
             <version>2.0-SNAPSHOT</version></parent><artifactId>m</artifactId>\
             <build><finalName>${project.artifactId}-final</finalName><plugins><plugin>\
             <artifactId>maven-jar-plugin</artifactId><configuration><archive><manifest>\
             <mainClass>${main}</mainClass></manifest></archive></configuration></plugin>\
             </plugins></build></project>",
        );
        let m = pom::read(&t.join("m/pom.xml")).unwrap();
        assert_eq!(
            (
                m.group_id.as_str(),
                m.version.as_str(),
                m.packaging.as_str()
            ),
            ("org.p", "2.0-SNAPSHOT", "jar")
        );
        assert_eq!(m.main_class.as_deref(), Some("org.p.Main"));
        assert_eq!(m.jar(), t.join("m/target/m-final.jar"));
        let root = pom::read(&t.join("pom.xml")).unwrap();
        let mut reactor = Vec::new();
        collect_reactor(&root, &mut reactor, 0).unwrap();
        // The one module with a main class is chosen without --module.
        assert_eq!(
            choose_module(&root, &reactor, None).unwrap().artifact_id,
            "m"
        );
        let e = choose_module(&root, &reactor, Some("x"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--module \"x\": no such module") && e.contains("(modules: m)"),
            "{e}"
        );
    }
}
