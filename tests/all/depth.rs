//! Depth is unbounded: building, cancelling and dropping a chain 1,000,000
//! deep must not overflow the stack.
//!
//! Every test runs on a thread with a 2 MiB stack (the usual default for
//! spawned threads), so recursion over depth would overflow it long before a
//! million levels. In a debug build each million-deep test takes about a
//! second or two on a small machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ctxtree::{Canceller, Context, Error};

use crate::common::{miri_or, patience, shrunk, watchdog_on_stack, DropProbe};

/// 1_000_000, or 20_000 under valgrind, or 500 under Miri.
fn depth() -> usize {
    miri_or(shrunk(1_000_000, 20_000), 500)
}

/// Runs `f` on a thread with a 2 MiB stack, under the watchdog, and returns
/// its result.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    watchdog_on_stack("small stack", 2 * 1024 * 1024, f)
}

/// A value type of our own for the chain, so it is easy to look up.
struct Level(usize);

/// A chain: its leaf, the Cancellers if kept, and every 1,000th level.
struct Chain {
    leaf: Context,
    cancellers: Vec<Canceller>,
    samples: Vec<Context>,
}

/// Builds `depth()` levels below `root`, alternating `with_cancel` and
/// `with_value(Level)`. Keeps every Canceller if `keep` (otherwise they are
/// dropped as the chain is built).
fn alternating_chain(root: &Context, keep: bool) -> Chain {
    let mut cancellers = Vec::with_capacity(if keep { depth() / 2 } else { 0 });
    let mut samples = Vec::new();
    let mut leaf = root.clone();
    for i in 0..depth() {
        leaf = if i % 2 == 0 {
            let (next, cancel) = leaf.with_cancel();
            if keep {
                cancellers.push(cancel);
            }
            next
        } else {
            leaf.with_value(Level(i))
        };
        if i % 1000 == 0 {
            samples.push(leaf.clone());
        }
    }
    Chain {
        leaf,
        cancellers,
        samples,
    }
}

/// A chain with the Cancellers kept; cancel the root; drop in the given
/// order. The root's value is a probe that shows the whole chain was freed.
fn kept_cancellers_cancel_then_drop(leaf_first: bool) {
    on_small_stack(move || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (root, root_cancel) = Context::background()
            .with_value(DropProbe(freed.clone()))
            .with_cancel();
        let Chain {
            leaf,
            cancellers,
            samples,
        } = alternating_chain(&root, true);
        assert_eq!(cancellers.len(), depth() / 2);
        assert!(!leaf.is_done());
        assert!(samples.iter().all(|c| !c.is_done()));
        assert_eq!(leaf.value::<Level>().map(|l| l.0), Some(depth() - 1));

        root_cancel.cancel();
        assert_eq!(leaf.err(), Some(Error::Canceled));
        assert_eq!(leaf.wait(), Error::Canceled);
        // Every level on the way, not only the leaf.
        assert!(samples.iter().all(|c| c.err() == Some(Error::Canceled)));
        drop(samples);

        drop(root);
        drop(root_cancel);
        if leaf_first {
            drop(leaf);
            assert_eq!(
                freed.load(Ordering::SeqCst),
                0,
                "the Cancellers still hold the chain"
            );
            drop(cancellers);
        } else {
            drop(cancellers);
            assert_eq!(
                freed.load(Ordering::SeqCst),
                0,
                "the leaf still holds the chain"
            );
            drop(leaf);
        }
        assert_eq!(freed.load(Ordering::SeqCst), 1, "the chain was not freed");
    });
}

#[test]
fn chain_with_kept_cancellers_cancel_then_drop_leaf_first() {
    kept_cancellers_cancel_then_drop(true);
}

#[test]
fn chain_with_kept_cancellers_cancel_then_drop_leaf_last() {
    kept_cancellers_cancel_then_drop(false);
}

/// A chain whose Cancellers (but the root's) were dropped while building.
fn dropped_cancellers_cancel_then_drop(leaf_first: bool) {
    on_small_stack(move || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (root, root_cancel) = Context::background()
            .with_value(DropProbe(freed.clone()))
            .with_cancel();
        let Chain {
            leaf,
            cancellers,
            samples,
        } = alternating_chain(&root, false);
        assert!(cancellers.is_empty());
        drop(root);

        root_cancel.cancel();
        assert_eq!(leaf.err(), Some(Error::Canceled));
        assert!(samples.iter().all(|c| c.err() == Some(Error::Canceled)));
        drop(samples);
        assert_eq!(
            leaf.cause().unwrap().downcast_ref::<Error>(),
            Some(&Error::Canceled)
        );

        if leaf_first {
            drop(leaf);
            assert_eq!(
                freed.load(Ordering::SeqCst),
                0,
                "the root's Canceller holds the root"
            );
            drop(root_cancel);
        } else {
            drop(root_cancel);
            assert_eq!(
                freed.load(Ordering::SeqCst),
                0,
                "the leaf still holds the chain"
            );
            drop(leaf);
        }
        assert_eq!(freed.load(Ordering::SeqCst), 1, "the chain was not freed");
    });
}

#[test]
fn chain_with_dropped_cancellers_cancel_then_drop_leaf_first() {
    dropped_cancellers_cancel_then_drop(true);
}

#[test]
fn chain_with_dropped_cancellers_cancel_then_drop_leaf_last() {
    dropped_cancellers_cancel_then_drop(false);
}

#[test]
fn uncancelled_chain_dropped_from_the_leaf() {
    // Every node unlinks itself from its parent as it goes.
    on_small_stack(|| {
        let freed = Arc::new(AtomicUsize::new(0));
        let (root, root_cancel) = Context::background()
            .with_value(DropProbe(freed.clone()))
            .with_cancel();
        let leaf = alternating_chain(&root, false).leaf;
        drop(root);
        drop(leaf);
        assert_eq!(freed.load(Ordering::SeqCst), 0);
        drop(root_cancel);
        assert_eq!(freed.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn uncancelled_chain_with_live_root_then_cancel() {
    on_small_stack(|| {
        let (root, root_cancel) = Context::background().with_cancel();
        let leaf = alternating_chain(&root, false).leaf;
        drop(leaf);
        // The whole chain unlinked itself; the root's list is sound.
        let (child, _c) = root.with_cancel();
        root_cancel.cancel();
        assert_eq!(child.err(), Some(Error::Canceled));
    });
}

#[test]
fn chain_dropped_on_another_thread() {
    // Built on one small-stack thread, cancelled and dropped on another.
    let freed = Arc::new(AtomicUsize::new(0));
    let probe = freed.clone();
    let (leaf, root_cancel) = on_small_stack(move || {
        let (root, root_cancel) = Context::background()
            .with_value(DropProbe(probe))
            .with_cancel();
        (alternating_chain(&root, false).leaf, root_cancel)
    });
    on_small_stack(move || {
        root_cancel.cancel();
        assert!(leaf.is_done());
        drop(root_cancel);
        drop(leaf);
    });
    assert_eq!(freed.load(Ordering::SeqCst), 1);
}

#[test]
fn value_only_chain_dropped() {
    on_small_stack(|| {
        let freed = Arc::new(AtomicUsize::new(0));
        let mut leaf = Context::background().with_value(DropProbe(freed.clone()));
        for i in 0..depth() {
            leaf = leaf.with_value(i);
        }
        assert_eq!(leaf.value::<usize>(), Some(&(depth() - 1)));
        // A lookup that walks the whole chain, iteratively.
        assert!(leaf.value::<DropProbe>().is_some());
        assert_eq!(leaf.value::<u8>(), None);
        assert!(!leaf.is_done());
        assert_eq!(leaf.deadline(), None);
        drop(leaf);
        assert_eq!(freed.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn value_only_chain_under_a_cancel_node_is_cancelled() {
    on_small_stack(|| {
        let (root, cancel) = Context::background().with_cancel();
        let mut leaf = root.clone();
        for i in 0..depth() {
            leaf = leaf.with_value(i as u32);
        }
        let (below, _c) = leaf.with_cancel();
        cancel.cancel();
        assert_eq!(leaf.err(), Some(Error::Canceled));
        assert_eq!(below.err(), Some(Error::Canceled));
        drop(root);
        drop(leaf);
        drop(cancel);
        drop(below);
    });
}

#[test]
fn display_of_a_deep_chain() {
    on_small_stack(|| {
        let display_depth = miri_or(10_000, 200);
        let mut leaf = Context::background();
        for i in 0..display_depth {
            leaf = if i % 2 == 0 {
                leaf.with_cancel().0
            } else {
                leaf.with_value(i as u32)
            };
        }
        let shown = leaf.to_string();
        let expected_len = "context.Background".len()
            + (display_depth / 2) * ".WithCancel".len()
            + (display_depth / 2) * ".WithValue(u32)".len();
        assert_eq!(shown.len(), expected_len);
        assert!(shown.starts_with("context.Background.WithCancel.WithValue(u32).WithCancel"));
        assert!(shown.ends_with(".WithCancel.WithValue(u32)"));
        let debugged = format!("{leaf:?}");
        assert!(debugged.len() > expected_len);
        assert!(debugged.contains("live"));
    });
}

/// Sends once, when dropped.
struct SignalOnDrop(std::sync::mpsc::Sender<()>);

impl Drop for SignalOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a future deadline registers an async-io timer, and Miri cannot emulate timerfd_create"
)]
fn deadline_at_the_root_of_a_deep_chain_fires_on_the_timer_thread() {
    // The timer thread walks the million levels, then (most likely) drops
    // the whole chain too: the leaf's last handle is in a callback on the
    // root, so the chain goes when that callback is done.
    let (freed_tx, freed_rx) = std::sync::mpsc::channel();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    on_small_stack(move || {
        let (root, _root_cancel) = Context::background()
            .with_value(SignalOnDrop(freed_tx))
            .with_timeout(std::time::Duration::from_millis(50));
        let leaf = alternating_chain(&root, false).leaf;
        let sample = leaf.clone();
        // The callback only drops the leaf: on a slow machine (valgrind) the
        // deadline can fire while the chain is still being built, and then
        // the callback runs here, mid-walk, where the leaf may not be done
        // yet. The leaf's state is checked below, once the walk is over.
        let _af = root.after_func(move || {
            seen_tx.send(()).unwrap();
            drop(leaf);
        });
        assert_eq!(
            sample.wait_timeout(patience()),
            Some(Error::DeadlineExceeded)
        );
        assert_eq!(root.err(), Some(Error::DeadlineExceeded));
    });
    seen_rx
        .recv_timeout(patience())
        .expect("the root's callback ran");
    freed_rx
        .recv_timeout(patience())
        .expect("the chain was not freed");
}

/// Builds `depth()` merged contexts, each a child of `first` merged with the
/// one before it (the first with `second`): a chain through second parents.
fn merge_chain(first: &Context, second: &Context) -> Context {
    let mut leaf = second.clone();
    for _ in 0..depth() {
        let (merged, _cancel) = first.merge(&leaf);
        leaf = merged;
    }
    leaf
}

#[test]
fn chain_of_merges_through_second_parents_is_cancelled_then_dropped() {
    // Each merged node but the leaf is registered on its second parent (it
    // is the next one's second parent) and is finished by that parent's
    // walk; the leaf, with nothing attached, takes the reason when read. The
    // walk must reach the end of the chain without recursion, and dropping
    // the leaf drops every second parent in turn without recursion either.
    on_small_stack(|| {
        let freed = Arc::new(AtomicUsize::new(0));
        let (first, _first_cancel) = Context::background().with_cancel();
        let (second, cancel_second) = Context::background()
            .with_value(DropProbe(freed.clone()))
            .with_cancel();
        let leaf = merge_chain(&first, &second);
        drop(second);
        cancel_second.cancel();
        assert_eq!(leaf.err(), Some(Error::Canceled));
        assert!(!first.is_done());
        drop(leaf);
        drop(cancel_second);
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        // Every merged node left `first`'s list: it still works.
        let (child, _c) = first.with_cancel();
        assert!(!child.is_done());
    });
}

#[test]
fn uncancelled_chain_of_merges_dropped_from_the_leaf() {
    on_small_stack(|| {
        let freed = Arc::new(AtomicUsize::new(0));
        let (first, first_cancel) = Context::background().with_cancel();
        let (second, second_cancel) = Context::background()
            .with_value(DropProbe(freed.clone()))
            .with_cancel();
        let leaf = merge_chain(&first, &second);
        drop(second);
        drop(second_cancel);
        drop(leaf);
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        let (child, _c) = first.with_cancel();
        first_cancel.cancel();
        assert_eq!(child.err(), Some(Error::Canceled));
    });
}

#[test]
fn display_of_a_deep_chain_of_merges() {
    // Each level nests the one before it: `Merge(…Merge(…))`, printed
    // without recursion.
    on_small_stack(|| {
        let display_depth = miri_or(10_000, 200);
        let first = Context::todo();
        let mut leaf = Context::background();
        for _ in 0..display_depth {
            leaf = first.merge(&leaf).0;
        }
        let shown = leaf.to_string();
        let level = "context.TODO.Merge(";
        assert_eq!(
            shown.len(),
            display_depth * (level.len() + 1) + "context.Background".len()
        );
        assert!(shown.starts_with(&level.repeat(3)));
        assert!(shown.ends_with(&format!("context.Background{}", ")".repeat(display_depth))));
        drop(leaf);
    });
}
