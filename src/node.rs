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
//! 3. Every node holds a strong reference to the context it was derived from
//!    (a merged node to both parents), so ancestors outlive descendants; a
//!    parent holds only weak references to its children (a second parent to
//!    its merged children, in its `on_done` list), so a child lives exactly
//!    as long as its handles.
//! 4. Before a child is linked, a callback or merged node registered or a
//!    timer armed, the node's `DEPENDENTS` flag is set by a read-modify-write
//!    of its state word (under its lock, for all but the timer); the
//!    canceller's CAS on the same word reports the flag. So either the
//!    attacher sees the node done (and attaches nothing: a child or merged
//!    node is born done, a callback runs at once) or the canceller sees the
//!    flag and visits the node under its lock, where it finds what was
//!    attached. A node without the flag is finished by the CAS alone, with
//!    no lock.
//! 5. A merged node registers on its second parent only when something is
//!    first attached to it, and until then reads that parent's state when
//!    its own is asked for; whoever finishes it prefers the second parent's
//!    reason if that parent is done. `merge.rs` states the rules and why
//!    they keep one reason per node.
//!
//! # Deadlock safety
//!
//! There is one kind of lock per node (`inner`) plus a leaf lock per deadline
//! timer. At most one node lock is held at a time, never while user code
//! runs (callbacks, value drops, wakers), and never while dropping an
//! `Arc<CancelNode>` (whose `Drop` takes its link parent's lock, then, for a
//! merged node, its second parent's, one after the other; a merged node
//! joining its second parent takes that lock and lets it go before it takes
//! its own). Callbacks run after the whole walk, with no lock held, so a
//! callback may cancel, derive or drop anything in the tree.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::sync::{Arc, Weak};
use std::task::{Poll, Wake, Waker};
use std::time::Instant;

use event_listener::Event;

use crate::after_func::Callback;
use crate::context::Context;
use crate::drop_chain::release;
use crate::error::{Cause, Error};
use crate::merge::{MergeLink, UNREGISTERED};
use crate::raw::{ChildList, Finish, Links, StateCell};
use crate::sync::{get_mut, lock, AtomicUsize, Mutex, MutexGuard, Ordering, Timer};

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
    /// A second parent (`Context::merge`), inline: merging allocates
    /// nothing beyond the node.
    Merge(MergeLink),
}

struct Inner {
    children: ChildList,
    on_done: Vec<OnDone>,
}

/// What a node must do for others when it is done, besides finishing its
/// children.
pub(crate) enum OnDone {
    /// Run an `after_func` callback.
    Func(Arc<dyn Callback>),
    /// Finish a merged node whose second parent this node is, and which
    /// has registered here (invariant 5), as part of the same walk. Weak,
    /// like the child list (invariant 3): the merged node holds this node,
    /// never the other way round.
    Merged(Weak<CancelNode>),
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
    let own = own.filter(|(when, _)| parent_deadline.map_or(true, |p| *when < p));
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
        state: StateCell::new(matches!(&extra, Extra::Merge(link) if link.second().is_some())),
        event: Event::new(),
        links: Links::new(),
        inner: Mutex::new(Inner {
            children: ChildList::new(),
            on_done: Vec::new(),
        }),
        deadline,
        extra,
    }
}

/// Links a new `node` into its link parent's list, or makes it done at once
/// if the link parent already is.
pub(crate) fn link(parent: &Context, node: &Arc<CancelNode>) {
    if let Some(anchor) = parent.repr.anchor() {
        // Invariant 5: a merged link parent joins its second parent first.
        anchor.join_second_parent();
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

    /// Why the node is done, or `None` while it is live. One load, except
    /// for a merged node that is live: that one also looks at its second
    /// parent (invariant 5).
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        self.state.err_or(|| self.pull_second_parent())
    }

    /// `err().is_some()`, as cheap.
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.state.is_done_or(|| self.pull_second_parent())
    }

    /// A live merged node whose second parent is done takes that parent's
    /// reason now, if nothing is attached to it (invariant 5); otherwise the
    /// second parent's walk finishes it, as it does when merging is eager.
    #[inline(never)]
    fn pull_second_parent(&self) -> Option<Error> {
        let (err, cause) = self.second_reason()?;
        self.state.finish_bare(err, cause);
        self.state.err()
    }

    /// The second parent's error and cause, if this is a merged node whose
    /// second parent is done.
    fn second_reason(&self) -> Option<(Error, Option<Cause>)> {
        let Extra::Merge(link) = &self.extra else {
            return None;
        };
        let second = link.second()?;
        let err = second.state.err()?;
        Some((err, second.state.given_cause()))
    }

    /// Finishes this node as a child in its link parent's walk, with that
    /// walk's reason, except that a bare merged node whose second parent is
    /// already done takes the second parent's reason (invariant 5). Only a
    /// bare one: a node with a subtree is visited with the walk's reason,
    /// which its descendants must share.
    pub(crate) fn finish_as_child(&self, err: Error, cause: &Option<Cause>) -> Option<Finish> {
        if let Some((second_err, second_cause)) = self.second_reason() {
            if self.state.finish_bare(second_err, second_cause) {
                return Some(Finish::LEAF);
            }
        }
        self.state.finish(err, cause.clone())
    }

    /// Records that a listener is registered, joining the second parent
    /// first if this is a merged node; returns the error if the node is
    /// already done, in which case that listener need not wait.
    pub(crate) fn mark_listened(self: &Arc<Self>) -> Option<Error> {
        self.join_second_parent();
        self.state.mark_listened()
    }

    /// Invariant 5: before anything is attached to a merged node (a child,
    /// a callback, a listener, a merged node of its own), it registers on
    /// its second parent, or, if that parent is done, takes its reason.
    /// Cheap when there is nothing to do: a tag check, or a load.
    #[inline]
    pub(crate) fn join_second_parent(self: &Arc<Self>) {
        if let Extra::Merge(link) = &self.extra {
            if let Some(second) = link.second() {
                if !link.is_registered() && self.state.err().is_none() {
                    self.register_on(second, link);
                }
            }
        }
    }

    #[inline(never)]
    fn register_on(self: &Arc<Self>, second: &Arc<CancelNode>, link: &MergeLink) {
        if let Some(err) = second.add_merged(self, &link.position) {
            // Done: nothing was registered; the node takes its reason,
            // unless something came first. Nothing can be attached to the
            // node yet (it is not registered, and attachers register first),
            // so a bare finish is all it needs.
            self.state.finish_bare(err, second.state.given_cause());
        }
    }

    /// Cancels this node and its subtree with `err` and `cause`, unless it is
    /// already done (then returns at once: invariant 1). Iterative, so depth
    /// costs heap, not stack. Returns the first panic of a callback.
    pub(crate) fn cancel(self: &Arc<Self>, err: Error, cause: Option<Cause>) -> Option<Panic> {
        // Invariant 5: a second parent seen done was done first.
        let (err, cause) = self.second_reason().unwrap_or((err, cause));
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
            let on_done = {
                let mut inner = lock(&self.inner);
                inner.children.drain_into(err, cause, &mut walk.stack);
                std::mem::take(&mut inner.on_done)
            };
            for entry in on_done {
                match entry {
                    OnDone::Func(callback) => walk.callbacks.push(callback),
                    // A merged node is a child by a second path: it is
                    // finished in this walk, with this walk's reason, unless
                    // its first parent or its own canceller came first.
                    OnDone::Merged(merged) => {
                        if let Some(node) = merged.upgrade() {
                            if let Some(finish) = node.state.finish(err, cause.clone()) {
                                walk.stack.push((node, finish));
                            }
                        }
                    }
                }
            }
            if let Extra::Deadline(timer) = &self.extra {
                timer.disarm();
            }
        }
    }

    /// Registers `callback` to run when the node is done. Returns it back if
    /// the node is already done, for the caller to run at once.
    pub(crate) fn add_callback(
        self: &Arc<Self>,
        callback: Arc<dyn Callback>,
    ) -> Option<Arc<dyn Callback>> {
        let Ok(mut inner) = self.lock_if_live() else {
            return Some(callback);
        };
        // Relaxed: positions are only read and written under this lock.
        callback
            .position()
            .store(inner.on_done.len(), Ordering::Relaxed);
        inner.on_done.push(OnDone::Func(callback));
        None
    }

    /// Registers `merged`, a node whose second parent this is, to be finished
    /// with this node, unless it already is; its place in the list goes to
    /// `position`. Returns this node's error if it is already done: then
    /// nothing is registered.
    pub(crate) fn add_merged(
        self: &Arc<Self>,
        merged: &Arc<CancelNode>,
        position: &AtomicUsize,
    ) -> Option<Error> {
        let mut inner = match self.lock_if_live() {
            Ok(inner) => inner,
            Err(err) => return Some(err),
        };
        // Another thread may have registered it meanwhile: once is enough.
        if position.load(Ordering::Relaxed) != UNREGISTERED {
            return None;
        }
        position.store(inner.on_done.len(), Ordering::Relaxed);
        inner.on_done.push(OnDone::Merged(Arc::downgrade(merged)));
        None
    }

    /// This node's lock, to attach something under, or its error if it is
    /// done: then nothing may be attached, since nobody would take it
    /// (invariant 4: the flag is set under the lock, and a canceller marks
    /// the state before it takes the lists).
    fn lock_if_live<'a>(self: &'a Arc<Self>) -> Result<MutexGuard<'a, Inner>, Error> {
        // Invariant 5, before the lock: joining takes the second parent's.
        self.join_second_parent();
        let inner = lock(&self.inner);
        match self.state.mark_dependent() {
            None => Ok(inner),
            Some(err) => Err(err),
        }
    }

    /// Forgets a stopped callback, so that registering and stopping in a loop
    /// does not grow a long-lived node.
    pub(crate) fn remove_callback(&self, callback: &Arc<dyn Callback>) {
        let at = callback.position().load(Ordering::Relaxed);
        self.remove(at, |entry| match entry {
            OnDone::Func(c) => Arc::as_ptr(c).cast::<()>() == Arc::as_ptr(callback).cast::<()>(),
            OnDone::Merged(_) => false,
        });
    }

    /// Forgets `merged`, a merged node being dropped, whose entry was last
    /// put at `position`.
    pub(crate) fn remove_merged(&self, merged: &CancelNode, position: &AtomicUsize) {
        let at = position.load(Ordering::Relaxed);
        self.remove(at, |entry| match entry {
            OnDone::Merged(m) => ptr::eq(m.as_ptr(), merged),
            OnDone::Func(_) => false,
        });
    }

    /// Removes the entry that `is_it` picks out, looked for at `at` first: in
    /// O(1), since every entry's position is kept up to date. The one
    /// exception is a merged node whose last handle is being dropped while
    /// another entry's removal moves it: it cannot be upgraded to be told its
    /// new position, so its own removal, coming next, searches. That needs
    /// its entry to be the last one in the list while its drop is under way,
    /// so the expected cost stays O(1) even for long lists. Not found means
    /// a cancel has already taken the list.
    fn remove(&self, at: usize, is_it: impl Fn(&OnDone) -> bool) {
        let (removed, moved) = {
            let mut inner = lock(&self.inner);
            let list = &mut inner.on_done;
            let at = if list.get(at).is_some_and(&is_it) {
                Some(at)
            } else {
                list.iter().position(&is_it)
            };
            let Some(at) = at else { return };
            let removed = list.swap_remove(at);
            // Relaxed: positions are only read and written under this lock.
            let moved = match list.get(at) {
                Some(OnDone::Func(callback)) => {
                    callback.position().store(at, Ordering::Relaxed);
                    None
                }
                Some(OnDone::Merged(merged)) => merged.upgrade().map(|node| {
                    if let Extra::Merge(link) = &node.extra {
                        link.position.store(at, Ordering::Relaxed);
                    }
                    node
                }),
                None => None,
            };
            // A parent that once had many entries (merged children) gives
            // the memory back as they go.
            if list.capacity() > 16 && list.len() < list.capacity() / 4 {
                list.shrink_to(list.capacity() / 2);
            }
            (removed, moved)
        };
        // Outside the lock: either may be the last handle of a node, whose
        // drop takes locks (deadlock safety).
        drop(removed);
        drop(moved);
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
        // A merged entry needs nothing: its node holds this one alive and
        // leaves this list before it lets go.
        if !inner.on_done.is_empty() {
            for entry in std::mem::take(&mut inner.on_done) {
                if let OnDone::Func(callback) = entry {
                    callback.discard();
                }
            }
        }
        match &self.extra {
            Extra::None => {}
            Extra::Deadline(timer) => timer.disarm(),
            // Leave the second parent at once too: nothing stays there.
            Extra::Merge(link) => link.leave(self),
        }
        // The second parent is let go of like the first: a chain of merges
        // through second parents drops without recursion.
        match &mut self.extra {
            Extra::Merge(link) => {
                release([self.parent.take(), Some(std::mem::take(&mut link.other))])
            }
            _ => release([self.parent.take()]),
        }
    }
}

impl<V: ?Sized> Drop for ValueNode<V> {
    fn drop(&mut self) {
        // Not the last reference to the anchor: `parent` still holds it.
        self.anchor = None;
        release([self.parent.take()]);
    }
}

impl Drop for DetachedNode {
    fn drop(&mut self) {
        release([self.parent.take()]);
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
