//! Conformance of the Dockerfile parser and the shell-word lexer with BuildKit, driven by the
//! corpora in `testdata/` (see `testdata/README.md`), plus rendered errors and the CLI.

use assert_cmd::Command;
use lade::frontend::dockerfile::parser::{self, Dockerfile};
use lade::frontend::dockerfile::shell::Lexer;
use predicates::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

fn parse_file(path: &Path) -> Result<Dockerfile, parser::ParseError> {
    let bytes = fs::read(path).unwrap();
    parser::parse(&String::from_utf8_lossy(&bytes))
}

#[test]
fn dump_matches_buildkit_results() {
    let dirs = subdirs(&testdata("dockerfile-parser/testfiles"));
    assert!(dirs.len() >= 30);
    let mut failures = Vec::new();
    for dir in dirs {
        let want = fs::read_to_string(dir.join("result")).unwrap();
        match parse_file(&dir.join("Dockerfile")) {
            Ok(df) if df.dump() + "\n" == want => {}
            Ok(df) => failures.push(format!(
                "{}:\n--- got\n{}\n--- want\n{want}",
                dir.display(),
                df.dump()
            )),
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn negative_files_fail() {
    for dir in subdirs(&testdata("dockerfile-parser/testfiles-negative")) {
        assert!(
            parse_file(&dir.join("Dockerfile")).is_err(),
            "{} parsed",
            dir.display()
        );
    }
}

#[test]
fn line_spans() {
    let df = parse_file(&testdata("dockerfile-parser/testfile-line/Dockerfile")).unwrap();
    let spans: Vec<(usize, usize)> = df
        .instructions
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(spans, [(5, 5), (11, 12), (17, 31)]);
}

/// compare.py's normalisation: the compared keys, commands lowercased, heredocs as name and
/// content.
fn norm(cmds: &Value) -> Vec<Value> {
    let lower = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or(Value::Null, |s| Value::String(s.to_lowercase()))
    };
    cmds.as_array()
        .expect("an array of instructions")
        .iter()
        .map(|c| {
            let heredocs: Vec<Value> = c
                .get("heredocs")
                .and_then(Value::as_array)
                .map(|hs| {
                    hs.iter()
                        .map(|h| serde_json::json!({"name": h.get("name"), "content": h.get("content")}))
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "cmd": lower(c.get("cmd")).as_str().unwrap_or(""),
                "sub_cmd": lower(c.get("sub_cmd")),
                "json": c.get("json"),
                "start_line": c.get("start_line"),
                "end_line": c.get("end_line"),
                "flags": c.get("flags"),
                "value": c.get("value"),
                "heredocs": heredocs,
            })
        })
        .collect()
}

#[test]
fn json_agrees_with_buildkit() {
    let mut total = 0;
    let mut failures = Vec::new();
    for group in subdirs(&testdata("dockerfile-json/cases")) {
        for case in subdirs(&group) {
            total += 1;
            let name = case
                .strip_prefix(testdata("dockerfile-json/cases"))
                .unwrap()
                .display()
                .to_string();
            let want: Value =
                serde_json::from_str(&fs::read_to_string(case.join("expected.json")).unwrap())
                    .unwrap();
            let got = parse_file(&case.join("Dockerfile"));
            match (want.is_object(), got) {
                (true, Err(_)) => {}
                (true, Ok(_)) => failures.push(format!("{name}: accepted, BuildKit rejects")),
                (false, Err(e)) => failures.push(format!("{name}: rejected: {e}")),
                (false, Ok(df)) => {
                    let (got, want) = (norm(&df.to_json()), norm(&want));
                    if got.len() != want.len() {
                        failures.push(format!(
                            "{name}: {} instructions, BuildKit {}",
                            got.len(),
                            want.len()
                        ));
                    } else if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
                        failures.push(format!("{name}: #{i}: got {} want {}", got[i], want[i]));
                    }
                }
            }
        }
    }
    assert_eq!(total, 74, "cases in testdata/dockerfile-json/cases");
    assert!(
        failures.is_empty(),
        "{}/{total} disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn env_var_expansion() {
    let text = fs::read_to_string(testdata("dockerfile-shell/envVarTest")).unwrap();
    let env: HashMap<&str, &str> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .into_iter()
    .collect();
    let lookup = |k: &str| env.get(k).map(|v| v.to_string());
    let lex = Lexer::new('\\');
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(parts.len(), 3, "line {}: {line}", n + 1);
        if parts[0] == "W" {
            continue;
        }
        count += 1;
        let got = lex.process_word(parts[1], &lookup);
        if parts[2] == "error" {
            assert!(
                got.is_err(),
                "line {}: {:?} expanded to {got:?}",
                n + 1,
                parts[1]
            );
        } else {
            assert_eq!(
                got.as_deref(),
                Ok(parts[2]),
                "line {}: {:?}",
                n + 1,
                parts[1]
            );
        }
    }
    assert!(count > 150);
}

#[test]
fn words_splitting() {
    let text = fs::read_to_string(testdata("dockerfile-shell/wordsTest")).unwrap();
    let lex = Lexer::new('\\');
    let mut env: HashMap<String, String> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(def) = line.strip_prefix("ENV ") {
            let (k, v) = def.trim_start_matches(' ').split_once('=').unwrap();
            env.insert(k.to_string(), v.to_string());
            continue;
        }
        let (input, expected) = line.split_once('|').unwrap();
        let expected: Vec<&str> = expected.trim_start_matches(' ').split(',').collect();
        let got = lex.process_words(input.trim(), &|k| env.get(k).cloned());
        if expected == ["error"] {
            assert!(got.is_err(), "line {}: {input:?} gave {got:?}", n + 1);
        } else {
            assert_eq!(got.unwrap(), expected, "line {}: {input:?}", n + 1);
        }
    }
}

fn rendered_error(src: &str) -> String {
    parser::parse(src).unwrap_err().render("Dockerfile", src)
}

#[test]
fn rendered_errors() {
    insta::assert_snapshot!(
        "unterminated_heredoc",
        rendered_error("FROM busybox\nRUN cat <<EOF >/x\nhello\n")
    );
    insta::assert_snapshot!(
        "bad_escape_directive",
        rendered_error("# escape=x\nFROM busybox\n")
    );
    insta::assert_snapshot!(
        "repeated_directive",
        rendered_error("# syntax=a\n# syntax=b\nFROM busybox\n")
    );
    insta::assert_snapshot!(
        "env_without_value",
        rendered_error("FROM busybox\n\tENV PATH\n")
    );
    insta::assert_snapshot!(
        "nested_json",
        rendered_error("FROM busybox\nCMD [\"echo\", [\"x\"]]\n")
    );
    insta::assert_snapshot!("no_instructions", rendered_error("# just a comment\n"));
}

#[test]
fn invalid_json_is_shell_form_not_an_error() {
    let df = parser::parse("CMD [\"echo\", 'x']\n").unwrap();
    assert!(!df.instructions[0].json);
    assert_eq!(df.instructions[0].values, ["[\"echo\", 'x']"]);
}

#[test]
fn cli_dump_and_error_exit() {
    let dir = testdata("dockerfile-parser/testfiles/flags");
    let want = fs::read_to_string(dir.join("result")).unwrap();
    Command::cargo_bin("lade")
        .unwrap()
        .args(["parse", "--format", "dump"])
        .arg(dir.join("Dockerfile"))
        .assert()
        .success()
        .stdout(want);

    Command::cargo_bin("lade")
        .unwrap()
        .args(["parse", "--format", "json", "-"])
        .write_stdin("FROM busybox\nRUN <<EOF\necho hi\n")
        .assert()
        .code(1)
        .stderr(predicate::str::starts_with(
            "<stdin>:2:5: unterminated heredoc",
        ));

    let neg = testdata("dockerfile-parser/testfiles-negative/env_no_value/Dockerfile");
    Command::cargo_bin("lade")
        .unwrap()
        .args(["parse", "--format", "dump"])
        .arg(&neg)
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::starts_with(format!(
            "{}:3:1: ENV must have two arguments",
            neg.display()
        )));
}

/// Dockerfile-ish fragments, so that random inputs hit the interesting paths.
const FRAGMENTS: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "LABEL",
    "ARG",
    "ONBUILD",
    "HEALTHCHECK",
    "CMD",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\\",
    "`",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "<<EOF",
    "<<-'E'",
    "3<<\"E\"",
    "EOF",
    "E",
    "\tE",
    "[",
    "]",
    "\"",
    "'",
    ",",
    "=",
    "--from=x",
    "--",
    "${A:-b}",
    "${A",
    "$",
    "}",
    "é",
    "\u{a0}",
    "\u{85}",
    "1e999",
    "x",
    "\u{0}",
    "\u{feff}",
];

proptest::proptest! {
    #[test]
    fn parser_and_lexer_never_panic(
        parts in proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..40),
        esc in proptest::sample::select(vec!['\\', '`']),
    ) {
        let src: String = parts.concat();
        match parser::parse(&src) {
            Ok(df) => drop((df.dump(), df.to_json())),
            Err(e) => drop(e.render("Dockerfile", &src)),
        }
        let lex = Lexer::new(esc);
        let _ = lex.process_words(&src, &|k| (k == "A").then(|| "a b".to_string()));
        let _ = lex.process_word(&src, &|_| None);
    }
}
