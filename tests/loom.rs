//! Loom models of the races that matter: every interleaving of the node
//! state machine, the child list locks and event-listener's internals.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom`.
//!
//! A cancellable node's reference count is the crate's own, on loom's
//! atomics, so loom sees every handle's drop: models free nodes on spawned
//! threads, racing the last drop against a parent's cancel, a second
//! parent's cancel and a `Done` being woken, and loom checks that the free
//! comes after every other thread's use of the node.
#![cfg(loom)]

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ctxtree::{Cause, Context, Error};
use loom::thread;

fn cause(msg: &'static str) -> Cause {
    Arc::new(io::Error::other(msg))
}

/// Checks `f` under every interleaving loom explores (bounded so the suite
/// stays within minutes), and asserts that it explored more than one: a model
/// that never branches proves nothing.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let runs = runs.load(Ordering::Relaxed);
    println!("loom model {name}: {runs} interleavings explored");
    assert!(runs > 1, "{name}: loom explored a single interleaving");
}

/// A waiter registering on `done()` while another thread cancels: the
/// waiter must wake (a lost wakeup shows up as a loom deadlock).
#[test]
fn cancel_races_done_registration() {
    model("cancel_races_done_registration", || {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = thread::spawn(move || loom::future::block_on(ctx.done()));
        let canceller = thread::spawn(move || cancel.cancel());
        canceller.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Error::Canceled);
    });
}

/// Deriving a child while the parent is cancelled: the child always ends up
/// done, either drained by the walk or born done.
#[test]
fn cancel_races_derive() {
    model("cancel_races_derive", || {
        let (parent, cancel) = Context::background().with_cancel();
        let p = parent.clone();
        let deriver = thread::spawn(move || {
            let (child, _c) = p.with_value(1u8).with_cancel();
            child
        });
        let canceller = thread::spawn(move || cancel.cancel());
        canceller.join().unwrap();
        let child = deriver.join().unwrap();
        assert_eq!(child.err(), Some(Error::Canceled));
        assert!(parent.is_done());
    });
}

/// A child dropping its last handles while the parent is cancelled: no use
/// after free, no double unlink, and the parent's list ends empty (a later
/// child links and unlinks cleanly).
#[test]
fn cancel_races_child_drop() {
    model("cancel_races_child_drop", || {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_cancel();
        let (grandchild, _g) = child.with_cancel();
        let dropper = thread::spawn(move || {
            drop(child);
            drop(child_cancel);
        });
        let canceller = thread::spawn(move || cancel.cancel());
        dropper.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(grandchild.err(), Some(Error::Canceled));
        let (late, _l) = parent.with_cancel();
        assert!(late.is_done());
    });
}

/// A node's lock is a bit of its state word: one thread links a child
/// (locking and flagging in one CAS) while another unlinks a child's last
/// handle and the parent is cancelled. Whichever way the three meet, the
/// lock excludes (the list stays whole: a later child links and unlinks
/// cleanly), a thread that finds it held sleeps and is woken (a lost wakeup
/// shows up as a loom deadlock), and the new child ends up done.
#[test]
fn link_and_unlink_contend_with_parent_cancel() {
    model("link_and_unlink_contend_with_parent_cancel", || {
        let (parent, cancel) = Context::background().with_cancel();
        let old = parent.with_cancel();
        let p = parent.clone();
        let linker = thread::spawn(move || p.with_cancel());
        let unlinker = thread::spawn(move || drop(old));
        cancel.cancel();
        let (young, _y) = linker.join().unwrap();
        unlinker.join().unwrap();
        assert_eq!(young.err(), Some(Error::Canceled));
        let (late, _l) = parent.with_cancel();
        assert!(late.is_done());
    });
}

/// Two cancels with different causes: exactly one cause wins, and every
/// descendant reports that same one.
#[test]
fn racing_causes_agree() {
    model("racing_causes_agree", || {
        let (root, cancel) = Context::background().with_cancel();
        let (child, _c) = root.with_value(7u8).with_cancel();
        let other = cancel.clone();
        let a = thread::spawn(move || cancel.cancel_with_cause(cause("a")));
        let b = thread::spawn(move || other.cancel_with_cause(cause("b")));
        a.join().unwrap();
        b.join().unwrap();
        let root_cause = root.cause().unwrap().to_string();
        assert!(root_cause == "a" || root_cause == "b");
        assert_eq!(child.cause().unwrap().to_string(), root_cause);
    });
}

/// `after_func` racing `stop()` and the cancel: the callback runs at most
/// once, and `stop()` returns `true` exactly when it did not run.
#[test]
fn after_func_races_stop_and_cancel() {
    model("after_func_races_stop_and_cancel", || {
        let ran = Arc::new(AtomicUsize::new(0));
        let (ctx, cancel) = Context::background().with_cancel();
        let counter = ran.clone();
        let handle = ctx.after_func(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let stopper = thread::spawn(move || handle.stop());
        let canceller = thread::spawn(move || cancel.cancel());
        canceller.join().unwrap();
        let stopped = stopper.join().unwrap();
        let runs = ran.load(Ordering::SeqCst);
        assert!(runs <= 1);
        assert_eq!(stopped, runs == 0);
    });
}

/// A merged child's last handles dropped while its second parent is
/// cancelled: the walk either finds the child's entry gone (or the child
/// past upgrading) or finishes it; no use after free, and once both threads
/// are done nothing keeps the child alive (the value above it is freed
/// exactly once) and both parents' lists are intact.
///
/// The merged child itself is freed on a spawned thread (the dropper, or
/// the canceller if its walk acquired the child last): that drop, which
/// leaves both parents, is the race under test.
#[test]
fn merged_drop_races_other_cancel() {
    model("merged_drop_races_other_cancel", || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (a, _ca) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let (m, cm) = a.with_value(FreeCount(freed.clone())).merge(&b);
        register(&m);
        let dropper = thread::spawn(move || {
            drop(m);
            drop(cm);
        });
        let canceller = thread::spawn(move || cancel_b.cancel());
        dropper.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        assert!(b.is_done());
        assert!(!a.is_done());
        let (late, _l) = a.merge(&b);
        assert_eq!(late.err(), Some(Error::Canceled));
    });
}

/// Both parents of a merged child cancelled at once with different causes:
/// the child takes exactly one, and its descendants see that same one.
#[test]
fn merged_parents_racing_causes_agree() {
    model("merged_parents_racing_causes_agree", || {
        let (a, cancel_a) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let (m, _cm) = a.merge(&b);
        let (child, _c) = m.with_value(7u8).with_cancel();
        let ta = thread::spawn(move || cancel_a.cancel_with_cause(cause("self")));
        let tb = thread::spawn(move || cancel_b.cancel_with_cause(cause("other")));
        ta.join().unwrap();
        tb.join().unwrap();
        let merged_cause = m.cause().unwrap().to_string();
        assert!(merged_cause == "self" || merged_cause == "other");
        assert_eq!(child.cause().unwrap().to_string(), merged_cause);
        assert_eq!(a.cause().unwrap().to_string(), "self");
        assert_eq!(b.cause().unwrap().to_string(), "other");
    });
}

/// Two merged children of one second parent dropped at once: removing one
/// entry moves the other's, whose node may be past upgrading (its own drop
/// under way), so that node's removal must still find its entry. Afterwards
/// the second parent's list takes a third child, which its cancel reaches.
#[test]
fn merged_siblings_dropped_at_once_leave_other_intact() {
    model("merged_siblings_dropped_at_once_leave_other_intact", || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (a, _ca) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let above = a.with_value(FreeCount(freed.clone()));
        let (m1, c1) = above.merge(&b);
        let (m2, c2) = above.merge(&b);
        register(&m1);
        register(&m2);
        drop(above);
        let t1 = thread::spawn(move || drop((m1, c1)));
        let t2 = thread::spawn(move || drop((m2, c2)));
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        let (m3, _c3) = a.merge(&b);
        cancel_b.cancel();
        assert_eq!(m3.err(), Some(Error::Canceled));
        assert!(!a.is_done());
    });
}

/// A merged child that nothing is attached to yet, listened to on one thread
/// while its second parent is cancelled on another: the listen registers it
/// on the second parent, or finds that parent done, or the cancel's walk
/// finds the entry; whichever, the waiter wakes (a lost wakeup shows up as
/// a loom deadlock) with the second parent's error.
#[test]
fn unregistered_merged_listen_races_other_cancel() {
    model("unregistered_merged_listen_races_other_cancel", || {
        let (a, _ca) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let (m, _cm) = a.merge(&b);
        let listened = m.clone();
        let waiter = thread::spawn(move || loom::future::block_on(listened.done()));
        let canceller = thread::spawn(move || cancel_b.cancel_with_cause(cause("other")));
        canceller.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Error::Canceled);
        assert_eq!(m.cause().unwrap().to_string(), "other");
        assert!(!a.is_done());
    });
}

/// A merged child that nothing is attached to yet: its second parent is
/// cancelled on one thread; another reads its cause (which may take the
/// second parent's reason on the spot) and then derives a child (which
/// registers it, or finds the second parent done); meanwhile its own
/// canceller fires. Exactly one reason wins, the reader never sees it
/// change, and the grandchild reports the same one.
#[test]
fn unregistered_merged_observed_while_cancelled_two_ways() {
    model(
        "unregistered_merged_observed_while_cancelled_two_ways",
        || {
            let (a, _ca) = Context::background().with_cancel();
            let (b, cancel_b) = Context::background().with_cancel();
            let (m, cm) = a.merge(&b);
            let observed = m.clone();
            let reader = thread::spawn(move || {
                let seen = observed.cause().map(|c| c.to_string());
                let (child, _c) = observed.with_cancel();
                (seen, child)
            });
            let canceller = thread::spawn(move || cancel_b.cancel_with_cause(cause("other")));
            cm.cancel_with_cause(cause("own"));
            canceller.join().unwrap();
            let (seen, child) = reader.join().unwrap();
            let merged_cause = m.cause().unwrap().to_string();
            assert!(merged_cause == "own" || merged_cause == "other");
            if let Some(seen) = seen {
                assert_eq!(seen, merged_cause);
            }
            assert_eq!(child.cause().unwrap().to_string(), merged_cause);
        },
    );
}

/// A child's last handles dropped on one thread while its parent is
/// cancelled on another, nothing of the child kept on the main thread: the
/// walk finds the child in the list, live or with its count at zero and its
/// last release waiting for the parent's lock; it finishes it or skips it,
/// and the child is freed once, after the walk let go of it. The
/// grandchild, which holds the child, is freed on the dropper's thread too.
#[test]
fn last_drop_races_parent_cancel() {
    model("last_drop_races_parent_cancel", || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_value(FreeCount(freed.clone())).with_cancel();
        let grandchild = child.with_cancel();
        let dropper = thread::spawn(move || {
            drop(child);
            drop(grandchild);
            drop(child_cancel);
        });
        let canceller = thread::spawn(move || cancel.cancel());
        dropper.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        assert!(parent.is_done());
        let (late, _l) = parent.with_cancel();
        assert!(late.is_done());
    });
}

/// A registered merged child's last handle dropped on one thread while its
/// second parent is cancelled on another (its first parent left live),
/// nothing of the child kept on the main thread: the second parent's walk
/// finds it in its merged list or not at all, and the child is freed once.
#[test]
fn merged_last_drop_races_second_parent_cancel() {
    model("merged_last_drop_races_second_parent_cancel", || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (a, _ca) = Context::background().with_cancel();
        let (b, cancel_b) = Context::background().with_cancel();
        let (m, cm) = a.with_value(FreeCount(freed.clone())).merge(&b);
        drop(cm);
        register(&m);
        let dropper = thread::spawn(move || drop(m));
        let canceller = thread::spawn(move || cancel_b.cancel());
        dropper.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        assert!(!a.is_done());
        let (late, _l) = a.merge(&b);
        assert_eq!(late.err(), Some(Error::Canceled));
    });
}

/// A `Done` that is its node's only handle, awaited on one thread while the
/// parent is cancelled on another: the waiter wakes (a lost wakeup is a
/// loom deadlock), and the node is freed when the resolved `Done` is
/// dropped on the waiter's thread, racing the tail of the cancel's walk.
#[test]
fn done_as_last_handle_woken_by_parent_cancel() {
    model("done_as_last_handle_woken_by_parent_cancel", || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (parent, cancel) = Context::background().with_cancel();
        let (child, child_cancel) = parent.with_value(FreeCount(freed.clone())).with_cancel();
        let done = child.done();
        drop((child, child_cancel));
        let waiter = thread::spawn(move || loom::future::block_on(done));
        let canceller = thread::spawn(move || cancel.cancel());
        canceller.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Error::Canceled);
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        assert!(parent.is_done());
    });
}

/// A grace child (zero grace) whose last handles go on one thread while its
/// parent is cancelled on another: the parent's walk takes the child's
/// callback and runs it after the walk, reaching the child through its
/// back-reference, while the child's last release takes the callback off
/// the parent's list and revokes that back-reference. The callback finds
/// the child (and cancels it) or does not, and the child is freed once,
/// on whichever thread held it last.
#[test]
fn grace_last_drop_races_parent_cancel() {
    model("grace_last_drop_races_parent_cancel", || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (parent, cancel) = Context::background().with_cancel();
        let (child, own) = parent
            .with_value(FreeCount(freed.clone()))
            .with_grace(Duration::ZERO);
        let dropper = thread::spawn(move || drop((child, own)));
        let canceller = thread::spawn(move || cancel.cancel());
        dropper.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1);
        assert!(parent.is_done());
        let (late, _l) = parent.with_grace(Duration::ZERO);
        assert!(late.is_done());
    });
}

/// A zero-grace child cancelled by its own canceller on one thread while
/// its parent is cancelled on another, with different causes: exactly one
/// wins, and the child's own child reports the same one.
#[test]
fn grace_own_cancel_races_parent_cancel() {
    model("grace_own_cancel_races_parent_cancel", || {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, own) = parent.with_grace(Duration::ZERO);
        let (grandchild, _g) = child.with_cancel();
        let a = thread::spawn(move || own.cancel_with_cause(cause("own")));
        let b = thread::spawn(move || cancel.cancel_with_cause(cause("parent")));
        a.join().unwrap();
        b.join().unwrap();
        let won = child.cause().unwrap().to_string();
        assert!(won == "own" || won == "parent");
        assert_eq!(grandchild.cause().unwrap().to_string(), won);
    });
}

/// A grace with an end (an hour; loom's stand-in timer never fires it):
/// the parent's cancel starts it on one thread, arming the child's timer
/// (flag, then store it, then register it), while the child's own cancel
/// runs on another and disarms whatever it finds. The child keeps its own
/// reason, whichever came first.
#[test]
fn grace_timer_armed_races_own_cancel() {
    model("grace_timer_armed_races_own_cancel", || {
        let (parent, cancel) = Context::background().with_cancel();
        let (child, own) = parent.with_grace(Duration::from_secs(3600));
        let ender = thread::spawn(move || own.cancel_with_cause(cause("own")));
        let canceller = thread::spawn(move || cancel.cancel());
        ender.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(child.cause().unwrap().to_string(), "own");
    });
}

/// As above, but the child's last handles go instead: its last release
/// revokes and disarms the timer the other thread is arming (or takes the
/// callback off the list first, or makes the callback find it gone). The
/// child is freed once, on either thread.
#[test]
fn grace_timer_armed_races_last_drop() {
    model("grace_timer_armed_races_last_drop", || {
        let freed = Arc::new(AtomicUsize::new(0));
        let (parent, cancel) = Context::background().with_cancel();
        let pair = parent
            .with_value(FreeCount(freed.clone()))
            .with_grace(Duration::from_secs(3600));
        let dropper = thread::spawn(move || drop(pair));
        let canceller = thread::spawn(move || cancel.cancel());
        dropper.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1);
    });
}

/// Makes a merged child register on its second parent (merging registers
/// lazily, when something is first attached): a child, linked and dropped.
fn register(merged: &Context) {
    drop(merged.with_cancel());
}

/// Counts its drops: hung above a merged child, it tells when that child
/// has been freed.
struct FreeCount(Arc<AtomicUsize>);

impl Drop for FreeCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
