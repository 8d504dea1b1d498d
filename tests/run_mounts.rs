//! `RUN --mount` through the CLI on a busybox base (`FROM scratch` + `ADD rootfs.tar /`):
//! bind (context, stage; read-only, `rw` writes dropped), tmpfs, cache (kept across builds,
//! `lade prune`), secret (`--secret`, never in the store) and ssh (`--ssh`, a test
//! `ssh-agent`). Each checks what the step saw (files it wrote) and that the layer holds
//! nothing of the mount. Needs root, crun or runc, busybox-static and openssh-client, which
//! `cargo xtask test` provides.

mod common;

use common::{files_containing, lade, ok, output, tar_member};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const APPLETS: &[&str] = &[
    "cat", "echo", "test", "stat", "wc", "touch", "mkdir", "ls", "df", "rm", "sed",
];

/// The busybox base as an OCI layout under `tmp`; returns its `FROM` reference.
fn busybox_base(tmp: &Path) -> String {
    let root = tmp.join("base-rootfs");
    common::busybox_rootfs(&root);
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    fs::create_dir_all(root.join("tmp")).unwrap();
    common::layout_from_rootfs_dir(&root, tmp, &[])
}

struct Fx {
    tmp: tempfile::TempDir,
    base: String,
}

impl Fx {
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let base = busybox_base(tmp.path());
        Fx { tmp, base }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes the context `ctx` (Dockerfile with `{BASE}` replaced, and files).
    fn context(&self, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path("ctx");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("Dockerfile"),
            dockerfile.replace("{BASE}", &self.base),
        )
        .unwrap();
        for (p, text) in files {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        dir
    }

    /// `lade build` of `ctx` into `img.tar` (store `cache`): (success, stderr).
    fn build(&self, extra: &[&str]) -> (bool, String) {
        self.build_logged(extra, "warn")
    }

    /// [`Fx::build`] with `LADE_LOG=level`.
    fn build_logged(&self, extra: &[&str], level: &str) -> (bool, String) {
        let o = lade(&self.path("cache"))
            .env("LADE_LOG", level)
            .args(["build", "--progress", "plain", "--output"])
            .arg(format!("type=oci,dest={}", self.path("img.tar").display()))
            .args(extra)
            .arg(self.path("ctx"))
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    #[track_caller]
    fn build_ok(&self, extra: &[&str]) -> String {
        let (success, log) = self.build(extra);
        assert!(success, "lade build failed:\n{log}");
        log
    }

    /// The layer digests of `img.tar`, bottom first.
    fn layers(&self) -> Vec<String> {
        let archive = self.path("img.tar");
        common::archive_layers(&archive)
    }

    /// The member names of layer `i` (0 = the base), sorted, without trailing `/`.
    fn names(&self, i: usize) -> Vec<String> {
        let layers = self.layers();
        let mut v: Vec<String> = common::layer_listing(&self.path("img.tar"), &layers[i], &[])
            .lines()
            .map(|l| l.trim_end_matches('/').to_string())
            .collect();
        v.sort();
        v
    }

    /// The content of `member` in layer `i`.
    fn file(&self, i: usize, member: &str) -> String {
        let layers = self.layers();
        let blob = self.path("layer.blob");
        fs::write(
            &blob,
            tar_member(
                &self.path("img.tar"),
                &format!("blobs/sha256/{}", layers[i].trim_start_matches("sha256:")),
            ),
        )
        .unwrap();
        ok(output(
            Command::new("tar").arg("-xOf").arg(&blob).arg(member),
        ))
    }
}

const BIND: &str = "FROM {BASE} AS build
RUN mkdir /out && echo built > /out/artifact
FROM {BASE}
RUN --mount=target=/ctx cat /ctx/input.txt > /from-ctx; \\
    (touch /ctx/x 2>/dev/null && echo writable || echo read-only) > /ctx-ro; \\
    (test -e /ctx/ignored.env && echo visible || echo ignored) > /ctx-ignore
RUN --mount=from=build,source=/out,target=/mnt/deep/b,rw \\
    echo scribble > /mnt/deep/b/artifact && cat /mnt/deep/b/artifact > /rw-saw
RUN --mount=type=bind,from=build,source=out/artifact,target=/art cat /art > /from-stage
RUN --mount=from=build,source=/out,target=/mnt/deep/b cat /mnt/deep/b/artifact > /after-rw
";

#[test]
fn bind_from_the_context_and_a_stage_leaves_only_what_the_step_wrote() {
    let fx = Fx::new();
    fx.context(
        BIND,
        &[
            ("input.txt", "context input\n"),
            ("ignored.env", "TOKEN=1\n"),
            (".dockerignore", "*.env\n"),
        ],
    );
    fx.build_ok(&[]);
    // base, the build stage's RUN is not in this image; 4 RUN layers.
    assert_eq!(fx.layers().len(), 5);
    assert_eq!(fx.names(1), ["ctx-ignore", "ctx-ro", "from-ctx"]);
    assert_eq!(fx.file(1, "from-ctx"), "context input\n");
    assert_eq!(fx.file(1, "ctx-ro"), "read-only\n");
    assert_eq!(fx.file(1, "ctx-ignore"), "ignored\n");
    // The rw bind's mount point and its created parents are gone, and so are its writes.
    assert_eq!(fx.names(2), ["rw-saw"]);
    assert_eq!(fx.file(2, "rw-saw"), "scribble\n");
    assert_eq!(fx.names(3), ["from-stage"]);
    assert_eq!(fx.file(3, "from-stage"), "built\n");
    assert_eq!(fx.file(4, "after-rw"), "built\n");

    // Unchanged: every RUN is cached. A changed bound file re-runs the RUN that binds it.
    let log = fx.build_ok(&[]);
    assert!(!log.lines().any(|l| l.ends_with(": writing")), "{log}");
    fs::write(fx.path("ctx/input.txt"), "changed\n").unwrap();
    let log = fx.build_ok(&[]);
    // The build stage is cached; the RUN that binds the file re-runs, and (the keys chain)
    // the RUNs above it, as after a changed COPY.
    let wrote: Vec<&str> = log.lines().filter(|l| l.ends_with(": writing")).collect();
    assert_eq!(wrote.len(), 4, "{log}");
    assert!(wrote[0].contains("/ctx/input.txt"), "{log}");
    assert_eq!(fx.file(1, "from-ctx"), "changed\n");
    // A changed ignored file changes nothing.
    fs::write(fx.path("ctx/ignored.env"), "TOKEN=2\n").unwrap();
    let log = fx.build_ok(&[]);
    assert!(!log.lines().any(|l| l.ends_with(": writing")), "{log}");
}

#[test]
fn tmpfs_leaves_nothing_and_has_its_size() {
    let fx = Fx::new();
    fx.context(
        "FROM {BASE}
RUN --mount=type=tmpfs,target=/scratch/t,size=2m \\
    echo x > /scratch/t/f && df -k /scratch/t | sed -n 2p | (read fs size rest; echo $size) > /size
RUN --mount=type=tmpfs,target=/tmp echo y > /tmp/y && ls -A /tmp > /tmp-seen
",
        &[],
    );
    fx.build_ok(&[]);
    assert_eq!(fx.names(1), ["size"]);
    assert_eq!(fx.file(1, "size"), "2048\n");
    // Over an existing directory: nothing of the tmpfs, and /tmp itself unchanged.
    assert_eq!(fx.names(2), ["tmp-seen"]);
    assert_eq!(fx.file(2, "tmp-seen"), "y\n");
}

const COUNTER: &str = "FROM {BASE}
ARG ROUND
RUN --mount=type=cache,target=/var/cache/c,id=counter,sharing=locked \\
    n=$(cat /var/cache/c/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /var/cache/c/n; \\
    echo \"$ROUND $n\" > /seen
";

#[test]
fn a_cache_mount_is_found_filled_by_the_next_build_and_never_in_a_layer() {
    let fx = Fx::new();
    fx.context(COUNTER, &[]);
    fx.build_ok(&["--build-arg", "ROUND=a"]);
    assert_eq!(fx.names(1), ["seen"]);
    assert_eq!(fx.file(1, "seen"), "a 1\n");
    fx.build_ok(&["--build-arg", "ROUND=b"]);
    assert_eq!(fx.file(1, "seen"), "b 2\n");
    assert_eq!(fx.names(1), ["seen"], "no /var/cache in the layer");
    // The same inputs again: cached, whatever the cache holds now.
    let log = fx.build_ok(&["--build-arg", "ROUND=b"]);
    assert!(!log.lines().any(|l| l.ends_with(": writing")), "{log}");

    let out = lade(&fx.path("cache"))
        .arg("prune")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(String::from_utf8_lossy(&out), "removed 1 cache mount(s)\n");
    fx.build_ok(&["--build-arg", "ROUND=c"]);
    assert_eq!(fx.file(1, "seen"), "c 1\n", "prune emptied the cache");
}

#[test]
fn one_cache_twice_in_a_step_is_one_directory_unless_private() {
    let fx = Fx::new();
    fx.context(
        "FROM {BASE}
RUN --mount=type=cache,target=/a,id=c,sharing=locked --mount=type=cache,target=/b,id=c \\
    echo 1 > /a/x && (test -e /b/x && echo same || echo separate) > /locked
RUN --mount=type=cache,target=/a,id=p,sharing=private \\
    --mount=type=cache,target=/b,id=p,sharing=private,uid=1000,mode=0700 \\
    echo 1 > /a/x && (test -e /b/x && echo same || echo separate) > /private && \\
    stat -c '%a %u' /b > /private-owner
",
        &[],
    );
    fx.build_ok(&[]);
    assert_eq!(fx.file(1, "locked"), "same\n");
    assert_eq!(fx.file(2, "private"), "separate\n");
    // The second private instance was made for this step, with its mode and owner.
    assert_eq!(fx.file(2, "private-owner"), "700 1000\n");
    assert_eq!(fx.names(1), ["locked"]);
}

#[test]
fn a_cache_from_a_stage_starts_with_its_files_and_keeps_what_steps_add() {
    let fx = Fx::new();
    fx.context(
        "FROM {BASE} AS seed
RUN mkdir /s && echo 41 > /s/n
FROM {BASE}
ARG ROUND
RUN --mount=type=cache,target=/c,from=seed,source=/s \\
    n=$(cat /c/n); echo $((n+1)) > /c/n; cat /c/n > /seen
",
        &[],
    );
    fx.build_ok(&["--build-arg", "ROUND=1"]);
    assert_eq!(fx.file(1, "seen"), "42\n");
    // The RUN runs again (another ARG) over the same seed: the cache it left.
    fx.build_ok(&["--build-arg", "ROUND=2"]);
    assert_eq!(fx.file(1, "seen"), "43\n");
    assert_eq!(fx.names(1), ["seen"]);
}

const SECRET_VALUE: &str = "s3cr3t-Value-7f9e2d";

#[test]
fn a_secret_is_readable_in_the_step_and_nowhere_in_the_store() {
    let fx = Fx::new();
    // The steps write the secret with a dash after each character: the layer shows what they
    // read without holding the value itself.
    fx.context(
        "FROM {BASE}
RUN --mount=type=secret,id=tok sed 's/./&-/g' /run/secrets/tok > /seen && \\
    stat -c '%a %u:%g' /run/secrets/tok > /st
RUN --mount=type=secret,id=tok,env=TOKEN,target=/s/t,mode=0440,uid=1000,gid=50 \\
    echo \"$TOKEN\" | sed 's/./&-/g' > /seen-env && stat -c '%a %u:%g' /s/t > /st2
RUN --mount=type=secret,id=absent echo optional > /opt
",
        &[],
    );
    let secret_file = fx.path("token.txt");
    fs::write(&secret_file, SECRET_VALUE).unwrap();
    let meta = fx.path("meta.json");
    let (success, log) = fx.build_logged(
        &[
            "--secret",
            &format!("id=tok,src={}", secret_file.display()),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
        "trace",
    );
    assert!(success, "{log}");
    let dashed: String = SECRET_VALUE.chars().map(|c| format!("{c}-")).collect();
    assert_eq!(fx.names(1), ["seen", "st"]);
    assert_eq!(fx.file(1, "seen"), dashed);
    assert_eq!(fx.file(1, "st"), "400 0:0\n");
    assert_eq!(fx.names(2), ["seen-env", "st2"]);
    assert_eq!(fx.file(2, "seen-env"), format!("{dashed}\n"));
    assert_eq!(fx.file(2, "st2"), "440 1000:50\n");
    assert_eq!(
        fx.names(3),
        ["opt"],
        "an absent optional secret is no mount"
    );

    assert!(!log.contains(SECRET_VALUE), "{log}");
    assert_eq!(
        files_containing(&fx.path("cache"), SECRET_VALUE),
        Vec::<String>::new()
    );
    assert!(!fs::read_to_string(&meta).unwrap().contains(SECRET_VALUE));
    assert!(files_containing(&fx.path("img.tar"), SECRET_VALUE).is_empty());
    // The same secret id with another value: cached (only the id is in the key).
    fs::write(&secret_file, "another value").unwrap();
    let log = fx.build_ok(&["--secret", &format!("id=tok,src={}", secret_file.display())]);
    assert!(!log.lines().any(|l| l.ends_with(": writing")), "{log}");

    // A required secret that was not given: the RUN's line, before it runs.
    fx.context(
        "FROM {BASE}
RUN --mount=type=secret,id=tok,required echo never > /x
",
        &[],
    );
    let (success, log) = fx.build(&[]);
    assert!(!success);
    assert!(
        log.contains("Dockerfile:2:1: secret tok is required but was not given"),
        "{log}"
    );
}

#[test]
fn an_ssh_mount_reaches_the_agent_of_the_build() {
    let fx = Fx::new();
    // ssh-add and the libraries it loads, for the busybox image.
    let root = fx.path("ctx/sshroot");
    let libs = ok(output(Command::new("ldd").arg("/usr/bin/ssh-add")));
    let mut files = vec!["/usr/bin/ssh-add".to_string()];
    files.extend(
        libs.split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_string),
    );
    for f in &files {
        let dest = root.join(f.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(f, &dest).unwrap();
    }
    fx.context(
        "FROM {BASE}
COPY sshroot/ /
RUN --mount=type=ssh /usr/bin/ssh-add -l > /keys && echo $SSH_AUTH_SOCK > /sock
RUN --mount=type=ssh,id=other,target=/agent.sock SSH_AUTH_SOCK=/agent.sock /usr/bin/ssh-add -l > /keys2
",
        &[],
    );
    let key = fx.path("id_ed25519");
    ok(output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "lade-test-key", "-f"])
            .arg(&key),
    ));
    let sock = fx.path("agent.sock");
    let agent = ok(output(Command::new("ssh-agent").arg("-a").arg(&sock)));
    let pid: String = agent
        .split("SSH_AGENT_PID=")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(&self.0).status();
        }
    }
    let _agent = Kill(pid);
    ok(output(
        Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &sock)
            .arg(&key),
    ));
    let listed = ok(output(
        Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &sock)
            .arg("-l"),
    ));
    assert!(listed.contains("lade-test-key"), "{listed}");
    // Without --ssh the step has no agent.
    let (success, log) = fx.build(&[]);
    assert!(
        !success && log.contains("Dockerfile:3") && log.contains("authentication agent"),
        "{log}"
    );
    let mut cmd = lade(&fx.path("cache"));
    cmd.env("SSH_AUTH_SOCK", &sock);
    let o = cmd
        .args(["build", "--progress", "plain", "--ssh", "default", "--ssh"])
        .arg(format!("other={}", sock.display()))
        .arg("--output")
        .arg(format!("type=oci,dest={}", fx.path("img.tar").display()))
        .arg(fx.path("ctx"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fx.names(2), ["keys", "sock"]);
    assert_eq!(fx.file(2, "keys"), listed);
    assert_eq!(fx.file(2, "sock"), "/run/buildkit/ssh_agent.0\n");
    assert_eq!(fx.names(3), ["keys2"]);
    assert_eq!(fx.file(3, "keys2"), listed);
}

/// The cron seed with its apt downloads in a cache mount (as users write it: apt's
/// docker-clean hook removed, so the .debs stay): built twice, the second build (with
/// `--no-cache`, so the RUN runs again) downloads no .deb. Uses the Debian mirror of the
/// machine's apt sources for `apt-get update`.
#[test]
fn apt_cache_mount_makes_the_second_cron_build_download_no_deb_uses_the_debian_mirror() {
    let debian = common::require_debian();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}\n\
             RUN rm -f /etc/apt/apt.conf.d/docker-clean\n\
             RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n    \
             apt-get update && apt-get install -y --no-install-recommends cron\n",
            debian.minbase
        ),
    )
    .unwrap();
    let build = |extra: &[&str]| -> String {
        let o = lade(&tmp.path().join("cache"))
            .args(["build", "--progress", "plain", "--output"])
            .arg(format!(
                "type=oci,dest={}",
                tmp.path().join("img.tar").display()
            ))
            .args(extra)
            .arg(&ctx)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "lade build failed:\n{log}");
        log
    };
    let first = build(&[]);
    assert!(first.contains("Unpacking cron"), "{first}");
    assert!(
        !first.contains("Need to get 0 B/"),
        "the first build downloads:\n{first}"
    );
    let debs = ok(output(
        Command::new("find")
            .arg(tmp.path().join("cache/run/cache"))
            .args(["-name", "cron_*.deb"]),
    ));
    assert_eq!(
        debs.lines().count(),
        1,
        "the .deb is in the cache mount: {debs}"
    );

    let second = build(&["--no-cache"]);
    assert!(second.contains("Unpacking cron"), "{second}");
    // apt's own words when every archive is already in /var/cache/apt/archives.
    assert!(second.contains("Need to get 0 B/"), "{second}");
    let fetched: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("Get:") && l.contains(" amd64 ") && !l.contains("Packages"))
        .collect();
    assert!(fetched.is_empty(), "downloaded again: {fetched:?}");

    // The RUN's layer holds cron, not the cache.
    let archive = tmp.path().join("img.tar");
    let layers = common::archive_layers(&archive);
    let listing = common::layer_listing(&archive, layers.last().unwrap(), &[]);
    assert!(listing.lines().any(|l| l == "usr/sbin/cron"), "{listing}");
    assert!(!listing.lines().any(|l| l.ends_with(".deb")), "{listing}");
    assert!(!listing.contains("var/cache/apt/archives/"), "{listing}");
}
