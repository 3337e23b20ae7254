//! Allocation audit of the hot paths: how many times each operation calls the
//! allocator.
//!
//! The counting global allocator (tests/common) bumps a thread-local counter
//! too, and the audit reads only that one, so only the allocations of the
//! thread doing the audit count, whatever other tests or runtime threads
//! (async-io's reactor) do meanwhile. All audits run inside
//! one `#[test]`, on one thread.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use common::thread_allocs;
use ctxtree::Context;

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

/// Runs `f` and returns its output with the number of allocation calls this
/// thread made while it ran. The output is returned, so its drop is not
/// counted.
fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = thread_allocs();
    let out = f();
    let after = thread_allocs();
    (out, after - before)
}

/// Checks the count, collecting failures so that one run reports them all.
fn check(failures: &mut Vec<String>, what: &str, got: usize, want: usize) {
    if got != want {
        failures.push(format!("{what}: {got} allocation(s), want {want}"));
    }
}

#[test]
fn hot_paths_allocate_as_documented() {
    let mut failures = Vec::new();
    let waker = futures::task::noop_waker_ref();
    let mut cx = TaskContext::from_waker(waker);

    // Make sure the counter's own thread-local is initialized.
    let _ = thread_allocs();

    let background = Context::background();
    let (root, _root_cancel) = background.with_cancel();
    // A first derivation outside the audit, so that one-time lazy setup
    // (none expected) is not charged to the figures below.
    drop(root.with_cancel());

    let (bg_clone, n) = count(|| background.clone());
    check(&mut failures, "Context::background().clone()", n, 0);
    drop(bg_clone);

    let (child, n) = count(|| background.with_cancel());
    check(&mut failures, "with_cancel (parent: background)", n, 1);
    drop(child);

    let (child, n) = count(|| root.with_cancel());
    check(
        &mut failures,
        "with_cancel (parent: live cancel node)",
        n,
        1,
    );

    let (value, n) = count(|| root.with_value(0u64));
    check(&mut failures, "with_value(0u64)", n, 1);
    drop(value);

    let (ctx, n) = count(|| child.0.clone());
    check(&mut failures, "Context::clone of a cancel node", n, 0);
    drop(ctx);

    let (done, n) = count(|| child.0.is_done());
    check(&mut failures, "is_done (live)", n, 0);
    assert!(!done);

    let (err, n) = count(|| child.0.err());
    check(&mut failures, "err (live)", n, 0);
    assert_eq!(err, None);

    child.1.cancel();

    let (done, n) = count(|| child.0.is_done());
    check(&mut failures, "is_done (done)", n, 0);
    assert!(done);

    let (err, n) = count(|| child.0.err());
    check(&mut failures, "err (done)", n, 0);
    assert_eq!(err, Some(ctxtree::Error::Canceled));

    let (mut fut, n) = count(|| child.0.done());
    check(&mut failures, "done() on a done node", n, 0);
    let (polled, n) = count(|| Pin::new(&mut fut).poll(&mut cx));
    check(&mut failures, "Done poll on a done node", n, 0);
    assert_eq!(polled, Poll::Ready(ctxtree::Error::Canceled));
    drop(fut);

    assert!(
        failures.is_empty(),
        "allocation audit failed:\n  {}",
        failures.join("\n  ")
    );
}
