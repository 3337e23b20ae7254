//! `after_func` callbacks: one slot per callback, shared by the node that
//! will run it and the handle that can stop it; and what a node keeps of
//! them. A grace node's callback (`grace.rs`) sits in the same list.

use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use super::list::List;
use super::merge::{self, MergedLink};
use super::node_ref::{Backref, NodeRef};
use super::Node;
use crate::sync::{lock, AtomicU8, AtomicUsize, Mutex, Ordering};

/// A callback's life: it runs or is stopped, whichever comes first, once.
pub(super) const PENDING: u8 = 0;
pub(super) const STARTED: u8 = 1;
pub(super) const STOPPED: u8 = 2;

/// What a node knows of a registered callback.
pub(crate) trait Callback: Send + Sync {
    /// Runs the callback unless it was stopped or already ran.
    fn run(&self);
    /// Stops it if it has not started; `true` if this call stopped it.
    fn stop(&self) -> bool;
    /// Drops the closure without running it: its node is going away. A
    /// later `stop()` still returns `true`, since the callback never ran.
    /// Also forgets the node, as [`detach`](Callback::detach) does.
    fn discard(&self);
    /// Forgets the node: the callback has left its list for good.
    fn detach(&self);
    /// Where the callback sits in its node's list, kept exact under that
    /// node's lock so that removing it is O(1).
    fn position(&self) -> &AtomicUsize;
    /// The node whose list holds the callback, while it does.
    fn node(&self) -> &Backref<Node>;
}

/// One allocation per callback: the state that decides run-versus-stop,
/// the way back to the node, and the closure itself.
struct Slot<F> {
    state: AtomicU8,
    position: AtomicUsize,
    node: Backref<Node>,
    f: Mutex<Option<F>>,
}

impl<F: FnOnce() + Send + 'static> Callback for Slot<F> {
    fn run(&self) {
        if self
            .state
            .compare_exchange(PENDING, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Take it out first: the closure runs with no lock held.
            let f = lock(&self.f).take();
            if let Some(f) = f {
                f();
            }
        }
    }

    fn stop(&self) -> bool {
        let stopped = self
            .state
            .compare_exchange(PENDING, STOPPED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if stopped {
            let f = lock(&self.f).take();
            drop(f);
        }
        stopped
    }

    fn discard(&self) {
        self.node.revoke();
        let f = lock(&self.f).take();
        drop(f);
    }

    fn detach(&self) {
        self.node.revoke();
    }

    fn position(&self) -> &AtomicUsize {
        &self.position
    }

    fn node(&self) -> &Backref<Node> {
        &self.node
    }
}

/// What is attached to a node besides its children, under its lock; made
/// the first time something is.
pub(super) struct Attached {
    /// `after_func` callbacks, taken by the winner of the node's finish.
    /// Dropped by hand (`Drop for Attached`): most nodes never have one,
    /// and an empty list then costs no call to drop.
    pub(super) callbacks: ManuallyDrop<Vec<Arc<dyn Callback>>>,
    /// Merged nodes whose second parent this node is, registered
    /// (`merge.rs`). They stay until they leave (invariant 2).
    pub(super) merged: List<MergedLink>,
}

impl Attached {
    pub(super) fn new() -> Attached {
        Attached {
            callbacks: ManuallyDrop::new(Vec::new()),
            merged: List::new(),
        }
    }

    /// The node is going away: its callbacks will never run.
    pub(super) fn discard(mut self) {
        // Invariant 3: every merged node held this one, so none is left.
        debug_assert!(self.merged.is_empty());
        for callback in std::mem::take(&mut *self.callbacks) {
            callback.discard();
        }
    }
}

impl Drop for Attached {
    #[inline]
    fn drop(&mut self) {
        // An empty list owns nothing: left undropped, it leaks nothing.
        if self.callbacks.capacity() != 0 {
            drop(std::mem::take(&mut *self.callbacks));
        }
    }
}

/// Registers `f` to run when `node` is done (never, for `None`: a context
/// that cannot be done); runs it now if the node already is. Returns the
/// slot, for the handle.
pub(crate) fn register_callback<F: FnOnce() + Send + 'static>(
    node: Option<&NodeRef<Node>>,
    f: F,
) -> Arc<dyn Callback> {
    let slot: Arc<dyn Callback> = Arc::new(Slot {
        state: AtomicU8::new(PENDING),
        position: AtomicUsize::new(0),
        node: Backref::new(),
        f: Mutex::new(Some(f)),
    });
    match node {
        // A context that is never done: `f` can never run.
        None => slot.discard(),
        Some(node) => {
            if let Some(slot) = add(node, slot.clone()) {
                slot.run();
            }
        }
    }
    slot
}

/// Puts `callback` in `node`'s list, or gives it back if the node is done.
pub(super) fn add(node: &NodeRef<Node>, callback: Arc<dyn Callback>) -> Option<Arc<dyn Callback>> {
    // Invariant 6: a merged node registers before anything attaches.
    merge::join_second_parent(node);
    // Invariant 5: flag (as it locks), then attach, under the node's lock.
    let (_node, err) = node.state.lock_marking();
    if err.is_some() {
        return Some(callback);
    }
    // SAFETY: the callback goes into this node's list just below, before
    // we let go of the node's lock and while our handle keeps the node
    // from its last release, and stays there until it leaves it: the
    // node's last release discards (revokes) every callback still there, a
    // walk that takes the list detaches each while it holds the node, and
    // `stop_callback` detaches the one it removes. (Set before the list's
    // lock is taken: leaf locks do not nest.)
    unsafe { callback.node().set(node) };
    let mut attached = lock(node.attached());
    let list: &mut Vec<_> = &mut attached.callbacks;
    // Relaxed: positions are only read and written under this lock.
    callback.position().store(list.len(), Ordering::Relaxed);
    list.push(callback);
    None
}

/// `AfterFunc::stop`: stops the callback and, if that worked, takes it out
/// of its node's list, so that registering and stopping in a loop does not
/// grow a long-lived node.
pub(crate) fn stop_callback(callback: &Arc<dyn Callback>) -> bool {
    let stopped = callback.stop();
    if stopped {
        if let Some(node) = callback.node().acquire() {
            remove(&node, &**callback);
        }
        // `node`, dropped here, may have been the last handle: no lock held.
    }
    stopped
}

/// Removes `callback` from `node`'s list if it is still there, in O(1).
pub(super) fn remove(node: &Node, callback: &dyn Callback) {
    let same = |c: &Arc<dyn Callback>| {
        NonNull::from(&**c).cast::<()>() == NonNull::from(callback).cast::<()>()
    };
    let removed = {
        let _node = node.state.lock();
        let Some(attached) = node.attached_if_any() else {
            return;
        };
        let mut attached = lock(attached);
        let list: &mut Vec<_> = &mut attached.callbacks;
        // Positions are exact for every callback in the list, so a callback
        // not at its position is not in the list (a walk took it).
        let at = callback.position().load(Ordering::Relaxed);
        if !list.get(at).is_some_and(same) {
            return;
        }
        let removed = list.swap_remove(at);
        if let Some(moved) = list.get(at) {
            moved.position().store(at, Ordering::Relaxed);
        }
        // A node that once had many callbacks gives the memory back.
        if list.capacity() > 16 && list.len() < list.capacity() / 4 {
            list.shrink_to(list.capacity() / 2);
        }
        removed
    };
    // It left the list: it must not point at the node any more (we hold a
    // handle, so the node is still there).
    removed.detach();
}
