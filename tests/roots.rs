//! The roots: `background()`, `todo()` and `Context::default()`.
//!
//! They are never done, have no deadline, no values and no cause, their
//! `done()` never resolves, and creating or cloning them does not allocate.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{done_stays_pending, patience, thread_allocs};
use ctxtree::Context;
use futures::future::FutureExt;

// --- an allocation counter, per thread so parallel tests do not interfere ---

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

// --- helpers ---

fn roots() -> Vec<(&'static str, Context)> {
    vec![
        ("background", Context::background()),
        ("todo", Context::todo()),
        ("default", Context::default()),
    ]
}

// --- tests ---

#[test]
fn roots_are_never_done() {
    for (name, ctx) in roots() {
        assert!(!ctx.is_done(), "{name}: is_done");
        assert_eq!(ctx.err(), None, "{name}: err");
        assert!(ctx.cause().is_none(), "{name}: cause");
        assert_eq!(ctx.deadline(), None, "{name}: deadline");
    }
}

#[test]
fn roots_carry_no_values() {
    for (name, ctx) in roots() {
        assert!(ctx.value::<u32>().is_none(), "{name}: u32");
        assert!(ctx.value::<()>().is_none(), "{name}: ()");
        assert!(ctx.value::<String>().is_none(), "{name}: String");
        assert!(ctx.value::<Context>().is_none(), "{name}: Context");
    }
}

#[test]
fn roots_done_stays_pending() {
    for (name, ctx) in roots() {
        assert!(done_stays_pending(&ctx), "{name}: done() resolved");
        assert_eq!(ctx.done().now_or_never(), None, "{name}: now_or_never");
    }
}

#[test]
fn roots_done_is_not_terminated() {
    use futures::future::FusedFuture;
    for (name, ctx) in roots() {
        let mut done = ctx.done();
        assert!(!done.is_terminated(), "{name}: fresh done terminated");
        assert_eq!((&mut done).now_or_never(), None);
        assert!(!done.is_terminated(), "{name}: polled done terminated");
    }
}

#[test]
fn roots_done_loses_a_race_against_a_ready_future() {
    // `select!` on a root's done() always takes the other branch.
    let got = futures::executor::block_on(async {
        futures::select! {
            _ = Context::background().done() => "done",
            _ = futures::future::ready(()).fuse() => "ready",
        }
    });
    assert_eq!(got, "ready");
}

#[test]
fn default_is_background() {
    let ctx = Context::default();
    assert_eq!(ctx.to_string(), "context.Background");
    assert_eq!(
        ctx.to_string(),
        Context::background().to_string(),
        "default and background print the same"
    );
    assert_eq!(Context::todo().to_string(), "context.TODO");
}

#[test]
fn cloned_roots_behave_as_roots() {
    let bg = Context::background();
    let bg2 = bg.clone();
    let todo = Context::todo();
    let todo2 = todo.clone();
    assert_eq!(bg2.to_string(), "context.Background");
    assert_eq!(todo2.to_string(), "context.TODO");
    for ctx in [&bg2, &todo2] {
        assert!(!ctx.is_done());
        assert_eq!(ctx.err(), None);
        assert!(ctx.cause().is_none());
        assert_eq!(ctx.deadline(), None);
        assert!(done_stays_pending(ctx));
    }
    drop(bg);
    drop(todo);
    assert!(done_stays_pending(&bg2));
    assert!(done_stays_pending(&todo2));
}

#[test]
fn roots_are_unaffected_by_derived_cancellation() {
    for (name, root) in roots() {
        let (child, cancel) = root.with_cancel();
        let (grandchild, _c) = child.with_timeout(Duration::from_secs(3600));
        cancel.cancel();
        assert!(child.is_done());
        assert!(grandchild.is_done());
        assert!(!root.is_done(), "{name}: a child's cancel reached the root");
        assert!(root.cause().is_none());
        assert!(done_stays_pending(&root), "{name}");
    }
}

#[test]
fn creating_and_cloning_roots_does_not_allocate() {
    // Warm up anything lazily allocated by the harness on this thread.
    let _ = thread_allocs();
    let before = thread_allocs();
    let bg = Context::background();
    let todo = Context::todo();
    let def = Context::default();
    let clones: [Context; 3] = [bg.clone(), todo.clone(), def.clone()];
    let done = bg.done();
    let after = thread_allocs();
    assert_eq!(after - before, 0, "roots allocated");
    drop(done);
    drop(clones);
    assert!(!bg.is_done() && !todo.is_done() && !def.is_done());

    // The counter itself works: a derived node does allocate.
    let before = thread_allocs();
    let (child, _cancel) = bg.with_cancel();
    assert!(thread_allocs() > before, "counter sees nothing");
    drop(child);
}

#[test]
fn after_func_on_background_never_runs_and_stop_returns_true() {
    for (name, root) in roots() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let handle = root.after_func(move || flag.store(true, Ordering::SeqCst));
        assert!(!ran.load(Ordering::SeqCst), "{name}: ran at registration");
        // Cancelling a derived context does not run a root's callback.
        let (_child, cancel) = root.with_cancel();
        cancel.cancel();
        assert!(
            !ran.load(Ordering::SeqCst),
            "{name}: ran after child cancel"
        );
        assert!(handle.stop(), "{name}: stop() should report it stopped f");
        assert!(!handle.stop(), "{name}: second stop() should be false");
        assert!(!ran.load(Ordering::SeqCst));
    }
}

#[test]
fn wait_timeout_on_roots_returns_none_after_the_timeout() {
    for (name, root) in roots() {
        let timeout = Duration::from_millis(30);
        let start = Instant::now();
        assert_eq!(root.wait_timeout(timeout), None, "{name}");
        let took = start.elapsed();
        assert!(took >= timeout, "{name}: returned early after {took:?}");
        assert!(took < patience(), "{name}: took {took:?}");
    }
}

#[test]
fn wait_timeout_zero_on_root_is_none() {
    assert_eq!(Context::todo().wait_timeout(Duration::ZERO), None);
}

#[test]
fn run_on_root_runs_the_future() {
    let out = futures::executor::block_on(Context::background().run(async { 5u8 }));
    assert_eq!(out, Ok(5));
    let out = futures::executor::block_on(Context::todo().run(async { "x" }));
    assert_eq!(out, Ok("x"));
}

#[test]
fn roots_are_send_sync_static() {
    fn assert_traits<T: Clone + Send + Sync + std::fmt::Debug + std::fmt::Display + 'static>() {}
    assert_traits::<Context>();
    let ctx = Context::background();
    let handle = std::thread::spawn(move || (ctx.is_done(), ctx.to_string()));
    assert_eq!(
        handle.join().unwrap(),
        (false, "context.Background".to_owned())
    );
}
