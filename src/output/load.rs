//! `--load`: the image handed to the local container engine as a `docker load` archive on the
//! standard input of `docker load` (which talks to the daemon of `DOCKER_HOST` / the current
//! docker context) or `podman load`. Nothing is written to disk on the way.

use super::{archive, Artifact, OutputError};
use crate::store::Store;
use std::io::Read;
use std::process::{Command, Stdio};

/// The engine `--load` hands the image to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// Loads `artifact` (one image) into `engine` under `tags`; returns what the engine printed
/// (`Loaded image: …`).
pub fn load(
    engine: Engine,
    artifact: &Artifact,
    tags: &[String],
    store: &Store,
) -> Result<String, OutputError> {
    let image = artifact
        .image()
        .ok_or(OutputError::DockerMultiPlatform(artifact.images.len()))?;
    let entries = archive::docker_entries(image, tags, store)?;
    let command = format!("{} load", engine.program());
    let mut child = Command::new(engine.program())
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| OutputError::LoadStart {
            command: command.clone(),
            error,
        })?;
    // stderr is read on its own thread so a chatty engine cannot block on a full pipe
    // while the archive is still being written.
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let stdin = child.stdin.take().expect("piped");
    let written = archive::write_to(&command, &entries, stdin).map(drop);
    let status = child.wait().map_err(|error| OutputError::LoadStart {
        command: command.clone(),
        error,
    })?;
    let stderr = err_reader.join().unwrap_or_default();
    let stdout = out_reader.join().unwrap_or_default();
    if !status.success() {
        // The engine's own message says more than the broken pipe it caused.
        return Err(OutputError::LoadFailed {
            command,
            status,
            stderr: stderr.trim().lines().last().unwrap_or("").to_string(),
        });
    }
    written?;
    Ok(stdout.trim().to_string())
}
