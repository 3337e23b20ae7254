//! Deadline timers do not leak: a long-lived parent gets a great many
//! children with an hour's timeout, each cancelled (or dropped) at once, and
//! the live heap, measured by a counting global allocator, stays flat.
//!
//! Each child registers an `async-io` timer; cancelling or dropping the child
//! deregisters it. async-io queues timer operations (up to 1,000) and applies
//! them when its reactor next runs, so a removal can sit in that queue for a
//! while. Until it is applied, the reactor's timer map still holds the
//! timer's waker: our `DeadlineTimer` (its `Arc`; its back-reference to the
//! node is revoked when the node goes, so the node is not kept), a few
//! hundred bytes. So the heap may be up to about
//! 1,000 x 512 bytes above its starting level at any moment, however many
//! timers went through; what must not happen is growth with the count. The
//! heap is sampled halfway and at the end, both within that slack, and once
//! more after making the reactor drain its queue (a short timer of our own
//! that fires), within a small slack.
//!
//! `CTXTREE_VALGRIND=1` (scripts/valgrind.sh) shrinks the count.

mod common;

use std::time::Instant;

use common::{drain_async_io, live_bytes, serial, shrunk, HOUR};
use ctxtree::{Context, Error};

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

/// async-io's queue of timer operations holds up to 1,000 entries; a
/// queued removal keeps the timer's waker (and so our timer and the node's
/// allocation) in the reactor's map until it is applied: ~512 bytes each.
const QUEUE_SLACK: isize = 1_000 * 512;

/// After the reactor drained its queue: nothing of ours is left; allow for
/// the allocator's and the harness's small change.
const DRAINED_SLACK: isize = 16 << 10;

/// How many children: a million. Measured on a 2-core machine, a debug
/// build takes under 2 s per test for it (the report line gives the time),
/// so there is no need for a smaller debug count; valgrind runs get fewer.
fn count() -> usize {
    shrunk(1_000_000, 20_000)
}

/// Touches every lazily allocated global (async-io's reactor, its thread,
/// this thread's block_on caches) before the baseline is taken.
fn warm_up(parent: &Context) {
    let (ctx, cancel) = parent.with_timeout(HOUR);
    cancel.cancel();
    drop(ctx);
    drain_async_io();
}

#[derive(Clone, Copy, Debug)]
enum End {
    Cancel,
    Drop,
}

fn churn(end: End) {
    // The tests measure one process-wide counter: one at a time.
    let _serial = serial();
    let n = count();
    let (parent, parent_cancel) = Context::background().with_cancel();
    warm_up(&parent);
    let baseline = live_bytes();
    let start = Instant::now();
    let mut half = None;
    let mut peak = 0;
    for i in 0..n {
        let (ctx, cancel) = parent.with_timeout(HOUR);
        match end {
            End::Cancel => {
                cancel.cancel();
                assert_eq!(ctx.err(), Some(Error::Canceled));
            }
            End::Drop => assert!(!ctx.is_done()),
        }
        drop(ctx);
        drop(cancel);
        if i % 1024 == 0 {
            peak = peak.max(live_bytes() - baseline);
        }
        if i == n / 2 {
            half = Some(live_bytes() - baseline);
        }
    }
    let took = start.elapsed();
    let at_end = live_bytes() - baseline;
    drain_async_io();
    let drained = live_bytes() - baseline;
    let half = half.expect("sampled");
    println!(
        "{end:?}: {n} children with a 1h timeout in {took:?} ({:?} each); \
         heap above baseline: halfway {half} B, end {at_end} B, sampled peak {peak} B, \
         after draining async-io {drained} B",
        took / n as u32
    );
    assert!(
        !parent.is_done(),
        "the parent is never touched by its children"
    );
    assert!(half <= QUEUE_SLACK, "halfway: {half} bytes above baseline");
    assert!(
        at_end <= QUEUE_SLACK,
        "at the end: {at_end} bytes above baseline"
    );
    assert!(peak <= QUEUE_SLACK, "peak: {peak} bytes above baseline");
    assert!(
        drained <= DRAINED_SLACK,
        "after draining: {drained} bytes above baseline"
    );
    parent_cancel.cancel();
}

/// Children cancelled at once: each cancel deregisters its timer.
#[test]
fn cancelled_timers_do_not_leak() {
    churn(End::Cancel);
}

/// Children dropped at once, never cancelled: each drop deregisters its
/// timer and unlinks the child from the parent.
#[test]
fn dropped_timers_do_not_leak() {
    churn(End::Drop);
}
