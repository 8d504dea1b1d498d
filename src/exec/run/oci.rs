//! The OCI runtime bundle of one RUN: `config.json` (runtime-spec 1.0) and the files that are
//! bind-mounted over `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, all in the bundle
//! directory — never written into the root filesystem, so they cannot reach a layer.
//!
//! Defaults are docker's / runc's (`runc spec`, moby's `oci.DefaultSpec`): mount, pid, ipc,
//! uts and cgroup namespaces, a network namespace only for `RunNetwork::None`, docker's
//! default capability set, `noNewPrivileges` false, runc's masked and read-only paths, docker's
//! default seccomp filter (`seccomp.rs`).

use super::executor::ProcessSpec;
use crate::plan::RunNetwork;
use serde_json::{json, Value};
use std::path::Path;

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The hostname of every RUN, as BuildKit's.
pub const HOSTNAME: &str = "buildkitsandbox";

/// Paths the runtime mounts over; when one is missing from the lowers it is created before
/// the run and left out of the diff.
pub const MOUNT_DIRS: &[&str] = &["proc", "sys", "dev"];
pub const MOUNT_FILES: &[&str] = &["etc/hosts", "etc/resolv.conf", "etc/hostname"];

/// `config.json` for `spec` running in `rootfs`, with the `/etc` files at `bundle/<name>`.
pub fn config(spec: &ProcessSpec, rootfs: &Path, bundle: &Path) -> Value {
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if spec.network == RunNetwork::None {
        namespaces.push(json!({"type": "network"}));
    }
    let bind = |dest: &str, file: &str| {
        json!({
            "destination": dest,
            "type": "bind",
            "source": bundle.join(file),
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
        })
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        bind("/etc/resolv.conf", "resolv.conf"),
        bind("/etc/hosts", "hosts"),
        bind("/etc/hostname", "hostname"),
    ];
    // RUN mounts (and the step's files) after the standard ones, a parent before what is
    // mounted inside it whatever the order they were written in (BuildKit sorts them too).
    let first_user_mount = mounts.len();
    for (target, size) in &spec.tmpfs {
        // BuildKit's tmpfs mount options; the size only when given.
        let mut options = vec!["nosuid".to_string(), "nodev".into()];
        if let Some(s) = size {
            options.push(format!("size={s}"));
        }
        mounts.push(json!({
            "destination": target,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": options,
        }));
    }
    for m in &spec.mounts {
        let mut options = vec!["rbind"];
        if m.readonly {
            options.push("ro");
        }
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": options,
        }));
    }
    mounts[first_user_mount..].sort_by_key(|m| {
        m["destination"]
            .as_str()
            .map_or(0, |d| d.split('/').filter(|c| !c.is_empty()).count())
    });
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": spec.uid,
                "gid": spec.gid,
                "additionalGids": spec.additional_gids,
            },
            "args": spec.args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "resources": {"devices": device_rules()},
            "maskedPaths": MASKED,
            "readonlyPaths": READONLY,
        },
    });
    if let Some(filter) = super::seccomp::profile() {
        config["linux"]["seccomp"] = filter;
        // crun loads this instead of compiling the section at every start; runc ignores it.
        if let Some(bpf) = super::seccomp::compiled() {
            config["annotations"] = json!({ super::seccomp::BPF_ANNOTATION: bpf });
        }
    }
    if spec.insecure {
        super::security::make_insecure(&mut config);
    }
    config
}

/// Adapts `config` to a runtime started inside a user namespace (rootless builds), as
/// `runc spec --rootless` does: sysfs cannot be mounted there unless the step has a network
/// namespace of its own (`--network none`), so otherwise the host's `/sys` is bind-mounted
/// read-only instead (the step shares the host's network anyway); the device
/// cgroup cannot be written (the runtime's rootless cgroup handling skips it), and device
/// nodes cannot be created or opened beyond what the runtime binds anyway.
pub fn for_user_namespace(config: &mut Value) {
    let own_network = config["linux"]["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "network"));
    if own_network {
        // The step's network namespace belongs to the user namespace: sysfs can be mounted,
        // and shows its own interfaces, not the host's.
        return;
    }
    if let Some(mounts) = config["mounts"].as_array_mut() {
        for m in mounts.iter_mut() {
            if m["type"] == "sysfs" {
                *m = json!({"destination": "/sys", "type": "bind", "source": "/sys",
                            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            }
        }
    }
}

/// Docker's device cgroup: nothing but the standard nodes of `/dev` (a device node that a
/// layer carries cannot be opened), mknod of any.
fn device_rules() -> Value {
    let allow = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut v = json!({"allow": true, "type": kind, "access": access});
        if let Some(m) = major {
            v["major"] = json!(m);
        }
        if let Some(m) = minor {
            v["minor"] = json!(m);
        }
        v
    };
    json!([
        {"allow": false, "access": "rwm"},
        allow("c", None, None, "m"),
        allow("b", None, None, "m"),
        allow("c", Some(1), Some(3), "rwm"),
        allow("c", Some(1), Some(8), "rwm"),
        allow("c", Some(1), Some(7), "rwm"),
        allow("c", Some(5), Some(0), "rwm"),
        allow("c", Some(1), Some(5), "rwm"),
        allow("c", Some(1), Some(9), "rwm"),
        allow("c", Some(5), Some(1), "rwm"),
        allow("c", Some(136), None, "rwm"),
        allow("c", Some(5), Some(2), "rwm"),
    ])
}

/// The host's resolver configuration, as BuildKit passes it: systemd-resolved's stub
/// (`127.0.0.53`) cannot be reached from another network namespace, so its upstream file is
/// used instead when it exists.
pub fn resolv_conf() -> Vec<u8> {
    let host = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    if String::from_utf8_lossy(&host).contains("127.0.0.53") {
        if let Ok(up) = std::fs::read("/run/systemd/resolve/resolv.conf") {
            return up;
        }
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::run::executor::BindMount;

    #[test]
    fn config_json_for_a_network_none_step() {
        let spec = ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec![
                "PATH=/usr/bin:/bin".into(),
                "HOSTNAME=buildkitsandbox".into(),
            ],
            cwd: "/work".into(),
            uid: 1000,
            gid: 1000,
            additional_gids: vec![10],
            hostname: HOSTNAME.into(),
            network: RunNetwork::None,
            mounts: vec![BindMount {
                source: "/host/src".into(),
                destination: "/src".into(),
                readonly: true,
            }],
            tmpfs: vec![("/tmp/t".into(), Some(1 << 20))],
            extra_hosts: vec![],
            insecure: false,
        };
        let mut v = config(&spec, Path::new("/store/run/snap/merged"), Path::new("/b"));
        // The filter has its own test (`seccomp.rs`); the snapshot shows the rest.
        let filter = v["linux"].as_object_mut().unwrap().remove("seccomp");
        assert_eq!(filter, super::super::seccomp::profile());
        let annotations = v.as_object_mut().unwrap().remove("annotations");
        assert_eq!(
            annotations
                .as_ref()
                .map(|a| a[super::super::seccomp::BPF_ANNOTATION].clone()),
            super::super::seccomp::compiled().map(Value::from)
        );
        insta::assert_json_snapshot!(v);
    }

    /// `true` as root in /, on the default network, with no mounts.
    fn true_as_root() -> ProcessSpec {
        ProcessSpec {
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: HOSTNAME.into(),
            network: RunNetwork::Default,
            mounts: vec![],
            tmpfs: vec![],
            extra_hosts: vec![],
            insecure: false,
        }
    }

    #[test]
    fn in_a_user_namespace_sys_is_a_read_only_bind_of_the_hosts() {
        let spec = true_as_root();
        let mut v = config(&spec, Path::new("/r"), Path::new("/b"));
        let before = v["mounts"].as_array().unwrap().len();
        for_user_namespace(&mut v);
        let mounts = v["mounts"].as_array().unwrap();
        assert_eq!(mounts.len(), before);
        assert!(mounts.iter().all(|m| m["type"] != "sysfs"));
        let sys: Vec<&Value> = mounts
            .iter()
            .filter(|m| m["destination"] == "/sys")
            .collect();
        assert_eq!(
            sys,
            [
                &json!({"destination": "/sys", "type": "bind", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            ]
        );
        // With a network namespace of its own the step mounts sysfs as root does.
        let none = ProcessSpec {
            network: RunNetwork::None,
            ..spec
        };
        let mut v = config(&none, Path::new("/r"), Path::new("/b"));
        let before = v.clone();
        for_user_namespace(&mut v);
        assert_eq!(v, before);
    }

    #[test]
    fn host_network_shares_the_namespace() {
        let spec = true_as_root();
        let v = config(&spec, Path::new("/r"), Path::new("/b"));
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup"]);
    }
}
