//! Typed instructions from parser nodes: flags checked, values grouped, locations kept.
//! Variable expansion is not done here; `lower` expands with the environment of the stage.

use super::parser::Node;
use std::fmt;

/// An error in one instruction, at its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionError {
    pub line: usize,
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for InstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// Exec form (`["a","b"]`) or shell form (one string run by the SHELL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub exec_form: bool,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyArgs {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    /// Inline files from heredocs: (name, content), content already chomped for `<<-`.
    pub heredocs: Vec<(String, String)>,
    /// For each of `heredocs`: whether its body is variable-expanded (the delimiter was not
    /// quoted), as BuildKit does for COPY/ADD heredocs.
    pub heredoc_expand: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckArgs {
    /// `None` for `HEALTHCHECK NONE`.
    pub test: Option<CommandLine>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    pub retries: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Arg(Vec<(String, Option<String>)>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Maintainer(String),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Entrypoint(CommandLine),
    Cmd(CommandLine),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(HealthcheckArgs),
    OnBuild(String),
    Copy(CopyArgs),
    Add(CopyArgs),
    Run {
        command: CommandLine,
        flags: Vec<String>,
        /// Heredocs of a shell-form RUN, bodies as written (not chomped, not expanded: the
        /// shell does that, as in BuildKit).
        heredocs: Vec<RunHeredoc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHeredoc {
    /// The terminator word.
    pub name: String,
    pub content: String,
    /// `<<-`.
    pub chomp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub kind: Kind,
    pub line: usize,
    pub end_line: usize,
    pub original: String,
}

const KEYWORDS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

fn err(node: &Node, message: impl Into<String>, hint: Option<String>) -> InstructionError {
    InstructionError {
        line: node.start_line,
        col: 1,
        message: message.into(),
        hint,
    }
}

/// Parsed `--name[=value]` flags, checked against what an instruction accepts.
struct Flags<'a> {
    node: &'a Node,
    values: Vec<(String, Option<String>)>,
}

impl<'a> Flags<'a> {
    fn parse(node: &'a Node, allowed: &[&str]) -> Result<Flags<'a>, InstructionError> {
        let mut values = Vec::new();
        for f in &node.flags {
            let body = f
                .strip_prefix("--")
                .ok_or_else(|| err(node, format!("malformed flag {f:?}"), None))?;
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if !allowed.contains(&name.as_str()) {
                let known = if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed
                        .iter()
                        .map(|a| format!("--{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(err(
                    node,
                    format!("unknown flag --{name} for {}", node.cmd.to_uppercase()),
                    Some(format!("{} accepts: {known}", node.cmd.to_uppercase())),
                ));
            }
            values.push((name, value));
        }
        Ok(Flags { node, values })
    }

    /// A `--name=value` flag given at most once.
    fn string(&self, name: &str) -> Result<Option<String>, InstructionError> {
        let mut found = self.values.iter().filter(|(n, _)| n == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(err(
                self.node,
                format!("--{name} given more than once"),
                None,
            ));
        }
        match first {
            None => Ok(None),
            Some((_, Some(v))) => Ok(Some(v.clone())),
            Some((_, None)) => Err(err(
                self.node,
                format!("--{name} needs a value: --{name}=..."),
                None,
            )),
        }
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean flag: `--link`, `--link=true`, `--link=false`.
    fn bool(&self, name: &str) -> Result<bool, InstructionError> {
        match self.values.iter().rev().find(|(n, _)| n == name) {
            None => Ok(false),
            Some((_, None)) => Ok(true),
            Some((_, Some(v))) => match v.as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(err(
                    self.node,
                    format!("--{name} expects true or false, got {v:?}"),
                    None,
                )),
            },
        }
    }
}

/// Name/value pairs of ENV and LABEL: the parser gives (name, value, separator) triples.
fn pairs(node: &Node) -> Result<Vec<(String, String)>, InstructionError> {
    if node.values.is_empty() {
        return Err(err(
            node,
            format!("{} requires at least one argument", node.cmd.to_uppercase()),
            None,
        ));
    }
    Ok(node
        .values
        .chunks(3)
        .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
        .collect())
}

fn command_line(node: &Node) -> CommandLine {
    CommandLine {
        exec_form: node.json,
        args: node.values.clone(),
    }
}

fn one_value(node: &Node) -> Result<String, InstructionError> {
    match node.values.as_slice() {
        [v] => Ok(v.clone()),
        [] => Err(err(
            node,
            format!("{} requires exactly one argument", node.cmd.to_uppercase()),
            None,
        )),
        _ => Err(err(
            node,
            format!(
                "{} requires exactly one argument, got {}",
                node.cmd.to_uppercase(),
                node.values.len()
            ),
            None,
        )),
    }
}

fn copy_args(node: &Node, add: bool) -> Result<CopyArgs, InstructionError> {
    let allowed: &[&str] = if add {
        &[
            "chown",
            "chmod",
            "link",
            "exclude",
            "checksum",
            "keep-git-dir",
            "parents",
        ]
    } else {
        &["from", "chown", "chmod", "link", "exclude", "parents"]
    };
    let flags = Flags::parse(node, allowed)?;
    let mut values = node.values.clone();
    let heredocs: Vec<(String, String)> = node
        .heredocs
        .iter()
        .map(|h| {
            let content = if h.chomp {
                super::parser::chomp_heredoc_content(&h.content)
            } else {
                h.content.clone()
            };
            (h.name.clone(), content)
        })
        .collect();
    let heredoc_expand = node.heredocs.iter().map(|h| h.expand).collect();
    if values.len() < 2 {
        return Err(err(node, format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", node.cmd.to_uppercase()), None));
    }
    let dest = values.pop().expect("checked length");
    // Heredoc sources (`<<EOF`) are inline files, not context paths.
    let sources: Vec<String> = values
        .into_iter()
        .filter(|s| {
            !heredocs.iter().any(|(n, _)| {
                s.trim_start_matches("<<")
                    .trim_start_matches('-')
                    .trim_matches(['"', '\''])
                    == n
            })
        })
        .collect();
    Ok(CopyArgs {
        sources,
        dest,
        from: flags.string("from")?,
        chown: flags.string("chown")?,
        chmod: flags.string("chmod")?,
        link: flags.bool("link")?,
        parents: flags.bool("parents")?,
        exclude: flags.strings("exclude"),
        checksum: flags.string("checksum")?,
        keep_git_dir: flags.bool("keep-git-dir")?,
        heredocs,
        heredoc_expand,
    })
}

fn healthcheck(node: &Node) -> Result<HealthcheckArgs, InstructionError> {
    let flags = Flags::parse(
        node,
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    )?;
    let mut args = HealthcheckArgs {
        test: None,
        interval: flags.string("interval")?,
        timeout: flags.string("timeout")?,
        start_period: flags.string("start-period")?,
        start_interval: flags.string("start-interval")?,
        retries: flags.string("retries")?,
    };
    let sub = node.values.first().map(|s| s.to_ascii_uppercase());
    match sub.as_deref() {
        Some("NONE") => {
            if node.values.len() > 1 || !node.flags.is_empty() {
                return Err(err(node, "HEALTHCHECK NONE takes no other arguments", None));
            }
        }
        Some("CMD") => {
            let rest = node.values[1..].to_vec();
            if rest.is_empty() {
                return Err(err(node, "HEALTHCHECK CMD needs a command", None));
            }
            args.test = Some(CommandLine {
                exec_form: node.json,
                args: rest,
            });
        }
        _ => {
            return Err(err(
                node,
                "HEALTHCHECK needs CMD or NONE",
                Some("e.g. HEALTHCHECK --interval=30s CMD wget -q -O- http://localhost/".into()),
            ))
        }
    }
    Ok(args)
}

/// Types one parser node.
pub fn from_node(node: &Node) -> Result<Instruction, InstructionError> {
    let no_flags = |n: &Node| Flags::parse(n, &[]).map(drop);
    let kind = match node.cmd.as_str() {
        "from" => {
            let flags = Flags::parse(node, &["platform"])?;
            let (image, name) = match node.values.as_slice() {
                [image] => (image.clone(), None),
                [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    (image.clone(), Some(name.to_ascii_lowercase()))
                }
                _ => {
                    return Err(err(
                        node,
                        "FROM requires either one or three arguments: FROM <image> [AS <name>]",
                        None,
                    ))
                }
            };
            Kind::From {
                image,
                name,
                platform: flags.string("platform")?,
            }
        }
        "arg" => {
            no_flags(node)?;
            if node.values.is_empty() {
                return Err(err(node, "ARG requires at least one argument", None));
            }
            Kind::Arg(
                node.values
                    .iter()
                    .map(|v| match v.split_once('=') {
                        Some((k, d)) => (k.to_string(), Some(d.to_string())),
                        None => (v.clone(), None),
                    })
                    .collect(),
            )
        }
        "env" => {
            no_flags(node)?;
            Kind::Env(pairs(node)?)
        }
        "label" => {
            no_flags(node)?;
            Kind::Label(pairs(node)?)
        }
        "maintainer" => Kind::Maintainer(node.values.join(" ")),
        "workdir" => {
            no_flags(node)?;
            Kind::Workdir(one_value(node)?)
        }
        "user" => {
            no_flags(node)?;
            Kind::User(one_value(node)?)
        }
        "expose" => {
            no_flags(node)?;
            Kind::Expose(node.values.clone())
        }
        "volume" => {
            no_flags(node)?;
            if node.values.is_empty() {
                return Err(err(node, "VOLUME requires at least one argument", None));
            }
            Kind::Volume(node.values.clone())
        }
        "entrypoint" => {
            no_flags(node)?;
            Kind::Entrypoint(command_line(node))
        }
        "cmd" => {
            no_flags(node)?;
            Kind::Cmd(command_line(node))
        }
        "shell" => {
            no_flags(node)?;
            if !node.json {
                return Err(err(
                    node,
                    "SHELL requires the arguments to be in JSON form",
                    Some("e.g. SHELL [\"/bin/sh\", \"-c\"]".into()),
                ));
            }
            Kind::Shell(node.values.clone())
        }
        "stopsignal" => {
            no_flags(node)?;
            Kind::StopSignal(one_value(node)?)
        }
        "healthcheck" => Kind::Healthcheck(healthcheck(node)?),
        "onbuild" => {
            let inner = node
                .next
                .as_deref()
                .ok_or_else(|| err(node, "ONBUILD needs an instruction", None))?;
            match inner.cmd.as_str() {
                "onbuild" | "from" | "maintainer" => {
                    return Err(err(
                        node,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            inner.cmd.to_uppercase()
                        ),
                        None,
                    ));
                }
                _ => {}
            }
            let text = node.original.trim_start();
            let trigger = text
                .get(7..)
                .map(str::trim_start)
                .unwrap_or_default()
                .to_string();
            Kind::OnBuild(trigger)
        }
        "copy" => Kind::Copy(copy_args(node, false)?),
        "add" => Kind::Add(copy_args(node, true)?),
        "run" => {
            let flags = Flags::parse(node, &["mount", "network", "security"])?;
            Kind::Run {
                command: command_line(node),
                heredocs: node
                    .heredocs
                    .iter()
                    .map(|h| RunHeredoc {
                        name: h.name.clone(),
                        content: h.content.clone(),
                        chomp: h.chomp,
                    })
                    .collect(),
                flags: flags
                    .values
                    .iter()
                    .map(|(n, v)| {
                        format!(
                            "--{n}{}",
                            v.as_ref().map_or(String::new(), |v| format!("={v}"))
                        )
                    })
                    .collect(),
            }
        }
        other => {
            let hint =
                super::parser::suggest_instruction(other).map(|s| format!("did you mean {s}?"));
            return Err(err(
                node,
                format!("unknown instruction: {}", other.to_uppercase()),
                hint,
            ));
        }
    };
    Ok(Instruction {
        kind,
        line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
    })
}

/// Whether `word` is an instruction keyword lade knows.
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
}
