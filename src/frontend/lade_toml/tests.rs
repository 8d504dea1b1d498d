use super::*;
use crate::plan::Step;

fn lower_str(src: &str) -> Result<Plan, SpecError> {
    lower("lade.toml", src, Path::new("/ctx"), None)
}

#[test]
fn full_image_section_lowers_to_config_edits() {
    let plan = lower_str(
        r#"
[image]
from = "scratch"
platform = "linux/arm64"
entrypoint = ["/bin/app"]
cmd = ["--help"]
env = { B = "2", A = "1" }
workdir = "/srv"
user = "1000:1000"
labels = { "org.example" = "x" }
ports = [8080, "53/UDP"]
volumes = ["/data"]
stop-signal = "SIGINT"
annotations = { "org.opencontainers.image.title" = "t" }
tags = ["app:1"]

[[layer]]
name = "app"
from = "dist"
into = "/srv"
include = ["**/*.js"]
exclude = ["**/test/**"]
mode = "0640"
dir-mode = 0o750
owner = "1000:1001"
preserve-exec-bit = false
"#,
    )
    .unwrap();
    let stage = &plan.stages[0];
    assert_eq!(stage.platform.to_string(), "linux/arm64");
    assert_eq!(stage.base, Base::Scratch);
    assert_eq!(plan.tags, ["app:1"]);
    let Step::Layer(l) = &stage.steps[0] else {
        panic!("first step is the layer")
    };
    let FileSet::Select {
        from, into, attrs, ..
    } = &l.sources[0]
    else {
        panic!()
    };
    assert_eq!((from.as_str(), into.display().as_str()), ("dist", "/srv"));
    assert_eq!(
        *attrs,
        Attrs {
            file_mode: Some(0o640),
            dir_mode: Some(0o750),
            uid: 1000,
            gid: 1001,
            preserve_exec_bit: false,
            host_modes: false,
        }
    );
    let edits: Vec<&ConfigEdit> = stage
        .steps
        .iter()
        .filter_map(|s| {
            if let Step::Config(c) = s {
                Some(c)
            } else {
                None
            }
        })
        .collect();
    assert!(edits.contains(&&ConfigEdit::ExposedPort("53/udp".into())));
    assert!(edits.contains(&&ConfigEdit::ExposedPort("8080/tcp".into())));
    assert!(edits.contains(&&ConfigEdit::Entrypoint(Some(vec!["/bin/app".into()]))));
    // env in key order, so the config does not depend on how the table was written
    let envs: Vec<_> = edits
        .iter()
        .filter_map(|e| {
            if let ConfigEdit::Env(k, _) = e {
                Some(k.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(envs, ["A", "B"]);
}

#[test]
fn unknown_key_names_line_and_column() {
    let err = lower_str("[image]\nfrom = \"scratch\"\nentrypiont = [\"x\"]\n").unwrap_err();
    assert_eq!((err.location.line, err.location.col), (3, 1));
    assert!(
        err.to_string()
            .starts_with("lade.toml:3:1: unknown field `entrypiont`"),
        "{err}"
    );
}

#[test]
fn wrong_type_and_relative_into_are_located() {
    let err = lower_str("[image]\nports = [true]\n").unwrap_err();
    assert_eq!(err.location.line, 2);
    let err =
        lower_str("[image]\n[[layer]]\nname = \"a\"\nfrom = \"d\"\ninto = \"app\"\n").unwrap_err();
    assert_eq!((err.location.line, err.location.col), (5, 8));
    assert!(err.message.contains("absolute"), "{err}");
}

#[test]
fn bases_and_ports() {
    let plan = lower_str("[image]\nfrom = \"oci:base:v1\"\n").unwrap();
    assert_eq!(
        plan.stages[0].base,
        Base::OciLayout {
            dir: "/ctx/base".into(),
            tag: Some("v1".into())
        }
    );
    let plan = lower_str("[image]\nfrom = \"oci-archive:b.tar\"\n").unwrap();
    assert_eq!(
        plan.stages[0].base,
        Base::OciArchive {
            file: "/ctx/b.tar".into(),
            tag: None
        }
    );
    assert_eq!(normalize_port("70000"), None);
    assert_eq!(normalize_port("80/TCP").as_deref(), Some("80/tcp"));
}

#[test]
fn cargo_preset_sets_entrypoint() {
    let plan = lower_str("[image]\n[cargo]\nbin = \"target/release/hello\"\n").unwrap();
    let steps = &plan.stages[0].steps;
    assert!(steps.iter().any(|s| matches!(s, Step::Config(ConfigEdit::Entrypoint(Some(ep))) if ep == &["/usr/local/bin/hello"])));
    let Step::Layer(l) = &steps[0] else { panic!() };
    let FileSet::Select { from, include, .. } = &l.sources[0] else {
        panic!()
    };
    assert_eq!(
        (from.as_str(), include.as_slice()),
        ("target/release", &["hello".to_string()][..])
    );
}

/// A `[java] maven` answer without Maven: one layer, and the request it was given.
struct FakeMaven(std::sync::Mutex<Option<MavenRequest>>);

impl MavenProjects for FakeMaven {
    fn maven(&self, r: &MavenRequest) -> Result<(Vec<LayerStep>, Vec<String>), String> {
        *self.0.lock().unwrap() = Some(r.clone());
        if r.module.as_deref() == Some("bad") {
            return Err("--module \"bad\": no such module".into());
        }
        let layer = LayerStep {
            name: "classes".into(),
            created_by: "lade maven classes".into(),
            sources: vec![],
            location: Location::at_offset("x", "", 0),
        };
        Ok((vec![layer], vec!["java".into(), "Main".into()]))
    }
}

#[test]
fn java_maven_asks_the_build_and_moves_the_context_to_root() {
    let src = "[image]\nfrom = \"scratch\"\n[[layer]]\nname = \"extra\"\nfrom = \"extra\"\ninto = \"/x\"\n\
               [java]\nmaven = \"pom.xml\"\nmodule = \"app\"\njvm-flags = [\"-Xss1m\"]\n";
    let fake = FakeMaven(Default::default());
    let l = lower_with("lade.toml", src, Path::new("/ctx"), None, Some(&fake)).unwrap();
    assert_eq!(l.context, Path::new("/"));
    let r = fake.0.lock().unwrap().clone().unwrap();
    assert_eq!(r.pom, Path::new("/ctx/pom.xml"));
    assert_eq!(r.module.as_deref(), Some("app"));
    assert_eq!(r.jvm_flags, ["-Xss1m"]);
    let steps = &l.plan.stages[0].steps;
    assert!(matches!(&steps[0], Step::Layer(LayerStep { sources, .. })
        if matches!(&sources[0], FileSet::Select { from, .. } if from == "/ctx/extra")));
    assert!(steps.iter().any(
        |s| matches!(s, Step::Config(ConfigEdit::Entrypoint(Some(e))) if e == &["java", "Main"])
    ));

    let bad = src.replace("module = \"app\"", "module = \"bad\"");
    let e = lower_with("lade.toml", &bad, Path::new("/ctx"), None, Some(&fake))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lade.toml:8:9:") && e.contains("no such module"),
        "{e}"
    );
    let e = lower_str("[image]\n[java]\nmain-class = \"M\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs `jar`") && e.contains("or `maven`"), "{e}");
    let e = lower_str("[image]\n[java]\njar = \"a.jar\"\nmaven = \"pom.xml\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not both"), "{e}");
    let e = lower_str("[image]\n[java]\nmaven = \"pom.xml\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("only by `lade build`"), "{e}");
}

#[test]
fn cache_table_gives_the_build_its_caches() {
    let plan = lower_str(
        r#"
[image]
[cache]
from = ["type=registry,ref=localhost:5000/app:cache", "type=local,src=cache"]
to = ["type=registry,ref=localhost:5000/app:cache,mode=max"]
"#,
    )
    .unwrap();
    assert_eq!(plan.cache_from.len(), 2);
    assert_eq!(
        plan.cache_from[1].place,
        crate::cache::Place::Local("/ctx/cache".into())
    );
    assert_eq!(plan.cache_to[0].mode, crate::cache::Mode::Max);
    let err = lower_str("[image]\n[cache]\nto = [\"type=local,src=x\"]\n").unwrap_err();
    assert!(
        err.message.contains("type=local needs dest=DIR"),
        "{}",
        err.message
    );
    assert_eq!(err.location.line, 3, "{err}");
}
