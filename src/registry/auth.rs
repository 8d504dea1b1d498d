//! Credentials (docker/podman auth files, credential helpers), `WWW-Authenticate` challenges,
//! token scopes, and writing `auths` for `login`. Secrets never appear in errors or logs: the
//! `Debug` impl of [`Credentials`] redacts them.

use super::reference::{DEFAULT_REGISTRY, DOCKER_HUB_AUTH_KEY};
use super::RegistryError;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Username and password (or a personal access token as password).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken` in config.json, `<token>` from helpers).
    IdentityToken { username: String, token: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::IdentityToken { username, .. } => {
                write!(
                    f,
                    "IdentityToken {{ username: {username:?}, token: <redacted> }}"
                )
            }
        }
    }
}

/// Where credentials come from: auth files in lookup order, and explicitly given credentials
/// (which win).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Files read in order; the first with an entry for the registry wins.
    pub files: Vec<PathBuf>,
    /// Explicit credentials by registry host (e.g. from `--creds`), checked first.
    pub explicit: BTreeMap<String, Credentials>,
}

impl AuthConfig {
    /// The standard lookup: `$REGISTRY_AUTH_FILE` (an explicit override), then docker's
    /// `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`, the file `lade login`
    /// writes), then podman's files in the order containers-auth.json(5) gives: the primary
    /// `${XDG_RUNTIME_DIR}/containers/auth.json` (`/run/containers/$UID/auth.json` without
    /// `XDG_RUNTIME_DIR`), then `${XDG_CONFIG_HOME}/containers/auth.json` (or
    /// `~/.config/containers/auth.json`). Docker's file comes before podman's (the man page
    /// puts it last) because it is the one lade's own login writes: a stale podman entry
    /// must not shadow it.
    pub fn from_env() -> AuthConfig {
        let var = |n: &str| {
            std::env::var_os(n)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut files = Vec::new();
        files.extend(var("REGISTRY_AUTH_FILE"));
        files.extend(docker_config_path());
        match var("XDG_RUNTIME_DIR") {
            Some(d) => files.push(d.join("containers/auth.json")),
            None => {
                // SAFETY: getuid has no preconditions and cannot fail.
                let uid = unsafe { libc::getuid() };
                files.push(PathBuf::from(format!("/run/containers/{uid}/auth.json")));
            }
        }
        match (var("XDG_CONFIG_HOME"), var("HOME")) {
            (Some(d), _) => files.push(d.join("containers/auth.json")),
            (None, Some(h)) => files.push(h.join(".config/containers/auth.json")),
            (None, None) => {}
        }
        files.dedup();
        AuthConfig {
            files,
            explicit: BTreeMap::new(),
        }
    }

    /// Only the given file (tests, `--authfile`).
    pub fn from_file(path: &Path) -> AuthConfig {
        AuthConfig {
            files: vec![path.to_path_buf()],
            explicit: BTreeMap::new(),
        }
    }

    /// Looks up credentials for a registry (as written in references, e.g. `docker.io`).
    /// `Ok(None)` means anonymous.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = self.explicit.get(registry) {
            return Ok(Some(c.clone()));
        }
        for file in &self.files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(RegistryError::AuthFile {
                        path: file.clone(),
                        detail: e.to_string(),
                    })
                }
            };
            let doc: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| RegistryError::AuthFile {
                    path: file.clone(),
                    detail: format!("not valid JSON: {e}"),
                })?;
            if let Some(c) = lookup_in_doc(&doc, registry, file)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// The key spellings a registry may have in `auths` / `credHelpers`.
pub(crate) fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
        other => other.to_string(),
    }
}

/// The server URL a credential helper is asked about.
fn helper_server_url(registry: &str) -> String {
    if registry == DEFAULT_REGISTRY {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn lookup_in_doc(
    doc: &serde_json::Value,
    registry: &str,
    file: &Path,
) -> Result<Option<Credentials>, RegistryError> {
    let find = |section: &str| -> Option<&serde_json::Value> {
        let map = doc.get(section)?.as_object()?;
        map.iter()
            .find(|(k, _)| k.as_str() == registry)
            .or_else(|| map.iter().find(|(k, _)| normalise_key(k) == registry))
            .map(|(_, v)| v)
    };
    if let Some(helper) = find("credHelpers").and_then(|v| v.as_str()) {
        return credential_helper_get(helper, registry);
    }
    if let Some(store) = doc.get("credsStore").and_then(|v| v.as_str()) {
        if let Some(c) = credential_helper_get(store, registry)? {
            return Ok(Some(c));
        }
    }
    let Some(entry) = find("auths") else {
        return Ok(None);
    };
    let bad = |detail: &str| RegistryError::AuthFile {
        path: file.to_path_buf(),
        detail: format!("entry for {registry}: {detail}"),
    };
    let mut username = entry
        .get("username")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let mut password = entry
        .get("password")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    if let Some(auth) = entry
        .get("auth")
        .and_then(|v| v.as_str())
        .filter(|a| !a.is_empty())
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("\"auth\" is not valid base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
        let (u, p) = decoded
            .split_once(':')
            .ok_or_else(|| bad("\"auth\" is not base64 of user:password"))?;
        username = u.to_string();
        password = p.to_string();
    }
    if let Some(token) = entry
        .get("identitytoken")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(Credentials::IdentityToken {
            username,
            token: token.to_string(),
        }));
    }
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::Basic { username, password }))
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
pub fn credential_helper_get(
    helper: &str,
    registry: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let err = |detail: String| RegistryError::CredentialHelper {
        helper: program.clone(),
        detail,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(helper_server_url(registry).as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("cannot run: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // Only the first line, and never stdout beyond that: helpers don't print secrets on
        // failure, but keep it short anyway.
        let first = msg.lines().next().unwrap_or("").trim().to_string();
        return Err(err(format!("failed ({}): {first}", out.status)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| err("printed something that is not JSON".into()))?;
    let username = v
        .get("Username")
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .to_string();
    let secret = v
        .get("Secret")
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .to_string();
    if username.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    if username == "<token>" {
        return Ok(Some(Credentials::IdentityToken {
            username,
            token: secret,
        }));
    }
    Ok(Some(Credentials::Basic {
        username,
        password: secret,
    }))
}

/// Writes `auths.<registry>.auth = base64(user:password)` into a docker config file, keeping
/// everything else in it; atomic (temp file + rename), mode 0600.
pub fn store_credentials(
    path: &Path,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<(), RegistryError> {
    let err = |detail: String| RegistryError::AuthFile {
        path: path.to_path_buf(),
        detail,
    };
    let mut doc = match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => serde_json::from_str::<serde_json::Value>(&t)
            .map_err(|e| err(format!("not valid JSON: {e}")))?,
        Ok(_) => serde_json::json!({}),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(err(e.to_string())),
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| err("top level is not a JSON object".into()))?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| err("\"auths\" is not a JSON object".into()))?;
    let key = if registry == DEFAULT_REGISTRY {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    };
    // Drop other spellings of the same registry so the new entry is the one found.
    auths.retain(|k, _| k == &key || normalise_key(k) != registry);
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths.insert(key, serde_json::json!({ "auth": encoded }));
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| err(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(e.to_string()))?;
    }
    tmp.write_all(&bytes).map_err(|e| err(e.to_string()))?;
    tmp.write_all(b"\n").map_err(|e| err(e.to_string()))?;
    tmp.as_file().sync_data().map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.error.to_string()))?;
    Ok(())
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value (one or several challenges); returns the
/// challenges we can answer, Bearer first.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut scheme: Option<String> = None;
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let flush = |scheme: &mut Option<String>,
                 params: &mut BTreeMap<String, String>,
                 out: &mut Vec<Challenge>| {
        if let Some(s) = scheme.take() {
            match s.to_ascii_lowercase().as_str() {
                "basic" => out.push(Challenge::Basic {
                    realm: params.get("realm").cloned(),
                }),
                "bearer" => {
                    if let Some(realm) = params.get("realm") {
                        out.push(Challenge::Bearer {
                            realm: realm.clone(),
                            service: params.get("service").cloned(),
                            scope: params.get("scope").cloned(),
                        })
                    }
                }
                _ => {}
            }
        }
        params.clear();
    };
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !matches!(b[i], b' ' | b'\t' | b',' | b'=') {
            i += 1;
        }
        let token = header[start..i].to_string();
        // Skip spaces to see whether this token is a parameter name.
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' {
            i = j + 1;
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Copy one UTF-8 character.
                    let ch = header[i..].chars().next().unwrap_or('\u{fffd}');
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1; // closing quote
                v
            } else {
                let s = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                header[s..i].trim().to_string()
            };
            params.insert(token.to_ascii_lowercase(), value);
        } else {
            // A new auth scheme starts.
            flush(&mut scheme, &mut params, &mut out);
            scheme = Some(token);
        }
    }
    flush(&mut scheme, &mut params, &mut out);
    out.sort_by_key(|c| matches!(c, Challenge::Basic { .. }));
    out
}

/// The token scopes for a repository operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Scope {
    pub repository: String,
    pub push: bool,
    /// Repositories read for cross-repository mounts.
    pub mount_from: Vec<String>,
}

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope {
            repository: repository.to_string(),
            push: false,
            mount_from: Vec::new(),
        }
    }

    pub fn push(repository: &str, mount_from: Option<&str>) -> Scope {
        Scope {
            repository: repository.to_string(),
            push: true,
            mount_from: mount_from
                .filter(|m| *m != repository)
                .map(|m| vec![m.to_string()])
                .unwrap_or_default(),
        }
    }

    /// The `scope` values for a token request.
    pub fn token_scopes(&self) -> Vec<String> {
        if self.repository.is_empty() {
            return Vec::new();
        }
        let actions = if self.push { "pull,push" } else { "pull" };
        let mut v = vec![format!("repository:{}:{actions}", self.repository)];
        for m in &self.mount_from {
            v.push(format!("repository:{m}:pull"));
        }
        v
    }
}

/// A token endpoint's answer.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub token: String,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<String>,
}

/// Parses `{"token": …}` or `{"access_token": …}` with optional `expires_in`.
pub fn parse_token_response(body: &[u8]) -> Option<TokenResponse> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = v
        .get("token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .or_else(|| v.get("access_token").and_then(|t| t.as_str()))
        .filter(|t| !t.is_empty())?
        .to_string();
    Some(TokenResponse {
        token,
        expires_in: v.get("expires_in").and_then(|e| e.as_u64()),
        refresh_token: v
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            }]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic {
                realm: Some("Registry Realm".into())
            }]
        );
        // Several challenges, odd spacing and case, unquoted values, escapes.
        let c = parse_challenges(
            r#"basic realm=x , BEARER realm = "http://t/\"q\"" , service=svc, Negotiate"#,
        );
        assert_eq!(
            c,
            vec![
                Challenge::Bearer {
                    realm: "http://t/\"q\"".into(),
                    service: Some("svc".into()),
                    scope: None
                },
                Challenge::Basic {
                    realm: Some("x".into())
                },
            ]
        );
        assert!(parse_challenges("Bearer service=\"x\"").is_empty());
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn scopes_for_pull_push_and_mount() {
        assert_eq!(Scope::pull("a/b").token_scopes(), ["repository:a/b:pull"]);
        assert_eq!(
            Scope::push("a/b", Some("base/img")).token_scopes(),
            ["repository:a/b:pull,push", "repository:base/img:pull"]
        );
        assert_eq!(
            Scope::push("a/b", Some("a/b")).token_scopes(),
            ["repository:a/b:pull,push"]
        );
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.token.as_str(), t.expires_in), ("abc", Some(300)));
        let t = parse_token_response(br#"{"access_token":"x","refresh_token":"r"}"#).unwrap();
        assert_eq!(t.token, "x");
        assert_eq!(t.refresh_token.as_deref(), Some("r"));
        assert!(parse_token_response(br#"{"token":""}"#).is_none());
        assert!(parse_token_response(b"nope").is_none());
    }

    #[test]
    fn auth_file_lookup_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                "ghcr.io":{"auth":"","identitytoken":"refresh-me"}},"other":1}"#,
        )
        .unwrap();
        let cfg = AuthConfig::from_file(&path);
        assert_eq!(
            cfg.lookup("docker.io").unwrap(),
            Some(Credentials::Basic {
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert!(matches!(
            cfg.lookup("ghcr.io").unwrap(),
            Some(Credentials::IdentityToken { .. })
        ));
        assert_eq!(cfg.lookup("quay.io").unwrap(), None);

        store_credentials(&path, "127.0.0.1:5000", "u", "p:w").unwrap();
        store_credentials(&path, "docker.io", "user2", "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["other"], 1);
        assert_eq!(
            cfg.lookup("127.0.0.1:5000").unwrap(),
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p:w".into()
            })
        );
        assert_eq!(
            cfg.lookup("docker.io").unwrap(),
            Some(Credentials::Basic {
                username: "user2".into(),
                password: "x".into()
            })
        );
        let dbg = format!("{:?}", cfg.lookup("docker.io").unwrap());
        assert!(!dbg.contains('x') || !dbg.contains("\"x\""), "{dbg}");
    }

    #[test]
    fn credential_helper_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-ladetest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$host\" = reg.example ]; then\n\
             echo '{\"ServerURL\":\"reg.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg_path = dir.path().join("config.json");
        std::fs::write(&cfg_path, r#"{"credHelpers":{"reg.example":"ladetest"}}"#).unwrap();
        // PATH is process-global; the helper is found via an absolute PATH entry only here.
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.path().to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
        let cfg = AuthConfig::from_file(&cfg_path);
        assert_eq!(
            cfg.lookup("reg.example").unwrap(),
            Some(Credentials::Basic {
                username: "hu".into(),
                password: "hs".into()
            })
        );
        assert_eq!(cfg.lookup("other.example").unwrap(), None);
        std::fs::write(&cfg_path, r#"{"credsStore":"ladetest"}"#).unwrap();
        assert!(cfg.lookup("reg.example").unwrap().is_some());
        assert_eq!(cfg.lookup("other.example").unwrap(), None);
        std::fs::write(&cfg_path, r#"{"credsStore":"missing-helper-xyz"}"#).unwrap();
        let e = cfg.lookup("reg.example").unwrap_err().to_string();
        assert!(e.contains("docker-credential-missing-helper-xyz"), "{e}");
    }
}
