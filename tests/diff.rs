//! `lade diff A B`: two images built from contexts that differ in one file's mode, one
//! file's content and one ENV value report exactly those three, each with its layer, in
//! every image form (OCI archive, layout, docker archive); identical images exit 0, an
//! unreadable image exits 2 with one line.

mod common;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A context whose Dockerfile makes two layers (`/etc/{base,gone}.txt`, `/app/`) and sets `FOO=<env_foo>`; `/app/data.txt` holds `data`, `/app/run.sh` has `mode`.
fn context(dir: &Path, env_foo: &str, data: &str, mode: u32) -> PathBuf {
    fs::create_dir_all(dir.join("app")).unwrap();
    fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY base.txt gone.txt /etc/\nCOPY app/ /app/\nENV FOO={env_foo} BAR=same\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("base.txt"), "same\n").unwrap();
    fs::write(dir.join("gone.txt"), "same\n").unwrap();
    fs::write(dir.join("app/data.txt"), data).unwrap();
    fs::write(dir.join("app/run.sh"), "echo run\n").unwrap();
    for f in ["Dockerfile", "base.txt", "gone.txt", "app/data.txt"] {
        fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
    fs::set_permissions(dir.join("app"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.join("app/run.sh"), fs::Permissions::from_mode(mode)).unwrap();
    dir.to_path_buf()
}

fn diff(tmp: &Path, a: &str, b: &str, json: bool) -> (i32, String, String) {
    let mut c = common::lade(&tmp.join("cache"));
    c.args(["diff", a, b]);
    if json {
        c.args(["--format", "json"]);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

#[test]
fn a_mode_a_content_and_an_env_var_are_exactly_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = context(&t.join("a"), "1", "one\n", 0o644);
    let cb = context(&t.join("b"), "2", "two\n", 0o755);
    let mut names = Vec::new();
    for (side, ctx) in [("a", &ca), ("b", &cb)] {
        let archive = t.join(format!("{side}.tar"));
        let layout = t.join(format!("{side}-layout"));
        let docker = t.join(format!("{side}-docker.tar"));
        common::build_context(ctx, t, &format!("type=oci,dest={}", archive.display()), &[]);
        common::build_context(
            ctx,
            t,
            &format!("type=oci-layout,dest={}", layout.display()),
            &[],
        );
        common::build_context(
            ctx,
            t,
            &format!("type=docker,dest={}", docker.display()),
            &["-t", "diff-test:1"],
        );
        names.push([
            format!("oci-archive:{}", archive.display()),
            format!("oci:{}", layout.display()),
            format!("docker-archive:{}", docker.display()),
        ]);
    }
    for (a, b) in names[0].iter().zip(&names[1]) {
        let (code, out, err) = diff(t, a, b, true);
        assert_eq!(code, 1, "{a} vs {b}: {err}");
        let d: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(d["identical"], false);
        assert_eq!(
            d["config"],
            serde_json::json!([{"field": "config.Env.FOO", "a": "1", "b": "2"}]),
            "{a} vs {b}"
        );
        let files = d["files"].as_array().unwrap();
        let summary: Vec<(&str, &str, &Value, u64, u64)> = files
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap(),
                    f["change"].as_str().unwrap(),
                    &f["fields"],
                    f["a"]["layer"].as_u64().unwrap(),
                    f["b"]["layer"].as_u64().unwrap(),
                )
            })
            .collect();
        let content = serde_json::json!(["content"]);
        let mode = serde_json::json!(["mode"]);
        assert_eq!(
            summary,
            [
                ("/app/data.txt", "changed", &content, 1, 1),
                ("/app/run.sh", "changed", &mode, 1, 1),
            ],
            "{a} vs {b}"
        );
        assert_eq!(files[1]["a"]["mode"], "0644");
        assert_eq!(files[1]["b"]["mode"], "0755");
        // The layer named is the one in each image's own list.
        for side in ["a", "b"] {
            assert_eq!(
                files[0][side]["layer_digest"], d[side]["layers"][1],
                "{a} vs {b}"
            );
        }
        assert!(d["other"].as_array().unwrap().is_empty());

        let (code, text, _) = diff(t, a, b, false);
        assert_eq!(code, 1);
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "config  config.Env.FOO: \"1\" → \"2\"");
        assert!(
            lines[1].starts_with("changed /app/data.txt: content sha256:"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("changed /app/run.sh: mode 0644 → 0755 (a: layer 1 sha256:"),
            "{text}"
        );

        let (code, text, err) = diff(t, a, a, false);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(text.ends_with("identical\n"), "{text}");
    }
}

#[test]
fn a_file_added_on_top_of_a_base_names_its_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ca = context(&t.join("a"), "1", "one\n", 0o644);
    let cb = context(&t.join("b"), "1", "one\n", 0o644);
    // b: a's image as its base, plus /etc/new.txt in a third layer.
    fs::create_dir_all(cb.join("more")).unwrap();
    fs::write(cb.join("more/new.txt"), "new\n").unwrap();
    fs::write(
        cb.join("Dockerfile"),
        "FROM oci-archive:a.tar\nCOPY more/new.txt /etc/new.txt\n",
    )
    .unwrap();
    let a_tar = t.join("a.tar");
    common::build_context(&ca, t, &format!("type=oci,dest={}", a_tar.display()), &[]);
    fs::copy(&a_tar, cb.join("a.tar")).unwrap();
    let b_tar = t.join("b.tar");
    common::build_context(&cb, t, &format!("type=oci,dest={}", b_tar.display()), &[]);
    let (code, out, err) = diff(
        t,
        &format!("oci-archive:{}", a_tar.display()),
        &format!("oci-archive:{}", b_tar.display()),
        true,
    );
    assert_eq!(code, 1, "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["config"], serde_json::json!([]));
    assert_eq!(d["files"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(d["files"][0]["path"], "/etc/new.txt");
    assert_eq!(d["files"][0]["change"], "added");
    assert_eq!(d["files"][0]["b"]["layer"], 2);
    assert_eq!(d["files"][0]["b"]["layer_digest"], d["b"]["layers"][2]);
}

#[test]
fn an_unreadable_image_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let missing = t.join("missing.tar");
    let name = format!("oci-archive:{}", missing.display());
    let (code, out, err) = diff(t, &name, &name, false);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("error: {name}: ")), "{err}");
}
