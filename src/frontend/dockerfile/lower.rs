//! Lowering typed instructions to the plan: stages and their bases, build-arg scoping,
//! variable expansion, docker's config semantics, COPY/ADD file sets.

use super::instructions::{self, CommandLine, CopyArgs, HealthcheckArgs, Instruction, Kind};
use super::parser::Dockerfile;
use super::shell::Lexer;
use crate::frontend::diag::{self, Location};
use crate::image::{Healthcheck, Platform};
use crate::path::ImagePath;
use crate::plan::{
    Base, Chmod, ConfigEdit, CopyFrom, FileSet, LayerStep, Plan, RunStep, Stage, Step,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
                stages.push(StageState {
                    name: name.clone(),
                    base,
                    platform,
                    steps: Vec::new(),
                    env: BTreeMap::new(),
                    workdir: ImagePath::root(),
                    user: None,
                    shell: vec!["/bin/sh".into(), "-c".into()],
                    cmd_set: false,
                    cmd: None,
                    line: ins.line,
                });
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
    Ok(Lowered {
        plan: Plan {
            stages,
            target,
            annotations: BTreeMap::new(),
            tags: Vec::new(),
        },
        unused_build_args,
    })
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
                let (uid, gid) = st.user.as_deref().and_then(numeric_owner).unwrap_or((0, 0));
                st.steps.push(Step::Layer(LayerStep {
                    name: format!("WORKDIR {}", st.workdir),
                    created_by: format!("WORKDIR {}", st.workdir),
                    sources: vec![FileSet::Dir {
                        path: st.workdir.clone(),
                        mode: 0o755,
                        uid,
                        gid,
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
        Kind::OnBuild(t) => config(st, ConfigEdit::OnBuild(t.clone())),
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

fn numeric_owner(user: &str) -> Option<(u32, u32)> {
    let (u, g) = user.split_once(':').unwrap_or((user, user));
    Some((u.parse().ok()?, g.parse().ok()?))
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
    for s in &c.sources {
        let s = cx.expand(line, s, env)?;
        if add && (s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")) {
            return Err(cx.error(
                line,
                format!("ADD from a URL ({s}) is not supported yet"),
                None,
            ));
        }
        sources.push(s);
    }
    let dest = ImagePath::resolve(&st.workdir, &dest_raw)
        .map_err(|e| cx.error(line, e.to_string(), None))?;
    let dest_is_dir =
        dest_raw.ends_with('/') || dest_raw == "." || sources.len() + c.heredocs.len() > 1;
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
            origin: format!("{}:{}", cx.file, line),
        });
    }
    for (name, content) in &c.heredocs {
        let path = if dest_is_dir {
            dest.join_bytes(name.as_bytes())
        } else {
            dest.clone()
        };
        let (uid, gid) = chown.as_deref().and_then(numeric_owner).unwrap_or((0, 0));
        sets.push(FileSet::Inline {
            path,
            content: content.clone().into_bytes(),
            mode: chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false)),
            uid,
            gid,
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

#[cfg(test)]
mod tests {
    use super::*;

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
