//! ctxtree against tokio-util's `CancellationToken`, side by side in one run.
//!
//! Every timed scenario is one criterion group with a `ctxtree` and a
//! `tokio_util` function, so both are measured by the same `cargo bench`
//! invocation under the same conditions. Two scenarios are not timings and
//! are printed as tables before criterion starts: memory per live child
//! (scenario 9, measured with the counting allocator below) and deadline
//! lateness (scenario 10).
//!
//! ```text
//! cargo bench --bench versus_tokio
//! ```
//!
//! The criterion settings are deliberately short (see `config`); raise them
//! on a quiet machine for figures worth quoting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::task::Context as TaskContext;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use ctxtree::{Canceller, Context};
use futures::executor::ThreadPool;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// A counting allocator (scenario 9). Off unless `COUNTING` is set, so the
// timed scenarios pay one relaxed load of a flag that never changes while
// they run.

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Requested bytes live, allocated while counting was on.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
/// The same, rounded to glibc malloc's chunk sizes (header + 16-byte
/// granularity, 32-byte minimum) to estimate the real footprint.
static LIVE_CHUNK_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Allocation calls (alloc, alloc_zeroed, realloc) while counting was on.
static ALLOC_CALLS: AtomicUsize = AtomicUsize::new(0);

fn chunk(size: usize) -> isize {
    (((size + 8 + 15) & !15).max(32)) as isize
}

fn count_alloc(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(size as isize, Ordering::Relaxed);
        LIVE_CHUNK_BYTES.fetch_add(chunk(size), Ordering::Relaxed);
        ALLOC_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

fn count_free(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_sub(size as isize, Ordering::Relaxed);
        LIVE_CHUNK_BYTES.fetch_sub(chunk(size), Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counters are plain atomics and never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count_alloc(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count_alloc(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_free(layout.size());
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count_free(layout.size());
            count_alloc(new_size);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------
// Scenario 9: memory per live child. Not a timing: a table on stdout.

struct MemRow {
    what: &'static str,
    bytes: f64,
    chunk_bytes: f64,
    allocs: f64,
}

/// Creates `n` children with `make`, keeps them all alive, and returns the
/// live heap growth per child. `settle` lets async-io's reactor thread take
/// in timer registrations (its own allocations count: they are the cost of a
/// deadline).
fn per_child<T>(n: usize, settle: Duration, mut make: impl FnMut() -> T) -> (f64, f64, f64) {
    let mut keep: Vec<T> = Vec::with_capacity(n);
    std::thread::sleep(settle);
    let bytes0 = LIVE_BYTES.load(Ordering::SeqCst);
    let chunk0 = LIVE_CHUNK_BYTES.load(Ordering::SeqCst);
    let calls0 = ALLOC_CALLS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..n {
        keep.push(make());
    }
    std::thread::sleep(settle);
    COUNTING.store(false, Ordering::SeqCst);
    let bytes = (LIVE_BYTES.load(Ordering::SeqCst) - bytes0) as f64 / n as f64;
    let chunks = (LIVE_CHUNK_BYTES.load(Ordering::SeqCst) - chunk0) as f64 / n as f64;
    let calls = (ALLOC_CALLS.load(Ordering::SeqCst) - calls0) as f64 / n as f64;
    drop(keep);
    (bytes, chunks, calls)
}

fn memory_report() {
    const N: usize = 10_000;
    let settle = Duration::from_millis(50);
    let (root, _root_cancel) = Context::background().with_cancel();
    let token = CancellationToken::new();
    let mut rows = Vec::new();
    let mut row = |what, (bytes, chunk_bytes, allocs)| {
        rows.push(MemRow {
            what,
            bytes,
            chunk_bytes,
            allocs,
        })
    };
    row(
        "ctxtree with_cancel (cancel child)",
        per_child(N, settle, || root.with_cancel()),
    );
    row(
        "ctxtree with_value(0u64) (value child)",
        per_child(N, settle, || root.with_value(0u64)),
    );
    row(
        "ctxtree with_timeout(1h) (timeout child)",
        per_child(N, settle, || root.with_timeout(Duration::from_secs(3600))),
    );
    row(
        "tokio-util child_token",
        per_child(N, settle, || token.child_token()),
    );
    println!();
    println!("== 9. memory per live child ({N} live children of one live root) ==");
    println!(
        "{:<42} {:>14} {:>16} {:>12}",
        "child", "bytes (asked)", "bytes (glibc)", "allocs"
    );
    for r in &rows {
        println!(
            "{:<42} {:>14.1} {:>16.1} {:>12.2}",
            r.what, r.bytes, r.chunk_bytes, r.allocs
        );
    }
    let tokio = rows[3].bytes;
    println!(
        "ratio cancel child ctxtree / tokio-util: {:.2} (asked bytes), {:.2} (glibc chunks)",
        rows[0].bytes / tokio,
        rows[0].chunk_bytes / rows[3].chunk_bytes
    );
    println!();
}

// ---------------------------------------------------------------------------
// Scenario 10: deadline lateness. Not a timing: a table on stdout.

const LATE_N: usize = 1_000;
const LATE_AFTER: Duration = Duration::from_millis(10);

/// Lateness of `LATE_N` `with_timeout(10ms)` contexts, observed by an
/// `after_func` on each (it runs on the thread that cancels: async-io's).
fn ctxtree_lateness() -> Vec<Duration> {
    let root = Context::background();
    let late: Arc<Vec<AtomicU64>> = Arc::new((0..LATE_N).map(|_| AtomicU64::new(0)).collect());
    let remaining = Arc::new(AtomicUsize::new(LATE_N));
    let (tx, rx) = mpsc::channel::<()>();
    let mut keep = Vec::with_capacity(LATE_N);
    for i in 0..LATE_N {
        let (ctx, cancel) = root.with_timeout(LATE_AFTER);
        let deadline = ctx.deadline().expect("a timeout child has a deadline");
        let late = late.clone();
        let remaining = remaining.clone();
        let tx = tx.clone();
        let handle = ctx.after_func(move || {
            let now = Instant::now();
            late[i].store(
                now.saturating_duration_since(deadline).as_nanos() as u64,
                Ordering::Relaxed,
            );
            if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                let _ = tx.send(());
            }
        });
        keep.push((ctx, cancel, handle));
    }
    rx.recv().expect("every deadline fires");
    late.iter()
        .map(|n| Duration::from_nanos(n.load(Ordering::Relaxed)))
        .collect()
}

/// Lateness of `LATE_N` bare async-io timers (`smol::Timer` is async-io's),
/// all awaited by one `smol::block_on` over a `join_all`.
fn timer_lateness() -> Vec<Duration> {
    let deadlines: Vec<Instant> = (0..LATE_N).map(|_| Instant::now() + LATE_AFTER).collect();
    smol::block_on(futures::future::join_all(deadlines.into_iter().map(
        |deadline| async move {
            smol::Timer::at(deadline).await;
            Instant::now().saturating_duration_since(deadline)
        },
    )))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn lateness_report() {
    const ROUNDS: usize = 3;
    // Warm up async-io's reactor thread and both code paths.
    let _ = ctxtree_lateness();
    let _ = timer_lateness();
    let mut all_ctx = Vec::new();
    let mut all_timer = Vec::new();
    println!("== 10. deadline lateness: {LATE_N} deadlines {LATE_AFTER:?} ahead, observed minus deadline ==");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "round / what", "p50", "p99", "max"
    );
    let line = |what: String, v: &mut Vec<Duration>| {
        v.sort();
        println!(
            "{:<34} {:>10.3?} {:>10.3?} {:>10.3?}",
            what,
            percentile(v, 0.50),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    };
    for round in 1..=ROUNDS {
        let mut c = ctxtree_lateness();
        let mut t = timer_lateness();
        all_ctx.extend_from_slice(&c);
        all_timer.extend_from_slice(&t);
        line(
            format!("{round}: ctxtree with_timeout + after_func"),
            &mut c,
        );
        line(format!("{round}: bare smol::Timer::at"), &mut t);
    }
    line(format!("all {ROUNDS}: ctxtree"), &mut all_ctx);
    line(format!("all {ROUNDS}: bare timer"), &mut all_timer);
    let gap = percentile(&all_ctx, 0.5).as_secs_f64() - percentile(&all_timer, 0.5).as_secs_f64();
    println!("p50 gap ctxtree - bare timer: {:.3} ms", gap * 1e3);
    println!();
}

// ---------------------------------------------------------------------------
// Scenario 1: child create + drop from a live root.

fn child_create_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("1_child_create_drop");
    let (root, _root_cancel) = Context::background().with_cancel();
    g.bench_function("ctxtree", |b| {
        b.iter(|| {
            let child = black_box(&root).with_cancel();
            black_box(&child);
        })
    });
    let token = CancellationToken::new();
    g.bench_function("tokio_util", |b| {
        b.iter(|| {
            let child = black_box(&token).child_token();
            black_box(&child);
        })
    });
    // For reference: no link parent, so no lock and no list.
    let background = Context::background();
    g.bench_function("ctxtree_from_background", |b| {
        b.iter(|| {
            let child = black_box(&background).with_cancel();
            black_box(&child);
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Scenario 2: a chain of 10 nested children, created, then dropped leaf first.

const CHAIN: usize = 10;

fn chain_create_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("2_chain10_create_drop");
    let (root, _root_cancel) = Context::background().with_cancel();
    g.bench_function("ctxtree", |b| {
        b.iter(|| {
            let mut chain: [Option<(Context, Canceller)>; CHAIN] = Default::default();
            chain[0] = Some(black_box(&root).with_cancel());
            for i in 1..CHAIN {
                let child = chain[i - 1].as_ref().map(|(ctx, _)| ctx.with_cancel());
                chain[i] = child;
            }
            black_box(&chain);
            for slot in chain.iter_mut().rev() {
                *slot = None;
            }
        })
    });
    let token = CancellationToken::new();
    g.bench_function("tokio_util", |b| {
        b.iter(|| {
            let mut chain: [Option<CancellationToken>; CHAIN] = Default::default();
            chain[0] = Some(black_box(&token).child_token());
            for i in 1..CHAIN {
                let child = chain[i - 1].as_ref().map(|t| t.child_token());
                chain[i] = child;
            }
            black_box(&chain);
            for slot in chain.iter_mut().rev() {
                *slot = None;
            }
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Scenarios 3 and 4: cancel a wide root / a deep chain; `cancel()` alone is
// timed, set-up and tear-down are not. Throughput is per node below the root.

fn batch_for(n: usize) -> BatchSize {
    match n {
        0..=100 => BatchSize::SmallInput,
        101..=5_000 => BatchSize::NumIterations(16),
        _ => BatchSize::PerIteration,
    }
}

fn cancel_width(c: &mut Criterion) {
    let mut g = c.benchmark_group("3_cancel_width");
    for n in [10usize, 1_000, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("ctxtree", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let (root, cancel) = Context::background().with_cancel();
                    let kids: Vec<_> = (0..n).map(|_| root.with_cancel()).collect();
                    (root, cancel, kids)
                },
                |input| {
                    input.1.cancel();
                    input
                },
                batch_for(n),
            )
        });
        g.bench_with_input(BenchmarkId::new("tokio_util", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let root = CancellationToken::new();
                    let kids: Vec<_> = (0..n).map(|_| root.child_token()).collect();
                    (root, kids)
                },
                |input| {
                    input.0.cancel();
                    input
                },
                batch_for(n),
            )
        });
    }
    g.finish();
}

fn cancel_depth(c: &mut Criterion) {
    let mut g = c.benchmark_group("4_cancel_depth");
    for n in [10usize, 1_000, 10_000, 100_000] {
        // `n` nodes below the root, each the child of the one before.
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("ctxtree", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let (root, cancel) = Context::background().with_cancel();
                    let mut chain: Vec<(Context, Canceller)> = Vec::with_capacity(n);
                    for _ in 0..n {
                        let child = chain.last().map_or(&root, |(ctx, _)| ctx).with_cancel();
                        chain.push(child);
                    }
                    (root, cancel, chain)
                },
                |input| {
                    input.1.cancel();
                    input
                },
                batch_for(n),
            )
        });
        g.bench_with_input(BenchmarkId::new("tokio_util", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let root = CancellationToken::new();
                    let mut chain: Vec<CancellationToken> = Vec::with_capacity(n);
                    for _ in 0..n {
                        let child = chain.last().unwrap_or(&root).child_token();
                        chain.push(child);
                    }
                    (root, chain)
                },
                |input| {
                    input.0.cancel();
                    input
                },
                batch_for(n),
            )
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// Scenario 5: is_done / err on a live node.

fn state_reads(c: &mut Criterion) {
    let (root, _root_cancel) = Context::background().with_cancel();
    let (ctx, _cancel) = root.with_cancel();
    let root_token = CancellationToken::new();
    let token = root_token.child_token();

    let mut g = c.benchmark_group("5_is_done_live");
    g.bench_function("ctxtree", |b| b.iter(|| black_box(&ctx).is_done()));
    g.bench_function("tokio_util", |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    g.finish();

    let mut g = c.benchmark_group("5_err_live");
    g.bench_function("ctxtree", |b| b.iter(|| black_box(&ctx).err()));
    // tokio-util has no `err()`; `is_cancelled()` is the closest.
    g.bench_function("tokio_util", |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Scenario 6: done() futures. tokio's `cancelled()` is pinned on the stack
// with `std::pin::pin!`; ctxtree's `Done` is `Unpin` and needs no pinning.

fn done_poll(c: &mut Criterion) {
    let mut cx = TaskContext::from_waker(futures::task::noop_waker_ref());

    let (root, _root_cancel) = Context::background().with_cancel();
    let (live, _cancel) = root.with_cancel();
    let root_token = CancellationToken::new();
    let live_token = root_token.child_token();

    let mut g = c.benchmark_group("6_done_create_poll_pending_drop");
    g.bench_function("ctxtree", |b| {
        b.iter(|| {
            let mut done = black_box(&live).done();
            let polled = Pin::new(&mut done).poll(&mut cx);
            assert!(polled.is_pending());
        })
    });
    g.bench_function("tokio_util", |b| {
        b.iter(|| {
            let fut = pin!(black_box(&live_token).cancelled());
            let polled = fut.poll(&mut cx);
            assert!(polled.is_pending());
        })
    });
    g.finish();

    let (dead, cancel) = root.with_cancel();
    cancel.cancel();
    let dead_token = root_token.child_token();
    dead_token.cancel();

    let mut g = c.benchmark_group("6_done_poll_on_done");
    g.bench_function("ctxtree", |b| {
        b.iter(|| {
            let mut done = black_box(&dead).done();
            let polled = Pin::new(&mut done).poll(&mut cx);
            assert!(polled.is_ready());
        })
    });
    g.bench_function("tokio_util", |b| {
        b.iter(|| {
            let fut = pin!(black_box(&dead_token).cancelled());
            let polled = fut.poll(&mut cx);
            assert!(polled.is_ready());
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Scenario 7: fan-out. 1,000 tasks on a 2-thread `futures` ThreadPool each
// wait on the root; timed from `cancel()` until the last one has run.

const FAN: usize = 1_000;

/// Polls `fut`, and after its first poll (when it has registered its waker)
/// reports on `started`.
async fn report_first_poll<F: Future>(fut: F, started: mpsc::Sender<()>) -> F::Output {
    let mut fut = pin!(fut);
    let mut started = Some(started);
    futures::future::poll_fn(move |cx| {
        let polled = fut.as_mut().poll(cx);
        if let Some(tx) = started.take() {
            let _ = tx.send(());
        }
        polled
    })
    .await
}

/// Runs `iters` rounds: spawn `FAN` waiters made by `waiter`, wait until each
/// has polled once, then time `cancel` until the last waiter has finished.
fn fan_out_rounds<S, W, Fut>(
    pool: &ThreadPool,
    iters: u64,
    mut setup: impl FnMut() -> S,
    waiter: W,
    cancel: impl Fn(&S),
) -> Duration
where
    W: Fn(&S) -> Fut,
    Fut: Future + Send + 'static,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let state = setup();
        let remaining = Arc::new(AtomicUsize::new(FAN));
        let (started_tx, started_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        for _ in 0..FAN {
            let wait = report_first_poll(waiter(&state), started_tx.clone());
            let remaining = remaining.clone();
            let done_tx = done_tx.clone();
            pool.spawn_ok(async move {
                wait.await;
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let _ = done_tx.send(());
                }
            });
        }
        for _ in 0..FAN {
            started_rx.recv().expect("every waiter starts");
        }
        let start = Instant::now();
        cancel(&state);
        done_rx.recv().expect("every waiter finishes");
        total += start.elapsed();
    }
    total
}

fn fan_out(c: &mut Criterion) {
    let pool = ThreadPool::builder()
        .pool_size(2)
        .create()
        .expect("a thread pool");
    let mut g = c.benchmark_group("7_fan_out_1000");
    g.throughput(Throughput::Elements(FAN as u64));
    g.bench_function("ctxtree", |b| {
        b.iter_custom(|iters| {
            fan_out_rounds(
                &pool,
                iters,
                || Context::background().with_cancel(),
                |(ctx, _)| ctx.done(),
                |(_, cancel)| cancel.cancel(),
            )
        })
    });
    g.bench_function("tokio_util", |b| {
        b.iter_custom(|iters| {
            fan_out_rounds(
                &pool,
                iters,
                CancellationToken::new,
                |token| {
                    let token = token.clone();
                    async move { token.cancelled().await }
                },
                |token| token.cancel(),
            )
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Scenario 8: two threads creating and dropping children of one shared root.
// Reported time is per iteration, i.e. per pair of create + drop (one on
// each thread, in parallel).

fn contended(iters: u64, op: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..iters {
                    op();
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // Leaving the scope joins both threads.
        start
    })
    .elapsed()
}

fn contention(c: &mut Criterion) {
    let mut g = c.benchmark_group("8_contended_create_drop_2_threads");
    let (root, _root_cancel) = Context::background().with_cancel();
    g.bench_function("ctxtree", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                black_box(black_box(&root).with_cancel());
            })
        })
    });
    let token = CancellationToken::new();
    g.bench_function("tokio_util", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                black_box(black_box(&token).child_token());
            })
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = child_create_drop, chain_create_drop, cancel_width, cancel_depth,
        state_reads, done_poll, fan_out, contention
}

/// What `criterion_main!(benches)` expands to, with the two reports that are
/// not timings run first.
fn main() {
    let listing = std::env::args().any(|a| a == "--list");
    if !listing {
        memory_report();
        lateness_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
