//! `Context::after_func` and `AfterFunc::stop`.
//!
//! Tests that could deadlock run the cancel under a watchdog
//! (`common::watchdog`), so a deadlock fails the test instead of hanging it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;

use ctxtree::{AfterFunc, Canceller, Context, Error};

use crate::common::{counter, miri_or, watchdog, DropProbe, HOUR};

/// Registers a callback that increments `runs`.
fn count_into(ctx: &Context, runs: &Arc<AtomicUsize>) -> AfterFunc {
    let runs = runs.clone();
    ctx.after_func(move || {
        runs.fetch_add(1, Ordering::SeqCst);
    })
}

/// The message of a panic payload, for `&str` and `String` payloads.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        panic!("panic payload is neither &str nor String")
    }
}

#[test]
fn runs_exactly_once_on_cancel() {
    let (parent, parent_cancel) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    let runs = counter();
    let af = count_into(&ctx, &runs);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    cancel.cancel();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "ran before cancel() returned"
    );
    cancel.cancel();
    cancel.cancel_with_cause(Arc::new(std::io::Error::other("again")));
    parent_cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!af.stop());
}

#[test]
fn runs_on_the_thread_that_cancels() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let observed = ctx.clone();
    let _af = ctx.after_func(move || {
        tx.send((thread::current().id(), observed.err())).unwrap();
    });
    let canceller_id = thread::spawn(move || {
        cancel.cancel();
        thread::current().id()
    })
    .join()
    .unwrap();
    let (ran_on, err) = rx.try_recv().expect("ran before cancel() returned");
    assert_eq!(ran_on, canceller_id);
    assert_ne!(ran_on, thread::current().id());
    assert_eq!(err, Some(Error::Canceled), "runs after the node is done");
}

#[test]
fn runs_at_once_on_the_caller_thread_if_already_done() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (tx, rx) = mpsc::channel();
    let af = ctx.after_func(move || tx.send(thread::current().id()).unwrap());
    // Already ran when after_func returned, on this thread.
    assert_eq!(rx.try_recv(), Ok(thread::current().id()));
    assert!(!af.stop());

    // Same for a value node over a done node, and a child born done.
    let runs = counter();
    let _a = count_into(&ctx.with_value(1u8), &runs);
    let (born_done, _c) = ctx.with_cancel();
    let _b = count_into(&born_done, &runs);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn stop_before_cancel_prevents_the_run_and_drops_the_closure() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = counter();
    let drops = counter();
    let guard = DropProbe(drops.clone());
    let r = runs.clone();
    let af = ctx.after_func(move || {
        let _keep = &guard;
        r.fetch_add(1, Ordering::SeqCst);
    });
    assert!(af.stop());
    assert!(!af.stop(), "second stop returns false");
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(!af.stop());
}

#[test]
fn stop_after_it_ran_returns_false() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = counter();
    let af = count_into(&ctx, &runs);
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!af.stop());
    assert!(!af.stop());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn dropping_the_handle_does_not_stop_it() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = counter();
    drop(count_into(&ctx, &runs));
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn stopping_one_leaves_the_others() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = counter();
    let a = count_into(&ctx, &runs);
    let b = count_into(&ctx, &runs);
    let c = count_into(&ctx, &runs);
    assert!(b.stop());
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(!a.stop());
    assert!(!c.stop());
}

#[test]
fn callbacks_on_value_nodes_run_when_the_cancel_node_is_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    let v1 = ctx.with_value(1u8);
    let v2 = v1.with_value("two");
    let runs = counter();
    let a = count_into(&v1, &runs);
    let b = count_into(&v2, &runs);
    let stopped = count_into(&v2, &runs);
    assert!(stopped.stop());
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(!a.stop());
    assert!(!b.stop());

    // A value node whose ancestor is cancelled further up.
    let (top, top_cancel) = Context::background().with_cancel();
    let (mid, _mc) = top.with_value(0u32).with_cancel();
    let leaf = mid.with_value(1i64);
    let runs = counter();
    let _c = count_into(&leaf, &runs);
    top_cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn never_done_contexts_never_run_callbacks() {
    let (ctx, cancel) = Context::background().with_value(7u8).with_cancel();
    let detached = ctx.without_cancel();
    let contexts = [
        Context::background(),
        Context::todo(),
        Context::default(),
        Context::background().with_value(1u8),
        detached.clone(),
        detached.with_value(2u8),
    ];
    let runs = counter();
    let drops = counter();
    let mut handles = Vec::new();
    for c in &contexts {
        let r = runs.clone();
        let guard = DropProbe(drops.clone());
        handles.push(c.after_func(move || {
            let _keep = &guard;
            r.fetch_add(1, Ordering::SeqCst);
        }));
    }
    cancel.cancel();
    assert!(!detached.is_done());
    // Checking for absence; nothing could run these anyway, so no sleep.
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    for af in &handles {
        assert!(af.stop(), "it never ran, so stop() stops it");
    }
    for af in &handles {
        assert!(!af.stop());
    }
    drop(contexts);
    drop(detached);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        handles.len(),
        "closures leaked"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn dropping_every_handle_drops_the_closure_unrun() {
    let (parent, parent_cancel) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    let below = ctx.with_value(5u8);
    let runs = counter();
    let drops = counter();
    let guard = DropProbe(drops.clone());
    let r = runs.clone();
    let af = below.after_func(move || {
        let _keep = &guard;
        r.fetch_add(1, Ordering::SeqCst);
    });
    drop(ctx);
    drop(below);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the Canceller still keeps the node"
    );
    drop(cancel);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "closure not dropped with the node"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    parent_cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(af.stop(), "it never ran, so stop() returns true");
    assert!(!af.stop());
}

#[test]
fn a_pending_done_keeps_the_callback_registered() {
    let (parent, parent_cancel) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    let runs = counter();
    let af = count_into(&ctx, &runs);
    let done = ctx.done();
    drop(ctx);
    drop(cancel);
    // The Done keeps the node linked: the parent's cancel reaches it.
    parent_cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!af.stop());
    assert_eq!(futures::executor::block_on(done), Error::Canceled);
}

#[test]
fn a_panicking_callback_does_not_stop_the_tree_or_the_others() {
    // The panicking callback is registered before the others on its node,
    // in one run, and after them in the other.
    for panic_first in [true, false] {
        let (root, cancel) = Context::background().with_cancel();
        let mut leaf = root.clone();
        let mut cancellers = Vec::new();
        for i in 0..20u32 {
            let (next, c) = leaf.with_value(i).with_cancel();
            cancellers.push(c);
            leaf = next;
        }
        let runs = counter();
        let mut handles = Vec::new();
        if !panic_first {
            handles.push(count_into(&root, &runs));
        }
        handles.push(root.after_func(|| panic!("boom in a callback")));
        if panic_first {
            handles.push(count_into(&root, &runs));
        }
        handles.push(count_into(&leaf, &runs));
        handles.push(count_into(&leaf.with_value("deep"), &runs));

        let payload = catch_unwind(AssertUnwindSafe(|| cancel.cancel()))
            .expect_err("the callback's panic is resumed by cancel()");
        assert_eq!(panic_message(&*payload), "boom in a callback");
        assert_eq!(
            leaf.err(),
            Some(Error::Canceled),
            "the tree is still cancelled"
        );
        assert_eq!(root.err(), Some(Error::Canceled));
        assert_eq!(runs.load(Ordering::SeqCst), 3, "the other callbacks ran");
        for af in &handles {
            assert!(!af.stop());
        }
        // Nothing left to resume: a second cancel returns normally.
        cancel.cancel();
    }
}

#[test]
fn a_string_panic_payload_is_resumed_as_is() {
    let (ctx, cancel) = Context::background().with_cancel();
    let n = 42;
    let _af = ctx.after_func(move || panic!("formatted {n}"));
    let payload = catch_unwind(AssertUnwindSafe(|| cancel.cancel())).unwrap_err();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("formatted 42")
    );
    assert!(ctx.is_done());
}

#[test]
fn with_two_panicking_callbacks_the_first_is_resumed_once() {
    let (root, cancel) = Context::background().with_cancel();
    let (child, _cc) = root.with_cancel();
    let order = Arc::new(Mutex::new(Vec::new()));
    let runs = counter();
    let mut handles = Vec::new();
    for (ctx, name) in [(&root, "first"), (&child, "second")] {
        let order = order.clone();
        handles.push(ctx.after_func(move || {
            order.lock().unwrap().push(name);
            panic!("{name}");
        }));
    }
    handles.push(count_into(&child, &runs));
    let payload = catch_unwind(AssertUnwindSafe(|| cancel.cancel())).unwrap_err();
    let ran = order.lock().unwrap().clone();
    assert_eq!(ran.len(), 2, "both panicking callbacks ran");
    assert_eq!(
        panic_message(&*payload),
        ran[0],
        "the first panic (in run order) is the one resumed"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(child.is_done());
    // Only one panic was resumed: the next cancel (a no-op) does not panic.
    cancel.cancel();
}

#[test]
fn a_panicking_callback_on_a_guard_drop_is_resumed() {
    let (ctx, cancel) = Context::background().with_cancel();
    let _af = ctx.after_func(|| panic!("from guard"));
    let guard = cancel.guard();
    let payload = catch_unwind(AssertUnwindSafe(move || drop(guard))).unwrap_err();
    assert_eq!(panic_message(&*payload), "from guard");
    assert!(ctx.is_done());
}

#[test]
fn callback_that_cancels_its_own_node() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cc) = ctx.with_cancel();
    let runs = counter();
    let again = cancel.clone();
    let r = runs.clone();
    let _af = ctx.after_func(move || {
        again.cancel();
        again.cancel_with_cause(Arc::new(std::io::Error::other("ignored")));
        r.fetch_add(1, Ordering::SeqCst);
    });
    watchdog("callback cancels its own node", move || cancel.cancel());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    assert!(child.is_done());
}

#[test]
fn callback_that_cancels_its_parent() {
    let (parent, parent_cancel) = Context::background().with_cancel();
    let (ctx, cancel) = parent.with_cancel();
    let (sibling, _sc) = parent.with_cancel();
    let runs = counter();
    let _sibling_af = count_into(&sibling, &runs);
    let _af = ctx.after_func(move || parent_cancel.cancel());
    watchdog("callback cancels its parent", move || cancel.cancel());
    assert!(ctx.is_done());
    assert_eq!(parent.err(), Some(Error::Canceled));
    assert_eq!(sibling.err(), Some(Error::Canceled));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn callback_that_cancels_its_parent_while_the_parent_is_being_cancelled() {
    // The callback sits on a child; the parent's own cancel triggers it and
    // it cancels the parent again: it must return at once.
    let (parent, parent_cancel) = Context::background().with_cancel();
    let (ctx, _cancel) = parent.with_cancel();
    let again = parent_cancel.clone();
    let runs = counter();
    let r = runs.clone();
    let _af = ctx.after_func(move || {
        again.cancel();
        r.fetch_add(1, Ordering::SeqCst);
    });
    watchdog("callback re-cancels an ancestor", move || {
        parent_cancel.cancel()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(ctx.is_done());
}

#[test]
fn callback_that_cancels_a_sibling_branch() {
    let (root, _rc) = Context::background().with_cancel();
    let (a, a_cancel) = root.with_cancel();
    let (b, b_cancel) = root.with_cancel();
    let (b_child, _bcc) = b.with_value(1u8).with_cancel();
    let runs = counter();
    let _b_af = count_into(&b_child, &runs);
    let _af = a.after_func(move || b_cancel.cancel());
    watchdog("callback cancels a sibling", move || a_cancel.cancel());
    assert!(a.is_done());
    assert!(b.is_done());
    assert!(b_child.is_done());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!root.is_done());
}

#[test]
fn callback_that_derives_a_child_of_the_cancelled_node() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel();
    let inside = ctx.clone();
    let _af = ctx.after_func(move || {
        let (child, _c) = inside.with_cancel();
        let (deadline_child, _d) = inside.with_timeout(HOUR);
        let value_child = inside.with_value(1u8);
        // A callback registered from a callback, on a done node: runs at once.
        let nested_ran = Arc::new(AtomicBool::new(false));
        let flag = nested_ran.clone();
        let _nested = child.after_func(move || flag.store(true, Ordering::SeqCst));
        tx.send((
            child.err(),
            deadline_child.err(),
            value_child.err(),
            child.cause().map(|c| c.to_string()),
            nested_ran.load(Ordering::SeqCst),
        ))
        .unwrap();
    });
    watchdog("callback derives from its node", move || {
        cancel.cancel_with_cause(Arc::new(std::io::Error::other("why")))
    });
    let (child_err, deadline_err, value_err, child_cause, nested_ran) = rx.try_recv().unwrap();
    assert_eq!(
        child_err,
        Some(Error::Canceled),
        "a child of a done node is born done"
    );
    assert_eq!(deadline_err, Some(Error::Canceled));
    assert_eq!(value_err, Some(Error::Canceled));
    assert_eq!(child_cause.as_deref(), Some("why"));
    assert!(nested_ran);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn callback_that_drops_the_last_handle_of_another_context() {
    let (root, root_cancel) = Context::background().with_cancel();
    // Another context linked under the same node (it gets cancelled by the
    // same walk), a deadline context (its timer is deregistered in the
    // callback), and one in an unrelated tree; each with a callback of its
    // own and a value whose drop we watch.
    let (under, under_cancel) = root.with_cancel();
    let (timed, timed_cancel) = Context::background().with_timeout(HOUR);
    let (unrelated, unrelated_cancel) = Context::background().with_cancel();
    let drops = counter();
    let other_runs = counter();
    let mut others = Vec::new();
    let mut other_afs = Vec::new();
    for (ctx, c) in [
        (under, under_cancel),
        (timed, timed_cancel),
        (unrelated, unrelated_cancel),
    ] {
        let held = ctx.with_value(DropProbe(drops.clone()));
        other_afs.push(count_into(&ctx, &other_runs));
        others.push((held, ctx, c));
    }
    let _af = root.after_func(move || drop(others));
    watchdog("callback drops other contexts", move || {
        root_cancel.cancel()
    });
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "the contexts were freed in the callback"
    );
    // `under` was cancelled by the walk, so its callback ran; the other two
    // were dropped unrun.
    assert_eq!(other_runs.load(Ordering::SeqCst), 1);
    assert!(!other_afs[0].stop());
    assert!(other_afs[1].stop());
    assert!(other_afs[2].stop());
}

#[test]
fn callback_that_drops_the_last_handle_of_its_own_node() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, child_cancel) = ctx.with_cancel();
    let drops = counter();
    let held = child.with_value(DropProbe(drops.clone()));
    let slot = Arc::new(Mutex::new(Some((child, child_cancel, held))));
    let inner = slot.clone();
    let af = slot
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .0
        .after_func(move || drop(inner.lock().unwrap().take()));
    watchdog("callback drops its own node", move || cancel.cancel());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(slot.lock().unwrap().is_none());
    assert!(!af.stop());
}

#[test]
fn callback_that_stops_a_later_callback() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = counter();
    let later: Arc<Mutex<Option<AfterFunc>>> = Arc::default();
    let stopped = Arc::new(Mutex::new(None));
    let (l, s) = (later.clone(), stopped.clone());
    let _first = ctx.after_func(move || {
        let handle = l.lock().unwrap().take().unwrap();
        *s.lock().unwrap() = Some(handle.stop());
    });
    *later.lock().unwrap() = Some(count_into(&ctx, &runs));
    watchdog("callback stops another", move || cancel.cancel());
    let stopped = stopped.lock().unwrap().expect("first callback ran");
    // Exactly one of: it was stopped, or it had already started.
    assert_eq!(
        stopped,
        runs.load(Ordering::SeqCst) == 0,
        "stop() said {stopped} but runs = {}",
        runs.load(Ordering::SeqCst)
    );
}

#[test]
fn stop_racing_cancel_is_exactly_one_of_ran_or_stopped() {
    for i in 0..miri_or(500, 10) {
        let (ctx, cancel) = Context::background().with_cancel();
        let runs = counter();
        let af = Arc::new(count_into(&ctx, &runs));
        let start = Arc::new(Barrier::new(2));
        let canceller = {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                cancel.cancel();
            })
        };
        let stopper = {
            let af = af.clone();
            thread::spawn(move || {
                start.wait();
                af.stop()
            })
        };
        canceller.join().unwrap();
        let stopped = stopper.join().unwrap();
        let ran = runs.load(Ordering::SeqCst);
        assert!(ran <= 1, "iteration {i}: ran {ran} times");
        assert!(
            stopped != (ran == 1),
            "iteration {i}: stop() = {stopped}, ran {ran} times"
        );
        assert!(!af.stop(), "iteration {i}: a second stop() returned true");
        assert!(ctx.is_done());
    }
}

#[test]
fn many_threads_cancelling_run_each_callback_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _cc) = ctx.with_cancel();
    let runs = counter();
    let handles: Vec<_> = (0..50)
        .map(|i| count_into(if i % 2 == 0 { &ctx } else { &child }, &runs))
        .collect();
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (c, start): (Canceller, _) = (cancel.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                c.cancel();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 50);
    assert!(handles.iter().all(|af| !af.stop()));
}

#[test]
fn a_guard_dropped_while_panicking_swallows_the_callback_panic() {
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = counter();
    let _boom = ctx.after_func(|| panic!("callback panic"));
    let _other = count_into(&ctx, &runs);
    let payload = catch_unwind(AssertUnwindSafe(move || {
        let _guard = cancel.guard();
        panic!("outer panic");
    }))
    .unwrap_err();
    assert_eq!(panic_message(&*payload), "outer panic");
    assert!(ctx.is_done());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn after_func_handle_is_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<AfterFunc>();
    // And it can be stopped from another thread.
    let (ctx, cancel) = Context::background().with_cancel();
    let runs = counter();
    let af = count_into(&ctx, &runs);
    assert!(thread::spawn(move || af.stop()).join().unwrap());
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}
