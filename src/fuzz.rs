//! Bodies of the fuzz targets under `fuzz/` (run by `cargo xtask fuzz`), kept in the library
//! so the normal test suite runs them on the seed corpus and on every input a fuzzer found
//! (`fuzz/regressions/`): the fuzz crate only calls them, and cannot rot unnoticed.
//!
//! Each function takes arbitrary bytes and panics only when lade is wrong: a panic inside lade
//! itself, or a broken invariant checked here.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Inputs longer than this are cut: they find nothing more, only run slower.
const MAX_INPUT: usize = 64 * 1024;

/// The Dockerfile parser, instruction decoding, lowering (no base images, so no I/O) and shell
/// expansion: any input gives a result or an error, never a panic.
pub fn dockerfile(data: &[u8]) {
    use crate::frontend::dockerfile::{lower, parser, shell::Lexer};
    let data = &data[..data.len().min(MAX_INPUT)];
    let src = String::from_utf8_lossy(data);
    match parser::parse(&src) {
        Ok(df) => {
            let _ = (df.dump(), df.to_json());
            for node in &df.instructions {
                let _ = crate::frontend::dockerfile::instructions::from_node(node);
            }
            let opts = lower::LowerOptions::default();
            if let Err(e) = lower::lower("Dockerfile", &src, &df, &opts) {
                let _ = e.to_string();
            }
        }
        Err(e) => drop(e.render("Dockerfile", &src)),
    }
    let env = |k: &str| match k {
        "A" => Some("a b".to_string()),
        "E" => Some(String::new()),
        _ => None,
    };
    for escape in ['\\', '`'] {
        let lex = Lexer::new(escape);
        let _ = lex.process_words(&src, &env);
        let _ = lex.process_word(&src, &env);
        let _ = lex.clone().raw_quotes(true).process_word(&src, &env);
    }
}

/// `.dockerignore` patterns (the input's lines before the first NUL) matched against paths
/// (NUL-separated after it): compiling and matching never panic.
pub fn dockerignore(data: &[u8]) {
    use crate::context::dockerignore::{read_ignore_file, PatternMatcher};
    let data = &data[..data.len().min(MAX_INPUT)];
    let text = String::from_utf8_lossy(data);
    let (patterns, paths) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    let patterns = read_ignore_file(patterns);
    let Ok(m) = PatternMatcher::new(&patterns) else {
        return;
    };
    let _ = m.exclusions();
    for path in paths.split('\0').take(64) {
        let _ = (m.matches(path), m.matches_or_parent(path));
    }
}

/// OCI documents lade reads (manifest, index, image config): parsing never panics, and a
/// parsed document written as canonical JSON reads back to the same canonical JSON.
pub fn oci_json(data: &[u8]) {
    use crate::image::{canonical_json, ImageConfig, Index, Manifest};
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) {
        let Ok(doc) = serde_json::from_slice::<T>(data) else {
            return;
        };
        let Ok(once) = canonical_json(&doc) else {
            return;
        };
        let again: T = serde_json::from_slice(&once).unwrap_or_else(|e| {
            panic!(
                "canonical JSON does not read back: {e}\n{}",
                String::from_utf8_lossy(&once)
            )
        });
        let twice = canonical_json(&again).expect("serialised once");
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice),
            "canonical JSON is not stable"
        );
    }
    let data = &data[..data.len().min(MAX_INPUT)];
    round_trip::<Manifest>(data);
    round_trip::<Index>(data);
    round_trip::<ImageConfig>(data);
}

/// The layer extractor on an arbitrary (uncompressed) tar, inside a fresh temp directory:
/// whatever the input, nothing outside the extraction root changes. The root has a canary
/// file and a canary directory beside it, and the directories above it are checked too
/// (names, modes, contents of the canaries).
pub fn extract(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let top = tempfile::Builder::new()
        .prefix("lade-fuzz-")
        .tempdir()
        .expect("temp dir");
    // Two levels between the temp dir and the root: an escape by `..` lands in a directory
    // that is checked, not in the host's temp directory.
    let parent = top.path().join("up");
    let root = parent.join("root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(parent.join("canary"), b"canary").expect("canary");
    std::fs::create_dir(parent.join("canary-dir")).expect("canary dir");
    std::fs::write(parent.join("canary-dir/file"), b"inside").expect("canary file");
    let before = snapshot_outside(top.path(), &root);
    let _ = crate::layer::extract_layer(
        data,
        crate::layer::Compression::None,
        &root,
        &crate::layer::ExtractOptions::default(),
    );
    let after = snapshot_outside(top.path(), &root);
    // Directories extracted without write or search permission would make the temp dir's
    // removal fail (and leak it).
    make_removable(top.path());
    assert!(
        before == after,
        "extraction changed files outside its root:\nbefore: {before:#?}\nafter: {after:#?}"
    );
}

/// Every path under `top` except those below `root` (the root itself is included: its mode
/// may change, but it must stay a directory), with its type, mode and (for files) content.
fn snapshot_outside(top: &Path, root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![top.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            out.insert(dir.display().to_string(), "unreadable".into());
            continue;
        };
        for e in read.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let what = if p == root {
                if md.is_dir() {
                    "root dir"
                } else {
                    "root replaced"
                }
                .to_string()
            } else if md.is_dir() {
                todo.push(p.clone());
                format!("dir {:o}", md.permissions().mode())
            } else if md.is_file() {
                let content = std::fs::read(&p).unwrap_or_default();
                format!(
                    "file {:o} {}",
                    md.permissions().mode(),
                    String::from_utf8_lossy(&content)
                )
            } else {
                format!("other {:o}", md.permissions().mode())
            };
            out.insert(p.display().to_string(), what);
        }
    }
    let md = std::fs::symlink_metadata(top).map(|m| m.permissions().mode());
    out.insert(top.display().to_string(), format!("top {md:?}"));
    out
}

/// Gives every directory under `root` back to its owner (0700), so it can be removed.
fn make_removable(root: &Path) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in read.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The seed corpus and the inputs fuzzing found, for `target`.
    fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut out = Vec::new();
        for dir in [
            fuzz.join("seeds").join(target),
            fuzz.join("regressions").join(target),
        ] {
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in read.flatten() {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
        out.sort();
        out
    }

    fn run_all(target: &str, f: fn(&[u8])) {
        let inputs = inputs(target);
        assert!(inputs.len() >= 3, "{target}: seeds missing: {inputs:?}");
        for (path, data) in inputs {
            if let Err(e) = std::panic::catch_unwind(|| f(&data)) {
                std::panic::resume_unwind(Box::new(format!("{}: {e:?}", path.display())));
            }
        }
    }

    #[test]
    fn dockerfile_target_on_its_corpus() {
        run_all("dockerfile", dockerfile);
    }

    #[test]
    fn dockerignore_target_on_its_corpus() {
        run_all("dockerignore", dockerignore);
    }

    #[test]
    fn oci_json_target_on_its_corpus() {
        run_all("oci_json", oci_json);
    }

    #[test]
    fn extract_target_on_its_corpus() {
        run_all("extract", extract);
    }

    #[test]
    fn the_extract_invariant_sees_changes_beside_the_root_only() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(top.path().join("canary"), b"1").unwrap();
        let before = snapshot_outside(top.path(), &root);
        std::fs::write(root.join("inside"), b"fine").unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(before, snapshot_outside(top.path(), &root));
        std::fs::write(top.path().join("canary"), b"2").unwrap();
        assert_ne!(before, snapshot_outside(top.path(), &root));
        std::fs::write(top.path().join("canary"), b"1").unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mode_changed = snapshot_outside(top.path(), &root);
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(mode_changed, snapshot_outside(top.path(), &root));
    }
}
