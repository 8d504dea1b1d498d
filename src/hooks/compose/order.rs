//! Which services build on another service's image, and the waves that follow: every service
//! of a wave depends only on earlier waves, so a wave builds in parallel.

use super::interpolate;
use crate::frontend::dockerfile::parser;
use std::collections::{BTreeMap, BTreeSet};

/// The images a Dockerfile reads: `FROM` images (not its own stages) and `COPY --from` /
/// `RUN --mount from=` names that are no stage, with `$ARG`s expanded from the global ARG
/// defaults and `args` (the service's build args win).
pub fn images_read(dockerfile: &str, args: &BTreeMap<String, String>) -> Vec<String> {
    let Ok(df) = parser::parse(dockerfile) else {
        // The build reports the syntax error at its line; it needs no other service.
        return Vec::new();
    };
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let mut seen_from = false;
    let expand = |s: &str, vars: &BTreeMap<String, String>| {
        interpolate::interpolate(s, vars, &mut |_| {}).unwrap_or_else(|_| s.to_string())
    };
    for node in &df.instructions {
        match node.cmd.as_str() {
            "arg" if !seen_from => {
                // Only declared ARGs are visible, defaults expanded with the ones above.
                for v in &node.values {
                    let (k, d) = v.split_once('=').unwrap_or((v, ""));
                    let val = match args.get(k) {
                        Some(a) => a.clone(),
                        None => expand(d, &vars),
                    };
                    vars.insert(k.to_string(), val);
                }
            }
            "from" => {
                seen_from = true;
                if let Some(image) = node.values.first() {
                    let image = expand(image, &vars);
                    if !stages.contains(&image.to_ascii_lowercase()) && image != "scratch" {
                        out.push(image);
                    }
                }
                if let (Some(kw), Some(name)) = (node.values.get(1), node.values.get(2)) {
                    if kw.eq_ignore_ascii_case("as") {
                        stages.insert(name.to_ascii_lowercase());
                    }
                }
            }
            "copy" | "run" => {
                for f in &node.flags {
                    let from = f.strip_prefix("--from=").map(str::to_string).or_else(|| {
                        f.strip_prefix("--mount=")?
                            .split(',')
                            .find_map(|kv| kv.strip_prefix("from=").map(str::to_string))
                    });
                    if let Some(from) = from {
                        let from = expand(&from, &vars);
                        let is_stage = stages.contains(&from.to_ascii_lowercase())
                            || from.parse::<usize>().is_ok();
                        if !is_stage {
                            out.push(from);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Groups services into waves from `deps[i]` (the services `i` waits for); a cycle is an
/// error listing its services' indices.
pub fn waves(deps: &[BTreeSet<usize>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let mut done = vec![false; deps.len()];
    let mut out = Vec::new();
    while done.iter().any(|d| !d) {
        let ready: Vec<usize> = (0..deps.len())
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .collect();
        if ready.is_empty() {
            return Err((0..deps.len()).filter(|&i| !done[i]).collect());
        }
        for &i in &ready {
            done[i] = true;
        }
        out.push(ready);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_images_skip_stages_and_expand_args() {
        let df = "ARG BASE=lade/base:1\nARG V\nARG UNDECLARED_SEEN=$NOT_AN_ARG\nFROM ${BASE} AS build\nFROM build\nCOPY --from=build /a /a\nCOPY --from=lade/assets:$V /b /b\nRUN --mount=type=bind,from=tools,target=/t true\nFROM scratch\nCOPY --from=0 /a /\n";
        let args: BTreeMap<String, String> = [("V".to_string(), "9".to_string())].into();
        assert_eq!(
            images_read(df, &args),
            vec!["lade/base:1", "lade/assets:9", "tools"]
        );
        let args: BTreeMap<String, String> = [("BASE".to_string(), "other".to_string())].into();
        assert_eq!(images_read(df, &args)[0], "other");
        // Build args that no ARG declares are not visible; defaults see earlier ARGs.
        let df = "ARG TAG=1\nARG B=base:${TAG}\nFROM $B\nFROM img:$UNDECLARED\n";
        let args: BTreeMap<String, String> = [("UNDECLARED".to_string(), "x".to_string())].into();
        assert_eq!(images_read(df, &args), vec!["base:1", "img:"]);
    }

    #[test]
    fn waves_follow_dependencies_and_find_cycles() {
        let d = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(
            waves(&[d(&[]), d(&[]), d(&[0])]).unwrap(),
            vec![vec![0, 1], vec![2]]
        );
        assert_eq!(
            waves(&[d(&[2]), d(&[]), d(&[1])]).unwrap(),
            vec![vec![1], vec![2], vec![0]]
        );
        assert_eq!(waves(&[d(&[1]), d(&[0]), d(&[])]).unwrap_err(), vec![0, 1]);
    }
}
