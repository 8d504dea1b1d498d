//! The `[java]` preset: splits an application jar into Jib's layers.
//!
//! Only the jar's central directory and its manifest are read here; `exec` reads the entries'
//! bytes later (`FileSet::Zip`). Layouts (all under `app-root`, default `/app`):
//!
//! - Spring Boot fat jar, exploded (Jib CLI `jar` command): the jar's own paths, layers
//!   `dependencies`, `spring-boot-loader`, `snapshot dependencies`, `resources`, `classes`;
//!   `java -cp /app <Main-Class>` (the Spring Boot launcher).
//! - Plain jar, exploded (Jib's Maven/Gradle layout): `libs/` (from the manifest `Class-Path`),
//!   `resources/`, `classes/`, plus `jib-classpath-file` and `jib-main-class-file` in a
//!   `jvm arg files` layer; `java -cp @/app/jib-classpath-file MAIN`.
//! - `mode = "jar"`: the `Class-Path` dependencies where `java -jar` looks for them (relative to
//!   the jar) and the jar itself in a `jar` layer; `java -jar /app/NAME.jar`.

mod manifest;
#[cfg(test)]
mod tests;

use super::schema::{JavaMode, JavaSection};
use super::{Cx, SpecError};
use crate::path::ImagePath;
use crate::plan::{Attrs, FileSet, LayerStep, Location, ZipEntry};
use manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

pub(super) struct JavaLowering {
    pub layers: Vec<LayerStep>,
    pub entrypoint: Vec<String>,
}

/// Jib's layer names.
const DEPENDENCIES: &str = "dependencies";
const SNAPSHOT_DEPENDENCIES: &str = "snapshot dependencies";
const SPRING_BOOT_LOADER: &str = "spring-boot-loader";
const RESOURCES: &str = "resources";
const CLASSES: &str = "classes";
const JVM_ARG_FILES: &str = "jvm arg files";
const JAR: &str = "jar";

const CLASSPATH_FILE: &str = "jib-classpath-file";
const MAIN_CLASS_FILE: &str = "jib-main-class-file";
const LOADER_PREFIX: &str = "org/springframework/boot/loader/";

/// Jib's defaults: root-owned, files 0644, directories 0755.
fn attrs() -> Attrs {
    Attrs {
        file_mode: Some(0o644),
        dir_mode: Some(0o755),
        uid: 0,
        gid: 0,
        preserve_exec_bit: false,
        host_modes: false,
    }
}

/// The manifest is small; anything larger than this is not one.
const MANIFEST_LIMIT: u64 = 1 << 20;

pub(super) fn lower(
    cx: &Cx,
    java: &Spanned<JavaSection>,
    jar: &Spanned<String>,
    spec_dir: &Path,
) -> Result<JavaLowering, SpecError> {
    let j = java.get_ref();
    let jl = Lowerer {
        cx,
        span: jar.span(),
        jar: jar.get_ref().as_str(),
        origin: cx.location(jar.span()),
    };
    if !is_inside(jl.jar) {
        return Err(jl.error(
            "`jar` must be a file inside the spec's directory",
            Some("use a relative path without `..`, e.g. \"target/app.jar\""),
        ));
    }
    let app_root = ImagePath::parse_absolute(&j.app_root).map_err(|e| {
        cx.error(
            java.span(),
            &format!("`app-root` must be an absolute path in the image: {e}"),
            Some("write it with a leading /, e.g. \"/app\""),
        )
    })?;
    let listing = jl.read_jar(spec_dir)?;
    let spring_boot = listing.files.iter().any(|f| f.starts_with("BOOT-INF/"));
    let main_class = j
        .main_class
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .or(listing.manifest.get("Main-Class"));

    let mut entrypoint = vec![j.java.clone()];
    entrypoint.extend(j.jvm_flags.iter().cloned());
    let layers = match (j.mode, spring_boot) {
        (JavaMode::Exploded, true) => {
            let main = jl.require_main(main_class)?;
            entrypoint.extend(["-cp".into(), app_root.display(), main.to_string()]);
            jl.spring_boot_exploded(&listing.files, &app_root)
        }
        (JavaMode::Exploded, false) => {
            let main = jl.require_main(main_class)?;
            let deps = jl.class_path_deps(&listing.manifest, spec_dir)?;
            let file = app_root.join_bytes(CLASSPATH_FILE.as_bytes());
            entrypoint.extend(["-cp".into(), format!("@{file}"), main.to_string()]);
            jl.plain_exploded(&listing.files, &deps, &app_root, main)?
        }
        (JavaMode::Jar, _) => {
            let name = jl.jar.rsplit('/').next().unwrap_or(jl.jar);
            let target = app_root.join_bytes(name.as_bytes());
            match (j.main_class.as_deref().map(str::trim), main_class) {
                // An explicit main class: the jar on the class path (its `Class-Path` still
                // applies), so the manifest's `Main-Class` is not needed.
                (Some(m), _) if !m.is_empty() => {
                    entrypoint.extend(["-cp".into(), target.display(), m.to_string()])
                }
                (_, Some(_)) => entrypoint.extend(["-jar".into(), target.display()]),
                (_, None) => return Err(jl.no_main_class()),
            }
            let deps = jl.class_path_deps(&listing.manifest, spec_dir)?;
            jl.packaged(&deps, &app_root)?
        }
    };
    Ok(JavaLowering {
        layers: layers
            .into_iter()
            .filter(|l| !l.sources.is_empty())
            .collect(),
        entrypoint,
    })
}

/// What the frontend knows of the jar: its files (no directory entries) and manifest.
struct Listing {
    files: Vec<String>,
    manifest: Manifest,
}

/// A `Class-Path` dependency that exists as a file beside the jar.
struct Dep {
    /// The entry as written (percent-decoded), relative to the jar's directory.
    entry: String,
    /// Its directory relative to the spec directory (`.` for the spec directory itself).
    dir: String,
    file: String,
}

impl Dep {
    fn is_snapshot(&self) -> bool {
        self.file.contains("SNAPSHOT")
    }
}

struct Lowerer<'a> {
    cx: &'a Cx<'a>,
    span: Range<usize>,
    /// The jar as written, relative to the spec directory.
    jar: &'a str,
    origin: Location,
}

impl Lowerer<'_> {
    fn error(&self, message: &str, hint: Option<&str>) -> SpecError {
        self.cx.error(self.span.clone(), message, hint)
    }

    fn no_main_class(&self) -> SpecError {
        self.error(
            &format!("{} has no `Main-Class` in its manifest", self.jar),
            Some("set `main-class` in [java], e.g. main-class = \"com.example.Main\""),
        )
    }

    fn require_main<'m>(&self, main: Option<&'m str>) -> Result<&'m str, SpecError> {
        main.ok_or_else(|| self.no_main_class())
    }

    fn read_jar(&self, spec_dir: &Path) -> Result<Listing, SpecError> {
        let path = spec_dir.join(self.jar);
        let file = std::fs::File::open(&path).map_err(|e| {
            let hint = (e.kind() == std::io::ErrorKind::NotFound).then_some(
                "build the jar first (e.g. `mvn package` or `gradle jar`); \
                 the path is relative to the spec's directory",
            );
            self.error(&format!("cannot open {}: {e}", path.display()), hint)
        })?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
            self.error(
                &format!("{} is not a jar (zip) file: {e}", self.jar),
                Some("point `jar` at the application jar, e.g. \"target/app.jar\""),
            )
        })?;
        let mut files = Vec::new();
        let mut manifest_name = None;
        for name in zip.file_names() {
            if name.ends_with('/') {
                continue;
            }
            if name.starts_with('/') || name.contains('\\') || !is_inside(name) {
                return Err(self.error(
                    &format!("{} has an entry {name:?} outside the jar's root", self.jar),
                    None,
                ));
            }
            if name.eq_ignore_ascii_case("META-INF/MANIFEST.MF")
                && (manifest_name.is_none() || name == "META-INF/MANIFEST.MF")
            {
                manifest_name = Some(name.to_string());
            }
            files.push(name.to_string());
        }
        let manifest = match manifest_name {
            None => Manifest::default(),
            Some(name) => {
                let mut bytes = Vec::new();
                zip.by_name(&name)
                    .and_then(|f| {
                        f.take(MANIFEST_LIMIT)
                            .read_to_end(&mut bytes)
                            .map_err(Into::into)
                    })
                    .map_err(|e| {
                        self.error(&format!("cannot read {name} in {}: {e}", self.jar), None)
                    })?;
                Manifest::parse(&bytes)
            }
        };
        files.sort();
        Ok(Listing { files, manifest })
    }

    /// The manifest's `Class-Path` entries, resolved against the jar's directory (as the JVM
    /// and Jib CLI do); each must be a file inside the spec directory.
    fn class_path_deps(&self, manifest: &Manifest, spec_dir: &Path) -> Result<Vec<Dep>, SpecError> {
        let jar_dir = self.jar.rsplit_once('/').map_or("", |(d, _)| d);
        let hint = Some(
            "lade copies each `Class-Path` jar from beside the application jar; \
             copy the dependencies there (e.g. `mvn dependency:copy-dependencies`)",
        );
        let mut seen = BTreeSet::new();
        let mut deps = Vec::new();
        for entry in manifest.class_path() {
            let has_scheme = entry
                .split_once(':')
                .is_some_and(|(s, _)| !s.is_empty() && !s.contains('/'));
            let rel = if entry.starts_with('/') || has_scheme {
                None
            } else {
                normalize(&format!("{jar_dir}/{entry}"))
            };
            let Some(rel) = rel else {
                return Err(self.error(
                    &format!(
                        "`Class-Path` entry {entry:?} of {} is not a path inside the spec's directory",
                        self.jar
                    ),
                    hint,
                ));
            };
            if !seen.insert(rel.clone()) {
                continue;
            }
            if !spec_dir.join(&rel).is_file() {
                return Err(self.error(
                    &format!(
                        "`Class-Path` entry {entry:?} of {} is not a file: {rel} does not exist \
                         or is a directory",
                        self.jar
                    ),
                    hint,
                ));
            }
            let (dir, file) = rel.rsplit_once('/').unwrap_or((".", &rel));
            deps.push(Dep {
                entry: entry.clone(),
                dir: dir.to_string(),
                file: file.to_string(),
            });
        }
        Ok(deps)
    }

    fn layer(&self, name: &str, sources: Vec<FileSet>) -> LayerStep {
        LayerStep {
            name: name.to_string(),
            created_by: format!("lade java {name}"),
            sources,
            location: self.origin.clone(),
        }
    }

    /// Entries of the jar as one `FileSet::Zip`, sorted by image path; none if empty.
    fn zip_set(&self, mut entries: Vec<ZipEntry>) -> Vec<FileSet> {
        if entries.is_empty() {
            return Vec::new();
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.name.cmp(&b.name)));
        vec![FileSet::Zip {
            archive: self.jar.to_string(),
            entries,
            attrs: attrs(),
            origin: self.origin.clone(),
        }]
    }

    /// Files of the spec directory, each `(dir, file name, image dir)`, grouped into one
    /// `FileSet::Select` per directory pair, in a deterministic order.
    fn select_sets<'d>(
        &self,
        files: impl IntoIterator<Item = (&'d str, &'d str, ImagePath)>,
    ) -> Vec<FileSet> {
        let mut groups: BTreeMap<(&str, ImagePath), BTreeSet<&str>> = BTreeMap::new();
        for (dir, file, into) in files {
            groups.entry((dir, into)).or_default().insert(file);
        }
        groups
            .into_iter()
            .map(|((dir, into), names)| {
                let include: Vec<String> = names.into_iter().map(globset::escape).collect();
                FileSet::Select {
                    from: dir.to_string(),
                    into,
                    include_origins: vec![self.origin.clone(); include.len()],
                    include,
                    exclude: vec![],
                    attrs: attrs(),
                    origin: self.origin.clone(),
                }
            })
            .collect()
    }

    fn spring_boot_exploded(&self, files: &[String], app_root: &ImagePath) -> Vec<LayerStep> {
        let mut buckets: [Vec<ZipEntry>; 5] = Default::default();
        let [deps, loader, snapshots, resources, classes] = &mut buckets;
        for name in files {
            let entry = ZipEntry {
                name: name.clone(),
                path: app_root.join_bytes(name.as_bytes()),
            };
            if let Some(lib) = name.strip_prefix("BOOT-INF/lib/") {
                let file = lib.rsplit('/').next().unwrap_or(lib);
                if file.contains("SNAPSHOT") {
                    snapshots.push(entry);
                } else {
                    deps.push(entry);
                }
            } else if name.starts_with(LOADER_PREFIX) {
                loader.push(entry);
            } else if name.starts_with("BOOT-INF/classes/") && name.ends_with(".class") {
                classes.push(entry);
            } else {
                // BOOT-INF/classes resources and META-INF/**, as in Jib; also any other file
                // (BOOT-INF/classpath.idx, layers.idx) that Jib drops, so that JarLauncher
                // still finds its class path index.
                resources.push(entry);
            }
        }
        let names = [
            DEPENDENCIES,
            SPRING_BOOT_LOADER,
            SNAPSHOT_DEPENDENCIES,
            RESOURCES,
            CLASSES,
        ];
        names
            .into_iter()
            .zip(buckets)
            .map(|(name, entries)| self.layer(name, self.zip_set(entries)))
            .collect()
    }

    fn plain_exploded(
        &self,
        files: &[String],
        deps: &[Dep],
        app_root: &ImagePath,
        main: &str,
    ) -> Result<Vec<LayerStep>, SpecError> {
        let libs = app_root.join_bytes(b"libs");
        let mut by_name: BTreeMap<&str, &Dep> = BTreeMap::new();
        for d in deps {
            if let Some(other) = by_name.insert(&d.file, d) {
                return Err(self.error(
                    &format!(
                        "`Class-Path` entries {:?} and {:?} of {} would both be {}",
                        other.entry,
                        d.entry,
                        self.jar,
                        libs.join_bytes(d.file.as_bytes())
                    ),
                    Some("use `mode = \"jar\"`, which keeps the `Class-Path` layout"),
                ));
            }
        }
        let dep_layer = |snapshot: bool| {
            self.select_sets(
                deps.iter()
                    .filter(|d| d.is_snapshot() == snapshot)
                    .map(|d| (d.dir.as_str(), d.file.as_str(), libs.clone())),
            )
        };
        let (resources_dir, classes_dir) = (
            app_root.join_bytes(b"resources"),
            app_root.join_bytes(b"classes"),
        );
        let (mut resources, mut classes) = (Vec::new(), Vec::new());
        for name in files {
            if name.ends_with(".class") {
                classes.push(ZipEntry {
                    name: name.clone(),
                    path: classes_dir.join_bytes(name.as_bytes()),
                });
            } else {
                resources.push(ZipEntry {
                    name: name.clone(),
                    path: resources_dir.join_bytes(name.as_bytes()),
                });
            }
        }
        // Jib's class path for Java 9+: resources, classes, then each dependency in order.
        let mut classpath = vec![resources_dir.display(), classes_dir.display()];
        classpath.extend(
            deps.iter()
                .map(|d| libs.join_bytes(d.file.as_bytes()).display()),
        );
        let inline = |name: &str, content: String| FileSet::Inline {
            path: app_root.join_bytes(name.as_bytes()),
            content: content.into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            chown: None,
            heredoc: None,
        };
        Ok(vec![
            self.layer(DEPENDENCIES, dep_layer(false)),
            self.layer(SNAPSHOT_DEPENDENCIES, dep_layer(true)),
            self.layer(RESOURCES, self.zip_set(resources)),
            self.layer(CLASSES, self.zip_set(classes)),
            self.layer(
                JVM_ARG_FILES,
                vec![
                    inline(CLASSPATH_FILE, classpath.join(":")),
                    inline(MAIN_CLASS_FILE, main.to_string()),
                ],
            ),
        ])
    }

    /// `mode = "jar"`: dependencies at `app-root/<Class-Path entry>` (where `java -jar` resolves
    /// them, as Jib CLI's packaged mode does), then the jar at `app-root/<jar name>`.
    fn packaged(&self, deps: &[Dep], app_root: &ImagePath) -> Result<Vec<LayerStep>, SpecError> {
        let mut placed = Vec::new();
        for d in deps {
            let path = ImagePath::resolve(app_root, &d.entry)
                .map_err(|e| self.error(&format!("`Class-Path` entry {:?}: {e}", d.entry), None))?;
            let into = path.parent().unwrap_or_else(ImagePath::root);
            placed.push((d, into));
        }
        let dep_layer = |snapshot: bool| {
            self.select_sets(
                placed
                    .iter()
                    .filter(|(d, _)| d.is_snapshot() == snapshot)
                    .map(|(d, into)| (d.dir.as_str(), d.file.as_str(), into.clone())),
            )
        };
        let (dir, name) = self.jar.rsplit_once('/').unwrap_or((".", self.jar));
        Ok(vec![
            self.layer(DEPENDENCIES, dep_layer(false)),
            self.layer(SNAPSHOT_DEPENDENCIES, dep_layer(true)),
            self.layer(JAR, self.select_sets([(dir, name, app_root.clone())])),
        ])
    }
}

/// A relative path without `..` (nor empty).
fn is_inside(p: &str) -> bool {
    !p.is_empty() && !Path::new(p).is_absolute() && !p.split('/').any(|c| c == "..")
}

/// Lexically normalises a relative `/`-separated path; `None` if it leaves its root or is
/// empty.
fn normalize(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}
