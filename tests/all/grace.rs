//! `with_grace`: a child done a grace period after its parent is done (or at
//! once by its own canceller), with the parent's error, cause and values.
//!
//! Graces that run out are `async-io` timers, as deadlines are: they never
//! fire early, so "done no sooner than the grace" is a safe assertion, and
//! "done by" bounds are the tests' generous patience (`common::patience`)
//! because the machine is small and noisy. "Not done yet" is checked with a grace of an hour. Miri cannot
//! run the timers: under Miri only the zero and `Duration::MAX` graces run,
//! among them the real-thread races at the end.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Context, Error};

use crate::common::{cause, cause_is_error, cause_text, counter, patience, DropProbe, HOUR};

/// A grace short enough to wait for.
const SHORT: Duration = Duration::from_millis(30);

/// Waits for `ctx` (patiently) and returns how long it took from `since`.
fn done_after(ctx: &Context, since: Instant) -> Duration {
    assert!(
        ctx.wait_timeout(patience()).is_some(),
        "{ctx} not done within {:?}",
        patience()
    );
    since.elapsed()
}

// --- the grace runs out after the parent is done ---

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn done_a_grace_after_the_parent() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_grace(SHORT);
    assert!(!child.is_done());
    let at = Instant::now();
    cancel.cancel();
    assert!(parent.is_done());
    assert!(done_after(&child, at) >= SHORT, "the grace ran out early");
    assert_eq!(child.err(), Some(Error::Canceled));
    assert!(cause_is_error(&child, Error::Canceled));
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn the_parents_cancel_does_not_finish_it() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, own) = parent.with_grace(HOUR);
    let (grandchild, _g) = child.with_cancel();
    cancel.cancel();
    // `cancel()` has returned: every child of the parent is done, but the
    // grace child is not one of them.
    assert!(!child.is_done());
    assert!(!grandchild.is_done());
    assert_eq!(child.err(), None);
    assert!(child.cause().is_none());
    // Its own canceller still cuts the grace short.
    own.cancel_with_cause(cause("hard stop"));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(cause_text(&child).as_deref(), Some("hard stop"));
    assert_eq!(cause_text(&grandchild).as_deref(), Some("hard stop"));
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn a_long_grace_is_not_over_soon() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_grace(HOUR);
    cancel.cancel();
    assert_eq!(child.wait_timeout(Duration::from_millis(50)), None);
    assert!(!child.is_done());
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn done_future_resolves_when_the_grace_runs_out() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_grace(SHORT);
    let done = child.done();
    let waiter = thread::spawn(move || futures::executor::block_on(done));
    let at = Instant::now();
    cancel.cancel();
    assert_eq!(waiter.join().unwrap(), Error::Canceled);
    assert!(at.elapsed() >= SHORT);
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn the_grace_reaches_the_childs_subtree_with_the_parents_reason() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_grace(SHORT);
    let (grandchild, _g) = child.with_value(1u8).with_cancel();
    let (deadline, _d) = grandchild.with_timeout(HOUR);
    cancel.cancel_with_cause(cause("soft"));
    assert_eq!(deadline.wait_timeout(patience()), Some(Error::Canceled));
    for ctx in [&child, &grandchild, &deadline] {
        assert_eq!(ctx.err(), Some(Error::Canceled));
        assert_eq!(cause_text(ctx).as_deref(), Some("soft"));
    }
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn after_func_on_the_child_runs_when_the_grace_runs_out() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_grace(SHORT);
    let (tx, rx) = std::sync::mpsc::channel();
    let _af = child.after_func(move || {
        let _ = tx.send(thread::current().id());
    });
    cancel.cancel();
    let ran_on = rx.recv_timeout(patience()).expect("the callback ran");
    // On the timer's thread, not the one that cancelled the parent.
    assert_ne!(ran_on, thread::current().id());
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn graces_add_up_along_a_chain() {
    let (root, cancel) = Context::background().with_cancel();
    let (first, _c1) = root.with_grace(SHORT);
    let (second, _c2) = first.with_value(2u8).with_grace(SHORT);
    let at = Instant::now();
    cancel.cancel();
    let first_after = done_after(&first, at);
    let second_after = done_after(&second, at);
    assert!(first_after >= SHORT);
    assert!(second_after >= 2 * SHORT);
    assert_eq!(second.err(), Some(Error::Canceled));
}

// --- the parent already done ---

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn parent_already_done_starts_the_grace_now() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(cause("earlier"));
    let at = Instant::now();
    let (child, _c) = parent.with_grace(SHORT);
    assert!(done_after(&child, at) >= SHORT);
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(cause_text(&child).as_deref(), Some("earlier"));
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn parent_already_done_is_not_a_done_child() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (child, own) = parent.with_grace(HOUR);
    assert!(!child.is_done());
    // Its descendants are born live too, and follow it.
    let (grandchild, _g) = child.with_cancel();
    assert!(!grandchild.is_done());
    own.cancel();
    assert_eq!(grandchild.err(), Some(Error::Canceled));
}

// --- zero ---

#[test]
fn zero_grace_is_done_when_the_parents_cancel_returns() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_value(3u16).with_grace(Duration::ZERO);
    let (grandchild, _g) = child.with_cancel();
    let ran_on = Arc::new(Mutex::new(None));
    let slot = ran_on.clone();
    let _af = child.after_func(move || *slot.lock().unwrap() = Some(thread::current().id()));
    assert!(!child.is_done());
    cancel.cancel_with_cause(cause("now"));
    for ctx in [&child, &grandchild] {
        assert_eq!(ctx.err(), Some(Error::Canceled));
        assert_eq!(cause_text(ctx).as_deref(), Some("now"));
    }
    // On the thread that cancelled the parent, before its cancel returned.
    assert_eq!(*ran_on.lock().unwrap(), Some(thread::current().id()));
}

#[test]
fn zero_grace_of_a_done_parent_is_done_at_once() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (child, _c) = parent.with_grace(Duration::ZERO);
    assert_eq!(child.err(), Some(Error::Canceled));
    assert!(cause_is_error(&child, Error::Canceled));
    let (grandchild, _g) = child.with_cancel();
    assert!(grandchild.is_done());
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn zero_grace_follows_a_deadline() {
    let (parent, _c) = Context::background().with_timeout(Duration::from_millis(10));
    let (child, _g) = parent.with_grace(Duration::ZERO);
    assert_eq!(
        child.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert!(parent.is_done());
    assert!(cause_is_error(&child, Error::DeadlineExceeded));
}

#[test]
fn zero_grace_childs_callback_panic_resumes_from_the_parents_cancel() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_grace(Duration::ZERO);
    let ran = counter();
    let r = ran.clone();
    let _boom = child.after_func(|| panic!("boom in a grace child's callback"));
    let _other = parent.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cancel.cancel()));
    let panic = result.expect_err("the callback's panic is resumed");
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"boom in a grace child's callback")
    );
    assert!(child.is_done());
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

// --- Duration::MAX ---

#[test]
fn max_grace_never_runs_out() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, own) = parent.with_grace(Duration::MAX);
    cancel.cancel();
    assert!(!child.is_done());
    if !cfg!(miri) {
        assert_eq!(child.wait_timeout(Duration::from_millis(20)), None);
    }
    own.cancel_with_cause(cause("only by its own"));
    assert_eq!(cause_text(&child).as_deref(), Some("only by its own"));
}

#[test]
fn max_grace_of_a_done_parent_stays_live() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let (child, own) = parent.with_grace(Duration::MAX);
    assert!(!child.is_done());
    own.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
}

// --- the child's own canceller ---

#[test]
fn own_canceller_first_wins() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, own) = parent.with_grace(Duration::ZERO);
    let (grandchild, _g) = child.with_cancel();
    own.cancel_with_cause(cause("own"));
    assert!(!parent.is_done());
    assert_eq!(grandchild.err(), Some(Error::Canceled));
    cancel.cancel_with_cause(cause("parent"));
    for ctx in [&child, &grandchild] {
        assert_eq!(cause_text(ctx).as_deref(), Some("own"));
    }
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn own_canceller_during_the_grace_wins() {
    let (parent, _pc) = Context::background().with_timeout(Duration::from_millis(5));
    let (child, own) = parent.with_grace(HOUR);
    assert_eq!(
        parent.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert!(!child.is_done());
    own.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
    assert!(cause_is_error(&child, Error::Canceled));
}

#[test]
fn cancelling_the_child_leaves_the_parent_alone() {
    let (parent, _pc) = Context::background().with_cancel();
    let (sibling, _s) = parent.with_cancel();
    let (child, own) = parent.with_grace(HOUR);
    own.cancel();
    assert!(child.is_done());
    assert!(!parent.is_done());
    assert!(!sibling.is_done());
}

// --- values, causes, deadlines ---

#[test]
fn values_come_from_the_parent() {
    struct Tenant(&'static str);
    let (parent, _c) = Context::background()
        .with_value(Tenant("acme"))
        .with_value(7u32)
        .with_cancel();
    let (child, _g) = parent.with_grace(HOUR);
    assert_eq!(child.value::<Tenant>().map(|t| t.0), Some("acme"));
    assert_eq!(child.value::<u32>(), Some(&7));
    let below = child.with_value(8u32);
    assert_eq!(below.value::<u32>(), Some(&8));
    assert_eq!(child.value::<u32>(), Some(&7));
    assert_eq!(parent.value::<u32>(), Some(&7));
    assert_eq!(child.value::<u64>(), None);
}

#[test]
fn cause_and_err_of_a_canceled_parent() {
    // With a cause: the parent's cause.
    let (parent, cancel) = Context::background().with_value(1u8).with_cancel();
    let via_value = parent.with_value(2u8);
    let (child, _c) = via_value.with_grace(Duration::ZERO);
    cancel.cancel_with_cause(cause("maintenance"));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(cause_text(&child).as_deref(), Some("maintenance"));
    assert!(Arc::ptr_eq(
        &child.cause().unwrap(),
        &parent.cause().unwrap()
    ));

    // Without one: the error itself, as usual.
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c) = parent.with_grace(Duration::ZERO);
    cancel.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
    assert!(cause_is_error(&child, Error::Canceled));
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn cause_and_err_of_a_deadline_exceeded_parent() {
    // No cause: the error itself.
    let (parent, _p) = Context::background().with_timeout(Duration::from_millis(5));
    let (child, _c) = parent.with_grace(SHORT);
    assert_eq!(
        child.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert!(child.err().unwrap().is_timeout());
    assert!(cause_is_error(&child, Error::DeadlineExceeded));

    // A deadline's cause.
    let (parent, _p) =
        Context::background().with_timeout_cause(Duration::from_millis(5), cause("budget spent"));
    let (child, _c) = parent.with_grace(SHORT);
    assert_eq!(
        child.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(cause_text(&child).as_deref(), Some("budget spent"));
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn deadline_is_the_parents_plus_the_grace() {
    let (parent, _p) = Context::background().with_timeout(HOUR);
    let grace = Duration::from_millis(1500);
    let (child, _c) = parent.with_value(1u8).with_grace(grace);
    assert_eq!(child.deadline(), Some(parent.deadline().unwrap() + grace));
    // Below it, an earlier deadline is the child's own; a later one is not.
    let (short, _s) = child.with_timeout(Duration::from_secs(1));
    assert!(short.deadline().unwrap() < child.deadline().unwrap());
    let (long, _l) = child.with_timeout(2 * HOUR);
    assert_eq!(long.deadline(), child.deadline());
    // No deadline above: none here.
    let (plain, _p) = Context::background().with_cancel();
    assert_eq!(plain.with_grace(grace).0.deadline(), None);
    // Overflow: none.
    assert_eq!(parent.with_grace(Duration::MAX).0.deadline(), None);
}

// --- parents that can never be done ---

#[test]
fn parents_that_are_never_done_give_a_root_like_child() {
    let detached = {
        let (p, cancel) = Context::background().with_value(5u8).with_cancel();
        let d = p.without_cancel();
        cancel.cancel();
        d
    };
    for parent in [
        Context::background(),
        Context::todo(),
        detached.with_value(6u16),
    ] {
        let (child, own) = parent.with_grace(Duration::ZERO);
        assert!(!child.is_done());
        assert_eq!(child.deadline(), None);
        let (grandchild, _g) = child.with_cancel();
        own.cancel();
        assert_eq!(grandchild.err(), Some(Error::Canceled));
    }
    let (child, _c) = detached.with_grace(Duration::ZERO);
    assert_eq!(child.value::<u8>(), Some(&5));
    assert!(!child.is_done());
}

// --- merged parents ---

#[test]
fn a_merged_parent_passes_on_its_second_parents_reason() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_cancel();
    let (merged, _cm) = a.merge(&b);
    let (child, _c) = merged.with_grace(Duration::ZERO);
    cancel_b.cancel_with_cause(cause("second parent"));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(cause_text(&child).as_deref(), Some("second parent"));
    assert!(!a.is_done());
}

#[test]
fn a_grace_child_as_a_second_parent() {
    let (a, _ca) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_cancel();
    let (grace, _g) = b.with_grace(Duration::ZERO);
    let (merged, _cm) = a.merge(&grace);
    let (below, _c) = merged.with_cancel();
    cancel_b.cancel();
    assert_eq!(merged.err(), Some(Error::Canceled));
    assert_eq!(below.err(), Some(Error::Canceled));
}

// --- dropping early ---

#[test]
fn a_dropped_child_is_freed_and_never_started() {
    let (parent, cancel) = Context::background().with_cancel();
    let freed = counter();
    let ran = counter();
    let (child, own) = parent
        .with_value(DropProbe(freed.clone()))
        .with_grace(Duration::ZERO);
    let r = ran.clone();
    let af = child.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    drop((child, own));
    // The parent's callback list does not keep it: the value above it
    // (held by the child alone) is gone.
    assert_eq!(freed.load(Ordering::SeqCst), 1);
    cancel.cancel();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(af.stop(), "dropped without running");
}

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn dropping_the_child_during_its_grace_frees_it() {
    let (parent, cancel) = Context::background().with_cancel();
    let freed = counter();
    let ran = counter();
    let (child, own) = parent
        .with_value(DropProbe(freed.clone()))
        .with_grace(SHORT);
    let r = ran.clone();
    let af = child.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    cancel.cancel();
    // The timer is armed; it does not keep the child.
    drop((child, own));
    assert_eq!(freed.load(Ordering::SeqCst), 1);
    // A sibling with the same grace, started later, runs out; the reactor
    // fires timers in the order of their instants, so the dropped child's
    // would have fired by then, had it not been disarmed.
    let (sibling, _s) = parent.with_grace(SHORT);
    assert!(sibling.wait_timeout(patience()).is_some());
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(af.stop());
}

#[test]
fn many_dropped_children_leave_the_parent_usable() {
    let (parent, cancel) = Context::background().with_cancel();
    let kept: Vec<_> = (0..10).map(|_| parent.with_grace(Duration::ZERO)).collect();
    for _ in 0..if cfg!(miri) { 50 } else { 10_000 } {
        drop(parent.with_grace(Duration::ZERO));
    }
    // Cancelled children leave too.
    for _ in 0..if cfg!(miri) { 10 } else { 1_000 } {
        let (child, own) = parent.with_grace(HOUR);
        own.cancel();
        assert!(child.is_done());
    }
    cancel.cancel();
    for (child, _) in &kept {
        assert_eq!(child.err(), Some(Error::Canceled));
    }
}

// --- Display, Debug ---

#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn display_and_debug() {
    let (parent, cancel) = Context::background().with_value(1u32).with_cancel();
    let (child, own) = parent.with_grace(Duration::from_millis(1500));
    assert_eq!(
        child.to_string(),
        "context.Background.WithValue(u32).WithCancel.WithGrace(1.5s)"
    );
    assert_eq!(
        child.with_cancel().0.to_string(),
        "context.Background.WithValue(u32).WithCancel.WithGrace(1.5s).WithCancel"
    );
    assert_eq!(
        Context::todo().with_grace(Duration::ZERO).0.to_string(),
        "context.TODO.WithGrace(0ns)"
    );
    assert!(format!("{child:?}").contains("state: live"));
    cancel.cancel();
    assert!(format!("{child:?}").contains("state: live"));
    own.cancel();
    let debug = format!("{child:?}");
    assert!(debug.contains("WithGrace(1.5s)"), "{debug}");
    assert!(debug.contains("state: context canceled"), "{debug}");
}

// --- races on real threads (std only, sized for Miri) ---

fn rounds(full: usize) -> usize {
    if cfg!(miri) {
        4
    } else {
        full
    }
}

/// Runs `a` and `b` on two threads released together.
fn race<A, B>(a: A, b: B)
where
    A: FnOnce() + Send + 'static,
    B: FnOnce() + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let other = barrier.clone();
    let t = thread::spawn(move || {
        other.wait();
        a();
    });
    barrier.wait();
    b();
    t.join().unwrap();
}

/// The parent cancelled on one thread while the grace child's last handles
/// go on another: the callback finds the child and cancels it (zero grace),
/// or finds it gone, or was removed first. Either way the child is freed
/// once, and a later grace child of the done parent still works.
#[test]
fn parent_cancel_races_child_drop() {
    for grace in [Duration::ZERO, Duration::MAX] {
        for _ in 0..rounds(300) {
            let (parent, cancel) = Context::background().with_cancel();
            let freed = counter();
            let ran = counter();
            let (child, own) = parent
                .with_value(DropProbe(freed.clone()))
                .with_grace(grace);
            let r = ran.clone();
            let af = child.after_func(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            let (grandchild, grandchild_cancel) = child.with_cancel();
            race(move || drop((child, own)), move || cancel.cancel());
            // The grandchild holds the child.
            assert_eq!(freed.load(Ordering::SeqCst), 0);
            if grace.is_zero() {
                // Not dropped: the grace ran on the cancelling thread.
                assert_eq!(grandchild.err(), Some(Error::Canceled));
                assert_eq!(ran.load(Ordering::SeqCst), 1);
                assert!(!af.stop());
            } else {
                assert!(!grandchild.is_done());
            }
            drop((grandchild, grandchild_cancel));
            assert_eq!(freed.load(Ordering::SeqCst), 1);
            let (late, _l) = parent.with_grace(Duration::ZERO);
            assert!(late.is_done());
        }
    }
}

/// As above with nothing holding the child: it may be freed on either
/// thread, by its dropper or by the cancelling thread's callback that held
/// it last.
#[test]
fn parent_cancel_races_last_drop() {
    for _ in 0..rounds(300) {
        let (parent, cancel) = Context::background().with_cancel();
        let freed = counter();
        let pair = parent
            .with_value(DropProbe(freed.clone()))
            .with_grace(Duration::ZERO);
        race(move || drop(pair), move || cancel.cancel());
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        assert!(parent.is_done());
    }
}

/// The parent cancelled on one thread while the child's own canceller
/// fires on another, with different causes: exactly one reason wins, and
/// the child's descendants report that same one.
#[test]
fn parent_cancel_races_own_cancel() {
    for _ in 0..rounds(300) {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, own) = parent.with_grace(Duration::ZERO);
        let (grandchild, _g) = child.with_value(1u8).with_cancel();
        race(
            move || own.cancel_with_cause(cause("own")),
            move || cancel.cancel_with_cause(cause("parent")),
        );
        let won = cause_text(&child).expect("done");
        assert!(won == "own" || won == "parent", "{won}");
        assert_eq!(cause_text(&grandchild).as_deref(), Some(won.as_str()));
        assert_eq!(cause_text(&parent).as_deref(), Some("parent"));
    }
}

/// A grace that runs out (on the timer's thread) while the child's own
/// canceller fires: one reason wins, and the timer is disarmed or fires on
/// a done node harmlessly.
#[test]
#[cfg_attr(miri, ignore = "async-io timers do not run under Miri")]
fn grace_timer_races_own_cancel() {
    for i in 0..rounds(100) {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, own) = parent.with_grace(Duration::from_micros(200 + 10 * (i as u64 % 20)));
        let (grandchild, _g) = child.with_cancel();
        cancel.cancel_with_cause(cause("parent"));
        thread::sleep(Duration::from_micros(200));
        own.cancel_with_cause(cause("own"));
        assert!(child.is_done());
        let won = cause_text(&child).unwrap();
        assert!(won == "own" || won == "parent", "{won}");
        // If the timer thread won, its walk may still be on its way down:
        // a losing cancel returns without waiting for it. Wait on the
        // grandchild itself.
        assert!(grandchild.wait_timeout(patience()).is_some());
        assert_eq!(cause_text(&grandchild).as_deref(), Some(won.as_str()));
    }
}

/// Deriving grace children of a parent while another thread cancels it:
/// each child either registered in time (its grace starts in the cancel)
/// or found the parent done (its grace starts at once); either way a zero
/// grace child ends up done with the parent's cause.
#[test]
fn derive_races_parent_cancel() {
    for _ in 0..rounds(300) {
        let (parent, cancel) = Context::background().with_cancel();
        let p = parent.clone();
        let derived = Arc::new(Mutex::new(Vec::new()));
        let out = derived.clone();
        race(
            move || {
                for _ in 0..3 {
                    let pair = p.with_grace(Duration::ZERO);
                    out.lock().unwrap().push(pair);
                }
            },
            move || cancel.cancel_with_cause(cause("parent")),
        );
        for (child, _own) in derived.lock().unwrap().iter() {
            assert_eq!(cause_text(child).as_deref(), Some("parent"));
        }
    }
}
