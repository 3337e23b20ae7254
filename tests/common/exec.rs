//! The executors the tests run on: one list, each built the same way
//! wherever a test needs it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::thread;

use super::timing::watchdog_async;

/// A task as every executor takes it.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Puts tasks on the executor it came from.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl Spawner {
    fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Spawner(Arc::new(spawn))
    }

    /// Spawns `task`, detached.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task))
    }

    /// Spawns `fut` and returns a future of its output, which fails the test
    /// if the task does not finish within the patience (or panics).
    pub fn spawn_join<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = T> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.spawn(async move {
            let _ = tx.send(fut.await);
        });
        async move {
            watchdog_async("a spawned task", rx)
                .await
                .expect("the spawned task panicked")
        }
    }
}

/// An executor, with how its tasks are spawned and how a thread blocks on
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// `futures::executor::block_on`; tasks on a `futures::executor::ThreadPool`
    /// of two threads.
    FuturesThreadPool,
    /// `smol::block_on`; tasks on smol's global executor.
    Smol,
    /// A `smol::Executor` run by two threads of its own.
    SmolTwoThreads,
    /// `async_std::task::block_on`; tasks on async-std's global executor.
    AsyncStd,
    /// tokio's multi-threaded runtime with two workers, time and IO on.
    TokioMultiThread,
    /// tokio's current-thread runtime, time and IO on: tasks run on the
    /// thread that blocks on it, between polls of its main future.
    TokioCurrentThread,
}

/// Every executor the tests run on.
pub const EXECUTORS: [Executor; 6] = [
    Executor::FuturesThreadPool,
    Executor::Smol,
    Executor::SmolTwoThreads,
    Executor::AsyncStd,
    Executor::TokioMultiThread,
    Executor::TokioCurrentThread,
];

impl Executor {
    /// Builds this executor and blocks the calling thread on `main(spawner)`,
    /// where `spawner` puts tasks on it; returns what `main` returns. What
    /// is built here (a tokio runtime, the two smol threads, the thread
    /// pool) is let go before this returns; smol's and async-std's global
    /// executors live on. Tasks still pending then may never finish.
    pub fn block_on<F: Future>(self, main: impl FnOnce(Spawner) -> F) -> F::Output {
        match self {
            Executor::FuturesThreadPool => {
                let pool = futures::executor::ThreadPool::builder()
                    .pool_size(2)
                    .create()
                    .expect("thread pool");
                futures::executor::block_on(main(Spawner::new(move |task| pool.spawn_ok(task))))
            }
            Executor::Smol => smol::block_on(main(Spawner::new(|task| smol::spawn(task).detach()))),
            Executor::SmolTwoThreads => {
                let ex = Arc::new(smol::Executor::new());
                let (stop, stopped) = smol::channel::unbounded::<()>();
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let (ex, stopped) = (ex.clone(), stopped.clone());
                        thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
                    })
                    .collect();
                let spawner = Spawner::new(move |task| ex.spawn(task).detach());
                let out = smol::block_on(main(spawner));
                drop(stop);
                for worker in workers {
                    let _ = worker.join().expect("a smol worker panicked");
                }
                out
            }
            Executor::AsyncStd => async_std::task::block_on(main(Spawner::new(|task| {
                drop(async_std::task::spawn(task));
            }))),
            Executor::TokioMultiThread | Executor::TokioCurrentThread => {
                let rt = if self == Executor::TokioMultiThread {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                }
                .expect("tokio runtime");
                let handle = rt.handle().clone();
                rt.block_on(main(Spawner::new(move |task| drop(handle.spawn(task)))))
            }
        }
    }

    /// Runs `fut` as a task of this executor (on one of its worker threads,
    /// where it has any) and blocks the calling thread until it finishes;
    /// fails the test if it does not finish within the patience.
    pub fn run<T: Send + 'static>(self, fut: impl Future<Output = T> + Send + 'static) -> T {
        self.block_on(|spawner| spawner.spawn_join(fut))
    }
}

/// On every executor: a `Done` of the context is awaited by the future
/// blocked on, another by a spawned task (on a worker thread, where the
/// executor has any), while the canceller is called on a thread of its own;
/// both must resolve to `Canceled`. `scenario` makes a fresh context and the
/// canceller that must reach it for each executor.
pub fn assert_cancel_reaches_done_on_every_executor(
    scenario: impl Fn() -> (ctxtree::Context, ctxtree::Canceller),
) {
    for exec in EXECUTORS {
        let (ctx, cancel) = scenario();
        let (here, spawned) = exec.block_on(|spawner| async move {
            let spawned = spawner.spawn_join(ctx.done());
            let canceller = thread::spawn(move || cancel.cancel());
            let here = ctx.done().await;
            canceller.join().expect("the cancelling thread");
            (here, spawned.await)
        });
        assert_eq!(here, ctxtree::Error::Canceled, "{exec:?}");
        assert_eq!(spawned, ctxtree::Error::Canceled, "{exec:?}: spawned");
    }
}
