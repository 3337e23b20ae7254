//! `Context::with_grace`: a child that is done a grace period *after* its
//! parent is done, not with it.
//!
//! A grace node is a cancellable node like any other (its `Canceller`
//! cancels it, its own children link into it, its values are its parent's),
//! except that it has no link parent: it is in no child list, so its
//! parent's walk does not reach it. Instead, below a context that can be
//! done, it registers a callback ([`GraceStart`]) on its parent's nearest
//! cancellable ancestor (the *anchor*), in the list that holds that node's
//! `after_func` callbacks. The anchor's cancel runs it after its walk, like
//! any callback, and it starts the grace:
//!
//! * a zero period cancels the grace node there and then, on the thread
//!   that cancelled the anchor, before that `cancel()` returns;
//! * otherwise a [`DeadlineTimer`] is armed at `now + period`, and cancels
//!   the grace node with the anchor's error and cause when it fires;
//! * if `now + period` overflows, the grace never runs out.
//!
//! If the anchor is already done when the grace node is derived, the
//! callback runs at once, on the deriving thread.
//!
//! The callback reaches the grace node through a [`Backref`], never owning
//! it, so the parent does not keep it alive. The grace node takes its
//! callback out of the anchor's list (in O(1), as `AfterFunc::stop` does)
//! when its own cancel's walk ends or its last handle goes, whichever is
//! first, and its last release revokes the callback's back-reference and a
//! started timer's, and disarms that timer (invariant 4). So a long-lived
//! parent with many short-lived grace children holds memory for the live
//! ones only.
//!
//! Races: the callback decides once between running and being stopped
//! (`PENDING` to `STARTED` or `STOPPED`, as `after_func` slots do). Whatever
//! it does after starting is ordinary: the grace node's state word decides
//! between its own cancel and the one the grace brings (invariant 1), and a
//! timer armed for a node that a cancel finishes meanwhile is disarmed by
//! that cancel or never registered (invariant 5, and `DeadlineTimer::arm`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::callbacks::{self, Callback, PENDING, STARTED, STOPPED};
use super::deadline::DeadlineTimer;
use super::node_ref::{Backref, NodeRef};
use super::walk::{self, Panic};
use super::{Extra, Node, Role};
use crate::context::Context;
use crate::sync::{lock, AtomicU8, AtomicUsize, Mutex, Ordering};

/// What a grace node keeps, in its `Extra`.
pub(super) struct Grace {
    /// How long after its parent is done the node is.
    pub(super) period: Duration,
    /// The callback registered on the anchor; `None` below a context that
    /// is never done, which has nothing to register on.
    start: Option<Arc<GraceStart>>,
}

/// The callback on the anchor's list that starts the grace. One allocation,
/// shared by the anchor's list (while it is there) and the grace node.
struct GraceStart {
    period: Duration,
    /// `PENDING` until it runs (`STARTED`) or the grace node stops it
    /// (`STOPPED`), whichever is first.
    state: AtomicU8,
    /// Its place in the anchor's callback list, as for `after_func`.
    position: AtomicUsize,
    /// The anchor, while the callback is in its list.
    anchor: Backref<Node>,
    /// The grace node; revoked by its last release.
    child: Backref<Node>,
    /// The timer of a started grace with an end, once armed: the grace
    /// node's cancel disarms it, its last release revokes and disarms it.
    timer: Mutex<Option<Arc<DeadlineTimer>>>,
}

/// Derives a child of `parent` that is done `period` after `parent` is.
/// Returns the node's two handles (for the `Context` and the `Canceller`).
pub(crate) fn derive_grace(parent: &Context, period: Duration) -> (NodeRef<Node>, NodeRef<Node>) {
    // The hard stop comes at the latest a grace period after the parent's.
    let deadline = parent.deadline().and_then(|d| d.checked_add(period));
    let anchor = parent.repr.anchor();
    let start = anchor.map(|_| Arc::new(GraceStart::new(period)));
    let extra = Extra {
        deadline: Some(deadline),
        role: Role::Grace(Grace {
            period,
            start: start.clone(),
        }),
    };
    // Not linked into the anchor's child list: the anchor's walk must not
    // finish it (`Node::link_parent` is `None` for it).
    let (node, handle) = Node::new_pair(parent, Some(extra));
    if let (Some(anchor), Some(start)) = (anchor, start) {
        // SAFETY: the node's last release revokes `start.child` (`release`),
        // and `start` is the one in the node's `Extra`.
        unsafe { start.child.set(&node) };
        if let Some(now) = callbacks::add(anchor, start) {
            // The parent is done already: the grace starts now. (A node
            // this new has no callbacks of its own to panic.)
            now.run();
        }
    }
    (node, handle)
}

impl GraceStart {
    fn new(period: Duration) -> GraceStart {
        GraceStart {
            period,
            state: AtomicU8::new(PENDING),
            position: AtomicUsize::new(0),
            anchor: Backref::new(),
            child: Backref::new(),
            timer: Mutex::new(None),
        }
    }

    /// Starts the grace of `child`, whose anchor is done. Returns the first
    /// panic of `child`'s callbacks if it cancelled `child` here.
    fn start(&self, child: &NodeRef<Node>) -> Option<Panic> {
        // The anchor is done: this runs from its walk, or from
        // `derive_grace` having found it done.
        let (err, cause) = child.parent.repr.anchor()?.state.reason()?;
        if self.period.is_zero() {
            return walk::cancel(child, err, cause);
        }
        // An end past what an `Instant` can hold never comes.
        let when = Instant::now().checked_add(self.period)?;
        // Invariant 5: flag, then attach. A node that is already done (by
        // its own canceller, first) needs no timer.
        if child.state.mark_dependent().is_some() {
            return None;
        }
        let timer = Arc::new(DeadlineTimer::new(when, err, cause));
        // SAFETY: the timer goes into `self.timer` below, while we still
        // hold a handle to `child`, and `child`'s last release (`release`)
        // takes it from there and revokes `timer.node`. A cancel of `child`
        // that takes it first (`stop_timer`) revokes it too.
        unsafe { timer.node.set(child) };
        *lock(&self.timer) = Some(Arc::clone(&timer));
        // Registers it, unless a cancel finished `child` since the flag was
        // set: then that cancel's walk visits `child` (the flag) and takes
        // the timer out of `self.timer`, or, if it looked before the timer
        // was put there, `arm` sees `child` done and registers nothing.
        timer.arm(child);
        None
    }

    /// Takes out the timer of a started grace, if any, and disarms it.
    fn stop_timer(&self) {
        let timer = lock(&self.timer).take();
        // Not under `self.timer`'s lock: leaf locks do not nest.
        if let Some(timer) = timer {
            timer.node.revoke();
            timer.disarm();
        }
    }
}

impl Callback for GraceStart {
    fn run(&self) {
        if self
            .state
            .compare_exchange(PENDING, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let Some(child) = self.child.acquire() else {
            // Its last release is under way: nobody can see it any more.
            return;
        };
        let panic = self.start(&child);
        // Dropping `child` may run its last release, which takes locks: no
        // lock is held here (callbacks run after the walk).
        drop(child);
        if let Some(panic) = panic {
            // The anchor's cancel catches it, and resumes it once every
            // other callback has run, as for a callback of its own.
            std::panic::resume_unwind(panic);
        }
    }

    fn stop(&self) -> bool {
        self.state
            .compare_exchange(PENDING, STOPPED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn discard(&self) {
        // The anchor goes away only after the grace node, which owns it,
        // has taken this callback out of its list; forget it all the same.
        self.anchor.revoke();
    }

    fn detach(&self) {
        self.anchor.revoke();
    }

    fn position(&self) -> &AtomicUsize {
        &self.position
    }

    fn node(&self) -> &Backref<Node> {
        &self.anchor
    }
}

impl Node {
    pub(super) fn grace(&self) -> Option<&Grace> {
        self.extra()?.grace()
    }
}

/// Takes a grace node's callback out of its anchor's list, unless it has
/// already run or been stopped: the node is done by itself, or its last
/// handle is going, and the grace must never start.
pub(super) fn leave(node: &Node) {
    let Some(start) = node.grace().and_then(|g| g.start.as_ref()) else {
        return;
    };
    if !start.stop() {
        return;
    }
    // The anchor lives: the node holds its parent, and so the anchor.
    if let Some(anchor) = node.parent.repr.anchor() {
        callbacks::remove(anchor, &**start);
    }
}

/// A grace node's cancel disarms the timer of a started grace.
pub(super) fn disarm(node: &Node) {
    if let Some(start) = node.grace().and_then(|g| g.start.as_ref()) {
        start.stop_timer();
    }
}

/// From a grace node's last release, after [`leave`]: nothing may reach
/// the node any more (invariant 4), neither the callback (which may still
/// be about to run, from a walk that took it from the anchor's list) nor a
/// started timer.
pub(super) fn release(node: &Node) {
    if let Some(start) = node.grace().and_then(|g| g.start.as_ref()) {
        start.child.revoke();
        start.stop_timer();
    }
}
