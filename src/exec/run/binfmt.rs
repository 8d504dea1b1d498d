//! RUN for another architecture than the host's, through the kernel's `binfmt_misc`: the
//! step's binaries are started by a registered user-mode emulator (Debian `qemu-user-static`
//! with `binfmt-support` registers `qemu-aarch64` and the others). The handler must carry the
//! `F` ("fix binary") flag: the kernel then opens the emulator at registration time, so it
//! works inside the step's root, which has no emulator of its own.
//!
//! Which handler serves an architecture is decided as the kernel decides it: by the handlers'
//! magic and mask against the ELF header of a static executable of that architecture, not by
//! the handler's name (other tools register the same emulators under other names).
//!
//! The handlers are read from `/proc/sys/fs/binfmt_misc`, or from `$LADE_BINFMT_MISC` where
//! binfmt_misc is mounted elsewhere.

use crate::image::Platform;
use std::path::{Path, PathBuf};

/// Where binfmt_misc is read from.
pub fn default_dir() -> PathBuf {
    std::env::var_os("LADE_BINFMT_MISC")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/proc/sys/fs/binfmt_misc"), PathBuf::from)
}

/// How RUN steps of a platform run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The host's CPU runs them.
    Native,
    /// Through this binfmt_misc handler.
    Emulated(Handler),
}

/// One registered binfmt_misc entry (a magic-type one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// Its file name under binfmt_misc (`qemu-aarch64`).
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Handler {
    /// Parses the text the kernel shows for an entry; `None` for extension-type entries and
    /// anything unreadable.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler {
            name: name.to_string(),
            enabled: false,
            interpreter: String::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "enabled" => h.enabled = true,
                "disabled" => h.enabled = false,
                "interpreter" => h.interpreter = value.to_string(),
                "flags:" => h.flags = value.trim().to_string(),
                "offset" => h.offset = value.trim().parse().ok()?,
                "magic" => h.magic = hex(value.trim())?,
                "mask" => h.mask = hex(value.trim())?,
                _ => {}
            }
        }
        if h.magic.is_empty() {
            return None;
        }
        if h.mask.is_empty() {
            h.mask = vec![0xff; h.magic.len()];
        }
        Some(h)
    }

    /// Whether the kernel would hand a file starting with `header` to this handler (as
    /// `check_file` in `fs/binfmt_misc.c`: every magic byte compared under its mask).
    fn matches(&self, header: &[u8]) -> bool {
        self.magic.iter().enumerate().all(|(i, m)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            let b = header.get(self.offset + i).copied().unwrap_or(0);
            b & mask == m & mask
        })
    }

    fn fixed(&self) -> bool {
        self.flags.contains('F')
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// ELF class (1: 32-bit, 2: 64-bit), data encoding (1: little, 2: big endian) and `e_machine`
/// of Linux executables of an OCI architecture.
fn elf_identity(arch: &str) -> Option<(u8, u8, u16)> {
    Some(match arch {
        "amd64" => (2, 1, 62),
        "386" => (1, 1, 3),
        "arm64" => (2, 1, 183),
        "arm" => (1, 1, 40),
        "ppc64le" => (2, 1, 21),
        "ppc64" => (2, 2, 21),
        "s390x" => (2, 2, 22),
        "riscv64" => (2, 1, 243),
        "mips64le" => (2, 1, 8),
        "mips64" => (2, 2, 8),
        "mipsle" => (1, 1, 8),
        "mips" => (1, 2, 8),
        "loong64" => (2, 1, 258),
        _ => return None,
    })
}

/// The first bytes of a static executable of `arch` (ELF identification, `e_type` EXEC,
/// `e_machine`), zero-padded: what binfmt_misc's magic-type handlers look at.
fn elf_header(arch: &str) -> Option<Vec<u8>> {
    let (class, data, machine) = elf_identity(arch)?;
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1;
    let (e_type, e_machine) = if data == 2 {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    } else {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    Some(h)
}

/// QEMU's name for an OCI architecture (its `qemu-NAME` emulator).
fn qemu_name(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "386" => "i386",
        "arm64" => "aarch64",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    }
}

const INSTALL: &str = "install the Debian packages qemu-user-static and binfmt-support (they \
                       register QEMU's emulators with the F flag)";

/// How RUN steps of `platform` can run on `host`, with the handlers of the binfmt_misc
/// directory `dir`; the error is one sentence naming the platform and what to do.
pub fn support(platform: &Platform, host: &Platform, dir: &Path) -> Result<Support, String> {
    let want = format!("RUN for {platform} on this {host} host");
    if platform.os != "linux" {
        return Err(format!("{want}: only linux steps can run here"));
    }
    // An x86-64 kernel runs i386 binaries itself (IA32 emulation, on in every distribution
    // kernel); 32-bit arm on arm64 is not on every CPU: a handler for it is taken when there
    // is one, else the kernel is left to try (Debian registers none there).
    if platform.architecture == host.architecture
        || (host.architecture == "amd64" && platform.architecture == "386")
    {
        return Ok(Support::Native);
    }
    let arch = &platform.architecture;
    let header = elf_header(arch)
        .ok_or_else(|| format!("{want}: lade knows no ELF machine for architecture {arch}"))?;
    let status = std::fs::read_to_string(dir.join("status")).map_err(|_| {
        format!(
            "{want} needs a binfmt_misc handler for {arch}, but binfmt_misc is not mounted at {} \
             (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc); then {INSTALL}",
            dir.display()
        )
    })?;
    if status.trim() != "enabled" {
        return Err(format!(
            "{want} needs binfmt_misc, which is disabled (echo 1 > {})",
            dir.join("status").display()
        ));
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{want}: cannot read {}: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "status" && n != "register")
        .collect();
    names.sort();
    let matching: Vec<Handler> = names
        .iter()
        .filter_map(|n| {
            let text = std::fs::read_to_string(dir.join(n)).ok()?;
            Handler::parse(n, &text)
        })
        .filter(|h| h.matches(&header))
        .collect();
    // The kernel takes the first enabled match in registration order, which the directory
    // does not show; a usable one is what matters.
    if let Some(h) = matching.iter().find(|h| h.enabled && h.fixed()) {
        return Ok(Support::Emulated(h.clone()));
    }
    if matching.is_empty() && host.architecture == "arm64" && arch == "arm" {
        return Ok(Support::Native);
    }
    let qemu = qemu_name(arch);
    match matching.first() {
        None => Err(format!(
            "{want} needs an emulator, and no binfmt_misc handler for {arch} binaries is \
             registered in {}: {INSTALL}; check with `update-binfmts --display qemu-{qemu}`",
            dir.display()
        )),
        Some(h) if !h.enabled => Err(format!(
            "{want} needs an emulator: the binfmt_misc handler {} for {arch} is disabled \
             (`update-binfmts --enable {}`, or echo 1 > {})",
            h.name,
            h.name,
            dir.join(&h.name).display()
        )),
        Some(h) => Err(format!(
            "{want} needs an emulator that works inside the step's root: the binfmt_misc \
             handler {} ({}) is registered without the F (fix binary) flag; register it with \
             flags F ({INSTALL})",
            h.name, h.interpreter
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian qemu-user-static 7.2's registration of aarch64, as the kernel shows it.
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";
    const S390X: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\n\
        flags: POCF\noffset 0\nmagic 7f454c460202010000000000000000000002 0016\n";
    const RISCV64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P\n\
        flags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200f300\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    fn binfmt(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        for (name, text) in entries {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn qemu_magic_matches_its_architecture_only() {
        let h = Handler::parse("qemu-aarch64", AARCH64).unwrap();
        assert!(h.enabled && h.fixed());
        assert!(h.matches(&elf_header("arm64").unwrap()));
        for other in ["amd64", "arm", "riscv64", "s390x", "ppc64le"] {
            assert!(!h.matches(&elf_header(other).unwrap()), "{other}");
        }
        let r = Handler::parse("qemu-riscv64", RISCV64).unwrap();
        assert!(r.matches(&elf_header("riscv64").unwrap()));
        // A magic with a space in it is not a valid registration: not a handler.
        assert_eq!(Handler::parse("qemu-s390x", S390X), None);
        assert_eq!(
            Handler::parse("jar", "enabled\ninterpreter /x\nextension .jar\n"),
            None
        );
    }

    #[test]
    fn the_host_and_i386_on_amd64_are_native() {
        let empty = binfmt(&[]);
        let host = p("linux/amd64");
        assert_eq!(
            support(&p("linux/amd64"), &host, empty.path()),
            Ok(Support::Native)
        );
        assert_eq!(
            support(&p("linux/386"), &host, empty.path()),
            Ok(Support::Native)
        );
        let arm_host = p("linux/arm64/v8");
        assert_eq!(
            support(&p("linux/arm64"), &arm_host, empty.path()),
            Ok(Support::Native)
        );
        assert_eq!(
            support(&p("linux/arm/v7"), &arm_host, empty.path()),
            Ok(Support::Native)
        );
        // ... unless a handler for arm is registered: then it is used.
        let arm = "enabled\ninterpreter /usr/bin/qemu-arm-static\nflags: F\noffset 0\n\
            magic 7f454c4601010100000000000000000002002800\n\
            mask ffffffffffffff00fffffffffffffffffeffffff\n";
        let d = binfmt(&[("qemu-arm", arm)]);
        assert!(matches!(
            support(&p("linux/arm/v7"), &arm_host, d.path()),
            Ok(Support::Emulated(_))
        ));
    }

    #[test]
    fn a_registered_fixed_handler_serves_its_platform() {
        let d = binfmt(&[("qemu-aarch64", AARCH64), ("qemu-riscv64", RISCV64)]);
        let host = p("linux/amd64");
        match support(&p("linux/arm64"), &host, d.path()) {
            Ok(Support::Emulated(h)) => assert_eq!(h.name, "qemu-aarch64"),
            other => panic!("{other:?}"),
        }
        match support(&p("linux/riscv64"), &host, d.path()) {
            Ok(Support::Emulated(h)) => assert_eq!(h.name, "qemu-riscv64"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_platform_and_the_fix() {
        let host = p("linux/amd64");
        let arm = p("linux/arm64");
        let none = binfmt(&[("qemu-riscv64", RISCV64)]);
        let e = support(&arm, &host, none.path()).unwrap_err();
        assert!(
            e.starts_with("RUN for linux/arm64 on this linux/amd64 host needs an emulator")
                && e.contains("qemu-user-static and binfmt-support")
                && e.contains("qemu-aarch64"),
            "{e}"
        );
        let unfixed = AARCH64.replace("POCF", "POC");
        let d = binfmt(&[("qemu-aarch64", &unfixed)]);
        let e = support(&arm, &host, d.path()).unwrap_err();
        assert!(e.contains("without the F (fix binary) flag"), "{e}");
        let disabled = AARCH64.replace("enabled", "disabled");
        let d = binfmt(&[("qemu-aarch64", &disabled)]);
        let e = support(&arm, &host, d.path()).unwrap_err();
        assert!(e.contains("qemu-aarch64 for arm64 is disabled"), "{e}");
        let unmounted = tempfile::tempdir().unwrap();
        let e = support(&arm, &host, unmounted.path()).unwrap_err();
        assert!(e.contains("binfmt_misc is not mounted"), "{e}");
        let e = support(&p("linux/sparc64"), &host, none.path()).unwrap_err();
        assert!(e.contains("no ELF machine for architecture sparc64"), "{e}");
        let e = support(&p("windows/amd64"), &host, none.path()).unwrap_err();
        assert!(e.contains("only linux steps"), "{e}");
    }
}
