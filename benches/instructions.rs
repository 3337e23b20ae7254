//! Instruction counts for ctxtree and tokio-util's `CancellationToken`, side
//! by side, for `valgrind --tool=callgrind` to read.
//!
//! Timings on a shared machine drift from run to run; the number of
//! instructions a scenario executes does not. Every scenario here has one
//! measured function per library, marked `#[inline(never)]`, that runs the
//! scenario's operation a given number of times (set-up and tear-down happen
//! outside it). `scripts/callgrind.sh` runs each measured function under
//! callgrind with collection switched on only inside it
//! (`--toggle-collect`), and a profile dumped each time it returns
//! (`--dump-after`). The binary calls it three times: once to warm up (lazy
//! symbol binding, the allocator's first chunks, thread-locals), then with
//! `n` and `2n` repetitions. The difference between the last two dumps is
//! the cost of `n` repetitions with every fixed cost cancelled out; the
//! script subtracts the per-iteration cost of the loop itself, measured the
//! same way on the `harness_empty_loop` function, and divides by the units
//! one repetition covers (nodes, for the cancel scenarios).
//!
//! ```text
//! scripts/callgrind.sh                      # table: instructions per op
//! cargo bench --bench instructions          # no valgrind: a quick smoke run
//! ```
//!
//! Modes of the binary (the script drives the first two):
//!
//! * `--scenarios`: one tab-separated line per measured run: scenario,
//!   library, the measured function's name, `n`, units per repetition, and
//!   a description;
//! * `--run SCENARIO LIBRARY`: the warm-up, `n` and `2n` calls of that
//!   scenario's measured function;
//! * anything else (what `cargo bench` and `cargo test` pass): every scenario
//!   once, checking that each did what it claims, and a line saying so. It
//!   prints no figures: outside callgrind there are none worth printing.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context as TaskContext, Poll};

use ctxtree::{Canceller, Context, Error};
use tokio_util::sync::CancellationToken;

/// Repetitions per measured call for the per-operation scenarios.
const N: u64 = 1_000;

/// Children per chain in the chain scenario.
const CHAIN: usize = 10;

/// Children of the root in the width scenario.
const WIDTH: usize = 1_000;

fn noop_cx() -> TaskContext<'static> {
    TaskContext::from_waker(futures::task::noop_waker_ref())
}

// ---------------------------------------------------------------------------
// The harness's own cost: the loop and the `black_box` traffic every
// per-operation loop below also pays, with no work. The script subtracts its
// per-iteration count from every scenario.

#[inline(never)]
fn harness_empty_loop(x: &u64, n: u64) {
    for _ in 0..n {
        black_box(black_box(x));
    }
}

fn run_harness(counts: &[u64]) {
    let x = 0u64;
    for &n in counts {
        harness_empty_loop(black_box(&x), black_box(n));
    }
}

// ---------------------------------------------------------------------------
// 1. Child create + drop from a live root.

#[inline(never)]
fn ctxtree_child_create_drop(root: &Context, n: u64) {
    for _ in 0..n {
        black_box(black_box(root).with_cancel());
    }
}

#[inline(never)]
fn tokio_child_create_drop(root: &CancellationToken, n: u64) {
    for _ in 0..n {
        black_box(black_box(root).child_token());
    }
}

fn run_ctxtree_child(counts: &[u64]) {
    let (root, _cancel) = Context::background().with_cancel();
    for &n in counts {
        ctxtree_child_create_drop(black_box(&root), black_box(n));
    }
    assert!(!root.is_done());
}

fn run_tokio_child(counts: &[u64]) {
    let root = CancellationToken::new();
    for &n in counts {
        tokio_child_create_drop(black_box(&root), black_box(n));
    }
    assert!(!root.is_cancelled());
}

// ---------------------------------------------------------------------------
// 2. A chain of 10 nested children, created, then dropped leaf first.

#[inline(never)]
fn ctxtree_chain10_create_drop(root: &Context, n: u64) {
    for _ in 0..n {
        let mut chain: [Option<(Context, Canceller)>; CHAIN] = Default::default();
        chain[0] = Some(black_box(root).with_cancel());
        for i in 1..CHAIN {
            let child = chain[i - 1].as_ref().map(|(ctx, _)| ctx.with_cancel());
            chain[i] = child;
        }
        black_box(&chain);
        for slot in chain.iter_mut().rev() {
            *slot = None;
        }
    }
}

#[inline(never)]
fn tokio_chain10_create_drop(root: &CancellationToken, n: u64) {
    for _ in 0..n {
        let mut chain: [Option<CancellationToken>; CHAIN] = Default::default();
        chain[0] = Some(black_box(root).child_token());
        for i in 1..CHAIN {
            let child = chain[i - 1].as_ref().map(|t| t.child_token());
            chain[i] = child;
        }
        black_box(&chain);
        for slot in chain.iter_mut().rev() {
            *slot = None;
        }
    }
}

fn run_ctxtree_chain(counts: &[u64]) {
    let (root, _cancel) = Context::background().with_cancel();
    for &n in counts {
        ctxtree_chain10_create_drop(black_box(&root), black_box(n));
    }
    assert!(!root.is_done());
}

fn run_tokio_chain(counts: &[u64]) {
    let root = CancellationToken::new();
    for &n in counts {
        tokio_chain10_create_drop(black_box(&root), black_box(n));
    }
    assert!(!root.is_cancelled());
}

// ---------------------------------------------------------------------------
// 3 and 4. Cancel a wide root or a deep chain. The trees are built before
// the measured call and dropped after it; the measured function cancels the
// roots of `n` prepared trees, one after the other. One function per library
// serves width and depth alike (the script runs each scenario separately).

/// A root with its canceller and the nodes below it, kept alive.
struct CtxtreeTree {
    root: Context,
    cancel: Canceller,
    below: Vec<(Context, Canceller)>,
}

impl CtxtreeTree {
    fn wide(width: usize) -> Self {
        let (root, cancel) = Context::background().with_cancel();
        let below = (0..width).map(|_| root.with_cancel()).collect();
        Self {
            root,
            cancel,
            below,
        }
    }

    fn deep(depth: usize) -> Self {
        let (root, cancel) = Context::background().with_cancel();
        let mut below: Vec<(Context, Canceller)> = Vec::with_capacity(depth);
        for _ in 0..depth {
            let child = below.last().map_or(&root, |(ctx, _)| ctx).with_cancel();
            below.push(child);
        }
        Self {
            root,
            cancel,
            below,
        }
    }

    fn assert_all_done(&self) {
        assert_eq!(self.root.err(), Some(Error::Canceled));
        assert!(self.below.iter().all(|(ctx, _)| ctx.is_done()));
    }
}

struct TokioTree {
    root: CancellationToken,
    below: Vec<CancellationToken>,
}

impl TokioTree {
    fn wide(width: usize) -> Self {
        let root = CancellationToken::new();
        let below = (0..width).map(|_| root.child_token()).collect();
        Self { root, below }
    }

    fn deep(depth: usize) -> Self {
        let root = CancellationToken::new();
        let mut below: Vec<CancellationToken> = Vec::with_capacity(depth);
        for _ in 0..depth {
            let child = below.last().unwrap_or(&root).child_token();
            below.push(child);
        }
        Self { root, below }
    }

    fn assert_all_done(&self) {
        assert!(self.root.is_cancelled());
        assert!(self.below.iter().all(CancellationToken::is_cancelled));
    }
}

#[inline(never)]
fn ctxtree_cancel_trees(trees: &[CtxtreeTree]) {
    for tree in trees {
        tree.cancel.cancel();
    }
}

#[inline(never)]
fn tokio_cancel_trees(trees: &[TokioTree]) {
    for tree in trees {
        tree.root.cancel();
    }
}

fn run_ctxtree_cancel(counts: &[u64], make: impl Fn() -> CtxtreeTree) {
    // Every tree is built before the first measured call, so no allocation
    // made while building one lands between two measured calls.
    let batches: Vec<Vec<CtxtreeTree>> = counts
        .iter()
        .map(|&n| (0..n).map(|_| make()).collect())
        .collect();
    for trees in &batches {
        ctxtree_cancel_trees(black_box(trees));
    }
    batches
        .iter()
        .flatten()
        .for_each(CtxtreeTree::assert_all_done);
}

fn run_tokio_cancel(counts: &[u64], make: impl Fn() -> TokioTree) {
    let batches: Vec<Vec<TokioTree>> = counts
        .iter()
        .map(|&n| (0..n).map(|_| make()).collect())
        .collect();
    for trees in &batches {
        tokio_cancel_trees(black_box(trees));
    }
    batches
        .iter()
        .flatten()
        .for_each(TokioTree::assert_all_done);
}

// ---------------------------------------------------------------------------
// 5. State reads on a live node. tokio-util has no `err()`; its row for
// `err` reuses `is_cancelled()`, the closest it has.

#[inline(never)]
fn ctxtree_is_done_live(ctx: &Context, n: u64) {
    for _ in 0..n {
        black_box(black_box(ctx).is_done());
    }
}

#[inline(never)]
fn ctxtree_err_live(ctx: &Context, n: u64) {
    for _ in 0..n {
        black_box(black_box(ctx).err());
    }
}

#[inline(never)]
fn tokio_is_cancelled_live(token: &CancellationToken, n: u64) {
    for _ in 0..n {
        black_box(black_box(token).is_cancelled());
    }
}

fn run_ctxtree_is_done(counts: &[u64]) {
    let (root, _root_cancel) = Context::background().with_cancel();
    let (ctx, _cancel) = root.with_cancel();
    for &n in counts {
        ctxtree_is_done_live(black_box(&ctx), black_box(n));
    }
    assert!(!ctx.is_done());
}

fn run_ctxtree_err(counts: &[u64]) {
    let (root, _root_cancel) = Context::background().with_cancel();
    let (ctx, _cancel) = root.with_cancel();
    for &n in counts {
        ctxtree_err_live(black_box(&ctx), black_box(n));
    }
    assert_eq!(ctx.err(), None);
}

fn run_tokio_is_cancelled(counts: &[u64]) {
    let root = CancellationToken::new();
    let token = root.child_token();
    for &n in counts {
        tokio_is_cancelled_live(black_box(&token), black_box(n));
    }
    assert!(!token.is_cancelled());
}

// ---------------------------------------------------------------------------
// 6. `done()` / `cancelled()`: create, poll once while pending, drop; and
// create + poll on a node already done. tokio's future is pinned on the
// stack; ctxtree's `Done` is `Unpin`. Both poll with a no-op waker.

#[inline(never)]
fn ctxtree_done_poll_pending(ctx: &Context, cx: &mut TaskContext<'_>, n: u64) {
    for _ in 0..n {
        let mut done = black_box(ctx).done();
        black_box(Pin::new(&mut done).poll(cx).is_pending());
    }
}

#[inline(never)]
fn tokio_cancelled_poll_pending(token: &CancellationToken, cx: &mut TaskContext<'_>, n: u64) {
    for _ in 0..n {
        let fut = pin!(black_box(token).cancelled());
        black_box(fut.poll(cx).is_pending());
    }
}

#[inline(never)]
fn ctxtree_done_poll_ready(ctx: &Context, cx: &mut TaskContext<'_>, n: u64) {
    for _ in 0..n {
        let mut done = black_box(ctx).done();
        black_box(Pin::new(&mut done).poll(cx).is_ready());
    }
}

#[inline(never)]
fn tokio_cancelled_poll_ready(token: &CancellationToken, cx: &mut TaskContext<'_>, n: u64) {
    for _ in 0..n {
        let fut = pin!(black_box(token).cancelled());
        black_box(fut.poll(cx).is_ready());
    }
}

fn run_ctxtree_done_pending(counts: &[u64]) {
    let mut cx = noop_cx();
    let (root, _root_cancel) = Context::background().with_cancel();
    let (ctx, _cancel) = root.with_cancel();
    for &n in counts {
        ctxtree_done_poll_pending(black_box(&ctx), &mut cx, black_box(n));
    }
    assert!(Pin::new(&mut ctx.done()).poll(&mut cx).is_pending());
}

fn run_tokio_done_pending(counts: &[u64]) {
    let mut cx = noop_cx();
    let root = CancellationToken::new();
    let token = root.child_token();
    for &n in counts {
        tokio_cancelled_poll_pending(black_box(&token), &mut cx, black_box(n));
    }
    assert!(pin!(token.cancelled()).poll(&mut cx).is_pending());
}

fn run_ctxtree_done_ready(counts: &[u64]) {
    let mut cx = noop_cx();
    let (root, _root_cancel) = Context::background().with_cancel();
    let (ctx, cancel) = root.with_cancel();
    cancel.cancel();
    for &n in counts {
        ctxtree_done_poll_ready(black_box(&ctx), &mut cx, black_box(n));
    }
    assert_eq!(
        Pin::new(&mut ctx.done()).poll(&mut cx),
        Poll::Ready(Error::Canceled)
    );
}

fn run_tokio_done_ready(counts: &[u64]) {
    let mut cx = noop_cx();
    let root = CancellationToken::new();
    let token = root.child_token();
    token.cancel();
    for &n in counts {
        tokio_cancelled_poll_ready(black_box(&token), &mut cx, black_box(n));
    }
    assert!(pin!(token.cancelled()).poll(&mut cx).is_ready());
}

// ---------------------------------------------------------------------------
// 7. merge create + drop (ctxtree only), against scenario 1's with_cancel
// create + drop from the same live root.

#[inline(never)]
fn ctxtree_merge_create_drop(root: &Context, other: &Context, n: u64) {
    for _ in 0..n {
        black_box(black_box(root).merge(black_box(other)));
    }
}

fn run_merge(counts: &[u64], other: &Context) {
    let (root, _cancel) = Context::background().with_cancel();
    for &n in counts {
        ctxtree_merge_create_drop(black_box(&root), black_box(other), black_box(n));
    }
    assert!(!root.is_done());
}

fn run_merge_live(counts: &[u64]) {
    // Both parents live and cancellable, as a request and a shutdown
    // context are.
    let (other, _cancel) = Context::background().with_cancel();
    run_merge(counts, &other);
}

fn run_merge_background(counts: &[u64]) {
    run_merge(counts, &Context::background());
}

// ---------------------------------------------------------------------------
// The table the script and the smoke run read.

struct Measured {
    /// The scenario's name, as the script prints it and the baseline file
    /// keys it.
    scenario: &'static str,
    /// `ctxtree`, `tokio-util`, or `harness` for the empty loop.
    library: &'static str,
    /// The measured function's name (the symbol callgrind toggles on).
    function: &'static str,
    /// Repetitions in the measured call (the warm-up call makes one).
    n: u64,
    /// Units one repetition covers: the figure is per unit.
    units: u64,
    /// What one unit is.
    what: &'static str,
    run: fn(&[u64]),
}

fn ctxtree_wide(counts: &[u64]) {
    run_ctxtree_cancel(counts, || CtxtreeTree::wide(WIDTH));
}
fn tokio_wide(counts: &[u64]) {
    run_tokio_cancel(counts, || TokioTree::wide(WIDTH));
}
fn ctxtree_deep_1k(counts: &[u64]) {
    run_ctxtree_cancel(counts, || CtxtreeTree::deep(1_000));
}
fn tokio_deep_1k(counts: &[u64]) {
    run_tokio_cancel(counts, || TokioTree::deep(1_000));
}
fn ctxtree_deep_10k(counts: &[u64]) {
    run_ctxtree_cancel(counts, || CtxtreeTree::deep(10_000));
}
fn tokio_deep_10k(counts: &[u64]) {
    run_tokio_cancel(counts, || TokioTree::deep(10_000));
}

macro_rules! measured {
    ($scenario:literal, $library:literal, $function:ident, $n:expr, $units:expr, $what:literal, $run:expr) => {
        Measured {
            scenario: $scenario,
            library: $library,
            function: stringify!($function),
            n: $n,
            units: $units as u64,
            what: $what,
            run: $run,
        }
    };
}

fn table() -> Vec<Measured> {
    vec![
        measured!(
            "harness_empty_loop",
            "harness",
            harness_empty_loop,
            N,
            1,
            "loop iteration, no work",
            run_harness
        ),
        measured!(
            "child_create_drop",
            "ctxtree",
            ctxtree_child_create_drop,
            N,
            1,
            "with_cancel + drop",
            run_ctxtree_child
        ),
        measured!(
            "child_create_drop",
            "tokio-util",
            tokio_child_create_drop,
            N,
            1,
            "child_token + drop",
            run_tokio_child
        ),
        measured!(
            "chain10_create_drop",
            "ctxtree",
            ctxtree_chain10_create_drop,
            N,
            1,
            "chain of 10 created, dropped leaf first",
            run_ctxtree_chain
        ),
        measured!(
            "chain10_create_drop",
            "tokio-util",
            tokio_chain10_create_drop,
            N,
            1,
            "chain of 10 created, dropped leaf first",
            run_tokio_chain
        ),
        measured!(
            "cancel_width_1000",
            "ctxtree",
            ctxtree_cancel_trees,
            4,
            WIDTH,
            "node cancelled (root with 1,000 children)",
            ctxtree_wide
        ),
        measured!(
            "cancel_width_1000",
            "tokio-util",
            tokio_cancel_trees,
            4,
            WIDTH,
            "node cancelled (root with 1,000 children)",
            tokio_wide
        ),
        measured!(
            "cancel_depth_1000",
            "ctxtree",
            ctxtree_cancel_trees,
            4,
            1_000,
            "node cancelled (chain 1,000 deep)",
            ctxtree_deep_1k
        ),
        measured!(
            "cancel_depth_1000",
            "tokio-util",
            tokio_cancel_trees,
            4,
            1_000,
            "node cancelled (chain 1,000 deep)",
            tokio_deep_1k
        ),
        measured!(
            "cancel_depth_10000",
            "ctxtree",
            ctxtree_cancel_trees,
            2,
            10_000,
            "node cancelled (chain 10,000 deep)",
            ctxtree_deep_10k
        ),
        measured!(
            "cancel_depth_10000",
            "tokio-util",
            tokio_cancel_trees,
            2,
            10_000,
            "node cancelled (chain 10,000 deep)",
            tokio_deep_10k
        ),
        measured!(
            "is_done_live",
            "ctxtree",
            ctxtree_is_done_live,
            N,
            1,
            "is_done() on a live node",
            run_ctxtree_is_done
        ),
        measured!(
            "is_done_live",
            "tokio-util",
            tokio_is_cancelled_live,
            N,
            1,
            "is_cancelled() on a live node",
            run_tokio_is_cancelled
        ),
        measured!(
            "err_live",
            "ctxtree",
            ctxtree_err_live,
            N,
            1,
            "err() on a live node",
            run_ctxtree_err
        ),
        measured!(
            "err_live",
            "tokio-util",
            tokio_is_cancelled_live,
            N,
            1,
            "is_cancelled() (no err() in tokio-util)",
            run_tokio_is_cancelled
        ),
        measured!(
            "done_create_poll_pending_drop",
            "ctxtree",
            ctxtree_done_poll_pending,
            N,
            1,
            "done() created, polled once (pending), dropped",
            run_ctxtree_done_pending
        ),
        measured!(
            "done_create_poll_pending_drop",
            "tokio-util",
            tokio_cancelled_poll_pending,
            N,
            1,
            "cancelled() pinned, polled once (pending), dropped",
            run_tokio_done_pending
        ),
        measured!(
            "done_poll_on_done",
            "ctxtree",
            ctxtree_done_poll_ready,
            N,
            1,
            "done() created and polled on a done node",
            run_ctxtree_done_ready
        ),
        measured!(
            "done_poll_on_done",
            "tokio-util",
            tokio_cancelled_poll_ready,
            N,
            1,
            "cancelled() pinned and polled on a cancelled token",
            run_tokio_done_ready
        ),
        measured!(
            "merge_live_create_drop",
            "ctxtree",
            ctxtree_merge_create_drop,
            N,
            1,
            "merge(live cancellable other) + drop",
            run_merge_live
        ),
        measured!(
            "merge_background_create_drop",
            "ctxtree",
            ctxtree_merge_create_drop,
            N,
            1,
            "merge(background()) + drop",
            run_merge_background
        ),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let table = table();
    match args.first().map(String::as_str) {
        Some("--scenarios") => {
            for m in &table {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    m.scenario, m.library, m.function, m.n, m.units, m.what
                );
            }
        }
        Some("--run") => {
            let (Some(scenario), Some(library)) = (args.get(1), args.get(2)) else {
                eprintln!("usage: instructions --run SCENARIO LIBRARY");
                std::process::exit(2);
            };
            let Some(m) = table
                .iter()
                .find(|m| m.scenario == scenario && m.library == library)
            else {
                eprintln!("instructions: no scenario {scenario} for {library} (see --scenarios)");
                std::process::exit(2);
            };
            // Warm-up, then n and 2n: the script keeps the difference of the
            // last two.
            (m.run)(&[1, m.n, 2 * m.n]);
        }
        _ => {
            for m in &table {
                (m.run)(&[1]);
            }
            println!(
                "instructions: {} measured functions ran once each and checked out; \
                 counts come only from callgrind: scripts/callgrind.sh",
                table.len()
            );
        }
    }
}
