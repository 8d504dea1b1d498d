//! What a dynamically linked ELF program needs to start in an otherwise empty image: its
//! program interpreter (`PT_INTERP`, the dynamic loader) and the transitive closure of its
//! `DT_NEEDED` libraries, looked up the way glibc's loader does on this host (the object's
//! `DT_RPATH`/`DT_RUNPATH`, then `/etc/ld.so.cache`, then the standard directories).
//!
//! Only reading: the image paths are the paths the host loader would open, so the same
//! loader finds them in the image without an `ld.so.cache` of its own.

use object::elf;
use object::read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader};
use object::{Endianness, FileKind};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF program ({message})")]
    NotElf { path: PathBuf, message: String },
    #[error(
        "{needed}, needed by {by}, is not on this host (searched its run paths, \
         /etc/ld.so.cache and the standard library directories)"
    )]
    Missing { needed: String, by: PathBuf },
}

/// The dynamic-linking facts of one ELF object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `EI_CLASS` (32 or 64 bit) and `e_machine`: a library must match both.
    pub class: u8,
    pub machine: u16,
    /// `PT_INTERP`, for a dynamically linked program.
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH` and `DT_RUNPATH` directories as written (`$ORIGIN` unexpanded).
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

impl ElfInfo {
    /// Neither an interpreter nor libraries: the program runs alone.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

/// Parses the dynamic-linking facts of an ELF image held in memory.
pub fn parse(data: &[u8]) -> Result<ElfInfo, String> {
    match FileKind::parse(data).map_err(|e| e.to_string())? {
        FileKind::Elf32 => parse_as::<elf::FileHeader32<Endianness>>(data),
        FileKind::Elf64 => parse_as::<elf::FileHeader64<Endianness>>(data),
        other => Err(format!("{other:?} file")),
    }
}

fn parse_as<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfInfo, String> {
    let file = ElfFile::<H>::parse(data).map_err(|e| e.to_string())?;
    let endian = file.endian();
    let header = file.elf_header();
    let mut info = ElfInfo {
        class: header.e_ident().class.0,
        machine: header.e_machine(endian).0,
        interpreter: None,
        needed: Vec::new(),
        rpath: Vec::new(),
        runpath: Vec::new(),
    };
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph.interpreter(endian, data).map_err(|e| e.to_string())? {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let table = file
        .elf_section_table()
        .dynamic_table(endian, data)
        .map_err(|e| e.to_string())?;
    for d in table.dynamics() {
        let tag = d.tag(endian);
        if tag == elf::DT_NULL {
            break;
        }
        let list = if tag == elf::DT_NEEDED {
            &mut info.needed
        } else if tag == elf::DT_RPATH {
            &mut info.rpath
        } else if tag == elf::DT_RUNPATH {
            &mut info.runpath
        } else {
            continue;
        };
        let s = d
            .string(endian, *table.strings())
            .map_err(|e| e.to_string())?;
        let s = String::from_utf8_lossy(s).into_owned();
        if tag == elf::DT_NEEDED {
            list.push(s);
        } else {
            list.extend(s.split(':').filter(|p| !p.is_empty()).map(str::to_string));
        }
    }
    Ok(info)
}

fn read_info(path: &Path) -> Result<ElfInfo, ElfError> {
    let data = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&data).map_err(|message| ElfError::NotElf {
        path: path.to_path_buf(),
        message,
    })
}

/// Where the host's loader finds libraries by name, besides run paths.
pub struct LibrarySearch {
    /// `/etc/ld.so.cache`: soname → paths, in the cache's order (several for other ABIs).
    cache: BTreeMap<String, Vec<PathBuf>>,
    dirs: Vec<PathBuf>,
}

impl LibrarySearch {
    /// This host's: `/etc/ld.so.cache` (absent or unreadable: not used) and the standard
    /// directories of glibc on Debian-style multiarch systems.
    pub fn host() -> LibrarySearch {
        let cache = std::fs::read("/etc/ld.so.cache")
            .ok()
            .map(|b| parse_ld_so_cache(&b))
            .unwrap_or_default();
        LibrarySearch {
            cache,
            dirs: default_dirs().iter().map(PathBuf::from).collect(),
        }
    }

    /// Only these directories (tests).
    pub fn dirs(dirs: Vec<PathBuf>) -> LibrarySearch {
        LibrarySearch {
            cache: BTreeMap::new(),
            dirs,
        }
    }

    /// The first candidate for `name` whose class and machine match `like`.
    fn find(&self, name: &str, like: &ElfInfo, run_dirs: &[PathBuf]) -> Option<(PathBuf, ElfInfo)> {
        let cached = self.cache.get(name).into_iter().flatten().cloned();
        let in_dirs = run_dirs
            .iter()
            .chain(&self.dirs)
            .map(|d| d.join(name))
            .collect::<Vec<_>>();
        let run = in_dirs[..run_dirs.len()].to_vec();
        let std = in_dirs[run_dirs.len()..].to_vec();
        run.into_iter()
            .chain(cached)
            .chain(std)
            .find_map(|p| match read_info(&p) {
                Ok(info) if info.class == like.class && info.machine == like.machine => {
                    Some((p, info))
                }
                _ => None,
            })
    }
}

/// glibc's trusted directories on Debian/Ubuntu (multiarch) and on other distributions; the
/// loader in the image searches these without an `ld.so.cache`.
pub fn default_dirs() -> &'static [&'static str] {
    &[
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ]
}

/// Reads glibc's `ld.so.cache` (the "glibc-ld.so.cache1.1" format glibc has written since
/// 2.7, alone since 2.32): soname → library paths, in the cache's order. Anything malformed
/// ends the reading; what was read so far stays.
pub fn parse_ld_so_cache(b: &[u8]) -> BTreeMap<String, Vec<PathBuf>> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    // An old-format table ("ld.so-1.7.0") may come first; string offsets are relative to the
    // start of the new-format header.
    let Some(start) = b.windows(MAGIC.len()).position(|w| w == MAGIC) else {
        return out;
    };
    let u32_at = |off: usize| -> Option<u32> {
        b.get(off..off + 4)
            .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
    };
    let cstr_at = |off: usize| -> Option<String> {
        let s = b.get(off..)?;
        let end = s.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let Some(nlibs) = u32_at(start + 20) else {
        return out;
    };
    const HEADER: usize = 48;
    const ENTRY: usize = 24;
    for i in 0..nlibs as usize {
        let e = start + HEADER + i * ENTRY;
        let (Some(key), Some(value)) = (u32_at(e + 4), u32_at(e + 8)) else {
            break;
        };
        let (Some(k), Some(v)) = (
            cstr_at(start + key as usize),
            cstr_at(start + value as usize),
        ) else {
            break;
        };
        out.entry(k).or_default().push(PathBuf::from(v));
    }
    out
}

/// What the program needs besides itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    pub program: ElfInfo,
    /// The dynamic loader: the path the program names (the image path) and the file on the
    /// host it resolves to.
    pub interpreter: Option<PathBuf>,
    /// Every library, once, by the path the loader opens (image path = host path).
    pub libraries: BTreeSet<PathBuf>,
}

/// The program's interpreter and the transitive closure of its `DT_NEEDED` libraries, each
/// resolved through `search` (and the run paths of the object that needs it).
pub fn closure(program: &Path, search: &LibrarySearch) -> Result<Closure, ElfError> {
    let info = read_info(program)?;
    let interpreter = info.interpreter.as_ref().map(PathBuf::from);
    let mut libraries = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    // (object path, its info, the DT_RPATHs of the objects that loaded it: glibc searches
    // those too unless the object has a DT_RUNPATH).
    let mut todo = VecDeque::from([(program.to_path_buf(), info.clone(), Vec::<PathBuf>::new())]);
    while let Some((path, obj, inherited)) = todo.pop_front() {
        let origin = path.parent().unwrap_or(Path::new("/"));
        let expand = |dirs: &[String]| -> Vec<PathBuf> {
            dirs.iter()
                .map(|d| {
                    PathBuf::from(
                        d.replace("${ORIGIN}", &origin.to_string_lossy())
                            .replace("$ORIGIN", &origin.to_string_lossy()),
                    )
                })
                .collect()
        };
        let mut rpath = expand(&obj.rpath);
        rpath.extend(inherited);
        let run_dirs = if obj.runpath.is_empty() {
            rpath.clone()
        } else {
            expand(&obj.runpath)
        };
        for name in &obj.needed {
            if !seen_names.insert(name.clone()) {
                continue;
            }
            let found = if name.contains('/') {
                let p = PathBuf::from(name);
                read_info(&p).ok().map(|i| (p, i))
            } else {
                search.find(name, &info, &run_dirs)
            };
            let (lib, lib_info) = found.ok_or_else(|| ElfError::Missing {
                needed: name.clone(),
                by: path.clone(),
            })?;
            // The loader itself may be named as a library (libc needs ld-linux): it is in
            // the image already, at the interpreter's path.
            if interpreter.as_deref() == Some(lib.as_path())
                || interpreter
                    .as_ref()
                    .and_then(|i| i.file_name())
                    .is_some_and(|f| f == std::ffi::OsStr::new(name))
            {
                continue;
            }
            libraries.insert(lib.clone());
            todo.push_back((lib, lib_info, rpath.clone()));
        }
    }
    Ok(Closure {
        program: info,
        interpreter,
        libraries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hosts_own_loader_cache() {
        // Debian's libc6 registers libc.so.6 in the cache on every glibc host.
        let b = std::fs::read("/etc/ld.so.cache").unwrap();
        let cache = parse_ld_so_cache(&b);
        let libc = cache.get("libc.so.6").expect("libc.so.6 in ld.so.cache");
        assert!(libc
            .iter()
            .all(|p| p.is_absolute() && p.ends_with("libc.so.6")));
        assert!(libc.iter().any(|p| p.exists()));
    }

    #[test]
    fn malformed_cache_reads_as_empty_or_partial() {
        assert!(parse_ld_so_cache(b"").is_empty());
        assert!(parse_ld_so_cache(b"glibc-ld.so.cache1.1\xff\xff\xff\xff").is_empty());
    }

    #[test]
    fn a_glibc_program_needs_libc_and_the_loader() {
        // The test binary itself is linked against the host's glibc.
        let exe = std::env::current_exe().unwrap();
        let c = closure(&exe, &LibrarySearch::host()).unwrap();
        let interp = c.interpreter.expect("dynamically linked");
        assert!(interp.is_absolute() && interp.exists());
        assert!(
            c.libraries.iter().any(|l| l.ends_with("libc.so.6")),
            "{:?}",
            c.libraries
        );
        // The loader is not listed again as a library.
        assert!(!c
            .libraries
            .iter()
            .any(|l| l.file_name() == interp.file_name()));
    }

    #[test]
    fn missing_library_names_it_and_who_needs_it() {
        let exe = std::env::current_exe().unwrap();
        let e = closure(&exe, &LibrarySearch::dirs(vec!["/nonexistent".into()])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(".so") && msg.contains("needed by"), "{msg}");
    }

    #[test]
    fn not_an_elf_file_is_an_error() {
        assert!(parse(b"#!/bin/sh\necho hi\n").is_err());
    }
}
