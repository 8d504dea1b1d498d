//! Transport (scheme per host, TLS trust), authentication (challenges, tokens) and the retry
//! loop every registry operation goes through.

use super::auth::{
    parse_challenges, parse_token_response, AuthConfig, Challenge, Credentials, Scope,
};
use super::reference::api_host;
use super::timeout;
use super::RegistryError;
use base64::Engine as _;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bounded retries with exponential backoff (plus a little jitter).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per operation, the first one included.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub base_delay: Duration,
    /// Upper bound of one delay, also for `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        // Up to 10% jitter from the clock's sub-second noise; no RNG dependency needed.
        let noise = Instant::now().elapsed().subsec_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0);
        let jitter_ns = capped.as_nanos() as u64 / 10;
        let jitter = if jitter_ns == 0 { 0 } else { noise % jitter_ns };
        capped + Duration::from_nanos(jitter)
    }
}

/// The default idle timeout of registry I/O.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host` or `host:port`) allowed over plain HTTP or TLS without verification.
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA certificates trusted for every registry (`--registry-ca`).
    pub ca_files: Vec<PathBuf>,
    pub auth: AuthConfig,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// The idle timeout of registry I/O (`--registry-timeout`): see `registry/timeout.rs`.
    pub timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            auth: AuthConfig::from_env(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            timeout: DEFAULT_TIMEOUT,
            user_agent: format!("lade/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A registry client; cheap to share between threads (`&Client` is `Sync`).
pub struct Client {
    opts: ClientOptions,
    verified: Http,
    unverified: OnceLock<Result<Http, String>>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

/// What we know about one registry host.
pub(crate) struct Host {
    /// The API host (`registry-1.docker.io` for `docker.io`).
    pub name: String,
    /// The registry name credentials are stored under (`docker.io`).
    registry: String,
    /// `scheme://host[:port]/`
    pub base: Url,
    insecure: bool,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<Vec<String>, Token>>,
    creds: OnceLock<Option<Credentials>>,
}

#[derive(Clone)]
struct Token {
    value: String,
    valid_until: Instant,
}

/// The outcome of a failed attempt, for the retry loop.
pub(crate) enum Failure {
    /// Worth another attempt (transport error, 408, 429, 5xx); `after` from `Retry-After`.
    Retry {
        cause: String,
        after: Option<Duration>,
    },
    Fatal(RegistryError),
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Failure::Fatal(e)
    }
}

/// The chain of causes of an error, without the top-level message (which for reqwest
/// repeats the URL), joined by ": ".
pub(crate) fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        // hyper's "client error (Connect)" says nothing the next cause doesn't.
        if !s.starts_with("client error (") && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    if parts.is_empty() {
        // reqwest's own message: strip "for url (...)" to keep it short.
        let s = e.to_string();
        return match s.find(" for url (") {
            Some(i) => s[..i].to_string(),
            None => s,
        };
    }
    // Keep the most specific parts (the tail) when the chain repeats itself.
    parts.join(": ").replace('\n', " ")
}

fn is_tls_certificate_error(e: &reqwest::Error) -> bool {
    let c = cause_chain(e).to_lowercase();
    c.contains("certificate") || c.contains("unknownissuer") || c.contains("notvalidforname")
}

fn is_dns_error(e: &reqwest::Error) -> bool {
    cause_chain(e).to_lowercase().contains("dns error")
}

fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    if h == "localhost" || h.ends_with(".localhost") {
        return true;
    }
    let h = h.trim_start_matches('[').trim_end_matches(']');
    // `::ffff:127.0.0.1` is 127.0.0.1 too (Go's 127.0.0.0/8 check, which docker uses,
    // agrees).
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.to_canonical().is_loopback())
        .unwrap_or(false)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

const NO_DETAILS: &str = "(no details)";

/// A short summary of a registry error body (`{"errors":[{"code","message"}]}`), or its
/// first line.
pub(crate) fn error_body_summary(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    format!("{code}: {msg}")
                        .trim_matches([':', ' '])
                        .to_string()
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
        if let Some(d) = v.get("details").and_then(|d| d.as_str()) {
            return d.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut s: String = line.chars().take(200).collect();
    if s.is_empty() {
        s = NO_DETAILS.into();
    }
    s
}

/// `Retry-After` as a delay from now: delta-seconds, or an HTTP-date (a date in the past
/// means no wait).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(Duration::from_secs(at).saturating_sub(now))
}

/// Seconds since the epoch of an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), and the obsolete RFC 850 (`Sunday, 06-Nov-94
/// 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) forms recipients must accept.
pub(crate) fn parse_http_date(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let tokens: Vec<&str> = s.split([' ', ',', '-']).filter(|t| !t.is_empty()).collect();
    // The leading weekday is not checked (as most implementations).
    let rest = tokens.get(1..)?;
    let mut month = None;
    let mut time = None;
    let mut numbers: Vec<&str> = Vec::new();
    for t in rest {
        if t.contains(':') {
            time = Some(*t);
        } else if let Some(m) = MONTHS.iter().position(|m| t.eq_ignore_ascii_case(m)) {
            month = Some(m as u64 + 1);
        } else if t.eq_ignore_ascii_case("GMT") || t.eq_ignore_ascii_case("UTC") {
        } else if t.bytes().all(|b| b.is_ascii_digit()) {
            numbers.push(t);
        } else {
            return None;
        }
    }
    let (month, time) = (month?, time?);
    let [day, year] = numbers.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let mut year: u64 = year.parse().ok()?;
    if year < 100 {
        // RFC 850 two-digit years: within 50 years of now, i.e. 20xx for lade's lifetime.
        year += if year < 70 { 2000 } else { 1900 };
    }
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), with March as the first month.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + m * 60 + sec)
}

/// Whether a status is worth retrying.
pub(crate) fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Client, RegistryError> {
        let verified = Self::http(&opts, false)?;
        Ok(Client {
            opts,
            verified,
            unverified: OnceLock::new(),
            hosts: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Reads at most 16 KiB of a response body (for error messages and small JSON answers),
    /// giving up on a stalled one.
    pub(crate) fn small_body(&self, resp: Response) -> Vec<u8> {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = timeout::StallGuard::new(resp, self.opts.timeout)
            .take(16 * 1024)
            .read_to_end(&mut buf);
        buf
    }

    /// What went wrong with a request that got no response: a timeout in the words of
    /// [`timeout::no_response`], else the error's cause chain.
    pub(crate) fn transport_cause(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            timeout::no_response(self.opts.timeout)
        } else {
            cause_chain(e)
        }
    }

    fn http(opts: &ClientOptions, insecure: bool) -> Result<Http, RegistryError> {
        let mut b = Http::builder()
            .user_agent(opts.user_agent.clone())
            .connect_timeout(opts.connect_timeout.min(opts.timeout))
            // Blocking reqwest applies this from the start of a request to its response
            // headers, and again to each read of the body (see `timeout`).
            .timeout(opts.timeout)
            .tcp_user_timeout(opts.timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .danger_accept_invalid_certs(insecure);
        for path in &opts.ca_files {
            let pem = std::fs::read(path).map_err(|e| RegistryError::CaFile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| RegistryError::CaFile {
                    path: path.clone(),
                    detail: format!("not a PEM certificate bundle: {}", cause_chain(&e)),
                })?;
            if certs.is_empty() {
                return Err(RegistryError::CaFile {
                    path: path.clone(),
                    detail: "contains no PEM certificate".into(),
                });
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        b.build()
            .map_err(|e| RegistryError::ClientSetup(cause_chain(&e)))
    }

    /// Whether `--insecure-registry` names `host` (`host[:port]`): an entry with a port
    /// matches that port only, one without matches every port of the host. A scheme or a
    /// trailing `/` in the entry (`http://host:5000/`) is ignored.
    fn is_insecure(&self, host: &str) -> bool {
        self.opts.insecure_registries.iter().any(|entry| {
            let h = entry.trim();
            let h = h
                .strip_prefix("http://")
                .or_else(|| h.strip_prefix("https://"))
                .unwrap_or(h)
                .trim_end_matches('/');
            h.eq_ignore_ascii_case(host)
                || (strip_port(h) == h && h.eq_ignore_ascii_case(strip_port(host)))
        })
    }

    pub(crate) fn http_for(&self, host: &Host) -> &Http {
        if host.insecure {
            if let Some(Ok(h)) = self.unverified.get() {
                return h;
            }
        }
        &self.verified
    }

    fn unverified_http(&self) -> Result<&Http, RegistryError> {
        self.unverified
            .get_or_init(|| Self::http(&self.opts, true).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| RegistryError::ClientSetup(e.clone()))
    }

    /// The state of a registry host, probing `/v2/` on first use to pick the scheme and learn
    /// the auth challenge. `registry` is the name in references (`docker.io`).
    pub(crate) fn host(&self, registry: &str) -> Result<Arc<Host>, RegistryError> {
        if let Some(h) = self.hosts.lock().unwrap().get(registry) {
            return Ok(h.clone());
        }
        let host = self.probe(registry)?;
        let host = Arc::new(host);
        self.hosts
            .lock()
            .unwrap()
            .entry(registry.to_string())
            .or_insert(host.clone());
        Ok(host)
    }

    fn probe(&self, registry: &str) -> Result<Host, RegistryError> {
        let name = api_host(registry).to_string();
        let insecure = self.is_insecure(&name) || self.is_insecure(registry);
        let loopback = is_loopback(&name);
        if insecure {
            self.unverified_http()?;
        }
        // Candidates in order: (scheme, whether falling back from it is allowed).
        let candidates: &[&str] = if insecure || loopback {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last: Option<RegistryError> = None;
        for (i, scheme) in candidates.iter().enumerate() {
            let is_last = i + 1 == candidates.len();
            let base = Url::parse(&format!("{scheme}://{name}/")).map_err(|e| {
                RegistryError::InvalidReference {
                    input: registry.to_string(),
                    reason: e.to_string(),
                }
            })?;
            let host = Host {
                name: name.clone(),
                registry: registry.to_string(),
                base,
                insecure,
                challenge: Mutex::new(None),
                tokens: Mutex::new(HashMap::new()),
                creds: OnceLock::new(),
            };
            let url = host.base.join("v2/").expect("static path");
            let mut failures = 0;
            loop {
                match self.http_for(&host).get(url.clone()).send() {
                    Ok(resp) => {
                        let status = resp.status();
                        if status == StatusCode::UNAUTHORIZED {
                            *host.challenge.lock().unwrap() = challenge_of(resp.headers());
                        } else if status == StatusCode::NOT_FOUND {
                            return Err(RegistryError::NotARegistry {
                                host: name,
                                status: status.as_u16(),
                            });
                        }
                        tracing::debug!(host = %name, scheme, status = status.as_u16(), "registry probed");
                        return Ok(host);
                    }
                    Err(e) => {
                        let tls_cert = is_tls_certificate_error(&e);
                        let err = if tls_cert
                            || (*scheme == "https"
                                && is_last
                                && cause_chain(&e).to_lowercase().contains("tls"))
                        {
                            RegistryError::Tls {
                                host: name.clone(),
                                cause: cause_chain(&e),
                            }
                        } else {
                            RegistryError::Connect {
                                host: name.clone(),
                                cause: self.transport_cause(&e),
                            }
                        };
                        // A loopback registry with a certificate we don't trust is a TLS error,
                        // not a reason to try plain HTTP; an insecure host may fall back.
                        if tls_cert && !insecure {
                            return Err(err);
                        }
                        if !is_last {
                            last = Some(err);
                            break;
                        }
                        failures += 1;
                        if is_dns_error(&e) || failures >= self.opts.retry.max_attempts {
                            if failures > 1 {
                                return Err(RegistryError::RetriesExhausted {
                                    what: format!("connecting to registry {name}"),
                                    attempts: failures,
                                    last: err.to_string(),
                                });
                            }
                            return Err(err);
                        }
                        std::thread::sleep(self.opts.retry.delay(failures, None));
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Connect {
            host: name,
            cause: "no usable scheme".into(),
        }))
    }

    /// Credentials for a host (looked up once).
    fn creds(&self, host: &Host) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = host.creds.get() {
            return Ok(c.clone());
        }
        let c = self.opts.auth.lookup(&host.registry)?;
        Ok(host.creds.get_or_init(|| c).clone())
    }

    /// The `Authorization` value for a request in `scope`, fetching a token if needed.
    fn auth_header(
        &self,
        host: &Host,
        scope: &Scope,
        force_new: bool,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = host.challenge.lock().unwrap().clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => Ok(self.creds(host)?.map(|c| basic_header(&c))),
            Some(Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            }) => {
                let mut scopes = scope.token_scopes();
                if scopes.is_empty() {
                    scopes.extend(challenge_scope.clone());
                }
                if !force_new {
                    if let Some(t) = host.tokens.lock().unwrap().get(&scopes) {
                        if t.valid_until > Instant::now() {
                            return Ok(Some(format!("Bearer {}", t.value)));
                        }
                    }
                }
                let token = self.fetch_token(host, &realm, service.as_deref(), &scopes)?;
                host.tokens.lock().unwrap().insert(scopes, token.clone());
                Ok(Some(format!("Bearer {}", token.value)))
            }
        }
    }

    fn fetch_token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token, RegistryError> {
        let creds = self.creds(host)?;
        let mut url = Url::parse(realm).map_err(|_| RegistryError::Unauthorized {
            host: host.name.clone(),
            detail: format!("token realm {realm:?} is not a URL"),
        })?;
        let http = self.http_for(host);
        let what = "token request";
        let started = Instant::now();
        let mut failures = 0;
        let resp = loop {
            let req = match &creds {
                Some(Credentials::IdentityToken { token, .. }) => {
                    // OAuth2 refresh-token grant, as docker does for identity tokens.
                    let mut form = Url::parse("http://x/").expect("static url");
                    {
                        let mut q = form.query_pairs_mut();
                        q.append_pair("grant_type", "refresh_token");
                        q.append_pair("refresh_token", token);
                        q.append_pair("client_id", "lade");
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        if !scopes.is_empty() {
                            q.append_pair("scope", &scopes.join(" "));
                        }
                    }
                    http.post(url.clone())
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/x-www-form-urlencoded",
                        )
                        .body(form.query().unwrap_or("").to_string())
                }
                other => {
                    {
                        let mut q = url.query_pairs_mut();
                        q.clear();
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        for s in scopes {
                            q.append_pair("scope", s);
                        }
                    }
                    let mut r = http.get(url.clone());
                    if let Some(c @ Credentials::Basic { .. }) = other {
                        r = r.header(AUTHORIZATION, basic_header(c));
                    }
                    r
                }
            };
            let (cause, after) = match req.send() {
                Ok(resp) if retryable_status(resp.status()) => (
                    format!("token server answered {}", resp.status()),
                    retry_after(resp.headers()),
                ),
                Ok(resp) => break resp,
                Err(e) => (
                    format!("token server unreachable: {}", self.transport_cause(&e)),
                    None,
                ),
            };
            failures += 1;
            if failures >= self.opts.retry.max_attempts {
                return Err(RegistryError::RetriesExhausted {
                    what: format!("{what} for {}", host.name),
                    attempts: failures,
                    last: cause,
                });
            }
            std::thread::sleep(self.opts.retry.delay(failures, after));
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = if creds.is_some() {
                "the token server rejected the credentials (wrong username or password?)"
            } else {
                "anonymous access was refused; log in first (lade login)"
            };
            return Err(RegistryError::Unauthorized {
                host: host.name.clone(),
                detail: detail.into(),
            });
        }
        if !status.is_success() {
            let body = self.small_body(resp);
            return Err(RegistryError::Unauthorized {
                host: host.name.clone(),
                detail: format!(
                    "token server answered {status}: {}",
                    error_body_summary(&body)
                ),
            });
        }
        let body = self.small_body(resp);
        let t = parse_token_response(&body).ok_or_else(|| RegistryError::Unauthorized {
            host: host.name.clone(),
            detail: "token server answered without a token".into(),
        })?;
        // Default lifetime 60 s (distribution spec); renew 10% early.
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).max(1));
        let valid_until = started + life - life / 10;
        tracing::debug!(host = %host.name, "obtained registry token");
        Ok(Token {
            value: t.token,
            valid_until,
        })
    }

    /// One request with authentication: on 401 the challenge is re-read, a new token fetched
    /// and the request re-sent once. `make` builds the request (again) from scratch, so its
    /// body can be re-created. Transport errors and retryable statuses become
    /// [`Failure::Retry`]; the returned response may still be any other status.
    pub(crate) fn send(
        &self,
        host: &Host,
        scope: &Scope,
        make: &dyn Fn(&Http) -> RequestBuilder,
    ) -> Result<Response, Failure> {
        let mut forced = false;
        loop {
            let mut req = make(self.http_for(host));
            if let Some(h) = self.auth_header(host, scope, forced)? {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => {
                    return Err(Failure::Retry {
                        cause: self.transport_cause(&e),
                        after: None,
                    })
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !forced {
                if let Some(c) = challenge_of(resp.headers()) {
                    *host.challenge.lock().unwrap() = Some(c);
                    forced = true;
                    continue;
                }
            }
            if retryable_status(status) {
                let after = retry_after(resp.headers());
                let body = self.small_body(resp);
                return Err(Failure::Retry {
                    cause: format!("HTTP {status}: {}", error_body_summary(&body)),
                    after,
                });
            }
            return Ok(resp);
        }
    }

    /// Runs `attempt` until it succeeds, fails fatally, or the retry budget is spent.
    pub(crate) fn retrying<T>(
        &self,
        what: &dyn Fn() -> String,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, RegistryError> {
        let mut failures = 0u32;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry { cause, after }) => {
                    failures += 1;
                    tracing::debug!(what = %what(), failures, %cause, "retrying");
                    if failures >= self.opts.retry.max_attempts {
                        return Err(RegistryError::RetriesExhausted {
                            what: what(),
                            attempts: failures,
                            last: cause,
                        });
                    }
                    std::thread::sleep(self.opts.retry.delay(failures, after));
                }
            }
        }
    }

    /// Maps a final non-success status to an error (after `send`, so no 401 retry is left).
    pub(crate) fn status_error(
        &self,
        host: &Host,
        repository: &str,
        what: &str,
        resp: Response,
    ) -> RegistryError {
        let status = resp.status();
        let body = self.small_body(resp);
        let detail = error_body_summary(&body);
        match status {
            StatusCode::UNAUTHORIZED => {
                let has_creds = matches!(self.creds(host), Ok(Some(_)));
                RegistryError::Unauthorized {
                    host: host.name.clone(),
                    detail: match (has_creds, detail == NO_DETAILS) {
                        (true, true) => "credentials rejected (wrong username or password?)".into(),
                        (true, false) => format!("credentials rejected ({detail})"),
                        (false, _) => format!(
                            "authentication required; log in first (lade login {})",
                            host.registry
                        ),
                    },
                }
            }
            StatusCode::FORBIDDEN => RegistryError::Denied {
                host: host.name.clone(),
                repository: repository.to_string(),
                detail,
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                host: host.name.clone(),
                what: what.to_string(),
            },
            _ => RegistryError::Status {
                host: host.name.clone(),
                what: what.to_string(),
                status: status.as_u16(),
                detail,
            },
        }
    }

    /// `scheme://host/v2/<path>`
    pub(crate) fn url(&self, host: &Host, path: &str) -> Url {
        host.base
            .join(&format!("v2/{path}"))
            .expect("registry paths are valid URL paths")
    }

    /// Verifies credentials against a registry's `/v2/` (and its token server).
    pub fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let host = self.host(registry)?;
        if self.creds(&host)?.is_none() {
            return Err(RegistryError::Unauthorized {
                host: host.name.clone(),
                detail: "no credentials given".into(),
            });
        }
        let scope = Scope::default();
        let url = self.url(&host, "");
        let resp = self.retrying(&|| format!("login to {}", host.name), || {
            self.send(&host, &scope, &|h| h.get(url.clone()))
        })?;
        if resp.status().is_success() {
            return Ok(());
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                host: host.name.clone(),
                detail: "wrong username or password".into(),
            });
        }
        Err(self.status_error(&host, "", "GET /v2/", resp))
    }
}

fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .min_by_key(|c| matches!(c, Challenge::Basic { .. }))
}

fn basic_header(c: &Credentials) -> String {
    let (u, p) = match c {
        Credentials::Basic { username, password } => (username.as_str(), password.as_str()),
        Credentials::IdentityToken { username, token } => (username.as_str(), token.as_str()),
    };
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

/// `lade login`: verifies `username`/`password` against the registry and stores them in the
/// docker config file (`config_path`, default `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`). Returns the file written.
pub fn login(
    opts: &ClientOptions,
    registry: &str,
    username: &str,
    password: &str,
    config_path: Option<&std::path::Path>,
) -> Result<PathBuf, RegistryError> {
    let registry = super::auth_registry_name(registry);
    let mut opts = opts.clone();
    opts.auth.explicit.insert(
        registry.clone(),
        Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        },
    );
    let client = Client::new(opts)?;
    client.check_login(&registry)?;
    let path = match config_path {
        Some(p) => p.to_path_buf(),
        None => super::auth::docker_config_path().ok_or_else(|| RegistryError::AuthFile {
            path: PathBuf::from("~/.docker/config.json"),
            detail: "neither DOCKER_CONFIG nor HOME is set".into(),
        })?,
    };
    super::auth::store_credentials(&path, &registry, username, password)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_ports() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("127.1.2.3:80"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("[::ffff:127.0.0.1]:5000"));
        assert!(!is_loopback("[::ffff:10.0.0.1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert_eq!(strip_port("[::1]:5000"), "[::1]");
        assert_eq!(strip_port("h:5000"), "h");
    }

    #[test]
    fn insecure_registries_match_the_port_when_given() {
        let c = |entries: &[&str]| {
            Client::new(ClientOptions {
                insecure_registries: entries.iter().map(|e| e.to_string()).collect(),
                auth: AuthConfig::default(),
                ..ClientOptions::default()
            })
            .unwrap()
        };
        let one_port = c(&["reg.example:5000"]);
        assert!(one_port.is_insecure("reg.example:5000"));
        assert!(!one_port.is_insecure("reg.example:5001"));
        assert!(!one_port.is_insecure("reg.example"));
        assert!(!one_port.is_insecure("other.example:5000"));
        let any_port = c(&["Reg.Example"]);
        assert!(any_port.is_insecure("reg.example:5000"));
        assert!(any_port.is_insecure("reg.example"));
        assert!(!any_port.is_insecure("reg.example.org"));
        let url = c(&["http://reg.example:5000/"]);
        assert!(url.is_insecure("reg.example:5000"));
        assert!(!url.is_insecure("reg.example:443"));
        let v6 = c(&["[fd00::1]:5000"]);
        assert!(v6.is_insecure("[fd00::1]:5000"));
        assert!(!v6.is_insecure("[fd00::1]:5001"));
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert!(p.delay(1, None) >= Duration::from_millis(100));
        assert!(p.delay(1, None) <= Duration::from_millis(110));
        assert!(p.delay(3, None) >= Duration::from_millis(400));
        assert!(p.delay(10, None) <= Duration::from_millis(1100));
        assert_eq!(p.delay(1, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(100))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        // 784111777 = 1994-11-06T08:49:37Z, the RFC's example.
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(s), Some(784_111_777), "{s}");
        }
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(1_835_481_599)
        );
        assert_eq!(parse_http_date("tomorrow"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"), None);

        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(
            "retry-after",
            "Fri, 01 Jan 2100 00:00:00 GMT".parse().unwrap(),
        );
        assert!(retry_after(&h).unwrap() > Duration::from_secs(365 * 86_400));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn only_408_429_and_5xx_are_transient() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 409, 413, 416, 422] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(
            error_body_summary(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(error_body_summary(b"\n oops \nmore"), "oops");
        assert_eq!(error_body_summary(b""), "(no details)");
    }
}
