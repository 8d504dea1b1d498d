//! The preset through the whole spec frontend (`spec::lower`), over jars made in a tempdir.

use crate::frontend::lade_toml::{lower, SpecError};
use crate::plan::{Attrs, ConfigEdit, FileSet, LayerStep, Plan, Step};
use std::io::Write;
use std::path::Path;
use zip::write::SimpleFileOptions;

/// Writes a jar at `dir/rel`: directory entries for every parent (as real jars have), then
/// the files in the given order.
fn write_jar(dir: &Path, rel: &str, files: &[(&str, &[u8])]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = SimpleFileOptions::default();
    let mut dirs = std::collections::BTreeSet::new();
    for (name, _) in files {
        let mut acc = String::new();
        for part in name
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            acc.push_str(part);
            acc.push('/');
            if dirs.insert(acc.clone()) {
                w.add_directory(acc.as_str(), opts).unwrap();
            }
        }
    }
    for (name, content) in files {
        w.start_file(*name, opts).unwrap();
        w.write_all(content).unwrap();
    }
    w.finish().unwrap();
}

fn plan(dir: &Path, java: &str) -> Result<Plan, SpecError> {
    lower(
        "lade.toml",
        &format!("[image]\nfrom = \"scratch\"\n\n[java]\n{java}"),
        dir,
        None,
    )
}

fn layers(plan: &Plan) -> Vec<&LayerStep> {
    plan.stages[0]
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Layer(l) => Some(l),
            _ => None,
        })
        .collect()
}

fn entrypoint(plan: &Plan) -> Vec<String> {
    plan.stages[0]
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Config(ConfigEdit::Entrypoint(Some(ep))) => Some(ep.clone()),
            _ => None,
        })
        .expect("an entrypoint")
}

/// Each layer as (name, one line per file it places).
fn summary(plan: &Plan) -> Vec<(String, Vec<String>)> {
    layers(plan)
        .into_iter()
        .map(|l| {
            let mut lines = Vec::new();
            for s in &l.sources {
                match s {
                    FileSet::Zip {
                        archive, entries, ..
                    } => lines.extend(
                        entries
                            .iter()
                            .map(|e| format!("{archive}!{} -> {}", e.name, e.path)),
                    ),
                    FileSet::Select {
                        from,
                        into,
                        include,
                        ..
                    } => lines.push(format!("{from}/{{{}}} -> {into}", include.join(","))),
                    FileSet::Inline { path, content, .. } => {
                        lines.push(format!("{path} = {}", String::from_utf8_lossy(content)))
                    }
                    FileSet::Dir { path, .. } => lines.push(format!("dir {path}")),
                    FileSet::Copy { .. } | FileSet::Url { .. } | FileSet::Workdir { .. } => {
                        unreachable!("the java preset copies no Dockerfile sources")
                    }
                }
            }
            (l.name.clone(), lines)
        })
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

const BOOT_MANIFEST: &[u8] = b"Manifest-Version: 1.0\r\n\
Main-Class: org.springframework.boot.loader.launch.JarLauncher\r\n\
Start-Class: com.x.App\r\n\
Spring-Boot-Classes: BOOT-INF/classes/\r\n\
Spring-Boot-Lib: BOOT-INF/lib/\r\n\r\n";

fn boot_jar(dir: &Path, class: &str) {
    write_jar(
        dir,
        "target/app.jar",
        &[
            ("META-INF/MANIFEST.MF", BOOT_MANIFEST),
            (
                "org/springframework/boot/loader/launch/JarLauncher.class",
                b"\xca\xfe",
            ),
            (class, b"\xca\xfe\xba\xbe"),
            ("BOOT-INF/classes/application.properties", b"a=1\n"),
            ("BOOT-INF/lib/b-2.0-SNAPSHOT.jar", b"PK"),
            ("BOOT-INF/lib/a-1.0.jar", b"PK"),
        ],
    );
}

#[test]
fn spring_boot_fat_jar_is_exploded_into_jib_layers() {
    let tmp = tempfile::tempdir().unwrap();
    boot_jar(tmp.path(), "BOOT-INF/classes/com/x/App.class");
    let plan = plan(
        tmp.path(),
        "jar = \"target/app.jar\"\njvm-flags = [\"-Xmx1g\"]\n",
    )
    .unwrap();
    let j = "target/app.jar!";
    assert_eq!(
        summary(&plan),
        [
            (
                "dependencies".to_string(),
                vec![format!(
                    "{j}BOOT-INF/lib/a-1.0.jar -> /app/BOOT-INF/lib/a-1.0.jar"
                )]
            ),
            (
                "spring-boot-loader".to_string(),
                vec![format!(
                    "{j}org/springframework/boot/loader/launch/JarLauncher.class -> \
                     /app/org/springframework/boot/loader/launch/JarLauncher.class"
                )]
            ),
            (
                "snapshot dependencies".to_string(),
                vec![format!(
                    "{j}BOOT-INF/lib/b-2.0-SNAPSHOT.jar -> /app/BOOT-INF/lib/b-2.0-SNAPSHOT.jar"
                )]
            ),
            (
                "resources".to_string(),
                vec![
                    format!(
                        "{j}BOOT-INF/classes/application.properties -> \
                         /app/BOOT-INF/classes/application.properties"
                    ),
                    format!("{j}META-INF/MANIFEST.MF -> /app/META-INF/MANIFEST.MF"),
                ]
            ),
            (
                "classes".to_string(),
                vec![format!(
                    "{j}BOOT-INF/classes/com/x/App.class -> /app/BOOT-INF/classes/com/x/App.class"
                )]
            ),
        ]
    );
    assert_eq!(
        entrypoint(&plan),
        s(&[
            "java",
            "-Xmx1g",
            "-cp",
            "/app",
            "org.springframework.boot.loader.launch.JarLauncher"
        ])
    );
    for l in layers(&plan) {
        let FileSet::Zip { attrs, origin, .. } = &l.sources[0] else {
            panic!("{l:?}")
        };
        assert_eq!(
            *attrs,
            Attrs {
                file_mode: Some(0o644),
                dir_mode: Some(0o755),
                uid: 0,
                gid: 0,
                preserve_exec_bit: false,
                host_modes: false,
            }
        );
        assert_eq!(origin.to_string(), "lade.toml:5:7");
    }
}

#[test]
fn a_changed_class_changes_only_the_classes_layer() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    boot_jar(a.path(), "BOOT-INF/classes/com/x/App.class");
    boot_jar(b.path(), "BOOT-INF/classes/com/x/App2.class");
    let java = "jar = \"target/app.jar\"\n";
    let (pa, pb) = (plan(a.path(), java).unwrap(), plan(b.path(), java).unwrap());
    let json = |p: &Plan| -> Vec<(String, String)> {
        layers(p)
            .into_iter()
            .map(|l| (l.name.clone(), serde_json::to_string(l).unwrap()))
            .collect()
    };
    let (ja, jb) = (json(&pa), json(&pb));
    assert_eq!(ja.len(), 5);
    for (la, lb) in ja.iter().zip(&jb) {
        assert_eq!(la.0, lb.0);
        assert_eq!(la.1 == lb.1, la.0 != "classes", "layer {}", la.0);
    }
}

#[test]
fn plain_jar_gets_jibs_layout_and_classpath_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_jar(
        tmp.path(),
        "build/libs/app.jar",
        &[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\nMain-Class: com.x.Main\nClass-Path: lib/dep-1.0.jar \n lib/snap-1.0-SNAPSHOT.jar ../../extra.jar\n\n",
            ),
            ("com/x/Main.class", b"\xca\xfe"),
            ("com/x/Util.class", b"\xca\xfe"),
            ("config/app.yaml", b"a: 1\n"),
        ],
    );
    for dep in [
        "build/libs/lib/dep-1.0.jar",
        "build/libs/lib/snap-1.0-SNAPSHOT.jar",
        "extra.jar",
    ] {
        let dep = tmp.path().join(dep);
        std::fs::create_dir_all(dep.parent().unwrap()).unwrap();
        std::fs::write(dep, b"PK").unwrap();
    }
    let plan = plan(tmp.path(), "jar = \"build/libs/app.jar\"\n").unwrap();
    let j = "build/libs/app.jar!";
    assert_eq!(
        summary(&plan),
        [
            (
                "dependencies".to_string(),
                s(&[
                    "./{extra.jar} -> /app/libs",
                    "build/libs/lib/{dep-1.0.jar} -> /app/libs"
                ])
            ),
            (
                "snapshot dependencies".to_string(),
                s(&["build/libs/lib/{snap-1.0-SNAPSHOT.jar} -> /app/libs"])
            ),
            (
                "resources".to_string(),
                vec![
                    format!("{j}META-INF/MANIFEST.MF -> /app/resources/META-INF/MANIFEST.MF"),
                    format!("{j}config/app.yaml -> /app/resources/config/app.yaml"),
                ]
            ),
            (
                "classes".to_string(),
                vec![
                    format!("{j}com/x/Main.class -> /app/classes/com/x/Main.class"),
                    format!("{j}com/x/Util.class -> /app/classes/com/x/Util.class"),
                ]
            ),
            (
                "jvm arg files".to_string(),
                s(&[
                    "/app/jib-classpath-file = /app/resources:/app/classes:\
                     /app/libs/dep-1.0.jar:/app/libs/snap-1.0-SNAPSHOT.jar:/app/libs/extra.jar",
                    "/app/jib-main-class-file = com.x.Main",
                ])
            ),
        ]
    );
    assert_eq!(
        entrypoint(&plan),
        s(&["java", "-cp", "@/app/jib-classpath-file", "com.x.Main"])
    );
}

#[test]
fn main_class_app_root_and_java_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    write_jar(
        tmp.path(),
        "app.jar",
        &[("Main.class", b"\xca\xfe"), ("log.xml", b"<x/>")],
    );
    let plan = plan(
        tmp.path(),
        "jar = \"app.jar\"\nmain-class = \"Main\"\napp-root = \"/opt/app/\"\n\
         java = \"/usr/bin/java\"\njvm-flags = [\"-Dx=1\", \"-ea\"]\n",
    )
    .unwrap();
    assert_eq!(
        entrypoint(&plan),
        s(&[
            "/usr/bin/java",
            "-Dx=1",
            "-ea",
            "-cp",
            "@/opt/app/jib-classpath-file",
            "Main"
        ])
    );
    let sum = summary(&plan);
    let names: Vec<_> = sum.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["resources", "classes", "jvm arg files"]);
    assert_eq!(
        sum[2].1,
        [
            "/opt/app/jib-classpath-file = /opt/app/resources:/opt/app/classes",
            "/opt/app/jib-main-class-file = Main"
        ]
    );
    // The spec's main-class wins over the manifest's.
    write_jar(
        tmp.path(),
        "app.jar",
        &[
            ("META-INF/MANIFEST.MF", b"Main-Class: Other\n"),
            ("Main.class", b""),
        ],
    );
    let plan = lower(
        "lade.toml",
        "[image]\n[java]\njar = \"app.jar\"\nmain-class = \"Main\"\n",
        tmp.path(),
        None,
    )
    .unwrap();
    assert_eq!(entrypoint(&plan).last().unwrap(), "Main");
}

#[test]
fn image_entrypoint_overrides_the_preset() {
    let tmp = tempfile::tempdir().unwrap();
    boot_jar(tmp.path(), "BOOT-INF/classes/com/x/App.class");
    let plan = lower(
        "lade.toml",
        "[image]\nentrypoint = [\"/bin/sh\"]\n[java]\njar = \"target/app.jar\"\n",
        tmp.path(),
        None,
    )
    .unwrap();
    assert_eq!(entrypoint(&plan), ["/bin/sh"]);
    assert_eq!(layers(&plan).len(), 5);
}

#[test]
fn jar_mode_copies_the_jar_and_class_path_as_java_jar_expects() {
    let tmp = tempfile::tempdir().unwrap();
    write_jar(
        tmp.path(),
        "target/app-1.0.jar",
        &[
            (
                "META-INF/MANIFEST.MF",
                b"Main-Class: com.x.Main\nClass-Path: lib/dep.jar lib/dep.jar\n",
            ),
            ("com/x/Main.class", b""),
        ],
    );
    std::fs::create_dir_all(tmp.path().join("target/lib")).unwrap();
    std::fs::write(tmp.path().join("target/lib/dep.jar"), b"PK").unwrap();
    let packaged = plan(
        tmp.path(),
        "jar = \"target/app-1.0.jar\"\nmode = \"jar\"\njvm-flags = [\"-Xss1m\"]\n",
    )
    .unwrap();
    assert_eq!(
        summary(&packaged),
        [
            (
                "dependencies".to_string(),
                s(&["target/lib/{dep.jar} -> /app/lib"])
            ),
            ("jar".to_string(), s(&["target/{app-1.0.jar} -> /app"])),
        ]
    );
    assert_eq!(
        entrypoint(&packaged),
        s(&["java", "-Xss1m", "-jar", "/app/app-1.0.jar"])
    );

    // A Spring Boot jar in jar mode: one layer, java -jar.
    boot_jar(tmp.path(), "BOOT-INF/classes/com/x/App.class");
    let boot = plan(tmp.path(), "jar = \"target/app.jar\"\nmode = \"jar\"\n").unwrap();
    assert_eq!(
        summary(&boot),
        [("jar".to_string(), s(&["target/{app.jar} -> /app"]))]
    );
    assert_eq!(entrypoint(&boot), s(&["java", "-jar", "/app/app.jar"]));

    // No Main-Class but main-class given: the jar goes on the class path.
    write_jar(tmp.path(), "x.jar", &[("Main.class", b"")]);
    let on_cp = plan(
        tmp.path(),
        "jar = \"x.jar\"\nmode = \"jar\"\nmain-class = \"Main\"\n",
    )
    .unwrap();
    assert_eq!(
        summary(&on_cp),
        [("jar".to_string(), s(&["./{x.jar} -> /app"]))]
    );
    assert_eq!(
        entrypoint(&on_cp),
        s(&["java", "-cp", "/app/x.jar", "Main"])
    );
}

#[test]
fn jar_names_are_escaped_as_globs() {
    let tmp = tempfile::tempdir().unwrap();
    write_jar(
        tmp.path(),
        "app[1].jar",
        &[("META-INF/MANIFEST.MF", b"Main-Class: M\n")],
    );
    let plan = plan(tmp.path(), "jar = \"app[1].jar\"\nmode = \"jar\"\n").unwrap();
    let FileSet::Select { include, .. } = &layers(&plan)[0].sources[0] else {
        panic!()
    };
    assert_eq!(include, &[globset::escape("app[1].jar")]);
    assert_eq!(entrypoint(&plan), s(&["java", "-jar", "/app/app[1].jar"]));
}

#[test]
fn missing_or_bad_jar_is_located_at_the_jar_value() {
    let tmp = tempfile::tempdir().unwrap();
    let err = plan(
        tmp.path(),
        "mode = \"exploded\"\njar = \"target/nope.jar\"\n",
    )
    .unwrap_err();
    assert_eq!((err.location.line, err.location.col), (6, 7), "{err}");
    assert!(err.message.contains("cannot open"), "{err}");
    assert!(
        err.to_string().contains("hint: build the jar first"),
        "{err}"
    );

    std::fs::write(tmp.path().join("bad.jar"), b"not a zip").unwrap();
    let err = plan(tmp.path(), "jar = \"bad.jar\"\n").unwrap_err();
    assert_eq!((err.location.line, err.location.col), (5, 7), "{err}");
    assert!(err.message.contains("is not a jar"), "{err}");

    let err = plan(tmp.path(), "jar = \"../x.jar\"\n").unwrap_err();
    assert_eq!(err.location.line, 5);
    assert!(err.message.contains("inside the spec's directory"), "{err}");
}

#[test]
fn jar_without_main_class_is_an_error_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    write_jar(
        tmp.path(),
        "lib.jar",
        &[
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n"),
            ("a/B.class", b""),
        ],
    );
    for mode in ["exploded", "jar"] {
        let err = plan(
            tmp.path(),
            &format!("jar = \"lib.jar\"\nmode = \"{mode}\"\n"),
        )
        .unwrap_err();
        assert_eq!((err.location.line, err.location.col), (5, 7), "{err}");
        assert!(err.message.contains("no `Main-Class`"), "{err}");
        assert!(err.to_string().contains("hint: set `main-class`"), "{err}");
    }
}

#[test]
fn missing_class_path_dependency_is_located() {
    let tmp = tempfile::tempdir().unwrap();
    write_jar(
        tmp.path(),
        "app.jar",
        &[(
            "META-INF/MANIFEST.MF",
            b"Main-Class: M\nClass-Path: lib/gone.jar\n",
        )],
    );
    let err = plan(tmp.path(), "jar = \"app.jar\"\n").unwrap_err();
    assert_eq!(err.location.line, 5);
    assert!(err.message.contains("\"lib/gone.jar\""), "{err}");

    write_jar(
        tmp.path(),
        "app.jar",
        &[(
            "META-INF/MANIFEST.MF",
            b"Main-Class: M\nClass-Path: ../outside.jar\n",
        )],
    );
    let err = plan(tmp.path(), "jar = \"app.jar\"\n").unwrap_err();
    assert!(err.message.contains("not a path inside"), "{err}");
}

#[test]
fn entries_escaping_the_jar_root_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    write_jar(
        tmp.path(),
        "evil.jar",
        &[
            ("META-INF/MANIFEST.MF", b"Main-Class: M\n"),
            ("../../etc/passwd", b"x"),
        ],
    );
    let err = plan(tmp.path(), "jar = \"evil.jar\"\n").unwrap_err();
    assert_eq!(err.location.line, 5);
    assert!(err.message.contains("outside the jar's root"), "{err}");
}
