//! The seccomp filter of a RUN: docker's default profile (moby `profiles/seccomp/default.json`,
//! which BuildKit's runc executor applies too) as it resolves for a RUN's capabilities, docker's
//! default set ([`super::oci::DEFAULT_CAPS`]). A system call outside the allow list fails with
//! `EPERM`; `clone3` with `ENOSYS`, so that the C library falls back to `clone`, whose flags
//! the filter can see: a step cannot make namespaces (`unshare`, `clone` with `CLONE_NEW*`),
//! mount, load modules, use `bpf`, `perf_event_open`, `keyctl` or `ptrace` other processes'
//! memory beyond what the profile allows. `RUN --security=insecure` runs without the filter,
//! as docker's `--privileged` and BuildKit's insecure mode do.
//!
//! The filter goes into `config.json` for any runtime. crun 1.8 would compile its ~370 names
//! for three ABIs with libseccomp at every start (15 ms a RUN); so lade compiles it once a
//! build, with the same libseccomp (`dlopen`ed: crun's dependency, no build-time one), and
//! gives crun the BPF program in its `run.oci.seccomp_bpf_data` annotation, which crun loads
//! instead of the config's section. runc ignores the annotation and compiles the section.

use serde_json::{json, Value};

/// Allowed whatever the arguments: the profile's unconditional list, plus what it allows for
/// the default capabilities (`chroot` for CAP_SYS_CHROOT) and for kernels from 4.8 on
/// (`ptrace`, `process_vm_readv`, `process_vm_writev`).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// An architecture of the filter: its name in the runtime config and its libseccomp token
/// (the kernel's `AUDIT_ARCH_*`).
type Arch = (&'static str, u32);

/// The architectures the filter covers (the host's, with the 32-bit ABIs it runs) and the
/// calls the profile allows only there; `None` on a host the profile has no entry for here.
fn host_arch() -> Option<(&'static [Arch], &'static [&'static str])> {
    if cfg!(target_arch = "x86_64") {
        Some((
            &[
                ("SCMP_ARCH_X86_64", 0xC000_003E),
                ("SCMP_ARCH_X86", 0x4000_0003),
                ("SCMP_ARCH_X32", 0x4000_003E),
            ],
            &["arch_prctl", "modify_ldt"],
        ))
    } else if cfg!(target_arch = "aarch64") {
        Some((
            &[
                ("SCMP_ARCH_AARCH64", 0xC000_00B7),
                ("SCMP_ARCH_ARM", 0x4000_0028),
            ],
            &[
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ],
        ))
    } else {
        None
    }
}

/// Namespace flags of `clone` (`CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`): a step without CAP_SYS_ADMIN sets none.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
/// `AF_VSOCK`, the one socket family the profile refuses.
const AF_VSOCK: u64 = 40;
/// `personality` values the profile allows: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32 | UNAME26`, and the query `0xffffffff`.
const PERSONALITIES: &[u64] = &[0, 8, 0x20000, 0x20008, 0xffff_ffff];
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// How a rule compares an argument: its name in the runtime config and libseccomp's
/// `enum scmp_compare` value.
#[derive(Clone, Copy)]
enum Cmp {
    Ne,
    Eq,
    MaskedEq,
}

impl Cmp {
    fn name(self) -> &'static str {
        match self {
            Cmp::Ne => "SCMP_CMP_NE",
            Cmp::Eq => "SCMP_CMP_EQ",
            Cmp::MaskedEq => "SCMP_CMP_MASKED_EQ",
        }
    }

    fn code(self) -> u32 {
        match self {
            Cmp::Ne => 1,
            Cmp::Eq => 4,
            Cmp::MaskedEq => 7,
        }
    }
}

/// A rule of the filter: allow `name` when its arguments compare as `args` say (all of them),
/// or fail it with `errno`.
struct Rule {
    names: Vec<&'static str>,
    errno: Option<u32>,
    /// (argument index, comparison, value, second value)
    args: Vec<(u32, Cmp, u64, u64)>,
}

fn rules(arch_calls: &'static [&'static str]) -> Vec<Rule> {
    let allow = |names: Vec<&'static str>, args| Rule {
        names,
        errno: None,
        args,
    };
    let mut rules = vec![
        allow(ALLOWED.to_vec(), vec![]),
        allow(arch_calls.to_vec(), vec![]),
        allow(vec!["socket"], vec![(0, Cmp::Ne, AF_VSOCK, 0)]),
        allow(vec!["clone"], vec![(0, Cmp::MaskedEq, CLONE_NAMESPACES, 0)]),
        Rule {
            names: vec!["clone3"],
            errno: Some(ENOSYS),
            args: vec![],
        },
    ];
    rules.extend(
        PERSONALITIES
            .iter()
            .map(|&p| allow(vec!["personality"], vec![(0, Cmp::Eq, p, 0)])),
    );
    rules
}

/// `linux.seccomp` of a RUN's runtime config.
pub fn profile() -> Option<Value> {
    let (arches, arch_calls) = host_arch()?;
    let syscalls: Vec<Value> = rules(arch_calls)
        .into_iter()
        .map(|r| {
            let mut v = json!({"names": r.names, "action": "SCMP_ACT_ALLOW"});
            if let Some(errno) = r.errno {
                v["action"] = json!("SCMP_ACT_ERRNO");
                v["errnoRet"] = json!(errno);
            }
            if !r.args.is_empty() {
                let args: Vec<Value> = r
                    .args
                    .iter()
                    .map(|&(index, op, value, value_two)| {
                        json!({"index": index, "value": value, "valueTwo": value_two,
                               "op": op.name()})
                    })
                    .collect();
                v["args"] = json!(args);
            }
            v
        })
        .collect();
    Some(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": arches.iter().map(|&(name, _)| name).collect::<Vec<_>>(),
        "syscalls": syscalls,
    }))
}

/// Starts compiling the filter on a thread of its own (once a process), so the first RUN does
/// not wait the ~10 ms for it: called when a stage with a RUN starts.
pub fn compile_ahead() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("lade-seccomp".into())
            .spawn(|| compiled().map(|_| ()));
    });
}

/// crun's annotation for a filter it loads as given.
pub const BPF_ANNOTATION: &str = "run.oci.seccomp_bpf_data";

/// The filter as a BPF program for crun's `run.oci.seccomp_bpf_data` (base64), compiled once
/// a process; `None` (the runtime compiles the config's section) where libseccomp cannot be
/// loaded or refuses a rule.
pub fn compiled() -> Option<&'static str> {
    static BPF: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BPF.get_or_init(|| {
        let (arches, arch_calls) = host_arch()?;
        let started = std::time::Instant::now();
        match libseccomp::compile(arches, &rules(arch_calls)) {
            Ok(bpf) => {
                let ms = started.elapsed().as_secs_f64() * 1e3;
                tracing::debug!(ms, bytes = bpf.len(), "seccomp filter compiled");
                use base64::Engine as _;
                Some(base64::engine::general_purpose::STANDARD.encode(bpf))
            }
            Err(e) => {
                tracing::debug!("seccomp filter left to the runtime to compile: {e}");
                None
            }
        }
    })
    .as_deref()
}

/// The few libseccomp calls that compile and export a filter, found with `dlopen`.
mod libseccomp {
    use super::Rule;
    use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

    /// `struct scmp_arg_cmp`.
    #[repr(C)]
    struct ArgCmp {
        arg: c_uint,
        op: c_uint,
        datum_a: u64,
        datum_b: u64,
    }

    const ACT_ALLOW: u32 = 0x7fff_0000;
    const fn act_errno(errno: u32) -> u32 {
        0x0005_0000 | (errno & 0xffff)
    }

    type Init = unsafe extern "C" fn(u32) -> *mut c_void;
    type ArchAdd = unsafe extern "C" fn(*mut c_void, u32) -> c_int;
    type Resolve = unsafe extern "C" fn(*const c_char) -> c_int;
    type RuleAdd = unsafe extern "C" fn(*mut c_void, u32, c_int, c_uint, *const ArgCmp) -> c_int;
    type Export = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
    type Release = unsafe extern "C" fn(*mut c_void);

    /// `__NR_SCMP_ERROR`: a name libseccomp does not know on any of its architectures.
    const NR_ERROR: c_int = -1;

    pub fn compile(arches: &[super::Arch], rules: &[Rule]) -> Result<Vec<u8>, String> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the type of
        // its prototype in libseccomp's <seccomp.h> (API level 2.5).
        let lib = unsafe { libc::dlopen(c"libseccomp.so.2".as_ptr(), libc::RTLD_NOW) };
        if lib.is_null() {
            return Err("libseccomp.so.2 not found".into());
        }
        let sym = |name: &CStr| {
            // SAFETY: `lib` is a live handle (never closed: the process keeps it).
            let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
            if p.is_null() {
                Err(format!("libseccomp has no {name:?}"))
            } else {
                Ok(p)
            }
        };
        // SAFETY: the symbols have these C signatures (see above).
        let (init, arch_add, resolve, rule_add, export, release) = unsafe {
            (
                std::mem::transmute::<*mut c_void, Init>(sym(c"seccomp_init")?),
                std::mem::transmute::<*mut c_void, ArchAdd>(sym(c"seccomp_arch_add")?),
                std::mem::transmute::<*mut c_void, Resolve>(sym(c"seccomp_syscall_resolve_name")?),
                std::mem::transmute::<*mut c_void, RuleAdd>(sym(c"seccomp_rule_add_array")?),
                std::mem::transmute::<*mut c_void, Export>(sym(c"seccomp_export_bpf")?),
                std::mem::transmute::<*mut c_void, Release>(sym(c"seccomp_release")?),
            )
        };
        // SAFETY: a new filter context, released below on every path.
        let ctx = unsafe { init(act_errno(super::EPERM)) };
        if ctx.is_null() {
            return Err("seccomp_init failed".into());
        }
        struct Ctx(*mut c_void, Release);
        impl Drop for Ctx {
            fn drop(&mut self) {
                // SAFETY: the context from seccomp_init, released once.
                unsafe { (self.1)(self.0) }
            }
        }
        let ctx = Ctx(ctx, release);
        for &(name, token) in arches {
            // SAFETY: a live context; -EEXIST for the native one is fine.
            let rc = unsafe { arch_add(ctx.0, token) };
            if rc != 0 && rc != -libc::EEXIST {
                return Err(format!("seccomp_arch_add({name}): {rc}"));
            }
        }
        for rule in rules {
            let action = rule.errno.map_or(ACT_ALLOW, act_errno);
            let args = rule
                .args
                .iter()
                .map(|&(arg, op, a, b)| ArgCmp {
                    arg,
                    op: op.code(),
                    datum_a: a,
                    datum_b: b,
                })
                .collect::<Vec<_>>();
            for name in &rule.names {
                let c = CString::new(*name).expect("syscall names have no NUL");
                // SAFETY: a NUL-terminated name.
                let nr = unsafe { resolve(c.as_ptr()) };
                if nr == NR_ERROR {
                    // As crun: a name this libseccomp does not know is left out.
                    continue;
                }
                // SAFETY: a live context and `args.len()` comparisons at `args`.
                let rc =
                    unsafe { rule_add(ctx.0, action, nr, args.len() as c_uint, args.as_ptr()) };
                // -EACCES/-EOPNOTSUPP: a rule equal to the default action, nothing to add.
                if rc != 0 && rc != -libc::EACCES && rc != -libc::EOPNOTSUPP {
                    return Err(format!("seccomp_rule_add({name}): {rc}"));
                }
            }
        }
        let mut file = tempfile::tempfile().map_err(|e| e.to_string())?;
        use std::os::fd::AsRawFd;
        // SAFETY: a live context and an open, writable descriptor.
        let rc = unsafe { export(ctx.0, file.as_raw_fd()) };
        if rc != 0 {
            return Err(format!("seccomp_export_bpf: {rc}"));
        }
        use std::io::{Read, Seek};
        let mut bpf = Vec::new();
        file.rewind()
            .and_then(|_| file.read_to_end(&mut bpf))
            .map_err(|e| e.to_string())?;
        // A BPF program is whole `struct sock_filter`s of 8 bytes.
        if bpf.is_empty() || !bpf.len().is_multiple_of(8) {
            return Err(format!("seccomp_export_bpf wrote {} bytes", bpf.len()));
        }
        Ok(bpf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_refuses_namespaces_mounts_and_modules_and_lets_builds_work() {
        let Some(p) = profile() else { return };
        let allowed = |name: &str| {
            p["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
                .any(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
        };
        for refused in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "init_module",
            "bpf",
            "keyctl",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
        for needed in [
            "execve",
            "openat",
            "chroot",
            "fsync",
            "statx",
            "io_uring_setup",
        ] {
            assert!(allowed(needed), "{needed}");
        }
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let mut names: Vec<&str> = ALLOWED.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len(), "no name twice");
    }

    #[test]
    fn the_filter_compiles_to_whole_bpf_instructions_once() {
        if host_arch().is_none() {
            return;
        }
        // libseccomp comes with crun and runc, which `cargo xtask test` installs.
        let bpf = compiled().expect("libseccomp compiles the filter");
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(bpf)
            .unwrap();
        assert!(
            raw.len() > 8 * 100 && raw.len().is_multiple_of(8),
            "{} bytes",
            raw.len()
        );
        assert!(std::ptr::eq(bpf, compiled().unwrap()), "compiled once");
    }
}
