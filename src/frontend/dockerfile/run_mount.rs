//! `RUN --mount=…` options (BuildKit's `instructions/commands_runmount.go`): comma-separated
//! `key=value` fields (or bare flags such as `ro`), read into the plan's typed
//! [`RunMount`]. Every RUN mount type is lowered here, in one place.

use crate::plan::{CacheSharing, RunMount};

/// One `--mount` value (already variable-expanded) as a typed mount and its `from` as
/// written (the caller resolves it like `COPY --from` and sets it); an error says which
/// field is wrong.
pub fn parse(value: &str) -> Result<(RunMount, Option<String>), String> {
    let (mount, from) = parse_fields(value)?;
    if let RunMount::Cache {
        from: _,
        source: Some(_),
        ..
    } = &mount
    {
        if from.is_none() {
            return Err("type=cache: source needs from (from=STAGE_OR_IMAGE)".into());
        }
    }
    Ok((mount, from))
}

fn parse_fields(value: &str) -> Result<(RunMount, Option<String>), String> {
    let mut kind = "bind".to_string();
    let mut target = None;
    let mut source = None;
    let mut from = None;
    let mut id = None;
    let mut env = None;
    let mut readonly: Option<bool> = None;
    let mut required = false;
    let mut sharing = CacheSharing::Shared;
    let mut mode = None;
    let mut uid = None;
    let mut gid = None;
    let mut size = None;
    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let bool_value = |v: &Option<String>| -> Result<bool, String> {
            match v.as_deref() {
                None => Ok(true),
                Some(s) => match s.to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(true),
                    "false" | "0" => Ok(false),
                    _ => Err(format!(
                        "invalid value {s:?} for {key}: expected true or false"
                    )),
                },
            }
        };
        let need = |v: Option<String>| v.ok_or_else(|| format!("{key} needs a value ({key}=…)"));
        let number = |v: Option<String>, radix: u32| -> Result<u32, String> {
            let s = need(v)?;
            u32::from_str_radix(&s, radix).map_err(|_| format!("invalid {key} {s:?}"))
        };
        match key.as_str() {
            "type" => kind = need(val)?,
            "target" | "dst" | "destination" => target = Some(need(val)?),
            "source" | "src" => source = Some(need(val)?),
            "from" => from = Some(need(val)?),
            "id" => id = Some(need(val)?),
            "env" => env = Some(need(val)?),
            "readonly" | "ro" => readonly = Some(bool_value(&val)?),
            "readwrite" | "rw" => readonly = Some(!bool_value(&val)?),
            "required" => required = bool_value(&val)?,
            "sharing" => {
                sharing = match need(val)?.as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    other => {
                        return Err(format!(
                            "unsupported sharing value {other:?} (shared, private or locked)"
                        ))
                    }
                }
            }
            "mode" => mode = Some(number(val, 8)?),
            "uid" => uid = Some(number(val, 10)?),
            "gid" => gid = Some(number(val, 10)?),
            "size" => size = Some(byte_size(&need(val)?)?),
            other => return Err(format!("unexpected key {other:?} in {field:?}")),
        }
    }
    let needs_target = |t: Option<String>| match t {
        None => Err(format!("type={kind} needs a target (target=/path)")),
        Some(t) if !t.is_empty() && t.split('/').all(|c| c.is_empty() || c == ".") => Err(format!(
            "invalid mount target {t:?}: a mount cannot replace the root"
        )),
        Some(t) => Ok(t),
    };
    let only = |allowed: &[&str], given: &[(&str, bool)]| -> Result<(), String> {
        match given
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            Some((name, _)) => Err(format!("{name} is not an option of type={kind}")),
            None => Ok(()),
        }
    };
    let given = [
        ("source", source.is_some()),
        ("from", from.is_some()),
        ("id", id.is_some()),
        ("env", env.is_some()),
        ("readonly", readonly.is_some()),
        ("required", required),
        ("sharing", sharing != CacheSharing::Shared),
        ("mode", mode.is_some()),
        ("uid", uid.is_some()),
        ("gid", gid.is_some()),
        ("size", size.is_some()),
    ];
    match kind.as_str() {
        "bind" => {
            only(&["source", "from", "readonly"], &given)?;
            Ok((
                RunMount::Bind {
                    target: needs_target(target)?,
                    source,
                    from: None,
                    readwrite: readonly == Some(false),
                },
                from,
            ))
        }
        "cache" => {
            only(
                &[
                    "source", "from", "id", "readonly", "sharing", "mode", "uid", "gid",
                ],
                &given,
            )?;
            Ok((
                RunMount::Cache {
                    target: needs_target(target)?,
                    id,
                    sharing,
                    from: None,
                    source,
                    readonly: readonly == Some(true),
                    mode,
                    uid,
                    gid,
                },
                from,
            ))
        }
        "tmpfs" => {
            only(&["size"], &given)?;
            Ok((
                RunMount::Tmpfs {
                    target: needs_target(target)?,
                    size,
                },
                None,
            ))
        }
        "secret" => {
            only(&["id", "env", "required", "mode", "uid", "gid"], &given)?;
            // BuildKit: without an id, the target's file name is the id.
            let id = id.or_else(|| {
                target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            });
            if id.is_none() && env.is_none() {
                return Err("type=secret needs an id (id=NAME) or a target".into());
            }
            Ok((
                RunMount::Secret {
                    id,
                    target,
                    env,
                    required,
                    mode,
                    uid,
                    gid,
                },
                None,
            ))
        }
        "ssh" => {
            only(&["id", "required", "mode", "uid", "gid"], &given)?;
            Ok((
                RunMount::Ssh {
                    id: id.unwrap_or_else(|| "default".into()),
                    target,
                    required,
                    mode,
                    uid,
                    gid,
                },
                None,
            ))
        }
        other => Err(format!(
            "unsupported mount type {other:?} (bind, cache, tmpfs, secret or ssh)"
        )),
    }
}

/// `1024`, `64k`, `64m`, `1g` (docker's RAMInBytes, binary units).
fn byte_size(s: &str) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("invalid size {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_reads_its_options() {
        assert_eq!(
            parse("target=/src,from=build,source=/out,rw").unwrap(),
            (
                RunMount::Bind {
                    target: "/src".into(),
                    source: Some("/out".into()),
                    from: None,
                    readwrite: true,
                },
                Some("build".into())
            )
        );
        assert_eq!(
            parse("type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0700,uid=1000")
                .unwrap()
                .0,
            RunMount::Cache {
                target: "/root/.cache".into(),
                id: Some("pip".into()),
                sharing: CacheSharing::Locked,
                from: None,
                source: None,
                readonly: false,
                mode: Some(0o700),
                uid: Some(1000),
                gid: None,
            }
        );
        assert_eq!(
            parse("type=tmpfs,dst=/tmp,size=64m").unwrap().0,
            RunMount::Tmpfs {
                target: "/tmp".into(),
                size: Some(64 << 20),
            }
        );
        assert_eq!(
            parse("type=secret,target=/run/secrets/token,required")
                .unwrap()
                .0,
            RunMount::Secret {
                id: Some("token".into()),
                target: Some("/run/secrets/token".into()),
                env: None,
                required: true,
                mode: None,
                uid: None,
                gid: None,
            }
        );
        assert_eq!(
            parse("type=ssh").unwrap().0,
            RunMount::Ssh {
                id: "default".into(),
                target: None,
                required: false,
                mode: None,
                uid: None,
                gid: None,
            }
        );
    }

    #[test]
    fn unknown_keys_types_and_values_are_errors() {
        assert_eq!(
            parse("type=cache,target=/c,colour=red").unwrap_err(),
            "unexpected key \"colour\" in \"colour=red\""
        );
        assert_eq!(
            parse("type=volume,target=/v").unwrap_err(),
            "unsupported mount type \"volume\" (bind, cache, tmpfs, secret or ssh)"
        );
        assert_eq!(
            parse("target=/").unwrap_err(),
            "invalid mount target \"/\": a mount cannot replace the root"
        );
        assert_eq!(
            parse("type=cache").unwrap_err(),
            "type=cache needs a target (target=/path)"
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,uid=1").unwrap_err(),
            "uid is not an option of type=tmpfs"
        );
        assert!(parse("type=cache,target=/c,sharing=all").is_err());
        assert!(parse("type=cache,target=/c,mode=999").is_err());
        assert!(parse("type=tmpfs,target=/t,size=lots").is_err());
        assert_eq!(
            parse("type=cache,target=/c,source=/x").unwrap_err(),
            "type=cache: source needs from (from=STAGE_OR_IMAGE)"
        );
    }
}
