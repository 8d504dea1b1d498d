//! `RUN --security=insecure`: BuildKit's insecure mode (its `WithInsecureSpec` plus writable
//! sysfs and cgroupfs), the `docker run --privileged` of a build step. Only with the
//! `security.insecure` entitlement (`lade build --allow security.insecure`), checked by exec
//! before the stage starts.
//!
//! Compared with the sandbox's config: every capability lade itself holds (not a fixed list: a
//! capability the kernel or lade's parent withholds cannot be granted) in all five sets, no
//! masked or read-only paths (so `/proc/sys` is writable), `/sys` and `/sys/fs/cgroup` mounted
//! read-write, every device allowed by the device cgroup, and the nodes BuildKit adds (`kmsg`,
//! `fuse`, `cuse`, `kvm`, `net/tun`, `loop-control`, `loop0`…`loop7`; none in a user
//! namespace), and no seccomp filter. lade applies no AppArmor/SELinux label in either mode, so
//! there is nothing of those to drop.

use serde_json::{json, Value};

/// Capability names by bit number (`linux/capability.h`).
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The names of the capabilities in the `CapEff:` mask of a `/proc/PID/status` text, by bit
/// (bits without a known name are left out: a runtime would refuse them).
pub fn effective_caps(status: &str) -> Vec<&'static str> {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Turns the sandbox `config` (as [`super::oci::config`] makes it) into the insecure one.
pub fn make_insecure(config: &mut Value) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    make_insecure_with(config, &effective_caps(&status));
}

fn make_insecure_with(config: &mut Value, caps: &[&str]) {
    config["process"]["capabilities"] = json!({
        "bounding": caps,
        "effective": caps,
        "permitted": caps,
        "inheritable": caps,
        "ambient": caps,
    });
    // Unconfined, as docker's --privileged.
    if let Some(a) = config["annotations"].as_object_mut() {
        a.remove(super::seccomp::BPF_ANNOTATION);
    }
    let linux = &mut config["linux"];
    if let Some(l) = linux.as_object_mut() {
        l.remove("seccomp");
    }
    linux["maskedPaths"] = json!([]);
    linux["readonlyPaths"] = json!([]);
    linux["resources"]["devices"] = json!([
        {"allow": true, "type": "c", "access": "rwm"},
        {"allow": true, "type": "b", "access": "rwm"},
    ]);
    let device = |path: String, kind: &str, major: u32, minor: u32| {
        json!({"path": path, "type": kind, "major": major, "minor": minor,
               "fileMode": 0o666, "uid": 0, "gid": 0})
    };
    let mut devices = vec![
        device("/dev/kmsg".into(), "c", 1, 11),
        device("/dev/cuse".into(), "c", 10, 203),
        device("/dev/fuse".into(), "c", 10, 229),
        device("/dev/kvm".into(), "c", 10, 232),
        device("/dev/net/tun".into(), "c", 10, 200),
        device("/dev/loop-control".into(), "c", 10, 237),
    ];
    devices.extend((0..8).map(|i| device(format!("/dev/loop{i}"), "b", 7, i)));
    // In a user namespace no node can be made (runtimes bind-mount the host's instead, which
    // may not exist): BuildKit adds none there either.
    let in_userns = linux["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "user"));
    if !in_userns {
        linux["devices"] = Value::Array(devices);
    }
    if let Some(mounts) = config["mounts"].as_array_mut() {
        for m in mounts {
            if matches!(m["type"].as_str(), Some("sysfs" | "cgroup")) {
                if let Some(options) = m["options"].as_array_mut() {
                    for o in options.iter_mut() {
                        if o == "ro" {
                            *o = json!("rw");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_come_from_the_effective_mask() {
        // This machine's mask: everything up to bit 40 but CAP_SYS_RESOURCE (24).
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let caps = effective_caps(status);
        assert_eq!(caps.len(), 40);
        assert!(caps.contains(&"CAP_SYS_ADMIN") && caps.contains(&"CAP_CHECKPOINT_RESTORE"));
        assert!(!caps.contains(&"CAP_SYS_RESOURCE"));
        assert_eq!(
            effective_caps("CapEff:\t0000000000200001\n"),
            ["CAP_CHOWN", "CAP_SYS_ADMIN"]
        );
        // A bit no name is known for is left out.
        assert_eq!(
            effective_caps("CapEff:\t8000000000000000\n"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn insecure_drops_masks_and_opens_sys_devices_and_caps() {
        let mut v = json!({
            "process": {"capabilities": {"bounding": ["CAP_CHOWN"]}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "options": ["nosuid"]},
                {"destination": "/sys", "type": "sysfs", "options": ["nosuid", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "options": ["ro"]},
                {"destination": "/x", "type": "bind", "options": ["rbind", "ro"]},
            ],
            "linux": {"maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
                      "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                      "seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}},
            "annotations": {"run.oci.seccomp_bpf_data": "AAAA"},
        });
        make_insecure_with(&mut v, &["CAP_CHOWN", "CAP_SYS_ADMIN"]);
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            assert_eq!(
                v["process"]["capabilities"][set],
                json!(["CAP_CHOWN", "CAP_SYS_ADMIN"])
            );
        }
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
        assert_eq!(v["linux"]["readonlyPaths"], json!([]));
        assert!(v["linux"].get("seccomp").is_none(), "unconfined");
        assert_eq!(v["annotations"], json!({}), "unconfined for crun too");
        assert_eq!(
            v["linux"]["resources"]["devices"][0],
            json!({"allow": true, "type": "c", "access": "rwm"})
        );
        assert_eq!(v["mounts"][1]["options"], json!(["nosuid", "rw"]));
        assert_eq!(v["mounts"][2]["options"], json!(["rw"]));
        // Bind mounts (the /etc files, heredoc scripts) stay read-only.
        assert_eq!(v["mounts"][3]["options"], json!(["rbind", "ro"]));
        let paths: Vec<&str> = v["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert!(paths.contains(&"/dev/fuse") && paths.contains(&"/dev/loop7"));

        let mut v = json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "user"}]}});
        make_insecure_with(&mut v, &["CAP_SYS_ADMIN"]);
        assert_eq!(v["linux"]["devices"], Value::Null);
        assert_eq!(v["linux"]["maskedPaths"], json!([]));
    }
}
