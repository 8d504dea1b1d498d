//! What a stage's COPY/ADD steps read besides the build context: the filesystems of other
//! stages and images (extracted once into temp dirs under the store), and the base image's
//! /etc/passwd and /etc/group for `--chown` names.

use super::{BaseImage, BuiltImage, ExecError};
use crate::context::BuildContext;
use crate::image::{media_types, Descriptor};
use crate::layer::{Compression, ExtractOptions};
use crate::path::ImagePath;
use crate::plan::{CopyFrom, FileSet, Stage, Step};
use crate::store::Store;

/// Everything a stage's file sets may read from.
pub struct Sources<'a> {
    pub context: &'a BuildContext,
    /// Where downloads (`ADD <URL>`) go.
    pub store: &'a Store,
    /// Extracted filesystems, keyed by what COPY --from named.
    roots: Vec<(CopyFrom, BuildContext, tempfile::TempDir)>,
    /// (passwd, group) of the stage's base, read when a `--chown` uses names.
    accounts: Option<(String, String)>,
}

impl<'a> Sources<'a> {
    /// Prepares what `stage` needs: other stages' and images' files, account databases.
    pub fn prepare(
        stage: &Stage,
        context: &'a BuildContext,
        base: &BaseImage,
        built: &[Option<BuiltImage>],
        store: &'a Store,
        registry: Option<&crate::registry::Client>,
        pull: super::PullPolicy,
    ) -> Result<Sources<'a>, ExecError> {
        let mut s = Sources {
            context,
            store,
            roots: Vec::new(),
            accounts: None,
        };
        let mut wants_names = false;
        for step in &stage.steps {
            let Step::Layer(l) = step else { continue };
            for set in &l.sources {
                let (from, chown) = match set {
                    FileSet::Copy { from, chown, .. } => (from, chown),
                    FileSet::Url { chown, .. } => (&CopyFrom::Context, chown),
                    _ => continue,
                };
                wants_names |= chown
                    .as_deref()
                    .is_some_and(|c| c.split(':').any(|p| p.parse::<u32>().is_err()));
                if matches!(from, CopyFrom::Context) || s.roots.iter().any(|(f, _, _)| f == from) {
                    continue;
                }
                let (layers, origin): (Vec<Descriptor>, _) = match from {
                    CopyFrom::Stage { index } => {
                        let b = built[*index]
                            .as_ref()
                            .expect("dependencies are built first");
                        (b.manifest.layers.clone(), b.base_origin.clone())
                    }
                    CopyFrom::Image { base } => {
                        let b =
                            super::load_base_with(base, &stage.platform, store, registry, pull)?;
                        (b.layers, b.origin)
                    }
                    CopyFrom::Context => unreachable!(),
                };
                super::fetch_layers(&layers, origin.as_ref(), store, registry, pull)?;
                let dir = tempfile::Builder::new()
                    .prefix("stage-")
                    .tempdir_in(store.root().join("tmp"))
                    .map_err(|e| ExecError::Io {
                        path: store.root().join("tmp"),
                        source: e,
                    })?;
                extract_all(&layers, dir.path(), store)?;
                let ctx = BuildContext::new(dir.path(), &[])?;
                s.roots.push((from.clone(), ctx, dir));
            }
        }
        if wants_names {
            super::fetch_layers(&base.layers, base.origin.as_ref(), store, registry, pull)?;
            s.accounts = Some((
                read_from_layers(&base.layers, "/etc/passwd", store)?,
                read_from_layers(&base.layers, "/etc/group", store)?,
            ));
        }
        Ok(s)
    }

    pub fn root(&self, from: &CopyFrom) -> &BuildContext {
        match from {
            CopyFrom::Context => self.context,
            other => {
                &self
                    .roots
                    .iter()
                    .find(|(f, _, _)| f == other)
                    .expect("prepared")
                    .1
            }
        }
    }

    /// `--chown=user[:group]` to numbers; names through the base's /etc/passwd and /etc/group.
    pub fn owner(&self, chown: &str) -> Result<(u32, u32), String> {
        let (user, group) = match chown.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (chown, None),
        };
        let (passwd, groups) = self
            .accounts
            .as_ref()
            .map(|(p, g)| (p.as_str(), g.as_str()))
            .unwrap_or(("", ""));
        let (uid, primary_gid) = match user.parse::<u32>() {
            Ok(n) => (n, lookup(passwd, user, 2).map(|e| e.3).unwrap_or(n)),
            Err(_) => {
                let e = lookup(passwd, user, 0).ok_or_else(|| {
                    format!("unable to find user {user}: no matching entries in passwd file")
                })?;
                (e.2, e.3)
            }
        };
        let gid = match group {
            None => primary_gid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup(groups, g, 0).map(|e| e.2).ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
            },
        };
        Ok((uid, gid))
    }
}

/// Finds the line of a passwd/group file whose `field` (0 = name, 2 = id) equals `key`:
/// (name, _, id, primary gid).
fn lookup<'f>(file: &'f str, key: &str, field: usize) -> Option<(&'f str, (), u32, u32)> {
    file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || f.get(field) != Some(&key) {
            return None;
        }
        Some((
            f[0],
            (),
            f[2].parse().ok()?,
            f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
        ))
    })
}

pub fn compression_of(media_type: &str) -> Compression {
    if media_types::layer_is_gzip(media_type) {
        Compression::Gzip
    } else if media_types::layer_is_zstd(media_type) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Applies `layers` in order into `dir`.
pub fn extract_all(
    layers: &[Descriptor],
    dir: &std::path::Path,
    store: &Store,
) -> Result<(), ExecError> {
    let opts = ExtractOptions {
        allow_devices: false,
        preserve_owner: false,
    };
    for l in layers {
        let blob = store.open_blob(&l.digest)?;
        crate::layer::extract_layer(
            std::io::BufReader::new(blob),
            compression_of(&l.media_type),
            dir,
            &opts,
        )?;
    }
    Ok(())
}

/// A file's content in the top-most layer that has it (empty when none does).
fn read_from_layers(layers: &[Descriptor], path: &str, store: &Store) -> Result<String, ExecError> {
    let p = ImagePath::parse_absolute(path).expect("static path");
    for l in layers.iter().rev() {
        let blob = store.open_blob(&l.digest)?;
        if let Some(bytes) = crate::layer::read_file_from_layer(
            std::io::BufReader::new(blob),
            compression_of(&l.media_type),
            &p,
        )? {
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_names_resolve_through_account_files() {
        let ctx = BuildContext::new(std::path::Path::new("/"), &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = Sources {
            context: &ctx,
            store: &store,
            roots: Vec::new(),
            accounts: Some((
                "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n".into(),
                "root:x:0:\nstaff:x:50:\n".into(),
            )),
        };
        assert_eq!(s.owner("app"), Ok((1000, 1001)));
        assert_eq!(s.owner("app:staff"), Ok((1000, 50)));
        assert_eq!(s.owner("1000"), Ok((1000, 1001)));
        assert_eq!(s.owner("42:43"), Ok((42, 43)));
        assert!(s
            .owner("nobody")
            .unwrap_err()
            .contains("unable to find user nobody"));
    }
}
