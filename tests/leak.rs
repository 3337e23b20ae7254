//! No leaks without `cancel()`: a long-lived parent with a million
//! short-lived children that are never cancelled holds memory for the live
//! ones only.
//!
//! This file installs a counting global allocator, which applies to this
//! whole test binary, so it holds leak tests only, and they run one at a
//! time (`common::serial`): live bytes are a process-wide number.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use common::{assert_near, live_bytes, n, patience, poll_once, serial, HOUR};
use ctxtree::{Canceller, Context, Error};

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

/// Room for noise that is not ours: thread-local buffers, and above all the
/// test harness, whose main thread may still be handling the previous
/// test's result and spawning the next test's thread (which then blocks on
/// `SERIAL`) while a test measures; up to ~10 KiB of that was seen on a
/// loaded 2-core machine. A leak of even one byte per child in the loops
/// below (500,000 children at the half-way sample) is far beyond it, and the
/// single-object checks hang a 1 MiB value above the node, so a retained
/// node cannot hide in it.
const SLACK: isize = 64 * 1024;

/// The size of the value that single-object checks hang above a node.
const BIG: usize = 1 << 20;

/// A child of `parent` whose own parent is a value node holding `BIG`
/// bytes: while the child's node lives, so do those bytes. The value also
/// holds the only strong count of a probe, whose `Weak` says whether the
/// value is still alive without reading the process's byte count (which
/// async-io's reactor thread may lower at any moment by freeing the timers
/// an earlier test queued).
fn child_holding_big_value(parent: &Context) -> (Context, Canceller, Weak<()>) {
    let probe = Arc::new(());
    let alive = Arc::downgrade(&probe);
    let (child, canceller) = parent.with_value((vec![1u8; BIG], probe)).with_cancel();
    (child, canceller, alive)
}

/// async-io queues timer insertions and removals (up to 1,000 operations,
/// `TIMER_QUEUE_SIZE`) and applies them in batches, either when the queue is
/// full or when its reactor thread next wakes. Until then each queued
/// insertion holds the timer's waker: our deadline record (its `Arc`; it
/// reaches the node only through a back-reference that the node's last
/// release revokes, so the node itself is freed). That is bounded by the queue size, not by how many contexts
/// were made; about 300 bytes each in practice, 512 allowed. Only needed
/// while the loop runs: before measuring at the end, `flush_timer_ops`
/// empties the queue, and the tight `SLACK` applies.
const TIMER_SLACK: isize = 1000 * 512 + SLACK;

/// Makes async-io apply every timer operation queued so far. Its queue is
/// FIFO and the reactor applies the queued operations before it fires
/// anything, so once a timer registered now has fired on the reactor
/// thread, every earlier insertion and removal has been applied and their
/// wakers dropped. (A signal, not a sleep.)
fn flush_timer_ops() {
    loop {
        let (ctx, _c) = Context::background().with_timeout(Duration::from_millis(20));
        let fired_on = Arc::new(Mutex::new(None));
        let slot = fired_on.clone();
        let _af = ctx.after_func(move || *slot.lock().unwrap() = Some(std::thread::current().id()));
        assert_eq!(
            ctx.wait_timeout(patience()),
            Some(Error::DeadlineExceeded),
            "flush timer never fired"
        );
        // Callbacks run just after the node is marked done.
        let give_up = Instant::now() + patience();
        while fired_on.lock().unwrap().is_none() && Instant::now() < give_up {
            std::thread::yield_now();
        }
        let fired_on = fired_on.lock().unwrap().expect("callback ran");
        // Already past when it was armed (a very slow machine): it never
        // reached the reactor, so try again.
        if fired_on != std::thread::current().id() {
            return;
        }
    }
}

/// Checks that the allocator counts at all, so the tests below can fail:
/// holding `n` children of `parent` costs at least `n * 32` bytes.
fn assert_counting(parent: &Context, make: impl Fn(&Context) -> Context) {
    let before = live_bytes();
    let held: Vec<Context> = (0..1000).map(|_| make(parent)).collect();
    assert!(
        live_bytes() - before >= 1000 * 32,
        "the counting allocator does not count"
    );
    drop(held);
}

/// Creates and drops `n()` children made by `make`, sampling live bytes at
/// the half-way mark (within `slack`) and at the end (within `SLACK`, after
/// `flush` if given).
fn churn(parent: &Context, slack: isize, flush: Option<fn()>, make: impl Fn(&Context) -> Context) {
    churn_count(n(), parent, slack, flush, make);
}

/// [`churn`] with `count` children instead of `n()`.
fn churn_count(
    count: usize,
    parent: &Context,
    slack: isize,
    flush: Option<fn()>,
    make: impl Fn(&Context) -> Context,
) {
    // Warm up: lazy statics (the async-io reactor and its thread), thread
    // locals, the first growth of anything amortised.
    for _ in 0..5_000 {
        drop(make(parent));
    }
    assert_counting(parent, &make);
    if let Some(flush) = flush {
        flush();
    }
    let baseline = live_bytes();
    for i in 0..count {
        let child = make(parent);
        assert!(!child.is_done());
        drop(child);
        if i == count / 2 {
            assert_near("half-way through the loop", baseline, slack);
        }
    }
    if let Some(flush) = flush {
        flush();
    }
    assert_near("after the loop", baseline, SLACK);
}

#[test]
fn with_cancel_children_dropped_uncancelled_free_everything() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    let (kept, _kc) = parent.with_cancel();
    churn(&parent, SLACK, None, |p| {
        let (child, canceller) = p.with_cancel();
        drop(canceller);
        child
    });
    // The list is intact: the parent's cancel still reaches a live child.
    cancel.cancel();
    assert_eq!(kept.err(), Some(Error::Canceled));
}

#[test]
fn with_cancel_children_through_a_value_node_free_everything() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    let via_value = parent.with_value(1u64);
    let (kept, _kc) = via_value.with_cancel();
    churn(&via_value, SLACK, None, |p| p.with_cancel().0);
    cancel.cancel();
    assert_eq!(kept.err(), Some(Error::Canceled));
}

#[test]
fn with_value_children_free_everything() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    churn(&parent, SLACK, None, |p| p.with_value([7u64; 4]));
    cancel.cancel();
}

#[test]
fn cancelled_children_free_everything() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    let (kept, _kc) = parent.with_cancel();
    churn(&parent, SLACK, None, |p| {
        let (child, canceller) = p.with_cancel();
        let ctx = child.clone();
        canceller.cancel();
        assert!(ctx.is_done());
        // Return a live one so `churn`'s liveness check holds.
        p.with_value(0u8)
    });
    cancel.cancel();
    assert_eq!(kept.err(), Some(Error::Canceled));
}

#[test]
fn with_timeout_children_deregister_their_timers() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    let (kept, _kc) = parent.with_timeout(HOUR);
    churn(&parent, TIMER_SLACK, Some(flush_timer_ops), |p| {
        p.with_timeout(HOUR).0
    });
    cancel.cancel();
    assert_eq!(kept.err(), Some(Error::Canceled));
}

#[test]
fn children_with_unrun_callbacks_free_everything() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    churn(&parent, SLACK, None, move |p| {
        let (child, _canceller) = p.with_cancel();
        let r = r.clone();
        drop(child.after_func(move || {
            r.fetch_add(1, Ordering::Relaxed);
        }));
        child
    });
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// Grace children dropped before their parent is done: each takes its
/// callback off the parent's list as its last handle goes, so the parent
/// holds nothing for them. (With that removal left out, each dropped child
/// would leave its callback, about 100 bytes, in the list: megabytes here.)
#[test]
fn grace_children_dropped_early_leave_nothing_on_the_parent() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    let (kept, _kc) = parent.with_grace(Duration::ZERO);
    churn_count(n() / 10, &parent, SLACK, None, |p| {
        p.with_grace(Duration::from_millis(1)).0
    });
    // The list is intact: the parent's cancel still starts a live child's
    // grace.
    cancel.cancel();
    assert_eq!(kept.err(), Some(Error::Canceled));
}

/// Grace children of a parent that is already done, dropped while their
/// grace runs: each drop disarms the grace's timer, so neither the reactor
/// nor the parent keeps anything of them (beyond async-io's bounded queue
/// of timer operations, until it is flushed).
#[test]
fn grace_children_dropped_during_their_grace_disarm_their_timers() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (kept, _kc) = parent.with_grace(Duration::from_millis(1));
    churn_count(n() / 10, &parent, TIMER_SLACK, Some(flush_timer_ops), |p| {
        p.with_grace(HOUR).0
    });
    assert_eq!(kept.wait_timeout(patience()), Some(Error::Canceled));
}

#[test]
fn done_of_a_dropped_child_frees_it_when_dropped() {
    let _serial = serial();
    let (parent, cancel) = Context::background().with_cancel();
    // Warm up.
    for _ in 0..1000 {
        let (child, _c) = parent.with_cancel();
        let mut done = child.done();
        assert!(poll_once(&mut done).is_pending());
    }
    let baseline = live_bytes();

    // An unpolled Done.
    let (child, canceller, alive) = child_holding_big_value(&parent);
    let done = child.done();
    drop((child, canceller));
    assert_eq!(
        alive.strong_count(),
        1,
        "the Done keeps the node (and so its parent's value)"
    );
    drop(done);
    assert_eq!(alive.strong_count(), 0, "dropping the Done frees the node");
    assert_near("after dropping an unpolled Done", baseline, SLACK);

    // A polled, pending Done: it has a listener registered.
    let (child, canceller, alive) = child_holding_big_value(&parent);
    let mut done = child.done();
    assert!(poll_once(&mut done).is_pending());
    drop((child, canceller));
    assert!(poll_once(&mut done).is_pending());
    assert_eq!(alive.strong_count(), 1, "the pending Done keeps the node");
    drop(done);
    assert_eq!(alive.strong_count(), 0, "dropping the Done frees the node");
    assert_near("after dropping a pending Done", baseline, SLACK);

    // Many of them, each polled, none cancelled.
    for _ in 0..100_000 {
        let (child, _c) = parent.with_cancel();
        let mut done = child.done();
        drop(child);
        assert!(poll_once(&mut done).is_pending());
    }
    assert_near("after 100,000 pending Dones", baseline, SLACK);
    cancel.cancel();
}

#[test]
fn pending_done_of_a_dropped_child_still_resolves_then_frees() {
    let _serial = serial();
    // Warm up.
    let (parent, cancel) = Context::background().with_cancel();
    let (child, c) = parent.with_cancel();
    let mut warm = child.done();
    drop((child, c));
    assert!(poll_once(&mut warm).is_pending());
    cancel.cancel();
    assert_eq!(poll_once(&mut warm), Poll::Ready(Error::Canceled));
    drop(warm);

    let (parent, cancel) = Context::background().with_cancel();
    let baseline = live_bytes();
    let (child, c, alive) = child_holding_big_value(&parent);
    let mut done = child.done();
    drop((child, c));
    assert!(poll_once(&mut done).is_pending());
    cancel.cancel();
    assert_eq!(poll_once(&mut done), Poll::Ready(Error::Canceled));
    assert_eq!(alive.strong_count(), 1, "the resolved Done keeps the node");
    drop(done);
    assert_eq!(alive.strong_count(), 0, "dropping the Done frees the node");
    assert_near("after a resolved Done", baseline, SLACK);
}

#[test]
fn a_deep_dropped_chain_frees_everything() {
    let _serial = serial();
    let (root, cancel) = Context::background().with_cancel();
    let baseline = live_bytes();
    let mut leaf = root.clone();
    for i in 0..100_000u32 {
        leaf = if i % 2 == 0 {
            leaf.with_cancel().0
        } else {
            leaf.with_value(i)
        };
    }
    assert!(live_bytes() - baseline > 100_000 * 32);
    drop(leaf);
    assert_near("after dropping a 100,000-deep chain", baseline, SLACK);
    cancel.cancel();
}

#[test]
fn dropped_pending_dones_of_a_live_node_leave_nothing_behind() {
    let _serial = serial();
    let (ctx, cancel) = Context::background().with_cancel();
    // Warm up (the node's event allocates its listener list once).
    for _ in 0..1000 {
        let mut done = ctx.done();
        assert!(poll_once(&mut done).is_pending());
    }
    let baseline = live_bytes();
    for i in 0..n() / 2 {
        let mut done = ctx.done();
        assert!(poll_once(&mut done).is_pending());
        drop(done);
        if i == n() / 4 {
            assert_near("half-way through the loop", baseline, SLACK);
        }
    }
    assert_near("after the loop", baseline, SLACK);
    // The ones still registered are woken.
    let mut kept = ctx.done();
    assert!(poll_once(&mut kept).is_pending());
    cancel.cancel();
    assert_eq!(poll_once(&mut kept), Poll::Ready(Error::Canceled));
}

#[test]
fn stopped_callbacks_of_a_live_node_leave_nothing_behind() {
    let _serial = serial();
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = Arc::new(AtomicUsize::new(0));
    let register = |ctx: &Context| {
        let r = runs.clone();
        ctx.after_func(move || {
            r.fetch_add(1, Ordering::Relaxed);
        })
    };
    for _ in 0..1000 {
        assert!(register(&ctx).stop());
    }
    let baseline = live_bytes();
    for i in 0..n() / 2 {
        let af = register(&ctx);
        assert!(af.stop());
        drop(af);
        if i == n() / 4 {
            assert_near("half-way through the loop", baseline, SLACK);
        }
    }
    assert_near("after the loop", baseline, SLACK);
    let kept = register(&ctx);
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!kept.stop());
}
