//! `cause()`: Go's `context.Cause`.

use std::fmt;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Cause, Context, Error};

use crate::common::{patience, HOUR};

#[derive(Debug, PartialEq, Eq)]
struct MyErr(&'static str);

impl fmt::Display for MyErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "my error: {}", self.0)
    }
}

impl std::error::Error for MyErr {}

#[derive(Debug)]
struct OtherErr;

impl fmt::Display for OtherErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("other")
    }
}

impl std::error::Error for OtherErr {}

fn cause(s: &'static str) -> Cause {
    Arc::new(MyErr(s))
}

fn my(ctx: &Context) -> Option<&'static str> {
    let c = ctx.cause()?;
    c.downcast_ref::<MyErr>().map(|e| e.0)
}

fn error_cause(ctx: &Context) -> Option<Error> {
    let c = ctx.cause()?;
    c.downcast_ref::<Error>().copied()
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn cause_is_none_while_live() {
    let (ctx, _c) = Context::background().with_cancel();
    let v = ctx.with_value(1u8);
    let (t, _tc) = v.with_timeout_cause(HOUR, cause("later"));
    let (d, _dc) = ctx.with_deadline_cause(Instant::now() + HOUR, cause("later"));
    for c in [&ctx, &v, &t, &d] {
        assert!(c.cause().is_none(), "{c}");
    }
}

#[test]
fn cancel_with_cause_reports_that_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    let given = cause("boom");
    cancel.cancel_with_cause(given.clone());
    let got = ctx.cause().expect("a cause once done");
    assert_eq!(got.downcast_ref::<MyErr>(), Some(&MyErr("boom")));
    assert!(got.downcast_ref::<OtherErr>().is_none());
    assert!(got.downcast_ref::<Error>().is_none());
    assert_eq!(got.to_string(), "my error: boom");
    // Shared, not copied.
    assert!(Arc::ptr_eq(&got, &given));
    // err() stays Canceled: the cause does not change the error.
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn cause_of_any_error_type_round_trips() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(Arc::new(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "pipe",
    )));
    let got = ctx.cause().unwrap();
    let io = got.downcast_ref::<std::io::Error>().expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::BrokenPipe);
}

#[test]
fn a_ctxtree_error_can_be_given_as_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(Arc::new(Error::DeadlineExceeded));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(error_cause(&ctx), Some(Error::DeadlineExceeded));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn child_cancelled_by_parent_reports_parents_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _c1) = parent.with_cancel();
    let valued = parent.with_value("x").with_value(2u32);
    let (below_value, _c2) = valued.with_cancel();
    let (timed, _c3) = below_value.with_timeout(HOUR);
    let (timed_cause, _c4) = below_value.with_timeout_cause(HOUR, cause("own deadline"));
    let below_timed = timed_cause.with_value(3u64);
    let given = cause("parent");
    cancel.cancel_with_cause(given.clone());
    for (name, ctx) in [
        ("parent", &parent),
        ("child", &child),
        ("valued", &valued),
        ("below_value", &below_value),
        ("timed", &timed),
        ("timed_cause", &timed_cause),
        ("below_timed", &below_timed),
    ] {
        assert_eq!(ctx.err(), Some(Error::Canceled), "{name}");
        assert_eq!(my(ctx), Some("parent"), "{name}");
    }
}

#[test]
fn no_cause_given_reports_the_error_itself() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_value(1u8).with_cancel();
    cancel.cancel();
    let c = ctx.cause().unwrap();
    assert_eq!(c.downcast_ref::<Error>(), Some(&Error::Canceled));
    assert_eq!(c.to_string(), "context canceled");
    assert_eq!(error_cause(&child), Some(Error::Canceled));
}

#[test]
fn guard_drop_reports_canceled_as_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    drop(cancel.guard());
    assert_eq!(error_cause(&ctx), Some(Error::Canceled));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn plain_deadline_reports_deadline_exceeded_as_cause() {
    let (ctx, _c) = Context::background().with_timeout(Duration::from_millis(20));
    let (child, _cc) = ctx.with_value(1u8).with_cancel();
    // Wait on the child: the timer thread finishes `ctx` before walking to
    // it, so a wait on `ctx` alone could return while `child` is still live.
    assert_eq!(
        child.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(error_cause(&ctx), Some(Error::DeadlineExceeded));
    assert_eq!(error_cause(&child), Some(Error::DeadlineExceeded));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn timeout_cause_is_reported_when_the_deadline_fires() {
    let (ctx, _c) =
        Context::background().with_timeout_cause(Duration::from_millis(20), cause("slow"));
    let (child, _cc) = ctx.with_cancel();
    let valued = child.with_value(0u8);
    assert!(ctx.cause().is_none() || Instant::now() >= ctx.deadline().unwrap());
    // Wait on the deepest node: the walk finishes parents first, so once it
    // is done all three are (a wait on `ctx` that starts after the timer
    // fired could return while the walk is still below it).
    assert_eq!(
        valued.wait_timeout(patience()),
        Some(Error::DeadlineExceeded),
        "20ms deadline not observed within 5s"
    );
    for c in [&ctx, &child, &valued] {
        assert_eq!(c.err(), Some(Error::DeadlineExceeded), "{c}");
        assert_eq!(my(c), Some("slow"), "{c}");
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn deadline_cause_is_reported_when_the_deadline_fires() {
    let (ctx, _c) = Context::background()
        .with_deadline_cause(Instant::now() + Duration::from_millis(20), cause("late"));
    assert_eq!(ctx.wait_timeout(patience()), Some(Error::DeadlineExceeded));
    assert_eq!(my(&ctx), Some("late"));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn plain_cancel_before_the_deadline_reports_canceled_not_the_deadline_cause() {
    let (ctx, cancel) = Context::background().with_timeout_cause(HOUR, cause("deadline"));
    let (child, _c) = ctx.with_cancel();
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(error_cause(&ctx), Some(Error::Canceled));
    assert_eq!(my(&ctx), None);
    assert_eq!(error_cause(&child), Some(Error::Canceled));

    let (ctx, cancel) =
        Context::background().with_deadline_cause(Instant::now() + HOUR, cause("deadline"));
    cancel.cancel();
    assert_eq!(error_cause(&ctx), Some(Error::Canceled));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn plain_cancel_before_a_short_deadline_is_not_overwritten_when_it_passes() {
    // Far enough off that the cancel comes first even on a stalled machine.
    let deadline = Instant::now() + Duration::from_millis(300);
    let (ctx, cancel) = Context::background().with_deadline_cause(deadline, cause("deadline"));
    cancel.cancel();
    // A sibling with the same deadline proves that the deadline has passed.
    let (witness, _w) = Context::background().with_deadline(deadline);
    assert_eq!(
        witness.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(error_cause(&ctx), Some(Error::Canceled));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn cancel_with_cause_before_the_deadline_reports_its_own_cause() {
    let (ctx, cancel) = Context::background().with_timeout_cause(HOUR, cause("deadline"));
    cancel.cancel_with_cause(cause("manual"));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(my(&ctx), Some("manual"));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn parent_cancel_before_the_deadline_reports_the_parents_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    let (ctx, _c) = parent.with_timeout_cause(HOUR, cause("deadline"));
    cancel.cancel_with_cause(cause("parent"));
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(my(&ctx), Some("parent"));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn parent_deadline_cause_reaches_a_child_with_its_own_later_deadline_cause() {
    let (parent, _pc) =
        Context::background().with_timeout_cause(Duration::from_millis(20), cause("outer"));
    let (child, _cc) = parent.with_timeout_cause(HOUR, cause("inner"));
    assert_eq!(
        child.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
    assert_eq!(my(&child), Some("outer"));
}

#[test]
fn passed_deadline_with_cause_is_born_done() {
    let (ctx, _c) = Context::background().with_deadline_cause(Instant::now(), cause("too late"));
    assert!(ctx.is_done());
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(my(&ctx), Some("too late"));

    let past = Instant::now() - Duration::from_millis(1);
    let (parent, _pc) = Context::background().with_cancel();
    let (ctx, _c) = parent
        .with_value(1u8)
        .with_deadline_cause(past, cause("past"));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(my(&ctx), Some("past"));
    assert!(!parent.is_done());

    let (ctx, _c) = Context::background().with_timeout_cause(Duration::ZERO, cause("zero"));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert_eq!(my(&ctx), Some("zero"));
}

#[test]
fn passed_deadline_with_cause_born_done_children_inherit_it() {
    let (ctx, cancel) = Context::background().with_deadline_cause(Instant::now(), cause("gone"));
    let (child, _c) = ctx.with_value(1u8).with_cancel();
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(my(&child), Some("gone"));
    // A cancel afterwards changes nothing.
    cancel.cancel_with_cause(cause("late cancel"));
    assert_eq!(my(&ctx), Some("gone"));
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn second_cancel_with_cause_does_not_replace_the_first() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_cancel();
    cancel.cancel_with_cause(cause("first"));
    cancel.cancel_with_cause(cause("second"));
    cancel.clone().cancel_with_cause(cause("third"));
    cancel.cancel();
    assert_eq!(my(&ctx), Some("first"));
    assert_eq!(my(&child), Some("first"));
}

#[test]
fn cause_after_plain_cancel_is_not_replaced_by_a_later_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    cancel.cancel_with_cause(cause("late"));
    assert_eq!(error_cause(&ctx), Some(Error::Canceled));
    assert_eq!(my(&ctx), None);
}

#[test]
fn cause_is_the_same_from_every_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (child, _c) = ctx.with_value(7u8).with_cancel();
    cancel.cancel_with_cause(cause("shared"));
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let child = child.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                (0..100).all(|_| my(&child) == Some("shared"))
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
}

#[test]
fn without_cancel_has_no_cause() {
    let (ctx, cancel) = Context::background().with_cancel();
    let detached = ctx.without_cancel();
    cancel.cancel_with_cause(cause("x"));
    assert!(detached.cause().is_none());
    // A cancelled context *derived from* a detached one reports its own cause.
    let (sub, sub_cancel) = detached.with_cancel();
    assert!(sub.cause().is_none());
    sub_cancel.cancel_with_cause(cause("sub"));
    assert_eq!(my(&sub), Some("sub"));
}

#[test]
fn done_parent_wins_over_a_passed_deadline_with_cause() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel_with_cause(cause("parent"));
    let past = Instant::now() - Duration::from_millis(1);
    let (child, _c) = parent.with_deadline_cause(past, cause("own"));
    assert_eq!(child.err(), Some(Error::Canceled));
    assert_eq!(my(&child), Some("parent"));

    let (timed_parent, _tp) = Context::background().with_deadline(Instant::now());
    let (child, _c) = timed_parent.with_timeout_cause(Duration::ZERO, cause("own"));
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(error_cause(&child), Some(Error::DeadlineExceeded));
}
