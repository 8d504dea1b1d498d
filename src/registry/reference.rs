//! Docker-style image references: `busybox` → `docker.io/library/busybox:latest`,
//! `localhost:5000/x`, `host/a/b:tag`, `name@sha256:…`, `name:tag@sha256:…`.

use super::RegistryError;
use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// The registry used when a name has no registry part.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Where `docker.io` is actually served.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The key `docker login` uses for Docker Hub in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A parsed image reference. `tag` is `None` only when a digest is given without a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, normalised (`docker.io` for Docker Hub).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a docker-style reference; a name without tag or digest gets `latest`.
    pub fn parse(input: &str) -> Result<Reference, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.len() > 4096 || input.chars().any(|c| c.is_whitespace()) {
            return Err(bad("contains whitespace or is too long"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((name, d)) => {
                let digest = d
                    .parse::<Digest>()
                    .map_err(|_| bad("digest must be sha256:<64 lowercase hex digits>"))?;
                (name, Some(digest))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(bad(
                    "tag must be 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_host(&registry) {
            return Err(bad("invalid registry host"));
        }
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
            _ => registry,
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty() {
            return Err(bad("missing repository name"));
        }
        if repository.len() > 255 {
            return Err(bad("repository name longer than 255 characters"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(bad(
                "repository name must be lowercase letters, digits and separators (. _ __ -), \
                 components separated by '/'",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// A reference to another repository or tag on the same registry.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// What goes after `/manifests/`: the digest if there is one, else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host API requests go to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// The host API requests go to for a registry name.
pub fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY {
        DOCKER_HUB_API_HOST
    } else {
        registry
    }
}

impl FromStr for Reference {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_host(h: &str) -> bool {
    if h.is_empty() {
        return false;
    }
    // IPv6 literal with brackets, e.g. [::1]:5000
    if let Some(rest) = h.strip_prefix('[') {
        let Some((addr, port)) = rest.split_once(']') else {
            return false;
        };
        return addr.parse::<std::net::Ipv6Addr>().is_ok()
            && (port.is_empty()
                || port
                    .strip_prefix(':')
                    .is_some_and(|p| p.parse::<u16>().is_ok()));
    }
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("user/app:1").to_string(), "docker.io/user/app:1");
        assert_eq!(
            p("index.docker.io/library/alpine:3").to_string(),
            "docker.io/library/alpine:3"
        );
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let r = p("localhost:5000/x");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost:5000", "x")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = p("host.example/a/b:tag");
        assert_eq!(r.registry, "host.example");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("tag"));
        let d = Digest::of(b"x");
        let r = p(&format!("name@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.manifest_ref(), d.to_string());
        let r = p(&format!("127.0.0.1:5000/a:v1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_ref(), d.to_string());
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a:v1@{d}"));
        assert_eq!(p("[::1]:5000/x").registry, "[::1]:5000");
        assert_eq!(p("a/b__c.d-e--f").repository, "a/b__c.d-e--f");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "Upper",
            "a b",
            "x:",
            "x:-tag",
            "x@sha256:abc",
            "x@md5:00",
            "host:99999/x",
            "a//b",
            "a/b/",
            "a/-b",
            "a/b___c",
            "localhost:5000/",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(
                matches!(e, RegistryError::InvalidReference { .. }),
                "{bad}: {e}"
            );
            assert!(!e.to_string().contains('\n'));
        }
    }
}
