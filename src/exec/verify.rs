//! Base layers are only used as their image's config describes them: the config lists one
//! diff_id per manifest layer (checked when the image is loaded, for every kind of base,
//! lazy registry bases too), and each layer read — extracted for `COPY --from`, listed for
//! a stage's tree, searched for account files — is hashed uncompressed in the same pass and
//! must match its diff_id. A lazy base whose layers are never read (a `lade.toml` build on a
//! registry image, pushed with mounts) gets the count check only: its layers are not ours
//! to vouch for and are never downloaded.

use super::ExecError;
use crate::digest::Digest;
use crate::image::{Descriptor, ImageConfig};
use crate::layer::{decompress, DiffIdReader};
use crate::store::Store;
use std::io::Read;

/// The config of `image` lists as many diff_ids as its manifest has layers.
pub(super) fn check_count(
    image: &str,
    layers: &[Descriptor],
    config: &ImageConfig,
) -> Result<(), ExecError> {
    let n = config.rootfs.diff_ids.len();
    if n == layers.len() {
        return Ok(());
    }
    Err(ExecError::Base {
        base: image.to_string(),
        message: format!(
            "its config lists {n} diff_ids for {} layers in its manifest (an inconsistent image)",
            layers.len()
        ),
    })
}

/// Each layer with its diff_id, after [`check_count`].
pub(super) fn with_diff_ids<'a>(
    image: &str,
    layers: &'a [Descriptor],
    config: &'a ImageConfig,
) -> Result<impl DoubleEndedIterator<Item = (&'a Descriptor, &'a Digest)>, ExecError> {
    check_count(image, layers, config)?;
    Ok(layers.iter().zip(&config.rootfs.diff_ids))
}

/// Reads the layer `l` of `image` uncompressed through `f`, then checks that what was read
/// (plus whatever `f` left, read now) hashes to `diff_id`. A mismatch is an error naming the
/// image and the layer, even when `f` succeeded.
pub(super) fn read_layer<T>(
    store: &Store,
    image: &str,
    l: &Descriptor,
    diff_id: &Digest,
    f: impl FnOnce(&mut dyn Read) -> Result<T, ExecError>,
) -> Result<T, ExecError> {
    let blob = std::io::BufReader::new(store.open_blob(&l.digest)?);
    let mut r = DiffIdReader::new(decompress(
        blob,
        super::sources::compression_of(&l.media_type),
    ));
    let out = f(&mut r)?;
    let actual = r.finish().map_err(|e| ExecError::Base {
        base: image.to_string(),
        message: format!("layer {}: {e}", l.digest),
    })?;
    if actual != *diff_id {
        return Err(ExecError::Base {
            base: image.to_string(),
            message: format!(
                "layer {} does not match its config: its uncompressed content is {actual}, \
                 the config's diff_id is {diff_id}",
                l.digest
            ),
        });
    }
    Ok(out)
}
