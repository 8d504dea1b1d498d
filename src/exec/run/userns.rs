//! Rootless builds: a non-root `lade build` runs inside a user and mount namespace of its own,
//! where the user is root and the image's uids 1..N are the user's subordinate ids
//! (`/etc/subuid`, `/etc/subgid`), the way `buildah unshare` and rootlesskit do it.
//!
//! An unprivileged process cannot map more than its own uid into a namespace; `newuidmap` and
//! `newgidmap` (setuid helpers, Debian `uidmap`) can, after checking the ranges against
//! `/etc/subuid`/`/etc/subgid`, but only for another process. So [`enter`] re-executes lade:
//! the child unshares (first thing in `main`, while it has one thread), the parent writes its
//! maps with the helpers, lets it go on, forwards SIGINT/SIGTERM/SIGHUP to it and exits with
//! its code. Everything of the build then happens inside: extraction chowns to the image's
//! uids (on disk they are shifted by the subuid base), overlayfs is mounted there (`userxattr`),
//! the OCI runtime runs there (runc and crun see a user namespace and use rootless cgroups),
//! and the diff reads the image's uids back with `stat`.
//!
//! Without ranges (or without the helpers) the build stays outside: builds without RUN work as
//! before, and a RUN fails with [`why_not`].

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;

/// The environment variable that tells the re-executed lade it is the child, with the numbers
/// of its two pipe descriptors (`GO_READ,READY_WRITE`).
const CHILD_ENV: &str = "_LADE_USERNS_CHILD";

/// A block of ids: `count` ids from `inside` in the namespace are `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// Why a RUN cannot run rootless, when [`enter`] did not enter a namespace.
static WHY_NOT: OnceLock<String> = OnceLock::new();

/// Why this unprivileged process is not in a user namespace (for the error of a RUN).
pub fn why_not() -> String {
    WHY_NOT.get().cloned().unwrap_or_else(|| {
        "RUN as a non-root user needs a user namespace: run `lade build` itself (it sets one up \
         from /etc/subuid and /etc/subgid)"
            .to_string()
    })
}

/// The ranges of `/etc/subuid`-format `text` for the user `name` (or numeric `id`), in file
/// order: `(start, count)`.
pub fn subordinate_ranges(text: &str, name: &str, id: u32) -> Vec<(u32, u32)> {
    let id = id.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if who != name && who != id {
                return None;
            }
            let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
            (count > 0).then_some((start, count))
        })
        .collect()
}

/// Namespace root is `own`; the ranges follow from id 1 on, in order.
pub fn id_maps(own: u32, ranges: &[(u32, u32)]) -> Vec<IdMap> {
    let mut maps = vec![IdMap {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in ranges {
        let count = count.min(u32::MAX - next);
        if count == 0 {
            break;
        }
        maps.push(IdMap {
            inside: next,
            outside: start,
            count,
        });
        next += count;
    }
    maps
}

/// The arguments of `newuidmap PID …` / `newgidmap PID …` for `maps`.
fn map_args(maps: &[IdMap]) -> Vec<String> {
    maps.iter()
        .flat_map(|m| [m.inside, m.outside, m.count])
        .map(|n| n.to_string())
        .collect()
}

/// The user's mappings from `/etc/subuid` and `/etc/subgid`, or what to add there.
fn mappings(uid: u32, gid: u32) -> Result<(Vec<IdMap>, Vec<IdMap>), String> {
    let name = user_name(uid).unwrap_or_else(|| uid.to_string());
    let read = |f: &str| std::fs::read_to_string(f).unwrap_or_default();
    let uids = subordinate_ranges(&read("/etc/subuid"), &name, uid);
    let gids = subordinate_ranges(&read("/etc/subgid"), &name, uid);
    if uids.is_empty() || gids.is_empty() {
        let missing = match (uids.is_empty(), gids.is_empty()) {
            (true, true) => "/etc/subuid and /etc/subgid have",
            (true, false) => "/etc/subuid has",
            _ => "/etc/subgid has",
        };
        return Err(format!(
            "RUN as a non-root user needs subordinate ids, and {missing} no range for \
             {name}: add a line `{name}:100000:65536` to /etc/subuid and /etc/subgid (as root: \
             `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}`)"
        ));
    }
    Ok((id_maps(uid, &uids), id_maps(gid, &gids)))
}

/// The login name of `uid` in `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

/// For the re-executed child: unshares the user and mount namespaces and waits until the
/// parent has written the maps. Call first thing in `main` (one thread). Does nothing in any
/// other process.
pub fn join_if_child() {
    let Some(fds) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    std::env::remove_var(CHILD_ENV);
    if let Err(e) = join(&fds) {
        eprintln!("error: setting up the user namespace: {e}");
        std::process::exit(1);
    }
}

fn join(fds: &OsString) -> std::io::Result<()> {
    let (go, ready) = fds
        .to_str()
        .and_then(|s| s.split_once(','))
        .and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)))
        .ok_or_else(|| std::io::Error::other(format!("bad {CHILD_ENV}")))?;
    // SAFETY: the parent passed these two descriptors open and nothing else in this process
    // owns them.
    let (mut go, mut ready) = unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(go)),
            std::fs::File::from(OwnedFd::from_raw_fd(ready)),
        )
    };
    // Die with the parent: it is the one that forwards signals and reports the exit code.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
    use rustix::thread::UnshareFlags;
    // SAFETY: one thread (this runs before anything starts one), and no FILES flag.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }?;
    ready.write_all(b"u")?;
    drop(ready);
    let mut b = [0u8; 1];
    if go.read(&mut b)? != 1 {
        return Err(std::io::Error::other(
            "the parent could not write the id maps",
        ));
    }
    // Mounts made here (overlays) must never propagate back to the host's namespace.
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )?;
    Ok(())
}

/// For an unprivileged `lade build`: runs the same command line again in a user namespace
/// with the user's subordinate ids and returns its exit code. `None`: it was not entered
/// (running as root, already inside, or no ranges or helpers — [`why_not`] says which); the
/// build goes on in this process.
pub fn enter() -> Option<ExitCode> {
    let uid = rustix::process::getuid().as_raw();
    if rustix::process::geteuid().is_root() || crate::layer::in_user_namespace() {
        return None;
    }
    let gid = rustix::process::getgid().as_raw();
    let (uids, gids) = match mappings(uid, gid) {
        Ok(m) => m,
        Err(why) => {
            let _ = WHY_NOT.set(why);
            return None;
        }
    };
    match reexec(&uids, &gids) {
        Ok(code) => Some(code),
        Err(why) => {
            tracing::debug!("rootless: {why}");
            let _ = WHY_NOT.set(why);
            None
        }
    }
}

/// The child's pid, for the signal forwarder.
static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn reexec(uids: &[IdMap], gids: &[IdMap]) -> Result<ExitCode, String> {
    let (ready_r, ready_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (go_r, go_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "lade".into());
    let (go_fd, ready_fd) = (go_r.as_raw_fd(), ready_w.as_raw_fd());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(arg0)
        .args(args)
        .env(CHILD_ENV, format!("{go_fd},{ready_fd}"))
        .stdin(Stdio::inherit());
    // SAFETY: only fcntl on two descriptors that are open in the child (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            for fd in [go_fd, ready_fd] {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
    // Signals are held from before the child exists until the forwarder takes them.
    block_signals();
    let mut child = cmd.spawn().map_err(|e| format!("re-executing lade: {e}"))?;
    drop(cmd);
    drop((go_r, ready_w));
    let pid = child.id();
    let mut ready_r = std::fs::File::from(OwnedFd::from(ready_r));
    let mut b = [0u8; 1];
    let unshared = matches!(ready_r.read(&mut b), Ok(1));
    let mapped = if unshared {
        write_map("newuidmap", pid, uids).and_then(|()| write_map("newgidmap", pid, gids))
    } else {
        Err("the re-executed lade could not create a user namespace".to_string())
    };
    if let Err(e) = mapped {
        let _ = child.kill();
        let _ = child.wait();
        unblock_signals();
        return Err(e);
    }
    let mut go_w = std::fs::File::from(OwnedFd::from(go_w));
    let _ = go_w.write_all(b"g");
    drop(go_w);
    CHILD.store(pid as i32, std::sync::atomic::Ordering::SeqCst);
    forward_signals();
    let status = child.wait().map_err(|e| format!("waiting for lade: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Runs `helper PID inside outside count …`.
fn write_map(helper: &str, pid: u32, maps: &[IdMap]) -> Result<(), String> {
    let out = Command::new(helper)
        .arg(pid.to_string())
        .args(map_args(maps))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "RUN as a non-root user needs {helper}: install the Debian package `uidmap`"
            ),
            _ => format!("running {helper}: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{helper} refused the ranges of /etc/subuid and /etc/subgid: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

const FORWARDED: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn block_signals() {
    let set = signal_set();
    // SAFETY: a valid set; std resets the mask of spawned children.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn unblock_signals() {
    let set = signal_set();
    // SAFETY: as above.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// A thread that passes every SIGINT/SIGTERM/SIGHUP on to the child; the child cleans up
/// (containers, mounts, temp files) and exits, and its code becomes this process's.
fn forward_signals() {
    let set = signal_set();
    let _ = std::thread::Builder::new()
        .name("lade-userns-signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set; sigwait writes the signal number.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                let pid = CHILD.load(std::sync::atomic::Ordering::SeqCst);
                // SAFETY: kill of our own child's pid (it is not reaped before we exit).
                unsafe { libc::kill(pid, sig) };
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_found_by_name_or_uid_in_file_order() {
        let text = "# comment\nalice:100000:65536\nbob:165536:65536\n1001:300000:10\nalice:400000:5\nbad:line\ncarol:1:0\n";
        assert_eq!(
            subordinate_ranges(text, "alice", 1000),
            [(100000, 65536), (400000, 5)]
        );
        assert_eq!(subordinate_ranges(text, "dave", 1001), [(300000, 10)]);
        assert!(subordinate_ranges(text, "carol", 7).is_empty());
    }

    #[test]
    fn root_is_the_user_and_the_ranges_follow_from_one() {
        let maps = id_maps(1000, &[(100000, 65536), (400000, 5)]);
        assert_eq!(
            maps,
            [
                IdMap {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                IdMap {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                },
                IdMap {
                    inside: 65537,
                    outside: 400000,
                    count: 5
                },
            ]
        );
        assert_eq!(
            map_args(&maps[..2]),
            ["0", "1000", "1", "1", "100000", "65536"]
        );
    }

    #[test]
    fn no_range_is_an_error_naming_the_line_to_add() {
        // uid 4294967294 has no name and no range on any machine.
        let err = mappings(4_294_967_294, 4_294_967_294).unwrap_err();
        assert!(
            err.contains("add a line `4294967294:100000:65536` to /etc/subuid and /etc/subgid"),
            "{err}"
        );
    }
}
