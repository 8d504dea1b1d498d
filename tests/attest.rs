//! `lade build --sbom --provenance`: an SPDX 2.3 SBOM and an in-toto SLSA v1 provenance per
//! image, attached as BuildKit attaches them (an attestation manifest in the image index),
//! valid against their schemas, the same bytes on every build, and pushed with the image.

mod common;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const SPDX: &str = "https://spdx.dev/Document";
const SLSA: &str = "https://slsa.dev/provenance/v1";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A jar holding only Maven's `pom.properties` of `group:artifact:version`.
fn jar(group: &str, artifact: &str, version: &str) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(
        format!("META-INF/maven/{group}/{artifact}/pom.properties"),
        opts,
    )
    .unwrap();
    write!(
        zip,
        "groupId={group}\nartifactId={artifact}\nversion={version}\n"
    )
    .unwrap();
    zip.finish().unwrap();
    buf.into_inner()
}

/// A context whose files name a Cargo, a Python and a Maven package.
fn context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    let files: &[(&str, Vec<u8>)] = &[
        (
            "Dockerfile",
            b"FROM scratch\nARG VERSION=0\nCOPY app/ /app/\nCOPY lib/ /usr/lib/python3/dist-packages/\n".to_vec(),
        ),
        ("app/hello.txt", b"hello\n".to_vec()),
        (
            "app/Cargo.lock",
            b"version = 3\n\n[[package]]\nname = \"itoa\"\nversion = \"1.0.11\"\n".to_vec(),
        ),
        ("app/lib/json.jar", jar("org.example", "json", "2.1")),
        (
            "lib/requests-2.31.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n\nLong description.\n".to_vec(),
        ),
    ];
    for (name, data) in files {
        let p = ctx.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    ctx
}

fn build(ctx: &Path, t: &Path, cache: &str, out: &str, extra: &[&str]) -> std::process::Output {
    common::lade(&t.join(cache))
        .args([
            "build",
            "--progress",
            "quiet",
            "--sbom",
            "--provenance",
            "-o",
        ])
        .arg(format!("type=oci,dest={}", t.join(out).display()))
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap()
}

#[test]
fn sbom_and_provenance_are_valid_attached_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = context(t);
    let args = [
        "-t",
        "example.test/app:1",
        "--build-arg",
        "VERSION=7",
        "--build-arg",
        "TOKEN=hunter2",
        "--secret",
        "id=TOKEN,env=TOKEN",
    ];
    let o = build(&ctx, t, "cache1", "one.tar", &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = common::attached(&t.join("one.tar"));

    // BuildKit's layout: the image, then its attestation manifest for platform unknown/unknown
    // pointing at the image manifest.
    let manifests = a.index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{}", a.index);
    let image_digest = manifests[0]["digest"].as_str().unwrap();
    assert_eq!(
        a.descriptor["annotations"]["vnd.docker.reference.digest"],
        image_digest
    );
    assert_eq!(a.descriptor["platform"]["os"], "unknown");
    assert_eq!(a.descriptor["platform"]["architecture"], "unknown");
    common::validate_with_schemas(&a.index, "index");
    common::validate_with_schemas(
        &serde_json::from_slice(&a.manifest_bytes).unwrap(),
        "manifest",
    );
    let types: Vec<&str> = a.statements.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, [SPDX, SLSA]);

    let sbom = a.statement(SPDX);
    common::validate_attestation(&sbom, "in-toto-statement-v1.schema.json");
    assert_eq!(sbom["predicateType"], SPDX);
    assert_eq!(
        sbom["subject"][0]["digest"]["sha256"],
        image_digest.trim_start_matches("sha256:")
    );
    let doc = &sbom["predicate"];
    common::validate_attestation(doc, "spdx-2.3-document.schema.json");
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    let purls: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:cargo/itoa@1.0.11",
            "pkg:maven/org.example/json@2.1",
            "pkg:pypi/requests@2.31.0"
        ]
    );
    let files: Vec<(&str, &str)> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["fileName"].as_str().unwrap(),
                f["checksums"][1]["checksumValue"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        files.contains(&("./app/hello.txt", &sha256(b"hello\n"))),
        "{files:?}"
    );
    assert_eq!(files.len(), 4, "{files:?}");
    let hello = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == "./app/hello.txt")
        .unwrap();
    assert_eq!(
        hello["checksums"][0],
        serde_json::json!({"algorithm": "SHA1", "checksumValue": hex::encode(<sha1::Sha1 as sha1::Digest>::digest(b"hello\n"))})
    );

    let prov = a.statement(SLSA);
    common::validate_attestation(&prov, "in-toto-statement-v1.schema.json");
    common::validate_attestation(&prov["predicate"], "slsa-provenance-v1.schema.json");
    let ext = &prov["predicate"]["buildDefinition"]["externalParameters"];
    let dockerfile = fs::read(ctx.join("Dockerfile")).unwrap();
    assert_eq!(ext["dockerfile"]["digest"]["sha256"], sha256(&dockerfile));
    assert_eq!(
        ext["buildArgs"],
        serde_json::json!({"VERSION": "7"}),
        "{ext}"
    );
    assert!(ext["context"]["digest"]["sha256"].is_string(), "{ext}");
    assert_eq!(
        ext["platform"],
        lade::image::Platform::host().to_string().as_str()
    );
    let builder = &prov["predicate"]["runDetails"]["builder"];
    assert_eq!(builder["version"]["lade"], env!("CARGO_PKG_VERSION"));
    assert!(prov["predicate"]["runDetails"].get("metadata").is_none());
    assert!(!String::from_utf8_lossy(&a.statements[1].1).contains("hunter2"));

    // A second build from a fresh store: the same attestations, byte for byte.
    let o = build(&ctx, t, "cache2", "two.tar", &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = common::attached(&t.join("two.tar"));
    assert_eq!(a.manifest_bytes, b.manifest_bytes);
    assert_eq!(a.statements, b.statements);
    assert_eq!(
        fs::read(t.join("one.tar")).unwrap(),
        fs::read(t.join("two.tar")).unwrap()
    );

    // skopeo reads the index with the attestation manifest.
    let raw = common::ok(common::skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", t.join("one.tar").display()),
    ]));
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw, a.index);

    // A context file changes: the provenance's context digest does too.
    fs::write(ctx.join("app/hello.txt"), "changed\n").unwrap();
    let o = build(&ctx, t, "cache2", "three.tar", &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = common::attached(&t.join("three.tar")).statement(SLSA);
    assert_ne!(
        c["predicate"]["buildDefinition"]["externalParameters"]["context"],
        ext["context"]
    );
}

#[test]
fn source_date_epoch_dates_the_attestations() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = context(t);
    let o = common::lade(&t.join("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "build",
            "--progress",
            "quiet",
            "--sbom",
            "--provenance",
            "-o",
        ])
        .arg(format!(
            "type=oci-layout,dest={}",
            t.join("layout").display()
        ))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let top: Value =
        serde_json::from_slice(&fs::read(t.join("layout/index.json")).unwrap()).unwrap();
    let read = |d: &str| {
        fs::read(
            t.join("layout/blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&read(top["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let att: Value =
        serde_json::from_slice(&read(index["manifests"][1]["digest"].as_str().unwrap())).unwrap();
    let docs: Vec<Value> = att["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_slice(&read(l["digest"].as_str().unwrap())).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    // Without a name the subject is `_`, as BuildKit's.
    assert_eq!(docs[0]["subject"][0]["name"], "_");
    assert_eq!(
        docs[0]["predicate"]["creationInfo"]["created"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(
        docs[1]["predicate"]["runDetails"]["metadata"]["startedOn"],
        "2023-11-14T22:13:20Z"
    );
    common::validate_attestation(&docs[1]["predicate"], "slsa-provenance-v1.schema.json");
}

#[test]
fn a_debian_image_lists_its_dpkg_packages() {
    let _services = common::require_services();
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("note.txt"), "note\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nCOPY note.txt /etc/note.txt\n", debian.minbase),
    )
    .unwrap();
    let o = common::lade(&t.join("cache"))
        .args(["build", "--progress", "quiet", "--sbom", "-o"])
        .arg(format!("type=oci,dest={}", t.join("deb.tar").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = common::attached(&t.join("deb.tar"));
    let sbom = a.statement(SPDX);
    let doc = &sbom["predicate"];
    common::validate_attestation(doc, "spdx-2.3-document.schema.json");
    let debs: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .filter(|p| p.starts_with("pkg:deb/debian/"))
        .collect();
    for name in ["base-files", "dpkg", "libc6", "apt", "bash"] {
        assert!(
            debs.iter()
                .any(|p| p.starts_with(&format!("pkg:deb/debian/{name}@"))),
            "{name} missing from {debs:?}"
        );
    }
    // As many as dpkg's status file says are installed.
    let listed = common::ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umoci raw unpack --image {} {} >/dev/null && grep -c '^Status: install ok installed' {}/var/lib/dpkg/status",
                debian.minbase.trim_start_matches("oci:"),
                t.join("rootfs").display(),
                t.join("rootfs").display()
            ))
            .output()
            .unwrap(),
    );
    assert_eq!(debs.len(), listed.trim().parse::<usize>().unwrap());
    // Only the file this build placed is listed among the files.
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fileName"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["./etc/note.txt"]);
}

#[test]
fn pushed_images_carry_their_attestations() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = context(t);
    let image = format!("{}/lade-test/attest:{}", s.registry, std::process::id());
    let o = common::lade(&t.join("cache"))
        .args([
            "build",
            "--progress",
            "quiet",
            "--sbom",
            "--provenance",
            "--push",
            "-t",
        ])
        .arg(&image)
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same build to an archive: the registry holds exactly its attestation manifest.
    let o = build(&ctx, t, "cache", "local.tar", &["-t", &image]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let local = common::attached(&t.join("local.tar"));

    let raw = common::ok(common::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index, local.index);
    let name = image.rsplit_once(':').unwrap().0;
    let att = common::ok(common::skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!(
            "docker://{name}@{}",
            local.descriptor["digest"].as_str().unwrap()
        ),
    ]));
    assert_eq!(att.trim_end().as_bytes(), local.manifest_bytes.as_slice());
    // skopeo copies the whole index, attestations included.
    common::ok(common::skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:x", t.join("copied").display()),
    ]));
    let copied = t.join("copied/blobs/sha256");
    for (_, bytes) in &local.statements {
        assert_eq!(&fs::read(copied.join(sha256(bytes))).unwrap(), bytes);
    }
}

#[test]
fn alpine_apk_db_and_cargo_auditable_binaries_list_their_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ctx = t.join("ctx");
    fs::create_dir_all(ctx.join("root/lib/apk/db")).unwrap();
    fs::create_dir_all(ctx.join("root/usr/bin")).unwrap();
    fs::write(
        ctx.join("root/lib/apk/db/installed"),
        "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nT:the musl c library\n\n\
         P:busybox\nV:1.36.1-r5\nA:x86_64\nL:custom:unknown\no:busybox\nT:Size optimized toolbox\n",
    )
    .unwrap();
    // Binaries with the section `cargo auditable` writes (zlib-compressed JSON); `big` is
    // larger than what the scan keeps in memory (8 MiB): it is read from a temp file.
    let app = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true,"dependencies":[1]},{"name":"itoa","version":"1.0.11","source":"crates.io","kind":"runtime"}]}"#;
    let big = br#"{"packages":[{"name":"big","version":"0.1.0","source":"local","root":true},{"name":"ryu","version":"1.0.18","source":"crates.io"}]}"#;
    let pad = t.join("pad");
    fs::write(
        &pad,
        (0..9u32 << 20)
            .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for (name, json) in [("app", &app[..]), ("big", &big[..])] {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json).unwrap();
        let section = t.join(format!("{name}.dep-v0"));
        fs::write(&section, z.finish().unwrap()).unwrap();
        let mut objcopy = std::process::Command::new("objcopy");
        objcopy.arg(format!("--add-section=.dep-v0={}", section.display()));
        if name == "big" {
            objcopy.arg(format!("--add-section=.pad={}", pad.display()));
        }
        let o = objcopy
            .arg("/bin/true")
            .arg(ctx.join("root/usr/bin").join(name))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(fs::metadata(ctx.join("root/usr/bin/big")).unwrap().len() > 9 << 20);
    // An ELF without the section lists nothing.
    fs::copy("/bin/true", ctx.join("root/usr/bin/plain")).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY root/ /\n").unwrap();

    let o = build(&ctx, t, "cache", "alpine.tar", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = common::attached(&t.join("alpine.tar"));
    let doc = &a.statement(SPDX)["predicate"];
    common::validate_attestation(doc, "spdx-2.3-document.schema.json");
    let got: Vec<(&str, &str, &str)> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            Some((
                p["externalRefs"][0]["referenceLocator"].as_str()?,
                p["licenseDeclared"].as_str().unwrap(),
                p["sourceInfo"].as_str().unwrap(),
            ))
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64",
                "NOASSERTION",
                "listed in /lib/apk/db/installed"
            ),
            (
                "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
                "MIT",
                "listed in /lib/apk/db/installed"
            ),
            (
                "pkg:cargo/itoa@1.0.11",
                "NOASSERTION",
                "listed in /usr/bin/app"
            ),
            (
                "pkg:cargo/ryu@1.0.18",
                "NOASSERTION",
                "listed in /usr/bin/big"
            ),
        ]
    );
}
