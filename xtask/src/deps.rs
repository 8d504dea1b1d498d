//! The Debian packages the tasks rely on: find what is missing and, as root, install it with
//! apt-get; otherwise say exactly what to install.
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::proc::which;

/// How to tell that a package is present.
#[derive(Clone, Copy)]
enum Probe {
    /// Executables (names on PATH, or absolute paths).
    Exec(&'static [&'static str]),
    /// Files (a Debian Maven repository's plugin directories).
    Files(&'static [&'static str]),
    /// `/bin/busybox` exists and is statically linked (Debian's `busybox` package ships a dynamic
    /// one at the same path, useless inside a scratch image).
    StaticBusybox,
}

#[derive(Clone, Copy)]
pub struct Need {
    package: &'static str,
    probe: Probe,
}

const fn exec(package: &'static str, bins: &'static [&'static str]) -> Need {
    Need {
        package,
        probe: Probe::Exec(bins),
    }
}

/// What `cargo xtask test` and the tests it runs use.
pub const TEST: &[Need] = &[
    exec("docker.io", &["dockerd", "/usr/bin/docker"]),
    exec("docker-registry", &["docker-registry"]),
    exec("skopeo", &["skopeo"]),
    exec("umoci", &["umoci"]),
    exec("oci-image-tool", &["oci-image-tool"]),
    Need {
        package: "busybox-static",
        probe: Probe::StaticBusybox,
    },
    exec("crun", &["crun"]),
    exec("runc", &["runc"]),
    exec("pigz", &["pigz"]),
    exec("python3", &["python3"]),
    exec("openssl", &["openssl"]),
    // htpasswd -B: bcrypt entries for the registry's basic auth.
    exec("apache2-utils", &["htpasswd"]),
    exec("tar", &["tar"]),
    // GNU time measures a command's peak RSS from a small parent of its own (tests/common).
    exec("time", &["/usr/bin/time"]),
    // `tar cjf` / `tar cJf` make the bzip2 and xz archives the ADD tests unpack.
    exec("bzip2", &["bzip2"]),
    exec("xz-utils", &["xz"]),
    // Counting what a build reads (the `[java]` no-op rebuild test).
    exec("strace", &["strace"]),
    // The Debian bookworm bases of the RUN tests (xtask/src/debian.rs), and `pip download` of
    // the wheels their Flask test installs.
    exec("debootstrap", &["debootstrap"]),
    exec("python3-pip", &["pip3"]),
    // newuidmap/newgidmap: the rootless RUN tests run lade as a user with subordinate ids.
    exec("uidmap", &["newuidmap", "newgidmap"]),
    // Foreign-platform RUN steps (tests/run_platform.rs): QEMU's user-mode emulators,
    // registered with binfmt_misc (F flag) by binfmt-support; `dpkg-deb` unpacks the arm64
    // busybox .deb (xtask/src/foreign.rs).
    exec("qemu-user-static", &["qemu-aarch64-static"]),
    exec("binfmt-support", &["update-binfmts"]),
    exec("dpkg", &["dpkg-deb"]),
    // `cargo xtask dist` checks the man pages with groff; its test reads one with `man -l`.
    exec("groff-base", &["groff"]),
    exec("man-db", &["man"]),
    // The Maven tests (tests/maven.rs): `mvn -o package` of testdata/maven-app against Debian's
    // Maven repository /usr/share/maven-repo, with the plugins and the library it uses.
    exec("maven", &["mvn"]),
    files(
        "libmaven-compiler-plugin-java",
        &["/usr/share/maven-repo/org/apache/maven/plugins/maven-compiler-plugin"],
    ),
    files(
        "libmaven-jar-plugin-java",
        &["/usr/share/maven-repo/org/apache/maven/plugins/maven-jar-plugin"],
    ),
    files(
        "libmaven-resources-plugin-java",
        &["/usr/share/maven-repo/org/apache/maven/plugins/maven-resources-plugin"],
    ),
    files(
        "libsurefire-java",
        &["/usr/share/maven-repo/org/apache/maven/plugins/maven-surefire-plugin"],
    ),
    files(
        "libmaven-dependency-plugin-java",
        &["/usr/share/maven-repo/org/apache/maven/plugins/maven-dependency-plugin"],
    ),
    files(
        "libmaven-install-plugin-java",
        &["/usr/share/maven-repo/org/apache/maven/plugins/maven-install-plugin"],
    ),
    files(
        "libexec-maven-plugin-java",
        &["/usr/share/maven-repo/org/codehaus/mojo/exec-maven-plugin"],
    ),
    files(
        "libcommons-lang3-java",
        &["/usr/share/maven-repo/org/apache/commons/commons-lang3"],
    ),
];

/// A package known by the files it installs.
const fn files(package: &'static str, paths: &'static [&'static str]) -> Need {
    Need {
        package,
        probe: Probe::Files(paths),
    }
}

/// What `cargo xtask bench` needs, reference tools included: buildah (its `bud` rows) and the
/// test's docker.io, skopeo and docker-registry (installed by `cargo xtask test`; when absent,
/// their rows say "not installed").
pub const BENCH: &[Need] = &[
    exec("buildah", &["buildah"]),
    exec("pigz", &["pigz"]),
    exec("gzip", &["gzip"]),
    exec("python3", &["python3"]),
    exec("tar", &["tar"]),
    exec("coreutils", &["sha256sum"]),
];

fn present(need: &Need) -> bool {
    match need.probe {
        Probe::Exec(bins) => bins.iter().all(|b| which(b).is_some()),
        Probe::Files(paths) => paths.iter().all(|p| Path::new(p).exists()),
        Probe::StaticBusybox => is_static_elf(Path::new("/bin/busybox")),
    }
}

/// True for an ELF file without a PT_INTERP program header (no dynamic loader).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false; // only 64-bit little-endian is expected here
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3
    })
}

/// Makes sure every package in `needs` is present, installing the missing ones as root.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let mut missing: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| n.package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    // SAFETY: geteuid(2) has no failure modes.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || which("apt-get").is_none() {
        bail!(
            "missing packages: {list}\ninstall them first (Debian/Ubuntu):\n  \
             sudo apt-get update && sudo apt-get install -y --no-install-recommends {list}"
        );
    }
    eprintln!("xtask: installing missing packages: {list}");
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)?;
    let still: Vec<&str> = needs
        .iter()
        .filter(|n| !present(n))
        .map(|n| n.package)
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}
