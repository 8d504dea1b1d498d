//! What a stage's COPY/ADD steps read besides the build context: the filesystems of other
//! stages and images (extracted once into temp dirs under the store, with their metadata
//! tree: extraction as a normal user loses owners), and the `--chown`/USER name lookups.

use super::tree::Tree;
use super::ExecError;
use crate::context::BuildContext;
use crate::image::BuiltImage;
use crate::image::{media_types, Descriptor, ImageConfig};
use crate::layer::{Compression, ExtractOptions};
use crate::path::ImagePath;
use crate::plan::{CopyFrom, FileSet, Stage, Step};
use crate::store::Store;

/// Everything a stage's file sets may read from.
pub struct Sources<'a> {
    pub context: &'a BuildContext,
    /// Where downloads (`ADD <URL>`) go.
    pub store: &'a Store,
    /// Extracted filesystems, keyed by what COPY --from named, with their layers' metadata.
    roots: Vec<Root>,
}

/// An extracted filesystem: what COPY --from named, the files, their metadata, the directory.
type Root = (CopyFrom, BuildContext, Tree, crate::store::OwnedTempDir);

impl<'a> Sources<'a> {
    /// Prepares what `stage` needs: other stages' and images' files, account databases.
    pub fn prepare(
        stage: &Stage,
        context: &'a BuildContext,
        built: &[Option<BuiltImage>],
        store: &'a Store,
        registry: Option<&crate::registry::Client>,
        pull: super::PullPolicy,
    ) -> Result<Sources<'a>, ExecError> {
        let mut s = Sources {
            context,
            store,
            roots: Vec::new(),
        };
        // Each stage or image a COPY --from or a RUN --mount reads, with where it is named.
        let froms = stage.steps.iter().flat_map(|step| -> Vec<_> {
            match step {
                Step::Layer(l) => l
                    .sources
                    .iter()
                    .filter_map(|set| match set {
                        FileSet::Copy { from, origin, .. } => Some((from, origin)),
                        _ => None,
                    })
                    .collect(),
                Step::Run(r) => r
                    .mounts
                    .iter()
                    .filter_map(|m| m.from().map(|f| (f, &r.location)))
                    .collect(),
                Step::Config(_) => Vec::new(),
            }
        });
        for (from, origin) in froms {
            if matches!(from, CopyFrom::Context) || s.roots.iter().any(|(f, ..)| f == from) {
                continue;
            }
            // Errors (a missing layer, extraction) belong to the first step that reads it.
            let root = prepare_root(from, stage, built, store, registry, pull)
                .map_err(|e| e.at(origin))?;
            s.roots.push(root);
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
                    .find(|(f, ..)| f == other)
                    .expect("prepared")
                    .1
            }
        }
    }

    /// The metadata of what `from` holds, when it is an image filesystem (not the context).
    pub fn meta(&self, from: &CopyFrom) -> Option<&Tree> {
        self.roots.iter().find(|(f, ..)| f == from).map(|r| &r.2)
    }
}

/// Extracts the filesystem `from` names (another stage or an image) with its metadata tree.
fn prepare_root(
    from: &CopyFrom,
    stage: &Stage,
    built: &[Option<BuiltImage>],
    store: &Store,
    registry: Option<&crate::registry::Client>,
    pull: super::PullPolicy,
) -> Result<Root, ExecError> {
    let (image, layers, config, origin): (String, Vec<Descriptor>, _, _) = match from {
        CopyFrom::Stage { index, name } => {
            let b = built[*index]
                .as_ref()
                .expect("dependencies are built first");
            (
                format!("stage {name}"),
                b.manifest.layers.clone(),
                b.config.clone(),
                b.base_origin.clone(),
            )
        }
        CopyFrom::Image { base } => {
            let b = super::load_base_with(base, &stage.platform, store, registry, pull)?;
            (b.name, b.layers, b.config, b.origin)
        }
        CopyFrom::Context => unreachable!(),
    };
    super::fetch_layers(&layers, origin.as_ref(), store, registry, pull)?;
    // Registered, so a signal mid-build removes the extracted stage too.
    let tmp = store.root().join("tmp");
    let dir = crate::store::scratch_dir_in(&tmp, crate::store::STAGE_DIR_PREFIX)
        .map_err(|error| ExecError::Io { path: tmp, error })?;
    extract_all(&image, &layers, &config, dir.path(), store)?;
    let ctx = BuildContext::new(dir.path(), &[])?;
    let tree = Tree::from_layers(&image, &layers, &config, store)?;
    Ok((from.clone(), ctx, tree, dir))
}

/// `user[:group]` (from `--chown` or USER) to numbers, names through the stage's passwd and
/// group files, as BuildKit's `readUser`: a numeric user without a group gets its own number
/// as gid (passwd is not consulted), a named user its passwd gid. `strict` (`--chown`) makes
/// an unknown name an error like docker's; otherwise (WORKDIR's USER) it maps to 0 as
/// BuildKit does.
pub fn owner_of(
    spec: &str,
    passwd: &str,
    groups: &str,
    strict: bool,
) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => match lookup(passwd, user, 0) {
            Some(e) => (e.2, e.3),
            None if strict => {
                return Err(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            }
            None => (0, 0),
        },
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match lookup(groups, g, 0) {
                Some(e) => e.2,
                None if strict => {
                    return Err(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                }
                None => primary_gid,
            },
        },
    };
    Ok((uid, gid))
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

/// Applies the layers of `image` in order into `dir`, each checked against its diff_id
/// in `config`.
pub fn extract_all(
    image: &str,
    layers: &[Descriptor],
    config: &ImageConfig,
    dir: &std::path::Path,
    store: &Store,
) -> Result<(), ExecError> {
    let opts = ExtractOptions {
        allow_devices: true,
        preserve_owner: false,
        overlay_whiteouts: false,
    };
    for (l, diff_id) in super::verify::with_diff_ids(image, layers, config)? {
        super::verify::read_layer(store, image, l, diff_id, |r| {
            crate::layer::extract_layer(r, crate::layer::Compression::None, dir, &opts).map_err(
                |e| {
                    crate::layer::LayerError::InLayer {
                        layer: l.digest.to_string(),
                        inner: Box::new(e),
                    }
                    .into()
                },
            )
        })?;
    }
    Ok(())
}

/// A file's content in the top-most layer of `image` that has it (empty when none does);
/// each layer read is checked against its diff_id.
pub(super) fn read_from_layers(
    image: &str,
    layers: &[Descriptor],
    config: &ImageConfig,
    path: &str,
    store: &Store,
) -> Result<String, ExecError> {
    let p = ImagePath::parse_absolute(path).expect("static path");
    for (l, diff_id) in super::verify::with_diff_ids(image, layers, config)?.rev() {
        let found = super::verify::read_layer(store, image, l, diff_id, |r| {
            Ok(crate::layer::read_file_from_layer(
                r,
                crate::layer::Compression::None,
                &p,
            )?)
        })?;
        if let Some(bytes) = found {
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
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        let o = |spec| owner_of(spec, passwd, group, true);
        assert_eq!(o("app"), Ok((1000, 1001)));
        assert_eq!(o("app:staff"), Ok((1000, 50)));
        // BuildKit: a numeric user alone is also the gid, whatever passwd says.
        assert_eq!(o("1000"), Ok((1000, 1000)));
        assert_eq!(o("42:43"), Ok((42, 43)));
        assert!(o("nobody")
            .unwrap_err()
            .contains("unable to find user nobody"));
        assert!(o("app:nogroup").is_err());
        // USER for WORKDIR: unknown names are root, like BuildKit.
        assert_eq!(owner_of("ghost", passwd, group, false), Ok((0, 0)));
        assert_eq!(
            owner_of("app:ghost", passwd, group, false),
            Ok((1000, 1001))
        );
    }
}
