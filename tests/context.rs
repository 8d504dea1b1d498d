//! `.dockerignore` conformance: every row of moby/patternmatcher's cases (testdata/dockerignore).

use lade::context::dockerignore::{read_ignore_file, PatternMatcher};
use serde_json::Value;

fn load(name: &str) -> Vec<Value> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/dockerignore")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

#[test]
fn patternmatcher_cases() {
    let cases = load("patternmatcher.json");
    let mut failures = Vec::new();
    for c in &cases {
        let patterns: Vec<String> = c["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        let path = c["path"].as_str().unwrap();
        let api = c["api"].as_str().unwrap();
        let want_err = c["error"].as_bool().unwrap();
        let got = PatternMatcher::new(&patterns).map(|m| match api {
            "matches" => m.matches(path),
            "matches_or_parent" => m.matches_or_parent(path),
            other => panic!("unknown api {other}"),
        });
        match (got, want_err) {
            (Err(_), true) => {}
            (Ok(_), true) => failures.push(format!(
                "{api} {patterns:?} {path:?}: accepted, want an error"
            )),
            (Err(e), false) => failures.push(format!("{api} {patterns:?} {path:?}: error {e}")),
            (Ok(m), false) if m == c["match"].as_bool().unwrap() => {}
            (Ok(m), false) => failures.push(format!("{api} {patterns:?} {path:?}: got {m}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn ignorefile_cases() {
    for c in load("ignorefile.json") {
        let want: Vec<String> = c["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            read_ignore_file(c["content"].as_str().unwrap()),
            want,
            "content {:?}",
            c["content"]
        );
    }
}
