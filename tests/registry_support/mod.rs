//! Test infrastructure for the registry tests: a real CNCF registry process (or the one CI
//! started), a TLS + htpasswd variant, a fault-injecting HTTP proxy, and a bearer token server.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const USER: &str = "lade-user";
pub const PASSWORD: &str = "s3cret-pass";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A registry for one test: the CI one (`LADE_TEST_REGISTRY` etc.) or our own process.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// CA file for TLS registries.
    pub ca: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl TestRegistry {
    /// An open registry over plain HTTP.
    pub fn open() -> TestRegistry {
        if let Ok(addr) = std::env::var("LADE_TEST_REGISTRY") {
            if !addr.is_empty() {
                return TestRegistry {
                    addr,
                    ca: None,
                    user: None,
                    password: None,
                    child: None,
                    _dir: None,
                };
            }
        }
        Self::spawn(false)
    }

    /// A registry behind TLS (self-signed CA) with htpasswd basic auth.
    pub fn tls_auth() -> TestRegistry {
        if let Ok(addr) = std::env::var("LADE_TEST_TLS_REGISTRY") {
            if !addr.is_empty() {
                let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} not set"));
                return TestRegistry {
                    addr,
                    ca: Some(PathBuf::from(var("LADE_TEST_TLS_CA"))),
                    user: Some(var("LADE_TEST_TLS_USER")),
                    password: Some(var("LADE_TEST_TLS_PASSWORD")),
                    child: None,
                    _dir: None,
                };
            }
        }
        Self::spawn(true)
    }

    fn spawn(tls_auth: bool) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut extra = String::new();
        let mut ca = None;
        if tls_auth {
            make_certs(d);
            let line = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
            std::fs::write(d.join("htpasswd"), line).unwrap();
            extra = format!(
                "auth:\n  htpasswd:\n    realm: lade-test\n    path: {}\n",
                d.join("htpasswd").display()
            );
            ca = Some(d.join("ca.pem"));
        }
        let tls = if tls_auth {
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.pem").display(),
                d.join("server.key").display()
            )
        } else {
            String::new()
        };
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{extra}http:\n  addr: {addr}\n{tls}",
            d.join("data").display()
        );
        std::fs::write(d.join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry) must be installed");
        let mut reg = TestRegistry {
            addr: addr.clone(),
            ca,
            user: tls_auth.then(|| USER.to_string()),
            password: tls_auth.then(|| PASSWORD.to_string()),
            child: Some(child),
            _dir: Some(dir),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(&addr).is_ok() {
                break;
            }
            if let Some(st) = reg.child.as_mut().unwrap().try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(reg._dir.as_ref().unwrap().path().join("registry.log"))
                        .unwrap_or_default();
                panic!("docker-registry exited ({st}): {log}");
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn socket_addr(&self) -> SocketAddr {
        use std::net::ToSocketAddrs;
        self.addr.to_socket_addrs().unwrap().next().unwrap()
    }
}

fn make_certs(d: &Path) {
    let ossl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(d).args(args));
    };
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3",
        "-subj",
        "/CN=lade test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "3",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Faults the proxy injects; shared with the test.
#[derive(Default)]
pub struct Faults {
    /// Answer the next N matching requests with `fail_status` (and `Retry-After: 0`, or
    /// `retry_after` when set; an empty string sends no `Retry-After`).
    pub fail_next: usize,
    pub retry_after: Option<String>,
    /// When each injected failure was answered.
    pub failed_at: Vec<Instant>,
    pub fail_status: u16,
    /// Only requests whose path contains this (empty: all `/v2/` requests).
    pub fail_path: String,
    /// Fail every matching request, forever.
    pub fail_always: bool,
    /// Once: cut the connection after this many body bytes of a request with a larger body.
    pub drop_body_after: Option<usize>,
    /// Let this many requests that would be dropped pass first.
    pub drop_skip: usize,
    /// Flip a byte in blob downloads.
    pub corrupt_blobs: bool,
    /// Once: cut a blob download (`GET /blobs/sha256:…`) after this many body bytes.
    pub cut_download_after: Option<usize>,
    /// Require bearer tokens from our token server.
    pub bearer: Option<Arc<TokenServer>>,
    /// Hold every blob upload request (PUT/PATCH with a body) this long before forwarding,
    /// so that concurrent uploads overlap observably.
    pub upload_delay: Option<Duration>,
    /// Blob upload requests being forwarded now, and the most there ever were at once.
    pub uploads_in_flight: usize,
    pub max_uploads_in_flight: usize,
    /// Answer every blob `HEAD` with 200 and a `Content-Length` of 1, like a registry that
    /// claims to have everything.
    pub head_lie: bool,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// When the proxy answered.
    pub at: Instant,
    /// The request's `Content-Length`.
    pub body_len: usize,
}

/// A fault-injecting HTTP/1.1 proxy in front of a registry: one request per connection
/// (it answers with `Connection: close`), so faults are per request.
pub struct FaultProxy {
    pub addr: String,
    pub faults: Arc<Mutex<Faults>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub dropped: Arc<AtomicU64>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults: Arc<Mutex<Faults>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let (f, s, dr) = (faults.clone(), seen.clone(), dropped.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (f, s, dr) = (f.clone(), s.clone(), dr.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream, &f, &s, &dr);
                });
            }
        });
        FaultProxy {
            addr,
            faults,
            seen,
            dropped,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many connections the proxy has cut so far.
    pub fn drops(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

struct Request {
    method: String,
    path: String,
    head: Vec<String>,
    content_length: usize,
}

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    // Not HTTP (e.g. a TLS ClientHello probing for HTTPS): close.
    let buf = r.fill_buf()?;
    if buf.is_empty() || !buf[0].is_ascii_uppercase() {
        return Ok(None);
    }
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let mut parts = head[0].split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut content_length = 0;
    for h in &head[1..] {
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        if k.eq_ignore_ascii_case("content-length") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        assert!(
            !(k.eq_ignore_ascii_case("transfer-encoding")),
            "proxy does not support chunked requests"
        );
    }
    Ok(Some(Request {
        method,
        path,
        head,
        content_length,
    }))
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.head[1..].iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn respond(mut conn: &TcpStream, status: u16, extra: &[String], body: &str) {
    let mut s = format!(
        "HTTP/1.1 {status} Injected\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
        body.len()
    );
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    let _ = conn.write_all(s.as_bytes());
    let _ = conn.flush();
}

fn handle(
    conn: TcpStream,
    upstream: SocketAddr,
    faults: &Mutex<Faults>,
    seen: &Mutex<Vec<Seen>>,
    dropped: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(req) = read_head(&mut reader)? else {
        let _ = conn.shutdown(Shutdown::Both);
        return Ok(());
    };
    let record = |status: u16| {
        seen.lock().unwrap().push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            status,
            at: Instant::now(),
            body_len: req.content_length,
        })
    };
    let drain = |reader: &mut BufReader<TcpStream>| {
        let _ = std::io::copy(
            &mut reader.take(req.content_length as u64),
            &mut std::io::sink(),
        );
    };
    // Decide what to do while holding the lock briefly.
    enum Action {
        Fail(u16, String),
        Unauthorized(String),
        Drop(usize),
        LieHead,
        Forward { corrupt: bool, cut: Option<usize> },
    }
    let action = {
        let mut f = faults.lock().unwrap();
        let matches = req.path.starts_with("/v2/")
            && (f.fail_path.is_empty() || req.path.contains(&f.fail_path));
        let bearer_ok = match &f.bearer {
            None => None,
            Some(ts) => {
                let tok = header(&req, "authorization")
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::to_string);
                Some(if tok.as_deref().is_some_and(|t| ts.use_token(t)) {
                    Ok(())
                } else {
                    Err(ts.challenge())
                })
            }
        };
        if let Some(Err(challenge)) = bearer_ok {
            Action::Unauthorized(challenge)
        } else if f.head_lie && req.method == "HEAD" && req.path.contains("/blobs/sha256:") {
            Action::LieHead
        } else if matches && (f.fail_always || f.fail_next > 0) {
            f.fail_next = f.fail_next.saturating_sub(1);
            f.failed_at.push(Instant::now());
            Action::Fail(
                f.fail_status,
                f.retry_after.clone().unwrap_or_else(|| "0".into()),
            )
        } else if let Some(n) = f.drop_body_after.filter(|n| req.content_length > *n) {
            if f.drop_skip > 0 {
                f.drop_skip -= 1;
                Action::Forward {
                    corrupt: false,
                    cut: None,
                }
            } else {
                f.drop_body_after = None;
                Action::Drop(n)
            }
        } else {
            let blob_get = req.method == "GET" && req.path.contains("/blobs/sha256:");
            Action::Forward {
                corrupt: f.corrupt_blobs && blob_get,
                cut: if blob_get { f.cut_download_after } else { None },
            }
        }
    };
    match action {
        Action::Fail(status, retry_after) => {
            drain(&mut reader);
            record(status);
            let extra: Vec<String> = if retry_after.is_empty() {
                Vec::new()
            } else {
                vec![format!("Retry-After: {retry_after}")]
            };
            respond(
                &conn,
                status,
                &extra,
                r#"{"errors":[{"code":"UNAVAILABLE","message":"injected failure"}]}"#,
            );
            return Ok(());
        }
        Action::LieHead => {
            record(200);
            let mut c = &conn;
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nDocker-Content-Digest: sha256:0\r\nConnection: close\r\n\r\n",
            );
            let _ = conn.shutdown(Shutdown::Both);
            return Ok(());
        }
        Action::Unauthorized(challenge) => {
            drain(&mut reader);
            record(401);
            respond(
                &conn,
                401,
                &[format!("WWW-Authenticate: {challenge}")],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
            return Ok(());
        }
        _ => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    let mut head = format!("{}\r\n", req.head[0]);
    for h in &req.head[1..] {
        let k = h.split_once(':').map_or(h.as_str(), |(k, _)| k);
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("authorization") {
            continue;
        }
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    if let Action::Drop(n) = action {
        // Forward part of the body, then cut both connections.
        std::io::copy(&mut (&mut reader).take(n as u64), &mut up)?;
        up.flush()?;
        dropped.fetch_add(1, Ordering::SeqCst);
        record(0);
        std::thread::sleep(Duration::from_millis(50));
        let _ = up.shutdown(Shutdown::Both);
        let _ = conn.shutdown(Shutdown::Both);
        return Ok(());
    }
    let upload = matches!(req.method.as_str(), "PUT" | "PATCH")
        && req.path.contains("/blobs/uploads/")
        && req.content_length > 0;
    // Counts this upload as in flight until the function returns.
    struct InFlight<'a>(Option<&'a Mutex<Faults>>);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            if let Some(f) = self.0 {
                f.lock().unwrap().uploads_in_flight -= 1;
            }
        }
    }
    let _in_flight = if upload {
        let delay = {
            let mut f = faults.lock().unwrap();
            f.uploads_in_flight += 1;
            f.max_uploads_in_flight = f.max_uploads_in_flight.max(f.uploads_in_flight);
            f.upload_delay
        };
        if let Some(d) = delay {
            std::thread::sleep(d);
        }
        InFlight(Some(faults))
    } else {
        InFlight(None)
    };
    std::io::copy(&mut (&mut reader).take(req.content_length as u64), &mut up)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(());
    };
    let head_text = String::from_utf8_lossy(&resp[..split]).to_string();
    let status: u16 = head_text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    record(status);
    let mut out = String::new();
    for (i, line) in head_text.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut body = resp[split + 4..].to_vec();
    if let Action::Forward { corrupt: true, .. } = action {
        if status == 200 && !body.is_empty() {
            body[0] ^= 0xff;
        }
    }
    let mut c = &conn;
    c.write_all(out.as_bytes())?;
    if let Action::Forward { cut: Some(n), .. } = action {
        if status == 200
            && body.len() > n
            && faults.lock().unwrap().cut_download_after.take().is_some()
        {
            // The headers promise the whole blob; send part of it and hang up.
            c.write_all(&body[..n])?;
            c.flush()?;
            dropped.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            let _ = conn.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    c.write_all(&body)?;
    c.flush()?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}

/// A bearer token server: issues tokens valid for `uses_per_token` requests (to simulate
/// expiry mid-push), optionally requiring basic credentials; records requested scopes.
pub struct TokenServer {
    pub addr: String,
    pub uses_per_token: u64,
    pub require: Option<(String, String)>,
    tokens: Mutex<HashMap<String, u64>>,
    pub issued: AtomicU64,
    pub scopes: Mutex<Vec<String>>,
    pub bad_credentials: AtomicU64,
    /// Bodies of POST (OAuth2 form) token requests.
    pub posts: Mutex<Vec<String>>,
}

impl TokenServer {
    pub fn start(uses_per_token: u64, require: Option<(&str, &str)>) -> Arc<TokenServer> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ts = Arc::new(TokenServer {
            addr: listener.local_addr().unwrap().to_string(),
            uses_per_token,
            require: require.map(|(u, p)| (u.to_string(), p.to_string())),
            tokens: Mutex::default(),
            issued: AtomicU64::new(0),
            scopes: Mutex::default(),
            bad_credentials: AtomicU64::new(0),
            posts: Mutex::default(),
        });
        let t = ts.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let t = t.clone();
                std::thread::spawn(move || t.serve(conn));
            }
        });
        ts
    }

    pub fn challenge(&self) -> String {
        format!(
            r#"Bearer realm="http://{}/token",service="lade-test-registry""#,
            self.addr
        )
    }

    fn use_token(&self, t: &str) -> bool {
        let mut toks = self.tokens.lock().unwrap();
        match toks.get_mut(t) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn serve(&self, conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let Ok(Some(req)) = read_head(&mut reader) else {
            return;
        };
        if let Some(q) = req.path.split_once('?').map(|(_, q)| q) {
            for kv in q.split('&') {
                if let Some(v) = kv.strip_prefix("scope=") {
                    self.scopes.lock().unwrap().push(
                        v.replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ","),
                    );
                }
            }
        }
        if req.method == "POST" {
            let mut body = vec![0; req.content_length];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).to_string();
            let ok = body.contains("grant_type=refresh_token")
                && body.contains("refresh_token=good-refresh-token");
            self.posts.lock().unwrap().push(body);
            if !ok {
                respond(&conn, 401, &[], r#"{"details":"invalid refresh token"}"#);
                return;
            }
        } else if let Some((u, p)) = &self.require {
            use base64::Engine as _;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            );
            if header(&req, "authorization") != Some(want.as_str()) {
                self.bad_credentials.fetch_add(1, Ordering::SeqCst);
                respond(&conn, 401, &[], r#"{"details":"invalid credentials"}"#);
                return;
            }
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let token = format!("lade-test-token-{n}");
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), self.uses_per_token);
        respond(
            &conn,
            200,
            &[],
            &format!(r#"{{"token":"{token}","expires_in":300}}"#),
        );
    }
}

/// A minimal HTTP server that answers `GET /v2/` with 200 and each path in `routes` with the
/// given content type and body (404 otherwise): a registry serving documents no real
/// registry accepts any more (Docker schema 1).
pub struct StubRegistry {
    pub addr: String,
}

impl StubRegistry {
    pub fn start(routes: Vec<(String, String, Vec<u8>)>) -> StubRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let routes = routes.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let Ok(Some(req)) = read_head(&mut reader) else {
                        let _ = conn.shutdown(Shutdown::Both);
                        return;
                    };
                    let found = routes.iter().find(|(p, _, _)| *p == req.path);
                    let (status, ct, body): (u16, &str, &[u8]) = match found {
                        Some((_, ct, body)) => (200, ct, body),
                        None if req.path == "/v2/" => (200, "application/json", b"{}"),
                        None => (404, "application/json", br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} Stub\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let mut c = &conn;
                    let _ = c.write_all(head.as_bytes());
                    if req.method != "HEAD" {
                        let _ = c.write_all(body);
                    }
                    let _ = c.flush();
                    let _ = conn.shutdown(Shutdown::Both);
                });
            }
        });
        StubRegistry { addr }
    }
}

/// How a [`StallServer`] misbehaves on every request but the `/v2/` probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Accept, read the request, never answer (not even the probe).
    Silent,
    /// Answer the probe, then read each request and never answer it.
    SilentAfterProbe,
    /// Answer the probe, then send each response's status line one byte every 200 ms.
    DripHeaders,
    /// Answer the probe, then send headers promising a large body and drip it one byte
    /// every 200 ms.
    DripBody,
}

/// A registry that stops answering: accepts connections on 127.0.0.1 and stalls as `Stall`
/// says; records each request line it read (`"GET /v2/x/manifests/1"`).
pub struct StallServer {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl StallServer {
    pub fn start(mode: Stall) -> StallServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || stall(conn, mode, &seen));
            }
        });
        StallServer { addr, requests }
    }

    /// Requests other than the `/v2/` probe.
    pub fn stalled_requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.ends_with(" /v2/"))
            .cloned()
            .collect()
    }
}

fn stall(conn: TcpStream, mode: Stall, seen: &Mutex<Vec<String>>) {
    let Ok(clone) = conn.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    // Keep-alive: several requests may come on one connection.
    loop {
        let req = match read_head(&mut reader) {
            Ok(Some(r)) => r,
            // A TLS ClientHello (the https probe) or EOF: hold the connection silently
            // until the client gives up, like a server that stopped answering.
            _ => {
                let mut sink = [0u8; 4096];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        };
        let _ = std::io::copy(
            &mut (&mut reader).take(req.content_length as u64),
            &mut std::io::sink(),
        );
        seen.lock()
            .unwrap()
            .push(format!("{} {}", req.method, req.path));
        let mut c = &conn;
        if req.path == "/v2/" && mode != Stall::Silent {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            );
            continue;
        }
        let drip = |bytes: &[u8]| {
            for b in bytes {
                if (&conn).write_all(&[*b]).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            true
        };
        match mode {
            Stall::Silent | Stall::SilentAfterProbe => {
                let mut sink = [0u8; 4096];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Stall::DripHeaders => {
                drip(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                return;
            }
            Stall::DripBody => {
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1000000\r\n\r\n",
                );
                drip(&vec![b' '; 1_000_000]);
                return;
            }
        }
    }
}
