//! ctxtree against tokio-util's CancellationToken, side by side in one run.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ctxtree::Context;
use tokio_util::sync::CancellationToken;

fn is_done(c: &mut Criterion) {
    let mut g = c.benchmark_group("is_done_live");
    let (ctx, _cancel) = Context::background().with_cancel();
    g.bench_function("ctxtree", |b| b.iter(|| black_box(&ctx).is_done()));
    let token = CancellationToken::new().child_token();
    g.bench_function("tokio_util", |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    g.finish();
}

criterion_group!(benches, is_done);
criterion_main!(benches);
