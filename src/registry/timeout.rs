//! Stall detection for registry I/O: what counts as a registry that stopped answering.
//!
//! One setting, the idle timeout `T` (`--registry-timeout`, default 60 s), bounds every
//! phase of a request:
//! - connecting (TCP and TLS) and waiting for the response headers: at most `T` from the
//!   start of the request (a request with a body: `T` plus the body's size at
//!   [`MIN_RATE`], see [`request_deadline`]);
//! - reading a response body: no read may wait longer than `T` for a byte, and a body must
//!   arrive at [`MIN_RATE`] or faster averaged over each `T`-long window ([`StallGuard`]),
//!   so a server dripping one byte a second fails too;
//! - sending a body: the kernel aborts the connection when sent data stays unacknowledged
//!   (or the peer's window stays closed) for `T` (`TCP_USER_TIMEOUT`), plus the deadline above.
//!
//! A timeout is a transient fault: the operation is retried within the retry budget, then
//! fails naming the host and the operation.

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// The slowest transfer that is not a stall: 16 KiB/s, averaged over one timeout window.
pub(crate) const MIN_RATE: u64 = 16 * 1024;

/// `2 s`, `60 s`, `1500 ms`: a timeout as users wrote it.
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The cause recorded when a request got no (complete) response headers within `timeout`.
pub(crate) fn no_response(timeout: Duration) -> String {
    format!("no response for {}", human(timeout))
}

/// The deadline for a request that sends `body_len` bytes and then waits for the response
/// headers: the idle timeout plus the time the body takes at [`MIN_RATE`].
pub(crate) fn request_deadline(timeout: Duration, body_len: u64) -> Duration {
    timeout + Duration::from_secs(body_len / MIN_RATE)
}

/// Whether an I/O error from a response body is reqwest's read timeout.
pub(crate) fn is_timeout_io(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|i| i.downcast_ref::<reqwest::Error>())
            .is_some_and(|r| r.is_timeout())
}

/// A response body reader that turns a silent or dripping server into a `TimedOut` error
/// whose message says what happened (`no data for 2 s`, `stalled: 3 bytes in 2 s`).
pub(crate) struct StallGuard<R> {
    inner: R,
    timeout: Duration,
    window_start: Instant,
    window_bytes: u64,
}

impl<R> StallGuard<R> {
    pub(crate) fn new(inner: R, timeout: Duration) -> Self {
        StallGuard {
            inner,
            timeout,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// The fewest bytes one window must bring.
    fn window_minimum(&self) -> u64 {
        (MIN_RATE as f64 * self.timeout.as_secs_f64()) as u64
    }
}

impl<R: Read> Read for StallGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) => Ok(0),
            Ok(n) => {
                self.window_bytes += n as u64;
                let elapsed = self.window_start.elapsed();
                if elapsed >= self.timeout {
                    if self.window_bytes < self.window_minimum() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "stalled: {} bytes in {} (slower than {} KiB/s)",
                                self.window_bytes,
                                human(self.timeout),
                                MIN_RATE / 1024
                            ),
                        ));
                    }
                    self.window_start = Instant::now();
                    self.window_bytes = 0;
                }
                Ok(n)
            }
            Err(e) if is_timeout_io(&e) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no data for {}", human(self.timeout)),
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `chunk` bytes per read, sleeping `pause` before each.
    struct Drip {
        left: usize,
        chunk: usize,
        pause: Duration,
    }

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.pause);
            let n = self.left.min(self.chunk).min(buf.len());
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_dripping_body_fails_after_one_window() {
        let drip = Drip {
            left: 1000,
            chunk: 1,
            pause: Duration::from_millis(20),
        };
        let mut g = StallGuard::new(drip, Duration::from_millis(100));
        let e = io::copy(&mut g, &mut io::sink()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().starts_with("stalled: "), "{e}");
        assert!(e.to_string().contains("in 100 ms"), "{e}");
    }

    #[test]
    fn a_fast_body_passes_and_small_bodies_never_stall() {
        let fast = Drip {
            left: 1 << 20,
            chunk: 64 * 1024,
            pause: Duration::from_millis(1),
        };
        let mut g = StallGuard::new(fast, Duration::from_millis(10));
        assert_eq!(io::copy(&mut g, &mut io::sink()).unwrap(), 1 << 20);
        // Whole body within the first window: no check at all.
        let mut g = StallGuard::new(&b"tiny"[..], Duration::from_secs(1));
        assert_eq!(io::copy(&mut g, &mut io::sink()).unwrap(), 4);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(2)), "2 s");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(no_response(Duration::from_secs(60)), "no response for 60 s");
        assert_eq!(
            request_deadline(Duration::from_secs(2), 10 * MIN_RATE),
            Duration::from_secs(12)
        );
    }
}
