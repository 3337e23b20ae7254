//! `Context::run`, `Context::wait` and `Context::wait_timeout`.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Context, Error};
use futures::executor::block_on;
use futures::future::{self, FusedFuture, FutureExt};

use crate::common::{patience, Executor, HOUR};

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A future that panics if it is ever polled.
struct MustNotPoll;

impl Future for MustNotPoll {
    type Output = u8;
    fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<u8> {
        panic!("the future was polled although the context was done");
    }
}

/// A future that is pending `n` times (waking itself) before it is ready.
fn yields(n: usize, out: u32) -> impl Future<Output = u32> {
    let mut left = n;
    future::poll_fn(move |cx| {
        if left == 0 {
            Poll::Ready(out)
        } else {
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

// --- run ---

#[test]
fn run_is_ok_when_the_future_completes_first() {
    let (ctx, _cancel) = Context::background().with_cancel();
    assert_eq!(block_on(ctx.run(async { 7u32 })), Ok(7));
    assert_eq!(block_on(ctx.run(yields(5, 9))), Ok(9));
    let (timed, _k) = Context::background().with_timeout(HOUR);
    assert_eq!(block_on(timed.run(yields(3, 1))), Ok(1));
    let v = ctx.with_value("v");
    assert_eq!(block_on(v.run(async { "out" })), Ok("out"));
    assert!(!ctx.is_done());
}

#[test]
fn run_outputs_are_moved_out() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let s = String::from("owned");
    let out = block_on(ctx.run(async move { s }));
    assert_eq!(out.as_deref(), Ok("owned"));
}

#[test]
fn run_on_a_done_context_never_polls_the_future() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    assert_eq!(block_on(ctx.run(MustNotPoll)), Err(Error::Canceled));

    let (timed, _k) = Context::background().with_deadline(Instant::now());
    assert_eq!(
        block_on(timed.run(MustNotPoll)),
        Err(Error::DeadlineExceeded)
    );

    // An immediately ready future still loses: the context is polled first.
    let polled = Arc::new(AtomicBool::new(false));
    let p = polled.clone();
    let fut = async move {
        p.store(true, Ordering::SeqCst);
        1u8
    };
    assert_eq!(block_on(ctx.with_value(0u8).run(fut)), Err(Error::Canceled));
    assert!(!polled.load(Ordering::SeqCst));
}

#[test]
fn run_on_a_done_context_drops_the_unpolled_future() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let fut = async move {
        let _flag = flag;
        unreachable!("never polled");
    };
    let mut run = pin!(ctx.run(fut));
    assert_eq!(block_on(run.as_mut()), Err::<(), _>(Error::Canceled));
    assert!(dropped.load(Ordering::SeqCst), "fut kept after ctx won");
    assert!(run.is_terminated());
}

#[test]
fn run_drops_the_future_when_the_context_wins() {
    let (ctx, cancel) = Context::background().with_cancel();
    let dropped = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let flag = DropFlag(dropped.clone());
    let fut = async move {
        let _flag = flag;
        started_tx.send(()).unwrap();
        future::pending::<()>().await
    };
    let canceller = thread::spawn(move || {
        // Cancel only once the future is running and pending.
        started_rx.recv().unwrap();
        cancel.cancel();
    });
    let res = block_on(async {
        let mut run = pin!(ctx.run(fut));
        let res = run.as_mut().await;
        // Dropped as soon as the context won, before the Run itself goes.
        let at_resolution = dropped.load(Ordering::SeqCst);
        assert!(run.is_terminated());
        (res, at_resolution)
    });
    canceller.join().unwrap();
    assert_eq!(res, (Err(Error::Canceled), true));
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn run_drops_the_future_after_it_completes() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let res = block_on(async {
        let mut run = pin!(ctx.run(async move {
            let _flag = flag;
            5u8
        }));
        let res = run.as_mut().await;
        (res, dropped.load(Ordering::SeqCst))
    });
    assert_eq!(res, (Ok(5), true));
}

#[test]
fn run_resolves_with_deadline_exceeded_on_a_timeout() {
    let (ctx, _k) = Context::background().with_timeout(Duration::from_millis(20));
    let start = Instant::now();
    let res = block_on(ctx.run(future::pending::<()>()));
    assert_eq!(res, Err(Error::DeadlineExceeded));
    assert!(start.elapsed() < patience(), "took {:?}", start.elapsed());
    // Never early: the deadline had passed when it resolved.
    assert!(Instant::now() >= ctx.deadline().unwrap());
}

#[test]
fn run_resolves_when_an_ancestor_is_cancelled_from_another_thread() {
    let (parent, cancel) = Context::background().with_cancel();
    let (child, _k) = parent.with_value(1u8).with_timeout(HOUR);
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let t = thread::spawn(move || {
        b.wait();
        cancel.cancel();
    });
    let res = block_on(async {
        let mut run = child.run(future::pending::<u8>());
        // Registered and pending before the other thread may cancel.
        assert!(futures::poll!(&mut run).is_pending());
        barrier.wait();
        run.await
    });
    assert_eq!(res, Err(Error::Canceled));
    t.join().unwrap();
}

#[test]
fn run_on_tokio_and_smol() {
    let (ctx, cancel) = Context::background().with_cancel();
    let res = Executor::TokioMultiThread.block_on(|_| async {
        let task = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.run(tokio::time::sleep(HOUR)).await }
        });
        tokio::task::yield_now().await;
        cancel.cancel();
        task.await.unwrap()
    });
    assert_eq!(res, Err(Error::Canceled));

    let (ctx, _k) = Context::background().with_timeout(Duration::from_millis(20));
    let res = smol::block_on(ctx.run(smol::Timer::after(HOUR)));
    assert_eq!(res, Err(Error::DeadlineExceeded));

    let (ctx, _k) = Context::background().with_timeout(HOUR);
    let res = smol::block_on(ctx.run(smol::Timer::after(Duration::from_millis(5))));
    assert!(res.is_ok());
}

#[test]
fn run_works_in_select() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let got = block_on(async {
        futures::select! {
            r = ctx.run(future::pending::<u8>()) => r,
            _ = future::pending::<()>().fuse() => unreachable!(),
        }
    });
    assert_eq!(got, Err(Error::Canceled));
}

// --- wait ---

#[test]
fn wait_returns_the_error_once_cancelled_from_another_thread() {
    for _ in 0..20 {
        let (ctx, cancel) = Context::background().with_cancel();
        let child = ctx.with_value(3u8);
        let barrier = Arc::new(Barrier::new(2));
        let b = barrier.clone();
        let t = thread::spawn(move || {
            b.wait();
            cancel.cancel();
        });
        barrier.wait();
        assert_eq!(child.wait(), Error::Canceled);
        assert!(child.is_done());
        t.join().unwrap();
    }
}

#[test]
fn waiting_thread_is_woken_by_cancel() {
    // The waiter signals just before it blocks; the canceller cancels only
    // after hearing that, so most rounds the waiter really is asleep.
    for _ in 0..20 {
        let (ctx, cancel) = Context::background().with_cancel();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let waiter = thread::spawn(move || {
            ready_tx.send(()).unwrap();
            ctx.wait()
        });
        ready_rx.recv().unwrap();
        cancel.cancel_with_cause(Arc::new(Error::DeadlineExceeded));
        assert_eq!(waiter.join().unwrap(), Error::Canceled);
    }
}

#[test]
fn wait_returns_deadline_exceeded() {
    let (ctx, _k) = Context::background().with_timeout(Duration::from_millis(20));
    let (child, _c) = ctx.with_cancel();
    let start = Instant::now();
    assert_eq!(child.wait(), Error::DeadlineExceeded);
    assert!(start.elapsed() < patience());
    assert!(
        Instant::now() >= ctx.deadline().unwrap(),
        "woke before the deadline"
    );
}

#[test]
fn wait_on_an_already_done_context_returns_at_once() {
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let start = Instant::now();
    for _ in 0..1000 {
        assert_eq!(ctx.wait(), Error::Canceled);
        assert_eq!(ctx.wait_timeout(HOUR), Some(Error::Canceled));
        assert_eq!(ctx.wait_timeout(Duration::ZERO), Some(Error::Canceled));
        assert_eq!(ctx.wait_timeout(Duration::MAX), Some(Error::Canceled));
    }
    assert!(start.elapsed() < patience(), "took {:?}", start.elapsed());

    let (timed, _k) = Context::background().with_deadline(Instant::now());
    assert_eq!(timed.wait(), Error::DeadlineExceeded);
}

#[test]
fn wait_timeout_returns_none_on_a_live_context() {
    let (ctx, _cancel) = Context::background().with_cancel();
    let timeout = Duration::from_millis(30);
    let start = Instant::now();
    assert_eq!(ctx.wait_timeout(timeout), None);
    let took = start.elapsed();
    assert!(took >= timeout, "returned early: {took:?}");
    assert!(took < patience(), "took {took:?}");
    assert!(!ctx.is_done());
    assert_eq!(ctx.wait_timeout(Duration::ZERO), None);

    // A deadline far away does not end the wait either.
    let (timed, _k) = Context::background().with_timeout(HOUR);
    assert_eq!(timed.wait_timeout(Duration::from_millis(10)), None);
}

#[test]
fn wait_timeout_max_returns_when_cancelled_from_another_thread() {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, rx) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        rx.recv().unwrap();
        cancel.cancel();
    });
    tx.send(()).unwrap();
    assert_eq!(ctx.wait_timeout(Duration::MAX), Some(Error::Canceled));
    t.join().unwrap();
}

#[test]
fn wait_timeout_long_returns_when_cancelled() {
    let (ctx, cancel) = Context::background().with_cancel();
    let child = ctx.with_value(1u8);
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let t = thread::spawn(move || {
        b.wait();
        cancel.cancel();
    });
    barrier.wait();
    let start = Instant::now();
    assert_eq!(child.wait_timeout(HOUR), Some(Error::Canceled));
    assert!(start.elapsed() < patience());
    t.join().unwrap();
}

#[test]
fn wait_timeout_sees_a_deadline_before_its_own_timeout() {
    let (ctx, _k) = Context::background().with_timeout(Duration::from_millis(20));
    assert_eq!(ctx.wait_timeout(patience()), Some(Error::DeadlineExceeded));
}

#[test]
fn many_threads_wait_on_one_context() {
    let (ctx, cancel) = Context::background().with_cancel();
    let returned = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(7));
    let waiters: Vec<_> = (0..6)
        .map(|i| {
            let ctx = ctx.clone();
            let returned = returned.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let got = if i % 2 == 0 {
                    Some(ctx.wait())
                } else {
                    ctx.wait_timeout(Duration::MAX)
                };
                returned.fetch_add(1, Ordering::SeqCst);
                got
            })
        })
        .collect();
    barrier.wait();
    cancel.cancel();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Some(Error::Canceled));
    }
    assert_eq!(returned.load(Ordering::SeqCst), 6);
}
