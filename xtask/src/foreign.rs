//! What the foreign-platform RUN tests need: an arm64 static busybox and, where this machine
//! allows it, a binfmt_misc handler that runs arm64 binaries through QEMU.
//!
//! The busybox is Debian's `busybox-static` for arm64, downloaded as a .deb from the mirror the
//! apt sources name (the host's dpkg configuration is not touched: no foreign architecture is
//! added) and kept in the xtask cache (`debian::cache_dir`). Its pool path is the host
//! package's with the architecture replaced; a binNMU suffix (`+bN`) the arm64 build may lack
//! is tried without. The binary is checked to be a static aarch64 ELF before it is used.
//!
//! As root, binfmt_misc is mounted when it is not, and `qemu-aarch64` is enabled through
//! binfmt-support (`update-binfmts`), else registered by hand with the F flag. Elsewhere the
//! tests see no handler and check lade's error instead (they say which path they took).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::debian::{cache_dir, mirror, Lock};
use crate::proc::{random_hex, run_ok, which};

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
/// Debian qemu-user-static's aarch64 magic and mask (an ELF64 LE executable or shared
/// object for EM_AARCH64), as `\xHH` escapes for the register file.
const AARCH64_MAGIC: &str =
    r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00";
const AARCH64_MASK: &str =
    r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";

/// The path of the cached arm64 busybox, downloading it when missing.
pub fn busybox_arm64() -> Result<PathBuf> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let dest = cache.join("busybox-static-arm64");
    if is_static_aarch64(&dest) {
        return Ok(dest);
    }
    let _lock = Lock::exclusive(&cache.join("lock"))?;
    if is_static_aarch64(&dest) {
        return Ok(dest);
    }
    let tmp = cache.join(format!("tmp-{}", random_hex(8)?));
    fs::create_dir(&tmp)?;
    let result = download_busybox(&tmp, &dest);
    let _ = fs::remove_dir_all(&tmp);
    result?;
    Ok(dest)
}

fn download_busybox(tmp: &Path, dest: &Path) -> Result<()> {
    let mirror = mirror()?;
    let out =
        run_ok(Command::new("apt-cache").args(["show", "--no-all-versions", "busybox-static"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let host_deb = text
        .lines()
        .find_map(|l| l.strip_prefix("Filename: "))
        .context("apt-cache show busybox-static names no Filename (run apt-get update?)")?;
    let (stem, _arch) = host_deb
        .trim()
        .trim_end_matches(".deb")
        .rsplit_once('_')
        .with_context(|| format!("unexpected package file name {host_deb}"))?;
    let mut candidates = vec![format!("{stem}_arm64.deb")];
    if let Some((no_binnmu, n)) = stem.rsplit_once("+b") {
        if n.chars().all(|c| c.is_ascii_digit()) {
            candidates.push(format!("{no_binnmu}_arm64.deb"));
        }
    }
    let deb = tmp.join("busybox-static_arm64.deb");
    let mut tried = Vec::new();
    let mut found = false;
    for c in &candidates {
        let url = format!("{mirror}/{c}");
        if fetch(&url, &deb).is_ok() {
            eprintln!("xtask: downloaded {url}");
            found = true;
            break;
        }
        tried.push(url);
    }
    if !found {
        bail!(
            "no arm64 busybox-static at {} (is the mirror reachable?)",
            tried.join(" or ")
        );
    }
    let tar = tmp.join("data.tar");
    run_ok(
        Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(&deb)
            .stdout(fs::File::create(&tar)?),
    )?;
    let bin = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg("./bin/busybox"),
    )?;
    let staged = tmp.join("busybox");
    fs::write(&staged, &bin.stdout)?;
    if !is_static_aarch64(&staged) {
        bail!(
            "the busybox in {} is not a static aarch64 executable",
            deb.display()
        );
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))?;
    fs::rename(&staged, dest)
        .with_context(|| format!("renaming {} to {}", staged.display(), dest.display()))?;
    Ok(())
}

/// `url` into `dest` with python3's urllib (a test dependency already).
fn fetch(url: &str, dest: &Path) -> Result<()> {
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])",
            url,
        ])
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running python3")?;
    if !status.success() {
        bail!("downloading {url} failed");
    }
    Ok(())
}

/// A 64-bit little-endian ELF for EM_AARCH64 without a program interpreter.
fn is_static_aarch64(p: &Path) -> bool {
    let Ok(b) = fs::read(p) else {
        return false;
    };
    b.len() > 64
        && &b[..4] == b"\x7fELF"
        && b[4] == 2
        && b[5] == 1
        && u16::from_le_bytes([b[18], b[19]]) == 183
        && crate::deps::is_static_elf(p)
}

/// Makes sure binfmt_misc is mounted and `qemu-aarch64` registered with the F flag, as far as
/// this process may; returns what it found or did, for the summary line.
pub fn ensure_binfmt() -> String {
    if std::env::consts::ARCH == "aarch64" {
        return "arm64 is this host's own architecture".into();
    }
    // SAFETY: geteuid(2) has no failure modes.
    let root = unsafe { libc::geteuid() } == 0;
    let status = Path::new(BINFMT).join("status");
    if !status.exists() && root {
        let _ = Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT])
            .stderr(Stdio::null())
            .status();
    }
    if !status.exists() {
        return format!("binfmt_misc is not mounted at {BINFMT}");
    }
    let entry = Path::new(BINFMT).join("qemu-aarch64");
    if !entry.exists() && root {
        if which("update-binfmts").is_some() {
            let _ = Command::new("update-binfmts")
                .args(["--enable", "qemu-aarch64"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let emulator = Path::new("/usr/bin/qemu-aarch64-static");
        if !entry.exists() && emulator.exists() {
            let line = format!(
                ":qemu-aarch64:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{}:F",
                emulator.display()
            );
            let _ = fs::write(Path::new(BINFMT).join("register"), line);
        }
    }
    match fs::read_to_string(&entry) {
        Ok(text) => {
            let enabled = text.lines().next() == Some("enabled");
            let flags = text
                .lines()
                .find_map(|l| l.strip_prefix("flags: "))
                .unwrap_or("");
            if enabled && flags.contains('F') {
                format!("qemu-aarch64 registered (flags {flags})")
            } else {
                format!(
                    "qemu-aarch64 registered but unusable (enabled: {enabled}, flags {flags:?})"
                )
            }
        }
        Err(_) => "no qemu-aarch64 handler (install qemu-user-static and binfmt-support)".into(),
    }
}
