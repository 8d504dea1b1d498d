//! The non-root user the rootless RUN tests (`tests/run_rootless.rs`) and the bench's rootless
//! row run lade as: a system user `lade-rootless` with a home of its own and 65 536 subordinate
//! uids and gids in `/etc/subuid` and `/etc/subgid`. Made as root, idempotently: an existing
//! user or range is kept; a new range starts after every range already in either file.
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The user's name (`LADE_TEST_ROOTLESS_USER` for the tests).
pub const USER: &str = "lade-rootless";
const HOME: &str = "/var/lib/lade-rootless";
const COUNT: u64 = 65536;

/// Creates the user and its ranges where missing; returns its name.
pub fn ensure() -> Result<&'static str> {
    // SAFETY: geteuid(2) has no failure modes.
    if unsafe { libc::geteuid() } != 0 {
        bail!("making the rootless test user needs root");
    }
    let exists = Command::new("id")
        .arg("-u")
        .arg(USER)
        .output()
        .context("running id")?
        .status
        .success();
    if !exists {
        run(Command::new("useradd").args([
            "--system",
            "--create-home",
            "--home-dir",
            HOME,
            "--shell",
            "/usr/sbin/nologin",
            USER,
        ]))?;
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    let has = |text: &str| text.lines().any(|l| l.starts_with(&format!("{USER}:")));
    if !has(&subuid) || !has(&subgid) {
        let start = next_free(&[&subuid, &subgid]);
        let range = format!("{start}-{}", start + COUNT - 1);
        let mut cmd = Command::new("usermod");
        if !has(&subuid) {
            cmd.args(["--add-subuids", &range]);
        }
        if !has(&subgid) {
            cmd.args(["--add-subgids", &range]);
        }
        run(cmd.arg(USER))?;
    }
    Ok(USER)
}

/// The first id after every range of `files` (at least 100 000, useradd's default start).
fn next_free(files: &[&str]) -> u64 {
    files
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| {
            let mut f = l.split(':').skip(1);
            let start: u64 = f.next()?.trim().parse().ok()?;
            let count: u64 = f.next()?.trim().parse().ok()?;
            Some(start + count)
        })
        .fold(100_000, u64::max)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ranges_start_after_all_existing_ones() {
        assert_eq!(next_free(&["", ""]), 100_000);
        assert_eq!(
            next_free(&["a:100000:65536\nb:300000:10\n", "c:165536:65536\n"]),
            300_010
        );
    }
}
