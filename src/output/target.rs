//! BuildKit-style `--output` values: `type=oci,dest=FILE`, `type=oci-layout,dest=DIR`,
//! `type=docker,dest=FILE`, and the filesystem exports `type=local,dest=DIR` and
//! `type=tar,dest=FILE`; `dest=-` is standard output. As in buildx, a value without `=` is
//! a local directory, and `-` alone a tar on standard output.

use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    File(PathBuf),
    Stdout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Oci {
        dest: Dest,
    },
    OciLayout {
        dir: PathBuf,
    },
    Docker {
        dest: Dest,
    },
    /// Push to the registry named by each tag.
    Registry,
    /// The target stage's filesystem (the merged layers) in a directory; one subdirectory
    /// per platform (`linux_amd64`) for several.
    Local {
        dir: PathBuf,
    },
    /// The same filesystem as a tar archive.
    Tar {
        dest: Dest,
    },
}

impl Target {
    /// Whether this output is the image's filesystem rather than the image.
    pub fn is_filesystem(&self) -> bool {
        matches!(self, Target::Local { .. } | Target::Tar { .. })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid --output {spec:?}: {message}")]
pub struct TargetParseError {
    pub spec: String,
    pub message: String,
}

impl FromStr for Target {
    type Err = TargetParseError;
    fn from_str(spec: &str) -> Result<Target, TargetParseError> {
        let err = |m: &str| TargetParseError {
            spec: spec.to_string(),
            message: m.to_string(),
        };
        if !spec.contains('=') && !spec.is_empty() {
            return Ok(match spec {
                "-" => Target::Tar { dest: Dest::Stdout },
                dir => Target::Local {
                    dir: PathBuf::from(dir),
                },
            });
        }
        let (mut kind, mut dest) = (None, None);
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                err("expected comma-separated key=value pairs, e.g. type=oci,dest=image.tar")
            })?;
            match k.trim() {
                "type" => kind = Some(v.trim().to_string()),
                "dest" => dest = Some(v.to_string()),
                other => return Err(err(&format!("unknown key {other:?} (known: type, dest)"))),
            }
        }
        let kind = kind.ok_or_else(|| {
            err("missing type= (oci, oci-layout, docker, registry, local or tar)")
        })?;
        if kind == "registry" {
            return match dest {
                None => Ok(Target::Registry),
                Some(_) => Err(err(
                    "type=registry takes no dest; the tags (-t) name where to push",
                )),
            };
        }
        let dest = dest
            .filter(|d| !d.is_empty())
            .ok_or_else(|| err("missing dest="))?;
        let file = || {
            if dest == "-" {
                Dest::Stdout
            } else {
                Dest::File(PathBuf::from(&dest))
            }
        };
        match kind.as_str() {
            "oci" => Ok(Target::Oci { dest: file() }),
            "tar" => Ok(Target::Tar { dest: file() }),
            "local" if dest == "-" => Err(err(
                "type=local writes a directory; use type=tar,dest=- for standard output",
            )),
            "local" => Ok(Target::Local {
                dir: PathBuf::from(dest),
            }),
            "docker" => Ok(Target::Docker { dest: file() }),
            "oci-layout" if dest == "-" => Err(err(
                "an oci-layout is a directory; it cannot go to standard output",
            )),
            "oci-layout" => Ok(Target::OciLayout {
                dir: PathBuf::from(dest),
            }),
            other => Err(err(&format!(
                "unknown type {other:?} (known: oci, oci-layout, docker, registry, local, tar)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_style_specs() {
        assert_eq!(
            "type=oci,dest=a.tar".parse(),
            Ok(Target::Oci {
                dest: Dest::File("a.tar".into())
            })
        );
        assert_eq!(
            "type=docker,dest=-".parse(),
            Ok(Target::Docker { dest: Dest::Stdout })
        );
        assert_eq!(
            "dest=d,type=oci-layout".parse(),
            Ok(Target::OciLayout { dir: "d".into() })
        );
        assert!("type=zip,dest=x".parse::<Target>().is_err());
        assert_eq!("type=registry".parse(), Ok(Target::Registry));
        assert!("type=oci".parse::<Target>().is_err());
        assert!("type=oci-layout,dest=-".parse::<Target>().is_err());
    }

    #[test]
    fn filesystem_exports_parse_like_buildx() {
        assert_eq!("out".parse(), Ok(Target::Local { dir: "out".into() }));
        assert_eq!(
            "type=local,dest=a/b".parse(),
            Ok(Target::Local { dir: "a/b".into() })
        );
        assert_eq!("-".parse(), Ok(Target::Tar { dest: Dest::Stdout }));
        assert_eq!(
            "type=tar,dest=fs.tar".parse(),
            Ok(Target::Tar {
                dest: Dest::File("fs.tar".into())
            })
        );
        assert!("type=local,dest=-".parse::<Target>().is_err());
        assert!("type=local".parse::<Target>().is_err());
    }
}
