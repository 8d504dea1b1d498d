//! What the user typed, as clap parses it. Nothing outside `cli` reads these types; `build`
//! turns them once into a validated `BuildRequest`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lade",
    version,
    about = "Daemonless, reproducible OCI image builder"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (`[-f FILE] CONTEXT`) or a lade.toml (`--spec`).
    Build(Box<BuildArgs>),
    /// Print the build plan, with each layer step's cache key, as JSON.
    Plan(PlanArgs),
    /// Print the syntax tree of a Dockerfile.
    Parse(ParseArgs),
    /// Push an image from an OCI archive or layout to a registry.
    Push(PushArgs),
    /// Pull an image from a registry into the store and, with -o, to a file or layout.
    Pull(PullArgs),
    /// Store registry credentials in the docker config file (~/.docker/config.json).
    Login(LoginArgs),
    /// Build the services of a compose file (`lade compose build`).
    Compose(super::compose_cmd::ComposeArgs),
    /// Show why two images differ: config, then files with the layer that introduced them.
    /// Exit 0 when identical, 1 when they differ, 2 on trouble (like diff).
    Diff(DiffArgs),
    /// Rebuild an image without cache and compare it with the published one (REF): exit 0
    /// when the digests match, else print the `lade diff` of the two and exit 1.
    Verify(VerifyArgs),
    /// Resolve every base image (FROM, COPY --from, RUN --mount from=) per platform to its
    /// manifest digest and write lade.lock next to the Dockerfile or lade.toml.
    Lock(LockArgs),
    /// Remove the `RUN --mount=type=cache` directories of the store that no build is using.
    Prune(PruneArgs),
    /// Print the man page or a shell completion script (for packagers: `cargo xtask dist`).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateKind {
    /// The man pages, lade(1) and lade-SUBCOMMAND(1), written into DIR.
    Man,
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to print.
    #[arg(value_enum)]
    pub kind: GenerateKind,
    /// Where the man pages go (`man` only; completions go to standard output).
    #[arg(value_name = "DIR", required_if_eq("kind", "man"))]
    pub dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How to reach registries.
#[derive(Debug, Clone, Args, Default)]
pub struct RegistryArgs {
    /// Allow plain HTTP or unverified TLS for this registry host; with a port, for that port
    /// only (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Trust this PEM CA certificate for registries (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Parallel blob uploads.
    #[arg(long, value_name = "N", default_value = "4")]
    pub push_jobs: usize,
    /// Seconds a registry may leave a request without an answer or a transfer without
    /// progress before it counts as failed (then retried, a few times).
    #[arg(
        long = "registry-timeout",
        value_name = "SECONDS",
        env = "LADE_REGISTRY_TIMEOUT",
        default_value = "60",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub registry_timeout: u64,
}

impl RegistryArgs {
    /// The idle timeout of registry I/O (60 s when the args were not parsed).
    pub fn timeout(&self) -> std::time::Duration {
        match self.registry_timeout {
            0 => crate::registry::DEFAULT_TIMEOUT,
            s => std::time::Duration::from_secs(s),
        }
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// An OCI archive (`oci-archive:FILE` or a .tar path) or layout (`oci:DIR[:TAG]`).
    pub source: String,
    /// Where to push: `registry/repository:tag`.
    pub destination: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Write the pushed manifest digest here (like Jib's jib-image.digest).
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Write the pushed digest and references as JSON here.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Store directory (unused: the source is read in place; kept for compatibility).
    #[arg(long, value_name = "DIR", hide = true)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: `registry/repository[:tag|@digest]`.
    pub reference: String,
    /// Also write it out: type=oci|docker,dest=FILE or type=oci-layout,dest=DIR.
    #[arg(short, long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Platform to pull (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the store is: shared by every command that keeps blobs or steps.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Store directory (default: $LADE_CACHE_DIR, $XDG_CACHE_HOME/lade or ~/.cache/lade).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub fn root(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(crate::store::Store::default_root)
    }
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry host (`registry.example.com`, `localhost:5000`).
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// Read the password from standard input.
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry_args: RegistryArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ParseFormat {
    /// One JSON object per instruction.
    Json,
    /// BuildKit's parser test dump format.
    Dump,
}

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: ParseFormat,
    /// The Dockerfile (`-` for standard input).
    pub file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// One line per event.
    Plain,
    /// Errors only.
    Quiet,
}

/// `--pull`: when to contact the registry for `FROM` / `COPY --from` images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullArg {
    /// Re-check a cached tag with one HEAD request; download its manifest and config again
    /// only if the tag moved (docker build's behaviour).
    Newer,
    /// Use cached images as they are, without any request; pull only what is not cached.
    Missing,
    /// Never pull: fail if an image, or a layer a step reads, is not cached.
    Never,
    /// Resolve every tag again; blobs already cached are not downloaded again.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

/// `--load`: the engine the image is loaded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadArg {
    Docker,
    Podman,
}

/// `--network`: docker's modes for RUN steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    Default,
    Host,
    None,
}

/// Options shared by the commands that read a build description.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// The lade.toml to build (instead of a Dockerfile).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "context"])]
    pub spec: Option<PathBuf>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The build context directory.
    #[arg(value_name = "CONTEXT")]
    pub context: Option<PathBuf>,
    /// Build this stage of the Dockerfile (default: the last).
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Set a build-time variable (`NAME=VALUE`, or `NAME` to take it from the environment).
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub build_args: Vec<String>,
    /// A named context for `FROM NAME` and `COPY --from=NAME`: a directory, an image
    /// (`docker-image://REF`) or an OCI layout (`oci-layout://DIR[:TAG]`); repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Add a label to the image (`KEY=VALUE`).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Target platform (os/arch[/variant]); default: the spec's, else the host's. Several,
    /// comma-separated, build one image each under a multi-platform index. RUN steps of
    /// another architecture run through binfmt_misc (Debian qemu-user-static, binfmt-support).
    #[arg(long, value_name = "PLATFORM[,PLATFORM...]")]
    pub platform: Option<String>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: CompressionArg,
    /// The network of RUN steps without their own `RUN --network` (docker's flag).
    #[arg(long, value_enum, default_value = "default")]
    pub network: NetworkArg,
    /// Add a line `IP NAME` to the /etc/hosts of RUN steps (docker's flag; `NAME:IP` or
    /// `NAME=IP`, repeatable).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_hosts: Vec<String>,
    /// The OCI runtime that runs RUN steps (default: crun, else runc, found on PATH).
    #[arg(long, value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// How RUN steps get a writable root: overlayfs, a copy, or overlayfs with the copy as
    /// fallback where it cannot be mounted.
    #[arg(long, value_enum, default_value = "auto")]
    pub snapshotter: SnapshotterArg,
    /// A secret for `RUN --mount=type=secret` (docker's syntax): `id=ID,src=FILE` or
    /// `id=ID,env=VAR` (`type=file|env` too). Only its id enters the cache key.
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh`: `default` ($SSH_AUTH_SOCK) or `ID=SOCKET`.
    #[arg(long = "ssh", value_name = "default|ID=SOCKET")]
    pub ssh: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotterArg {
    Auto,
    Overlay,
    Copy,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub maven: MavenArgs,
    /// Where to write the image: type=oci|docker,dest=FILE|- or type=oci-layout,dest=DIR; or
    /// its filesystem: DIR or type=local,dest=DIR, type=tar,dest=FILE|- (`-` alone: a tar on
    /// standard output).
    #[arg(short, long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Name the image (`name[:tag]`); repeatable. Adds to the spec's `tags`.
    #[arg(short, long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Push the image to the registry of each tag (like `-o type=registry`).
    #[arg(long)]
    pub push: bool,
    /// Load the image into the local docker (`docker load`, which follows DOCKER_HOST and the
    /// current docker context), or into podman with `--load=podman`.
    #[arg(
        long,
        value_enum,
        value_name = "ENGINE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "docker"
    )]
    pub load: Option<LoadArg>,
    /// Print only the image ID (the config digest; the index digest for several platforms)
    /// on standard output, nothing else unless there is an error.
    #[arg(short, long)]
    pub quiet: bool,
    /// Add an annotation to the image manifest (`KEY=VALUE`), or to the manifest, the index or
    /// both with `manifest:KEY=VALUE`, `index:KEY=VALUE`, `manifest,index:KEY=VALUE`
    /// (buildx's forms; repeatable).
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Write the image ID (config digest for docker output, else manifest digest) here.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (digests, layers, tags; with --push the pushed references) as
    /// JSON here.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Write the image's manifest digest here: the digest pushed with --push or
    /// type=registry (like Jib's jib-image.digest).
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Build steps at most this many at a time (default: number of CPUs).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Rebuild every layer instead of reusing cached ones.
    #[arg(long)]
    pub no_cache: bool,
    /// Export the step cache: type=local,dest=DIR (an OCI layout) or
    /// type=registry,ref=REF, with mode=min (the final stage's steps, default) or max (every
    /// stage's) and ignore-error=false to fail the build when the export fails. Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub cache_to: Vec<String>,
    /// Import a step cache: type=local,src=DIR or type=registry,ref=REF. Repeatable; a
    /// missing or unusable cache is a warning.
    #[arg(long, value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Give files from the context 0644 (0755 when executable) and directories 0755 instead
    /// of their permission bits on disk, so the image does not depend on the checkout's umask.
    #[arg(long)]
    pub normalize_modes: bool,
    /// When to contact the registry for FROM / COPY --from images. Default `newer`: like
    /// `docker build`, a cached tag costs one HEAD of its manifest and nothing is downloaded
    /// unless the tag moved; `missing`: no request at all for cached images (offline builds);
    /// `never`: fail unless cached; `always` (or `--pull` alone): resolve every tag again.
    /// Base layers are downloaded only when read (COPY --from, --chown names, file outputs);
    /// a push to the base's registry mounts them.
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value = "newer",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "always"
    )]
    pub pull: PullArg,
    /// Progress output.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// Grant an entitlement (BuildKit's): `security.insecure` lets `RUN --security=insecure`
    /// run with every capability and no masked paths; `network.host` is accepted (RUN
    /// steps may use the host network without it). Repeatable or comma-separated.
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// Resolve every base again, write lade.lock next to the Dockerfile or lade.toml, and
    /// build with it (a build uses an existing lade.lock without this flag).
    #[arg(long, conflicts_with = "locked")]
    pub lock: bool,
    /// Fail when lade.lock does not pin a base the build names (like `cargo --locked`).
    #[arg(long)]
    pub locked: bool,
    /// Attach an SPDX 2.3 SBOM of each image as a BuildKit-style attestation.
    #[arg(long)]
    pub sbom: bool,
    /// Attach an in-toto SLSA v1 provenance statement of each image as an attestation.
    #[arg(long)]
    pub provenance: bool,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub input: InputArgs,
}

/// `lade build --maven`: a Maven project laid out as Jib's Maven plugin does.
#[derive(Debug, Args, Default)]
pub struct MavenArgs {
    /// Build the Maven project in DIR (default: .) as Jib would: dependencies, snapshot
    /// dependencies, project modules, resources and classes, each a layer under /app; writes
    /// target/lade-image.json and target/lade-image.digest. Default name: artifactId:version.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = ".",
        conflicts_with_all = ["spec", "file", "context"]
    )]
    pub maven: Option<PathBuf>,
    /// The module of a multi-module reactor (artifactId or directory).
    #[arg(long, value_name = "NAME", requires = "maven")]
    pub module: Option<String>,
    /// The main class (default: maven-jar-plugin's manifest mainClass, else exec-maven-plugin's).
    #[arg(long, value_name = "CLASS", requires = "maven")]
    pub main_class: Option<String>,
    /// A JVM flag of the entrypoint (repeatable).
    #[arg(
        long = "jvm-flag",
        value_name = "FLAG",
        requires = "maven",
        allow_hyphen_values = true
    )]
    pub jvm_flags: Vec<String>,
    /// The base image (default: eclipse-temurin:17-jre, Jib's for Java 17; `oci:DIR[:TAG]`
    /// for a local layout).
    #[arg(long, value_name = "IMAGE", requires = "maven")]
    pub base: Option<String>,
    /// The image's user.
    #[arg(long, value_name = "USER", requires = "maven")]
    pub user: Option<String>,
    /// A port the image exposes (`8080`, `53/udp`; repeatable).
    #[arg(long = "port", value_name = "PORT", requires = "maven")]
    pub ports: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    /// One line per difference.
    Text,
    /// The whole comparison as one JSON document.
    Json,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first image: `registry/repository[:tag|@digest]`, `oci:DIR[:TAG]`,
    /// `oci-archive:FILE[:TAG]` or `docker-archive:FILE`.
    pub a: String,
    /// The second image, named the same ways.
    pub b: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// Which platform's image to compare in a multi-platform index (default: the host's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The published image, named as for `lade diff`.
    #[arg(value_name = "REF")]
    pub reference: String,
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format of the differences.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DiffFormat,
    /// As for `lade build`: when the published image was built with it, the rebuild needs it.
    #[arg(long)]
    pub normalize_modes: bool,
    /// Progress output of the rebuild.
    #[arg(long, value_enum, default_value = "quiet")]
    pub progress: ProgressMode,
}
