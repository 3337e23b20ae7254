//! `done()` and `run()` on every executor: smol, async-std, tokio,
//! `futures::executor::ThreadPool`, and plain threads with `wait()`.
//!
//! The scenario: 1,000 tasks each race work that never finishes against
//! `ctx.done()` in `futures::select!` (the `Done` goes in as is: no `.fuse()`,
//! no pinning, as the contract promises). Once every task has started (a
//! signal, not a sleep), one `cancel()`; every task must then report
//! `Err(Canceled)`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use ctxtree::{Context, Error};
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};

use crate::common::{patience, watchdog_async, DropProbe, Executor, Spawner, HOUR};

const TASKS: usize = 1_000;

/// Work that never completes, with a probe that counts when it is dropped.
async fn endless_work(probe: DropProbe) {
    let _probe = probe;
    futures::future::pending::<()>().await;
}

/// Collects `n` results, failing (not hanging) if they do not all come.
async fn collect<T>(rx: &mut mpsc::UnboundedReceiver<T>, n: usize) -> Vec<T> {
    watchdog_async("collecting the tasks' results", async {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(rx.next().await.expect("a task dropped its sender"));
        }
        out
    })
    .await
}

/// Spawns `TASKS` tasks with `spawner`; each one, once started, races
/// `make_race(ctx)` and reports its result. Waits until all have started,
/// cancels once, and checks that all report `Err(Canceled)` and dropped
/// their work.
async fn cancel_all<F>(spawner: &Spawner, make_race: fn(Context, DropProbe) -> F)
where
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let (ctx, cancel) = Context::background().with_cancel();
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (all_started_tx, all_started_rx) = oneshot::channel::<()>();
    let all_started_tx = Arc::new(Mutex::new(Some(all_started_tx)));
    let (result_tx, mut result_rx) = mpsc::unbounded();

    for _ in 0..TASKS {
        let ctx = ctx.clone();
        let started = started.clone();
        let all_started_tx = all_started_tx.clone();
        let result_tx = result_tx.clone();
        let probe = DropProbe(dropped.clone());
        spawner.spawn(async move {
            let race = make_race(ctx, probe);
            if started.fetch_add(1, Ordering::SeqCst) + 1 == TASKS {
                let tx = all_started_tx.lock().unwrap().take().unwrap();
                tx.send(()).unwrap();
            }
            let result = race.await;
            result_tx.unbounded_send(result).unwrap();
        });
    }
    drop(result_tx);

    watchdog_async("starting every task", all_started_rx)
        .await
        .expect("a task vanished");
    assert_eq!(started.load(Ordering::SeqCst), TASKS);
    assert!(
        result_rx.try_recv().is_err(),
        "a task finished before the cancel"
    );
    assert!(!ctx.is_done());

    cancel.cancel();
    let results = collect(&mut result_rx, TASKS).await;
    assert_eq!(results.len(), TASKS);
    assert!(
        results.iter().all(|r| *r == Err(Error::Canceled)),
        "not every task observed Canceled: {:?}",
        results.iter().find(|r| **r != Err(Error::Canceled))
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        TASKS,
        "work futures not dropped"
    );
}

/// The race written with `select!`, `done()` straight in.
async fn race_select(ctx: Context, probe: DropProbe) -> Result<(), Error> {
    let work = endless_work(probe).fuse();
    futures::pin_mut!(work);
    futures::select! {
        err = ctx.done() => Err(err),
        () = work => Ok(()),
    }
}

/// The same race, `select!` on a `Done` held in a variable.
async fn race_select_held(ctx: Context, probe: DropProbe) -> Result<(), Error> {
    let mut done = ctx.done();
    let mut work = Box::pin(endless_work(probe).fuse());
    futures::select! {
        err = done => Err(err),
        () = work => Ok(()),
    }
}

/// The race written with `ctx.run`.
async fn race_run(ctx: Context, probe: DropProbe) -> Result<(), Error> {
    ctx.run(endless_work(probe)).await
}

/// `run` on a live context lets its future finish: `Ok(output)`.
async fn run_completes(spawner: &Spawner) {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded();
    for i in 0..100u32 {
        let ctx = ctx.clone();
        let tx = tx.clone();
        spawner.spawn(async move {
            let out = ctx
                .run(async move {
                    smol::Timer::after(Duration::from_millis(1)).await;
                    i * 2
                })
                .await;
            tx.unbounded_send((i, out)).unwrap();
        });
    }
    let mut results = collect(&mut rx, 100).await;
    results.sort_by_key(|(i, _)| *i);
    for (i, out) in results {
        assert_eq!(out, Ok(i * 2));
    }
    assert!(!ctx.is_done());
    cancel.cancel();
}

/// A deadline fires under the executor: `done()` in `select!` sees
/// `DeadlineExceeded`.
async fn deadline_in_select(spawner: &Spawner) {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let (tx, mut rx) = mpsc::unbounded();
    for _ in 0..100 {
        let ctx = ctx.clone();
        let tx = tx.clone();
        spawner.spawn(async move {
            let dropped = Arc::new(AtomicUsize::new(0));
            let result = race_select(ctx, DropProbe(dropped)).await;
            tx.unbounded_send(result).unwrap();
        });
    }
    let results = collect(&mut rx, 100).await;
    assert!(results.iter().all(|r| *r == Err(Error::DeadlineExceeded)));
}

/// All the scenarios, on one executor.
async fn all_scenarios(spawner: Spawner) {
    cancel_all(&spawner, race_select).await;
    cancel_all(&spawner, race_select_held).await;
    cancel_all(&spawner, race_run).await;
    run_completes(&spawner).await;
    deadline_in_select(&spawner).await;
}

#[test]
fn on_smol_executor_with_two_threads() {
    Executor::SmolTwoThreads.block_on(all_scenarios);
}

#[test]
fn on_smol_global_executor() {
    Executor::Smol.block_on(all_scenarios);
}

#[test]
fn on_async_std() {
    Executor::AsyncStd.block_on(all_scenarios);
}

#[test]
fn on_tokio_multi_thread() {
    Executor::TokioMultiThread.block_on(all_scenarios);
}

#[test]
fn on_tokio_current_thread() {
    Executor::TokioCurrentThread.block_on(all_scenarios);
}

#[test]
fn on_futures_thread_pool() {
    Executor::FuturesThreadPool.block_on(all_scenarios);
}

/// Runs `f(i)` on `n` plain threads; `receive` collects their results,
/// failing (not hanging) if they do not all finish within the patience: a
/// lost wakeup leaves a thread blocked forever, and it is then left behind.
fn on_threads<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> std::sync::mpsc::Receiver<T> {
    let f = Arc::new(f);
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..n {
        let (f, tx) = (f.clone(), tx.clone());
        thread::spawn(move || tx.send(f(i)).unwrap());
    }
    rx
}

/// Receives `n` results from `on_threads`, or fails.
fn receive<T>(rx: &std::sync::mpsc::Receiver<T>, n: usize) -> Vec<T> {
    let patience = patience();
    (0..n)
        .map(|got| {
            rx.recv_timeout(patience).unwrap_or_else(|_| {
                panic!("only {got} of {n} threads finished within {patience:?}")
            })
        })
        .collect()
}

#[test]
fn on_plain_threads_with_wait() {
    const THREADS: usize = 100;
    let (ctx, cancel) = Context::background().with_cancel();
    let started = Arc::new(Barrier::new(THREADS + 1));
    let rx = {
        let (ctx, started) = (ctx.clone(), started.clone());
        on_threads(THREADS, move |i| {
            started.wait();
            if i % 2 == 0 {
                Some(ctx.wait())
            } else {
                ctx.wait_timeout(HOUR)
            }
        })
    };
    started.wait();
    assert!(!ctx.is_done());
    assert!(
        rx.try_recv().is_err(),
        "a waiter returned before the cancel"
    );
    cancel.cancel();
    let results = receive(&rx, THREADS);
    assert!(results.iter().all(|r| *r == Some(Error::Canceled)));
}

#[test]
fn on_plain_threads_a_deadline_wakes_every_waiter() {
    const THREADS: usize = 100;
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(30));
    let rx = {
        let ctx = ctx.clone();
        on_threads(THREADS, move |_| ctx.with_value(0u8).wait())
    };
    let results = receive(&rx, THREADS);
    assert!(results.iter().all(|r| *r == Error::DeadlineExceeded));
}

#[test]
fn on_plain_threads_with_futures_block_on_run() {
    const THREADS: usize = 100;
    let (ctx, cancel) = Context::background().with_cancel();
    let started = Arc::new(Barrier::new(THREADS + 1));
    let dropped = Arc::new(AtomicUsize::new(0));
    let rx = {
        let (ctx, started, dropped) = (ctx.clone(), started.clone(), dropped.clone());
        on_threads(THREADS, move |_| {
            let probe = DropProbe(dropped.clone());
            started.wait();
            futures::executor::block_on(ctx.run(endless_work(probe)))
        })
    };
    started.wait();
    cancel.cancel();
    let results = receive(&rx, THREADS);
    assert!(results.iter().all(|r| *r == Err(Error::Canceled)));
    assert_eq!(dropped.load(Ordering::SeqCst), THREADS);
}

#[test]
fn done_and_run_have_the_bounds_executors_need() {
    fn done_bounds<T>()
    where
        T: Future<Output = Error> + futures::future::FusedFuture + Unpin + Send + 'static,
    {
    }
    fn spawnable<T: Future + Send + 'static>(_: &T) {}
    done_bounds::<ctxtree::Done>();
    let ctx = Context::background();
    spawnable(&ctx.run(async { 1u8 }));
    spawnable(&ctx.done());
}
