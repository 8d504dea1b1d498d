//! Debian bookworm bases for the RUN tests, made once with `debootstrap --variant=minbase` from
//! the mirror the machine's apt sources name, and kept as OCI layouts in a cache outside the
//! repository (`$XDG_CACHE_HOME/lade-xtask`, else `/var/cache/lade-xtask` as root, else
//! `~/.cache/lade-xtask`), with a directory of Flask wheels from `pip download`.
//!
//! Each product is made in a `tmp-*` directory of the cache and renamed into place only when
//! complete, under an exclusive lock of the cache (two xtask runs never build the same thing
//! twice, and a run killed half-way leaves only a `tmp-*` directory the next run removes). A
//! layout whose blobs do not match the sizes recorded beside them is made again.
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::proc::{log_tail, random_hex, run_ok, unmount_under};

/// The suite every base is made from.
const SUITE: &str = "bookworm";
/// The layout tag (`oci:DIR:TAG`).
const TAG: &str = "bookworm";
/// Files newer than this (2025-05-20, the date of the snapshot the test machines' sources name)
/// get this mtime in the layer, so one root filesystem always gives the same layer digest;
/// files unpacked from packages keep their (older) mtimes.
const CLAMP_MTIME: u64 = 1_747_699_200;
/// Packages of the second base: Python with pip for the Flask test, gcc for the multi-stage one.
const PYTHON_GCC: &str = "python3,python3-pip,gcc,libc6-dev";
/// What the wheel directory holds.
const WHEELS_FOR: &str = "flask";

/// The cached products, as paths for the `LADE_TEST_*` contract.
pub struct Bases {
    /// `oci:DIR:TAG` of the minbase.
    pub minbase: String,
    /// `oci:DIR:TAG` of the minbase with python3, pip, gcc and libc6-dev.
    pub python_gcc: String,
    /// A directory of the wheels Flask and its dependencies need (cp311, manylinux).
    pub wheels: PathBuf,
}

/// Makes whatever is missing from the cache and returns where everything is.
pub fn ensure() -> Result<Bases> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let _lock = Lock::exclusive(&cache.join("lock"))?;
    sweep_tmp(&cache);
    let mirror = mirror()?;
    let minbase = cache.join("debian-bookworm-minbase.oci");
    ensure_layout(&cache, &minbase, &mirror, None)?;
    let python_gcc = cache.join("debian-bookworm-python-gcc.oci");
    ensure_layout(&cache, &python_gcc, &mirror, Some(PYTHON_GCC))?;
    let wheels = cache.join("wheels-flask");
    ensure_wheels(&cache, &wheels)?;
    let oci = |p: &Path| format!("oci:{}:{TAG}", p.display());
    Ok(Bases {
        minbase: oci(&minbase),
        python_gcc: oci(&python_gcc),
        wheels,
    })
}

pub(crate) fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("lade-xtask");
    }
    // SAFETY: geteuid(2) has no failure modes.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/lade-xtask");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/lade-xtask")
}

/// An exclusive `flock` on a file of the cache, released when dropped.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    pub(crate) fn exclusive(path: &Path) -> Result<Self> {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self { _file: f })
    }
}

/// Removes what an interrupted run left (we hold the lock: no one is using them), unmounting
/// first: debootstrap mounts /proc and /sys inside its target.
fn sweep_tmp(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("tmp-") {
            unmount_under(&e.path());
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The Debian mirror of the machine's apt sources: the first `deb` line (one-line format) or
/// `Types: deb` stanza (deb822) that has the `main` component and is not a security or
/// updates archive, in `/etc/apt/sources.list` then `/etc/apt/sources.list.d/*.list|*.sources`
/// by name.
pub(crate) fn mirror() -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.to_string_lossy();
                n.ends_with(".list") || n.ends_with(".sources")
            })
            .collect();
        more.sort();
        files.extend(more);
    }
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        let found = if f.to_string_lossy().ends_with(".sources") {
            mirror_in_deb822(&text)
        } else {
            mirror_in_one_line(&text)
        };
        if let Some(m) = found {
            return Ok(m);
        }
    }
    bail!(
        "no Debian mirror in the apt sources ({}): need a `deb URI SUITE main` line or a deb822 \
         stanza with `Types: deb` and `Components: main`",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn is_debian_archive(uri: &str, suites: &[&str]) -> bool {
    !uri.contains("security")
        && suites
            .iter()
            .any(|s| !s.contains("-security") && !s.contains("-updates"))
}

fn mirror_in_one_line(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        // Options: `deb [arch=amd64 signed-by=...] URI ...`.
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']'))?;
            rest.drain(..=end);
        }
        let [uri, suite, components @ ..] = rest.as_slice() else {
            continue;
        };
        if components.contains(&"main") && is_debian_archive(uri, &[suite]) {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

fn mirror_in_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<String> {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .flat_map(|(_, v)| v.split_whitespace().map(String::from).collect::<Vec<_>>())
                .collect()
        };
        let enabled = field("Enabled").first().is_none_or(|v| v != "no");
        let types = field("Types");
        let uris = field("URIs");
        let suites = field("Suites");
        let components = field("Components");
        let suites: Vec<&str> = suites.iter().map(String::as_str).collect();
        if !enabled || !types.iter().any(|t| t == "deb") || !components.iter().any(|c| c == "main")
        {
            continue;
        }
        if let Some(uri) = uris.first() {
            if is_debian_archive(uri, &suites) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// Makes the layout `dest` (debootstrap, then tar, then the OCI files) unless it is there and
/// sound.
fn ensure_layout(cache: &Path, dest: &Path, mirror: &str, include: Option<&str>) -> Result<()> {
    if layout_ok(dest) {
        return Ok(());
    }
    if dest.exists() {
        eprintln!(
            "xtask: {} is incomplete or corrupt: making it again",
            dest.display()
        );
        fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    let tmp = cache.join(format!("tmp-{}", random_hex(8)?));
    fs::create_dir(&tmp)?;
    let result = make_layout(&tmp, dest, mirror, include);
    unmount_under(&tmp);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn make_layout(tmp: &Path, dest: &Path, mirror: &str, include: Option<&str>) -> Result<()> {
    let root = tmp.join("root");
    let log = tmp.join("debootstrap.log");
    let what = include.map_or("minbase".to_string(), |i| format!("minbase + {i}"));
    eprintln!(
        "xtask: debootstrap {SUITE} ({what}) from {mirror} (once; cached in {})",
        dest.display()
    );
    let started = Instant::now();
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if let Some(i) = include {
        cmd.arg(format!("--include={i}"));
    }
    cmd.args([
        SUITE,
        root.to_str().context("non-UTF-8 cache path")?,
        mirror,
    ])
    .stdin(Stdio::null())
    .stdout(File::create(&log)?)
    .stderr(File::create(tmp.join("debootstrap.err"))?);
    let status = cmd
        .status()
        .context("running debootstrap (package debootstrap)")?;
    crate::signal::check()?;
    if !status.success() {
        // debootstrap prints its `E:` lines on stdout (the log).
        let err = fs::read_to_string(tmp.join("debootstrap.err")).unwrap_or_default();
        let tail = log_tail(&log, 15);
        let hint = if [&err, &tail]
            .iter()
            .any(|t| t.contains("Failed getting release file") || t.contains("Couldn't download"))
        {
            format!("\nis the mirror {mirror} reachable from here? (it comes from the apt sources)")
        } else {
            String::new()
        };
        bail!(
            "debootstrap --variant=minbase {SUITE} from {mirror} failed ({status}):\n{}\n{}{hint}",
            err.trim_end(),
            tail
        );
    }
    let booted = started.elapsed();
    let layout = tmp.join("layout");
    write_layout(&root, &layout, tmp)?;
    fs::rename(&layout, dest)
        .with_context(|| format!("renaming {} to {}", layout.display(), dest.display()))?;
    eprintln!(
        "xtask: {} made (debootstrap {:.0?}, layout {:.0?}, layer {} MB)",
        dest.display(),
        booted,
        started.elapsed() - booted,
        dir_size(&dest.join("blobs/sha256")) / 1_000_000
    );
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// One uncompressed layer of `root` (a reproducible tar: sorted names, numeric owners, mtimes
/// clamped, no /dev, /proc, /sys contents, apt lists or the host's hostname and resolv.conf
/// debootstrap copied), its config, manifest and index.
fn write_layout(root: &Path, layout: &Path, tmp: &Path) -> Result<()> {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let tar = tmp.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args(["--format=gnu", "--sort=name", "--numeric-owner"])
            .arg(format!("--mtime=@{CLAMP_MTIME}"))
            .arg("--clamp-mtime")
            .args([
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "--exclude=./run/*",
                "--exclude=./tmp/*",
                "--exclude=./var/lib/apt/lists/*",
                "--exclude=./var/cache/apt/*",
                "--exclude=./var/log/*",
                "--exclude=./etc/hostname",
                "--exclude=./etc/resolv.conf",
                "--exclude=./debootstrap",
            ])
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )?;
    let layer = put_blob(&blobs, &tar)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = format!(
        concat!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["#,
            r#""PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"#,
            r#""Cmd":["bash"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff}"]}},"#,
            r#""history":[{{"created_by":"debootstrap --variant=minbase {suite} (lade xtask)"}}]}}"#
        ),
        arch = arch,
        diff = layer.0,
        suite = SUITE
    );
    let config = put_bytes(&blobs, tmp, config.as_bytes())?;
    let manifest = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""config":{{"mediaType":"application/vnd.oci.image.config.v1+json","#,
            r#""digest":"sha256:{c}","size":{cs}}},"layers":[{{"#,
            r#""mediaType":"application/vnd.oci.image.layer.v1.tar","#,
            r#""digest":"sha256:{l}","size":{ls}}}]}}"#
        ),
        c = config.0,
        cs = config.1,
        l = layer.0,
        ls = layer.1
    );
    let manifest = put_bytes(&blobs, tmp, manifest.as_bytes())?;
    let index = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","#,
            r#""manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            r#""digest":"sha256:{m}","size":{ms},"#,
            r#""platform":{{"architecture":"{arch}","os":"linux"}},"#,
            r#""annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#
        ),
        m = manifest.0,
        ms = manifest.1,
        arch = arch,
        tag = TAG
    );
    fs::write(layout.join("index.json"), index)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let sizes: String = [&layer, &config, &manifest]
        .iter()
        .map(|(d, s)| format!("{d} {s}\n"))
        .collect();
    fs::write(layout.join("xtask-blobs"), sizes)?;
    Ok(())
}

/// Moves `file` into `blobs` under its digest; returns (hex digest, size).
fn put_blob(blobs: &Path, file: &Path) -> Result<(String, u64)> {
    let out = run_ok(Command::new("sha256sum").arg(file))?;
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_string();
    let size = fs::metadata(file)?.len();
    fs::rename(file, blobs.join(&hex))?;
    Ok((hex, size))
}

fn put_bytes(blobs: &Path, tmp: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let f = tmp.join("blob");
    File::create(&f)?.write_all(bytes)?;
    put_blob(blobs, &f)
}

/// The layout is there, and every blob it recorded has its recorded size (a cheap check that
/// catches truncation and deletion; reading 300 MB to hash it on every test run would not be).
fn layout_ok(dest: &Path) -> bool {
    let Ok(list) = fs::read_to_string(dest.join("xtask-blobs")) else {
        return false;
    };
    dest.join("index.json").is_file()
        && list.lines().count() == 3
        && list.lines().all(|l| {
            let Some((hex, size)) = l.split_once(' ') else {
                return false;
            };
            fs::metadata(dest.join("blobs/sha256").join(hex))
                .is_ok_and(|m| Some(m.len()) == size.parse().ok())
        })
}

/// `pip download flask` into `dest` once: wheels only, for CPython 3.11 on manylinux (the
/// bookworm python3 of the base, whatever Python runs here).
fn ensure_wheels(cache: &Path, dest: &Path) -> Result<()> {
    let has_flask = |d: &Path| {
        fs::read_dir(d).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().to_lowercase();
                n.starts_with("flask-") && n.ends_with(".whl")
            })
        })
    };
    if has_flask(dest) && dest.join("xtask-complete").is_file() {
        return Ok(());
    }
    if dest.exists() {
        fs::remove_dir_all(dest)?;
    }
    let tmp = cache.join(format!("tmp-{}", random_hex(8)?));
    eprintln!(
        "xtask: pip download {WHEELS_FOR} (once; cached in {})",
        dest.display()
    );
    let platform = match std::env::consts::ARCH {
        "aarch64" => "manylinux2014_aarch64",
        _ => "manylinux2014_x86_64",
    };
    let result = run_ok(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--only-binary=:all:", "--python-version", "3.11"])
            .args([
                "--implementation",
                "cp",
                "--abi",
                "cp311",
                "--platform",
                platform,
            ])
            .arg("-d")
            .arg(&tmp)
            .arg(WHEELS_FOR),
    )
    .context("pip download (needs python3 with pip, package python3-pip, and PyPI reachable)")
    .and_then(|_| {
        if !has_flask(&tmp) {
            bail!("pip download left no flask wheel in {}", tmp.display());
        }
        fs::write(tmp.join("xtask-complete"), "")?;
        fs::rename(&tmp, dest)?;
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_skips_security_and_takes_main() {
        let text = "Types: deb\n# comment: x\nURIs: http://deb.debian.org/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n\n\
                    Types: deb\nURIs: http://deb.example.org/debian/\n\
                    Suites: bookworm bookworm-updates\nComponents: main contrib\n";
        assert_eq!(
            mirror_in_deb822(text).as_deref(),
            Some("http://deb.example.org/debian")
        );
        assert_eq!(
            mirror_in_deb822("Types: deb-src\nURIs: http://x/\nSuites: a\nComponents: main\n"),
            None
        );
    }

    #[test]
    fn a_layout_with_a_missing_or_truncated_blob_is_not_ok() {
        let dir = std::env::temp_dir().join(format!("xtask-layout-ok-{}", std::process::id()));
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(dir.join("index.json"), "{}").unwrap();
        for (name, data) in [("aa", "1"), ("bb", "22"), ("cc", "333")] {
            fs::write(blobs.join(name), data).unwrap();
        }
        assert!(
            !layout_ok(&dir),
            "no xtask-blobs: not made by xtask to the end"
        );
        fs::write(dir.join("xtask-blobs"), "aa 1\nbb 2\ncc 3\n").unwrap();
        assert!(layout_ok(&dir));
        fs::write(blobs.join("bb"), "2").unwrap();
        assert!(!layout_ok(&dir), "truncated blob");
        fs::remove_file(blobs.join("bb")).unwrap();
        assert!(!layout_ok(&dir), "missing blob");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_line_with_options_and_comments() {
        let text = "# deb http://commented/ bookworm main\n\
                    deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_in_one_line(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_in_one_line("deb http://x/ bookworm contrib\n"), None);
    }
}
