//! The tree: cancellable nodes, value nodes, detached nodes, and the walk
//! that cancels a subtree.
//!
//! # Invariants
//!
//! 1. A node's state (`StateCell`) goes from live to done at most once, by one
//!    compare-and-swap; the winner of that CAS, and only it, walks the node's
//!    children and takes its callbacks.
//! 2. A cancellable node is linked into the child list of its *link parent*
//!    (the nearest cancellable ancestor, through value nodes) if and only if
//!    the link parent was live when the node was derived, and it stays linked
//!    until the link parent drains it (cancel), it unlinks itself (own cancel
//!    or drop). See `raw.rs` L1/L2 for what the list relies on.
//! 3. Every node holds a strong reference to the context it was derived from,
//!    so ancestors outlive descendants; a parent holds only weak references
//!    to its children, so a child lives exactly as long as its handles.
//! 4. Before a child is linked, a callback registered or a timer armed, the
//!    node's `DEPENDENTS` flag is set by a read-modify-write of its state word
//!    (under its lock, for children and callbacks); the canceller's CAS on
//!    the same word reports the flag. So either the attacher sees the node
//!    done (and attaches nothing: a child is born done, a callback runs at
//!    once) or the canceller sees the flag and visits the node under its
//!    lock, where it finds what was attached. A node without the flag is
//!    finished by the CAS alone, with no lock.
//!
//! # Deadlock safety
//!
//! There is one kind of lock per node (`inner`) plus a leaf lock per deadline
//! timer. At most one node lock is held at a time, never while user code
//! runs (callbacks, value drops, wakers), and never while dropping an
//! `Arc<CancelNode>` (whose `Drop` takes its link parent's lock). Callbacks run
//! after the whole walk, with no lock held, so a callback may cancel, derive
//! or drop anything in the tree.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Poll, Wake, Waker};
use std::time::Instant;

use event_listener::Event;

use crate::after_func::Callback;
use crate::context::Context;
use crate::drop_chain::release;
use crate::error::{Cause, Error};
use crate::merge::MergeLink;
use crate::raw::{ChildList, Finish, Links, StateCell};
use crate::sync::{get_mut, lock, Mutex, Ordering, Timer};

/// A panic caught in a callback, to be resumed by the thread that cancelled.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// What a `Context` points at. The roots need no allocation.
#[derive(Clone)]
pub(crate) enum Repr {
    Background,
    Todo,
    Cancel(Arc<CancelNode>),
    Value(Arc<ValueNode>),
    Detached(Arc<DetachedNode>),
}

impl Repr {
    /// The nearest cancellable node at or above this one, if any.
    #[inline]
    pub(crate) fn anchor(&self) -> Option<&Arc<CancelNode>> {
        match self {
            Repr::Cancel(node) => Some(node),
            Repr::Value(node) => node.anchor.as_ref(),
            Repr::Background | Repr::Todo | Repr::Detached(_) => None,
        }
    }

    /// The context this one was derived from; `None` for the roots.
    pub(crate) fn parent(&self) -> Option<&Context> {
        match self {
            Repr::Background | Repr::Todo => None,
            Repr::Cancel(node) => node.parent.as_ref(),
            Repr::Value(node) => node.parent.as_ref(),
            Repr::Detached(node) => node.parent.as_ref(),
        }
    }
}

/// A node that can be cancelled: by its `Canceller`, its deadline, or its
/// link parent.
pub(crate) struct CancelNode {
    parent: Option<Context>,
    pub(crate) state: StateCell,
    /// Notified once, with every listener, when the node becomes done.
    pub(crate) event: Event,
    /// This node's place in its link parent's list (invariant 2).
    links: Links,
    inner: Mutex<Inner>,
    /// The earliest deadline on the path to the root.
    deadline: Option<Instant>,
    /// What only some nodes need: an own deadline, or a second parent.
    pub(crate) extra: Extra,
}

/// The parts of a cancellable node that only deadline and merged nodes have.
pub(crate) enum Extra {
    None,
    /// An own deadline, earlier than the parent's.
    Deadline(Arc<DeadlineTimer>),
    /// A second parent (`Context::merge`).
    Merge(Box<MergeLink>),
    /// A second parent that is a root, which can never be done: nothing to
    /// keep but its name, so no allocation.
    MergeRoot(&'static str),
}

struct Inner {
    children: ChildList,
    callbacks: Vec<Arc<dyn Callback>>,
}

/// A context that carries one value and no cancellation state of its own.
pub(crate) struct ValueNode<V: ?Sized = dyn Any + Send + Sync> {
    parent: Option<Context>,
    anchor: Option<Arc<CancelNode>>,
    pub(crate) type_name: &'static str,
    pub(crate) value: V,
}

/// `without_cancel()`: keeps the parent for its values, nothing else.
pub(crate) struct DetachedNode {
    parent: Option<Context>,
}

/// A deadline, and the `async-io` timer that enforces it. It is its own
/// waker, so the reactor cancels the node with nobody polling; it holds the
/// node weakly, so a pending timer never keeps a dropped node alive.
pub(crate) struct DeadlineTimer {
    node: Weak<CancelNode>,
    pub(crate) when: Instant,
    cause: Option<Cause>,
    timer: Mutex<Option<Timer>>,
}

/// The work list of one cancellation: nodes still to finish, and the
/// callbacks to run once every node is done.
struct Walk {
    stack: Vec<(Arc<CancelNode>, Finish)>,
    /// Finished nodes with waiters, notified after the walk.
    listened: Vec<Arc<CancelNode>>,
    callbacks: Vec<Arc<dyn Callback>>,
}

/// Derives a cancellable child of `parent`, with its own deadline if `own`
/// is earlier than the parent's.
pub(crate) fn derive_cancel(
    parent: &Context,
    own: Option<(Instant, Option<Cause>)>,
) -> Arc<CancelNode> {
    let parent_deadline = parent.deadline();
    let own = own.filter(|(when, _)| parent_deadline.is_none_or(|p| *when < p));
    let node = match own {
        None => Arc::new(new_node(parent, parent_deadline, Extra::None)),
        Some((when, cause)) => Arc::new_cyclic(|weak| {
            let timer = Arc::new(DeadlineTimer {
                node: weak.clone(),
                when,
                cause,
                timer: Mutex::new(None),
            });
            new_node(parent, Some(when), Extra::Deadline(timer))
        }),
    };
    link(parent, &node);
    if let Extra::Deadline(timer) = &node.extra {
        if node.state.mark_dependent().is_none() {
            timer.arm(&node);
        }
    }
    node
}

/// A live node below `parent`, not yet linked.
pub(crate) fn new_node(parent: &Context, deadline: Option<Instant>, extra: Extra) -> CancelNode {
    CancelNode {
        parent: Some(parent.clone()),
        state: StateCell::new(),
        event: Event::new(),
        links: Links::new(),
        inner: Mutex::new(Inner {
            children: ChildList::new(),
            callbacks: Vec::new(),
        }),
        deadline,
        extra,
    }
}

/// Links a new `node` into its link parent's list, or makes it done at once
/// if the link parent already is.
pub(crate) fn link(parent: &Context, node: &Arc<CancelNode>) {
    if let Some(anchor) = parent.repr.anchor() {
        // Invariant 4: check and link under the link parent's lock.
        let mut inner = lock(&anchor.inner);
        match anchor.state.mark_dependent() {
            None => inner.children.push(node),
            Some(err) => {
                drop(inner);
                node.state.finish(err, anchor.state.given_cause());
            }
        }
    }
}

/// Derives a value node below `parent`.
pub(crate) fn derive_value<T: Send + Sync + 'static>(parent: &Context, value: T) -> Arc<ValueNode> {
    Arc::new(ValueNode {
        parent: Some(parent.clone()),
        anchor: parent.repr.anchor().cloned(),
        type_name: std::any::type_name::<T>(),
        value,
    })
}

/// Derives a node that keeps `parent`'s values and none of its cancellation.
pub(crate) fn derive_detached(parent: &Context) -> Arc<DetachedNode> {
    Arc::new(DetachedNode {
        parent: Some(parent.clone()),
    })
}

impl CancelNode {
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn links(&self) -> &Links {
        &self.links
    }

    fn link_parent(&self) -> Option<&Arc<CancelNode>> {
        self.parent.as_ref()?.repr.anchor()
    }

    /// Cancels this node and its subtree with `err` and `cause`, unless it is
    /// already done (then returns at once: invariant 1). Iterative, so depth
    /// costs heap, not stack. Returns the first panic of a callback.
    pub(crate) fn cancel(self: &Arc<Self>, err: Error, cause: Option<Cause>) -> Option<Panic> {
        let first = self.state.finish(err, cause.clone())?;
        let mut walk = Walk {
            stack: Vec::new(),
            callbacks: Vec::new(),
            listened: Vec::new(),
        };
        self.visit(first, err, &cause, &mut walk);
        // A node cancelled on its own leaves its parent's list now, as in Go,
        // so a long-lived parent does not keep a list of dead children.
        if let Some(link_parent) = self.link_parent() {
            lock(&link_parent.inner).children.unlink(self);
        }
        while let Some((child, finish)) = walk.stack.pop() {
            child.visit(finish, err, &cause, &mut walk);
            if finish.listened {
                walk.listened.push(child);
            }
            // Otherwise dropping `child` may run its `Drop`, which locks this
            // walk's nodes; we hold no lock here.
        }
        // Wake the waiters once the whole subtree is done, so that a parked
        // waiter woken by this cancel finds it done. (A thread that checks
        // mid-walk can still see a node done before its descendants, as in
        // Go; `cancel()` itself returns only after all of them.)
        if first.listened {
            self.event.notify(usize::MAX);
        }
        for node in walk.listened.drain(..) {
            node.event.notify(usize::MAX);
        }
        run_callbacks(walk.callbacks)
    }

    /// The winner's work on one node it finished (invariant 1): finish its
    /// children, take its callbacks, stop its timer. A node with nothing
    /// attached (no `DEPENDENTS` flag) needs no lock. Its waiters are woken
    /// by the caller once the whole walk is over.
    fn visit(&self, finish: Finish, err: Error, cause: &Option<Cause>, walk: &mut Walk) {
        if finish.dependents {
            {
                let mut inner = lock(&self.inner);
                inner.children.drain_into(err, cause, &mut walk.stack);
                walk.callbacks.append(&mut inner.callbacks);
            }
            if let Extra::Deadline(timer) = &self.extra {
                timer.disarm();
            }
        }
    }

    /// Registers `callback` to run when the node is done. Returns it back if
    /// the node is already done, for the caller to run at once.
    pub(crate) fn add_callback(&self, callback: Arc<dyn Callback>) -> Option<Arc<dyn Callback>> {
        let mut inner = lock(&self.inner);
        // Under the lock: a canceller marks the state before draining, so a
        // callback pushed here while live is always taken (invariant 4).
        if self.state.mark_dependent().is_some() {
            return Some(callback);
        }
        // Relaxed: the position is only read and written under this lock.
        callback
            .position()
            .store(inner.callbacks.len(), Ordering::Relaxed);
        inner.callbacks.push(callback);
        None
    }

    /// Forgets a stopped callback, so that registering and stopping in a loop
    /// does not grow a long-lived node.
    pub(crate) fn remove_callback(&self, callback: &Arc<dyn Callback>) {
        let removed = {
            let mut inner = lock(&self.inner);
            let callbacks = &mut inner.callbacks;
            let at = callback.position().load(Ordering::Relaxed);
            // Not there if a cancel has already taken the list.
            let here = callbacks
                .get(at)
                .is_some_and(|c| Arc::as_ptr(c) as *const () == Arc::as_ptr(callback) as *const ());
            if here {
                let removed = callbacks.swap_remove(at);
                if let Some(moved) = callbacks.get(at) {
                    moved.position().store(at, Ordering::Relaxed);
                }
                // A parent that once had many callbacks (merged children)
                // gives the memory back as they go.
                if callbacks.capacity() > 16 && callbacks.len() < callbacks.capacity() / 4 {
                    callbacks.shrink_to(callbacks.capacity() / 2);
                }
                Some(removed)
            } else {
                None
            }
        };
        drop(removed);
    }
}

fn run_callbacks(callbacks: Vec<Arc<dyn Callback>>) -> Option<Panic> {
    let mut first = None;
    for callback in callbacks {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback.run()));
        if let Err(panic) = result {
            first.get_or_insert(panic);
        }
    }
    first
}

impl Drop for CancelNode {
    fn drop(&mut self) {
        // Invariant 2: leave the link parent's list before any field goes.
        if let Some(link_parent) = self.link_parent() {
            lock(&link_parent.inner).children.unlink(self);
        }
        // `&mut self`: nobody else can reach the node, so no lock.
        let inner = get_mut(&mut self.inner);
        // Invariant 3: every child holds this node alive, so none is left.
        debug_assert!(inner.children.is_empty());
        let callbacks = std::mem::take(&mut inner.callbacks);
        for callback in callbacks {
            callback.discard();
        }
        match &self.extra {
            Extra::None => {}
            Extra::Deadline(timer) => timer.disarm(),
            // Leave the second parent at once too: no callback stays there.
            Extra::Merge(link) => link.unregister(),
            Extra::MergeRoot(_) => {}
        }
        if let Some(parent) = self.parent.take() {
            release(parent);
        }
    }
}

impl<V: ?Sized> Drop for ValueNode<V> {
    fn drop(&mut self) {
        // Not the last reference to the anchor: `parent` still holds it.
        self.anchor = None;
        if let Some(parent) = self.parent.take() {
            release(parent);
        }
    }
}

impl Drop for DetachedNode {
    fn drop(&mut self) {
        if let Some(parent) = self.parent.take() {
            release(parent);
        }
    }
}

impl DeadlineTimer {
    /// Registers the timer with the reactor, or cancels now if the deadline
    /// has already passed.
    fn arm(self: &Arc<Self>, node: &CancelNode) {
        let mut slot = lock(&self.timer);
        // A cancel that raced us has already disarmed (under this lock,
        // after its CAS): then there is nothing to register.
        if node.state.err().is_some() {
            return;
        }
        let mut timer = Timer::at(self.when);
        let waker = Waker::from(Arc::clone(self));
        let mut cx = std::task::Context::from_waker(&waker);
        match Pin::new(&mut timer).poll(&mut cx) {
            Poll::Pending => *slot = Some(timer),
            Poll::Ready(_) => {
                drop(slot);
                self.expire();
            }
        }
    }

    /// Deregisters the timer from the reactor (dropping an `async_io::Timer`
    /// does that) and breaks the timer → waker → self cycle.
    // Under loom the stand-in timer has no `Drop`; the explicit drop is for
    // async-io's, outside our lock.
    #[cfg_attr(loom, allow(clippy::drop_non_drop))]
    fn disarm(&self) {
        let timer = lock(&self.timer).take();
        drop(timer);
    }

    fn expire(&self) {
        if let Some(node) = self.node.upgrade() {
            // On the reactor's thread there is nobody to resume a callback's
            // panic to; the panic hook has already reported it.
            drop(node.cancel(Error::DeadlineExceeded, self.cause.clone()));
        }
    }
}

impl Wake for DeadlineTimer {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if Instant::now() >= self.when {
            self.expire();
            return;
        }
        // Woken early (the reactor never does this, but a waker may be
        // woken by anyone): poll again to stay registered.
        let mut slot = lock(&self.timer);
        if let Some(timer) = slot.as_mut() {
            let waker = Waker::from(Arc::clone(self));
            let mut cx = std::task::Context::from_waker(&waker);
            if Pin::new(timer).poll(&mut cx).is_ready() {
                drop(slot);
                self.expire();
            }
        }
    }
}
