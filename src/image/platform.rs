//! Platforms (`os/arch[/variant]`) and the host's default.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
pub struct PlatformParseError(pub String);

impl Platform {
    /// The platform of the machine lade runs on, in OCI/Go naming.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        let variant = (architecture == "arm64").then(|| "v8".to_string());
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant,
        }
    }

    /// `TARGETOS`-style parts for build args.
    pub fn variant_or_empty(&self) -> &str {
        self.variant.as_deref().unwrap_or("")
    }

    /// containerd's normalised form, used only to compare: lower case, architecture aliases
    /// (`x86_64`, `aarch64`, `i386`, `armhf`, `armel`), `arm` defaulting to `v7`, `arm64`'s
    /// `v8` and `amd64`'s `v1` spelled as no variant, bare variant numbers given a `v`.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            o => o.to_string(),
        };
        let arch = self.architecture.to_lowercase();
        let variant = self.variant.as_deref().unwrap_or("").to_lowercase();
        let (architecture, variant) = match arch.as_str() {
            "i386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => (
                "amd64".to_string(),
                match variant.as_str() {
                    "v1" | "1" => String::new(),
                    v if v.parse::<u32>().is_ok() => format!("v{v}"),
                    v => v.to_string(),
                },
            ),
            "aarch64" | "arm64" => (
                "arm64".to_string(),
                match variant.as_str() {
                    "8" | "v8" | "v8.0" => String::new(),
                    "9" | "9.0" | "v9.0" => "v9".to_string(),
                    v => v.to_string(),
                },
            ),
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => (
                "arm".to_string(),
                match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    v => v.to_string(),
                },
            ),
            a => (a.to_string(), variant),
        };
        Platform {
            os,
            architecture,
            variant: (!variant.is_empty()).then_some(variant),
        }
    }

    /// The (normalised) platforms whose images can serve a request for `self`, best first,
    /// as containerd's `platforms.Only`: the platform itself, then older variants of the
    /// same architecture (amd64 v3 → v2 → v1, arm v7 → v6 → v5), then what the CPU also
    /// runs (386 on amd64; 32-bit arm, v8 down to v5, on arm64).
    pub fn compatible(&self) -> Vec<Platform> {
        let p = self.normalized();
        let with = |arch: &str, variant: Option<String>| Platform {
            os: p.os.clone(),
            architecture: arch.to_string(),
            variant,
        };
        let version = |v: &Option<String>| {
            v.as_deref()
                .and_then(|v| v.strip_prefix('v'))
                .and_then(|n| n.parse::<u32>().ok())
        };
        let mut out = vec![p.clone()];
        match p.architecture.as_str() {
            "amd64" => {
                if let Some(n) = version(&p.variant) {
                    for v in (2..n).rev() {
                        out.push(with("amd64", Some(format!("v{v}"))));
                    }
                    out.push(with("amd64", None));
                }
                out.push(with("386", None));
            }
            "arm" => {
                if let Some(n) = version(&p.variant) {
                    for v in (5..n).rev() {
                        out.push(with("arm", Some(format!("v{v}"))));
                    }
                }
            }
            "arm64" => {
                let v = p.variant.clone().unwrap_or_else(|| "v8".into());
                out.extend(with("arm", Some(v)).compatible());
            }
            _ => {}
        }
        out
    }

    /// How well an image for `candidate` serves a request for `self`: `Some(0)` for the same
    /// platform, larger for fallbacks (see [`Platform::compatible`]), `None` if it cannot.
    pub fn match_rank(&self, candidate: &Platform) -> Option<usize> {
        let c = candidate.normalized();
        self.compatible().iter().position(|p| *p == c)
    }

    /// Whether an image for `candidate` can serve a request for `self` (containerd's rules).
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.match_rank(candidate).is_some()
    }

    /// The item whose platform serves `self` best (the first of equally good ones).
    pub fn best_match<'a, T>(
        &self,
        items: impl IntoIterator<Item = &'a T>,
        platform_of: impl Fn(&T) -> Option<&Platform>,
    ) -> Option<&'a T> {
        let compatible = self.compatible();
        items
            .into_iter()
            .filter_map(|i| {
                let c = platform_of(i)?.normalized();
                compatible.iter().position(|p| *p == c).map(|r| (r, i))
            })
            .min_by_key(|(r, _)| *r)
            .map(|(_, i)| i)
    }
}

impl FromStr for Platform {
    type Err = PlatformParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || PlatformParseError(s.to_string());
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => return Err(bad()),
        };
        let architecture = match arch {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            os: os.to_lowercase(),
            architecture: architecture.to_string(),
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p: Platform = "linux/arm64".parse().unwrap();
        let v8: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(p.matches(&v8));
        assert!(!p.matches(&"linux/amd64".parse().unwrap()));
        assert!("linux".parse::<Platform>().is_err());
        assert_eq!(
            "linux/x86_64".parse::<Platform>().unwrap().to_string(),
            "linux/amd64"
        );
    }

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn rank(want: &str, have: &str) -> Option<usize> {
        p(want).match_rank(&p(have))
    }

    #[test]
    fn arm_defaults_to_v7_and_falls_back_to_older_variants() {
        assert_eq!(rank("linux/arm", "linux/arm/v7"), Some(0));
        assert_eq!(rank("linux/arm/v7", "linux/arm"), Some(0));
        assert_eq!(rank("linux/arm/7", "linux/arm/v7"), Some(0));
        assert_eq!(rank("linux/arm/v7", "linux/arm/v6"), Some(1));
        assert_eq!(rank("linux/arm/v7", "linux/arm/v5"), Some(2));
        assert_eq!(rank("linux/arm", "linux/arm/v6"), Some(1));
        assert_eq!(rank("linux/arm/v6", "linux/arm/v7"), None);
        assert_eq!(rank("linux/arm/v5", "linux/arm/v6"), None);
        assert_eq!(rank("linux/armhf", "linux/arm/v7"), Some(0));
        assert_eq!(rank("linux/arm/v6", "linux/armel"), Some(0));
    }

    #[test]
    fn arm64_normalises_to_v8_and_runs_32_bit_arm() {
        assert_eq!(rank("linux/arm64", "linux/arm64/v8"), Some(0));
        assert_eq!(rank("linux/arm64/v8", "linux/arm64"), Some(0));
        assert_eq!(rank("linux/aarch64", "linux/arm64/8"), Some(0));
        assert_eq!(rank("linux/arm64", "linux/arm64/v9"), None);
        assert_eq!(rank("linux/arm64/v9", "linux/arm64/v9.0"), Some(0));
        assert!(rank("linux/arm64", "linux/arm/v7").unwrap() > 0);
        assert!(rank("linux/arm64", "linux/arm/v7") < rank("linux/arm64", "linux/arm/v6"));
        assert_eq!(rank("linux/arm/v7", "linux/arm64"), None);
    }

    #[test]
    fn amd64_variants_fall_back_to_older_ones_and_386() {
        assert_eq!(rank("linux/amd64", "linux/amd64/v1"), Some(0));
        assert_eq!(rank("linux/amd64/v1", "linux/amd64"), Some(0));
        assert_eq!(rank("linux/amd64", "linux/amd64/v2"), None);
        assert_eq!(rank("linux/amd64/v3", "linux/amd64/v3"), Some(0));
        assert_eq!(rank("linux/amd64/v3", "linux/amd64/v2"), Some(1));
        assert_eq!(rank("linux/amd64/v3", "linux/amd64"), Some(2));
        assert_eq!(rank("linux/amd64/v3", "linux/386"), Some(3));
        assert_eq!(rank("linux/amd64", "linux/i386"), Some(1));
        assert_eq!(rank("linux/386", "linux/amd64"), None);
        assert_eq!(rank("linux/amd64", "windows/amd64"), None);
    }

    #[test]
    fn best_match_prefers_the_closest_platform() {
        let list: Vec<Platform> = ["linux/386", "linux/arm/v5", "linux/arm/v6", "linux/amd64"]
            .iter()
            .map(|s| p(s))
            .collect();
        let best = |want: &str| {
            p(want)
                .best_match(&list, |x| Some(x))
                .map(|x| x.to_string())
        };
        assert_eq!(best("linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(best("linux/amd64/v3").as_deref(), Some("linux/amd64"));
        assert_eq!(best("linux/arm/v7").as_deref(), Some("linux/arm/v6"));
        assert_eq!(best("linux/arm64").as_deref(), Some("linux/arm/v6"));
        assert_eq!(best("linux/s390x"), None);
    }
}
