//! RUN lowering: argv (shell, SHELL, exec form, heredocs), ARGs as environment, network,
//! mounts and security, checked on the plan.

use super::*;

fn runs_with(src: &str, opts: LowerOptions) -> Result<Vec<RunStep>, String> {
    let df = super::super::parser::parse(src).map_err(|e| e.to_string())?;
    let plan = lower("Dockerfile", src, &df, &opts)
        .map(|l| l.plan)
        .map_err(|e| e.to_string())?;
    Ok(plan.stages[plan.target]
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Run(r) => Some(r.clone()),
            _ => None,
        })
        .collect())
}

fn runs(src: &str) -> Vec<RunStep> {
    runs_with(src, LowerOptions::default()).unwrap()
}

fn argv(r: &RunStep) -> Vec<&str> {
    r.command.iter().map(String::as_str).collect()
}

#[test]
fn shell_form_goes_through_the_stage_shell_and_exec_form_is_kept() {
    let r = runs(concat!(
        "FROM scratch\n",
        "RUN echo $HOME  &&  ls\n",
        "RUN [\"/bin/echo\", \"a b\"]\n",
        "SHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\n",
        "RUN false | true\n",
    ));
    // The text is kept as written: the shell expands variables, not the frontend.
    assert_eq!(argv(&r[0]), ["/bin/sh", "-c", "echo $HOME  &&  ls"]);
    assert_eq!(argv(&r[1]), ["/bin/echo", "a b"]);
    assert_eq!(
        argv(&r[2]),
        ["/bin/bash", "-eo", "pipefail", "-c", "false | true"]
    );
    assert_eq!(r[0].location.to_string(), "Dockerfile:2:1");
    assert_eq!(r[0].created_by, "RUN /bin/sh -c echo $HOME  &&  ls");
}

#[test]
fn heredocs_follow_buildkit() {
    let r = runs(concat!(
        "FROM scratch\n",
        "RUN <<EOF\n",
        "echo one\n",
        "echo two\n",
        "EOF\n",
        "RUN <<EOF\n",
        "#!/usr/bin/env python3\n",
        "print('hi')\n",
        "EOF\n",
        "RUN <<EOF bash\n",
        "echo in bash\n",
        "EOF\n",
        "RUN cat <<A && cat <<B\n",
        "a\n",
        "A\n",
        "b\n",
        "B\n",
        "RUN <<-EOF\n",
        "\techo tabbed\n",
        "\tEOF\n",
    ));
    // A bare heredoc without a shebang: its body is the shell's command.
    assert_eq!(argv(&r[0]), ["/bin/sh", "-c", "echo one\necho two\n"]);
    assert!(r[0].files.is_empty());
    // With a shebang: a file under /dev/pipes the shell executes, kept out of the layer.
    assert_eq!(argv(&r[1]), ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    assert_eq!(
        r[1].files,
        [RunFile {
            path: "/dev/pipes/EOF".into(),
            content: "#!/usr/bin/env python3\nprint('hi')\n".into(),
            mode: 0o755,
        }]
    );
    // Anything else goes to the shell whole, terminators included.
    assert_eq!(
        argv(&r[2]),
        ["/bin/sh", "-c", "<<EOF bash\necho in bash\nEOF"]
    );
    assert_eq!(
        argv(&r[3]),
        ["/bin/sh", "-c", "cat <<A && cat <<B\na\nA\nb\nB"]
    );
    // `<<-` strips leading tabs from a bare heredoc's body.
    assert_eq!(argv(&r[4]), ["/bin/sh", "-c", "echo tabbed\n"]);
}

#[test]
fn args_in_scope_are_environment_of_the_run_only() {
    let mut opts = LowerOptions::default();
    opts.build_args.insert("V".into(), "2".into());
    opts.build_args
        .insert("HTTP_PROXY".into(), "http://proxy:3128".into());
    let src = concat!(
        "ARG G=global\n",
        "FROM scratch AS one\n",
        "ARG V=1\n",
        "ARG G\n",
        "RUN echo $V\n",
        "FROM one\n",
        "ENV E=e\n",
        "RUN echo $E\n",
    );
    let df = super::super::parser::parse(src).unwrap();
    let plan = lower("Dockerfile", src, &df, &opts).unwrap().plan;
    let run = |stage: usize| match plan.stages[stage].steps.iter().rev().find_map(|s| match s {
        Step::Run(r) => Some(r.clone()),
        _ => None,
    }) {
        Some(r) => r,
        None => panic!("no RUN in stage {stage}"),
    };
    let expected: Vec<(String, String)> = vec![
        ("V".into(), "2".into()),
        ("G".into(), "global".into()),
        ("HTTP_PROXY".into(), "http://proxy:3128".into()),
    ];
    assert_eq!(run(0).args, expected);
    assert_eq!(run(0).created_by, "RUN |2 V=2 G=global /bin/sh -c echo $V");
    // A stage built FROM another carries its ARGs over (BuildKit does too).
    assert_eq!(run(1).args, expected);
    // ARG values never become config edits.
    assert!(plan.stages[0]
        .steps
        .iter()
        .all(|s| !matches!(s, Step::Config(ConfigEdit::Env(k, _)) if k == "V" || k == "G")));
}

#[test]
fn network_comes_from_the_flag_else_the_build() {
    let src = "FROM scratch\nRUN --network=none true\nRUN --network=host true\nRUN true\n";
    let r = runs(src);
    assert_eq!(
        r.iter().map(|r| r.network).collect::<Vec<_>>(),
        [RunNetwork::None, RunNetwork::Host, RunNetwork::Default]
    );
    let opts = LowerOptions {
        network: RunNetwork::None,
        ..Default::default()
    };
    let r = runs_with(src, opts).unwrap();
    assert_eq!(r[1].network, RunNetwork::Host);
    assert_eq!(r[2].network, RunNetwork::None);
    let err = runs_with(
        "FROM scratch\nRUN --network=bridge true\n",
        Default::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("Dockerfile:2")
            && err.contains("RUN --network=bridge: unsupported network mode"),
        "{err}"
    );
}

#[test]
fn mounts_and_security_are_typed_in_the_plan() {
    let r = runs(concat!(
        "FROM scratch\n",
        "ARG CACHE=/root/.cache\n",
        "RUN --mount=type=cache,target=$CACHE,id=pip --mount=type=secret,id=tok --security=insecure true\n",
    ));
    assert_eq!(
        r[0].mounts,
        [
            crate::plan::RunMount::Cache {
                target: "/root/.cache".into(),
                id: Some("pip".into()),
                sharing: crate::plan::CacheSharing::Shared,
                from: None,
                source: None,
                readonly: false,
                mode: None,
                uid: None,
                gid: None,
            },
            crate::plan::RunMount::Secret {
                id: Some("tok".into()),
                target: None,
                env: None,
                required: false,
                mode: None,
                uid: None,
                gid: None,
            },
        ]
    );
    assert!(r[0].insecure);
    let err = runs_with(
        "FROM scratch\nRUN --mount=type=cache,target=/c,colour=red true\n",
        Default::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("Dockerfile:2") && err.contains("unexpected key \"colour\""),
        "{err}"
    );
    let err = runs_with(
        "FROM scratch\nRUN --mount=type=volume,target=/v true\n",
        Default::default(),
    )
    .unwrap_err();
    assert!(err.contains("unsupported mount type \"volume\""), "{err}");
    let err = runs_with(
        "FROM scratch\nRUN --security=root true\n",
        Default::default(),
    )
    .unwrap_err();
    assert!(err.contains("unsupported security mode"), "{err}");
}

#[test]
fn mount_from_names_a_stage_or_an_image_and_makes_the_stage_needed() {
    let src = concat!(
        "FROM scratch AS unused\n",
        "FROM scratch AS build\n",
        "FROM scratch\n",
        "RUN --mount=from=build,source=/out,target=/o --mount=type=cache,target=/c,from=busybox:1 true\n",
    );
    let df = super::super::parser::parse(src).unwrap();
    let plan = lower("Dockerfile", src, &df, &LowerOptions::default())
        .unwrap()
        .plan;
    let r = plan.stages[2]
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Run(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        r.mounts[0].from(),
        Some(&CopyFrom::Stage {
            index: 1,
            name: "build".into()
        })
    );
    assert!(matches!(
        r.mounts[1].from(),
        Some(CopyFrom::Image {
            base: Base::Registry { .. }
        })
    ));
    assert_eq!(plan.needed_stages(), [false, true, true]);
    // A near miss of a stage name is a typo, as for COPY --from.
    let err = runs_with(
        "FROM scratch AS build\nFROM scratch\nRUN --mount=from=biuld,target=/o true\n",
        Default::default(),
    )
    .unwrap_err();
    assert!(
        err.contains("Dockerfile:3") && err.contains("did you mean the stage \"build\""),
        "{err}"
    );
    // A stage that mounts from itself is a cycle.
    let err = runs_with(
        "FROM scratch AS a\nRUN --mount=from=a,target=/o true\n",
        Default::default(),
    )
    .unwrap_err();
    assert!(err.contains("Dockerfile:2"), "{err}");
}
