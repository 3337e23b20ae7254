//! Cancellation: how it flows down the tree, never up, first reason wins,
//! born-done children, `Canceller`, `CancelGuard`, and `done()`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Context, Error};
use futures::executor::block_on;
use futures::future::{FusedFuture, FutureExt};

#[cfg(not(ctxtree_checks))]
use crate::common::assert_cancel_reaches_done_on_every_executor;
use crate::common::{
    assert_live, cause_id, cause_is_error, hour_or_cancel, miri_or, my_cause, patience, poll_once,
    CountingWaker, HOUR,
};

fn assert_canceled(name: &str, ctx: &Context) {
    assert!(ctx.is_done(), "{name} ({ctx}) should be done");
    assert_eq!(ctx.err(), Some(Error::Canceled), "{name}");
    assert_eq!(
        poll_once(&mut ctx.done()),
        Poll::Ready(Error::Canceled),
        "{name}: done()"
    );
}

/// A tree of several levels mixing every kind of derived node. Returns
/// the root of the subtree, its canceller, and every descendant (with a
/// name), plus the cancellers of the descendants (kept alive, never used).
struct Tree {
    top: Context,
    cancel: ctxtree::Canceller,
    nodes: Vec<(String, Context)>,
    _keep: Vec<ctxtree::Canceller>,
}

fn build_tree(parent: &Context) -> Tree {
    let (top, cancel) = parent.with_cancel();
    let mut nodes = Vec::new();
    let mut keep = Vec::new();
    // level 1
    let (a, ca) = top.with_cancel();
    let b = top.with_value(1u32);
    let (c, cc) = hour_or_cancel(&top);
    keep.extend([ca, cc]);
    // level 2
    let a1 = a.with_value("a1");
    let (a2, ca2) = hour_or_cancel(&a);
    let (b1, cb1) = b.with_cancel();
    let b2 = b.with_value(2u64);
    let (c1, cc1) = c.with_cancel();
    let c2 = c.with_value(3i8);
    keep.extend([ca2, cb1, cc1]);
    // level 3
    let (a1x, ca1x) = a1.with_cancel();
    let (a2x, ca2x) = a2.with_cancel();
    let (b2x, cb2x) = hour_or_cancel(&b2);
    let b1x = b1.with_value(4u16);
    let (c2x, cc2x) = if cfg!(miri) {
        c2.with_cancel()
    } else {
        c2.with_deadline(Instant::now() + HOUR)
    };
    keep.extend([ca1x, ca2x, cb2x, cc2x]);
    // level 4 and 5: a chain of values and cancels
    let mut deep = b1x.clone();
    for i in 0..6 {
        deep = if i % 2 == 0 {
            deep.with_value(i)
        } else {
            let (d, c) = deep.with_cancel();
            keep.push(c);
            d
        };
        nodes.push((format!("deep{i}"), deep.clone()));
    }
    for (name, ctx) in [
        ("a", a),
        ("b", b),
        ("c", c),
        ("a1", a1),
        ("a2", a2),
        ("b1", b1),
        ("b2", b2),
        ("c1", c1),
        ("c2", c2),
        ("a1x", a1x),
        ("a2x", a2x),
        ("b2x", b2x),
        ("b1x", b1x),
        ("c2x", c2x),
    ] {
        nodes.push((name.to_owned(), ctx));
    }
    Tree {
        top,
        cancel,
        nodes,
        _keep: keep,
    }
}

// --- flow down the tree ---

#[test]
fn parent_cancel_reaches_every_descendant_before_returning() {
    let tree = build_tree(&Context::background());
    assert_live("top", &tree.top);
    for (name, ctx) in &tree.nodes {
        assert_live(name, ctx);
    }
    tree.cancel.cancel();
    // No waiting of any kind: everything is done already.
    assert_canceled("top", &tree.top);
    for (name, ctx) in &tree.nodes {
        assert_canceled(name, ctx);
        assert!(cause_is_error(ctx, Error::Canceled), "{name}: cause");
    }
}

#[test]
fn parent_cancel_with_cause_reaches_every_descendant_with_that_cause() {
    let tree = build_tree(&Context::background());
    tree.cancel.cancel_with_cause(my_cause(17));
    assert_eq!(cause_id(&tree.top), Some(17));
    for (name, ctx) in &tree.nodes {
        assert_canceled(name, ctx);
        assert_eq!(cause_id(ctx), Some(17), "{name}: cause");
    }
}

#[test]
fn cancel_of_an_ancestor_above_a_value_node_reaches_the_tree() {
    let (root, cancel) = Context::background().with_cancel();
    let valued = root.with_value("v").with_value(9u8);
    let tree = build_tree(&valued);
    cancel.cancel();
    assert!(valued.is_done());
    assert_canceled("top", &tree.top);
    for (name, ctx) in &tree.nodes {
        assert_canceled(name, ctx);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn child_cancel_never_affects_parent_or_siblings() {
    let (parent, _pc) = Context::background().with_cancel();
    let (left, left_cancel) = parent.with_cancel();
    let (right, _rc) = parent.with_cancel();
    let valued = parent.with_value(5u32);
    let (under_value, _uv) = valued.with_cancel();
    let (left_child, _lc) = left.with_cancel();
    let (timed, _tc) = parent.with_timeout(HOUR);

    left_cancel.cancel_with_cause(my_cause(1));
    assert_canceled("left", &left);
    assert_canceled("left_child", &left_child);
    assert_eq!(cause_id(&left_child), Some(1));
    for (name, ctx) in [
        ("parent", &parent),
        ("right", &right),
        ("valued", &valued),
        ("under_value", &under_value),
        ("timed", &timed),
    ] {
        assert_live(name, ctx);
    }

    // Cancelling a child through a value node does not go up either.
    let (uv_child, uv_cancel) = under_value.with_cancel();
    uv_cancel.cancel();
    assert!(uv_child.is_done());
    assert_live("under_value", &under_value);
    assert_live("valued", &valued);
    assert_live("parent", &parent);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn child_deadline_never_affects_parent_or_siblings() {
    let (parent, _pc) = Context::background().with_cancel();
    let (timed, _tc) = parent.with_timeout(Duration::from_millis(20));
    let (timed_child, _tcc) = timed.with_cancel();
    let (sibling, _sc) = parent.with_cancel();
    // Wait on the child: a wait on `timed` that starts after the timer fired
    // can return while the timer thread's walk has not reached the child.
    assert_eq!(
        timed_child.wait_timeout(patience()),
        Some(Error::DeadlineExceeded),
        "20ms deadline not observed within the patience"
    );
    assert_eq!(timed.err(), Some(Error::DeadlineExceeded));
    assert_live("parent", &parent);
    assert_live("sibling", &sibling);
}

#[test]
fn without_cancel_subtree_is_not_reached() {
    let (parent, cancel) = Context::background().with_cancel();
    let detached = parent.without_cancel();
    let (under, _c) = detached.with_cancel();
    cancel.cancel();
    assert!(parent.is_done());
    assert_live("detached", &detached);
    assert_live("under detached", &under);
}

// --- first reason wins ---

#[test]
fn racing_cancels_on_one_node_first_cause_wins_everywhere() {
    const THREADS: usize = 8;
    for round in 0..miri_or(200, 4) {
        let (node, cancel) = Context::background().with_cancel();
        let (child, _c1) = node.with_cancel();
        let grandchild = child.with_value(round);
        let (great, _c2) = hour_or_cancel(&grandchild);
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let cancel = cancel.clone();
                let barrier = barrier.clone();
                let node = node.clone();
                thread::spawn(move || {
                    barrier.wait();
                    cancel.cancel_with_cause(my_cause(i));
                    // Whoever wins, once our own cancel returned the node is done.
                    assert!(node.is_done());
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let winner = cause_id(&node).expect("node has a MyErr cause");
        assert!(winner < THREADS);
        for (name, ctx) in [
            ("node", &node),
            ("child", &child),
            ("grandchild", &grandchild),
            ("great", &great),
        ] {
            assert_eq!(ctx.err(), Some(Error::Canceled), "round {round} {name}");
            assert_eq!(cause_id(ctx), Some(winner), "round {round} {name}");
            // Reading it again gives the same answer.
            assert_eq!(cause_id(ctx), Some(winner), "round {round} {name}");
        }
        // A later cancel changes nothing.
        cancel.cancel_with_cause(my_cause(999));
        assert_eq!(cause_id(&great), Some(winner));
    }
}

#[test]
fn racing_cancels_on_parent_and_child_stay_consistent() {
    // Half the threads cancel the parent, half the child. The child's cause
    // is either its own or the parent's, and the child's descendants agree
    // with the child.
    for round in 0..miri_or(100, 10) {
        let (parent, pcancel) = Context::background().with_cancel();
        let (child, ccancel) = parent.with_cancel();
        let below = child.with_value(round);
        let (deepest, _dc) = below.with_cancel();
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let barrier = barrier.clone();
                let pcancel = pcancel.clone();
                let ccancel = ccancel.clone();
                thread::spawn(move || {
                    barrier.wait();
                    if i % 2 == 0 {
                        pcancel.cancel_with_cause(my_cause(i));
                    } else {
                        ccancel.cancel_with_cause(my_cause(i));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let p = cause_id(&parent).unwrap();
        assert_eq!(p % 2, 0, "parent got a child's cause");
        let c = cause_id(&child).unwrap();
        assert!(c == p || c % 2 == 1, "round {round}: child cause {c}");
        assert_eq!(cause_id(&below), Some(c), "round {round}");
        assert_eq!(cause_id(&deepest), Some(c), "round {round}");
        assert_eq!(deepest.err(), Some(Error::Canceled));
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn deadline_racing_a_cancel_settles_on_one_reason() {
    for round in 0..50 {
        let (ctx, cancel) = Context::background().with_timeout(Duration::from_millis(1));
        let (child, _c) = ctx.with_cancel();
        let spin_until = Instant::now() + Duration::from_micros(900 + (round % 10) * 30);
        while Instant::now() < spin_until {
            std::hint::spin_loop();
        }
        cancel.cancel_with_cause(my_cause(round as usize));
        let err = ctx
            .wait_timeout(patience())
            .expect("done within the patience");
        // Wait on the child too: if the timer thread won, our cancel returned
        // at once and the wait above may have found `ctx` done while that
        // thread's walk had not reached `child` yet.
        assert_eq!(child.wait_timeout(patience()), Some(err));
        match err {
            Error::Canceled => {
                assert_eq!(cause_id(&ctx), Some(round as usize));
                assert_eq!(cause_id(&child), Some(round as usize));
            }
            Error::DeadlineExceeded => {
                assert!(cause_is_error(&ctx, Error::DeadlineExceeded));
                assert!(cause_is_error(&child, Error::DeadlineExceeded));
            }
            _ => unreachable!(),
        }
        // Stays fixed.
        thread::yield_now();
        assert_eq!(ctx.err(), Some(err));
    }
}

// --- born done ---

#[test]
fn deriving_from_a_done_parent_gives_a_done_child() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(my_cause(3));

    let (c1, _k1) = parent.with_cancel();
    let (c2, _k2) = parent.with_value(1u8).with_cancel();
    let (c3, _k3) = parent.with_timeout(HOUR);
    let (c4, _k4) = parent.with_deadline(Instant::now() + HOUR);
    let (c5, _k5) = parent.with_timeout_cause(HOUR, my_cause(100));
    let c6 = parent.with_value(2u8);
    let (c7, _k7) = c6.with_value(3u16).with_timeout(HOUR);
    for (name, ctx) in [
        ("with_cancel", &c1),
        ("with_value.with_cancel", &c2),
        ("with_timeout", &c3),
        ("with_deadline", &c4),
        ("with_timeout_cause", &c5),
        ("with_value", &c6),
        ("with_value.with_value.with_timeout", &c7),
    ] {
        assert_canceled(name, ctx);
        assert_eq!(cause_id(ctx), Some(3), "{name}: parent's cause");
    }
}

#[test]
fn deriving_from_a_parent_cancelled_without_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (child, _k) = parent.with_value("v").with_cancel();
    assert_canceled("child", &child);
    assert!(cause_is_error(&child, Error::Canceled));
}

#[test]
fn deriving_from_a_parent_past_its_deadline() {
    let (parent, _k) = Context::background().with_deadline(Instant::now());
    assert_eq!(parent.err(), Some(Error::DeadlineExceeded));
    let (c1, _k1) = parent.with_cancel();
    let (c2, _k2) = parent.with_value(0u8).with_timeout(HOUR);
    for ctx in [&c1, &c2] {
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        assert!(cause_is_error(ctx, Error::DeadlineExceeded));
        assert_eq!(
            poll_once(&mut ctx.done()),
            Poll::Ready(Error::DeadlineExceeded)
        );
    }
}

#[test]
fn born_done_child_runs_after_func_at_once_and_cancel_is_a_no_op() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(my_cause(8));
    let (child, child_cancel) = parent.with_cancel();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let handle = child.after_func(move || flag.store(true, Ordering::SeqCst));
    assert!(ran.load(Ordering::SeqCst), "callback on a born-done child");
    assert!(!handle.stop());
    child_cancel.cancel_with_cause(my_cause(9));
    assert_eq!(cause_id(&child), Some(8));
}

#[test]
fn children_derived_while_the_parent_is_cancelled_all_end_up_done() {
    for _ in 0..miri_or(50, 3) {
        let (parent, cancel) = Context::background().with_cancel();
        let barrier = Arc::new(Barrier::new(2));
        let deriver = {
            let parent = parent.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut kids = Vec::new();
                for i in 0..miri_or(200, 30) {
                    let ctx = match i % 3 {
                        0 => parent.with_cancel(),
                        1 => parent.with_value(i).with_cancel(),
                        _ => hour_or_cancel(&parent),
                    };
                    kids.push(ctx);
                }
                kids
            })
        };
        barrier.wait();
        cancel.cancel_with_cause(my_cause(1));
        let kids = deriver.join().unwrap();
        for (i, (kid, _k)) in kids.iter().enumerate() {
            assert!(kid.is_done(), "child {i} derived during cancel is live");
            assert_eq!(cause_id(kid), Some(1), "child {i}");
        }
    }
}

// --- Canceller and CancelGuard ---

#[test]
fn any_clone_of_a_canceller_cancels() {
    for which in 0..3 {
        let (ctx, cancel) = Context::background().with_cancel();
        let (child, _c) = ctx.with_cancel();
        let clones = [cancel.clone(), cancel.clone(), cancel];
        clones[which].cancel();
        assert_canceled("ctx", &ctx);
        assert_canceled("child", &child);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn canceller_clone_cancels_from_another_thread() {
    let (ctx, cancel) = Context::background().with_timeout(HOUR);
    let other = cancel.clone();
    thread::spawn(move || other.cancel()).join().unwrap();
    assert_canceled("ctx", &ctx);
    // The original is still usable and changes nothing.
    cancel.cancel_with_cause(my_cause(1));
    assert!(cause_is_error(&ctx, Error::Canceled));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn dropping_a_canceller_does_not_cancel() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    let (timed, tcancel) = parent.with_timeout(HOUR);
    let clone = cancel.clone();
    drop(cancel);
    assert_live("ctx", &ctx);
    drop(clone);
    drop(tcancel);
    assert_live("ctx", &ctx);
    assert_live("timed", &timed);
    // It is still linked: the parent's cancel reaches it.
    pcancel.cancel();
    assert_canceled("ctx", &ctx);
    assert_canceled("timed", &timed);
}

#[test]
fn guard_cancels_on_drop() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    {
        let _guard = cancel.guard();
        assert_live("ctx in scope", &ctx);
    }
    assert_canceled("ctx", &ctx);
    assert_canceled("child", &child);
    assert!(cause_is_error(&ctx, Error::Canceled));
}

#[test]
fn guard_cancels_when_unwinding() {
    let (ctx, cancel) = Context::background().with_cancel();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _guard = cancel.guard();
        panic!("scope fails");
    }));
    assert!(result.is_err());
    assert_canceled("ctx", &ctx);
}

#[test]
fn guard_on_an_already_done_context_keeps_the_first_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    let guard = cancel.clone().guard();
    cancel.cancel_with_cause(my_cause(4));
    drop(guard);
    assert_eq!(cause_id(&ctx), Some(4));
}

#[test]
fn disarm_gives_back_a_canceller_without_cancelling() {
    let (ctx, cancel) = Context::background().with_cancel();
    let guard = cancel.guard();
    let cancel = guard.disarm();
    assert_live("ctx after disarm", &ctx);
    // The canceller we got back works.
    let (child, _c) = ctx.with_cancel();
    cancel.cancel_with_cause(my_cause(6));
    assert_canceled("ctx", &ctx);
    assert_eq!(cause_id(&child), Some(6));
}

#[test]
fn disarmed_canceller_dropped_does_not_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    drop(cancel.guard().disarm());
    assert_live("ctx", &ctx);
}

#[test]
fn cancel_twice_is_fine() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    cancel.cancel();
    cancel.cancel();
    cancel.cancel_with_cause(my_cause(2));
    cancel.cancel();
    assert_canceled("ctx", &ctx);
    assert_canceled("child", &child);
    assert!(cause_is_error(&ctx, Error::Canceled));
    assert!(cause_is_error(&child, Error::Canceled));
}

#[test]
fn cancelling_a_child_after_its_parent_changes_nothing() {
    let (parent, pcancel) = Context::background().with_cancel();
    let (child, ccancel) = parent.with_cancel();
    pcancel.cancel_with_cause(my_cause(1));
    ccancel.cancel_with_cause(my_cause(2));
    assert_eq!(cause_id(&child), Some(1));
}

#[test]
fn api_types_are_send_sync_and_clone() {
    fn send_sync<T: Send + Sync>() {}
    fn clone_debug<T: Clone + fmt::Debug>() {}
    fn done_traits<
        T: std::future::Future<Output = Error> + FusedFuture + Unpin + Send + 'static,
    >() {
    }
    send_sync::<ctxtree::Canceller>();
    clone_debug::<ctxtree::Canceller>();
    send_sync::<ctxtree::AfterFunc>();
    done_traits::<ctxtree::Done>();
}

// --- done() ---

#[test]
fn done_futures_created_before_cancel_resolve_after() {
    let (ctx, cancel) = Context::background().with_cancel();
    let child = ctx.with_value(1u8);
    let mut polled = ctx.done();
    let polled_waker = CountingWaker::new();
    assert!(polled_waker.poll(&mut polled).is_pending());
    let unpolled = ctx.done();
    let mut through_value = child.done();
    let through_value_waker = CountingWaker::new();
    assert!(through_value_waker.poll(&mut through_value).is_pending());
    assert_eq!(polled_waker.wakes(), 0);
    assert_eq!(through_value_waker.wakes(), 0);
    cancel.cancel();
    // Each polled `Done` is woken once, before `cancel` returns.
    assert_eq!(polled_waker.wakes(), 1);
    assert_eq!(through_value_waker.wakes(), 1);
    assert_eq!(block_on(polled), Error::Canceled);
    assert_eq!(block_on(unpolled), Error::Canceled);
    assert_eq!(block_on(through_value), Error::Canceled);
}

#[test]
fn done_on_an_already_done_context_is_ready_on_first_poll() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut done = ctx.done();
    assert!(!done.is_terminated());
    assert_eq!(poll_once(&mut done), Poll::Ready(Error::Canceled));
    assert!(done.is_terminated());
    assert_eq!(ctx.done().now_or_never(), Some(Error::Canceled));
    assert_eq!(
        ctx.with_value(1u8).done().now_or_never(),
        Some(Error::Canceled)
    );
}

#[test]
fn each_done_call_is_independent() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut first = ctx.done();
    assert!(poll_once(&mut first).is_pending());
    drop(first); // a dropped pending Done leaves nothing behind that matters
    let mut dones: Vec<_> = (0..16).map(|_| ctx.done()).collect();
    for d in dones.iter_mut().step_by(2) {
        assert!(poll_once(d).is_pending());
    }
    cancel.cancel();
    for d in dones {
        assert_eq!(d.now_or_never(), Some(Error::Canceled));
    }
}

#[test]
fn done_blocked_on_resolves_when_cancelled_from_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (grandchild, _gc) = ctx.with_value(1u8).with_cancel();
    let (tx, rx) = mpsc::channel::<()>();
    let canceller = thread::spawn(move || {
        rx.recv().unwrap();
        cancel.cancel();
    });
    let got = block_on(async {
        let mut done = grandchild.done();
        // Make sure the Done is registered before asking for the cancel.
        assert!(futures::poll!(&mut done).is_pending());
        tx.send(()).unwrap();
        done.await
    });
    assert_eq!(got, Error::Canceled);
    canceller.join().unwrap();
}

#[test]
#[cfg(not(ctxtree_checks))]
fn done_works_on_every_executor() {
    assert_cancel_reaches_done_on_every_executor(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let (grandchild, _gc) = ctx.with_value(1u8).with_cancel();
        (grandchild, cancel)
    });
}

#[test]
fn done_select_needs_no_fuse_or_pin() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let got = block_on(async {
        futures::select! {
            err = ctx.done() => Err(err),
            n = futures::future::pending::<u8>().fuse() => Ok(n),
        }
    });
    assert_eq!(got, Err(Error::Canceled));
}

#[test]
fn a_pending_done_alone_keeps_the_node_linked() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, child_cancel) = parent.with_cancel();
    let mut polled = child.done();
    assert!(poll_once(&mut polled).is_pending());
    let unpolled = child.done();
    drop(child);
    drop(child_cancel);
    // Through a value node too.
    let (deep, deep_cancel) = parent.with_value(1u32).with_cancel();
    let mut deep_done = deep.with_value(2u64).done();
    assert!(poll_once(&mut deep_done).is_pending());
    drop(deep);
    drop(deep_cancel);

    cancel.cancel();
    assert_eq!(polled.now_or_never(), Some(Error::Canceled));
    assert_eq!(unpolled.now_or_never(), Some(Error::Canceled));
    assert_eq!(deep_done.now_or_never(), Some(Error::Canceled));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn a_pending_done_alone_resolves_when_cancelled_from_another_thread() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, child_cancel) = parent.with_timeout(HOUR);
    let done = child.done();
    drop(child);
    drop(child_cancel);
    drop(parent);
    let t = thread::spawn(move || cancel.cancel_with_cause(my_cause(1)));
    assert_eq!(block_on(done), Error::Canceled);
    t.join().unwrap();
}

#[test]
fn a_run_alone_keeps_the_node_linked() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, child_cancel) = parent.with_cancel();
    let run = child.run(futures::future::pending::<()>());
    drop(child);
    drop(child_cancel);
    let t = thread::spawn(move || cancel.cancel());
    assert_eq!(block_on(run), Err(Error::Canceled));
    t.join().unwrap();
}

#[test]
fn cancel_wakes_every_waiter_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    let woken = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(9));
    let waiters: Vec<_> = (0..8)
        .map(|i| {
            let ctx = ctx.clone();
            let woken = woken.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let (sub, _c) = ctx.with_value(i).with_cancel();
                barrier.wait();
                let err = if i % 2 == 0 {
                    block_on(sub.done())
                } else {
                    sub.wait()
                };
                woken.fetch_add(1, Ordering::SeqCst);
                err
            })
        })
        .collect();
    barrier.wait();
    cancel.cancel();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Error::Canceled);
    }
    assert_eq!(woken.load(Ordering::SeqCst), 8);
}
