//! `done()` and `run()` on every executor: smol, async-std, tokio,
//! `futures::executor::ThreadPool`, and plain threads with `wait()`.
//!
//! The scenario: 1,000 tasks each race work that never finishes against
//! `ctx.done()` in `futures::select!` (the `Done` goes in as is: no `.fuse()`,
//! no pinning, as the contract promises). Once every task has started (a
//! signal, not a sleep), one `cancel()`; every task must then report
//! `Err(Canceled)`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use ctxtree::{Context, Error};
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};

const TASKS: usize = 1_000;

/// If the results take longer than this, something is stuck.
const STUCK: Duration = Duration::from_secs(30);

type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Counts its drops: shows that the losing work future is dropped.
struct DropProbe(Arc<AtomicUsize>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Work that never completes, with a probe that counts when it is dropped.
async fn endless_work(probe: DropProbe) {
    let _probe = probe;
    futures::future::pending::<()>().await;
}

/// Collects `n` results, failing (not hanging) if they do not all come.
async fn collect<T>(rx: &mut mpsc::UnboundedReceiver<T>, n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let mut stuck = FutureExt::fuse(smol::Timer::after(STUCK));
    while out.len() < n {
        futures::select! {
            item = rx.next() => out.push(item.expect("a task dropped its sender")),
            _ = stuck => panic!("only {} of {n} tasks reported within {STUCK:?}", out.len()),
        }
    }
    out
}

/// Spawns `TASKS` tasks with `spawn`; each one, once started, races
/// `make_race(ctx)` and reports its result. Waits until all have started,
/// cancels once, and checks that all report `Err(Canceled)` and dropped
/// their work.
async fn cancel_all<F>(spawn: &(dyn Fn(Task) + Sync), make_race: fn(Context, DropProbe) -> F)
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
        spawn(Box::pin(async move {
            let race = make_race(ctx, probe);
            if started.fetch_add(1, Ordering::SeqCst) + 1 == TASKS {
                let tx = all_started_tx.lock().unwrap().take().unwrap();
                tx.send(()).unwrap();
            }
            let result = race.await;
            result_tx.unbounded_send(result).unwrap();
        }));
    }
    drop(result_tx);

    futures::select! {
        signal = all_started_rx.fuse() => signal.expect("a task vanished"),
        _ = FutureExt::fuse(smol::Timer::after(STUCK)) => panic!("tasks never all started"),
    }
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
async fn run_completes(spawn: &(dyn Fn(Task) + Sync)) {
    let (ctx, cancel) = Context::background().with_cancel();
    let (tx, mut rx) = mpsc::unbounded();
    for i in 0..100u32 {
        let ctx = ctx.clone();
        let tx = tx.clone();
        spawn(Box::pin(async move {
            let out = ctx
                .run(async move {
                    smol::Timer::after(Duration::from_millis(1)).await;
                    i * 2
                })
                .await;
            tx.unbounded_send((i, out)).unwrap();
        }));
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
async fn deadline_in_select(spawn: &(dyn Fn(Task) + Sync)) {
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let (tx, mut rx) = mpsc::unbounded();
    for _ in 0..100 {
        let ctx = ctx.clone();
        let tx = tx.clone();
        spawn(Box::pin(async move {
            let dropped = Arc::new(AtomicUsize::new(0));
            let result = race_select(ctx, DropProbe(dropped)).await;
            tx.unbounded_send(result).unwrap();
        }));
    }
    let results = collect(&mut rx, 100).await;
    assert!(results.iter().all(|r| *r == Err(Error::DeadlineExceeded)));
}

/// All the scenarios, on one executor.
async fn all_scenarios(spawn: &(dyn Fn(Task) + Sync)) {
    cancel_all(spawn, race_select).await;
    cancel_all(spawn, race_select_held).await;
    cancel_all(spawn, race_run).await;
    run_completes(spawn).await;
    deadline_in_select(spawn).await;
}

#[test]
fn on_smol_executor_with_two_threads() {
    let ex = Arc::new(smol::Executor::new());
    let (stop_tx, stop_rx) = smol::channel::unbounded::<()>();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let ex = ex.clone();
            let stop_rx = stop_rx.clone();
            thread::spawn(move || smol::block_on(ex.run(stop_rx.recv())))
        })
        .collect();
    let spawner = ex.clone();
    smol::block_on(all_scenarios(&move |task: Task| {
        spawner.spawn(task).detach()
    }));
    drop(stop_tx);
    for w in workers {
        let _ = w.join().unwrap();
    }
}

#[test]
fn on_smol_global_executor() {
    smol::block_on(all_scenarios(&|task: Task| smol::spawn(task).detach()));
}

#[test]
fn on_async_std() {
    async_std::task::block_on(all_scenarios(&|task: Task| {
        drop(async_std::task::spawn(task));
    }));
}

#[test]
fn on_tokio_multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    rt.block_on(all_scenarios(&move |task: Task| {
        drop(handle.spawn(task));
    }));
}

#[test]
fn on_tokio_current_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &rt,
        all_scenarios(&|task: Task| {
            drop(tokio::task::spawn_local(task));
        }),
    );
}

#[test]
fn on_futures_thread_pool() {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    futures::executor::block_on(all_scenarios(&move |task: Task| pool.spawn_ok(task)));
}

/// Runs `f(i)` on `n` plain threads and returns their results, failing (not
/// hanging) if they do not all finish within `STUCK`: a lost wakeup leaves
/// a thread blocked forever, and it is then left behind.
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
    (0..n)
        .map(|got| {
            rx.recv_timeout(STUCK)
                .unwrap_or_else(|_| panic!("only {got} of {n} threads finished within {STUCK:?}"))
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
                ctx.wait_timeout(Duration::from_secs(3600))
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
