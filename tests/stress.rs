//! Stress on real threads: workers derive, drop, cancel, register callbacks
//! and wait on one shared tree, then everything is checked and freed.
//!
//! Each test runs for `CTXTREE_STRESS_SECS` seconds (default 2; a decimal
//! number such as `0.5` or `600` works), with 4 worker threads by default
//! and also with 2 and 8. `CTXTREE_VALGRIND=1` (scripts/valgrind.sh) makes
//! the default 1 second and the hang timeouts longer.
//!
//! Each worker loops over random operations (a tiny xorshift generator,
//! seeded per thread; the seeds are printed) on shared, bounded pools:
//!
//! * derive a child (`with_cancel`, `merge` with another pooled context,
//!   `with_timeout(1 hour)`, `with_timeout(0)`, `with_value`) of a pooled
//!   context or of the root;
//!   a child of a context that was already done must be born done with the
//!   same error and cause;
//! * drop a pooled context or canceller; cancel one, with or without a
//!   cause, or through a `CancelGuard`;
//! * register an `after_func` that counts its runs (on a done context it
//!   must have run before `after_func` returns); `stop()` one; half of the
//!   registrations also keep their context to the end, so they must run;
//! * keep a `Done` for the end, or poll one, or await one on a small
//!   `futures` thread pool;
//! * check that a context's error and cause, once set, never change.
//!
//! At the end the root is cancelled and, on a thread watched by a timeout
//! (a hang fails the test): every pooled context is done, every kept `Done`
//! and every pool waiter completes with its context's error, every callback
//! whose context was kept to the end ran exactly once unless stopped, every
//! `stop()` agrees with its callback's count (`true`: it never ran;
//! `false`: it ran once), no callback ran twice (the sum of all runs equals
//! the number of callbacks that ran), and every value node is freed. Then,
//! with every thread joined, the live heap (a counting global allocator)
//! must be back at its level from before the test, within a small slack.

mod common;

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use common::{drain_async_io, live_bytes, patience, poll_once, serial, valgrind, HOUR};
use ctxtree::{AfterFunc, Canceller, Context, Done, Error};
use futures::executor::ThreadPool;

// ---------------------------------------------------------------------------
// Counting allocator (tests/common)
// ---------------------------------------------------------------------------

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

/// What the heap may keep after everything is dropped and every thread of
/// the test is joined: bookkeeping of exited threads that the allocator
/// frees a moment later, the test harness's own buffers.
const SLACK_BYTES: isize = 64 << 10;

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

fn run_time() -> Duration {
    match std::env::var("CTXTREE_STRESS_SECS") {
        Ok(s) => Duration::from_secs_f64(
            s.trim()
                .parse()
                .expect("CTXTREE_STRESS_SECS: a number of seconds"),
        ),
        Err(_) if valgrind() => Duration::from_secs(1),
        Err(_) => Duration::from_secs(2),
    }
}

const CONTEXTS_CAP: usize = 64;
const CANCELLERS_CAP: usize = 64;
const CALLBACKS_CAP: usize = 256;
const WAITERS_CAP: usize = 256;
const POOL_WAITERS_MAX: usize = 512;
const POOL_THREADS: usize = 2;

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

/// xorshift64*: enough randomness, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A value that counts live value nodes.
struct Tracked(Arc<AtomicIsize>);

impl Tracked {
    fn new(live: &Arc<AtomicIsize>) -> Tracked {
        live.fetch_add(1, Ordering::SeqCst);
        Tracked(live.clone())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Callback {
    runs: Arc<AtomicUsize>,
    handle: AfterFunc,
    /// Keeps the context alive to the end: then the callback must run.
    keep: Option<Context>,
    /// A `stop()` returned `true`.
    stopped: bool,
}

struct Waiter {
    ctx: Context,
    done: Done,
}

/// Pool waiters spawned and completed, with a condvar to await the count.
#[derive(Default)]
struct PoolWaiters {
    counts: Mutex<(usize, usize)>,
    changed: Condvar,
    mismatches: AtomicUsize,
}

#[derive(Default)]
struct Stats {
    ops: AtomicU64,
    derived: AtomicU64,
    born_done: AtomicU64,
    cancels: AtomicU64,
    registered: AtomicU64,
    stopped: AtomicU64,
    retired_ran: AtomicU64,
    waiters_dropped_pending: AtomicU64,
    waiters_polled_ready: AtomicU64,
    checks: AtomicU64,
}

struct Shared {
    root: Context,
    contexts: Mutex<Vec<Context>>,
    cancellers: Mutex<Vec<Canceller>>,
    callbacks: Mutex<Vec<Callback>>,
    waiters: Mutex<Vec<Waiter>>,
    pool: ThreadPool,
    pool_waiters: Arc<PoolWaiters>,
    /// Runs of every callback, summed by the callbacks themselves.
    total_runs: Arc<AtomicUsize>,
    /// Runs that the callbacks retired during the run account for.
    expected_runs: AtomicUsize,
    live_values: Arc<AtomicIsize>,
    stop: AtomicBool,
    stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .expect("a worker panicked while holding a pool lock")
}

/// Puts `item` in `pool`; if the pool is full, replaces a random entry and
/// returns it, to be dropped outside the lock.
fn put<T>(pool: &Mutex<Vec<T>>, cap: usize, item: T, rng: &mut Rng) -> Option<T> {
    let mut pool = lock(pool);
    if pool.len() < cap {
        pool.push(item);
        None
    } else {
        let i = rng.below(pool.len());
        Some(std::mem::replace(&mut pool[i], item))
    }
}

fn take<T>(pool: &Mutex<Vec<T>>, rng: &mut Rng) -> Option<T> {
    let mut pool = lock(pool);
    if pool.is_empty() {
        None
    } else {
        let i = rng.below(pool.len());
        Some(pool.swap_remove(i))
    }
}

/// Settles a callback leaving the test's hands: returns how many runs it
/// accounts for (0 or 1) and checks its counter agrees.
fn settle(cb: Callback, stats: &Stats) -> usize {
    let runs = || cb.runs.load(Ordering::SeqCst);
    if cb.stopped {
        assert_eq!(runs(), 0, "a stopped callback ran");
        return 0;
    }
    if cb.handle.stop() {
        stats.stopped.fetch_add(1, Ordering::Relaxed);
        assert_eq!(runs(), 0, "stop() returned true for a callback that ran");
        return 0;
    }
    // It started: it may still be running on another thread; its first
    // statement counts. Wait for that, bounded.
    let start = Instant::now();
    while runs() == 0 {
        assert!(
            start.elapsed() < patience(),
            "stop() said started, but the callback never ran"
        );
        thread::yield_now();
    }
    assert_eq!(runs(), 1, "a callback ran more than once");
    1
}

fn cause(msg: String) -> ctxtree::Cause {
    Arc::new(io::Error::other(msg))
}

impl Shared {
    /// A pooled context, or the root now and then (so the tree stays wide).
    fn pick_context(&self, rng: &mut Rng) -> Context {
        if rng.below(4) != 0 {
            if let Some(ctx) = self.pick_pooled_context(rng) {
                return ctx;
            }
        }
        self.root.clone()
    }

    fn pick_pooled_context(&self, rng: &mut Rng) -> Option<Context> {
        let pool = lock(&self.contexts);
        (!pool.is_empty()).then(|| pool[rng.below(pool.len())].clone())
    }

    fn pick_canceller(&self, rng: &mut Rng) -> Option<Canceller> {
        let pool = lock(&self.cancellers);
        (!pool.is_empty()).then(|| pool[rng.below(pool.len())].clone())
    }

    fn derive(&self, rng: &mut Rng) {
        let parent = self.pick_context(rng);
        let before = parent.err();
        let before_cause = before.map(|_| parent.cause().expect("done: has a cause").to_string());
        let (child, canceller) = match rng.below(16) {
            0..=4 => {
                let (c, k) = parent.with_cancel();
                (c, Some(k))
            }
            5 | 6 => {
                // Merged with another pooled context (or the root, or the
                // parent itself): done once either is.
                let other = self.pick_context(rng);
                let other_done = other.is_done();
                let (c, k) = parent.merge(&other);
                if other_done {
                    assert!(c.is_done(), "merged with a done context: born done");
                }
                (c, Some(k))
            }
            7..=10 => {
                let (c, k) = parent.with_timeout(HOUR);
                (c, Some(k))
            }
            11 => {
                let (c, k) = parent.with_timeout(Duration::ZERO);
                assert!(c.is_done(), "with_timeout(0) is done at once");
                (c, Some(k))
            }
            _ => (parent.with_value(Tracked::new(&self.live_values)), None),
        };
        self.stats.derived.fetch_add(1, Ordering::Relaxed);
        if let Some(err) = before {
            self.stats.born_done.fetch_add(1, Ordering::Relaxed);
            assert_eq!(
                child.err(),
                Some(err),
                "a child of a done context is born done"
            );
            assert_eq!(
                child.cause().map(|c| c.to_string()),
                before_cause,
                "with the parent's cause"
            );
            // A reason once read never changes, whoever cancels later (a
            // merged parent may have taken its second parent's reason
            // when it was read above).
            assert_eq!(
                parent.cause().map(|c| c.to_string()),
                before_cause,
                "the parent's cause changed after it was read"
            );
        }
        drop(put(&self.contexts, CONTEXTS_CAP, child, rng));
        if let Some(k) = canceller {
            drop(put(&self.cancellers, CANCELLERS_CAP, k, rng));
        }
    }

    fn cancel(&self, rng: &mut Rng, id: usize, n: u64) {
        match rng.below(4) {
            0 => {
                if let Some(k) = self.pick_canceller(rng) {
                    k.cancel();
                }
            }
            1 | 2 => {
                if let Some(k) = self.pick_canceller(rng) {
                    k.cancel_with_cause(cause(format!("worker {id}, op {n}")));
                }
            }
            _ => {
                // The last handle of the canceller, through a guard.
                if let Some(k) = take(&self.cancellers, rng) {
                    drop(k.guard());
                }
            }
        }
        self.stats.cancels.fetch_add(1, Ordering::Relaxed);
    }

    fn register(&self, rng: &mut Rng) {
        let ctx = self.pick_context(rng);
        let was_done = ctx.is_done();
        let runs = Arc::new(AtomicUsize::new(0));
        let (r, total) = (runs.clone(), self.total_runs.clone());
        let handle = ctx.after_func(move || {
            r.fetch_add(1, Ordering::SeqCst);
            total.fetch_add(1, Ordering::SeqCst);
        });
        if was_done {
            assert_eq!(
                runs.load(Ordering::SeqCst),
                1,
                "after_func on a done context runs at once"
            );
        }
        let keep = (rng.below(2) == 0).then_some(ctx);
        let cb = Callback {
            runs,
            handle,
            keep,
            stopped: false,
        };
        self.stats.registered.fetch_add(1, Ordering::Relaxed);
        self.put_callback(cb, rng);
    }

    /// Pools `cb`; a callback it replaces is settled and accounted for.
    fn put_callback(&self, cb: Callback, rng: &mut Rng) {
        if let Some(old) = put(&self.callbacks, CALLBACKS_CAP, cb, rng) {
            let ran = settle(old, &self.stats);
            self.stats
                .retired_ran
                .fetch_add(ran as u64, Ordering::Relaxed);
            self.expected_runs.fetch_add(ran, Ordering::SeqCst);
        }
    }

    fn stop_one(&self, rng: &mut Rng) {
        let Some(mut cb) = take(&self.callbacks, rng) else {
            return;
        };
        if !cb.stopped && cb.handle.stop() {
            cb.stopped = true;
            self.stats.stopped.fetch_add(1, Ordering::Relaxed);
            assert_eq!(
                cb.runs.load(Ordering::SeqCst),
                0,
                "stop() returned true for a callback that ran"
            );
        }
        self.put_callback(cb, rng);
    }

    fn keep_waiter(&self, rng: &mut Rng) {
        let ctx = self.pick_context(rng);
        let done = ctx.done();
        if let Some(old) = put(&self.waiters, WAITERS_CAP, Waiter { ctx, done }, rng) {
            if !old.ctx.is_done() {
                self.stats
                    .waiters_dropped_pending
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn poll_waiter(&self, rng: &mut Rng) {
        let Some(mut w) = take(&self.waiters, rng) else {
            return;
        };
        match poll_once(&mut w.done) {
            Poll::Ready(err) => {
                assert_eq!(
                    w.ctx.err(),
                    Some(err),
                    "Done resolved with its context's error"
                );
                self.stats
                    .waiters_polled_ready
                    .fetch_add(1, Ordering::Relaxed);
            }
            Poll::Pending => drop(put(&self.waiters, WAITERS_CAP, w, rng)),
        }
    }

    /// Awaits a pooled context's `Done` on the thread pool (not the root's,
    /// which is cancelled only at the end).
    fn spawn_pool_waiter(&self, rng: &mut Rng) {
        let Some(ctx) = self.pick_pooled_context(rng) else {
            return;
        };
        {
            let mut counts = lock(&self.pool_waiters.counts);
            if counts.0 - counts.1 >= POOL_WAITERS_MAX {
                return;
            }
            counts.0 += 1;
        }
        let done = ctx.done();
        let waiters = self.pool_waiters.clone();
        self.pool.spawn_ok(async move {
            let err = done.await;
            if ctx.err() != Some(err) {
                waiters.mismatches.fetch_add(1, Ordering::SeqCst);
            }
            drop(ctx);
            lock(&waiters.counts).1 += 1;
            waiters.changed.notify_all();
        });
    }

    fn check_one(&self, rng: &mut Rng) {
        let ctx = self.pick_context(rng);
        let first = ctx.err();
        let first_cause = ctx.cause().map(|c| c.to_string());
        let polled = poll_once(&mut ctx.done());
        if let Some(err) = first {
            assert_eq!(
                polled,
                Poll::Ready(err),
                "done() of a done context is ready at once"
            );
            assert_eq!(ctx.err(), Some(err), "err() never changes");
            assert!(first_cause.is_some(), "a done context has a cause");
            assert_eq!(
                ctx.cause().map(|c| c.to_string()),
                first_cause,
                "cause() never changes"
            );
        }
        self.stats.checks.fetch_add(1, Ordering::Relaxed);
    }
}

fn worker(id: usize, seed: u64, shared: Arc<Shared>) -> u64 {
    let mut rng = Rng(seed);
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        // Weights out of 32. Cancels are rarer than derivations, so that
        // most of the tree is live most of the time.
        match rng.below(32) {
            0..=8 => shared.derive(&mut rng),
            9..=11 => drop(take(&shared.contexts, &mut rng)),
            12..=13 => drop(take(&shared.cancellers, &mut rng)),
            14..=15 => shared.cancel(&mut rng, id, n),
            16..=19 => shared.register(&mut rng),
            20 => shared.stop_one(&mut rng),
            21..=22 => shared.keep_waiter(&mut rng),
            23 => shared.poll_waiter(&mut rng),
            24..=25 => shared.spawn_pool_waiter(&mut rng),
            _ => shared.check_one(&mut rng),
        }
        n += 1;
    }
    shared.stats.ops.fetch_add(n, Ordering::Relaxed);
    n
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Read through its `Debug`, printed at the end of each test.
#[derive(Debug)]
#[allow(dead_code)]
struct Report {
    ops: u64,
    derived: u64,
    born_done: u64,
    cancels: u64,
    registered: u64,
    ran: usize,
    stopped: u64,
    discarded: usize,
    kept_done: usize,
    waiters_dropped_pending: u64,
    waiters_polled_ready: u64,
    kept_waiters: usize,
    pool_waiters: usize,
    checks: u64,
    /// Pool waiters that never completed after the root was cancelled.
    lost_waiters: usize,
    /// Callbacks of contexts kept to the end (so done) that did not run.
    lost_callbacks: usize,
}

thread_local! {
    /// Set on the pool's threads: signals when the thread's locals are torn
    /// down, that is, when the thread exits.
    static EXIT_SIGNAL: RefCell<Option<SignalOnDrop>> = const { RefCell::new(None) };
}

struct SignalOnDrop(mpsc::Sender<()>);

impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Receives `n` messages or fails after the hang timeout.
fn recv_n<T>(rx: &mpsc::Receiver<T>, n: usize, what: &str) -> Vec<T> {
    let deadline = Instant::now() + patience();
    (0..n)
        .map(|i| {
            let left = deadline.saturating_duration_since(Instant::now());
            rx.recv_timeout(left)
                .unwrap_or_else(|e| panic!("{what}: {i} of {n} within {:?} ({e})", patience()))
        })
        .collect()
}

/// Runs the workers, checks the end state, and drops everything; returns
/// once every thread it started has exited.
fn run(threads: usize, time: Duration) -> (Report, Vec<u64>) {
    let (root, root_cancel) = Context::background().with_cancel();
    let (exit_tx, exit_rx) = mpsc::channel();
    let exit_tx = Mutex::new(exit_tx);
    let pool = ThreadPool::builder()
        .pool_size(POOL_THREADS)
        .after_start(move |_| {
            let tx = lock(&exit_tx).clone();
            EXIT_SIGNAL.with(|s| *s.borrow_mut() = Some(SignalOnDrop(tx)));
        })
        .create()
        .expect("thread pool");
    let shared = Arc::new(Shared {
        root,
        contexts: Mutex::new(Vec::with_capacity(CONTEXTS_CAP)),
        cancellers: Mutex::new(Vec::with_capacity(CANCELLERS_CAP)),
        callbacks: Mutex::new(Vec::with_capacity(CALLBACKS_CAP)),
        waiters: Mutex::new(Vec::with_capacity(WAITERS_CAP)),
        pool,
        pool_waiters: Arc::default(),
        total_runs: Arc::default(),
        expected_runs: AtomicUsize::new(0),
        live_values: Arc::default(),
        stop: AtomicBool::new(false),
        stats: Stats::default(),
    });

    let base_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    // Each worker signals when it exits, by returning or by panicking.
    let (exit_tx, worker_exit) = mpsc::channel();
    let mut seeds = Vec::new();
    let workers: Vec<_> = (0..threads)
        .map(|id| {
            let seed = base_seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(id as u64 * 0x1234_5679)
                | 1;
            seeds.push(seed);
            let (shared, signal) = (shared.clone(), SignalOnDrop(exit_tx.clone()));
            thread::Builder::new()
                .name(format!("stress-{id}"))
                .spawn(move || {
                    let _signal = signal;
                    worker(id, seed, shared)
                })
                .expect("spawn worker")
        })
        .collect();
    drop(exit_tx);

    // Run for `time`, unless a worker exits early (it panicked).
    let early = worker_exit.recv_timeout(time).is_ok();
    shared.stop.store(true, Ordering::SeqCst);
    recv_n(
        &worker_exit,
        threads - usize::from(early),
        "workers stopped (a deadlock?)",
    );
    for w in workers {
        if let Err(panic) = w.join() {
            std::panic::resume_unwind(panic);
        }
    }

    root_cancel.cancel();
    drop(root_cancel);

    // The end checks, on a thread: a hang fails the test.
    let (report_tx, report_rx) = mpsc::channel();
    let checker = thread::Builder::new()
        .name("stress-checker".into())
        .spawn(move || {
            let report = check_and_drop(shared);
            let _ = report_tx.send(report);
        })
        .expect("spawn checker");
    let report = match report_rx.recv_timeout(patience()) {
        Ok(report) => report,
        Err(mpsc::RecvTimeoutError::Disconnected) => match checker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the checker sends before it returns"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("end checks still running after {:?}: a hang", patience())
        }
    };
    checker.join().expect("checker");
    // The pool was dropped with the shared state: wait for its threads.
    recv_n(&exit_rx, POOL_THREADS, "pool threads exited");
    (report, seeds)
}

fn check_and_drop(shared: Arc<Shared>) -> Report {
    let shared =
        Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("workers still hold the shared state"));
    let Shared {
        root,
        contexts,
        cancellers,
        callbacks,
        waiters,
        pool,
        pool_waiters,
        total_runs,
        expected_runs,
        live_values,
        stop: _,
        stats,
    } = shared;
    assert_eq!(root.err(), Some(Error::Canceled));
    let contexts = contexts.into_inner().unwrap();
    for ctx in &contexts {
        assert!(
            ctx.is_done(),
            "a context below the cancelled root is live: {ctx:?}"
        );
    }

    // Kept `Done`s: the context is done, so each is ready (block_on
    // returns at once) with the context's error.
    let waiters = waiters.into_inner().unwrap();
    let kept_waiters = waiters.len();
    for w in waiters {
        let err = futures::executor::block_on(w.done);
        assert_eq!(w.ctx.err(), Some(err));
    }

    let pool_spawned = {
        let counts = pool_waiters
            .changed
            .wait_timeout_while(
                lock(&pool_waiters.counts),
                patience(),
                |(spawned, completed)| completed < spawned,
            )
            .expect("pool waiters lock")
            .0;
        *counts
    };
    // Pool waiters really await: a lost wakeup leaves one pending forever.
    let lost_waiters = pool_spawned.0 - pool_spawned.1;
    assert_eq!(
        pool_waiters.mismatches.load(Ordering::SeqCst),
        0,
        "a Done resolved with another error"
    );

    let mut expected = expected_runs.load(Ordering::SeqCst);
    let mut kept_done = 0;
    let mut lost_callbacks = 0;
    let stopped_before = stats.stopped.load(Ordering::Relaxed);
    for cb in callbacks.into_inner().unwrap() {
        let must_run = cb.keep.is_some() && !cb.stopped;
        if let Some(ctx) = &cb.keep {
            assert!(ctx.is_done());
        }
        let ran = settle(cb, &stats);
        if must_run {
            kept_done += 1;
            lost_callbacks += usize::from(ran == 0);
        }
        expected += ran;
    }
    // Callbacks stopped at the very end: their nodes were freed while live,
    // so their callbacks were dropped unrun.
    let discarded = (stats.stopped.load(Ordering::Relaxed) - stopped_before) as usize;
    let ran = total_runs.load(Ordering::SeqCst);
    assert_eq!(
        ran, expected,
        "callback runs: counted {ran}, accounted for {expected}"
    );

    drop((root, contexts, cancellers, pool));
    assert_eq!(
        live_values.load(Ordering::SeqCst),
        0,
        "value nodes still alive"
    );

    Report {
        ops: stats.ops.load(Ordering::Relaxed),
        derived: stats.derived.load(Ordering::Relaxed),
        born_done: stats.born_done.load(Ordering::Relaxed),
        cancels: stats.cancels.load(Ordering::Relaxed),
        registered: stats.registered.load(Ordering::Relaxed),
        ran,
        stopped: stats.stopped.load(Ordering::Relaxed) - discarded as u64,
        discarded,
        kept_done,
        waiters_dropped_pending: stats.waiters_dropped_pending.load(Ordering::Relaxed),
        waiters_polled_ready: stats.waiters_polled_ready.load(Ordering::Relaxed),
        kept_waiters,
        pool_waiters: pool_spawned.0,
        checks: stats.checks.load(Ordering::Relaxed),
        lost_waiters,
        lost_callbacks,
    }
}

/// Touches every lazily allocated global (async-io's reactor and thread,
/// this thread's block_on caches) before the baseline is taken.
fn warm_up() {
    let (ctx, cancel) = Context::background().with_timeout(HOUR);
    let done = ctx.done();
    cancel.cancel();
    assert_eq!(futures::executor::block_on(done), Error::Canceled);
    drop(ctx);
    drain_async_io();
}

fn stress(threads: usize) {
    // The tests measure one process-wide counter: one at a time.
    let _serial = serial();
    warm_up();
    let time = run_time();
    let baseline = live_bytes();
    let start = Instant::now();
    let (report, seeds) = run(threads, time);
    let took = start.elapsed();
    drain_async_io();
    let after = live_bytes();
    // Printed after the measurement: captured output is heap too.
    let lost = report.lost_waiters + report.lost_callbacks;
    println!("{threads} threads, seeds {seeds:x?}, {took:?}: {report:#?}");
    println!(
        "{threads} threads: {} ops, {lost} lost; live heap {baseline} -> {after} bytes ({:+})",
        report.ops,
        after - baseline
    );
    assert!(report.ops > 0, "no operation ran");
    assert_eq!(lost, 0, "lost waiters or callbacks");
    assert!(report.derived > 0 && report.cancels > 0 && report.registered > 0);
    assert!(
        after - baseline <= SLACK_BYTES,
        "live heap grew by {} bytes (slack {SLACK_BYTES}): nodes leaked",
        after - baseline
    );
}

#[test]
fn stress_4_threads() {
    stress(4);
}

#[test]
fn stress_2_threads() {
    stress(2);
}

#[test]
fn stress_8_threads() {
    stress(8);
}
