//! Time, in one place: how long a test waits before it calls something
//! stuck, the watchdogs that fail a stuck test instead of hanging the suite,
//! and how much smaller the loops get under valgrind and under Miri.
//!
//! Every bound here is an upper bound on something that must happen ("done
//! by", "finished within"). They are generous on purpose: the machines are
//! small and shared, and valgrind and Miri run the same code tens of times
//! slower. A correct run never comes near them; they only decide how long a
//! broken run takes to fail.

use std::future::Future;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

#[cfg(not(ctxtree_checks))]
use futures::FutureExt;

/// A deadline or timeout no test lives to see: a context given it stays
/// live for the whole test.
pub const HOUR: Duration = Duration::from_secs(3600);

/// Whether the tests run under valgrind: scripts/valgrind.sh sets
/// `CTXTREE_VALGRIND`. Big loops shrink ([`shrunk`]) and [`patience`] grows.
pub fn valgrind() -> bool {
    std::env::var_os("CTXTREE_VALGRIND").is_some()
}

/// Whether the tests run much slower than a plain debug build: under
/// valgrind, under Miri, or whenever `CTXTREE_SLOW` is set (for any other
/// instrumented build, such as a sanitizer's).
pub fn slow() -> bool {
    cfg!(miri) || valgrind() || std::env::var_os("CTXTREE_SLOW").is_some()
}

/// `full`, or `under_valgrind` when the tests run under valgrind, where
/// memcheck runs the same paths some 20 to 50 times slower. The behaviour
/// checked is the same; only the count changes.
pub fn shrunk(full: usize, under_valgrind: usize) -> usize {
    if valgrind() {
        under_valgrind
    } else {
        full
    }
}

/// `native`, or `under_miri` when the tests run under Miri, which
/// interprets every step and is some thousand times slower than a debug
/// build: the same behaviour is checked on a smaller tree or fewer rounds.
pub fn miri_or(native: usize, under_miri: usize) -> usize {
    if cfg!(miri) {
        under_miri
    } else {
        native
    }
}

/// How long a test waits for something that must happen (a cancel seen on
/// another thread, a deadline fired, a task finished) before it fails: 30 s,
/// or 300 s when [`slow`].
pub fn patience() -> Duration {
    Duration::from_secs(if slow() { 300 } else { 30 })
}

/// Runs `f` on a new thread named `what` and returns what it returns. Fails
/// the test if `f` has not returned within [`patience`] (a deadlock or a
/// lost wakeup; the stuck thread is left behind), and re-raises `f`'s panic
/// if it panics.
#[track_caller]
pub fn watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    watch(what, thread::Builder::new(), f)
}

/// [`watchdog`], with `f` on a thread of `stack` bytes of stack.
#[track_caller]
pub fn watchdog_on_stack<T: Send + 'static>(
    what: &str,
    stack: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    watch(what, thread::Builder::new().stack_size(stack), f)
}

#[track_caller]
fn watch<T: Send + 'static>(
    what: &str,
    builder: thread::Builder,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = builder
        .name(what.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn the watched thread");
    let patience = patience();
    match rx.recv_timeout(patience) {
        Ok(out) => {
            handle.join().expect("the watched thread returned");
            out
        }
        // `f` panicked: the sender was dropped unsent.
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the watched thread sends before it returns"),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: not finished within {patience:?} (deadlock or lost wakeup?)")
        }
    }
}

/// Awaits `fut`, failing the test if it is not ready within [`patience`].
/// The timer is async-io's, driven by its own thread, so this works on
/// every executor.
#[cfg(not(ctxtree_checks))]
pub async fn watchdog_async<F: Future>(what: &str, fut: F) -> F::Output {
    let patience = patience();
    futures::select! {
        out = fut.fuse() => out,
        _ = FutureExt::fuse(smol::Timer::after(patience)) => {
            panic!("{what}: not ready within {patience:?} (deadlock or lost wakeup?)")
        }
    }
}
