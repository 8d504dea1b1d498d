//! Lowering typed instructions to the plan: stages and their bases, build-arg scoping,
//! variable expansion, docker's config semantics, COPY/ADD file sets.

use super::instructions::{self, CommandLine, CopyArgs, HealthcheckArgs, Instruction, Kind};
use super::parser::Dockerfile;
use super::shell::Lexer;
use crate::frontend::diag::{self, Location};
use crate::image::{Healthcheck, ImageConfig, Platform};
use crate::path::ImagePath;
use crate::plan::{
    Base, Chmod, ConfigEdit, CopyFrom, FileSet, LayerStep, Plan, RunStep, Stage, Step,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// An error in a Dockerfile, located and rendered with a snippet.
#[derive(Debug, thiserror::Error)]
#[error("{rendered}")]
pub struct DockerfileError {
    pub location: Location,
    pub message: String,
    rendered: String,
}

/// What the build request adds to the Dockerfile.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<Platform>,
    /// `--label`s for the final image.
    pub labels: BTreeMap<String, String>,
    /// Base for relative `oci:`/`oci-archive:` paths in FROM.
    pub context_dir: PathBuf,
    /// Reads base images' configurations. Without it, bases contribute no `ENV` to
    /// expansion and their `ONBUILD` triggers do not run.
    pub base_configs: Option<Arc<dyn BaseConfigs>>,
}

/// Reads the configuration of a FROM image while lowering, as BuildKit's image meta resolver
/// does: its `Env` is visible to variable expansion, its `WorkingDir`, `User` and `Shell`
/// carry on, and its `OnBuild` triggers run right after FROM. The CLI implements it over the
/// store and the registry client; the frontend itself does no I/O.
pub trait BaseConfigs: Send + Sync {
    /// The config of `base` (never `Scratch` or `Stage`) for `platform`; an error names the
    /// image.
    fn config(&self, base: &Base, platform: &Platform) -> Result<ImageConfig, String>;
}

impl std::fmt::Debug for dyn BaseConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BaseConfigs")
    }
}

/// The result: the plan, and what the user may want to know.
#[derive(Debug)]
pub struct Lowered {
    pub plan: Plan,
    /// `--build-arg`s no ARG consumed (docker warns about them).
    pub unused_build_args: Vec<String>,
}

/// Args every build defines (BuildKit's automatic platform args) or accepts undeclared.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn platform_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        m.insert(format!("{prefix}PLATFORM"), p.to_string());
        m.insert(format!("{prefix}OS"), p.os.clone());
        m.insert(format!("{prefix}ARCH"), p.architecture.clone());
        m.insert(format!("{prefix}VARIANT"), p.variant_or_empty().to_string());
    }
    m
}

struct Cx<'a> {
    file: &'a str,
    src: &'a str,
    lexer: Lexer,
    opts: &'a LowerOptions,
    used_args: std::collections::BTreeSet<String>,
    /// Base configs read so far: a base named by several stages is read once.
    configs: Vec<(Base, Platform, Result<ImageConfig, String>)>,
}

impl Cx<'_> {
    fn error(
        &self,
        line: usize,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> DockerfileError {
        let location = Location {
            file: self.file.to_string(),
            line,
            col: 1,
        };
        let message = message.into();
        let rendered = diag::render(&location, self.src, &message, hint);
        DockerfileError {
            location,
            message,
            rendered,
        }
    }

    /// The config of an image base, if a reader is configured.
    fn base_config(
        &mut self,
        base: &Base,
        platform: &Platform,
    ) -> Option<Result<ImageConfig, String>> {
        let reader = self.opts.base_configs.as_ref()?;
        if let Some((_, _, c)) = self
            .configs
            .iter()
            .find(|(b, p, _)| b == base && p == platform)
        {
            return Some(c.clone());
        }
        let c = reader.config(base, platform);
        self.configs
            .push((base.clone(), platform.clone(), c.clone()));
        Some(c)
    }

    fn expand(
        &self,
        line: usize,
        word: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<String, DockerfileError> {
        self.lexer
            .process_word(word, &|name| env.get(name).cloned())
            .map_err(|e| self.error(line, e.to_string(), None))
    }
}

/// One stage being lowered.
struct StageState {
    name: Option<String>,
    base: Base,
    platform: Platform,
    steps: Vec<Step>,
    /// ARGs and ENVs visible to expansion (ENV wins over ARG).
    env: BTreeMap<String, String>,
    workdir: ImagePath,
    user: Option<String>,
    shell: Vec<String>,
    cmd_set: bool,
    cmd: Option<Vec<String>>,
    line: usize,
    /// This stage's own ONBUILD triggers (they run in stages built FROM it).
    onbuild: Vec<String>,
    /// Why the base's config could not be read; an error only if the target needs the stage.
    base_error: Option<DockerfileError>,
}

impl StageState {
    /// Starts where the base image's config leaves off, like docker: its environment (for
    /// expansion too), working directory, user and shell.
    fn inherit(&mut self, c: &ImageConfig) {
        for kv in c.config.env.iter().flatten() {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            self.env.insert(k.to_string(), v.to_string());
        }
        if let Some(w) = c.config.working_dir.as_deref().filter(|w| !w.is_empty()) {
            if let Ok(w) = ImagePath::resolve(&ImagePath::root(), w) {
                self.workdir = w;
            }
        }
        self.user = c.config.user.clone().filter(|u| !u.is_empty());
        if let Some(shell) = c.config.shell.clone().filter(|s| !s.is_empty()) {
            self.shell = shell;
        }
    }

    /// Starts where an earlier stage of this Dockerfile ended (BuildKit also carries its
    /// build args over).
    fn continue_from(&mut self, base: &StageState) {
        self.env = base.env.clone();
        self.workdir = base.workdir.clone();
        self.user = base.user.clone();
        self.shell = base.shell.clone();
    }
}

pub fn lower(
    file: &str,
    src: &str,
    df: &Dockerfile,
    opts: &LowerOptions,
) -> Result<Lowered, DockerfileError> {
    let mut cx = Cx {
        file,
        src,
        lexer: Lexer::new(df.escape),
        opts,
        used_args: Default::default(),
        configs: Vec::new(),
    };
    let target_platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let auto_args = platform_args(&target_platform, &Platform::host());

    let instructions: Vec<Instruction> = df
        .instructions
        .iter()
        .map(|n| {
            instructions::from_node(n).map_err(|e| cx.error(e.line, e.message, e.hint.as_deref()))
        })
        .collect::<Result<_, _>>()?;
    if instructions.is_empty() {
        return Err(cx.error(
            1,
            "the Dockerfile has no instructions",
            Some("start with FROM <image>"),
        ));
    }

    // Global scope: ARGs before the first FROM, usable in FROM lines only.
    let mut global: BTreeMap<String, String> = auto_args.clone();
    let mut stages: Vec<StageState> = Vec::new();
    for ins in &instructions {
        match &ins.kind {
            Kind::From {
                image,
                name,
                platform,
            } => {
                let image = cx.expand(ins.line, image, &global)?;
                let platform = match platform {
                    Some(p) => {
                        let p = cx.expand(ins.line, p, &global)?;
                        p.parse().map_err(|e: crate::image::PlatformParseError| {
                            cx.error(ins.line, e.to_string(), None)
                        })?
                    }
                    None => target_platform.clone(),
                };
                if let Some(n) = name {
                    if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                        return Err(cx.error(
                            ins.line,
                            format!("duplicate stage name {n:?}"),
                            None,
                        ));
                    }
                }
                let base = base_for(&cx, ins.line, &image, name.as_deref(), &stages)?;
                let mut st = StageState {
                    name: name.clone(),
                    base: base.clone(),
                    platform: platform.clone(),
                    steps: Vec::new(),
                    env: BTreeMap::new(),
                    workdir: ImagePath::root(),
                    user: None,
                    shell: vec!["/bin/sh".into(), "-c".into()],
                    cmd_set: false,
                    cmd: None,
                    line: ins.line,
                    onbuild: Vec::new(),
                    base_error: None,
                };
                let triggers = match &base {
                    Base::Scratch => Vec::new(),
                    Base::Stage { index } => {
                        st.continue_from(&stages[*index]);
                        stages[*index].onbuild.clone()
                    }
                    image_base => match cx.base_config(image_base, &platform) {
                        None => Vec::new(),
                        Some(Ok(config)) => {
                            st.inherit(&config);
                            config.config.on_build.unwrap_or_default()
                        }
                        Some(Err(e)) => {
                            st.base_error = Some(cx.error(ins.line, e, None));
                            Vec::new()
                        }
                    },
                };
                stages.push(st);
                for trigger in &triggers {
                    run_trigger(&mut cx, ins, trigger, &mut stages, &global)?;
                }
            }
            Kind::Arg(args) if stages.is_empty() => {
                for (k, default) in args {
                    let v = match opts.build_args.get(k) {
                        Some(v) => Some(v.clone()),
                        None => default
                            .as_ref()
                            .map(|d| cx.expand(ins.line, d, &global))
                            .transpose()?,
                    };
                    cx.used_args.insert(k.clone());
                    match v {
                        Some(v) => global.insert(k.clone(), v),
                        None => global.remove(k),
                    };
                }
            }
            _ if stages.is_empty() => {
                return Err(cx.error(
                    ins.line,
                    format!(
                        "{} before the first FROM",
                        ins.original
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_uppercase()
                    ),
                    Some("only ARG may come before FROM"),
                ));
            }
            _ => {
                let earlier = stages_names(stages_before(&stages));
                let stage = stages.last_mut().expect("checked");
                lower_instruction(&mut cx, ins, stage, &global, &earlier)?;
            }
        }
    }

    let target = match &opts.target {
        Some(t) => {
            let t = t.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&t))
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    cx.error(
                        1,
                        format!("target stage {t:?} could not be found"),
                        Some(&format!(
                            "stages in this Dockerfile: {}",
                            if names.is_empty() {
                                "(none named)".to_string()
                            } else {
                                names.join(", ")
                            }
                        )),
                    )
                })?
        }
        None => stages.len() - 1,
    };
    for (k, v) in &opts.labels {
        stages[target]
            .steps
            .push(Step::Config(ConfigEdit::Label(k.clone(), v.clone())));
    }

    let base_errors: Vec<Option<DockerfileError>> =
        stages.iter_mut().map(|s| s.base_error.take()).collect();
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !cx.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .cloned()
        .collect();
    let stages = stages
        .into_iter()
        .map(|s| Stage {
            name: s.name,
            base: s.base,
            platform: s.platform,
            steps: s.steps,
        })
        .collect();
    let plan = Plan {
        stages,
        target,
        annotations: BTreeMap::new(),
        tags: Vec::new(),
    };
    // Like BuildKit, only the bases of stages the target needs must be readable.
    for (needed, error) in plan.needed_stages().into_iter().zip(base_errors) {
        if let (true, Some(e)) = (needed, error) {
            return Err(e);
        }
    }
    Ok(Lowered {
        plan,
        unused_build_args,
    })
}

/// Runs one ONBUILD trigger of a stage's base as if it were written right after the FROM
/// (`from`): parsed as a Dockerfile instruction, errors located at the FROM line.
fn run_trigger(
    cx: &mut Cx,
    from: &Instruction,
    trigger: &str,
    stages: &mut [StageState],
    global: &BTreeMap<String, String>,
) -> Result<(), DockerfileError> {
    let fail = |cx: &Cx, message: &str| {
        cx.error(
            from.line,
            format!("ONBUILD trigger {trigger:?} of the base image: {message}"),
            None,
        )
    };
    let df = super::parser::parse(trigger).map_err(|e| fail(cx, &e.message))?;
    let node = match df.instructions.as_slice() {
        [node] => node,
        _ => return Err(fail(cx, "a trigger must be exactly one instruction")),
    };
    if matches!(node.cmd.as_str(), "onbuild" | "from" | "maintainer") {
        return Err(fail(
            cx,
            &format!(
                "{} isn't allowed as an ONBUILD trigger",
                node.cmd.to_uppercase()
            ),
        ));
    }
    let typed = instructions::from_node(node).map_err(|e| fail(cx, &e.message))?;
    let ins = Instruction {
        line: from.line,
        end_line: from.line,
        ..typed
    };
    let earlier = stages_names(stages_before(stages));
    let stage = stages.last_mut().expect("FROM pushed the stage");
    lower_instruction(cx, &ins, stage, global, &earlier).map_err(|e| fail(cx, &e.message))
}

fn stages_before(stages: &[StageState]) -> &[StageState] {
    &stages[..stages.len() - 1]
}

fn stages_names(stages: &[StageState]) -> Vec<Option<String>> {
    stages.iter().map(|s| s.name.clone()).collect()
}

/// FROM's image: an earlier stage, `scratch`, `oci:DIR[:TAG]`, `oci-archive:FILE`, or a
/// registry reference. A name that is only defined later (or is this stage) is circular.
fn base_for(
    cx: &Cx,
    line: usize,
    image: &str,
    own_name: Option<&str>,
    stages: &[StageState],
) -> Result<Base, DockerfileError> {
    let lower = image.to_ascii_lowercase();
    if let Some(index) = stages
        .iter()
        .position(|s| s.name.as_deref() == Some(&lower))
    {
        return Ok(Base::Stage { index });
    }
    if own_name == Some(lower.as_str()) {
        return Err(cx.error(
            line,
            format!("circular dependency detected on stage: {lower}"),
            None,
        ));
    }
    if image.is_empty() {
        return Err(cx.error(
            line,
            "FROM has an empty image name",
            Some("is a build arg used in FROM unset? pass it with --build-arg"),
        ));
    }
    Base::from_image_name(image, &cx.opts.context_dir)
        .ok_or_else(|| cx.error(line, format!("invalid image reference {image:?}"), None))
}

fn lower_instruction(
    cx: &mut Cx,
    ins: &Instruction,
    st: &mut StageState,
    global: &BTreeMap<String, String>,
    earlier: &[Option<String>],
) -> Result<(), DockerfileError> {
    let line = ins.line;
    let config = |st: &mut StageState, e: ConfigEdit| st.steps.push(Step::Config(e));
    match &ins.kind {
        Kind::From { .. } => unreachable!("FROM starts a stage"),
        Kind::Arg(args) => {
            for (k, default) in args {
                cx.used_args.insert(k.clone());
                let v = match cx.opts.build_args.get(k) {
                    Some(v) => Some(v.clone()),
                    None => match default {
                        Some(d) => Some(cx.expand(line, d, &st.env)?),
                        // `ARG NAME` inside a stage brings in the global value.
                        None => global.get(k).cloned(),
                    },
                };
                if let Some(v) = v {
                    st.env.entry(k.clone()).or_insert(v);
                }
            }
        }
        Kind::Env(pairs) => {
            for (k, v) in pairs {
                let v = cx.expand(line, v, &st.env)?;
                st.env.insert(k.clone(), v.clone());
                config(st, ConfigEdit::Env(k.clone(), v));
            }
        }
        Kind::Label(pairs) => {
            for (k, v) in pairs {
                let k = cx.expand(line, k, &st.env)?;
                let v = cx.expand(line, v, &st.env)?;
                config(st, ConfigEdit::Label(k, v));
            }
        }
        Kind::Maintainer(m) => config(st, ConfigEdit::Author(m.clone())),
        Kind::Workdir(w) => {
            let w = cx.expand(line, w, &st.env)?;
            st.workdir = ImagePath::resolve(&st.workdir, &w)
                .map_err(|e| cx.error(line, e.to_string(), None))?;
            if !st.workdir.is_root() {
                st.steps.push(Step::Layer(LayerStep {
                    name: format!("WORKDIR {}", st.workdir),
                    created_by: format!("WORKDIR {}", st.workdir),
                    sources: vec![FileSet::Workdir {
                        path: st.workdir.clone(),
                        user: st.user.clone(),
                    }],
                }));
            }
            config(st, ConfigEdit::WorkingDir(st.workdir.display()));
        }
        Kind::User(u) => {
            let u = cx.expand(line, u, &st.env)?;
            st.user = Some(u.clone());
            config(st, ConfigEdit::User(u));
        }
        Kind::Expose(ports) => {
            for p in ports {
                let p = cx.expand(line, p, &st.env)?;
                for port in expand_port(&p).ok_or_else(|| {
                    cx.error(
                        line,
                        format!("invalid port {p:?}"),
                        Some("e.g. 80, 8080/tcp, 53/udp or 8000-8010"),
                    )
                })? {
                    config(st, ConfigEdit::ExposedPort(port));
                }
            }
        }
        Kind::Volume(vols) => {
            for v in vols {
                let v = cx.expand(line, v, &st.env)?;
                if v.trim().is_empty() {
                    return Err(cx.error(
                        line,
                        "VOLUME specified can not be an empty string",
                        None,
                    ));
                }
                config(st, ConfigEdit::Volume(v));
            }
        }
        Kind::Entrypoint(c) => {
            config(st, ConfigEdit::Entrypoint(Some(command(st, c))));
            // Docker drops an inherited CMD when ENTRYPOINT is set, but keeps one set earlier
            // in the same stage.
            if st.cmd_set {
                let cmd = st.cmd.clone();
                config(st, ConfigEdit::Cmd(cmd));
            }
        }
        Kind::Cmd(c) => {
            let cmd = command(st, c);
            st.cmd_set = true;
            st.cmd = Some(cmd.clone());
            config(st, ConfigEdit::Cmd(Some(cmd)));
        }
        Kind::Shell(s) => {
            st.shell = s.clone();
            config(st, ConfigEdit::Shell(s.clone()));
        }
        Kind::StopSignal(s) => {
            let s = cx.expand(line, s, &st.env)?;
            config(st, ConfigEdit::StopSignal(s));
        }
        Kind::Healthcheck(h) => {
            let hc = healthcheck(cx, line, st, h)?;
            config(st, ConfigEdit::Healthcheck(Some(hc)));
        }
        Kind::OnBuild(t) => {
            st.onbuild.push(t.clone());
            config(st, ConfigEdit::OnBuild(t.clone()));
        }
        Kind::Copy(c) | Kind::Add(c) => {
            let add = matches!(ins.kind, Kind::Add(_));
            let step = copy_step(cx, ins, st, c, add, earlier)?;
            st.steps.push(Step::Layer(step));
        }
        Kind::Run { command: c, .. } => {
            let command = command(st, c);
            st.steps.push(Step::Run(RunStep {
                command,
                origin: format!("{}:{}", cx.file, line),
            }));
        }
    }
    let _ = st.line;
    Ok(())
}

/// Exec form as is; shell form wrapped in the stage's SHELL.
fn command(st: &StageState, c: &CommandLine) -> Vec<String> {
    if c.exec_form {
        c.args.clone()
    } else {
        let mut v = st.shell.clone();
        v.push(c.args.join(" "));
        v
    }
}

/// `80` → `80/tcp`; `8000-8002/udp` → each port; invalid → None.
pub fn expand_port(p: &str) -> Option<Vec<String>> {
    let (range, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return None;
    }
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
        None => {
            let n = range.parse::<u16>().ok()?;
            (n, n)
        }
    };
    (lo > 0 && lo <= hi).then(|| (lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

/// Go-style durations as HEALTHCHECK takes them: `30s`, `1m30s`, `500ms`, `1h`.
pub fn parse_duration(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

fn healthcheck(
    cx: &Cx,
    line: usize,
    st: &StageState,
    h: &HealthcheckArgs,
) -> Result<Healthcheck, DockerfileError> {
    let Some(test) = &h.test else {
        return Ok(Healthcheck {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        });
    };
    let dur = |name: &str, v: &Option<String>| -> Result<Option<i64>, DockerfileError> {
        v.as_ref()
            .map(|v| match parse_duration(v) {
                Some(d) if d == 0 || d >= 1_000_000 => Ok(d),
                Some(_) => Err(cx.error(line, format!("--{name} cannot be less than 1ms"), None)),
                None => Err(cx.error(
                    line,
                    format!("--{name}: invalid duration {v:?}"),
                    Some("e.g. 30s, 1m30s, 500ms"),
                )),
            })
            .transpose()
    };
    let retries = h
        .retries
        .as_ref()
        .map(|r| {
            r.parse::<i64>()
                .map_err(|_| cx.error(line, format!("--retries: {r:?} is not a number"), None))
        })
        .transpose()?;
    let test = if test.exec_form {
        let mut v = vec!["CMD".to_string()];
        v.extend(test.args.iter().cloned());
        v
    } else {
        vec!["CMD-SHELL".to_string(), test.args.join(" ")]
    };
    let _ = st;
    Ok(Healthcheck {
        test: Some(test),
        interval: dur("interval", &h.interval)?,
        timeout: dur("timeout", &h.timeout)?,
        start_period: dur("start-period", &h.start_period)?,
        start_interval: dur("start-interval", &h.start_interval)?,
        retries,
    })
}

/// `--chmod`: octal, or symbolic like BuildKit (`u+x`, `g-w,o=r`, `a=rX`).
fn parse_chmod(cx: &Cx, line: usize, s: &str) -> Result<Chmod, DockerfileError> {
    Chmod::parse(s).map_err(|e| cx.error(line, e, None))
}

fn copy_step(
    cx: &Cx,
    ins: &Instruction,
    st: &StageState,
    c: &CopyArgs,
    add: bool,
    earlier: &[Option<String>],
) -> Result<LayerStep, DockerfileError> {
    let line = ins.line;
    let env = &st.env;
    let from = match &c.from {
        None => CopyFrom::Context,
        Some(f) => {
            let f = cx.expand(line, f, env)?;
            let lower = f.to_ascii_lowercase();
            if let Some(index) = earlier.iter().position(|n| n.as_deref() == Some(&lower)) {
                CopyFrom::Stage { index }
            } else if let Ok(index) = f.parse::<usize>() {
                if index >= earlier.len() {
                    return Err(cx.error(
                        line,
                        format!("COPY --from={f}: there is no stage {index} before this one"),
                        None,
                    ));
                }
                CopyFrom::Stage { index }
            } else if st.name.as_deref() == Some(&lower) {
                return Err(cx.error(
                    line,
                    format!("circular dependency detected on stage: {lower}"),
                    None,
                ));
            } else {
                let base = Base::from_image_name(&f, &cx.opts.context_dir).ok_or_else(|| {
                    cx.error(line, format!("COPY --from={f}: not a stage or image"), None)
                })?;
                if matches!(base, Base::Registry { .. }) && !f.contains([':', '/', '@']) {
                    let names: Vec<&str> = earlier.iter().flatten().map(String::as_str).collect();
                    return Err(cx.error(
                        line,
                        format!("COPY --from={f}: no stage named {f:?} before this instruction"),
                        Some(&format!(
                            "stages defined so far: {}",
                            if names.is_empty() {
                                "(none named)".to_string()
                            } else {
                                names.join(", ")
                            }
                        )),
                    ));
                }
                CopyFrom::Image { base }
            }
        }
    };
    let dest_raw = cx.expand(line, &c.dest, env)?;
    let mut sources = Vec::new();
    let mut urls = Vec::new();
    for s in &c.sources {
        let s = cx.expand(line, s, env)?;
        if add && is_git_source(&s) {
            return Err(cx.error(
                line,
                format!("ADD from a Git repository ({s}) is not supported yet"),
                None,
            ));
        } else if is_http_source(&s) {
            if !add {
                return Err(cx.error(line, "source can't be a URL for COPY", Some("use ADD")));
            }
            urls.push(s);
        } else {
            sources.push(s);
        }
    }
    // BuildKit's rules for --checksum.
    let checksum = match &c.checksum {
        None => None,
        Some(raw) => {
            let raw = cx.expand(line, raw, env)?;
            if c.sources.len() != 1 {
                return Err(cx.error(
                    line,
                    "checksum can't be specified for multiple sources",
                    None,
                ));
            }
            if urls.is_empty() {
                return Err(cx.error(line, "checksum requires HTTP(S) or Git sources", None));
            }
            Some(raw.parse::<crate::digest::Digest>().map_err(|_| {
                cx.error(
                    line,
                    format!("invalid --checksum={raw}"),
                    Some("expected sha256:<64 lowercase hex digits>"),
                )
            })?)
        }
    };
    let dest = ImagePath::resolve(&st.workdir, &dest_raw)
        .map_err(|e| cx.error(line, e.to_string(), None))?;
    // Whether a destination without `/` is a directory depends on the stage's filesystem
    // (an existing directory is copied into, as BuildKit does): exec decides for COPY
    // sources, and refuses several sources into a non-directory.
    let dest_is_dir = dest_raw.ends_with('/') || dest_raw.ends_with("/.") || dest_raw == ".";
    let several = dest_is_dir || sources.len() + urls.len() + c.heredocs.len() > 1;
    let chown = c
        .chown
        .as_ref()
        .map(|s| cx.expand(line, s, env))
        .transpose()?;
    let chmod = c
        .chmod
        .as_ref()
        .map(|s| {
            cx.expand(line, s, env)
                .and_then(|s| parse_chmod(cx, line, &s))
        })
        .transpose()?;
    let mut sets = Vec::new();
    if !sources.is_empty() {
        sets.push(FileSet::Copy {
            from,
            sources,
            dest: dest.clone(),
            dest_is_dir,
            exclude: c
                .exclude
                .iter()
                .map(|e| cx.expand(line, e, env))
                .collect::<Result<_, _>>()?,
            parents: c.parents,
            chown: chown.clone(),
            chmod: chmod.clone(),
            unpack_archives: add,
            // BuildKit links only without --chmod.
            link: c.link && c.chmod.is_none(),
            origin: format!("{}:{}", cx.file, line),
        });
    }
    for url in urls {
        let file_name = url_file_name(&url);
        let path = if several {
            dest.join_bytes(file_name.as_bytes())
        } else {
            dest.clone()
        };
        sets.push(FileSet::Url {
            url,
            path,
            checksum: checksum.clone(),
            chown: chown.clone(),
            chmod: chmod.clone(),
            file_name,
            origin: format!("{}:{}:1", cx.file, line),
        });
    }
    for (name, content) in &c.heredocs {
        let path = if several {
            dest.join_bytes(name.as_bytes())
        } else {
            dest.clone()
        };
        sets.push(FileSet::Inline {
            path,
            content: content.clone().into_bytes(),
            mode: chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false)),
            uid: 0,
            gid: 0,
            chown: chown.clone(),
            heredoc: Some(name.clone()),
        });
    }
    let keyword = if add { "ADD" } else { "COPY" };
    let text = ins.original.trim();
    Ok(LayerStep {
        name: format!(
            "{keyword} {}",
            text.get(keyword.len()..).unwrap_or("").trim()
        ),
        created_by: text.to_string(),
        sources: sets,
    })
}

/// `ADD` of a Git repository: `git@host:…`, `git://…`, or an http(s) URL of a `.git` path.
fn is_git_source(s: &str) -> bool {
    if s.starts_with("git@") || s.starts_with("git://") {
        return true;
    }
    is_http_source(s) && {
        let path = s.split(['#', '?']).next().unwrap_or(s);
        path.trim_end_matches('/').ends_with(".git")
    }
}

fn is_http_source(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The name a URL's download gets in a destination directory: the last segment of its path,
/// percent-decoded, like BuildKit (`__unnamed__` when the path has none).
fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .split_once('/')
        .map_or("", |(_, p)| p);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let decoded = crate::frontend::percent_decode(last);
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
        "__unnamed__".to_string()
    } else {
        decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base reader that knows one image, `oci:/base`.
    struct OneBase(ImageConfig);

    impl BaseConfigs for OneBase {
        fn config(&self, base: &Base, _: &Platform) -> Result<ImageConfig, String> {
            match base {
                Base::OciLayout { dir, .. } if dir == std::path::Path::new("/base") => {
                    Ok(self.0.clone())
                }
                other => Err(format!("base image {other:?}: not found")),
            }
        }
    }

    fn lower_with(src: &str, env: &[&str], onbuild: &[&str]) -> Result<Plan, String> {
        let mut config = ImageConfig::default();
        config.config.env = Some(env.iter().map(|s| s.to_string()).collect());
        config.config.on_build = Some(onbuild.iter().map(|s| s.to_string()).collect());
        config.config.working_dir = Some("/srv".into());
        let opts = LowerOptions {
            base_configs: Some(Arc::new(OneBase(config))),
            ..Default::default()
        };
        let df = super::super::parser::parse(src).map_err(|e| e.to_string())?;
        lower("Dockerfile", src, &df, &opts)
            .map(|l| l.plan)
            .map_err(|e| e.to_string())
    }

    fn edits(plan: &Plan, stage: usize) -> Vec<ConfigEdit> {
        plan.stages[stage]
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Config(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn base_env_and_workdir_are_visible_to_later_instructions() {
        let plan = lower_with(
            "FROM oci:/base\nENV PATH=/opt/x:$PATH\nWORKDIR $HOME/src\nWORKDIR rel\n",
            &["PATH=/usr/bin:/bin", "HOME=/home/app"],
            &[],
        )
        .unwrap();
        assert_eq!(
            edits(&plan, 0),
            [
                ConfigEdit::Env("PATH".into(), "/opt/x:/usr/bin:/bin".into()),
                ConfigEdit::WorkingDir("/home/app/src".into()),
                ConfigEdit::WorkingDir("/home/app/src/rel".into()),
            ]
        );
        // A relative WORKDIR right after FROM starts at the base's WorkingDir.
        let plan = lower_with("FROM oci:/base\nWORKDIR app\n", &[], &[]).unwrap();
        assert_eq!(edits(&plan, 0), [ConfigEdit::WorkingDir("/srv/app".into())]);
    }

    #[test]
    fn onbuild_triggers_run_right_after_from() {
        let plan = lower_with(
            "FROM oci:/base\nENV Y=2\n",
            &[],
            &["ENV X=1", "LABEL from=$X"],
        )
        .unwrap();
        assert_eq!(
            edits(&plan, 0),
            [
                ConfigEdit::Env("X".into(), "1".into()),
                ConfigEdit::Label("from".into(), "1".into()),
                ConfigEdit::Env("Y".into(), "2".into()),
            ]
        );
        // FROM a stage runs that stage's own ONBUILD instructions, not in the stage itself.
        let plan = lower_with(
            "FROM scratch AS tmpl\nONBUILD ENV Z=3\nFROM tmpl\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(edits(&plan, 0), [ConfigEdit::OnBuild("ENV Z=3".into())]);
        assert_eq!(edits(&plan, 1), [ConfigEdit::Env("Z".into(), "3".into())]);
    }

    #[test]
    fn bad_triggers_are_reported_at_the_from_line() {
        for (trigger, wanted) in [
            ("FROM busybox", "FROM isn't allowed as an ONBUILD trigger"),
            (
                "ONBUILD ENV A=1",
                "ONBUILD isn't allowed as an ONBUILD trigger",
            ),
            (
                "MAINTAINER me",
                "MAINTAINER isn't allowed as an ONBUILD trigger",
            ),
            ("COPPY a /b", "unknown instruction: COPPY"),
            ("WORKDIR", "WORKDIR requires exactly one argument"),
        ] {
            let err = lower_with("ARG X\nFROM oci:/base\n", &[], &[trigger]).unwrap_err();
            assert!(err.starts_with("Dockerfile:2:1: "), "{err}");
            assert!(
                err.contains(&format!("ONBUILD trigger {trigger:?}")),
                "{err}"
            );
            assert!(err.contains(wanted), "{trigger}: {err}");
            assert!(err.contains("2 | FROM oci:/base"), "snippet: {err}");
        }
    }

    #[test]
    fn unreadable_bases_fail_only_when_the_target_needs_them() {
        let err = lower_with("FROM oci:/missing\n", &[], &[]).unwrap_err();
        assert!(err.contains("Dockerfile:1:1: base image"), "{err}");
        let plan = lower_with("FROM oci:/missing AS unused\nFROM oci:/base\n", &[], &[]);
        assert!(plan.is_ok(), "{plan:?}");
    }

    #[test]
    fn url_sources_are_named_by_their_last_path_segment() {
        assert_eq!(
            url_file_name("https://example.com/a/b/tool.tar.gz"),
            "tool.tar.gz"
        );
        assert_eq!(
            url_file_name("http://h:8080/dl/x%20y.txt?sig=1#frag"),
            "x y.txt"
        );
        assert_eq!(url_file_name("https://example.com/dir/"), "dir");
        assert_eq!(url_file_name("https://example.com"), "__unnamed__");
        assert_eq!(url_file_name("https://example.com/"), "__unnamed__");
        assert_eq!(url_file_name("https://example.com/a%2Fb"), "__unnamed__");
        assert!(is_git_source("https://github.com/moby/buildkit.git#v0.12"));
        assert!(is_git_source("git@github.com:moby/buildkit.git"));
        assert!(!is_git_source("https://example.com/file.txt"));
    }

    #[test]
    fn add_url_lowers_to_a_download() {
        let src = "FROM scratch\nADD --chmod=755 --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/x/tool /usr/bin/\nADD http://h/f.txt /etc/conf\n";
        let plan = lower_with(src, &[], &[]).unwrap();
        let urls: Vec<(String, String, Option<String>)> = plan.stages[0]
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Layer(l) => match &l.sources[0] {
                    FileSet::Url {
                        url,
                        path,
                        checksum,
                        ..
                    } => Some((
                        url.clone(),
                        path.display(),
                        checksum.as_ref().map(|d| d.to_string()),
                    )),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(
            urls,
            [
                (
                    "https://example.com/x/tool".to_string(),
                    "/usr/bin/tool".to_string(),
                    Some(format!("sha256:{}", "0".repeat(64)))
                ),
                ("http://h/f.txt".to_string(), "/etc/conf".to_string(), None),
            ]
        );
        for (df, wanted) in [
            (
                "ADD --checksum=sha256:00 a.txt /x",
                "checksum requires HTTP(S) or Git sources",
            ),
            (
                "ADD --checksum=md5:00 http://h/a /x",
                "invalid --checksum=md5:00",
            ),
            (
                "ADD --checksum=sha256:00 http://h/a http://h/b /x/",
                "checksum can't be specified for multiple sources",
            ),
            ("COPY http://h/a /x", "source can't be a URL for COPY"),
            (
                "ADD https://github.com/moby/buildkit.git /src",
                "Git repository",
            ),
        ] {
            let err = lower_with(&format!("FROM scratch\n{df}\n"), &[], &[]).unwrap_err();
            assert!(err.starts_with("Dockerfile:2:1: "), "{err}");
            assert!(err.contains(wanted), "{df}: {err}");
        }
    }

    #[test]
    fn ports_and_durations() {
        assert_eq!(
            expand_port("8000-8002/UDP").unwrap(),
            ["8000/udp", "8001/udp", "8002/udp"]
        );
        assert_eq!(expand_port("80").unwrap(), ["80/tcp"]);
        assert!(expand_port("0").is_none());
        assert!(expand_port("80/xyz").is_none());
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("5x"), None);
    }
}
