//! `merge` and `Group` against their baselines, in one run.
use criterion::{criterion_group, criterion_main, Criterion};
use ctxtree::Context;

fn merge_create_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge_create_drop");
    let (root, _c1) = Context::background().with_cancel();
    let (other, _c2) = Context::background().with_cancel();
    g.bench_function("with_cancel", |b| b.iter(|| root.with_cancel()));
    g.bench_function("merge_live_other", |b| b.iter(|| root.merge(&other)));
    let bg = Context::background();
    g.bench_function("merge_background", |b| b.iter(|| root.merge(&bg)));
    g.finish();
}

criterion_group!(benches, merge_create_drop);
criterion_main!(benches);
