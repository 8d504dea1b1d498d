//! `lade compose build`: the Compose Specification's `build:` sections to images. `model`
//! reads a compose file (YAML, `.env`, `${VAR}` interpolation as docker compose does,
//! `interpolate`) into services; `order` finds which services build on another's image and
//! groups them into waves that build in parallel.

pub mod interpolate;
pub mod model;
pub mod order;
pub mod run;

pub use model::{load, BuildSpec, DockerfileSource, Project, Service};

/// An error in a compose file: it names the file, and the service and key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    /// `services.<service>.<key…>`.
    #[error("{file}: services.{service}.{key}: {message}")]
    Service {
        file: String,
        service: String,
        key: String,
        message: String,
    },
}
