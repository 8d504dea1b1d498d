//! The RUN workloads of `cargo xtask bench` (issue #13), made by the bench itself beside the
//! shared W1-W4 (their Dockerfiles depend on the base: busybox has no `tar` on PATH):
//!
//! | name | base | Dockerfile |
//! |---|---|---|
//! | R0 / D0 | busybox / Debian | `FROM` + `CMD`: the 0-RUN build the per-RUN overhead is measured against |
//! | R1 / D1 | busybox / Debian | (a) ten trivial RUNs, `RUN echo $i > /f$i` |
//! | R2 / D2 | busybox / Debian | (b) `COPY w2.tar /` (W2's 20 000 files as one tar), `RUN tar -xf /w2.tar` in `/srv` |
//! | D3 | Debian | (c) the cron seed: `RUN apt-get update && apt-get install -y cron`, `COPY`, `RUN chmod`, `CMD` |
//! | D4 | Debian | the cron seed with `--mount=type=cache` on `/var/cache/apt` and `/var/lib/apt` (#14), and `ARG BUST` above its RUN: a new value re-runs it on the warm mounts |
//!
//! The Debian minbase is optional: `LADE_BENCH_DEBIAN_LAYOUT=oci:DIR:TAG` (or the test suite's
//! `LADE_TEST_DEBIAN_LAYOUT`), else the one `cargo xtask test` caches
//! (`debian-bookworm-minbase.oci` in its cache directory). Without one the D rows are skipped with a line saying so, and the
//! no-op rebuild target of (c) is checked on R1's no-op rebuild instead (a stand-in: the cron seed
//! needs the Debian mirror and a Debian base).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::proc::run_ok;

/// The image a workload starts from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Base {
    Busybox,
    Debian,
}

/// The number of RUNs of R1 / D1.
pub const TRIVIAL_RUNS: usize = 10;

/// The Debian minbase given to the bench, as `oci:DIR:TAG`, or why there is none.
pub fn debian_layout() -> Result<String, String> {
    for var in ["LADE_BENCH_DEBIAN_LAYOUT", "LADE_TEST_DEBIAN_LAYOUT"] {
        if let Some(v) = std::env::var_os(var) {
            let v = v.to_string_lossy().into_owned();
            return parse_layout(&v).map_err(|e| format!("{var}={v}: {e}"));
        }
    }
    // Where `cargo xtask test` caches the minbase it makes (wt-debian's xtask/src/debian.rs):
    // a layout is renamed into place only when complete.
    let mut caches = Vec::new();
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        caches.push(PathBuf::from(x).join("lade-xtask"));
    }
    caches.push(PathBuf::from("/var/cache/lade-xtask"));
    if let Some(h) = std::env::var_os("HOME") {
        caches.push(PathBuf::from(h).join(".cache/lade-xtask"));
    }
    for cache in caches {
        let layout = cache.join("debian-bookworm-minbase.oci");
        if layout.join("index.json").is_file() {
            return Ok(format!("oci:{}:bookworm", layout.display()));
        }
    }
    Err("no Debian minbase: `cargo xtask test` caches one, or set \
         LADE_BENCH_DEBIAN_LAYOUT=oci:DIR:TAG"
        .into())
}

/// `oci:DIR:TAG` or `DIR:TAG` with DIR an OCI layout (it has `index.json`) → `oci:DIR:TAG`.
fn parse_layout(v: &str) -> Result<String, String> {
    let rest = v.strip_prefix("oci:").unwrap_or(v);
    let Some((dir, tag)) = rest.rsplit_once(':').filter(|(_, t)| !t.contains('/')) else {
        return Err("expected oci:DIR:TAG".into());
    };
    if tag.is_empty() || !Path::new(dir).join("index.json").is_file() {
        return Err(format!("{dir} is not an OCI layout with a tag"));
    }
    Ok(format!("oci:{dir}:{tag}"))
}

/// Writes the RUN workloads' contexts under `root` (`r0`..`r2`, `d0`..`d4`); W2's tree must be
/// there already (make-workloads.sh). The tar of W2 is made once and kept.
pub fn make(root: &Path) -> Result<()> {
    let tar = root.join("w2.tar");
    if !tar.exists() {
        eprintln!("bench: packing W2 into {}", tar.display());
        let part = root.join("w2.tar.part");
        run_ok(
            Command::new("tar")
                .args(["--sort=name", "--numeric-owner", "--owner=0", "--group=0"])
                .arg("-C")
                .arg(root.join("w2"))
                .arg("-cf")
                .arg(&part)
                .arg("node_modules"),
        )?;
        std::fs::rename(&part, &tar)?;
    }
    for (base, prefix) in [(Base::Busybox, "r"), (Base::Debian, "d")] {
        for (i, dockerfile) in dockerfiles(base).into_iter().enumerate() {
            let dir = root.join(format!("{prefix}{i}"));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("Dockerfile"), dockerfile)?;
            if i == 2 {
                link_or_copy(&tar, &dir.join("w2.tar"))?;
            }
            if i >= 3 {
                std::fs::write(
                    dir.join("hello-cron"),
                    "* * * * * root echo hello >> /var/log/cron.log 2>&1\n",
                )?;
            }
        }
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        return Ok(());
    }
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

/// The Dockerfiles of R0-R2 (busybox) or D0-D3 (Debian), in order.
pub fn dockerfiles(base: Base) -> Vec<String> {
    const HEAD: &str = "ARG BASE\nFROM ${BASE}\n";
    let tar = match base {
        Base::Busybox => "busybox tar",
        Base::Debian => "tar",
    };
    let mut trivial = HEAD.to_string();
    for i in 1..=TRIVIAL_RUNS {
        trivial.push_str(&format!("RUN echo {i} > /f{i}\n"));
    }
    trivial.push_str("CMD [\"/bin/sh\"]\n");
    let mut files = vec![
        format!("{HEAD}CMD [\"/bin/sh\"]\n"),
        trivial,
        format!(
            "{HEAD}WORKDIR /srv\nCOPY w2.tar /w2.tar\nRUN {tar} -xf /w2.tar\nCMD [\"/bin/sh\"]\n"
        ),
    ];
    if base == Base::Debian {
        // The cron seed's shape (issue #13): apt-get from the mirror, COPY, RUN chmod, CMD.
        const TAIL: &str = "COPY hello-cron /etc/cron.d/hello-cron\n\
             RUN chmod 0644 /etc/cron.d/hello-cron\n\
             CMD [\"cron\", \"-f\"]\n";
        files.push(format!(
            "{HEAD}RUN apt-get update && apt-get install -y cron\n{TAIL}"
        ));
        // The same with apt's directories as cache mounts, as BuildKit users write it (#14).
        // The minbase has no docker-clean hook, and apt-get keeps the .debs it downloads.
        files.push(format!(
            "{HEAD}ARG BUST\n\
             RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n    \
             --mount=type=cache,target=/var/lib/apt,sharing=locked \\\n    \
             apt-get update && apt-get install -y cron\n{TAIL}"
        ));
    }
    files
}

/// Where the bench's Debian base goes in the private dockerd.
pub const DOCKER_DEBIAN: &str = "lade-bench/debian:1";

/// Converts the Debian layout into a docker archive tagged [`DOCKER_DEBIAN`] with `lade` (for
/// `docker load`).
pub fn debian_docker_archive(dir: &Path, lade: &Path, layout: &str) -> Result<PathBuf> {
    let ctx = dir.join("debian-ctx");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\n")?;
    let out = dir.join("debian-docker.tar");
    run_ok(
        Command::new(lade)
            .arg("build")
            .arg("--cache-dir")
            .arg(dir.join("debian-cache"))
            .arg("--build-arg")
            .arg(format!("BASE={layout}"))
            .arg("-o")
            .arg(format!("type=docker,dest={}", out.display()))
            .args(["-t", DOCKER_DEBIAN, "--progress", "quiet"])
            .arg(&ctx),
    )?;
    let _ = std::fs::remove_dir_all(dir.join("debian-cache"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trivial_runs_are_numbered() {
        let d = &dockerfiles(Base::Busybox)[1];
        assert_eq!(d.matches("RUN echo").count(), TRIVIAL_RUNS);
        assert!(d.contains("RUN echo 10 > /f10\n"));
        // busybox has no tar on PATH, Debian has.
        assert!(dockerfiles(Base::Busybox)[2].contains("RUN busybox tar -xf /w2.tar"));
        assert!(dockerfiles(Base::Debian)[2].contains("RUN tar -xf /w2.tar"));
        assert_eq!(dockerfiles(Base::Busybox).len(), 3);
        assert!(dockerfiles(Base::Debian)[3].contains("apt-get install -y cron"));
        let warm = &dockerfiles(Base::Debian)[4];
        assert!(
            warm.contains("--mount=type=cache,target=/var/cache/apt"),
            "{warm}"
        );
        assert!(warm.contains("ARG BUST\nRUN "), "{warm}");
    }

    #[test]
    fn layout_references() {
        let dir = std::env::temp_dir().join(format!("lade-bench-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.json"), "{}").unwrap();
        let d = dir.display();
        assert_eq!(
            parse_layout(&format!("oci:{d}:bookworm")),
            Ok(format!("oci:{d}:bookworm"))
        );
        assert_eq!(parse_layout(&format!("{d}:1")), Ok(format!("oci:{d}:1")));
        assert!(parse_layout(&format!("{d}")).is_err());
        assert!(parse_layout("oci:/nonexistent:1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
