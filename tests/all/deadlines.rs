//! Deadlines: `with_deadline`, `with_timeout` and their timers.
//!
//! A deadline is enforced by an `async-io` timer driven by async-io's own
//! reactor thread, so nothing in these tests polls the contexts to make them
//! fire: the test thread only blocks in `wait_timeout` (or spins on
//! `is_done`). Deadlines never fire early, so "not done before the deadline"
//! is a safe assertion; "done by" bounds are the tests' generous patience
//! (`common::patience`) because the machine is small and noisy.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Context, Error};
use futures::FutureExt;

use crate::common::{cause, counter, patience, watchdog_async, DropProbe, HOUR};

#[test]
fn deadline_in_the_past_is_done_at_once() {
    let now = Instant::now();
    let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
    let (ctx, cancel) = Context::background().with_deadline(past);
    assert!(ctx.is_done());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.deadline(), Some(past));
    let cause = ctx.cause().expect("a done context has a cause");
    assert_eq!(
        cause.downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
    assert_eq!(ctx.done().now_or_never(), Some(Error::DeadlineExceeded));
    assert_eq!(
        ctx.wait_timeout(Duration::ZERO),
        Some(Error::DeadlineExceeded)
    );

    // A deadline of exactly "now" has passed by the time it is checked.
    let (now_ctx, now_cancel) = Context::background().with_deadline(Instant::now());
    assert_eq!(now_ctx.err(), Some(Error::DeadlineExceeded));

    // Children of a context born done are born done too.
    let (child, _c) = ctx.with_cancel();
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.with_value(1u8).err(), Some(Error::DeadlineExceeded));

    // Cancelling afterwards changes nothing: the first reason wins.
    cancel.cancel();
    now_cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(now_ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn past_deadline_with_cause_reports_the_cause() {
    let (ctx, cancel) =
        Context::background().with_deadline_cause(Instant::now(), cause("too late"));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.cause().unwrap().to_string(), "too late");
    cancel.cancel_with_cause(cause("ignored"));
    assert_eq!(ctx.cause().unwrap().to_string(), "too late");
}

#[test]
fn timeout_fires_by_itself_observed_with_wait_timeout() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let deadline = ctx.deadline().expect("with_timeout sets a deadline");
    assert!(deadline >= start + Duration::from_millis(20));
    assert_eq!(ctx.wait_timeout(patience()), Some(Error::DeadlineExceeded));
    assert!(Instant::now() >= deadline, "a deadline never fires early");
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(ctx.err().unwrap().is_timeout());
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
}

#[test]
fn timeout_fires_with_nobody_listening() {
    // No `Done`, no `wait`: nothing registers a listener on the node. Only
    // the reactor's timer can make it done.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let deadline = ctx.deadline().unwrap();
    let give_up = Instant::now() + patience();
    while !ctx.is_done() && Instant::now() < give_up {
        thread::yield_now();
    }
    assert_eq!(
        ctx.err(),
        Some(Error::DeadlineExceeded),
        "timer never fired"
    );
    assert!(Instant::now() >= deadline);
}

#[test]
fn not_done_before_its_deadline() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
    assert!(!ctx.is_done());
    assert_eq!(ctx.err(), None);
    assert!(ctx.cause().is_none());
    assert_eq!(ctx.done().now_or_never(), None);
    assert_eq!(ctx.wait_timeout(Duration::from_millis(50)), None);
    assert!(!ctx.is_done());
}

#[test]
fn deadline_is_never_observed_early() {
    let deadline = Instant::now() + Duration::from_millis(60);
    let (ctx, _cancel) = Context::background().with_deadline(deadline);
    // Whoever sees it done sees a clock at or past the deadline: a blocked
    // waiter, a `Done`, and a callback on the timer thread.
    let (tx, rx) = mpsc::channel();
    let _af = ctx.after_func(move || tx.send(Instant::now()).unwrap());
    let blocked = {
        let ctx = ctx.clone();
        thread::spawn(move || (ctx.wait_timeout(patience()), Instant::now()))
    };
    let via_done = futures::executor::block_on(watchdog_async("done()", ctx.done()));
    assert_eq!(via_done, Error::DeadlineExceeded);
    assert!(Instant::now() >= deadline);
    let (err, seen) = blocked.join().unwrap();
    assert_eq!(err, Some(Error::DeadlineExceeded));
    assert!(seen >= deadline);
    let in_callback = rx.recv_timeout(patience()).expect("callback ran");
    assert!(in_callback >= deadline);
}

#[test]
fn earlier_parent_deadline_is_inherited() {
    let (parent, _pc) = Context::background().with_timeout(Duration::from_millis(30));
    let parent_deadline = parent.deadline().unwrap();
    let (child, _cc) = parent.with_timeout(HOUR);
    assert_eq!(child.deadline(), Some(parent_deadline));
    // Same through a value node, and with an explicit later deadline.
    let mid = parent.with_value("mid");
    let (grandchild, _gc) = mid.with_deadline(Instant::now() + HOUR);
    assert_eq!(grandchild.deadline(), Some(parent_deadline));
    // A deadline equal to the parent's: "at or before" means inherit.
    let (equal, _ec) = parent.with_deadline(parent_deadline);
    assert_eq!(equal.deadline(), Some(parent_deadline));
    // Live, unless this thread was held up past the parent's deadline.
    assert!(!child.is_done() || Instant::now() >= parent_deadline);

    // Wait on each: they are siblings in the timer thread's walk, in no
    // promised order.
    for c in [&child, &grandchild, &equal] {
        assert_eq!(c.wait_timeout(patience()), Some(Error::DeadlineExceeded));
    }
    assert!(Instant::now() >= parent_deadline);
    assert_eq!(parent.err(), Some(Error::DeadlineExceeded));
    assert_eq!(
        child.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::DeadlineExceeded)
    );
}

#[test]
fn parent_deadline_cause_reaches_children() {
    let (parent, _pc) = Context::background()
        .with_timeout_cause(Duration::from_millis(20), cause("parent too slow"));
    let (child, _cc) = parent.with_timeout_cause(HOUR, cause("child cause"));
    let leaf = child.with_value(3u16);
    assert_eq!(leaf.wait_timeout(patience()), Some(Error::DeadlineExceeded));
    assert_eq!(parent.cause().unwrap().to_string(), "parent too slow");
    assert_eq!(child.cause().unwrap().to_string(), "parent too slow");
    assert_eq!(leaf.cause().unwrap().to_string(), "parent too slow");
}

#[test]
fn earlier_child_deadline_fires_while_parent_stays_live() {
    let (parent, _pc) = Context::background().with_timeout(HOUR);
    let parent_deadline = parent.deadline().unwrap();
    let (sibling, _sc) = parent.with_cancel();
    let (child, _cc) = parent.with_timeout(Duration::from_millis(20));
    let child_deadline = child.deadline().unwrap();
    assert!(child_deadline < parent_deadline);
    let grandchild = child.with_value(1u8);
    assert_eq!(grandchild.deadline(), Some(child_deadline));

    assert_eq!(
        grandchild.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert!(!parent.is_done());
    assert!(!sibling.is_done());
    assert_eq!(parent.deadline(), Some(parent_deadline));
    assert_eq!(parent.wait_timeout(Duration::from_millis(50)), None);
}

#[test]
fn duration_max_means_no_deadline() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    assert!(!ctx.is_done());
    let (with_cause, _c) = Context::background().with_timeout_cause(Duration::MAX, cause("never"));
    assert_eq!(with_cause.deadline(), None);
    assert!(!with_cause.is_done());
    // Under a parent with a deadline, it inherits the parent's.
    let (parent, _pc) = Context::background().with_timeout(HOUR);
    let (child, _cc) = parent.with_timeout(Duration::MAX);
    assert_eq!(child.deadline(), parent.deadline());
    // Still cancellable.
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn zero_timeout_is_done_at_once() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::ZERO);
    assert!(ctx.is_done());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(ctx.done().now_or_never(), Some(Error::DeadlineExceeded));
    let (with_cause, _c) = Context::background().with_timeout_cause(Duration::ZERO, cause("zero"));
    assert_eq!(with_cause.err(), Some(Error::DeadlineExceeded));
    assert_eq!(with_cause.cause().unwrap().to_string(), "zero");
}

#[test]
fn deadline_a_hundred_years_ahead() {
    let hundred_years = Duration::from_secs(100 * 365 * 24 * 3600);
    let Some(far) = Instant::now().checked_add(hundred_years) else {
        // This platform's `Instant` cannot represent it: nothing to test.
        return;
    };
    let (ctx, cancel) = Context::background().with_deadline(far);
    assert_eq!(ctx.deadline(), Some(far));
    assert!(!ctx.is_done());
    let (by_timeout, _c) = Context::background().with_timeout(hundred_years);
    assert!(by_timeout.deadline().is_some());
    assert!(!by_timeout.is_done());
    assert_eq!(ctx.wait_timeout(Duration::from_millis(30)), None);

    // The reactor is not wedged by a timer that far out: a short one still fires.
    let (short, _sc) = ctx.with_timeout(Duration::from_millis(20));
    assert_eq!(
        short.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert!(!ctx.is_done());

    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(!by_timeout.is_done());
}

#[test]
fn deadline_is_the_earliest_on_the_path_through_value_nodes() {
    assert_eq!(Context::background().deadline(), None);
    assert_eq!(Context::background().with_value(0u8).deadline(), None);

    let (root, _rc) = Context::background().with_timeout(HOUR);
    let d1 = root.deadline().unwrap();
    let v1 = root.with_value(1u8);
    let v2 = v1.with_value("two");
    assert_eq!(v1.deadline(), Some(d1));
    assert_eq!(v2.deadline(), Some(d1));

    // A later deadline below value nodes: the earlier one above wins.
    let (later, _lc) = v2.with_timeout(Duration::from_secs(7200));
    assert_eq!(later.deadline(), Some(d1));
    assert_eq!(later.with_value(3u32).deadline(), Some(d1));
    let (plain, _pc) = v2.with_cancel();
    assert_eq!(plain.deadline(), Some(d1));

    // An earlier deadline below value nodes: its own.
    let d2 = d1 - Duration::from_secs(60);
    let (earlier, _ec) = v2.with_deadline(d2);
    assert_eq!(earlier.deadline(), Some(d2));
    let below = earlier.with_value(4u64);
    assert_eq!(below.deadline(), Some(d2));
    let (below_later, _blc) = below.with_timeout(Duration::from_secs(7200));
    assert_eq!(below_later.deadline(), Some(d2));
    // Parents never see their children's deadlines.
    assert_eq!(v2.deadline(), Some(d1));
    assert_eq!(root.deadline(), Some(d1));

    // `without_cancel` drops the deadline; a new one below it is its own.
    let detached = below.without_cancel();
    assert_eq!(detached.deadline(), None);
    assert_eq!(detached.with_value(5i8).deadline(), None);
    let (fresh, _fc) = detached.with_timeout(Duration::from_secs(10_000));
    let d3 = fresh.deadline().unwrap();
    assert!(d3 > d1);
}

#[test]
fn deadline_callback_runs_on_another_thread() {
    // Long enough to register the callback before it fires, even under
    // valgrind.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(500));
    let (tx, rx) = mpsc::channel();
    let observed = ctx.clone();
    let _af = ctx.after_func(move || {
        let me = thread::current();
        tx.send((me.id(), me.name().map(str::to_owned), observed.err()))
            .unwrap();
    });
    let (id, name, err) = rx
        .recv_timeout(patience())
        .expect("the deadline's callback ran");
    assert_ne!(
        id,
        thread::current().id(),
        "ran on the test thread, not the timer's (thread name {name:?})"
    );
    assert_eq!(
        err,
        Some(Error::DeadlineExceeded),
        "the callback runs after the node is done"
    );
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn cancel_before_the_deadline_wins_and_the_timer_does_nothing() {
    // Far enough off that the cancel below comes first even on a stalled
    // machine; the sleep later goes past it.
    let deadline = Instant::now() + Duration::from_millis(500);
    let (ctx, cancel) = Context::background().with_deadline(deadline);
    let runs = counter();
    let r = runs.clone();
    let af = ctx.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let child = ctx.with_value(1u8);
    cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );

    // Checking that something does NOT happen: sleep well past the deadline.
    sleep_past(deadline);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().downcast_ref::<Error>(),
        Some(&Error::Canceled)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!af.stop());
}

#[test]
fn cancel_with_cause_before_the_deadline_keeps_its_cause() {
    let deadline = Instant::now() + Duration::from_millis(500);
    let (ctx, cancel) =
        Context::background().with_deadline_cause(deadline, cause("deadline cause"));
    cancel.cancel_with_cause(cause("cancel cause"));
    sleep_past(deadline);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(ctx.cause().unwrap().to_string(), "cancel cause");
}

#[test]
fn dropped_deadline_context_is_freed_at_once_and_never_fires() {
    let parent_drops = counter();
    let value_drops = counter();
    let closure_drops = counter();
    let runs = counter();

    let base = Context::background().with_value(DropProbe(parent_drops.clone()));
    let deadline = Instant::now() + Duration::from_millis(500);
    let (ctx, cancel) = base.with_deadline(deadline);
    drop(base); // now only the deadline node holds the probe's node
    let below = ctx.with_value(DropProbe(value_drops.clone()));
    let guard = DropProbe(closure_drops.clone());
    let r = runs.clone();
    let af = ctx.after_func(move || {
        let _keep = &guard;
        r.fetch_add(1, Ordering::SeqCst);
    });

    drop(below);
    assert_eq!(value_drops.load(Ordering::SeqCst), 1);
    assert_eq!(parent_drops.load(Ordering::SeqCst), 0);
    drop(ctx);
    drop(cancel);
    // Right at drop time, not when the timer would have fired: the node let
    // go of its parent (whose value is the probe) and discarded its callback.
    assert_eq!(
        parent_drops.load(Ordering::SeqCst),
        1,
        "the subtree was not freed at drop"
    );
    assert_eq!(
        closure_drops.load(Ordering::SeqCst),
        1,
        "the callback was not dropped"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // Checking for absence: well past the deadline, it still never ran.
    sleep_past(deadline);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(af.stop(), "a callback dropped unrun can still be stopped");
}

#[test]
fn dropped_deadline_child_of_a_live_parent_never_fires() {
    let (parent, parent_cancel) = Context::background().with_cancel();
    let runs = counter();
    let deadline = Instant::now() + Duration::from_millis(500);
    let (child, child_cancel) = parent.with_deadline(deadline);
    let r = runs.clone();
    let _af = child.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    drop(child);
    drop(child_cancel);
    sleep_past(deadline);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    // And it left the parent's list: cancelling the parent does not reach it.
    parent_cancel.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn pending_done_keeps_a_deadline_node_alive_until_it_fires() {
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let done = ctx.done();
    drop(ctx);
    drop(cancel);
    assert_eq!(
        futures::executor::block_on(watchdog_async("done()", done)),
        Error::DeadlineExceeded
    );
}

#[test]
fn done_future_resolves_when_the_deadline_passes() {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let below = ctx.with_value("x");
    let (grandchild, _gc) = below.with_cancel();
    let got = futures::executor::block_on(watchdog_async("done()", grandchild.done()));
    assert_eq!(got, Error::DeadlineExceeded);
    let io: std::io::Error = got.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn many_timers_fire_each_not_before_its_deadline() {
    let (root, _rc) = Context::background().with_cancel();
    let fired_at: Arc<std::sync::Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let mut ctxs = Vec::new();
    let mut handles = Vec::new();
    for i in 0..200usize {
        let (ctx, c) = root.with_timeout(Duration::from_millis(1 + (i as u64 * 7) % 60));
        let log = fired_at.clone();
        handles.push(ctx.after_func(move || log.lock().unwrap().push((i, Instant::now()))));
        ctxs.push((ctx, c));
    }
    for (ctx, _) in &ctxs {
        assert_eq!(ctx.wait_timeout(patience()), Some(Error::DeadlineExceeded));
    }
    assert!(!root.is_done());
    // Callbacks run after the node is marked done; give the last ones time.
    let give_up = Instant::now() + patience();
    while fired_at.lock().unwrap().len() < ctxs.len() && Instant::now() < give_up {
        thread::yield_now();
    }
    let log = fired_at.lock().unwrap();
    assert_eq!(log.len(), ctxs.len());
    for &(i, at) in log.iter() {
        assert!(
            at >= ctxs[i].0.deadline().unwrap(),
            "context {i} fired early"
        );
    }
}

#[test]
fn a_panicking_callback_on_the_timer_thread_is_swallowed() {
    // Long enough to register the callbacks before it fires, even under
    // valgrind (else the panicking one would run here, at once).
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(500));
    let (child, _cc) = ctx.with_cancel();
    let (tx, rx) = mpsc::channel();
    let _boom = ctx.after_func(|| panic!("boom on the timer thread"));
    let _other = child.after_func(move || tx.send(thread::current().id()).unwrap());
    let ran_on = rx
        .recv_timeout(patience())
        .expect("the other callback still ran");
    assert_ne!(ran_on, thread::current().id());
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    // The panic did not take the timer thread down: later deadlines fire.
    for _ in 0..3 {
        let (later, _lc) = Context::background().with_timeout(Duration::from_millis(20));
        assert_eq!(
            later.wait_timeout(patience()),
            Some(Error::DeadlineExceeded)
        );
    }
}

#[test]
fn timer_thread_callbacks_may_use_timers() {
    // A callback on the timer thread creates and drops many deadline
    // contexts (enough to fill async-io's operation queue, which then gets
    // applied right there), cancels another deadline context, and arms a new
    // deadline whose own callback must fire too.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let (other, other_cancel) = Context::background().with_timeout(HOUR);
    let (tx, rx) = mpsc::channel();
    let _af = ctx.after_func(move || {
        for _ in 0..3000 {
            drop(Context::background().with_timeout(HOUR));
        }
        other_cancel.cancel();
        let (next, next_cancel) = Context::background().with_timeout(Duration::from_millis(20));
        let tx2 = tx.clone();
        let af = next.after_func(move || {
            let _keep = &next_cancel;
            tx2.send("second").unwrap();
        });
        drop(next);
        drop(af);
        tx.send("first").unwrap();
    });
    assert_eq!(rx.recv_timeout(patience()), Ok("first"));
    assert_eq!(other.err(), Some(Error::Canceled));
    assert_eq!(
        rx.recv_timeout(patience()),
        Ok("second"),
        "a timer armed on the timer thread never fired"
    );
}

#[test]
fn a_past_deadline_under_a_cancelled_parent_takes_the_parents_error() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(cause("parent first"));
    let (child, _c) = parent.with_deadline(Instant::now());
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(child.cause().unwrap().to_string(), "parent first");
    let (later, _c) = parent.with_timeout(Duration::from_millis(10));
    assert_eq!(later.err(), Some(Error::Canceled));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        later.err(),
        Some(Error::Canceled),
        "the first reason never changes"
    );
}

/// For tests that check something does NOT happen at a deadline: sleeps
/// until well past it (a signal cannot be awaited for an absence).
fn sleep_past(deadline: Instant) {
    thread::sleep(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(200));
}
