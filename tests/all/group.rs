//! `Group`: Go's errgroup without an executor. Waiting drives every task
//! inside the waiting future; the first error cancels the group's context
//! with that error as the cause and is what waiting returns; a limit keeps
//! the rest unpolled; tasks may add tasks; a panic resumes after the
//! cancellation; the parent's cancellation reaches the group. On smol,
//! tokio, async-std and `futures::executor`.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::thread;
#[cfg(not(ctxtree_checks))]
use std::time::Duration;

use ctxtree::{Context, Error, Group};
use futures::channel::oneshot;
use futures::executor::block_on;

#[cfg(not(ctxtree_checks))]
use crate::common::shrunk;
use crate::common::{miri_or, patience, poll_once, watchdog, yield_once, CountingWaker};
#[cfg(not(ctxtree_checks))]
use crate::common::{Executor, HOUR};

// Two tests need only some executor and some yield. They use smol's
// natively; under `--cfg ctxtree_checks` (Miri, ThreadSanitizer), which
// leaves smol out, `futures`' executor and the tests' own yield.
#[cfg(ctxtree_checks)]
use crate::common::yield_once as yield_now;
#[cfg(ctxtree_checks)]
use futures::executor::block_on as any_block_on;
#[cfg(not(ctxtree_checks))]
use smol::{block_on as any_block_on, future::yield_now};

/// The tasks' error type: not `Clone`, so the group must share it.
#[derive(Debug, PartialEq, Eq)]
struct TaskErr(usize);

impl fmt::Display for TaskErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} failed", self.0)
    }
}

impl std::error::Error for TaskErr {}

/// The `TaskErr` number carried by `ctx.cause()`, if any.
fn cause_id(ctx: &Context) -> Option<usize> {
    ctx.cause()
        .and_then(|c| c.downcast_ref::<TaskErr>().map(|e| e.0))
}

/// Counts tasks in flight (started, not finished) and the most ever seen.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
    started: AtomicUsize,
}

impl InFlight {
    fn enter(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// Marks a task finished even when it is dropped mid-way.
struct Leave<'a>(&'a InFlight);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

// ---------------------------------------------------------------------------
// Results, errors, causes.

#[test]
fn an_empty_group_resolves_ok_and_cancels_its_context() {
    let group = Group::<TaskErr>::new(&Context::background());
    let ctx = group.context().clone();
    assert!(!ctx.is_done());
    assert_eq!(block_on(group.wait()), Ok(()));
    // As Go's Wait: the context is cancelled once the group is done.
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert!(cause_id(&ctx).is_none());
}

#[test]
fn every_task_runs_once_and_wait_returns_ok() {
    let group = Group::<TaskErr>::new(&Context::background());
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks = miri_or(100, 20);
    for _ in 0..tasks {
        let runs = runs.clone();
        group.spawn(async move {
            yield_once().await;
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
    }
    assert_eq!(block_on(group.wait()), Ok(()));
    assert_eq!(runs.load(Ordering::SeqCst), tasks);
}

#[test]
fn the_first_error_cancels_the_others_as_their_cause_and_is_returned() {
    let group = Group::<TaskErr>::new(&Context::background());
    let ctx = group.context().clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let ctx = group.context().clone();
        let seen = seen.clone();
        group.spawn(async move {
            if i == 3 {
                yield_once().await;
                return Err(TaskErr(3));
            }
            // The others wait to be cancelled, then read the cause.
            let err = ctx.done().await;
            assert_eq!(err, Error::Canceled);
            let cause = ctx.cause().expect("a cause");
            let cause = cause.downcast_ref::<TaskErr>().expect("the task's error");
            seen.lock().unwrap().push((i, cause.0));
            Ok(())
        });
    }
    let err = block_on(group.wait()).unwrap_err();
    assert_eq!(*err, TaskErr(3));
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, vec![(0, 3), (1, 3), (2, 3), (4, 3)]);
    // The cause and the result are the same allocation.
    let cause = ctx.cause().unwrap();
    assert_eq!(
        Arc::as_ptr(&cause) as *const (),
        Arc::as_ptr(&err) as *const ()
    );
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn later_errors_are_dropped() {
    let group = Group::<TaskErr>::new(&Context::background());
    let first = group.context().clone();
    group.spawn(async { Err(TaskErr(1)) });
    for i in 2..10 {
        let ctx = group.context().clone();
        group.spawn(async move {
            ctx.done().await;
            Err(TaskErr(i))
        });
    }
    let err = block_on(group.wait()).unwrap_err();
    assert_eq!(*err, TaskErr(1));
    assert_eq!(cause_id(&first), Some(1));
}

#[test]
fn an_error_on_first_poll_still_lets_queued_tasks_run_and_see_it() {
    // As in Go, tasks after the failure still run; they see the cause.
    let mut group = Group::<TaskErr>::new(&Context::background());
    group.set_limit(1);
    group.spawn(async { Err(TaskErr(0)) });
    let saw = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let ctx = group.context().clone();
        let saw = saw.clone();
        group.spawn(async move {
            if cause_id(&ctx) == Some(0) {
                saw.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        });
    }
    assert_eq!(*block_on(group.wait()).unwrap_err(), TaskErr(0));
    assert_eq!(saw.load(Ordering::SeqCst), 10);
}

// ---------------------------------------------------------------------------
// Driven inside the waiting future.

#[test]
fn tasks_run_concurrently_on_the_waiting_thread_without_spawning() {
    // Two tasks that need each other: only concurrent polling finishes them.
    let group = Group::<TaskErr>::new(&Context::background());
    let (ping_tx, ping_rx) = oneshot::channel::<u32>();
    let (pong_tx, pong_rx) = oneshot::channel::<u32>();
    let threads = Arc::new(Mutex::new(Vec::new()));
    let t1 = threads.clone();
    group.spawn(async move {
        t1.lock().unwrap().push(thread::current().id());
        ping_tx.send(1).unwrap();
        assert_eq!(pong_rx.await.unwrap(), 2);
        t1.lock().unwrap().push(thread::current().id());
        Ok(())
    });
    let t2 = threads.clone();
    group.spawn(async move {
        t2.lock().unwrap().push(thread::current().id());
        assert_eq!(ping_rx.await.unwrap(), 1);
        pong_tx.send(2).unwrap();
        Ok(())
    });
    assert_eq!(block_on(group.wait()), Ok(()));
    let me = thread::current().id();
    let threads = threads.lock().unwrap();
    assert_eq!(threads.len(), 3);
    assert!(
        threads.iter().all(|t| *t == me),
        "every poll on the waiting thread"
    );
}

#[test]
fn tasks_woken_from_other_threads_finish() {
    let group = Group::<TaskErr>::new(&Context::background());
    let mut senders = Vec::new();
    for _ in 0..50 {
        let (tx, rx) = oneshot::channel::<()>();
        senders.push(tx);
        group.spawn(async move {
            rx.await.unwrap();
            Ok(())
        });
    }
    let sender = thread::spawn(move || {
        for tx in senders {
            tx.send(()).unwrap();
            thread::yield_now();
        }
    });
    let got = watchdog("woken from another thread", move || block_on(group.wait()));
    assert_eq!(got, Ok(()));
    sender.join().unwrap();
}

#[test]
fn wait_is_pending_until_the_last_task_finishes() {
    let group = Group::<TaskErr>::new(&Context::background());
    let (tx, rx) = oneshot::channel::<()>();
    group.spawn(async { Ok(()) });
    group.spawn(async move {
        rx.await.unwrap();
        Ok(())
    });
    let ctx = group.context().clone();
    let mut wait = Box::pin(group.wait());
    let waiter = CountingWaker::new();
    assert!(waiter.poll(&mut wait).is_pending());
    assert!(waiter.poll(&mut wait).is_pending());
    assert!(!ctx.is_done(), "not cancelled while tasks run");
    let wakes = waiter.wakes();
    tx.send(()).unwrap();
    assert!(
        waiter.wakes() > wakes,
        "the last task's wakeup reaches the waiter"
    );
    assert_eq!(waiter.poll(&mut wait), Poll::Ready(Ok(())));
    assert!(ctx.is_done());
}

// ---------------------------------------------------------------------------
// The limit.

#[test]
fn tasks_beyond_the_limit_are_not_polled_until_a_slot_frees() {
    let mut group = Group::<TaskErr>::new(&Context::background());
    group.set_limit(2);
    let polled: Arc<Vec<AtomicUsize>> = Arc::new((0..4).map(|_| AtomicUsize::new(0)).collect());
    let mut gates = Vec::new();
    for i in 0..4 {
        let (tx, rx) = oneshot::channel::<()>();
        gates.push(Some(tx));
        let polled = polled.clone();
        group.spawn(async move {
            polled[i].fetch_add(1, Ordering::SeqCst);
            rx.await.unwrap();
            Ok(())
        });
    }
    let counts = || -> Vec<usize> { polled.iter().map(|p| p.load(Ordering::SeqCst)).collect() };
    let mut wait = Box::pin(group.wait());
    assert!(poll_once(&mut wait).is_pending());
    assert_eq!(counts(), vec![1, 1, 0, 0]);
    // Opening a queued task's gate does not start it.
    gates[3].take().unwrap().send(()).unwrap();
    assert!(poll_once(&mut wait).is_pending());
    assert_eq!(counts(), vec![1, 1, 0, 0]);
    // Task 0 finishes: task 2 takes its slot, not before.
    gates[0].take().unwrap().send(()).unwrap();
    assert!(poll_once(&mut wait).is_pending());
    assert_eq!(counts()[2], 1);
    assert_eq!(counts()[3], 0, "still two in flight: 1 and 2");
    gates[1].take().unwrap().send(()).unwrap();
    assert!(poll_once(&mut wait).is_pending());
    assert_eq!(
        counts()[3],
        1,
        "task 3 started and, its gate open, finished"
    );
    gates[2].take().unwrap().send(()).unwrap();
    assert_eq!(poll_once(&mut wait), Poll::Ready(Ok(())));
}

#[test]
fn at_most_limit_tasks_are_ever_in_flight() {
    for limit in [1, 3, 16] {
        let flight = Arc::new(InFlight::default());
        let mut group = Group::<TaskErr>::new(&Context::background());
        group.set_limit(limit);
        let tasks = miri_or(200, 20);
        for _ in 0..tasks {
            let flight = flight.clone();
            group.spawn(async move {
                flight.enter();
                let _leave = Leave(&flight);
                yield_once().await;
                yield_once().await;
                Ok(())
            });
        }
        assert_eq!(block_on(group.wait()), Ok(()));
        assert_eq!(flight.started.load(Ordering::SeqCst), tasks);
        assert_eq!(
            flight.max(),
            limit,
            "limit {limit}: the limit is reached, never passed"
        );
    }
}

#[test]
fn a_limit_of_zero_is_taken_as_one() {
    let flight = Arc::new(InFlight::default());
    let mut group = Group::<TaskErr>::new(&Context::background());
    group.set_limit(0);
    for _ in 0..20 {
        let flight = flight.clone();
        group.spawn(async move {
            flight.enter();
            let _leave = Leave(&flight);
            yield_once().await;
            Ok(())
        });
    }
    assert_eq!(block_on(group.wait()), Ok(()));
    assert_eq!(flight.started.load(Ordering::SeqCst), 20);
    assert_eq!(flight.max(), 1);
}

/// The scenario: 10,000 tasks under a limit of 64, one fails.
/// Returns nothing; asserts everything.
#[cfg(not(ctxtree_checks))]
async fn ten_thousand_under_64_one_fails<Y, F>(yield_now: Y)
where
    Y: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    /// 10_000, or 1_000 under valgrind.
    fn tasks() -> usize {
        shrunk(10_000, 1_000)
    }
    const LIMIT: usize = 64;
    // The task in the middle fails.
    let fails = tasks() / 2;
    let yield_now = Arc::new(yield_now);
    let flight = Arc::new(InFlight::default());
    let failed = Arc::new(AtomicBool::new(false));
    let saw_cause = Arc::new(AtomicUsize::new(0));
    let mut group = Group::<TaskErr>::new(&Context::background());
    group.set_limit(LIMIT);
    let ctx = group.context().clone();
    for i in 0..tasks() {
        let (flight, failed, saw_cause) = (flight.clone(), failed.clone(), saw_cause.clone());
        let ctx = ctx.clone();
        let yield_now = yield_now.clone();
        group.spawn(async move {
            flight.enter();
            let _leave = Leave(&flight);
            // Started after the failure: must see it, as the cause.
            if failed.load(Ordering::SeqCst) {
                assert_eq!(ctx.err(), Some(Error::Canceled));
                assert_eq!(cause_id(&ctx), Some(fails));
                saw_cause.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            yield_now().await;
            if i == fails {
                failed.store(true, Ordering::SeqCst);
                return Err(TaskErr(i));
            }
            yield_now().await;
            Ok(())
        });
    }
    let err = group.wait().await.unwrap_err();
    assert_eq!(*err, TaskErr(fails));
    assert_eq!(cause_id(&ctx), Some(fails));
    assert_eq!(flight.started.load(Ordering::SeqCst), tasks());
    let max = flight.max();
    assert!(max <= LIMIT, "{max} tasks in flight, limit {LIMIT}");
    assert!(
        max >= LIMIT / 2,
        "only {max} in flight: tasks did not overlap"
    );
    // Every task from `fails + LIMIT` on started after task `fails` finished.
    assert!(
        saw_cause.load(Ordering::SeqCst) >= tasks() - fails - LIMIT,
        "{} tasks saw the failure",
        saw_cause.load(Ordering::SeqCst)
    );
    assert_eq!(flight.now.load(Ordering::SeqCst), 0);
}

#[test]
#[cfg(not(ctxtree_checks))]
fn ten_thousand_tasks_limit_64_one_fails_on_futures_executor() {
    watchdog("futures::executor", || {
        Executor::FuturesThreadPool.block_on(|_| ten_thousand_under_64_one_fails(yield_once))
    });
}

#[test]
#[cfg(not(ctxtree_checks))]
fn ten_thousand_tasks_limit_64_one_fails_on_smol() {
    watchdog("smol", || {
        Executor::Smol.block_on(|_| {
            ten_thousand_under_64_one_fails(|| {
                // A real timer through async-io's reactor.
                let t = smol::Timer::after(Duration::from_micros(50));
                async move {
                    t.await;
                }
            })
        })
    });
}

#[test]
#[cfg(not(ctxtree_checks))]
fn ten_thousand_tasks_limit_64_one_fails_on_tokio() {
    // Awaited inside a spawned task, which may move between workers.
    watchdog("tokio", || {
        Executor::TokioMultiThread.run(ten_thousand_under_64_one_fails(tokio::task::yield_now))
    });
}

#[test]
#[cfg(not(ctxtree_checks))]
fn ten_thousand_tasks_limit_64_one_fails_on_async_std() {
    watchdog("async-std", || {
        Executor::AsyncStd.block_on(|_| ten_thousand_under_64_one_fails(yield_once))
    });
}

#[test]
#[cfg(not(ctxtree_checks))]
fn ten_thousand_tasks_limit_64_one_fails_on_a_thread_pool() {
    watchdog("futures ThreadPool", || {
        Executor::FuturesThreadPool.run(ten_thousand_under_64_one_fails(yield_once))
    });
}

// ---------------------------------------------------------------------------
// Adding tasks while the group runs.

#[test]
fn tasks_add_tasks_while_the_group_runs() {
    fn tree(spawner: ctxtree::Spawner<TaskErr>, depth: u32, count: Arc<AtomicUsize>) {
        let s = spawner.clone();
        spawner.spawn(async move {
            count.fetch_add(1, Ordering::SeqCst);
            yield_once().await;
            if depth > 0 {
                tree(s.clone(), depth - 1, count.clone());
                tree(s, depth - 1, count);
            }
            Ok(())
        });
    }
    // 1,023 tasks natively, 127 under Miri.
    let depth = miri_or(9, 6) as u32;
    for limit in [usize::MAX, 4] {
        let mut group = Group::<TaskErr>::new(&Context::background());
        group.set_limit(limit);
        let count = Arc::new(AtomicUsize::new(0));
        tree(group.spawner(), depth, count.clone());
        assert_eq!(block_on(group.wait()), Ok(()));
        assert_eq!(
            count.load(Ordering::SeqCst),
            (1 << (depth + 1)) - 1,
            "limit {limit}"
        );
    }
}

#[test]
fn a_task_added_by_the_last_running_task_is_run() {
    // The only task adds one just before it finishes: the group must not
    // close between the two.
    let group = Group::<TaskErr>::new(&Context::background());
    let spawner = group.spawner();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    group.spawn(async move {
        spawner.spawn(async move {
            yield_once().await;
            r.store(true, Ordering::SeqCst);
            Err(TaskErr(2))
        });
        Ok(())
    });
    assert_eq!(*block_on(group.wait()).unwrap_err(), TaskErr(2));
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn a_task_added_from_another_thread_wakes_the_waiter() {
    let group = Group::<TaskErr>::new(&Context::background());
    let spawner = group.spawner();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    // Keeps the group open until the added task lets it finish.
    group.spawn(async move {
        started_tx.send(()).unwrap();
        go_rx.await.unwrap();
        Ok(())
    });
    let adder = thread::spawn(move || {
        started_rx.recv().unwrap();
        spawner.spawn(async move {
            go_tx.send(()).unwrap();
            Ok(())
        });
    });
    let got = watchdog("spawn from another thread", move || block_on(group.wait()));
    assert_eq!(got, Ok(()));
    adder.join().unwrap();
}

#[test]
fn a_task_added_after_the_group_finished_is_dropped_unpolled() {
    struct Probe(Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let group = Group::<TaskErr>::new(&Context::background());
    let spawner = group.spawner();
    assert_eq!(block_on(group.wait()), Ok(()));
    let polled = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (p, probe) = (polled.clone(), Probe(dropped.clone()));
    spawner.spawn(async move {
        let _probe = probe;
        p.store(true, Ordering::SeqCst);
        Ok(())
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert!(!polled.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------------------
// Panics.

#[test]
fn a_panic_resumes_out_of_wait_after_the_context_is_cancelled() {
    let group = Group::<TaskErr>::new(&Context::background());
    let ctx = group.context().clone();
    // Callbacks run inside the cancel: this one records that it ran before
    // the panic left `wait`.
    let cancelled_first = Arc::new(AtomicBool::new(false));
    let c = cancelled_first.clone();
    let _h = ctx.after_func(move || c.store(true, Ordering::SeqCst));
    // A watcher on another thread sees the cancellation.
    let watcher = {
        let ctx = ctx.clone();
        thread::spawn(move || ctx.wait_timeout(patience()))
    };
    // A task of the group that was waiting on the context.
    let sibling_started = Arc::new(AtomicBool::new(false));
    let s = sibling_started.clone();
    let sctx = ctx.clone();
    group.spawn(async move {
        s.store(true, Ordering::SeqCst);
        sctx.done().await;
        Ok(())
    });
    group.spawn(async {
        yield_once().await;
        panic!("task exploded");
    });
    let got = catch_unwind(AssertUnwindSafe(|| block_on(group.wait())));
    let panic = got.expect_err("the panic resumes out of wait");
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"task exploded"));
    assert!(sibling_started.load(Ordering::SeqCst));
    assert!(
        cancelled_first.load(Ordering::SeqCst),
        "cancelled before the panic resumed"
    );
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(watcher.join().unwrap(), Some(Error::Canceled));
}

#[test]
#[cfg(not(ctxtree_checks))]
fn a_panic_on_tokio_surfaces_as_a_panicked_join_and_cancels_the_group() {
    Executor::TokioMultiThread.block_on(|_| async {
        let group = Group::<TaskErr>::new(&Context::background());
        let ctx = group.context().clone();
        group.spawn(async { panic!("boom") });
        let err = tokio::spawn(group.wait()).await.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(ctx.err(), Some(Error::Canceled));
    });
}

// ---------------------------------------------------------------------------
// The parent, dropping, merged contexts.

#[test]
fn cancelling_the_parent_cancels_the_group_context() {
    let (parent, cancel_parent) = Context::background().with_cancel();
    let group = Group::<TaskErr>::new(&parent);
    let ctx = group.context().clone();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    for _ in 0..10 {
        let ctx = ctx.clone();
        let started = started_tx.clone();
        group.spawn(async move {
            started.send(()).unwrap();
            ctx.done().await;
            Ok(())
        });
    }
    drop(started_tx);
    let canceller = thread::spawn(move || {
        for _ in 0..10 {
            started_rx.recv().unwrap();
        }
        cancel_parent.cancel_with_cause(Arc::new(TaskErr(99)));
    });
    let got = watchdog("parent cancel", move || block_on(group.wait()));
    // Tasks returned Ok: the group's own result is Ok.
    assert_eq!(got, Ok(()));
    canceller.join().unwrap();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(cause_id(&ctx), Some(99));
}

#[test]
fn a_group_below_a_done_parent_runs_its_tasks_with_a_done_context() {
    let (parent, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let group = Group::<TaskErr>::new(&parent);
    assert!(group.context().is_done());
    let ctx = group.context().clone();
    group.spawn(async move {
        assert_eq!(ctx.done().await, Error::Canceled);
        Ok(())
    });
    assert_eq!(block_on(group.wait()), Ok(()));
}

#[test]
fn dropping_wait_drops_the_tasks_and_cancels_the_context() {
    let flight = Arc::new(InFlight::default());
    let group = Group::<TaskErr>::new(&Context::background());
    let ctx = group.context().clone();
    for _ in 0..5 {
        let flight = flight.clone();
        group.spawn(async move {
            flight.enter();
            let _leave = Leave(&flight);
            futures::future::pending::<()>().await;
            Ok(())
        });
    }
    let mut wait = Box::pin(group.wait());
    assert!(poll_once(&mut wait).is_pending());
    assert_eq!(flight.now.load(Ordering::SeqCst), 5);
    drop(wait);
    assert_eq!(flight.now.load(Ordering::SeqCst), 0, "every task dropped");
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn a_group_under_a_merged_context_stops_on_shutdown() {
    let (request, _cancel_request) = Context::background().with_value("req").with_cancel();
    let (shutdown, begin_shutdown) = Context::background().with_cancel();
    let (ctx, _c) = request.merge(&shutdown);
    let group = Group::<TaskErr>::new(&ctx);
    let (started_tx, started_rx) = mpsc::channel::<()>();
    for _ in 0..3 {
        let ctx = group.context().clone();
        let started = started_tx.clone();
        group.spawn(async move {
            assert_eq!(ctx.value::<&str>(), Some(&"req"));
            started.send(()).unwrap();
            ctx.done().await;
            Err(TaskErr(7))
        });
    }
    let t = thread::spawn(move || {
        for _ in 0..3 {
            started_rx.recv().unwrap();
        }
        begin_shutdown.cancel();
    });
    let gctx = group.context().clone();
    let got = watchdog("merged shutdown", move || any_block_on(group.wait()));
    t.join().unwrap();
    // The shutdown came first: its reason is the group context's cause.
    assert_eq!(*got.unwrap_err(), TaskErr(7));
    assert!(gctx.cause().unwrap().downcast_ref::<Error>() == Some(&Error::Canceled));
    assert!(!request.is_done());
}

#[test]
#[cfg(not(ctxtree_checks))]
fn tasks_with_real_timers_on_tokio_and_smol() {
    // tokio: sleeps driven by tokio's timer.
    Executor::TokioCurrentThread.block_on(|_| async {
        let group = Group::<TaskErr>::new(&Context::background());
        for i in 0..20u64 {
            group.spawn(async move {
                tokio::time::sleep(Duration::from_millis(i % 5)).await;
                Ok(())
            });
        }
        assert_eq!(group.wait().await, Ok(()));
    });
    // smol: async-io timers; a deadline on the group's parent cancels it.
    smol::block_on(async {
        let (parent, _c) = Context::background().with_timeout(Duration::from_millis(20));
        let group = Group::<TaskErr>::new(&parent);
        for _ in 0..20 {
            let ctx = group.context().clone();
            group.spawn(async move {
                match ctx.run(smol::Timer::after(HOUR)).await {
                    Ok(_) => Err(TaskErr(0)),
                    Err(e) => {
                        assert_eq!(e, Error::DeadlineExceeded);
                        Ok(())
                    }
                }
            });
        }
        assert_eq!(group.wait().await, Ok(()));
    });
}

#[test]
fn debug_formats() {
    let mut group = Group::<TaskErr>::new(&Context::background());
    group.set_limit(3);
    let shown = format!("{group:?}");
    assert!(shown.contains("Group") && shown.contains('3'), "{shown}");
    assert!(format!("{:?}", group.spawner()).contains("Spawner"));
    assert!(format!("{:?}", group.wait()).contains("Wait"));
}

// ---------------------------------------------------------------------------
// Fairness.

#[test]
fn a_self_waking_task_does_not_starve_futures_beside_the_group() {
    // A task that yields (wakes itself, returns Pending) until a flag is set
    // by a future polled beside `wait` on the same thread. If `Wait::poll`
    // re-polled every task whose wake arrived during the same call, a
    // self-wake would refill its ready list forever: the call would never
    // return and the sibling never run (a livelock; FuturesUnordered bounds
    // each poll for this reason).
    let got = watchdog("join beside the group", || {
        let flag = Arc::new(AtomicBool::new(false));
        let group = Group::<TaskErr>::new(&Context::background());
        let f = flag.clone();
        group.spawn(async move {
            while !f.load(Ordering::SeqCst) {
                yield_now().await;
            }
            Ok(())
        });
        block_on(async {
            let (got, ()) = futures::join!(group.wait(), async {
                flag.store(true, Ordering::SeqCst);
            });
            got
        })
    });
    assert_eq!(got, Ok(()));
}

#[test]
#[cfg(not(ctxtree_checks))]
fn self_waking_tasks_under_a_limit_share_a_current_thread_runtime() {
    // The same on tokio's current-thread runtime, under a limit, with the
    // flag set by another task of the runtime after a few of its own polls.
    let got = watchdog("tokio current_thread", || {
        Executor::TokioCurrentThread.block_on(|_| async {
            let flag = Arc::new(AtomicBool::new(false));
            let mut group = Group::<TaskErr>::new(&Context::background());
            group.set_limit(2);
            for _ in 0..4 {
                let f = flag.clone();
                group.spawn(async move {
                    while !f.load(Ordering::SeqCst) {
                        smol::future::yield_now().await;
                    }
                    Ok(())
                });
            }
            let setter = tokio::spawn(async move {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                flag.store(true, Ordering::SeqCst);
            });
            let got = group.wait().await;
            setter.await.unwrap();
            got
        })
    });
    assert_eq!(got, Ok(()));
}

// ---------------------------------------------------------------------------
// Slot reuse.

/// Pending until `open` is set; counts its polls and keeps its last waker.
struct Gate {
    open: Arc<AtomicBool>,
    polls: Arc<AtomicUsize>,
    waker: Arc<Mutex<Option<std::task::Waker>>>,
}

impl Future for Gate {
    type Output = Result<(), TaskErr>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn a_finished_tasks_stale_waker_only_repolls_the_task_that_took_its_slot() {
    let group = Group::<TaskErr>::new(&Context::background());
    // The first task finishes on its first poll but keeps its waker; the
    // second starts right after it, in the slot it freed.
    let stale = Arc::new(Mutex::new(None));
    let s = stale.clone();
    group.spawn(futures::future::poll_fn(move |cx| {
        *s.lock().unwrap() = Some(cx.waker().clone());
        Poll::Ready(Ok(()))
    }));
    let open = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicUsize::new(0));
    let gate_waker = Arc::new(Mutex::new(None));
    group.spawn(Gate {
        open: open.clone(),
        polls: polls.clone(),
        waker: gate_waker.clone(),
    });
    let mut wait = group.wait();
    assert!(poll_once(&mut wait).is_pending());
    assert_eq!(polls.load(Ordering::SeqCst), 1);

    // A wake through the finished task's waker is at worst a spurious poll
    // of the task now in that slot, which stays pending.
    let stale = stale.lock().unwrap().take().expect("the first task ran");
    stale.wake_by_ref();
    assert!(poll_once(&mut wait).is_pending());
    assert_eq!(polls.load(Ordering::SeqCst), 2);

    // The gate's own wake still finishes it, and the group with it.
    open.store(true, Ordering::SeqCst);
    gate_waker.lock().unwrap().take().unwrap().wake();
    assert_eq!(poll_once(&mut wait), Poll::Ready(Ok(())));
    assert_eq!(polls.load(Ordering::SeqCst), 3);

    // After the group is over the stale waker has nothing left to poll.
    stale.wake();
    assert_eq!(polls.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------
// Yielding.

type BoxedTask = Pin<Box<dyn Future<Output = Result<(), TaskErr>> + Send>>;

/// A task that spawns its successor until `stop` is set, counting the
/// links of the chain that ran.
fn endless_chain(
    spawner: ctxtree::Spawner<TaskErr>,
    stop: Arc<AtomicBool>,
    ran: Arc<AtomicUsize>,
) -> BoxedTask {
    Box::pin(async move {
        ran.fetch_add(1, Ordering::SeqCst);
        if !stop.load(Ordering::SeqCst) {
            spawner.spawn(endless_chain(spawner.clone(), stop, ran));
        }
        Ok(())
    })
}

#[test]
fn endless_spawning_still_lets_futures_beside_the_group_run() {
    // `join` polls the group, then the future beside it, on one thread: if
    // the group never returned `Pending`, the flag that ends the chain would
    // never be set and this would hang (`watchdog` fails it instead).
    let ran = watchdog("endless spawning", || {
        let group = Group::<TaskErr>::new(&Context::background());
        let stop = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        group.spawn(endless_chain(group.spawner(), stop.clone(), ran.clone()));
        let beside = async {
            yield_once().await;
            stop.store(true, Ordering::SeqCst);
        };
        let (result, ()) = block_on(futures::future::join(group.wait(), beside));
        assert_eq!(result, Ok(()));
        ran.load(Ordering::SeqCst)
    });
    // The chain ran through at least one budget of polls per yield, and
    // ended once the future beside the group had run twice.
    assert!(ran > 1, "the chain ran {ran} links");
}
