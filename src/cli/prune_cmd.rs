//! `lade prune`: reclaim the store's `RUN --mount=type=cache` directories. A cache a running
//! build holds is kept; its next use starts from an empty directory again.

use super::args::PruneArgs;
use crate::store::Store;
use anyhow::Context;
use std::process::ExitCode;

pub fn run(a: &PruneArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&a.store.root())?;
    let removed = crate::exec::run::prune_caches(&store)
        .with_context(|| format!("pruning cache mounts in {}", store.root().display()))?;
    println!("removed {removed} cache mount(s)");
    Ok(ExitCode::SUCCESS)
}
