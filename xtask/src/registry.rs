//! Private OCI registries (CNCF distribution, Debian's `docker-registry`) on 127.0.0.1: a plain
//! HTTP one, and one with TLS from a throw-away CA and htpasswd basic auth.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::proc::{free_port, random_hex, run_ok, which, Daemon};

pub struct Registry {
    _daemon: Daemon,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

/// The CA, server certificate and credentials of the TLS registry.
pub struct TlsAuth {
    /// The CA certificate (PEM) that signed the server certificate.
    pub ca: PathBuf,
    /// A directory holding only `ca.crt` (the CA), for `skopeo --cert-dir` and the like.
    pub cert_dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    htpasswd: PathBuf,
    pub user: String,
    pub password: String,
}

/// Starts a plain HTTP registry with filesystem storage under `dir`; ready once `GET /v2/`
/// answers 200.
pub fn start_plain(dir: &Path) -> Result<Registry> {
    start(dir, None)
}

/// Makes a CA, a server certificate for 127.0.0.1 and a random password, then starts a registry
/// that requires both; ready once it accepts connections.
pub fn start_tls(dir: &Path) -> Result<(Registry, TlsAuth)> {
    std::fs::create_dir_all(dir)?;
    let tls = make_tls_auth(dir)?;
    let reg = start(dir, Some(&tls))?;
    Ok((reg, tls))
}

fn start(dir: &Path, tls: Option<&TlsAuth>) -> Result<Registry> {
    let bin = which("docker-registry").context("docker-registry not found")?;
    std::fs::create_dir_all(dir.join("storage"))?;
    let mut last_err = None;
    // The port is free when chosen but may be taken before the registry binds it: retry.
    for _ in 0..3 {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(&config, config_yaml(dir, &addr, tls))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg(&config);
        let name = if tls.is_some() {
            "registry (tls)"
        } else {
            "registry"
        };
        let mut daemon = Daemon::spawn(
            name,
            cmd,
            &dir.join("registry.log"),
            Duration::from_secs(10),
        )?;
        let ready = daemon.wait_ready(Duration::from_secs(30), || match tls {
            None => http_status(&addr, "/v2/") == Some(200),
            Some(_) => TcpStream::connect(&addr).is_ok(),
        });
        match ready {
            Ok(()) => {
                return Ok(Registry {
                    _daemon: daemon,
                    addr,
                })
            }
            Err(e) => {
                crate::signal::check()?;
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap())
}

fn config_yaml(dir: &Path, addr: &str, tls: Option<&TlsAuth>) -> String {
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: {secret}\n",
        storage = dir.join("storage").display(),
        secret = random_hex(16).unwrap_or_else(|_| "lade-test".into()),
    );
    if let Some(t) = tls {
        y.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n\
             auth:\n  htpasswd:\n    realm: lade-test\n    path: {}\n",
            t.cert.display(),
            t.key.display(),
            t.htpasswd.display()
        ));
    }
    y
}

/// The status code of a plain HTTP GET, or None if nothing answered.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

fn make_tls_auth(dir: &Path) -> Result<TlsAuth> {
    let openssl = || Command::new("openssl");
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    run_ok(
        openssl()
            .args(["req", "-x509", "-new", "-nodes", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-days", "7"])
            .args(["-subj", "/CN=lade test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    )?;
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.pem");
    run_ok(
        openssl()
            .args(["req", "-new", "-nodes", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    )?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    run_ok(
        openssl()
            .args(["x509", "-req", "-days", "7", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    )?;
    let cert_dir = dir.join("certs");
    std::fs::create_dir_all(&cert_dir)?;
    std::fs::copy(&ca, cert_dir.join("ca.crt"))?;

    let user = "lade".to_string();
    let password = random_hex(12)?;
    let out = run_ok(Command::new("htpasswd").args(["-Bbn", &user, &password]))?;
    let entry = String::from_utf8(out.stdout)?;
    if !entry.starts_with("lade:$2") {
        bail!("htpasswd -B did not produce a bcrypt entry: {entry:?}");
    }
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, entry.trim_end().to_string() + "\n")?;
    Ok(TlsAuth {
        ca,
        cert_dir,
        cert,
        key,
        htpasswd,
        user,
        password,
    })
}
