//! Stopping when asked (SIGINT, SIGTERM: a CI cancelling a job): the process-wide request,
//! and the token running steps watch. `cli` installs the signal handlers, which only call
//! [`request`]; its watcher thread then calls [`propagate`], which cancels [`token`] (a
//! running `RUN` container is killed) and makes every blob write fail
//! ([`crate::store::cancel_writes`]), so the command unwinds through its destructors, which
//! remove its temp files, and exits with 128 + the signal number.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicU32 = AtomicU32::new(0);
static TOKEN: OnceLock<crate::runtime::Cancel> = OnceLock::new();

/// Records a stop request for `signal`. Async-signal-safe (two atomic operations), so a
/// signal handler may call it; the first signal is the one reported.
pub fn request(signal: i32) {
    let _ = SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// True once a stop was requested.
pub fn requested() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The signal that asked for the stop.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// How many stop requests arrived (a second one means: stop now).
pub fn requests() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

/// The exit code for the requested stop: 128 + the signal number (130 for SIGINT, 143 for
/// SIGTERM), as shells report a process a signal ended.
pub fn exit_code() -> Option<u8> {
    signal().map(|s| u8::try_from(128 + s.clamp(1, 127)).unwrap_or(255))
}

/// The process-wide cancel token: give it to running steps (`runtime::Step::cancel`); it is
/// cancelled when a stop is requested and [`propagate`] runs.
pub fn token() -> crate::runtime::Cancel {
    TOKEN.get_or_init(crate::runtime::Cancel::new).clone()
}

/// Acts on a stop request (not from a signal handler: from a thread): cancels [`token`] and
/// makes every blob write of this process fail from now on.
pub fn propagate() {
    token().cancel();
    crate::store::cancel_writes();
}

/// A name for a signal number, for messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}
