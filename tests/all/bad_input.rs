//! Edge-case inputs get defined answers: never a panic, never a hang.
//!
//! Anything that could block runs under a watchdog (`common::watchdog`), so
//! a hang fails the test instead of the suite. `CTXTREE_VALGRIND=1`
//! (scripts/valgrind.sh) shrinks the loop counts.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Context, Error};

use crate::common::{cause, cause_text, patience, poll_once, shrunk, watchdog_on_stack, HOUR};

const YEAR: Duration = Duration::from_secs(3600 * 24 * 365);

// ---------------------------------------------------------------------------
// Deadlines at the edges
// ---------------------------------------------------------------------------

/// `Duration::MAX` overflows `now + t`: no deadline, a plain cancellable
/// child, never a panic.
#[test]
fn timeout_duration_max_means_no_deadline() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    assert!(!ctx.is_done());
    assert!(poll_once(&mut ctx.done()).is_pending());
    assert_eq!(ctx.to_string(), "context.Background.WithCancel");

    let (with_cause, cancel2) =
        Context::background().with_timeout_cause(Duration::MAX, cause("never"));
    assert_eq!(with_cause.deadline(), None);

    // Below a deadline: the parent's deadline stays in force.
    let soon = Instant::now() + HOUR;
    let (parent, _pc) = Context::background().with_deadline(soon);
    let (child, _cc) = parent.with_timeout(Duration::MAX);
    assert_eq!(child.deadline(), Some(soon));

    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    cancel2.cancel();
    // The deadline's cause is for the deadline only.
    assert_eq!(
        with_cause.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
}

/// `Duration::ZERO`: done at once with `DeadlineExceeded`, ready on the
/// first poll, callbacks run at once; later cancels change nothing.
#[test]
fn timeout_zero_is_done_at_once() {
    let before = Instant::now();
    let (ctx, cancel) = Context::background().with_timeout(Duration::ZERO);
    let after = Instant::now();
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(ctx.err().unwrap().is_timeout());
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
    let deadline = ctx.deadline().expect("a deadline");
    assert!(before <= deadline && deadline <= after);
    assert_eq!(
        poll_once(&mut ctx.done()),
        Poll::Ready(Error::DeadlineExceeded)
    );
    assert_eq!(ctx.wait(), Error::DeadlineExceeded);

    let ran_on = Arc::new(std::sync::Mutex::new(None));
    let r = ran_on.clone();
    let handle = ctx.after_func(move || *r.lock().unwrap() = Some(thread::current().id()));
    assert_eq!(*ran_on.lock().unwrap(), Some(thread::current().id()));
    assert!(!handle.stop());

    cancel.cancel_with_cause(cause("too late"));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        cause_text(&ctx).as_deref(),
        Some("context deadline exceeded")
    );

    let (with_cause, _c) = Context::background().with_timeout_cause(Duration::ZERO, cause("zero"));
    assert_eq!(with_cause.err(), Some(Error::DeadlineExceeded));
    assert_eq!(cause_text(&with_cause).as_deref(), Some("zero"));

    // Children of it are born done with its error.
    let (child, _cc) = ctx.with_value(1u8).with_timeout(HOUR);
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    // The smallest positive timeout fires without anyone polling.
    let (tiny, _tc) = Context::background().with_timeout(Duration::from_nanos(1));
    assert_eq!(tiny.wait_timeout(patience()), Some(Error::DeadlineExceeded));
}

/// A deadline a year in the past: done at once, and `deadline()` reports it
/// exactly.
#[test]
fn deadline_in_the_far_past() {
    let Some(past) = Instant::now().checked_sub(YEAR) else {
        eprintln!("a year before now is not representable on this clock: skipped");
        return;
    };
    let (ctx, _c) = Context::background().with_deadline(past);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.deadline(), Some(past));
    assert!(ctx
        .to_string()
        .starts_with("context.Background.WithDeadline(-"));

    let (with_cause, _c) = Context::background().with_deadline_cause(past, cause("ancient"));
    assert_eq!(cause_text(&with_cause).as_deref(), Some("ancient"));

    // Below a live, later deadline: still the earliest, still done.
    let (parent, _pc) = Context::background().with_timeout(HOUR);
    let (child, _cc) = parent.with_deadline(past);
    assert_eq!(child.deadline(), Some(past));
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert!(!parent.is_done());
}

/// A deadline 100 years ahead: live, reported exactly, deregistered on
/// cancel; children report it.
#[test]
fn deadline_a_century_ahead() {
    let far = Instant::now()
        .checked_add(YEAR * 100)
        .expect("100 years ahead fits in an Instant on this platform");
    let (ctx, cancel) = Context::background().with_deadline(far);
    assert!(!ctx.is_done());
    assert_eq!(ctx.deadline(), Some(far));
    assert_eq!(ctx.wait_timeout(Duration::from_millis(20)), None);
    let (child, _cc) = ctx.with_value("x").with_timeout(YEAR * 200);
    assert_eq!(child.deadline(), Some(far));
    assert!(child.to_string().ends_with(".WithValue(&str).WithCancel"));

    let before = Instant::now();
    let (by_timeout, _c2) = Context::background().with_timeout(YEAR * 100);
    let d = by_timeout.deadline().expect("representable");
    assert!(d >= before + YEAR * 100);

    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(ctx.deadline(), Some(far));
}

// ---------------------------------------------------------------------------
// Cancel at the edges
// ---------------------------------------------------------------------------

/// A million cancels: cheap no-ops after the first; the first reason stays.
#[test]
fn cancel_a_million_times() {
    let n = shrunk(1_000_000, 10_000);
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cc) = ctx.with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let _h = ctx.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    cancel.cancel_with_cause(cause("first"));
    let start = Instant::now();
    for i in 0..n {
        cancel.cancel();
        if i % 1000 == 0 {
            cancel.cancel_with_cause(cause("later"));
        }
    }
    let took = start.elapsed();
    eprintln!("{n} cancels of a done context: {took:?}");
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(cause_text(&ctx).as_deref(), Some("first"));
    assert_eq!(cause_text(&child).as_deref(), Some("first"));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// Cancelling through a `Canceller` whose every `Context` is gone: no panic,
/// the callbacks registered while a context existed run, a clone and a guard
/// work too.
#[test]
fn cancel_after_every_context_is_dropped() {
    let (ctx, cancel) = Context::background().with_cancel();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let handle = ctx.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let (child, child_cancel) = ctx.with_timeout(HOUR);
    drop(child);
    drop(child_cancel);
    drop(ctx);
    cancel.cancel();
    cancel.cancel_with_cause(cause("again"));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(!handle.stop());
    assert!(format!("{cancel:?}").contains("Canceled"));

    // A deadline node, only its Canceller left; a clone cancels; a guard of
    // the last canceller cancels on drop.
    let (ctx, cancel) = Context::background().with_timeout(HOUR);
    drop(ctx);
    let clone = cancel.clone();
    drop(cancel);
    clone.cancel();
    let (ctx, cancel) = Context::background().with_cancel();
    let done = ctx.done();
    drop(ctx);
    drop(cancel.guard());
    assert_eq!(futures::executor::block_on(done), Error::Canceled);
}

/// `wait_timeout(Duration::MAX)` (overflowing: the same as `wait()`) returns
/// when another thread cancels.
#[test]
fn wait_timeout_max_on_a_context_cancelled_elsewhere() {
    let err = watchdog_on_stack("wait_timeout_max", 1 << 20, || {
        let (ctx, cancel) = Context::background().with_cancel();
        let child = ctx.with_value(3u8);
        let barrier = Arc::new(Barrier::new(2));
        let b = barrier.clone();
        let canceller = thread::spawn(move || {
            b.wait();
            cancel.cancel_with_cause(cause("elsewhere"));
        });
        barrier.wait();
        let err = child.wait_timeout(Duration::MAX);
        canceller.join().unwrap();
        assert_eq!(cause_text(&child).as_deref(), Some("elsewhere"));
        // Already done: returns at once, any timeout.
        assert_eq!(child.wait_timeout(Duration::MAX), Some(Error::Canceled));
        assert_eq!(child.wait_timeout(Duration::ZERO), Some(Error::Canceled));
        err
    });
    assert_eq!(err, Some(Error::Canceled));
    let (live, _c) = Context::background().with_cancel();
    assert_eq!(live.wait_timeout(Duration::ZERO), None);
    assert_eq!(Context::background().wait_timeout(Duration::ZERO), None);
}

// ---------------------------------------------------------------------------
// Values at the edges
// ---------------------------------------------------------------------------

/// `value::<()>()`: `None` on every chain without one, `Some` below one
/// (through cancel, deadline, value and `without_cancel` nodes), never on a
/// sibling.
#[test]
fn unit_values_on_various_chains() {
    let bg = Context::background();
    assert_eq!(bg.value::<()>(), None);
    assert_eq!(Context::todo().value::<()>(), None);
    assert_eq!(Context::default().value::<()>(), None);
    let (c, _cc) = bg.with_cancel();
    assert_eq!(c.value::<()>(), None);
    assert_eq!(c.with_value(1u32).without_cancel().value::<()>(), None);

    let unit = c.with_value(());
    let sibling = c.with_value(2u32);
    assert_eq!(unit.value::<()>(), Some(&()));
    assert_eq!(sibling.value::<()>(), None);
    let (d, _dc) = unit.with_timeout(HOUR);
    let deep = d
        .with_value(5u32)
        .without_cancel()
        .with_value("s")
        .with_cancel()
        .0;
    assert_eq!(deep.value::<()>(), Some(&()));
    assert_eq!(deep.value::<u32>(), Some(&5));
    assert_eq!(deep.value::<&str>(), Some(&"s"));
    // A nearer unit shadows: still `Some(&())`, and the chain still works.
    assert_eq!(deep.with_value(()).value::<()>(), Some(&()));
    assert_eq!(c.value::<()>(), None, "values never flow up");
}

#[derive(Debug, PartialEq)]
struct Zst;

/// Zero-sized values of distinct types are found by type, each its own.
#[test]
fn zero_sized_values() {
    let ctx = Context::background()
        .with_value(Zst)
        .with_value(PhantomData::<u8>)
        .with_value([0u16; 0]);
    assert_eq!(ctx.value::<Zst>(), Some(&Zst));
    assert_eq!(ctx.value::<PhantomData<u8>>(), Some(&PhantomData));
    assert_eq!(ctx.value::<PhantomData<u16>>(), None);
    assert_eq!(ctx.value::<[u16; 0]>(), Some(&[]));
    assert_eq!(ctx.value::<[u8; 0]>(), None);
    assert!(ctx.to_string().starts_with("context.Background.WithValue("));
    drop(ctx);
}

/// Large values: a 16 MiB `Vec<u8>` (moved in, not copied) and a 16 MiB
/// array in a `Box`, plus a 64 KiB array by value.
#[test]
fn large_values() {
    let big: Vec<u8> = (0..16 << 20).map(|i: usize| (i % 251) as u8).collect();
    let data = big.as_ptr();
    let ctx = Context::background().with_value(big);
    let got = ctx.value::<Vec<u8>>().expect("the vec");
    assert_eq!(got.len(), 16 << 20);
    assert_eq!(got.as_ptr(), data, "the value is moved in, not copied");
    assert!(got
        .iter()
        .enumerate()
        .step_by(4099)
        .all(|(i, &b)| b == (i % 251) as u8));

    const N: usize = 2 << 20; // 2 Mi u64 = 16 MiB
    let boxed: Box<[u64; N]> = (0..N as u64)
        .collect::<Vec<u64>>()
        .into_boxed_slice()
        .try_into()
        .expect("exact length");
    let (child, _c) = ctx.with_cancel();
    let child = child.with_value(boxed);
    let arr = child.value::<Box<[u64; N]>>().expect("the array");
    assert_eq!(arr[0], 0);
    assert_eq!(arr[N - 1], N as u64 - 1);
    assert_eq!(child.value::<Vec<u8>>().map(Vec::len), Some(16 << 20));

    let inline = child.with_value([7u8; 1 << 16]);
    assert!(inline
        .value::<[u8; 1 << 16]>()
        .unwrap()
        .iter()
        .all(|&b| b == 7));
    drop((ctx, child, inline));
}

// ---------------------------------------------------------------------------
// Callbacks on contexts that are never done
// ---------------------------------------------------------------------------

/// `after_func` on `background`, `todo`, values on them, and
/// `without_cancel` (even of a done context): never runs; the first
/// `stop()` is `true` (it did stop `f`), the second `false`; the closure is
/// released at the latest with its handle.
#[test]
fn after_func_on_contexts_that_are_never_done() {
    let (done_ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let contexts = [
        Context::background(),
        Context::todo(),
        Context::default(),
        Context::background().with_value(1u8),
        Context::background().without_cancel(),
        done_ctx.without_cancel(),
        done_ctx.with_value(2u8).without_cancel().with_value(3u8),
    ];
    for ctx in &contexts {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let handle = ctx.after_func(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!ctx.is_done(), "{ctx}");
        assert!(poll_once(&mut ctx.done()).is_pending(), "{ctx}");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "{ctx}");
        assert!(handle.stop(), "{ctx}: first stop()");
        assert!(!handle.stop(), "{ctx}: second stop()");
        drop(handle);
        assert_eq!(Arc::strong_count(&ran), 1, "{ctx}: closure still held");
    }
    // And a handle dropped without stop() releases it too.
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    drop(Context::todo().after_func(move || drop(r)));
    assert_eq!(Arc::strong_count(&ran), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------
// Depth
// ---------------------------------------------------------------------------

/// A long chain of every kind of node, on a thread with a small stack:
/// cancelling it, formatting it and dropping it never recurse over depth.
#[test]
fn deep_chain_on_a_small_stack() {
    let depth = shrunk(200_000, 10_000);
    watchdog_on_stack("deep_chain", 256 << 10, move || {
        let (root, cancel) = Context::background().with_cancel();
        let mut leaf = root.clone();
        let mut cancellers = Vec::new();
        for i in 0..depth {
            leaf = match i % 4 {
                0 => {
                    let (c, k) = leaf.with_cancel();
                    cancellers.push(k);
                    c
                }
                1 => leaf.with_value(i as u32),
                2 => leaf.with_timeout(HOUR).0,
                _ => leaf.with_value(i as u64),
            };
        }
        assert_eq!(leaf.value::<u32>(), Some(&(depth as u32 - 3)));
        assert!(leaf.to_string().len() > depth * 5);
        cancel.cancel();
        assert!(leaf.is_done());
        drop(cancellers);
        drop(leaf);
        // Dropped live, without a cancel, too.
        let mut leaf = Context::background();
        for _ in 0..depth {
            leaf = leaf.with_cancel().0.with_value(0u8);
        }
        drop(leaf);
    });
}
