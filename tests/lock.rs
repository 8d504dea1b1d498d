//! `lade.lock`: `lade lock` and `lade build --lock` pin every registry base per platform; a
//! build with the lock reads the pinned digests (retagging a base changes nothing), `--locked`
//! refuses a base the lock lacks, and a build on a floating tag says so in one warning line.

mod common;

use std::fs;
use std::path::Path;

/// Pushes a one-file image (`/base.txt` holding `content`) to `image`; returns its digest.
fn push_base(t: &Path, image: &str, content: &str) -> String {
    let ctx = t.join(format!("base-{}", content.len()));
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("base.txt"), content).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY base.txt /\n").unwrap();
    let digest = t.join("base.digest");
    common::lade(&t.join("cache-base"))
        .args(["build", "--progress", "quiet", "--push", "-t", image])
        .arg("--digest-file")
        .arg(&digest)
        .arg(&ctx)
        .assert()
        .success();
    fs::read_to_string(digest).unwrap()
}

/// The digest of building `ctx` into an OCI archive with a fresh store in `t/cache`+`n`, and
/// lade's stderr.
fn build(t: &Path, ctx: &Path, n: &str, extra: &[&str]) -> (String, String) {
    let digest = t.join("app.digest");
    let _ = fs::remove_file(&digest);
    let o = common::lade(&t.join(format!("cache{n}")))
        .args(["build", "--progress", "quiet", "-o"])
        .arg(format!("type=oci,dest={}", t.join("app.tar").display()))
        .arg("--digest-file")
        .arg(&digest)
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    (fs::read_to_string(digest).unwrap(), err)
}

fn lock_entries(ctx: &Path) -> Vec<(String, String, String)> {
    let lock: toml::Value = toml::from_str(&fs::read_to_string(ctx.join("lade.lock")).unwrap())
        .expect("lade.lock is TOML");
    assert_eq!(lock["version"].as_integer(), Some(1));
    lock["image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reference"].as_str().unwrap().to_string(),
                e["platform"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn host_platform() -> String {
    lade::image::Platform::host().to_string()
}

#[test]
fn a_lock_pins_the_bases_until_lade_lock_updates_it() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pid = std::process::id();
    let base = format!("{}/lade-test/lock-base:{pid}", s.registry);
    let extra = format!("{}/lade-test/lock-extra:{pid}", s.registry);
    let base1 = push_base(t, &base, "one\n");
    let extra1 = push_base(t, &extra, "extra\n");
    let ctx = t.join("app");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("app.txt"), "app\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY --from={extra} /base.txt /extra.txt\nCOPY app.txt /\n"),
    )
    .unwrap();

    let o = common::lade(&t.join("cache-lock"))
        .arg("lock")
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let platform = host_platform();
    let mut want = vec![
        (base.clone(), platform.clone(), base1.clone()),
        (extra.clone(), platform.clone(), extra1.clone()),
    ];
    want.sort();
    assert_eq!(lock_entries(&ctx), want);

    let (locked1, err) = build(t, &ctx, "1", &["--locked"]);
    assert!(!err.contains("warning"), "{err}");

    // The tag moves to other content: the locked build, from a fresh store, is unchanged.
    let base2 = push_base(t, &base, "two, other content\n");
    assert_ne!(base1, base2);
    let (locked2, _) = build(t, &ctx, "2", &["--locked"]);
    assert_eq!(locked1, locked2);
    // The provenance names the pinned digests, not the tag's new one.
    build(t, &ctx, "2", &["--locked", "--provenance"]);
    let prov = common::attached(&t.join("app.tar")).statement("https://slsa.dev/provenance/v1");
    let deps: Vec<(String, String)> = prov["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["uri"]
                    .as_str()
                    .unwrap()
                    .split('?')
                    .next()
                    .unwrap()
                    .to_string(),
                format!("sha256:{}", d["digest"]["sha256"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        deps,
        [
            (format!("pkg:docker/{base}"), base1.clone()),
            (format!("pkg:docker/{extra}"), extra1.clone())
        ]
    );

    // `lade lock` moves the pin; the next build reads the new base.
    common::lade(&t.join("cache-lock"))
        .arg("lock")
        .arg(&ctx)
        .assert()
        .success();
    let entries = lock_entries(&ctx);
    assert!(
        entries.contains(&(base.clone(), platform.clone(), base2)),
        "{entries:?}"
    );
    assert!(
        entries.contains(&(extra.clone(), platform, extra1)),
        "{entries:?}"
    );
    let (relocked, _) = build(t, &ctx, "3", &["--locked"]);
    assert_ne!(relocked, locked1);
}

#[test]
fn locked_refuses_an_unpinned_base_and_a_floating_tag_warns_once() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pid = std::process::id();
    let base = format!("{}/lade-test/lock-warn:{pid}", s.registry);
    push_base(t, &base, "base\n");
    let ctx = t.join("app");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base} AS one\nFROM {base}\nCOPY --from=one /base.txt /copy.txt\n"),
    )
    .unwrap();

    // No lock: one warning line naming the tag.
    let (_, err) = build(t, &ctx, "1", &[]);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(&format!("{base} may move")) && warnings[0].contains("`lade lock`"),
        "{err}"
    );

    // --locked without a lock names the file, the reference and the platform.
    let o = common::lade(&t.join("cache2"))
        .args(["build", "--progress", "quiet", "--locked", "-o"])
        .arg(format!("type=oci,dest={}", t.join("locked.tar").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!(
        "{} does not pin {base} for {} (--locked): run `lade lock`",
        ctx.join("lade.lock").display(),
        host_platform()
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!t.join("locked.tar").exists());

    // --lock writes the lock and builds with it: no warning.
    let (_, err) = build(t, &ctx, "3", &["--lock"]);
    assert!(!err.contains("WARN"), "{err}");
    assert_eq!(lock_entries(&ctx).len(), 1);
    // A lock without the new base: --locked names it.
    let other = format!("{}/lade-test/lock-other:{pid}", s.registry);
    push_base(t, &other, "other base\n");
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY --from={other} /base.txt /other.txt\n"),
    )
    .unwrap();
    let o = common::lade(&t.join("cache3"))
        .args(["build", "--progress", "quiet", "--locked", "-o"])
        .arg(format!("type=oci,dest={}", t.join("locked.tar").display()))
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("does not pin {other} for")), "{err}");
}

#[test]
fn lade_lock_pins_run_mount_images_without_building() {
    let s = common::require_services();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pid = std::process::id();
    let base = format!("{}/lade-test/lock-run-base:{pid}", s.registry);
    let tools = format!("{}/lade-test/lock-run-tools:{pid}", s.registry);
    let base1 = push_base(t, &base, "base\n");
    let tools1 = push_base(t, &tools, "tools\n");
    let ctx = t.join("app");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nRUN --mount=type=bind,from={tools},target=/tools cat /tools/base.txt\n"
        ),
    )
    .unwrap();
    common::lade(&t.join("cache"))
        .arg("lock")
        .arg(&ctx)
        .assert()
        .success();
    let platform = host_platform();
    let mut want = vec![(base, platform.clone(), base1), (tools, platform, tools1)];
    want.sort();
    assert_eq!(lock_entries(&ctx), want);
}
