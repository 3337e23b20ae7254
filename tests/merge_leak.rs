//! No leaks from `Context::merge`: a merged child whose handles are all
//! dropped leaves both parents at once, so two long-lived parents with a
//! million short-lived merged children hold memory for the live ones only,
//! and nothing stays registered on the second parent.
//!
//! This file installs a counting global allocator, which applies to this
//! whole test binary, so it holds leak tests only, and they run one at a
//! time (`common::serial`): live bytes are a process-wide number.

mod common;

use common::{assert_near, live_bytes, n, serial, thread_allocs};
use ctxtree::{Canceller, Context, Error};

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

/// Room for noise that is not ours: thread-local buffers, and the test
/// harness, whose main thread may be spawning the next test's thread (which
/// then blocks on `SERIAL`) while a test measures. A leak of even one byte
/// per merged child (half a million at the half-way sample) is far beyond
/// it.
const SLACK: isize = 64 * 1024;

/// The size of the value that single-object checks hang above a node.
const BIG: usize = 1 << 20;

// How many merged children the big loops make and drop: `common::n()`. A
// debug build makes and drops about 1,000,000 in well under 30 s here
// (measured: see the report in the loop test), so the full million runs in
// both profiles.

/// Creates and drops `n` merged children made by `make`, sampling live
/// bytes half-way and at the end. Each child is checked live (or done, if
/// `expect_done`) before it is dropped.
fn churn(n: usize, expect_done: bool, mut make: impl FnMut() -> (Context, Canceller)) {
    // Warm up: lazy statics, thread locals, the first growth of anything
    // amortised (such as a parent's callback list).
    for _ in 0..5_000 {
        drop(make());
    }
    // The allocator counts: holding 1,000 children costs memory.
    let before = live_bytes();
    let held: Vec<_> = (0..1000).map(|_| make()).collect();
    assert!(
        live_bytes() - before >= 1000 * 64,
        "the counting allocator does not count"
    );
    drop(held);
    let baseline = live_bytes();
    for i in 0..n {
        let (child, canceller) = make();
        assert_eq!(child.is_done(), expect_done);
        drop(child);
        drop(canceller);
        if i == n / 2 {
            assert_near("half-way through the loop", baseline, SLACK);
        }
    }
    assert_near("after the loop", baseline, SLACK);
}

#[test]
fn a_million_merged_children_of_two_live_parents_free_everything() {
    let _serial = serial();
    let (a, cancel_a) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_timeout(std::time::Duration::from_secs(3600));
    // Long-lived merged children stay linked throughout.
    let (kept, _kc) = a.merge(&b);
    let (kept_b, _kbc) = b.merge(&a);
    let start = std::time::Instant::now();
    churn(n(), false, || a.merge(&b));
    eprintln!(
        "{} merged children made and dropped in {:?}",
        n(),
        start.elapsed()
    );
    // Both lists are intact: `other`'s cancel reaches the live one, and so
    // does `self`'s.
    cancel_b.cancel();
    assert_eq!(kept.err(), Some(Error::Canceled));
    assert_eq!(kept_b.err(), Some(Error::Canceled));
    cancel_a.cancel();
}

#[test]
fn merged_children_through_value_nodes_free_everything() {
    let _serial = serial();
    let (a, _ca) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_cancel();
    let a = a.with_value(1u32);
    let b = b.with_value(2u64);
    let (kept, _kc) = a.merge(&b);
    churn(n() / 10, false, || a.merge(&b));
    cancel_b.cancel();
    assert!(kept.is_done());
}

#[test]
fn merged_children_with_a_never_done_other_free_everything() {
    let _serial = serial();
    let (a, _ca) = Context::background().with_cancel();
    let (hidden, cancel_hidden) = Context::background().with_cancel();
    let detached = hidden.without_cancel();
    let bg = Context::background();
    churn(n() / 10, false, || a.merge(&bg));
    churn(n() / 10, false, || a.merge(&detached));
    cancel_hidden.cancel();
}

#[test]
fn merged_children_done_through_self_still_leave_other() {
    // The merged node is done (its first parent was cancelled) but the
    // callback on `other` is still registered until its handles go.
    let _serial = serial();
    let (b, cancel_b) = Context::background().with_cancel();
    let (kept, _kc) = Context::background().merge(&b);
    churn(n() / 10, true, || {
        let (a, ca) = Context::background().with_cancel();
        let merged = a.merge(&b);
        ca.cancel();
        merged
    });
    cancel_b.cancel();
    assert!(kept.is_done());
}

#[test]
fn merged_children_cancelled_by_other_free_everything() {
    let _serial = serial();
    let (a, _ca) = Context::background().with_cancel();
    let (kept, _kc) = a.with_cancel();
    churn(n() / 10, true, || {
        let (b, cb) = a.with_cancel();
        let merged = Context::todo().merge(&b);
        cb.cancel();
        merged
    });
    assert!(!kept.is_done());
}

#[test]
fn merged_with_itself_an_ancestor_or_a_descendant_free_everything() {
    let _serial = serial();
    let (root, cancel_root) = Context::background().with_cancel();
    churn(n() / 10, false, || {
        let (a, _ca) = root.with_cancel();
        a.merge(&a)
    });
    churn(n() / 10, false, || {
        let (a, _ca) = root.with_cancel();
        let (child, _cc) = a.with_value(1u8).with_cancel();
        child.merge(&a)
    });
    churn(n() / 10, false, || {
        let (a, _ca) = root.with_cancel();
        let (child, _cc) = a.with_cancel();
        a.merge(&child)
    });
    // And the same with a big value above each: a retained node shows up.
    let baseline = live_bytes();
    for _ in 0..10 {
        let (a, ca) = root.with_value(vec![1u8; BIG]).with_cancel();
        let (child, cc) = a.with_cancel();
        let (m1, c1) = a.merge(&a);
        let (m2, c2) = child.merge(&a);
        let (m3, c3) = a.merge(&child);
        let (m4, c4) = m2.merge(&m3);
        assert!(live_bytes() - baseline >= BIG as isize);
        drop((a, ca, child, cc, m1, c1, m2, c2, m3, c3, m4, c4));
        assert_near("after dropping a merged family", baseline, SLACK);
    }
    cancel_root.cancel();
}

#[test]
fn a_dropped_merged_child_leaves_nothing_on_other() {
    let _serial = serial();
    // `other` lives on; each merged child holds a 1 MiB value above it on
    // its first parent's side. Nothing on `other` may keep it.
    let (b, cancel_b) = Context::background().with_cancel();
    // Warm up `other`'s callback list.
    drop(Context::background().merge(&b));
    let baseline = live_bytes();
    let (a, ca) = Context::background()
        .with_value(vec![1u8; BIG])
        .with_cancel();
    let (m, cm) = a.merge(&b);
    drop((a, ca));
    assert!(
        live_bytes() - baseline >= BIG as isize,
        "the merged node holds it"
    );
    drop((m, cm));
    assert_near("after dropping the merged child", baseline, SLACK);
    // A pending Done keeps it, and frees it once dropped.
    let (a, ca) = Context::background()
        .with_value(vec![1u8; BIG])
        .with_cancel();
    let (m, cm) = a.merge(&b);
    let done = m.done();
    drop((a, ca, m, cm));
    assert!(live_bytes() - baseline >= BIG as isize, "the Done holds it");
    drop(done);
    assert_near("after dropping the Done", baseline, SLACK);
    cancel_b.cancel();
}

#[test]
fn merging_allocates_what_with_cancel_does() {
    let _serial = serial();
    let (a, _ca) = Context::background().with_cancel();
    let (live_other, _lc) = Context::background().with_cancel();
    let (hidden, _hc) = Context::background().with_cancel();
    let detached = hidden.without_cancel();
    // Warm up (this also gives `live_other`'s entry list its capacity).
    for _ in 0..100 {
        drop(a.with_cancel());
        drop(a.merge(&Context::background()));
        drop(a.merge(&live_other));
        drop(a.merge(&detached));
    }
    fn count(f: impl Fn() -> (Context, Canceller)) -> (usize, isize) {
        let (allocs0, live0) = (thread_allocs(), live_bytes());
        let held = f();
        // This thread's count: the harness and the reactor thread allocate too.
        let got = (thread_allocs() - allocs0, live_bytes() - live0);
        drop(held);
        got
    }
    let (with_cancel, with_cancel_bytes) = count(|| a.with_cancel());
    let (bg, bg_bytes) = count(|| a.merge(&Context::background()));
    let (todo, _) = count(|| a.merge(&Context::todo()));
    let (det, _) = count(|| a.merge(&detached));
    let (live_o, live_bytes) = count(|| a.merge(&live_other));
    eprintln!(
        "allocations: with_cancel {with_cancel} ({with_cancel_bytes} B), merge(background) {bg} \
         ({bg_bytes} B), merge(todo) {todo}, merge(without_cancel) {det}, \
         merge(live) {live_o} ({live_bytes} B)"
    );
    assert_eq!(with_cancel, 1, "with_cancel allocates its node only");
    // `background()` can never be done: the merged node is a plain node
    // with a mark, no out-of-line part.
    assert_eq!(
        bg_bytes, with_cancel_bytes,
        "merge(background) holds {bg_bytes} B, with_cancel {with_cancel_bytes} B"
    );
    // The second parent lives in the same allocation as the node, right
    // after it (so that nodes without one stay small), and a live one links
    // the child into an intrusive list: no allocation of its own.
    for (name, n) in [
        ("background", bg),
        ("todo", todo),
        ("without_cancel", det),
        ("a live context", live_o),
    ] {
        assert_eq!(
            n, with_cancel,
            "merge({name}) made {n} allocations, with_cancel {with_cancel}"
        );
    }
}

#[test]
fn many_live_merged_children_dropped_together_return_memory() {
    // A long-lived `other` with 20,000 merged children alive at once, then
    // all dropped: "holds memory for the live ones only" (SPEC, No leaks).
    // The child list is intrusive and so returns to nothing; the entries
    // registered on `other` live in a `Vec` (16 bytes a child) that gives
    // its capacity back as they go.
    let _serial = serial();
    let (a, _ca) = Context::background().with_cancel();
    let (b, cancel_b) = Context::background().with_cancel();
    drop(a.merge(&b));
    let baseline = live_bytes();
    let held: Vec<_> = (0..20_000).map(|_| a.merge(&b)).collect();
    assert!(live_bytes() - baseline > 20_000 * 64);
    drop(held);
    assert_near(
        "after dropping 20,000 live merged children",
        baseline,
        SLACK,
    );
    cancel_b.cancel();
}
