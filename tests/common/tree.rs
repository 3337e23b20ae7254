//! What tests put into a tree of contexts and check about it: causes that
//! say who cancelled, probes that count drops, and the live check.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ctxtree::{Canceller, Cause, Context, Error};

use super::poll::poll_once;

/// A cause made of a message (an `io::Error`).
/// `ctx.with_timeout(HOUR)`: a child whose deadline no test lives to see,
/// for the tests whose point is the shape of the tree or a race, not the
/// deadline. Under Miri a plain `with_cancel()` child instead: a future
/// deadline registers an async-io timer, and Miri cannot emulate the
/// `timerfd_create` that async-io's reactor needs.
pub fn hour_or_cancel(ctx: &Context) -> (Context, Canceller) {
    if cfg!(miri) {
        ctx.with_cancel()
    } else {
        ctx.with_timeout(super::HOUR)
    }
}

pub fn cause(msg: &str) -> Cause {
    Arc::new(std::io::Error::other(msg.to_string()))
}

/// The text of `ctx.cause()`, if any.
pub fn cause_text(ctx: &Context) -> Option<String> {
    ctx.cause().map(|c| c.to_string())
}

/// An error with a number, to tell causes apart.
#[derive(Debug, PartialEq, Eq)]
pub struct MyErr(pub usize);

impl fmt::Display for MyErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "my error {}", self.0)
    }
}

impl std::error::Error for MyErr {}

/// A cause carrying `MyErr(n)`.
pub fn my_cause(n: usize) -> Cause {
    Arc::new(MyErr(n))
}

/// The `MyErr` number carried by `ctx.cause()`, if any.
pub fn cause_id(ctx: &Context) -> Option<usize> {
    ctx.cause()
        .and_then(|c| c.downcast_ref::<MyErr>().map(|e| e.0))
}

/// Whether `ctx.cause()` is the `ctxtree::Error` `err` itself.
pub fn cause_is_error(ctx: &Context, err: Error) -> bool {
    ctx.cause()
        .is_some_and(|c| c.downcast_ref::<Error>() == Some(&err))
}

/// Asserts that `ctx` is live in every way it can be asked: `is_done`,
/// `err`, `cause`, and a `done()` polled once.
#[track_caller]
pub fn assert_live(name: &str, ctx: &Context) {
    assert!(!ctx.is_done(), "{name} ({ctx}) should be live");
    assert_eq!(ctx.err(), None, "{name}");
    assert!(ctx.cause().is_none(), "{name}");
    assert!(poll_once(&mut ctx.done()).is_pending(), "{name}: done()");
}

/// A new counter at zero, for probes and callbacks to count into.
pub fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// Counts its drops into its counter: shows when (and that only once) what
/// holds it is dropped.
pub struct DropProbe(pub Arc<AtomicUsize>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
