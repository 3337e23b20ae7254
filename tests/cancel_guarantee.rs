//! Go's guarantee under races: when a `cancel()` that wins returns, every
//! descendant of its context is done, even while other threads are
//! cancelling parts of the subtree (middle nodes, a merged node's second
//! parent) at the same moment and their walks have reached those parts
//! first.
//!
//! Each round builds a root with middle nodes (plain, under a value node,
//! and merged with a second root), each with leaves that have children of
//! their own (so a middle node's walk has work to do below it), then lets
//! helper threads cancel the middle nodes and the second root while the
//! main thread cancels the root, all released by one barrier. Right after
//! the root's `cancel()` returns, every node below it must be done.
//!
//! Uses std only, so it also runs under Miri (sized down).

use std::sync::{Arc, Barrier};
use std::thread;

use ctxtree::{Canceller, Context};

/// Rounds, middle nodes per kind, leaves per middle node.
fn sizes() -> (usize, usize, usize) {
    if cfg!(miri) {
        (3, 1, 2)
    } else {
        (400, 2, 12)
    }
}

/// One round's tree: the root's canceller, the cancellers that helper
/// threads race it with, and every context below the root.
struct Round {
    root: Canceller,
    helpers: Vec<Vec<Canceller>>,
    below: Vec<Context>,
    keep: Vec<Canceller>,
}

fn build(mids_per_kind: usize, leaves: usize, helper_threads: usize) -> Round {
    let (root, cancel_root) = Context::background().with_cancel();
    let (other, cancel_other) = Context::background().with_cancel();
    let mut mids = Vec::new();
    for _ in 0..mids_per_kind {
        mids.push(root.with_cancel());
        mids.push(root.with_value(7u32).with_cancel());
        // Reached from the root through its first parent, and cancelled
        // through its second by a helper.
        mids.push(root.merge(&other));
    }
    let mut below = Vec::new();
    let mut keep = Vec::new();
    let mut helpers: Vec<Vec<Canceller>> = (0..helper_threads).map(|_| Vec::new()).collect();
    helpers[0].push(cancel_other);
    for (i, (mid, cancel_mid)) in mids.into_iter().enumerate() {
        for _ in 0..leaves {
            let (leaf, cancel_leaf) = mid.with_cancel();
            let (grandchild, cancel_grandchild) = leaf.with_value(1u8).with_cancel();
            below.push(leaf);
            below.push(grandchild);
            keep.push(cancel_leaf);
            keep.push(cancel_grandchild);
        }
        below.push(mid);
        helpers[i % helper_threads].push(cancel_mid);
    }
    Round {
        root: cancel_root,
        helpers,
        below,
        keep,
    }
}

#[test]
fn every_descendant_is_done_when_a_racing_root_cancel_returns() {
    let (rounds, mids_per_kind, leaves) = sizes();
    let helper_threads = 2;
    for round in 0..rounds {
        let Round {
            root,
            helpers,
            below,
            keep,
        } = build(mids_per_kind, leaves, helper_threads);
        let barrier = Arc::new(Barrier::new(helper_threads + 1));
        let threads: Vec<_> = helpers
            .into_iter()
            .enumerate()
            .map(|(t, cancellers)| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    // Alternate the order so that each helper sometimes
                    // starts with the node the root's walk reaches last.
                    if (round + t) % 2 == 0 {
                        cancellers.iter().for_each(Canceller::cancel);
                    } else {
                        cancellers.iter().rev().for_each(Canceller::cancel);
                    }
                })
            })
            .collect();
        barrier.wait();
        // The last thread at a barrier usually runs first: let the helpers
        // start first in some rounds, so that their walks are under way
        // when the root's reaches their nodes.
        for _ in 0..round % 8 {
            thread::yield_now();
        }
        root.cancel();
        let live = below.iter().filter(|ctx| !ctx.is_done()).count();
        assert_eq!(
            live,
            0,
            "round {round}: {live} of {} descendants still live right after the root's cancel() returned",
            below.len()
        );
        for t in threads {
            t.join().unwrap();
        }
        drop(keep);
    }
}

/// A chain whose links are cancelled on their own by several threads while
/// the top is cancelled: the top's `cancel()` still returns with the bottom
/// done, however the chain was cut up among the walks.
#[test]
fn a_chain_cut_by_racing_cancels_is_done_top_to_bottom() {
    let (rounds, _, _) = sizes();
    let depth = if cfg!(miri) { 6 } else { 40 };
    for round in 0..rounds {
        let (top, cancel_top) = Context::background().with_cancel();
        let mut links = Vec::new();
        let mut cur = top.clone();
        for _ in 0..depth {
            let (next, cancel) = cur.with_cancel();
            links.push((next.clone(), cancel));
            cur = next;
        }
        let bottom = cur;
        let barrier = Arc::new(Barrier::new(3));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let barrier = barrier.clone();
                // Thread 0 takes the upper links bottom-up, thread 1 the
                // lower ones top-down: their walks meet the top's anywhere.
                let mine: Vec<Canceller> = links
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (i * 2 / depth) == t && (i + round) % 3 != 0)
                    .map(|(_, (_, c))| c.clone())
                    .collect();
                thread::spawn(move || {
                    barrier.wait();
                    if t == 0 {
                        mine.iter().rev().for_each(Canceller::cancel);
                    } else {
                        mine.iter().for_each(Canceller::cancel);
                    }
                })
            })
            .collect();
        barrier.wait();
        cancel_top.cancel();
        assert!(
            bottom.is_done(),
            "round {round}: bottom live after top's cancel()"
        );
        for (ctx, _) in &links {
            assert!(
                ctx.is_done(),
                "round {round}: a link live after top's cancel()"
            );
        }
        for t in threads {
            t.join().unwrap();
        }
    }
}
