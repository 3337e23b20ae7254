//! Values: typed lookup, shadowing, `without_cancel`, and value lifetimes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Context, Error};
use futures::future::FutureExt;

use crate::common::{done_stays_pending, miri_or, patience, CountingWaker, HOUR};

#[derive(Debug, PartialEq, Eq)]
struct UserId(u64);

#[derive(Debug, PartialEq, Eq)]
struct TraceId(&'static str);

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Marker;

#[test]
fn typed_lookup() {
    let ctx = Context::background()
        .with_value(UserId(42))
        .with_value(TraceId("abc"))
        .with_value(7u32)
        .with_value(String::from("hello"));
    assert_eq!(ctx.value::<UserId>(), Some(&UserId(42)));
    assert_eq!(ctx.value::<TraceId>(), Some(&TraceId("abc")));
    assert_eq!(ctx.value::<u32>(), Some(&7));
    assert_eq!(ctx.value::<String>().map(String::as_str), Some("hello"));
    // Keyed by exact type: no conversions.
    assert_eq!(ctx.value::<u64>(), None);
    assert_eq!(ctx.value::<i32>(), None);
    assert_eq!(ctx.value::<&str>(), None);
    assert_eq!(ctx.value::<Marker>(), None);
}

#[test]
fn value_of_the_context_itself_is_visible() {
    let ctx = Context::todo().with_value(UserId(1));
    assert_eq!(ctx.value::<UserId>(), Some(&UserId(1)));
    assert_eq!(Context::todo().value::<UserId>(), None);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn nearer_value_of_the_same_type_shadows_farther() {
    let outer = Context::background().with_value(UserId(1));
    let (mid, _c) = outer.with_cancel();
    let inner = mid.with_value(UserId(2));
    let (below, _c2) = inner.with_timeout(HOUR);
    assert_eq!(outer.value::<UserId>(), Some(&UserId(1)));
    assert_eq!(mid.value::<UserId>(), Some(&UserId(1)));
    assert_eq!(inner.value::<UserId>(), Some(&UserId(2)));
    assert_eq!(below.value::<UserId>(), Some(&UserId(2)));
    // Shadowing one type does not hide another.
    let mixed = below.with_value(9u8).with_value(UserId(3));
    assert_eq!(mixed.value::<UserId>(), Some(&UserId(3)));
    assert_eq!(mixed.value::<u8>(), Some(&9));
}

#[test]
fn siblings_never_see_each_others_values() {
    let parent = Context::background().with_value(TraceId("parent"));
    let left = parent.with_value(UserId(1));
    let right = parent.with_value(UserId(2));
    let (lc, _c1) = left.with_cancel();
    let (rc, _c2) = right.with_cancel();
    let left_only = lc.with_value(5u16);
    assert_eq!(lc.value::<UserId>(), Some(&UserId(1)));
    assert_eq!(rc.value::<UserId>(), Some(&UserId(2)));
    assert_eq!(rc.value::<u16>(), None);
    assert_eq!(left_only.value::<u16>(), Some(&5));
    assert_eq!(parent.value::<UserId>(), None);
    assert_eq!(lc.value::<TraceId>(), Some(&TraceId("parent")));
    assert_eq!(rc.value::<TraceId>(), Some(&TraceId("parent")));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn values_are_visible_through_cancel_and_deadline_children() {
    let root = Context::background().with_value(UserId(7));
    let (c1, k1) = root.with_cancel();
    let (c2, _k2) = c1.with_timeout(HOUR);
    let (c3, _k3) = c2.with_deadline(Instant::now() + HOUR);
    let (c4, _k4) = c3.with_timeout_cause(HOUR, Arc::new(Error::Canceled));
    for ctx in [&c1, &c2, &c3, &c4] {
        assert_eq!(ctx.value::<UserId>(), Some(&UserId(7)), "{ctx}");
    }
    // And still visible once done.
    k1.cancel();
    assert!(c4.is_done());
    assert_eq!(c4.value::<UserId>(), Some(&UserId(7)));
}

#[test]
fn values_are_visible_from_other_threads() {
    let ctx = Context::background().with_value(UserId(11));
    let (child, _c) = ctx.with_cancel();
    let got = thread::spawn(move || child.value::<UserId>().map(|u| u.0))
        .join()
        .unwrap();
    assert_eq!(got, Some(11));
}

// --- without_cancel ---

#[test]
fn without_cancel_keeps_values() {
    let (ctx, _c) = Context::background().with_value(UserId(3)).with_cancel();
    let ctx = ctx.with_value(TraceId("t"));
    let detached = ctx.without_cancel();
    assert_eq!(detached.value::<UserId>(), Some(&UserId(3)));
    assert_eq!(detached.value::<TraceId>(), Some(&TraceId("t")));
    assert_eq!(detached.value::<u8>(), None);
    let below = detached.with_value(1u8);
    assert_eq!(below.value::<u8>(), Some(&1));
    assert_eq!(below.value::<UserId>(), Some(&UserId(3)));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn without_cancel_is_never_done() {
    let (parent, cancel) = Context::background().with_timeout(HOUR);
    let parent = parent.with_value(UserId(1));
    let detached = parent.without_cancel();
    assert!(parent.deadline().is_some());
    let check = |d: &Context| {
        assert!(!d.is_done(), "{d}");
        assert_eq!(d.err(), None);
        assert!(d.cause().is_none());
        assert_eq!(d.deadline(), None);
        assert!(done_stays_pending(d));
        assert_eq!(d.done().now_or_never(), None);
    };
    check(&detached);
    cancel.cancel_with_cause(Arc::new(Error::DeadlineExceeded));
    assert!(parent.is_done());
    check(&detached);
    // Derived after the parent is done, too.
    let late = parent.without_cancel();
    check(&late);
    assert_eq!(late.value::<UserId>(), Some(&UserId(1)));
    assert_eq!(detached.wait_timeout(Duration::from_millis(20)), None);
    // run() on the detached context is never interrupted.
    let run = futures::executor::block_on(detached.run(async { 1 }));
    assert_eq!(run, Ok(1));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn without_cancel_survives_the_parents_deadline() {
    let (parent, _c) = Context::background().with_timeout(Duration::from_millis(20));
    let detached = parent.with_value(UserId(2)).without_cancel();
    assert_eq!(
        parent.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert!(!detached.is_done());
    assert_eq!(detached.deadline(), None);
    assert!(done_stays_pending(&detached));
    assert_eq!(detached.value::<UserId>(), Some(&UserId(2)));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn with_cancel_below_without_cancel_is_independent_of_the_original_parent() {
    let (parent, cancel) = Context::background().with_cancel();
    let (parent_timed, _pt) = parent.with_timeout(HOUR);
    let detached = parent_timed.with_value(UserId(5)).without_cancel();
    let (child, child_cancel) = detached.with_cancel();
    let (timed, _tc) = detached.with_timeout(HOUR);
    let grandchild = child.with_value(1u8);

    assert_eq!(
        child.deadline(),
        None,
        "parent's deadline does not carry over"
    );
    assert!(timed.deadline().is_some());

    cancel.cancel_with_cause(Arc::new(Error::DeadlineExceeded));
    assert!(parent_timed.is_done());
    for ctx in [&child, &timed, &grandchild] {
        assert!(!ctx.is_done(), "{ctx}");
        assert!(ctx.cause().is_none());
        assert!(done_stays_pending(ctx));
    }
    // It is cancellable itself, and keeps the values.
    child_cancel.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(grandchild.err(), Some(Error::Canceled));
    assert_eq!(
        grandchild.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    assert_eq!(grandchild.value::<UserId>(), Some(&UserId(5)));
    assert!(!timed.is_done(), "sibling under the detached context");
    assert!(!detached.is_done());
}

#[test]
fn with_cancel_below_without_cancel_of_a_done_parent_is_born_live() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let detached = parent.without_cancel();
    let (child, child_cancel) = detached.with_cancel();
    assert!(!child.is_done());
    assert!(done_stays_pending(&child));
    child_cancel.cancel();
    assert!(child.is_done());
}

// --- the unit type ---

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn unit_value_is_none_unless_set() {
    let (c1, _k1) = Context::background().with_cancel();
    let v = c1.with_value(1u32);
    let (c2, _k2) = v.with_timeout(HOUR);
    let d = c2.without_cancel();
    for ctx in [&c1, &v, &c2, &d] {
        assert_eq!(ctx.value::<()>(), None, "{ctx}");
    }
    let with_unit = c2.with_value(());
    let (below, _k3) = with_unit.with_cancel();
    assert_eq!(with_unit.value::<()>(), Some(&()));
    assert_eq!(below.value::<()>(), Some(&()));
    assert_eq!(below.without_cancel().value::<()>(), Some(&()));
    assert_eq!(c2.value::<()>(), None);
}

// --- odd sizes ---

#[test]
fn zero_sized_values() {
    let ctx = Context::background()
        .with_value(Marker)
        .with_value([0u64; 0]);
    let (child, _c) = ctx.with_cancel();
    assert_eq!(child.value::<Marker>(), Some(&Marker));
    assert_eq!(child.value::<[u64; 0]>(), Some(&[]));
    // Distinct ZSTs do not collide.
    struct OtherMarker;
    assert!(child.value::<OtherMarker>().is_none());
    let both = child.with_value(OtherMarker);
    assert!(both.value::<OtherMarker>().is_some());
    assert_eq!(both.value::<Marker>(), Some(&Marker));
}

#[test]
fn large_values() {
    let mut big = Box::new([0u8; 1 << 16]);
    big[0] = 1;
    big[(1 << 16) - 1] = 2;
    // A megabyte natively; under Miri, which interprets each byte's step,
    // 4 KiB (the `Box` above keeps its 64 KiB).
    let len = miri_or(1 << 20, 1 << 12);
    let mb: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let ctx = Context::background().with_value(big).with_value(mb);
    let (child, _c) = ctx.with_cancel();
    let b = child.value::<Box<[u8; 1 << 16]>>().expect("boxed array");
    assert_eq!(b[0], 1);
    assert_eq!(b[(1 << 16) - 1], 2);
    let v = child.value::<Vec<u8>>().expect("vec");
    assert_eq!(v.len(), len);
    assert!(v.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
}

#[test]
fn large_unboxed_array_value() {
    // Stored inline in the value node, not behind a Box of our own.
    let arr = [7u8; 1 << 14];
    let ctx = Context::background().with_value(arr);
    let got = ctx.value::<[u8; 1 << 14]>().unwrap();
    assert!(got.iter().all(|&x| x == 7));
}

// --- value lifetimes ---

struct CountsDrops(Arc<AtomicUsize>);

impl Drop for CountsDrops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn value_is_dropped_once_with_the_last_handle() {
    let drops = Arc::new(AtomicUsize::new(0));
    let ctx = Context::background().with_value(CountsDrops(drops.clone()));
    let clone = ctx.clone();
    drop(ctx);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    assert!(clone.value::<CountsDrops>().is_some());
    drop(clone);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn value_lives_while_any_descendant_handle_lives() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (parent, pcancel) = Context::background().with_cancel();
    let valued = parent.with_value(CountsDrops(drops.clone()));
    let (child, ccancel) = valued.with_cancel();
    let detached = valued.without_cancel();
    let below = child.with_value(1u8);
    let done = below.done();
    drop(valued);

    let alive = || drops.load(Ordering::SeqCst) == 0;
    assert!(alive());
    drop(child);
    assert!(alive());
    drop(below);
    assert!(alive());
    drop(detached);
    assert!(alive(), "canceller and Done still hold the child");
    drop(ccancel);
    assert!(alive(), "Done still holds the child");
    // Cancelling does not drop values.
    pcancel.cancel();
    assert!(alive());
    assert_eq!(done.now_or_never(), Some(Error::Canceled));
    // The Done was consumed: nothing holds the value any more.
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    drop(parent);
    drop(pcancel);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn canceller_alone_keeps_the_value_above() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (ctx, cancel) = Context::background()
        .with_value(CountsDrops(drops.clone()))
        .with_timeout(HOUR);
    drop(ctx);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    cancel.cancel();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(cancel);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn shadowed_values_are_each_dropped_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut ctx = Context::background();
    for _ in 0..50 {
        ctx = ctx.with_value(CountsDrops(drops.clone()));
        let (c, _k) = ctx.with_cancel();
        ctx = c;
    }
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(ctx);
    assert_eq!(drops.load(Ordering::SeqCst), 50);
}

#[test]
fn value_dropped_once_when_handles_are_dropped_on_many_threads() {
    for _ in 0..20 {
        let drops = Arc::new(AtomicUsize::new(0));
        let ctx = Context::background().with_value(CountsDrops(drops.clone()));
        let barrier = Arc::new(Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let ctx = ctx.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let (child, cancel) = ctx.with_cancel();
                    let v = child.with_value(i);
                    barrier.wait();
                    if i % 2 == 0 {
                        cancel.cancel();
                    }
                    drop(ctx);
                    drop(child);
                    drop(cancel);
                    drop(v);
                })
            })
            .collect();
        drop(ctx);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn value_of_a_dropped_sibling_does_not_outlive_it() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (parent, _pc) = Context::background().with_cancel();
    let (sib, _sc) = parent.with_cancel();
    {
        let v = parent.with_value(CountsDrops(drops.clone()));
        let (c, k) = v.with_cancel();
        let _d = c.done();
        drop(k);
    }
    // The parent's child list does not keep it alive.
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(!sib.is_done());
}

#[test]
fn done_and_run_of_a_value_context_poll_the_anchor() {
    let (ctx, cancel) = Context::background().with_cancel();
    let v = ctx.with_value(UserId(1));
    let mut run = v.run(futures::future::pending::<()>());
    let waker = CountingWaker::new();
    assert!(waker.poll(&mut run).is_pending());
    cancel.cancel();
    assert_eq!(waker.wakes(), 1, "the cancel wakes the run once");
    assert_eq!(waker.poll(&mut run), Poll::Ready(Err(Error::Canceled)));
}
