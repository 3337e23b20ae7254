//! Races on real threads between every pair of operations that can meet on
//! one node: a node's last handle dropped while its parent (or a merge's
//! second parent) is cancelled, a `Done` polled or dropped as the last
//! handle during a cancel, `after_func` and `stop()` against a cancel and a
//! last drop, siblings dropped and cancelled while their parent is,
//! clones dropped on several threads at once, deriving while the parent is
//! cancelled, links and last drops waiting for a wide node's lock while its
//! walk holds it, and two cancels with different causes.
//!
//! Each test is a loop of rounds. In a round the racing parties start
//! together from a barrier (natively, each also spins a different short
//! while, so the overlap moves from round to round), every thread is
//! joined, and then the outcome is asserted: every survivor is done with
//! the reason that reached it, one reason per node, each callback ran at
//! most once and `stop()` agrees with whether it ran, and every value hung
//! in the tree was dropped exactly once when its last handle went. Each
//! test runs under the shared watchdog, so a lost wakeup or a deadlock
//! fails it instead of hanging the suite.
//!
//! The file uses the public API and light dev-dependencies only, and no
//! timer or deadline, so that it runs under Miri (which cannot emulate
//! async-io's `timerfd_create`) and ThreadSanitizer: see scripts/miri.sh
//! and scripts/tsan.sh. Under Miri a round is slow and the interleavings
//! come from Miri's own scheduler (one seed per run), so there are only a
//! few rounds (8; natively 1,000, under valgrind 100).
//! `CTXTREE_RACE_ROUNDS` sets how many.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::task::Poll;
use std::thread;

use common::poll::poll_once;
use common::timing::{shrunk, watchdog};
use common::tree::{cause, counter, DropProbe};
use ctxtree::{AfterFunc, Canceller, Context, Done, Error};

// ---------------------------------------------------------------------------
// Rounds and parties
// ---------------------------------------------------------------------------

/// Rounds per test: `CTXTREE_RACE_ROUNDS` if set, else 1,000; 100 under
/// valgrind (`CTXTREE_VALGRIND`, see scripts/valgrind.sh); 8 under Miri,
/// where each seed gives other interleavings (pass the variable through
/// with `-Zmiri-env-forward=CTXTREE_RACE_ROUNDS`).
fn rounds() -> usize {
    match std::env::var("CTXTREE_RACE_ROUNDS") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("CTXTREE_RACE_ROUNDS: a number of rounds"),
        Err(_) if cfg!(miri) => 8,
        Err(_) => shrunk(1000, 100),
    }
}

/// One side of a race: runs once, on its own thread.
type Party<'a> = Box<dyn FnOnce() + Send + 'a>;

fn party<'a>(f: impl FnOnce() + Send + 'a) -> Party<'a> {
    Box::new(f)
}

/// Runs every party on its own thread (the last one on this thread), all
/// released together by a barrier; returns when all have finished, and
/// resumes the first panic of any of them.
fn race(round: usize, parties: Vec<Party<'_>>) {
    let barrier = Barrier::new(parties.len());
    thread::scope(|s| {
        let mut parties = parties.into_iter().enumerate();
        let (mine, last) = parties.next_back().expect("at least one party");
        let handles: Vec<_> = parties
            .map(|(i, p)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    jitter(round, i);
                    p();
                })
            })
            .collect();
        barrier.wait();
        jitter(round, mine);
        last();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// Natively, a short spin that differs by round and party, so that across
/// rounds each party starts a little before or after the others. Under
/// Miri its scheduler does this, and spinning would only cost time.
fn jitter(round: usize, party: usize) {
    if cfg!(miri) {
        return;
    }
    let spins = (round.wrapping_mul(31) + party * 17) % 24 * 16;
    for _ in 0..spins {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------
// What the rounds observe
// ---------------------------------------------------------------------------

/// Why `ctx` is done: its error and its cause's message; `None` while
/// live. For a context no other thread can cancel at the moment (every
/// racing thread joined): `err()` and `cause()` must agree on whether it
/// is done.
#[track_caller]
fn reason(ctx: &Context) -> Option<(Error, String)> {
    let (err, cause) = (ctx.err(), ctx.cause());
    assert_eq!(
        err.is_some(),
        cause.is_some(),
        "{ctx}: err() {err:?} but cause() {cause:?}"
    );
    Some((err?, cause?.to_string()))
}

/// `reason` for a context that another thread may be cancelling right
/// now: it may become done between the two reads, so `cause()` is read
/// first, and once it is set `err()` must be too (done is for good).
/// `None` unless both were seen.
#[track_caller]
fn reason_racing(ctx: &Context) -> Option<(Error, String)> {
    let cause = ctx.cause();
    let err = ctx.err();
    assert!(
        cause.is_none() || err.is_some(),
        "{ctx}: cause() {cause:?} but then err() None"
    );
    Some((err?, cause?.to_string()))
}

/// `(Canceled, msg)`: the reason a `cancel_with_cause(cause(msg))` gives.
fn canceled(msg: &str) -> Option<(Error, String)> {
    Some((Error::Canceled, msg.to_string()))
}

fn count(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

/// An `after_func` registration that counts its runs.
struct Callback {
    runs: Arc<AtomicUsize>,
    handle: AfterFunc,
}

fn register(ctx: &Context) -> Callback {
    let runs = counter();
    let r = runs.clone();
    let handle = ctx.after_func(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    Callback { runs, handle }
}

impl Callback {
    fn runs(&self) -> usize {
        count(&self.runs)
    }

    /// With every racing thread joined: the callback ran at most once, and
    /// `stop()` agrees. `stopped` is what an earlier `stop()` returned, if
    /// one was called: `true` means it never runs, `false` that it had
    /// started (so it has run by now). Without one, `stop()` now returns
    /// `true` exactly if the callback never ran: its node was dropped with
    /// it pending, or is live. Either way, a further `stop()` is `false`.
    #[track_caller]
    fn assert_settled(&self, what: &str, stopped: Option<bool>) {
        let runs = self.runs();
        match stopped {
            Some(true) => assert_eq!(runs, 0, "{what}: ran after stop() returned true"),
            Some(false) => assert_eq!(runs, 1, "{what}: stop() returned false, yet it never ran"),
            None => {
                assert!(runs <= 1, "{what}: ran {runs} times");
                assert_eq!(
                    self.handle.stop(),
                    runs == 0,
                    "{what}: stop() disagrees with {runs} runs"
                );
            }
        }
        assert!(!self.handle.stop(), "{what}: a second stop() returned true");
        assert_eq!(self.runs(), runs, "{what}: ran after settling");
    }

    /// Its node was kept to the end and cancelled: it ran exactly once.
    #[track_caller]
    fn assert_ran_once(&self, what: &str) {
        assert_eq!(self.runs(), 1, "{what}: runs");
        assert!(!self.handle.stop(), "{what}: stop() after it ran");
    }
}

/// A live cancellable root to build on.
fn root() -> (Context, Canceller) {
    Context::background().with_cancel()
}

// ---------------------------------------------------------------------------
// Last drop vs a parent's cancel
// ---------------------------------------------------------------------------

/// Three children's last handles dropped on one thread while their parent
/// is cancelled on another: the cancel walk meets nodes being freed.
#[test]
fn last_drops_of_children_vs_parent_cancel() {
    watchdog("last_drops_of_children_vs_parent_cancel", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let kids: Vec<_> = (0..3).map(|_| parent.with_cancel()).collect();
            race(
                round,
                vec![party(move || drop(kids)), party(|| cancel.cancel())],
            );
            assert_eq!(parent.err(), Some(Error::Canceled));
            // Derived after both sides are done: born done.
            assert_eq!(parent.with_cancel().0.err(), Some(Error::Canceled));
        }
    });
}

/// Whole subtrees (a child, a value below it, a grandchild with a
/// callback) dropped while the parent is cancelled, one subtree kept: each
/// dropped value is freed once, each dropped callback ran or was dropped,
/// and the kept one ran.
#[test]
fn last_drops_of_subtrees_vs_parent_cancel() {
    watchdog("last_drops_of_subtrees_vs_parent_cancel", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let drops = counter();
            let mut dropped = Vec::new();
            let mut callbacks = Vec::new();
            for _ in 0..3 {
                let (kid, kid_cancel) = parent.with_cancel();
                let (grandkid, _) = kid.with_value(DropProbe(drops.clone())).with_cancel();
                callbacks.push(register(&grandkid));
                dropped.push((kid, kid_cancel, grandkid));
            }
            let (kept, _kc) = parent.with_cancel();
            let kept_cb = register(&kept);
            race(
                round,
                vec![
                    party(move || drop(dropped)),
                    party(|| cancel.cancel_with_cause(cause("parent"))),
                ],
            );
            assert_eq!(count(&drops), 3, "every dropped value freed, once");
            assert_eq!(reason(&kept), canceled("parent"));
            kept_cb.assert_ran_once("the kept child's callback");
            for (i, cb) in callbacks.iter().enumerate() {
                cb.assert_settled(&format!("callback of dropped grandchild {i}"), None);
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Merged nodes: last drop vs either parent's cancel
// ---------------------------------------------------------------------------

/// What a merged node has attached when it is dropped. A merged node
/// registers on its second parent only once something is attached to it,
/// so the rounds cycle through all three.
#[derive(Clone, Copy, Debug)]
enum Attached {
    Nothing,
    Callback,
    Child,
}

impl Attached {
    fn of_round(round: usize) -> Attached {
        [Attached::Nothing, Attached::Callback, Attached::Child][round % 3]
    }
}

/// `a.merge(&b)` of two live roots, with `attached` on it, dropped on one
/// thread while `cancel_second` (true) cancels `b` or (false) `a` on
/// another. A second merged node of the same pair, kept, must end done.
fn merged_drop_vs_cancel(round: usize, cancel_second: bool) {
    let attached = Attached::of_round(round);
    let (a, ca) = root();
    let (b, cb) = root();
    let drops = counter();
    let (m, cm) = a.merge(&b);
    let mut callback = None;
    let mut below = None;
    match attached {
        Attached::Nothing => {}
        Attached::Callback => callback = Some(register(&m)),
        Attached::Child => {
            below = Some(m.with_value(DropProbe(drops.clone())).with_cancel());
        }
    }
    let (kept, _kc) = a.merge(&b);
    let kept_cb = register(&kept);
    let (canceller, survivor, cancelled) = if cancel_second {
        (cb, &a, &b)
    } else {
        (ca, &b, &a)
    };
    race(
        round,
        vec![
            party(move || drop((m, cm, below))),
            party(move || canceller.cancel_with_cause(cause("parent"))),
        ],
    );
    let what = format!("round {round}, {attached:?} attached");
    assert_eq!(reason(cancelled), canceled("parent"), "{what}");
    assert_eq!(reason(survivor), None, "{what}: the other parent");
    assert_eq!(reason(&kept), canceled("parent"), "{what}: kept merge");
    kept_cb.assert_ran_once(&what);
    if let Some(cb) = callback {
        cb.assert_settled(&what, None);
    }
    let expected_drops = usize::from(matches!(attached, Attached::Child));
    assert_eq!(count(&drops), expected_drops, "{what}: value freed");
}

/// `a.merge(&b)`'s last handles dropped while `b`, its second parent, is
/// cancelled: `b`'s walk reaches the merged node through its own list.
#[test]
fn merged_last_drop_vs_second_parent_cancel() {
    watchdog("merged_last_drop_vs_second_parent_cancel", || {
        for round in 0..rounds() {
            merged_drop_vs_cancel(round, true);
        }
    });
}

/// `a.merge(&b)`'s last handles dropped while `a`, its first parent, is
/// cancelled: the drop must also leave `b`'s list.
#[test]
fn merged_last_drop_vs_first_parent_cancel() {
    watchdog("merged_last_drop_vs_first_parent_cancel", || {
        for round in 0..rounds() {
            merged_drop_vs_cancel(round, false);
        }
    });
}

// ---------------------------------------------------------------------------
// A `Done` as the last handle vs a cancel
// ---------------------------------------------------------------------------

/// A `Done` that is the last handle of its node (every `Context` and the
/// `Canceller` dropped), registered with a waker or not, is awaited to the
/// end, or polled once more and dropped, while an ancestor is cancelled.
/// The node is a plain child, or a merged child whose second parent is the
/// one cancelled. An awaited `Done` resolves with the cancel's error; one
/// dropped pending leaves the parent's cancel unharmed.
#[test]
fn done_as_last_handle_vs_cancel() {
    watchdog("done_as_last_handle_vs_cancel", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let (first, _cf) = root();
            let merged = round % 2 == 1;
            let await_it = round % 4 < 2;
            let pre_polled = round % 8 < 4;
            let (node, node_cancel) = if merged {
                first.merge(&parent)
            } else {
                parent.with_cancel()
            };
            let mut done = node.done();
            drop((node, node_cancel));
            if pre_polled {
                assert_eq!(poll_once(&mut done), Poll::Pending);
            }
            let got = Mutex::new(None);
            race(
                round,
                vec![
                    party(|| {
                        let polled = if await_it {
                            Poll::Ready(futures::executor::block_on(&mut done))
                        } else {
                            poll_once(&mut done)
                        };
                        drop(done);
                        *got.lock().unwrap() = Some(polled);
                    }),
                    party(|| cancel.cancel()),
                ],
            );
            let what = format!(
                "round {round}: merged {merged}, awaited {await_it}, pre-polled {pre_polled}"
            );
            let polled = got.into_inner().unwrap().expect("the poller finished");
            if await_it {
                assert_eq!(polled, Poll::Ready(Error::Canceled), "{what}");
            } else if let Poll::Ready(e) = polled {
                assert_eq!(e, Error::Canceled, "{what}");
            }
            assert_eq!(parent.err(), Some(Error::Canceled), "{what}");
            assert_eq!(first.err(), None, "{what}");
        }
    });
}

/// Several pending `Done`s of one node, the only handles left, dropped on
/// several threads while the node's parent is cancelled.
#[test]
fn pending_dones_dropped_on_several_threads_vs_cancel() {
    watchdog("pending_dones_dropped_on_several_threads_vs_cancel", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let drops = counter();
            let (node, node_cancel) = parent.with_value(DropProbe(drops.clone())).with_cancel();
            let dones: Vec<Done> = (0..3)
                .map(|_| {
                    let mut d = node.done();
                    assert_eq!(poll_once(&mut d), Poll::Pending);
                    d
                })
                .collect();
            drop((node, node_cancel));
            let mut parties: Vec<Party<'_>> =
                dones.into_iter().map(|d| party(move || drop(d))).collect();
            parties.push(party(|| cancel.cancel()));
            race(round, parties);
            assert_eq!(parent.err(), Some(Error::Canceled));
            assert_eq!(count(&drops), 1, "the node and its value freed once");
        }
    });
}

// ---------------------------------------------------------------------------
// Callbacks: registration and stop() vs cancel vs last drop
// ---------------------------------------------------------------------------

/// On one node: a thread registers a callback through the node's last
/// `Context` and then drops it (the node's last handle); a thread stops a
/// callback registered before; the parent is cancelled. Each callback runs
/// at most once, `stop()` agrees with what ran, and a callback on a kept
/// sibling runs exactly once.
#[test]
fn after_func_and_stop_vs_cancel_vs_last_drop() {
    watchdog("after_func_and_stop_vs_cancel_vs_last_drop", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let (node, node_cancel) = parent.with_cancel();
            drop(node_cancel);
            let early = register(&node);
            let (sibling, _sc) = parent.with_cancel();
            let sibling_cb = register(&sibling);
            let mut late = None;
            let mut stopped = None;
            race(
                round,
                vec![
                    party(|| {
                        late = Some(register(&node));
                        drop(node);
                    }),
                    party(|| stopped = Some(early.handle.stop())),
                    party(|| cancel.cancel()),
                ],
            );
            let what = format!("round {round}");
            early.assert_settled(&format!("{what}: early callback"), stopped);
            late.expect("registered")
                .assert_settled(&format!("{what}: late callback"), None);
            sibling_cb.assert_ran_once(&format!("{what}: sibling's callback"));
            assert_eq!(sibling.err(), Some(Error::Canceled));
        }
    });
}

/// Callbacks registered on one live node from several threads while its
/// parent is cancelled: every one of them runs exactly once, whether it
/// was registered before the cancel reached the node (the walk runs it) or
/// after (`after_func` runs it at once).
#[test]
fn after_func_registrations_vs_cancel() {
    watchdog("after_func_registrations_vs_cancel", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let (node, _nc) = parent.with_cancel();
            let slots: Vec<Mutex<Vec<Callback>>> = (0..2).map(|_| Mutex::new(Vec::new())).collect();
            let mut parties: Vec<Party<'_>> = slots
                .iter()
                .map(|slot| {
                    let node = &node;
                    party(move || {
                        for _ in 0..3 {
                            slot.lock().unwrap().push(register(node));
                        }
                    })
                })
                .collect();
            parties.push(party(|| cancel.cancel()));
            race(round, parties);
            for (i, cb) in slots
                .into_iter()
                .flat_map(|s| s.into_inner().unwrap())
                .enumerate()
            {
                cb.assert_ran_once(&format!("round {round}, callback {i}"));
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Siblings
// ---------------------------------------------------------------------------

/// Neighbours in the parent's child list: one dropped, one cancelled with a
/// cause of its own, while the parent is cancelled with another. The kept
/// siblings end with the parent's reason; the cancelled one with either
/// reason, shared by its child; the dropped one's value is freed once.
#[test]
fn sibling_drop_vs_sibling_cancel_vs_parent_cancel() {
    watchdog("sibling_drop_vs_sibling_cancel_vs_parent_cancel", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let drops = counter();
            let (first, _c0) = parent.with_cancel();
            let (doomed, doomed_cancel) = parent.with_cancel();
            let doomed_below = doomed.with_value(DropProbe(drops.clone())).with_cancel();
            let doomed_cb = register(&doomed);
            let (cancelled, cancel_sibling) = parent.with_cancel();
            let (cancelled_child, _cc) = cancelled.with_cancel();
            let (last, _c3) = parent.with_cancel();
            race(
                round,
                vec![
                    party(move || drop((doomed, doomed_cancel, doomed_below))),
                    party(move || cancel_sibling.cancel_with_cause(cause("sibling"))),
                    party(|| cancel.cancel_with_cause(cause("parent"))),
                ],
            );
            let what = format!("round {round}");
            assert_eq!(reason(&parent), canceled("parent"), "{what}");
            assert_eq!(reason(&first), canceled("parent"), "{what}: first");
            assert_eq!(reason(&last), canceled("parent"), "{what}: last");
            let theirs = reason(&cancelled);
            assert!(
                theirs == canceled("sibling") || theirs == canceled("parent"),
                "{what}: cancelled sibling has {theirs:?}"
            );
            assert_eq!(reason(&cancelled_child), theirs, "{what}: its child");
            assert_eq!(count(&drops), 1, "{what}: dropped sibling's value");
            doomed_cb.assert_settled(&format!("{what}: dropped sibling's callback"), None);
        }
    });
}

// ---------------------------------------------------------------------------
// Clones dropped at once
// ---------------------------------------------------------------------------

/// Every handle of one node (three `Context` clones, its `Canceller`, a
/// pending `Done`) dropped on five threads at once while its parent is
/// cancelled on a sixth: the node is freed exactly once, by whichever
/// handle went last.
#[test]
fn clones_dropped_on_several_threads_vs_parent_cancel() {
    watchdog("clones_dropped_on_several_threads_vs_parent_cancel", || {
        for round in 0..rounds() {
            let (parent, cancel) = root();
            let drops = counter();
            let (node, node_cancel) = parent.with_value(DropProbe(drops.clone())).with_cancel();
            let cb = register(&node);
            let mut done = node.done();
            assert_eq!(poll_once(&mut done), Poll::Pending);
            let mut parties: Vec<Party<'_>> = vec![
                party(move || drop(node_cancel)),
                party(move || drop(done)),
                party({
                    let c = node.clone();
                    move || drop(c)
                }),
                party({
                    let c = node.clone();
                    move || drop(c)
                }),
            ];
            parties.push(party(move || drop(node)));
            parties.push(party(|| cancel.cancel()));
            race(round, parties);
            assert_eq!(parent.err(), Some(Error::Canceled));
            assert_eq!(count(&drops), 1, "round {round}: freed once");
            cb.assert_settled(&format!("round {round}: callback"), None);
        }
    });
}

/// A wide node's lock contended while its cancel walk holds it: one thread
/// drops half of its children (each last drop takes the parent's lock to
/// leave its list), another derives new children (each link takes it
/// too), and the cancel walks the list under it. Threads that find the
/// lock held spin, then sleep until the holder lets go (a lost wake-up
/// would hang the round: the watchdog fails it). Afterwards every child
/// kept or derived is done with the parent's reason, each dropped value
/// was freed once, and the list is whole (a late child is born done).
#[test]
fn links_and_last_drops_wait_for_a_long_walk() {
    watchdog("links_and_last_drops_wait_for_a_long_walk", || {
        let width = if cfg!(miri) { 12 } else { shrunk(2_000, 100) };
        for round in 0..rounds().div_ceil(10) {
            let (parent, cancel) = root();
            let drops = counter();
            let mut kept = Vec::new();
            let mut dropped = Vec::new();
            for i in 0..width {
                let child = parent.with_value(DropProbe(drops.clone())).with_cancel();
                if i % 2 == 0 {
                    kept.push(child);
                } else {
                    dropped.push(child);
                }
            }
            let derived = Mutex::new(Vec::new());
            let p = parent.clone();
            race(
                round,
                vec![
                    party(move || drop(dropped)),
                    party(|| {
                        let mut derived = derived.lock().unwrap();
                        for _ in 0..width / 2 {
                            derived.push(p.with_cancel());
                        }
                    }),
                    party(|| cancel.cancel_with_cause(cause("wide"))),
                ],
            );
            assert_eq!(count(&drops), width / 2, "round {round}: dropped once");
            for (child, _) in kept.iter().chain(derived.lock().unwrap().iter()) {
                assert_eq!(reason(child), canceled("wide"), "round {round}");
            }
            assert!(parent.with_cancel().0.is_done());
            drop(kept);
            assert_eq!(count(&drops), width, "round {round}: all freed");
        }
    });
}

// ---------------------------------------------------------------------------
// Deriving vs a parent's cancel
// ---------------------------------------------------------------------------

/// Children derived from a node (`with_cancel`, `with_value`, a cancel
/// node below a value, `merge` both ways with a live context,
/// `without_cancel`) while the node's parent is cancelled: once both sides
/// are done, every cancellable one is done with the parent's reason,
/// whether it was born done or reached by the walk; the detached one and
/// the merge partner are not.
#[test]
fn derive_vs_parent_cancel() {
    watchdog("derive_vs_parent_cancel", || {
        for round in 0..rounds() {
            let (grandparent, cancel) = root();
            let (node, _nc) = grandparent.with_cancel();
            let (partner, _pc) = root();
            let mut derived = Vec::new();
            let mut detached = None;
            race(
                round,
                vec![
                    party(|| {
                        derived.push(("with_cancel", node.with_cancel().0));
                        derived.push(("with_value", node.with_value(7u8)));
                        derived.push(("value/with_cancel", node.with_value(7u8).with_cancel().0));
                        derived.push(("merge", node.merge(&partner).0));
                        derived.push(("partner.merge", partner.merge(&node).0));
                        let (c, _) = node.with_cancel();
                        derived.push(("child/merge", c.with_cancel().0.merge(&partner).0));
                        detached = Some(node.without_cancel());
                    }),
                    party(|| cancel.cancel_with_cause(cause("parent"))),
                ],
            );
            for (how, ctx) in &derived {
                assert_eq!(reason(ctx), canceled("parent"), "round {round}: {how}");
            }
            assert_eq!(reason(&partner), None, "round {round}: partner");
            let detached = detached.expect("derived");
            assert_eq!(reason(&detached), None, "round {round}: without_cancel");
            assert_eq!(detached.value::<u8>(), None);
        }
    });
}

// ---------------------------------------------------------------------------
// Two cancels, two causes
// ---------------------------------------------------------------------------

/// Two cancels with different causes race, on the same node (the root of
/// a small tree) or on the root and a node in the middle; a third thread
/// waits on a leaf and reads its reason before and after. One reason wins
/// per node and never changes: `err()` and `cause()` agree on every node,
/// each node has its parent's reason except the middle node cancelled on
/// its own (which has its own or the root's, shared by its subtree), and a
/// merged leaf has the reason of one of its two parents.
#[test]
fn two_cancels_with_different_causes() {
    watchdog("two_cancels_with_different_causes", || {
        for round in 0..rounds() {
            let same_node = round % 2 == 0;
            let (top, cancel_top) = root();
            let (middle, cancel_middle) = top.with_cancel();
            let (leaf, _lc) = middle.with_cancel();
            let (valued_leaf, _vc) = middle.with_value(1u32).with_cancel();
            let (side, _sc) = top.with_cancel();
            let (side_leaf, _slc) = side.with_cancel();
            // A merged leaf: first parent `side_leaf`, second `leaf`.
            let (merged, _mc) = side_leaf.merge(&leaf);
            let cancel_top2 = cancel_top.clone();
            let seen = Mutex::new(Vec::new());
            race(
                round,
                vec![
                    party(|| {
                        let before = reason_racing(&leaf);
                        let err = leaf.wait();
                        let after = reason(&leaf);
                        assert_eq!(after.as_ref().map(|r| r.0), Some(err));
                        if before.is_some() {
                            assert_eq!(before, after, "the reason changed");
                        }
                        assert_eq!(reason(&leaf), after, "the reason changed");
                        seen.lock().unwrap().push(after);
                    }),
                    party(move || cancel_top2.cancel_with_cause(cause("a"))),
                    party(move || {
                        if same_node {
                            cancel_top.cancel_with_cause(cause("b"));
                        } else {
                            cancel_middle.cancel_with_cause(cause("b"));
                        }
                    }),
                ],
            );
            let what = format!("round {round}, same node {same_node}");
            let top_reason = reason(&top);
            if same_node {
                assert!(
                    top_reason == canceled("a") || top_reason == canceled("b"),
                    "{what}: top has {top_reason:?}"
                );
            } else {
                assert_eq!(top_reason, canceled("a"), "{what}");
            }
            let middle_reason = reason(&middle);
            if same_node {
                assert_eq!(middle_reason, top_reason, "{what}: middle");
            } else {
                assert!(
                    middle_reason == canceled("b") || middle_reason == top_reason,
                    "{what}: middle has {middle_reason:?}"
                );
            }
            assert_eq!(reason(&leaf), middle_reason, "{what}: leaf");
            assert_eq!(reason(&valued_leaf), middle_reason, "{what}: valued leaf");
            assert_eq!(reason(&side), top_reason, "{what}: side");
            assert_eq!(reason(&side_leaf), top_reason, "{what}: side leaf");
            let merged_reason = reason(&merged);
            assert!(
                merged_reason == top_reason || merged_reason == middle_reason,
                "{what}: merged leaf has {merged_reason:?}"
            );
            assert_eq!(
                seen.into_inner().unwrap(),
                vec![middle_reason],
                "{what}: waiter"
            );
        }
    });
}
