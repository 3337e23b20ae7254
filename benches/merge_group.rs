//! `merge` and `Group` against their baselines, in one run, with the ratios
//! printed at the end against the issue's targets:
//!
//! * merge create + drop, `other` live and cancellable, against
//!   `with_cancel` create + drop: at most 1.5×;
//! * merge create + drop, `other` = `background()`: at most 1.1×;
//! * a group of 1,000 trivial tasks, created, filled and waited on, against
//!   `futures::future::try_join_all` of the same futures: at most 1.5×.
//!
//! ```text
//! cargo bench --bench merge_group
//! ```
//!
//! After criterion's own figures, the merge ratios are measured once more in
//! interleaved pairs (see `paired_merge_ratios`), which a noisy machine
//! shifts less.
//!
//! The criterion settings are deliberately short (see `config`); raise them
//! on a quiet machine for figures worth quoting. The ratios use this run's
//! own timings: each benchmark records what criterion had it measure, and
//! the ratio compares the means over the measurement samples (warm-up
//! excluded).

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use ctxtree::{Context, Group};
use futures::executor::block_on;
use futures::future::try_join_all;

const SAMPLES: usize = 20;

/// How many trivial tasks a group (and `try_join_all`) runs per iteration.
const TASKS: usize = 1_000;

/// Per benchmark id, every `(iterations, elapsed)` criterion asked for, in
/// order: first the warm-up's, then the `SAMPLES` measurement samples.
type Records = HashMap<String, Vec<(u64, Duration)>>;

static RECORDS: Mutex<Option<Records>> = Mutex::new(None);

fn record(id: &str, iters: u64, elapsed: Duration) {
    let mut records = RECORDS.lock().unwrap();
    records
        .get_or_insert_with(HashMap::new)
        .entry(id.to_owned())
        .or_default()
        .push((iters, elapsed));
}

/// Mean time per iteration, in seconds, over the last `SAMPLES` records of
/// `id`, if it ran in measurement mode (not `--test`, not filtered out).
fn mean(id: &str) -> Option<f64> {
    let records = RECORDS.lock().unwrap();
    let runs = records.as_ref()?.get(id)?;
    if runs.len() <= SAMPLES {
        return None;
    }
    let samples = &runs[runs.len() - SAMPLES..];
    let iters: u64 = samples.iter().map(|(n, _)| n).sum();
    let total: Duration = samples.iter().map(|(_, d)| *d).sum();
    Some(total.as_secs_f64() / iters as f64)
}

/// Times `iters` runs of `op` and records them under `id`.
fn timed(id: &str, iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    let elapsed = start.elapsed();
    record(id, iters, elapsed);
    elapsed
}

fn merge_create_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge_create_drop");
    // Both parents live and cancellable, as a request and a shutdown
    // context are.
    let (root, _c1) = Context::background().with_cancel();
    let (other, _c2) = Context::background().with_cancel();
    let bg = Context::background();
    g.bench_function("with_cancel", |b| {
        b.iter_custom(|iters| {
            timed("with_cancel", iters, || {
                black_box(black_box(&root).with_cancel());
            })
        })
    });
    g.bench_function("merge_live_other", |b| {
        b.iter_custom(|iters| {
            timed("merge_live_other", iters, || {
                black_box(black_box(&root).merge(black_box(&other)));
            })
        })
    });
    g.bench_function("merge_background", |b| {
        b.iter_custom(|iters| {
            timed("merge_background", iters, || {
                black_box(black_box(&root).merge(black_box(&bg)));
            })
        })
    });
    g.finish();
}

fn group_vs_try_join_all(c: &mut Criterion) {
    let mut g = c.benchmark_group("1000_trivial_tasks");
    let (parent, _c) = Context::background().with_cancel();
    g.bench_function("group", |b| {
        b.iter_custom(|iters| {
            timed("group", iters, || {
                let group = Group::<io::Error>::new(&parent);
                for i in 0..TASKS {
                    group.spawn(async move {
                        black_box(i);
                        Ok(())
                    });
                }
                black_box(block_on(group.wait())).unwrap();
            })
        })
    });
    g.bench_function("try_join_all", |b| {
        b.iter_custom(|iters| {
            timed("try_join_all", iters, || {
                let tasks = (0..TASKS).map(|i| async move {
                    black_box(i);
                    Ok::<(), io::Error>(())
                });
                black_box(block_on(try_join_all(tasks))).unwrap();
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(SAMPLES)
}

criterion_group! {
    name = benches;
    config = config();
    targets = merge_create_drop, group_vs_try_join_all
}

fn ratios() {
    let rows = [
        (
            "merge (live other) / with_cancel",
            "merge_live_other",
            "with_cancel",
            1.5,
        ),
        (
            "merge (background) / with_cancel",
            "merge_background",
            "with_cancel",
            1.1,
        ),
        (
            "group / try_join_all (1,000 tasks)",
            "group",
            "try_join_all",
            1.5,
        ),
    ];
    let mut printed = false;
    for (what, a, b, target) in rows {
        let (Some(ta), Some(tb)) = (mean(a), mean(b)) else {
            continue;
        };
        if !printed {
            println!();
            println!("ratios (mean per iteration over {SAMPLES} samples):");
            printed = true;
        }
        let ratio = ta / tb;
        let verdict = if ratio <= target { "ok" } else { "OVER TARGET" };
        println!(
            "  {what:<36} {:>10} / {:>10} = {ratio:.2}x  (target <= {target}x: {verdict})",
            show(ta),
            show(tb)
        );
    }
}

/// A time per iteration (in seconds), in ns or µs with one decimal.
fn show(t: f64) -> String {
    let ns = t * 1e9;
    if ns < 10_000.0 {
        format!("{ns:.1} ns")
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// The merge ratios again, measured in pairs: `ROUNDS` rounds, each timing
/// `PAIR_ITERS` merges and then `PAIR_ITERS` `with_cancel`s back to back, and
/// the median of the per-round ratios. Criterion measures one benchmark after
/// the other, and on a shared 2-vCPU machine a benchmark's mean can shift by
/// 10% between runs (the heap's layout, the other vCPU's load); a pair sees
/// the same conditions for both sides.
fn paired_merge_ratios() {
    const ROUNDS: usize = 31;
    const PAIR_ITERS: u32 = 100_000;
    let (root, _c1) = Context::background().with_cancel();
    let (other, _c2) = Context::background().with_cancel();
    let bg = Context::background();
    let time = |op: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..PAIR_ITERS {
            op();
        }
        start.elapsed().as_secs_f64() / f64::from(PAIR_ITERS)
    };
    let with_cancel = || drop(black_box(black_box(&root).with_cancel()));
    let merge_live = || drop(black_box(black_box(&root).merge(black_box(&other))));
    let merge_bg = || drop(black_box(black_box(&root).merge(black_box(&bg))));
    // The same with one `done()` polled before the drop: the listener is
    // what makes a merged context register on `other` (merging is lazy), so
    // this is the cost when somebody waits on it. No target: for the record.
    let waker = futures::task::noop_waker();
    let listened = |ctx: Context| {
        let mut done = ctx.done();
        let mut cx = std::task::Context::from_waker(&waker);
        black_box(Pin::new(&mut done).poll(&mut cx).is_pending());
    };
    let with_cancel_listened = || listened(black_box(&root).with_cancel().0);
    let merge_live_listened = || listened(black_box(&root).merge(black_box(&other)).0);
    let mut live = Vec::with_capacity(ROUNDS);
    let mut background = Vec::with_capacity(ROUNDS);
    let mut live_listened = Vec::with_capacity(ROUNDS);
    // One round of warm-up, not counted.
    for round in 0..=ROUNDS {
        let base = time(&with_cancel);
        let l = time(&merge_live);
        let b = time(&merge_bg);
        let base_listened = time(&with_cancel_listened);
        let ll = time(&merge_live_listened);
        if round > 0 {
            live.push(l / base);
            background.push(b / base);
            live_listened.push(ll / base_listened);
        }
    }
    println!();
    println!("paired ratios (median of {ROUNDS} rounds of {PAIR_ITERS} iterations each):");
    for (what, ratios, target) in [
        ("merge (live other) / with_cancel", &mut live, Some(1.5)),
        (
            "merge (background) / with_cancel",
            &mut background,
            Some(1.1),
        ),
        (
            "the same, each with done() polled",
            &mut live_listened,
            None,
        ),
    ] {
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ROUNDS / 2];
        let verdict = match target {
            Some(target) if median <= target => format!("target <= {target}x: ok"),
            Some(target) => format!("target <= {target}x: OVER TARGET"),
            None => "no target".to_owned(),
        };
        println!(
            "  {what:<36} {median:.2}x  (range {:.2}-{:.2}; {verdict})",
            ratios[0],
            ratios[ROUNDS - 1]
        );
    }
}

/// What `criterion_main!(benches)` expands to, with the ratios printed last.
fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
    // Not under `cargo bench -- --test` (CI's smoke run) nor when a filter
    // leaves the merge benchmarks out.
    if mean("with_cancel").is_some() {
        paired_merge_ratios();
    }
}
