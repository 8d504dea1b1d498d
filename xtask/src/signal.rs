//! Ctrl-C and SIGTERM: remember that they arrived so the task can stop its services and exit.
//!
//! A handler (not SIG_IGN) is used on purpose: an ignored signal stays ignored across exec, so the
//! `cargo test` child would become immune to Ctrl-C, while a handler is reset to the default there.
use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on.
pub fn install() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// The signal that asked us to stop, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// An error if a stop signal arrived, for `?` inside wait loops.
pub fn check() -> anyhow::Result<()> {
    match received() {
        Some(sig) => anyhow::bail!("interrupted by signal {sig}"),
        None => Ok(()),
    }
}
