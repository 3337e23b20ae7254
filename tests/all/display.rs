//! `Display` and `Debug` of `Context`, and everything about `Error`.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxtree::{Context, Error};

use crate::common::{patience, HOUR};

struct UserId(#[allow(dead_code)] u64);

// --- Context: Display ---

#[test]
fn display_roots() {
    assert_eq!(Context::background().to_string(), "context.Background");
    assert_eq!(Context::todo().to_string(), "context.TODO");
    assert_eq!(Context::default().to_string(), "context.Background");
}

#[test]
fn display_with_cancel() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(ctx.to_string(), "context.Background.WithCancel");
    // Being done does not change the path.
    cancel.cancel();
    assert_eq!(ctx.to_string(), "context.Background.WithCancel");
}

#[test]
fn display_without_cancel() {
    let ctx = Context::background().without_cancel();
    assert_eq!(ctx.to_string(), "context.Background.WithoutCancel");
    let (c, _k) = Context::todo().with_cancel();
    assert_eq!(
        c.without_cancel().to_string(),
        "context.TODO.WithCancel.WithoutCancel"
    );
}

#[test]
fn display_with_value() {
    assert_eq!(
        Context::todo().with_value(5u32).to_string(),
        "context.TODO.WithValue(u32)"
    );
    assert_eq!(
        Context::background().with_value(UserId(1)).to_string(),
        format!(
            "context.Background.WithValue({})",
            std::any::type_name::<UserId>()
        )
    );
    assert_eq!(std::any::type_name::<UserId>(), "all::display::UserId");
}

#[test]
fn display_nested() {
    assert_eq!(
        std::any::type_name::<String>(),
        "alloc::string::String",
        "the expected strings below assume this type name"
    );
    let (c, _k) = Context::todo().with_cancel();
    let ctx = c.with_value(String::from("x"));
    assert_eq!(
        ctx.to_string(),
        "context.TODO.WithCancel.WithValue(alloc::string::String)"
    );
    let (deeper, _k2) = ctx.without_cancel().with_value(1u8).with_cancel();
    assert_eq!(
        deeper.to_string(),
        "context.TODO.WithCancel.WithValue(alloc::string::String).WithoutCancel.WithValue(u8).WithCancel"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn display_with_deadline() {
    let (ctx, _k) = Context::background().with_deadline(Instant::now() + HOUR);
    let s = ctx.to_string();
    assert!(s.starts_with("context.Background.WithDeadline("), "{s}");
    assert!(s.ends_with(')'), "{s}");
    assert!(s.len() > "context.Background.WithDeadline()".len(), "{s}");

    let (t, _k2) = Context::background().with_timeout(HOUR);
    let s = t.to_string();
    assert!(s.starts_with("context.Background.WithDeadline("), "{s}");
    assert!(s.ends_with(')'), "{s}");

    // In the middle of a path.
    let (t2, _k3) = Context::todo().with_value(1u32).with_timeout(HOUR);
    let s = t2.with_value(2u64).to_string();
    assert!(
        s.starts_with("context.TODO.WithValue(u32).WithDeadline("),
        "{s}"
    );
    assert!(s.ends_with(").WithValue(u64)"), "{s}");
}

#[test]
fn display_of_a_passed_deadline_still_names_it() {
    let (ctx, _k) = Context::background().with_deadline(Instant::now());
    assert!(ctx.is_done());
    let s = ctx.to_string();
    assert!(s.starts_with("context.Background.WithDeadline("), "{s}");
    assert!(s.ends_with(')'), "{s}");
}

/// Checks `s` is `context.Background.WithDeadline(…)` followed by `rest`,
/// with exactly one `WithDeadline` (the time left in it keeps changing).
fn assert_one_deadline_then(s: &str, rest: &str) {
    assert!(s.starts_with("context.Background.WithDeadline("), "{s}");
    assert!(
        s.ends_with(&format!("){rest}")),
        "{s} should end with ){rest}"
    );
    assert_eq!(s.matches("WithDeadline").count(), 1, "{s}");
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn later_deadline_than_the_parents_degrades_to_with_cancel() {
    let (parent, _k) = Context::background().with_timeout(HOUR);
    let parent_deadline = parent.deadline().expect("parent has a deadline");
    assert_one_deadline_then(&parent.to_string(), "");

    let (later, _k2) = parent.with_deadline(Instant::now() + 2 * HOUR);
    assert_one_deadline_then(&later.to_string(), ".WithCancel");
    assert_eq!(later.deadline(), Some(parent_deadline));

    // At the same instant: also the parent's ("at or before").
    let (same, _k3) = parent.with_deadline(parent_deadline);
    assert_one_deadline_then(&same.to_string(), ".WithCancel");
    assert_eq!(same.deadline(), Some(parent_deadline));

    // Through a value node too, and for with_timeout and the cause variants.
    let v = parent.with_value(3u8);
    let (later_t, _k4) = v.with_timeout(2 * HOUR);
    assert_one_deadline_then(&later_t.to_string(), ".WithValue(u8).WithCancel");
    assert_eq!(later_t.deadline(), Some(parent_deadline));
    let (later_c, _k5) = v.with_timeout_cause(2 * HOUR, Arc::new(Error::Canceled));
    assert_one_deadline_then(&later_c.to_string(), ".WithValue(u8).WithCancel");
    assert_eq!(later_c.deadline(), Some(parent_deadline));

    // An earlier one does not degrade.
    let (earlier, _k6) = parent.with_timeout(Duration::from_secs(60));
    let s = earlier.to_string();
    assert!(s.starts_with("context.Background.WithDeadline("), "{s}");
    assert_eq!(s.matches("WithDeadline(").count(), 2, "{s}");
    assert!(s.ends_with(')'), "{s}");
    assert!(earlier.deadline().unwrap() < parent_deadline);
}

#[test]
fn overflowing_timeout_has_no_deadline() {
    let (ctx, _k) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(ctx.deadline(), None);
    assert!(!ctx.to_string().contains("WithDeadline"), "{ctx}");
    assert!(!ctx.is_done());
}

// --- Context: Debug ---

#[test]
fn debug_shows_path_and_live() {
    let (ctx, _k) = Context::background().with_cancel();
    let ctx = ctx.with_value(7u32);
    let d = format!("{ctx:?}");
    assert!(
        d.contains("context.Background.WithCancel.WithValue(u32)"),
        "{d}"
    );
    assert!(d.contains("live"), "{d}");
    assert!(!d.contains("context canceled"), "{d}");

    let root = format!("{:?}", Context::todo());
    assert!(
        root.contains("context.TODO") && root.contains("live"),
        "{root}"
    );
    let det = format!("{:?}", Context::background().without_cancel());
    assert!(
        det.contains("WithoutCancel") && det.contains("live"),
        "{det}"
    );
}

#[test]
fn debug_shows_canceled() {
    let (ctx, cancel) = Context::background().with_cancel();
    let child = ctx.with_value(1u8);
    cancel.cancel();
    for d in [format!("{ctx:?}"), format!("{child:?}")] {
        assert!(d.contains("context.Background.WithCancel"), "{d}");
        assert!(d.contains("context canceled"), "{d}");
        assert!(!d.contains("live"), "{d}");
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn debug_shows_deadline_exceeded() {
    // Long enough that the first Debug sees it live even under valgrind.
    let (ctx, _k) = Context::background().with_timeout(Duration::from_millis(500));
    assert!(format!("{ctx:?}").contains("live"));
    assert_eq!(
        ctx.wait_timeout(patience()),
        Some(Error::DeadlineExceeded),
        "500ms deadline not observed within the patience"
    );
    let d = format!("{ctx:?}");
    assert!(d.contains("context.Background.WithDeadline("), "{d}");
    assert!(d.contains("context deadline exceeded"), "{d}");
    assert!(!d.contains("live"), "{d}");
}

#[test]
fn debug_of_other_handles() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert!(format!("{cancel:?}").contains("Canceller"));
    let guard = cancel.clone().guard();
    assert!(format!("{guard:?}").contains("CancelGuard"));
    let handle = ctx.after_func(|| {});
    assert!(format!("{handle:?}").contains("AfterFunc"));
    let done = ctx.done();
    assert!(format!("{done:?}").contains("Done"));
    drop(guard);
    assert!(ctx.is_done());
}

// --- Error ---

#[test]
fn error_display_is_gos() {
    assert_eq!(Error::Canceled.to_string(), "context canceled");
    assert_eq!(
        Error::DeadlineExceeded.to_string(),
        "context deadline exceeded"
    );
}

#[test]
fn error_is_timeout() {
    assert!(Error::DeadlineExceeded.is_timeout());
    assert!(!Error::Canceled.is_timeout());
}

#[test]
fn error_is_copy_eq_hash() {
    fn traits<T: Copy + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static>() {}
    traits::<Error>();
    let a = Error::Canceled;
    let b = a; // copy
    assert_eq!(a, b);
    assert_ne!(Error::Canceled, Error::DeadlineExceeded);
    let set: HashSet<Error> = [Error::Canceled, Error::DeadlineExceeded, Error::Canceled, b]
        .into_iter()
        .collect();
    assert_eq!(set.len(), 2);
    assert!(set.contains(&Error::Canceled));
    assert!(set.contains(&Error::DeadlineExceeded));
    assert_eq!(format!("{:?}", Error::Canceled), "Canceled");
    assert_eq!(format!("{:?}", Error::DeadlineExceeded), "DeadlineExceeded");
}

#[test]
fn error_is_a_std_error() {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Canceled);
    assert_eq!(boxed.to_string(), "context canceled");
    assert!(boxed.source().is_none());
    assert_eq!(boxed.downcast_ref::<Error>(), Some(&Error::Canceled));
    let cause: ctxtree::Cause = Arc::new(Error::DeadlineExceeded);
    assert_eq!(cause.to_string(), "context deadline exceeded");
}

#[test]
fn error_into_io_error() {
    let e: io::Error = Error::Canceled.into();
    assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    let inner = e.get_ref().expect("an inner error");
    assert_eq!(inner.downcast_ref::<Error>(), Some(&Error::Canceled));
    assert_eq!(e.to_string(), "context canceled");

    let e = io::Error::from(Error::DeadlineExceeded);
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        e.get_ref().and_then(|i| i.downcast_ref::<Error>()),
        Some(&Error::DeadlineExceeded)
    );
    let back = e.into_inner().unwrap().downcast::<Error>().unwrap();
    assert_eq!(*back, Error::DeadlineExceeded);
}

fn work(ctx: &Context) -> io::Result<u32> {
    let n = futures::executor::block_on(ctx.run(async { 40u32 }))?;
    Ok(n + 2)
}

fn blocked(ctx: &Context) -> io::Result<u32> {
    futures::executor::block_on(ctx.run(futures::future::pending::<u32>()))?;
    unreachable!("the context is done, so `?` returns early")
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn question_mark_from_run_in_an_io_result_fn() {
    let (ctx, cancel) = Context::background().with_cancel();
    assert_eq!(work(&ctx).unwrap(), 42);
    cancel.cancel();
    let e = work(&ctx).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    assert_eq!(
        e.get_ref().and_then(|i| i.downcast_ref::<Error>()),
        Some(&Error::Canceled)
    );

    let (timed, _k) = Context::background().with_timeout(Duration::from_millis(20));
    let e = blocked(&timed).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        e.get_ref().and_then(|i| i.downcast_ref::<Error>()),
        Some(&Error::DeadlineExceeded)
    );
}
