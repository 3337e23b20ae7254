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
//! The criterion settings are deliberately short (see `config`); raise them
//! on a quiet machine for figures worth quoting. The ratios use this run's
//! own timings: each benchmark records what criterion had it measure, and
//! the ratio compares the means over the measurement samples (warm-up
//! excluded).

use std::collections::HashMap;
use std::hint::black_box;
use std::io;
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

/// What `criterion_main!(benches)` expands to, with the ratios printed last.
fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
