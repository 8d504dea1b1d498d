//! `cargo lade`: a crate's binary to an image, as ko does for Go. Reads `cargo metadata`,
//! builds the binary with `cargo build` (or takes the one that is there), and plans an image
//! from scratch with the binary and exactly what it needs to start: the dynamic loader and the
//! `DT_NEEDED` closure ([`super::elf`]), `/etc/passwd` and `/etc/group` with a non-root user,
//! optionally the host's CA bundle; or the binary on a base image named in
//! `[package.metadata.lade]`.
//!
//! The plan has two layers: what the binary needs from the host (changes when the host's
//! libraries do) below the binary itself (changes with every build), so a rebuild uploads one.

use super::elf::{self, ElfError, LibrarySearch};
use crate::image::Platform;
use crate::path::ImagePath;
use crate::plan::{Base, Chmod, ConfigEdit, CopyFrom, FileSet, LayerStep, Location, Plan};
use crate::plan::{Stage, Step};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The non-root account of images made from scratch (distroless' `nonroot`).
pub const NONROOT_UID: u32 = 65532;
/// Where the binary goes.
pub const BIN_DIR: &str = "/usr/local/bin";
/// The CA bundle's path in the image, and where it is read on the host.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum CargoError {
    #[error("running {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed ({status})")]
    Failed { what: String, status: String },
    #[error("cargo metadata: {0}")]
    Metadata(String),
    #[error("{manifest}: [package.metadata.lade]: {message}")]
    LadeMetadata { manifest: PathBuf, message: String },
    #[error("{0}")]
    Choice(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Elf(#[from] ElfError),
}

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct CargoOptions {
    pub manifest_path: Option<PathBuf>,
    pub package: Option<String>,
    pub bin: Option<String>,
    pub release: bool,
    /// `--target TRIPLE`, passed to cargo (e.g. a musl target for a static binary).
    pub target: Option<String>,
    /// Put the host's CA bundle in the image (also `certs = true` in the metadata).
    pub certs: bool,
    /// Take the binary that is there instead of running `cargo build`.
    pub no_build: bool,
}

/// `[package.metadata.lade]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LadeMetadata {
    /// An image to put the binary on instead of scratch (`oci:DIR`, a registry reference…).
    pub base: Option<String>,
    /// The image's user (default: the non-root account on scratch, the base's otherwise).
    pub user: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortValue>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub certs: bool,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortValue {
    Number(u32),
    Text(String),
}

/// The package whose binary is built.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub manifest_path: PathBuf,
    pub bins: Vec<String>,
    /// `default-run`.
    pub default_run: Option<String>,
    pub lade: LadeMetadata,
}

#[derive(Deserialize)]
struct MetadataDoc {
    packages: Vec<MetaPackage>,
}

#[derive(Deserialize)]
struct MetaPackage {
    name: String,
    version: String,
    manifest_path: PathBuf,
    targets: Vec<MetaTarget>,
    #[serde(default)]
    default_run: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MetaTarget {
    name: String,
    kind: Vec<String>,
}

fn cargo() -> std::ffi::OsString {
    // Cargo tells its subcommands which cargo runs them.
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Reads the workspace's packages (`cargo metadata --no-deps`) and picks the one to build:
/// `--package`, else the one owning `--bin`, else the package of the manifest, else the only
/// one with a binary.
pub fn package(opts: &CargoOptions) -> Result<Package, CargoError> {
    let mut cmd = Command::new(cargo());
    cmd.args(["metadata", "--no-deps", "--format-version", "1"]);
    if let Some(m) = &opts.manifest_path {
        cmd.arg("--manifest-path").arg(m);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| CargoError::Spawn {
            what: "cargo metadata".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(CargoError::Failed {
            what: "cargo metadata".into(),
            status: out.status.to_string(),
        });
    }
    let doc: MetadataDoc =
        serde_json::from_slice(&out.stdout).map_err(|e| CargoError::Metadata(e.to_string()))?;
    let manifest = match &opts.manifest_path {
        Some(m) => Some(m.canonicalize().map_err(|source| CargoError::Read {
            path: m.clone(),
            source,
        })?),
        None => locate_manifest(),
    };
    let bins = |p: &MetaPackage| -> Vec<String> {
        p.targets
            .iter()
            .filter(|t| t.kind.iter().any(|k| k == "bin"))
            .map(|t| t.name.clone())
            .collect()
    };
    let candidates: Vec<&MetaPackage> = if let Some(name) = &opts.package {
        doc.packages.iter().filter(|p| &p.name == name).collect()
    } else if let Some(bin) = &opts.bin {
        doc.packages
            .iter()
            .filter(|p| bins(p).contains(bin))
            .collect()
    } else {
        let own: Vec<&MetaPackage> = doc
            .packages
            .iter()
            .filter(|p| Some(&p.manifest_path) == manifest.as_ref())
            .collect();
        if own.is_empty() {
            doc.packages
                .iter()
                .filter(|p| !bins(p).is_empty())
                .collect()
        } else {
            own
        }
    };
    let p = match candidates.as_slice() {
        [p] => *p,
        [] => {
            return Err(CargoError::Choice(match (&opts.package, &opts.bin) {
                (Some(n), _) => format!("no package {n:?} in this workspace"),
                (None, Some(b)) => format!("no package in this workspace has a binary {b:?}"),
                _ => "no package in this workspace has a binary".into(),
            }))
        }
        many => {
            let names: Vec<&str> = many.iter().map(|p| p.name.as_str()).collect();
            return Err(CargoError::Choice(format!(
                "several packages could be meant ({}): name one with --package or --bin",
                names.join(", ")
            )));
        }
    };
    let lade = match p.metadata.as_ref().and_then(|m| m.get("lade")) {
        Some(v) => LadeMetadata::deserialize(v).map_err(|e| CargoError::LadeMetadata {
            manifest: p.manifest_path.clone(),
            message: e.to_string(),
        })?,
        None => LadeMetadata::default(),
    };
    Ok(Package {
        name: p.name.clone(),
        version: p.version.clone(),
        manifest_path: p.manifest_path.clone(),
        bins: bins(p),
        default_run: p.default_run.clone(),
        lade,
    })
}

/// The manifest of the package in the current directory, as cargo finds it.
fn locate_manifest() -> Option<PathBuf> {
    let out = Command::new(cargo())
        .args(["locate-project", "--message-format", "plain"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.canonicalize().ok()
}

/// The binary target to build: `--bin`, else the package's `default-run`, else its only
/// binary (as `cargo run` picks).
pub fn bin_name(pkg: &Package, opts: &CargoOptions) -> Result<String, CargoError> {
    if let Some(b) = &opts.bin {
        return if pkg.bins.contains(b) {
            Ok(b.clone())
        } else {
            Err(CargoError::Choice(format!(
                "package {} has no binary {b:?} (it has: {})",
                pkg.name,
                pkg.bins.join(", ")
            )))
        };
    }
    if let Some(d) = &pkg.default_run {
        return Ok(d.clone());
    }
    match pkg.bins.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CargoError::Choice(format!(
            "package {} has no binary target",
            pkg.name
        ))),
        many => Err(CargoError::Choice(format!(
            "package {} has several binaries ({}): choose one with --bin (or set default-run)",
            pkg.name,
            many.join(", ")
        ))),
    }
}

/// Runs `cargo build` for the binary (cargo's own output on stderr) and returns the
/// executable's path, as cargo reports it. With `no_build`, cargo is still asked (it
/// rebuilds nothing that is fresh) but `--offline --frozen` keeps it from reaching anywhere.
pub fn build_binary(pkg: &Package, bin: &str, opts: &CargoOptions) -> Result<PathBuf, CargoError> {
    let mut cmd = Command::new(cargo());
    cmd.arg("build")
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(&pkg.manifest_path)
        .args(["--package", &pkg.name, "--bin", bin]);
    if opts.release {
        cmd.arg("--release");
    }
    if let Some(t) = &opts.target {
        cmd.args(["--target", t]);
    }
    if opts.no_build {
        cmd.args(["--offline", "--frozen"]);
    }
    let what = format!("cargo build --bin {bin}");
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| CargoError::Spawn {
            what: what.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(CargoError::Failed {
            what,
            status: out.status.to_string(),
        });
    }
    executable_from_messages(&out.stdout, bin).ok_or_else(|| {
        CargoError::Metadata(format!("cargo build reported no executable for {bin}"))
    })
}

/// The `executable` of the `compiler-artifact` message of binary `bin`.
fn executable_from_messages(stdout: &[u8], bin: &str) -> Option<PathBuf> {
    let mut found = None;
    for line in stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == bin
            && msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        {
            if let Some(exe) = msg["executable"].as_str() {
                found = Some(PathBuf::from(exe));
            }
        }
    }
    found
}

/// The platform of a cargo `--target` triple (the host's without one).
pub fn platform_of(target: Option<&str>) -> Platform {
    let host = Platform::host();
    let Some(triple) = target else { return host };
    let arch = match triple.split('-').next().unwrap_or("") {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" | "i586" => "386",
        "powerpc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64gc" => "riscv64",
        _ => return host,
    };
    let mut p = host;
    p.variant = (arch == "arm64").then(|| "v8".to_string());
    p.architecture = arch.into();
    p
}

/// A planned `cargo lade` image and the directory its plan reads the binary from.
pub struct CargoImage {
    pub plan: Plan,
    /// The build context: the binary's directory.
    pub context: PathBuf,
    /// Every file the image holds besides directories, in image paths, for the report.
    pub files: Vec<String>,
}

/// Plans the image of `binary`: from scratch with its runtime closure, or on the metadata's
/// base.
pub fn plan(
    pkg: &Package,
    bin: &str,
    binary: &Path,
    opts: &CargoOptions,
    search: &LibrarySearch,
) -> Result<CargoImage, CargoError> {
    let context = binary
        .parent()
        .ok_or_else(|| CargoError::Metadata(format!("{} has no directory", binary.display())))?
        .to_path_buf();
    let file_name = binary
        .file_name()
        .expect("an executable path names a file")
        .to_string_lossy()
        .into_owned();
    let manifest = pkg.manifest_path.display().to_string();
    let location = Location::at_offset(&manifest, "", 0);
    let image_bin = format!("{BIN_DIR}/{bin}");
    let platform = platform_of(opts.target.as_deref());
    let meta = &pkg.lade;
    let bad_meta = |message: String| CargoError::LadeMetadata {
        manifest: pkg.manifest_path.clone(),
        message,
    };

    let mut steps = Vec::new();
    let mut files = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let base = match &meta.base {
        Some(b) => {
            let dir = pkg.manifest_path.parent().unwrap_or(Path::new("."));
            Base::from_image_name(b.trim(), dir)
                .ok_or_else(|| bad_meta(format!("base: invalid image reference {b:?}")))?
        }
        None => {
            let closure = elf::closure(binary, search)?;
            let certs = opts.certs || meta.certs;
            let runtime = runtime_layer(&closure, certs, &location, &mut files)?;
            steps.push(Step::Layer(runtime));
            env.push(("PATH".into(), crate::image::DEFAULT_PATH.into()));
            if certs {
                env.push(("SSL_CERT_FILE".into(), CA_BUNDLE.into()));
            }
            // Libraries the image's loader would not find by itself (no ld.so.cache there).
            let extra: std::collections::BTreeSet<String> = closure
                .libraries
                .iter()
                .filter_map(|l| l.parent())
                .filter(|d| !elf::default_dirs().iter().any(|s| Path::new(s) == *d))
                .map(|d| d.display().to_string())
                .collect();
            if !extra.is_empty() {
                env.push((
                    "LD_LIBRARY_PATH".into(),
                    extra.into_iter().collect::<Vec<_>>().join(":"),
                ));
            }
            Base::Scratch
        }
    };
    files.push(image_bin.clone());
    steps.push(Step::Layer(LayerStep {
        name: format!("bin {bin}"),
        created_by: format!("cargo lade --bin {bin}"),
        sources: vec![FileSet::Copy {
            from: CopyFrom::Context,
            sources: vec![file_name],
            dest: ImagePath::parse_absolute(&image_bin)
                .map_err(|e| CargoError::Choice(format!("binary name {bin:?}: {e}")))?,
            dest_is_dir: false,
            exclude: vec![],
            parents: false,
            chown: None,
            // Not the host's bits: a umask of 002 must not change the digest.
            chmod: Some(Chmod::Octal(0o755)),
            unpack_archives: false,
            link: false,
            origin: location.clone(),
        }],
        location: location.clone(),
    }));

    let mut edits = vec![ConfigEdit::Entrypoint(Some(vec![image_bin]))];
    edits.extend(env.into_iter().map(|(k, v)| ConfigEdit::Env(k, v)));
    edits.extend(
        meta.env
            .iter()
            .map(|(k, v)| ConfigEdit::Env(k.clone(), v.clone())),
    );
    match (&meta.user, &meta.base) {
        (Some(u), _) => edits.push(ConfigEdit::User(u.clone())),
        (None, None) => edits.push(ConfigEdit::User(format!("{NONROOT_UID}:{NONROOT_UID}"))),
        (None, Some(_)) => {}
    }
    let mut ports = std::collections::BTreeSet::new();
    for p in &meta.ports {
        let text = match p {
            PortValue::Number(n) => n.to_string(),
            PortValue::Text(t) => t.clone(),
        };
        ports.insert(
            crate::frontend::lade_toml::normalize_port(&text)
                .ok_or_else(|| bad_meta(format!("ports: invalid port {text:?}")))?,
        );
    }
    edits.extend(ports.into_iter().map(ConfigEdit::ExposedPort));
    edits.push(ConfigEdit::Label(
        "org.opencontainers.image.title".into(),
        pkg.name.clone(),
    ));
    edits.push(ConfigEdit::Label(
        "org.opencontainers.image.version".into(),
        pkg.version.clone(),
    ));
    steps.extend(edits.into_iter().map(Step::Config));

    files.sort();
    Ok(CargoImage {
        plan: Plan {
            stages: vec![Stage {
                name: None,
                base,
                platform,
                steps,
                location,
            }],
            target: 0,
            annotations: BTreeMap::new(),
            tags: meta.tags.clone(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
        },
        context,
        files,
    })
}

/// The layer of what the binary needs from the host: the loader at the path the binary names,
/// every library at the path the loader opens, the account files and, when asked, the CA
/// bundle; plus `/tmp` and the non-root user's home.
fn runtime_layer(
    closure: &elf::Closure,
    certs: bool,
    location: &Location,
    files: &mut Vec<String>,
) -> Result<LayerStep, CargoError> {
    let mut sources = Vec::new();
    let mut add = |image: &str, host: &Path, mode: u32| -> Result<(), CargoError> {
        // Through symlinks: the image holds the file where the loader looks, not a link.
        let content = std::fs::read(host).map_err(|source| CargoError::Read {
            path: host.to_path_buf(),
            source,
        })?;
        sources.push(inline(image, content, mode)?);
        files.push(image.to_string());
        Ok(())
    };
    if let Some(interp) = &closure.interpreter {
        add(&interp.display().to_string(), interp, 0o755)?;
    }
    for lib in &closure.libraries {
        add(&lib.display().to_string(), lib, 0o755)?;
    }
    if certs {
        add(CA_BUNDLE, Path::new(CA_BUNDLE), 0o644)?;
    }
    let (passwd, group) = accounts();
    sources.push(inline("/etc/passwd", passwd.into_bytes(), 0o644)?);
    sources.push(inline("/etc/group", group.into_bytes(), 0o644)?);
    files.extend(["/etc/passwd".to_string(), "/etc/group".to_string()]);
    sources.push(FileSet::Dir {
        path: ImagePath::parse_absolute("/tmp").expect("absolute"),
        mode: 0o1777,
        uid: 0,
        gid: 0,
    });
    sources.push(FileSet::Dir {
        path: ImagePath::parse_absolute("/home/nonroot").expect("absolute"),
        mode: 0o700,
        uid: NONROOT_UID,
        gid: NONROOT_UID,
    });
    Ok(LayerStep {
        name: "runtime".into(),
        created_by: "cargo lade: loader, libraries, accounts".into(),
        sources,
        location: location.clone(),
    })
}

fn inline(path: &str, content: Vec<u8>, mode: u32) -> Result<FileSet, CargoError> {
    Ok(FileSet::Inline {
        path: ImagePath::parse_absolute(path)
            .map_err(|e| CargoError::Choice(format!("image path {path:?}: {e}")))?,
        content,
        mode,
        uid: 0,
        gid: 0,
        chown: None,
        heredoc: None,
    })
}

/// `/etc/passwd` and `/etc/group` of a scratch image: root and the non-root account.
pub fn accounts() -> (String, String) {
    let u = NONROOT_UID;
    (
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{u}:{u}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
        format!("root:x:0:\nnonroot:x:{u}:\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(bins: &[&str]) -> Package {
        Package {
            name: "app".into(),
            version: "1.2.3".into(),
            manifest_path: "/src/app/Cargo.toml".into(),
            bins: bins.iter().map(|b| b.to_string()).collect(),
            default_run: None,
            lade: LadeMetadata::default(),
        }
    }

    #[test]
    fn bin_choice_follows_cargo_run() {
        let o = CargoOptions::default();
        assert_eq!(bin_name(&pkg(&["one"]), &o).unwrap(), "one");
        let e = bin_name(&pkg(&["x", "app"]), &o).unwrap_err().to_string();
        assert!(e.contains("--bin") && e.contains("x, app"), "{e}");
        let mut p = pkg(&["x", "app"]);
        p.default_run = Some("x".into());
        assert_eq!(bin_name(&p, &o).unwrap(), "x");
        let o = CargoOptions {
            bin: Some("z".into()),
            ..o
        };
        assert!(bin_name(&pkg(&["x"]), &o)
            .unwrap_err()
            .to_string()
            .contains("no binary \"z\""));
    }

    #[test]
    fn executable_comes_from_the_bin_artifact_message() {
        let out = br#"{"reason":"compiler-artifact","target":{"name":"dep","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"app","kind":["bin"]},"executable":"/t/debug/app"}
{"reason":"build-finished","success":true}
"#;
        assert_eq!(
            executable_from_messages(out, "app"),
            Some(PathBuf::from("/t/debug/app"))
        );
        assert_eq!(executable_from_messages(out, "other"), None);
    }

    #[test]
    fn metadata_rejects_unknown_keys() {
        let v = serde_json::json!({"base": "scratch", "prots": [80]});
        let e = LadeMetadata::deserialize(&v).unwrap_err().to_string();
        assert!(e.contains("prots"), "{e}");
        let v = serde_json::json!({"ports": [8080, "53/udp"], "certs": true});
        let m = LadeMetadata::deserialize(&v).unwrap();
        assert_eq!(
            m.ports,
            vec![PortValue::Number(8080), PortValue::Text("53/udp".into())]
        );
        assert!(m.certs);
    }

    #[test]
    fn platform_of_a_target_triple() {
        assert_eq!(
            platform_of(Some("aarch64-unknown-linux-musl")).architecture,
            "arm64"
        );
        assert_eq!(
            platform_of(Some("x86_64-unknown-linux-musl")).architecture,
            "amd64"
        );
        assert_eq!(platform_of(None), Platform::host());
    }

    #[test]
    fn on_a_base_the_image_adds_only_the_binary() {
        let mut p = pkg(&["app"]);
        p.lade.base = Some("oci:/images/base".into());
        p.lade.ports = vec![PortValue::Number(8080)];
        let exe = std::env::current_exe().unwrap();
        let img = plan(
            &p,
            "app",
            &exe,
            &CargoOptions::default(),
            &LibrarySearch::dirs(vec![]),
        )
        .unwrap();
        assert_eq!(img.files, vec!["/usr/local/bin/app"]);
        let stage = &img.plan.stages[0];
        assert!(matches!(stage.base, Base::OciLayout { .. }));
        let layers = stage
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Layer(_)))
            .count();
        assert_eq!(layers, 1);
        assert!(stage.steps.iter().any(|s| matches!(
            s,
            Step::Config(ConfigEdit::ExposedPort(p)) if p == "8080/tcp"
        )));
        // The base's user stays.
        assert!(!stage
            .steps
            .iter()
            .any(|s| matches!(s, Step::Config(ConfigEdit::User(_)))));
    }
}
