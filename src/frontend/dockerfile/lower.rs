//! Lowering typed instructions to the plan: stages and their bases, build-arg scoping,
//! variable expansion, docker's config semantics, COPY/ADD file sets.

use super::instructions::{
    self, CommandLine, CopyArgs, HealthcheckArgs, Instruction, Kind, RunHeredoc,
};
use super::parser::Dockerfile;
use super::shell::Lexer;
use crate::frontend::diag::{self, Location};
use crate::image::{Healthcheck, ImageConfig, Platform};
use crate::path::ImagePath;
use crate::plan::{
    Base, Chmod, ConfigEdit, CopyFrom, FileSet, LayerStep, Plan, RunFile, RunNetwork, RunStep,
    Stage, Step,
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
    /// The network of RUN steps without their own `RUN --network` (`--network`).
    pub network: RunNetwork,
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

pub use crate::image::DEFAULT_PATH;

struct Cx<'a> {
    file: &'a str,
    src: &'a str,
    lexer: Lexer,
    opts: &'a LowerOptions,
    used_args: std::collections::BTreeSet<String>,
    /// Base configs read so far: a base named by several stages is read once.
    configs: Vec<(Base, Platform, Result<ImageConfig, String>)>,
    /// Every stage of the file, in order: its `AS` name and its FROM line. COPY --from
    /// resolves names over the whole file, as BuildKit does.
    all_stages: Vec<(Option<String>, usize)>,
    /// COPY --from references to stages: (stage, referenced stage, line), in order.
    stage_refs: Vec<(usize, usize, usize)>,
}

impl Cx<'_> {
    /// How BuildKit names a stage in messages: its `AS` name, else `stage-N`.
    fn stage_display(&self, index: usize) -> String {
        match self.all_stages.get(index) {
            Some((Some(name), _)) => name.clone(),
            _ => format!("stage-{index}"),
        }
    }

    /// Where the instruction on `line` starts.
    fn location(&self, line: usize) -> Location {
        Location::line_start(self.file, self.src, line)
    }

    fn error(
        &self,
        line: usize,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> DockerfileError {
        let location = self.location(line);
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
    /// ARGs and ENVs visible to expansion (the later one wins, as in BuildKit).
    env: BTreeMap<String, String>,
    /// Names of the ARGs declared in this stage (or carried over from the stage it is built
    /// FROM), in order: a RUN sees them as environment.
    args: Vec<String>,
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
        self.args = base.args.clone();
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
        all_stages: Vec::new(),
        stage_refs: Vec::new(),
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
    cx.all_stages = instructions
        .iter()
        .filter_map(|ins| match &ins.kind {
            Kind::From { name, .. } => Some((name.clone(), ins.line)),
            _ => None,
        })
        .collect();

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
                let base = base_for(&cx, ins.line, &image, &stages)?;
                // A stage built on another one runs on that one's platform (BuildKit's
                // `init` takes the base stage's platform, whatever this FROM says).
                let platform = match &base {
                    Base::Stage { index } => stages[*index].platform.clone(),
                    _ => platform,
                };
                let mut st = StageState {
                    name: name.clone(),
                    base: base.clone(),
                    platform: platform.clone(),
                    steps: Vec::new(),
                    env: BTreeMap::new(),
                    args: Vec::new(),
                    workdir: ImagePath::root(),
                    user: None,
                    shell: vec!["/bin/sh".into(), "-c".into()],
                    cmd_set: false,
                    cmd: None,
                    line: ins.line,
                    onbuild: Vec::new(),
                    base_error: None,
                };
                // Whether the base's config has a PATH; None when it is not known here.
                let mut base_has_path = None;
                let triggers = match &base {
                    Base::Scratch => {
                        // BuildKit's `emptyImage`: WorkingDir "/" (and the PATH below).
                        st.steps
                            .push(Step::Config(ConfigEdit::WorkingDir("/".into())));
                        base_has_path = Some(false);
                        Vec::new()
                    }
                    Base::Stage { index } => {
                        st.continue_from(&stages[*index]);
                        stages[*index].onbuild.clone()
                    }
                    image_base => match cx.base_config(image_base, &platform) {
                        None => Vec::new(),
                        Some(Ok(config)) => {
                            st.inherit(&config);
                            base_has_path = Some(config.config.env_get("PATH").is_some());
                            config.config.on_build.unwrap_or_default()
                        }
                        Some(Err(e)) => {
                            let hint = later_stage_hint(&cx, &base, stages.len());
                            st.base_error = Some(cx.error(ins.line, e, hint.as_deref()));
                            Vec::new()
                        }
                    },
                };
                // BuildKit makes sure every non-Windows stage has a PATH, visible to
                // expansion too.
                if base_has_path == Some(false) && platform.os != "windows" {
                    st.env.insert("PATH".into(), DEFAULT_PATH.into());
                    st.steps.push(Step::Config(ConfigEdit::Env(
                        "PATH".into(),
                        DEFAULT_PATH.into(),
                    )));
                }
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

    if stages.is_empty() {
        // Only ARGs (the parser rejects a file without instructions): BuildKit's message.
        let last = df.instructions.last().map_or(1, |i| i.start_line);
        return Err(cx.error(
            last,
            "dockerfile contains no stages to build",
            Some("add a FROM instruction"),
        ));
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

    check_stage_refs(&cx, &stages_needed(&stages, &cx.stage_refs, target))?;

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
            location: cx.location(s.line),
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
/// registry reference. As in BuildKit, only stages defined *before* count: a name defined
/// later (or this stage's own name) is an image (`FROM alpine AS alpine` is common), so a
/// FROM alone can never be circular.
fn base_for(
    cx: &Cx,
    line: usize,
    image: &str,
    stages: &[StageState],
) -> Result<Base, DockerfileError> {
    let lower = image.to_ascii_lowercase();
    if let Some(index) = stages
        .iter()
        .position(|s| s.name.as_deref() == Some(&lower))
    {
        return Ok(Base::Stage { index });
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

/// When FROM names an image that could not be read and a stage of this file (this one or a
/// later one) has that name: the user most likely meant the stage.
fn later_stage_hint(cx: &Cx, base: &Base, current: usize) -> Option<String> {
    let Base::Registry { reference } = base else {
        return None;
    };
    let lower = reference.to_ascii_lowercase();
    let (index, (_, line)) = cx
        .all_stages
        .iter()
        .enumerate()
        .skip(current)
        .find(|(_, (n, _))| n.as_deref() == Some(&lower))?;
    Some(format!(
        "stage {lower:?} is defined {} (line {line}); FROM can only use a stage defined before it, so {reference:?} was taken as an image",
        if index == current { "by this FROM" } else { "later" }
    ))
}

/// The stages building `target` needs: bases and COPY --from sources, transitively.
fn stages_needed(
    stages: &[StageState],
    refs: &[(usize, usize, usize)],
    target: usize,
) -> Vec<bool> {
    let mut needed = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        if let Base::Stage { index } = stages[i].base {
            todo.push(index);
        }
        todo.extend(refs.iter().filter(|r| r.0 == i).map(|r| r.1));
    }
    needed
}

/// BuildKit's checks of COPY --from references, in its order: a cycle anywhere in the file
/// is an error (`validateCircularDependency`: the first stage, in file order, from which a
/// cycle is reachable); then a needed stage copying from a stage defined after it.
fn check_stage_refs(cx: &Cx, needed: &[bool]) -> Result<(), DockerfileError> {
    let n = cx.all_stages.len();
    let deps = |i: usize| cx.stage_refs.iter().filter(move |r| r.0 == i);
    // Depth-first, with the path of (stage, line) edges taken so far.
    fn visit(
        i: usize,
        deps: &dyn Fn(usize) -> Vec<(usize, usize)>,
        visited: &mut [bool],
        on_path: &mut [bool],
        path: &mut Vec<(usize, usize)>,
    ) -> bool {
        if std::mem::replace(&mut visited[i], true) {
            return false;
        }
        on_path[i] = true;
        for (dep, line) in deps(i) {
            path.push((i, line));
            if on_path[dep] || visit(dep, deps, visited, on_path, path) {
                return true;
            }
            path.pop();
        }
        on_path[i] = false;
        false
    }
    let deps_of = |i: usize| deps(i).map(|r| (r.1, r.2)).collect::<Vec<_>>();
    let mut visited = vec![false; n];
    let mut on_path = vec![false; n];
    for start in 0..n {
        let mut path = Vec::new();
        if visit(start, &deps_of, &mut visited, &mut on_path, &mut path) {
            let chain: Vec<String> = path
                .iter()
                .map(|(stage, line)| {
                    format!("{} (COPY --from at line {line})", cx.stage_display(*stage))
                })
                .collect();
            return Err(cx.error(
                path[0].1,
                format!(
                    "circular dependency detected on stage: {}",
                    cx.stage_display(start)
                ),
                Some(&format!(
                    "the stages copy from each other: {}",
                    chain.join(" → ")
                )),
            ));
        }
    }
    for &(stage, from, line) in &cx.stage_refs {
        if needed.get(stage) == Some(&true) && from > stage {
            return Err(cx.error(
                line,
                format!(
                    "cannot copy from stage {:?}, it needs to be defined before current stage {:?}",
                    cx.stage_display(from),
                    cx.stage_display(stage)
                ),
                Some(&format!(
                    "stage {:?} starts at line {}; move it above line {}",
                    cx.stage_display(from),
                    cx.all_stages[from].1,
                    cx.all_stages[stage].1
                )),
            ));
        }
    }
    Ok(())
}

/// COPY/ADD heredoc bodies with an unquoted delimiter are expanded like BuildKit's
/// `ExpandRaw`: the stage's variables, `\` escapes, quotes kept as text.
fn expand_heredocs(
    cx: &Cx,
    line: usize,
    st: &StageState,
    c: &CopyArgs,
) -> Result<CopyArgs, DockerfileError> {
    let lexer = Lexer::new('\\').skip_process_quotes(true);
    let mut c = c.clone();
    for (i, (_, content)) in c.heredocs.iter_mut().enumerate() {
        if c.heredoc_expand.get(i) == Some(&true) {
            *content = lexer
                .process_word(content, &|name| st.env.get(name).cloned())
                .map_err(|e| cx.error(line, e.to_string(), None))?;
        }
    }
    Ok(c)
}

/// moby's `signal.ParseSignal` on Linux: a non-zero number, or a name with or without `SIG`.
fn is_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<i64>() {
        return n != 0;
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    NAMES.contains(&name)
        || (1..=15).any(|k| name == format!("RTMIN+{k}"))
        || (1..=14).any(|k| name == format!("RTMAX-{k}"))
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
                // Like BuildKit, a later ARG replaces an earlier value, an ENV's too.
                if let Some(v) = v {
                    st.env.insert(k.clone(), v);
                }
                if !st.args.contains(k) {
                    st.args.push(k.clone());
                }
            }
        }
        Kind::Env(pairs) => {
            // BuildKit expands the whole instruction first: in `ENV A=1 B=$A`, B sees the
            // A from before this line. Names are expanded too.
            let expanded = pairs
                .iter()
                .map(|(k, v)| Ok((cx.expand(line, k, &st.env)?, cx.expand(line, v, &st.env)?)))
                .collect::<Result<Vec<_>, DockerfileError>>()?;
            for (k, v) in expanded {
                st.env.insert(k.clone(), v.clone());
                config(st, ConfigEdit::Env(k, v));
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
                    location: cx.location(line),
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
            if !is_signal(&s) {
                return Err(cx.error(
                    line,
                    format!("Invalid signal: {s}"),
                    Some("a signal name (SIGTERM, TERM, SIGRTMIN+3) or a number"),
                ));
            }
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
            let c = expand_heredocs(cx, line, st, c)?;
            let step = copy_step(cx, ins, st, &c, add)?;
            let current = earlier.len();
            for set in &step.sources {
                if let FileSet::Copy {
                    from: CopyFrom::Stage { index, .. },
                    ..
                } = set
                {
                    cx.stage_refs.push((current, *index, line));
                }
            }
            st.steps.push(Step::Layer(step));
        }
        Kind::Run {
            command: c,
            flags,
            heredocs,
        } => {
            let step = run_step(cx, line, st, c, heredocs, flags)?;
            let current = earlier.len();
            for m in &step.mounts {
                if let Some(CopyFrom::Stage { index, .. }) = m.from() {
                    cx.stage_refs.push((current, *index, line));
                }
            }
            st.steps.push(Step::Run(step));
        }
    }
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
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
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
    Some((sign * total) as i64)
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
                Some(0) => Ok(None),
                Some(d) if d >= 1_000_000 => Ok(Some(d)),
                Some(_) => Err(cx.error(line, format!("--{name} cannot be less than 1ms"), None)),
                None => Err(cx.error(
                    line,
                    format!("--{name}: invalid duration {v:?}"),
                    Some("e.g. 30s, 1m30s, 500ms"),
                )),
            })
            .transpose()
            .map(Option::flatten)
    };
    let retries = match &h.retries {
        None => None,
        Some(r) => match r.parse::<i32>() {
            Err(_) => {
                return Err(cx.error(line, format!("--retries: {r:?} is not a number"), None))
            }
            Ok(n) if n < 0 => {
                return Err(cx.error(line, format!("--retries cannot be negative ({n})"), None))
            }
            // Docker omits zero values from the config.
            Ok(0) => None,
            Ok(n) => Some(i64::from(n)),
        },
    };
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

/// COPY --from: a stage of this file by name or index (also one defined later: BuildKit
/// resolves over the whole file and `check_stage_refs` reports cycles and forward
/// references), or an image. As in BuildKit, `--from` is not variable-expanded.
fn copy_source(cx: &Cx, line: usize, from: Option<&str>) -> Result<CopyFrom, DockerfileError> {
    from_source(cx, line, from, "COPY --from")
}

/// [`copy_source`] for any flag that names a stage or image (`RUN --mount=from=`); `flag`
/// names it in errors.
fn from_source(
    cx: &Cx,
    line: usize,
    from: Option<&str>,
    flag: &str,
) -> Result<CopyFrom, DockerfileError> {
    let Some(f) = from else {
        return Ok(CopyFrom::Context);
    };
    let literal = cx.lexer.process_word(f, &|_| None).ok();
    if literal.as_deref() != Some(f) {
        return Err(cx.error(
            line,
            format!("{flag}={f}: variable expansion is not supported for --from"),
            Some("define a new stage with FROM using ARG from global scope as a workaround"),
        ));
    }
    let lower = f.to_ascii_lowercase();
    if let Some(index) = cx
        .all_stages
        .iter()
        .position(|(n, _)| n.as_deref() == Some(&lower))
    {
        return Ok(CopyFrom::Stage {
            index,
            name: cx.stage_display(index),
        });
    }
    if let Ok(index) = f.parse::<usize>() {
        if index >= cx.all_stages.len() {
            return Err(cx.error(
                line,
                format!("{flag}={f}: invalid stage index {index}"),
                Some(&format!(
                    "this Dockerfile has {} stage(s), numbered from 0",
                    cx.all_stages.len()
                )),
            ));
        }
        return Ok(CopyFrom::Stage {
            index,
            name: cx.stage_display(index),
        });
    }
    let base = Base::from_image_name(f, &cx.opts.context_dir)
        .ok_or_else(|| cx.error(line, format!("{flag}={f}: not a stage or image"), None))?;
    // A bare name that is no stage is an image to BuildKit (`COPY --from=busybox` pulls
    // `docker.io/library/busybox:latest`), and so it is here, unless it is a near miss of a
    // stage name: then it is a typo, and pulling an image of that name would only hide it.
    if matches!(base, Base::Registry { .. }) && !f.contains([':', '/', '@']) {
        let w: Vec<char> = lower.chars().collect();
        let near = cx
            .all_stages
            .iter()
            .filter_map(|(n, _)| n.as_deref())
            .map(|n| {
                (
                    super::parser::levenshtein(&w, &n.chars().collect::<Vec<_>>()),
                    n,
                )
            })
            .filter(|(d, n)| *d <= 2 && *d < w.len().min(n.chars().count()))
            .min_by_key(|(d, _)| *d);
        if let Some((_, stage)) = near {
            return Err(cx.error(
                line,
                format!("{flag}={f}: no stage named {f:?} in this Dockerfile"),
                Some(&format!(
                    "did you mean the stage {stage:?}? To copy from the image, name its tag \
                     ({f}:latest)"
                )),
            ));
        }
    }
    Ok(CopyFrom::Image { base })
}

fn copy_step(
    cx: &Cx,
    ins: &Instruction,
    st: &StageState,
    c: &CopyArgs,
    add: bool,
) -> Result<LayerStep, DockerfileError> {
    let line = ins.line;
    let env = &st.env;
    let from = copy_source(cx, line, c.from.as_deref())?;
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
            origin: cx.location(line),
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
            origin: cx.location(line),
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
        location: cx.location(line),
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

/// `RUN`: the command as BuildKit's dispatchRun builds it (shell form through the stage's
/// SHELL, heredocs), its flags (`--network`, `--mount`, `--security`) and the ARGs in scope,
/// which the command sees as environment but the image does not keep.
fn run_step(
    cx: &Cx,
    line: usize,
    st: &StageState,
    c: &CommandLine,
    heredocs: &[RunHeredoc],
    flags: &[String],
) -> Result<RunStep, DockerfileError> {
    let mut network = None;
    let mut mounts = Vec::new();
    let mut insecure = false;
    for f in flags {
        let (name, value) = f
            .trim_start_matches("--")
            .split_once('=')
            .unwrap_or((f.trim_start_matches("--"), ""));
        let value = cx.expand(line, value, &st.env)?;
        match name {
            "network" => {
                network = Some(match value.as_str() {
                    "default" => RunNetwork::Default,
                    "none" => RunNetwork::None,
                    "host" => RunNetwork::Host,
                    other => {
                        return Err(cx.error(
                            line,
                            format!("RUN --network={other}: unsupported network mode"),
                            Some("use default, none or host"),
                        ))
                    }
                })
            }
            "security" => match value.as_str() {
                "insecure" => insecure = true,
                "sandbox" => insecure = false,
                other => {
                    return Err(cx.error(
                        line,
                        format!("RUN --security={other}: unsupported security mode"),
                        Some("use sandbox or insecure"),
                    ))
                }
            },
            "mount" => {
                let (mut mount, from) = super::run_mount::parse(&value)
                    .map_err(|m| cx.error(line, format!("RUN --mount={value}: {m}"), None))?;
                if let Some(f) = from {
                    mount.set_from(from_source(cx, line, Some(&f), "RUN --mount from")?);
                }
                mounts.push(mount);
            }
            _ => unreachable!("instructions accepts only these flags"),
        }
    }
    let (mut command, files) = run_command(c, heredocs);
    if !c.exec_form {
        let mut shell = st.shell.clone();
        shell.extend(command);
        command = shell;
    }
    // ARGs of this stage, and the proxy build args BuildKit passes to every RUN.
    let mut args: Vec<(String, String)> = st
        .args
        .iter()
        .filter_map(|k| st.env.get(k).map(|v| (k.clone(), v.clone())))
        .collect();
    for p in PROXY_ARGS {
        if let Some(v) = cx.opts.build_args.get(*p) {
            if !st.args.contains(&p.to_string()) {
                args.push((p.to_string(), v.clone()));
            }
        }
    }
    // BuildKit's history text: `RUN |N K=V… argv` when ARGs are in scope.
    let declared: Vec<String> = args
        .iter()
        .filter(|(k, _)| st.args.contains(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let created_by = if declared.is_empty() {
        format!("RUN {}", command.join(" "))
    } else {
        format!(
            "RUN |{} {} {}",
            declared.len(),
            declared.join(" "),
            command.join(" ")
        )
    };
    Ok(RunStep {
        command,
        network: network.unwrap_or(cx.opts.network),
        created_by,
        args,
        mounts,
        insecure,
        files,
        location: cx.location(line),
    })
}

/// The shell-form text (or exec-form argv) after BuildKit's heredoc rules: one bare heredoc
/// with a `#!` line becomes a file under `/dev/pipes/` that the shell executes; one bare
/// heredoc without runs its body as the command; anything else (`<<EOF bash`, several
/// heredocs) is handed to the shell whole, bodies and terminators included.
fn run_command(c: &CommandLine, heredocs: &[RunHeredoc]) -> (Vec<String>, Vec<RunFile>) {
    let text = c.args.join(" ");
    let Some(first) = heredocs.first().filter(|_| !c.exec_form) else {
        return (
            if c.exec_form {
                c.args.clone()
            } else {
                vec![text]
            },
            Vec::new(),
        );
    };
    if heredocs.len() == 1 && is_bare_heredoc(&text) {
        let data = if first.chomp {
            super::parser::chomp_heredoc_content(&first.content)
        } else {
            first.content.clone()
        };
        if data.starts_with("#!") {
            let path = format!("/dev/pipes/{}", first.name);
            let file = RunFile {
                path: path.clone(),
                content: data,
                mode: 0o755,
            };
            return (vec![path], vec![file]);
        }
        return (vec![data], Vec::new());
    }
    let mut full = text;
    for h in heredocs {
        full.push('\n');
        full.push_str(&h.content);
        full.push_str(&h.name);
    }
    (vec![full], Vec::new())
}

/// Whether the command is only a heredoc marker (`<<EOF`, `<<-EOF`, `<<"EOF"`, `0<<EOF`).
fn is_bare_heredoc(text: &str) -> bool {
    let t = text.trim().trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = t.strip_prefix("<<") else {
        return false;
    };
    let word = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    !word.is_empty() && !word.contains(char::is_whitespace) && !word.contains('<')
}

#[cfg(test)]
#[path = "lower_run_tests.rs"]
mod run_tests;

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
        lower_opts(src, env, onbuild, LowerOptions::default())
    }

    fn lower_opts(
        src: &str,
        env: &[&str],
        onbuild: &[&str],
        opts: LowerOptions,
    ) -> Result<Plan, String> {
        let mut config = ImageConfig::default();
        config.config.env = Some(env.iter().map(|s| s.to_string()).collect());
        config.config.on_build = Some(onbuild.iter().map(|s| s.to_string()).collect());
        config.config.working_dir = Some("/srv".into());
        let opts = LowerOptions {
            base_configs: Some(Arc::new(OneBase(config))),
            ..opts
        };
        let df = super::super::parser::parse(src).map_err(|e| e.to_string())?;
        lower("Dockerfile", src, &df, &opts)
            .map(|l| l.plan)
            .map_err(|e| e.to_string())
    }

    /// The stage's config edits, without the defaults of BuildKit's empty image (PATH,
    /// WorkingDir "/").
    fn edits(plan: &Plan, stage: usize) -> Vec<ConfigEdit> {
        all_edits(plan, stage)
            .into_iter()
            .filter(|e| {
                *e != ConfigEdit::Env("PATH".into(), DEFAULT_PATH.into())
                    && *e != ConfigEdit::WorkingDir("/".into())
            })
            .collect()
    }

    fn all_edits(plan: &Plan, stage: usize) -> Vec<ConfigEdit> {
        plan.stages[stage]
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Config(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    fn labels(plan: &Plan, stage: usize) -> Vec<(String, String)> {
        edits(plan, stage)
            .into_iter()
            .filter_map(|e| match e {
                ConfigEdit::Label(k, v) => Some((k, v)),
                _ => None,
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn inline_files(plan: &Plan, stage: usize) -> Vec<(String, String)> {
        plan.stages[stage]
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Layer(l) => Some(l.sources.iter()),
                _ => None,
            })
            .flatten()
            .filter_map(|f| match f {
                FileSet::Inline { path, content, .. } => {
                    Some((path.display(), String::from_utf8(content.clone()).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_later_arg_replaces_an_earlier_value_and_args_are_scoped_per_stage() {
        let opts = LowerOptions {
            build_args: [("OVER".to_string(), "cli".to_string())].into(),
            ..Default::default()
        };
        let src = "ARG G=global\nARG OVER=global-default\nFROM scratch\nARG X=1\nARG X=2\nENV E=env\nARG E=arg\nARG G\nARG OVER=stage-default\nLABEL x=$X e=$E g=$G over=$OVER\nARG UNSET\nLABEL unset=${UNSET:-none}\nFROM scratch\nLABEL x=${X:-gone} g=${G:-gone}\n";
        let plan = lower_opts(src, &[], &[], opts).unwrap();
        assert_eq!(
            labels(&plan, 0),
            pairs(&[
                ("x", "2"),
                ("e", "arg"),
                ("g", "global"),
                ("over", "cli"),
                ("unset", "none")
            ])
        );
        // A new FROM starts without the previous stage's ARGs, and a global ARG is only
        // visible in a stage that declares it.
        assert_eq!(labels(&plan, 1), pairs(&[("x", "gone"), ("g", "gone")]));
        // An ARG changes expansion, never the image's environment.
        assert_eq!(
            edits(&plan, 0)
                .iter()
                .filter(|e| matches!(e, ConfigEdit::Env(..)))
                .collect::<Vec<_>>(),
            [&ConfigEdit::Env("E".into(), "env".into())]
        );
    }

    #[test]
    fn env_expands_names_and_sees_values_from_before_the_line() {
        let plan = lower_with(
            "FROM scratch\nENV abc=hello\nENV abc=bye def=$abc\nARG K=key\nENV ${K}_x=1\nLABEL ${K}.l=v\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            edits(&plan, 0),
            [
                ConfigEdit::Env("abc".into(), "hello".into()),
                ConfigEdit::Env("abc".into(), "bye".into()),
                ConfigEdit::Env("def".into(), "hello".into()),
                ConfigEdit::Env("key_x".into(), "1".into()),
                ConfigEdit::Label("key.l".into(), "v".into()),
            ]
        );
    }

    #[test]
    fn heredoc_bodies_are_expanded_only_with_an_unquoted_delimiter() {
        // BuildKit's testHeredocVarSubstitution, testCopyHeredocSpecialSymbols and
        // testHeredocIndent, as inline files.
        let src = "FROM scratch\nARG name=world\nCOPY <<EOF /c1\nHello ${name}!\nEOF\nCOPY <<'EOF' /c2\nHello ${name}!\nEOF\nCOPY <<\"EOF\" /c3\nHello ${name}!\nEOF\nCOPY <<EOF /q1\nHello '${name}'!\nEOF\nCOPY <<EOF /q2\nHello \"${name}\"!\nEOF\nCOPY <<'EOF' /qs\nHello \"${name}\"!\nEOF\nCOPY <<EOF /s1\n\\\nEOF\nCOPY <<EOF /s2\n\\\\\nEOF\nCOPY <<EOF /s3\n\\$\nEOF\nCOPY <<\"EOF\" /r2\n\\\\\nEOF\nCOPY <<\"EOF\" /r3\n\\$\nEOF\nCOPY <<EOF /i1\n\tfoo\nEOF\nCOPY <<-EOF /i2\n\tbar\n\tEOF\nADD <<EOF <<'RAW' /dir/\n$name\nEOF\n$name\nRAW\n";
        let plan = lower_with(src, &[], &[]).unwrap();
        assert_eq!(
            inline_files(&plan, 0),
            pairs(&[
                ("/c1", "Hello world!\n"),
                ("/c2", "Hello ${name}!\n"),
                ("/c3", "Hello ${name}!\n"),
                ("/q1", "Hello 'world'!\n"),
                ("/q2", "Hello \"world\"!\n"),
                ("/qs", "Hello \"${name}\"!\n"),
                ("/s1", "\n"),
                ("/s2", "\\\n"),
                ("/s3", "$\n"),
                ("/r2", "\\\\\n"),
                ("/r3", "\\$\n"),
                ("/i1", "\tfoo\n"),
                ("/i2", "bar\n"),
                ("/dir/EOF", "world\n"),
                ("/dir/RAW", "$name\n"),
            ])
        );
        let err = lower_with(
            "FROM scratch\nCOPY <<EOF /x\n${NOPE:?must be set}\nEOF\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(err.starts_with("Dockerfile:2:1: "), "{err}");
        assert!(err.contains("NOPE: must be set"), "{err}");
    }

    #[test]
    fn every_linux_stage_gets_dockers_default_path_when_its_base_has_none() {
        let plan = lower_with("FROM scratch\nENV PATH=/opt/bin:$PATH\n", &[], &[]).unwrap();
        assert_eq!(
            all_edits(&plan, 0),
            [
                ConfigEdit::WorkingDir("/".into()),
                ConfigEdit::Env("PATH".into(), DEFAULT_PATH.into()),
                ConfigEdit::Env("PATH".into(), format!("/opt/bin:{DEFAULT_PATH}")),
            ]
        );
        // A base without PATH gets it; one with PATH keeps its own; a stage built on a
        // stage inherits it; Windows is left to the OS.
        let plan = lower_with("FROM oci:/base\n", &["A=1"], &[]).unwrap();
        assert_eq!(
            all_edits(&plan, 0),
            [ConfigEdit::Env("PATH".into(), DEFAULT_PATH.into())]
        );
        let plan = lower_with("FROM oci:/base AS a\nFROM a\n", &["PATH=/bin"], &[]).unwrap();
        assert_eq!(all_edits(&plan, 0), []);
        assert_eq!(all_edits(&plan, 1), []);
        let plan = lower_with("FROM --platform=windows/amd64 scratch\n", &[], &[]).unwrap();
        assert_eq!(all_edits(&plan, 0), [ConfigEdit::WorkingDir("/".into())]);
    }

    #[test]
    fn copy_from_cycles_and_forward_references_fail_like_buildkit() {
        // BuildKit's TestDockerfileCircularDependencies.
        for (src, line) in [
            ("FROM scratch AS stage0\nCOPY --from=stage0 f1 /sub/\n", 2),
            (
                "FROM scratch AS stage0\nCOPY --from=stage2 f1 /sub/\nFROM scratch AS stage1\nCOPY --from=stage0 f2 /sub/\nFROM scratch AS stage2\nCOPY --from=stage1 f2 /sub/\n",
                2,
            ),
            // Unreachable from the target, still an error.
            (
                "FROM scratch\nCOPY a /a\nFROM scratch AS x\nCOPY --from=y a /a\nFROM scratch AS y\nCOPY --from=x a /a\nFROM scratch\n",
                4,
            ),
        ] {
            let err = lower_with(src, &[], &[]).unwrap_err();
            let stage = if line == 4 { "x" } else { "stage0" };
            assert!(
                err.starts_with(&format!(
                    "Dockerfile:{line}:1: circular dependency detected on stage: {stage}"
                )),
                "{err}"
            );
            assert!(err.contains("COPY --from at line"), "{err}");
        }
        let opts = LowerOptions {
            target: Some("first".into()),
            ..Default::default()
        };
        let err = lower_opts(
            "FROM scratch AS first\nCOPY --from=1 a /a\nFROM scratch\nCOPY b /b\n",
            &[],
            &[],
            opts,
        )
        .unwrap_err();
        assert!(
            err.starts_with("Dockerfile:2:1: cannot copy from stage \"stage-1\", it needs to be defined before current stage \"first\""),
            "{err}"
        );
        let err = lower_with(
            "FROM scratch AS a\nCOPY --from=later x /x\nFROM scratch AS later\nFROM a\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            err.contains("cannot copy from stage \"later\", it needs to be defined before current stage \"a\""),
            "{err}"
        );
        assert!(err.contains("stage \"later\" starts at line 3"), "{err}");
        // A stage the target does not need may copy from a later one.
        let plan = lower_with(
            "FROM scratch AS a\nCOPY --from=b x /x\nFROM scratch AS b\n",
            &[],
            &[],
        );
        assert!(plan.is_ok(), "{plan:?}");
        for (from, wanted) in [
            ("5", "invalid stage index 5"),
            ("$X", "variable expansion is not supported for --from"),
            ("bsae", "no stage named \"bsae\" in this Dockerfile"),
        ] {
            let err = lower_with(
                &format!("FROM scratch AS base\nCOPY --from={from} x /x\n"),
                &[],
                &[],
            )
            .unwrap_err();
            assert!(err.starts_with("Dockerfile:2:1: "), "{err}");
            assert!(err.contains(wanted), "{from}: {err}");
        }
    }

    #[test]
    fn from_a_stage_defined_later_or_itself_is_an_image_like_in_buildkit() {
        let plan = lower_with("FROM oci:/base AS a\nFROM a AS b\nFROM b AS c\n", &[], &[]).unwrap();
        assert_eq!(plan.stages[1].base, Base::Stage { index: 0 });
        // `FROM b AS a` / `FROM a AS b`: the first b is the image b, so there is no cycle;
        // here the image cannot be read, and the error says what happened.
        let err = lower_with("FROM b AS a\nFROM a AS b\n", &[], &[]).unwrap_err();
        assert!(err.starts_with("Dockerfile:1:1: base image"), "{err}");
        assert!(
            err.contains("stage \"b\" is defined later (line 2); FROM can only use a stage defined before it"),
            "{err}"
        );
        let err = lower_with("FROM alpine AS alpine\n", &[], &[]).unwrap_err();
        assert!(
            err.contains("stage \"alpine\" is defined by this FROM"),
            "{err}"
        );
    }

    #[test]
    fn bad_healthcheck_and_stopsignal_values_are_located() {
        for (ins, wanted) in [
            (
                "HEALTHCHECK --retries=-1 CMD true",
                "--retries cannot be negative (-1)",
            ),
            (
                "HEALTHCHECK --retries=x CMD true",
                "--retries: \"x\" is not a number",
            ),
            (
                "HEALTHCHECK --interval=-5s CMD true",
                "--interval cannot be less than 1ms",
            ),
            (
                "HEALTHCHECK --timeout=10us CMD true",
                "--timeout cannot be less than 1ms",
            ),
            (
                "HEALTHCHECK --start-period=5 CMD true",
                "--start-period: invalid duration",
            ),
            ("STOPSIGNAL SIGNOPE", "Invalid signal: SIGNOPE"),
            ("STOPSIGNAL 0", "Invalid signal: 0"),
        ] {
            let err = lower_with(&format!("FROM scratch\n{ins}\n"), &[], &[]).unwrap_err();
            assert!(err.starts_with("Dockerfile:2:1: "), "{err}");
            assert!(err.contains(wanted), "{ins}: {err}");
        }
        for sig in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX-14"] {
            assert!(is_signal(sig), "{sig}");
        }
        assert!(!is_signal("SIGRTMIN+16"));
        let plan = lower_with(
            "FROM scratch\nHEALTHCHECK --interval=0s --retries=0 CMD true\n",
            &[],
            &[],
        )
        .unwrap();
        // Zero means unset (docker omits it from the config).
        assert_eq!(
            edits(&plan, 0),
            [ConfigEdit::Healthcheck(Some(Healthcheck {
                test: Some(vec!["CMD-SHELL".into(), "true".into()]),
                ..Default::default()
            }))]
        );
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

    fn copy_froms(plan: &Plan, stage: usize) -> Vec<CopyFrom> {
        plan.stages[stage]
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Layer(l) => Some(l.sources.iter()),
                _ => None,
            })
            .flatten()
            .filter_map(|set| match set {
                FileSet::Copy { from, .. } => Some(from.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_args_is_an_error_not_a_panic() {
        // Found by `cargo xtask fuzz dockerfile` (fuzz/regressions/dockerfile/args-without-from).
        let err = lower_with("ARG a\nARG b=1\n", &[], &[]).unwrap_err();
        assert!(
            err.starts_with("Dockerfile:2:1: dockerfile contains no stages to build\n"),
            "{err}"
        );
    }

    #[test]
    fn copy_from_a_bare_name_is_an_image_unless_it_is_near_a_stage() {
        let plan = lower_with(
            "FROM scratch AS build\nFROM scratch\nCOPY --from=busybox /bin/busybox /bin/\n\
             COPY --from=build /a /a\n",
            &[],
            &[],
        )
        .unwrap();
        let froms = copy_froms(&plan, 1);
        assert_eq!(
            froms,
            vec![
                CopyFrom::Image {
                    base: Base::Registry {
                        reference: "busybox".into()
                    }
                },
                CopyFrom::Stage {
                    index: 0,
                    name: "build".into()
                }
            ],
            "{froms:?}"
        );
        let err = lower_with(
            "FROM scratch AS builder\nFROM scratch\nCOPY --from=biulder /a /a\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(
            err.contains("no stage named \"biulder\"") && err.contains("\"builder\""),
            "{err}"
        );
    }
}
