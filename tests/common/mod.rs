// Each test binary compiles this module and uses a different part of it
// (and of the re-exports below).
#![allow(dead_code, unused_imports)]
//! Helpers shared by the test binaries, so that a test that needs one finds
//! it here instead of writing it again:
//!
//! - [`timing`]: the one patience (how long a test waits for something that
//!   must happen), the watchdogs that fail a stuck test instead of hanging
//!   the suite, [`HOUR`], and the smaller loop counts under valgrind
//!   ([`shrunk`]) and under Miri ([`miri_or`]);
//! - [`poll`]: polling a future by hand, with a waker that counts its
//!   wakes;
//! - [`exec`]: every executor the tests run on, built one way;
//! - [`tree`]: what tests put into a tree and check about it (numbered and
//!   message causes, drop probes, the live check);
//! - below: one counting global allocator and its accessors, and the
//!   helpers of the tests that measure memory.
//!
//! `tests/all` includes this module, and so does every binary that must
//! own its process. A global allocator belongs to a binary, so each one
//! that wants it still declares it:
//!
//! ```ignore
//! mod common;
//!
//! #[global_allocator]
//! static ALLOCATOR: common::Counting = common::Counting;
//! ```
//!
//! The allocator keeps three counts, and each binary reads the ones it
//! needs: live heap bytes of the whole process (`live_bytes`), allocation
//! calls of the whole process (`allocs`), and allocation calls of the
//! calling thread (`thread_allocs`), which parallel tests cannot disturb.

// The executors need the heavy dev-dependencies, which `--cfg
// ctxtree_checks` (the Miri and ThreadSanitizer runs) leaves out.
#[cfg(not(ctxtree_checks))]
pub mod exec;
pub mod poll;
pub mod timing;
pub mod tree;

#[cfg(not(ctxtree_checks))]
pub use exec::{assert_cancel_reaches_done_on_every_executor, Executor, Spawner, EXECUTORS};
pub use poll::{done_stays_pending, poll_once, yield_once, CountingWaker};
#[cfg(not(ctxtree_checks))]
pub use timing::watchdog_async;
pub use timing::{miri_or, patience, shrunk, slow, valgrind, watchdog, watchdog_on_stack, HOUR};
pub use tree::{
    assert_live, cause, cause_id, cause_is_error, cause_text, counter, hour_or_cancel, my_cause,
    DropProbe, MyErr,
};

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------

/// The system allocator, counting live bytes and allocation calls.
pub struct Counting;

/// Live heap bytes of the whole process (signed: a block allocated before a
/// baseline may be freed after it).
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

/// Successful allocation calls (`alloc`, `alloc_zeroed`, `realloc`) of the
/// whole process, ever.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocation calls (`alloc`, `alloc_zeroed`, `realloc`) made by this
    /// thread, ever. `const` and `Cell<usize>` (no destructor): touching it
    /// never allocates and never registers a destructor, so the allocator
    /// may use it.
    static THREAD_ALLOCS: Cell<usize> = const { Cell::new(0) };
}

/// Counts an allocation call on this thread, before it is forwarded.
fn bump_thread() {
    // `try_with`: during thread teardown the slot may be gone; not counting
    // then is fine.
    let _ = THREAD_ALLOCS.try_with(|n| n.set(n.get() + 1));
}

/// Counts `grown` more live bytes and one more allocation if `p`, what
/// `System` returned, is a block; returns `p`.
fn counted(p: *mut u8, grown: isize) -> *mut u8 {
    if !p.is_null() {
        LIVE_BYTES.fetch_add(grown, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
    p
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and returns what `System` returned, so `System`'s guarantees are
// ours. The counting is a side effect that never touches the memory, and
// never allocates (atomics, and a thread-local `Cell` without a destructor),
// so it cannot re-enter the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump_thread();
        // SAFETY: forwarded with the caller's guarantees on `layout`.
        let p = unsafe { System.alloc(layout) };
        counted(p, layout.size() as isize)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump_thread();
        // SAFETY: forwarded with the caller's guarantees on `layout`.
        let p = unsafe { System.alloc_zeroed(layout) };
        counted(p, layout.size() as isize)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees: `ptr` was allocated
        // by this allocator (so by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump_thread();
        // SAFETY: forwarded with the caller's guarantees: `ptr` was allocated
        // by this allocator (so by `System`) with `layout`, and `new_size` is
        // valid for it.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        counted(p, new_size as isize - layout.size() as isize)
    }
}

/// Live heap bytes of the whole process.
pub fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::SeqCst)
}

/// Allocation calls of the whole process, ever.
pub fn allocs() -> usize {
    ALLOCS.load(Ordering::SeqCst)
}

/// Allocation calls of this thread, ever: unaffected by other threads, so
/// tests that read only this may run in parallel.
pub fn thread_allocs() -> usize {
    THREAD_ALLOCS.with(Cell::get)
}

// ---------------------------------------------------------------------------
// Helpers of the tests that measure process-wide counts
// ---------------------------------------------------------------------------

/// Process-wide counts (`live_bytes`, `allocs`) are measured by one test at
/// a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the one-test-at-a-time lock (a test that failed holding it does not
/// stop the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Asserts that live bytes are within `slack` of `baseline`.
#[track_caller]
pub fn assert_near(what: &str, baseline: isize, slack: isize) {
    let now = live_bytes();
    assert!(
        now - baseline <= slack,
        "{what}: {} bytes more than the baseline (slack {slack})",
        now - baseline
    );
}

/// How many children the big leak loops make and drop: 1_000_000, or
/// 10_000 under valgrind.
pub fn n() -> usize {
    shrunk(1_000_000, 10_000)
}

/// Makes async-io's reactor apply its queued timer operations: it applies
/// them, in order, before it fires a timer inserted after them, so a timer
/// of our own that fires proves that every deregistered timer (and the
/// waker it held) has left the reactor's queue. Built on async-io itself
/// (a light dev-dependency), so it is there under `--cfg ctxtree_checks`
/// too, for tests/stress.rs under ThreadSanitizer.
pub fn drain_async_io() {
    async_io::block_on(async_io::Timer::after(Duration::from_millis(1)));
}
