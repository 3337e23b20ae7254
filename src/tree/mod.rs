//! The tree: cancellable nodes, value nodes, detached nodes, how they are
//! derived, linked and freed. The cancel walk is in `walk.rs`, merged nodes'
//! rules in `merge.rs`, deadlines in `deadline.rs`, `after_func` callbacks
//! in `callbacks.rs`, grace nodes (`with_grace`) in `grace.rs`, value nodes
//! in `value.rs`, the one-allocation layout of a node born with an
//! out-of-line part in `alloc.rs`. The `unsafe` leaves are `node_ref.rs` (the reference
//! count), `list.rs` (the intrusive list), `state.rs` (the state word, and
//! the node's lock in it, which sleeps in `park.rs` when contended),
//! `tagged.rs` (a `Context` in one word) and `once_box.rs` (a node's
//! out-of-line part); they know nothing of this policy.
//!
//! # Invariants
//!
//! 1. **One finish.** A node's state goes from live to done at most once, by
//!    one compare-and-swap (`StateCell`). The winner of that CAS, and only
//!    it, takes the node's callbacks, stops its timer and notifies its
//!    waiters.
//! 2. **Links.** A cancellable node sits in at most two lists, each of its
//!    own kind: the child list of its *link parent* (the nearest cancellable
//!    ancestor, through value nodes), and, for a merged node that has
//!    registered, the merged list of its second parent. It is linked into
//!    the first when it is derived, if the link parent is live then, and
//!    into the second when it registers, if the second parent is live then;
//!    it leaves them only when its own cancel's walk is over or when its
//!    last handle goes. A parent's cancel does not unlink its children.
//!    A grace node has no link parent and is in no child list: what stands
//!    for it is a callback in its anchor's callback list, which leaves at
//!    the same two moments unless it has run (`grace.rs`).
//! 3. **Ownership points up.** A node owns its parent context (a merged
//!    node its second parent too); lists and back-references own nothing.
//!    So when a node's count reaches zero no descendant is left, and
//!    ancestors outlive descendants.
//! 4. **Reachable under a lock.** Another thread finds a node only through
//!    a handle, or through a list or a `Backref` while holding the lock
//!    that guards it. The node's last release (`Counted::last_release`)
//!    leaves every list and revokes every back-reference under those locks
//!    before the node is freed. So a node found under a lock may be read
//!    (its state even changed) while the lock is held, whatever its count,
//!    and is turned into a handle only by `NodeRef::try_acquire`, which
//!    fails once the count is zero. Nothing ever has `&mut Node` but the
//!    final drop. (A last handle that finds the count at one may skip the
//!    decrement when the node is reachable only through its link parent's
//!    list: under that lock, a count still at one means no walker holds a
//!    handle; `last_release_if_unique`.)
//! 5. **Attach, then flag.** Before a child is linked, a callback or merged
//!    node registered or a timer armed, the node's `DEPENDENTS` flag is set
//!    by a read-modify-write of its state word (for all but the timer, the
//!    CAS that takes the node's lock, which lives in that word:
//!    `StateCell::lock_marking`); the finishing CAS reports the flag. So
//!    either the attacher
//!    sees the node done (and attaches nothing: a child or merged node is
//!    born done, a callback runs at once) or the winner sees the flag and
//!    visits the node under its lock, where it finds what was attached. A
//!    node without the flag is finished by the CAS alone, with no lock.
//! 6. **Merged nodes register lazily.** `merge.rs` states the rules: a
//!    merged node registers on its second parent before anything is
//!    attached to it, reads that parent's state until then, and whoever
//!    finishes it prefers the second parent's reason if that one is done.
//! 7. **A winning cancel covers its subtree.** `walk.rs`: the walk visits
//!    every node it finishes that has something attached, and also every
//!    node it finds already done by another thread that has something
//!    attached, once each; children take the reason of the node they are
//!    reached from. When it ends, every node below was done at some point
//!    during the walk, whoever else was cancelling part of the subtree. (A
//!    grace node is not below its parent in this sense: a callback of the
//!    parent starts its grace, after the walk.)
//!
//! # Deadlock safety
//!
//! Locks: one per cancellable node (two bits of its state word, guarding
//! its child list, and with it its merged list and callbacks, which sit
//! under a leaf lock of their own in the node's out-of-line part, taken
//! only inside the node's; a waiter sleeps in `park.rs`, where it holds
//! only that table's mutex, and only while it checks the word), and leaf
//! locks (a `Backref`'s, a timer's
//! slot, a grace's timer slot, a callback's closure) under which nothing
//! else is locked.
//!
//! * At most one node lock is held at a time. Everything that takes two
//!   (a last release leaving its link parent and then its second parent; a
//!   merged node registering on its second parent before locking itself)
//!   takes them one after the other.
//! * No user code runs under a node lock or a leaf lock (callbacks, value
//!   drops, wakers), and no handle is dropped under a lock, since dropping
//!   the last one runs a last release, which takes locks.
//! * Nothing waits for another thread except to take a lock, and no lock
//!   is held across anything that waits. In particular a cancel never waits
//!   for another thread's walk: where that walk has reached part of the
//!   subtree first, this one visits it too (invariant 7). The nodes and the
//!   edges the walks follow (child lists and merged lists, from a node to
//!   nodes derived after it) form a DAG, even with merges: an edge always
//!   points to a node made later than its source, so no walk can come back
//!   to where it started, and a walk remembers the merged nodes it entered
//!   (the only ones with two ways in), so it visits each node at most once
//!   and ends.
//! * Callbacks run after the whole walk, with no lock held, so a callback
//!   may cancel, derive or drop anything in the tree, its own node's
//!   ancestors included.

mod alloc;
mod callbacks;
mod deadline;
mod drop_chain;
mod grace;
mod list;
mod merge;
mod node_ref;
mod once_box;
mod park;
mod state;
mod tagged;
mod value;
mod walk;

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::Event;

use crate::context::Context;
use crate::error::{Cause, Error};
use crate::sync::{lock, Mutex};

pub(crate) use callbacks::{register_callback, stop_callback, Callback};
pub(crate) use grace::derive_grace;
pub(crate) use merge::derive_merged;
pub(crate) use node_ref::NodeRef;
pub(crate) use walk::{cancel, Panic};

use callbacks::Attached;
use deadline::DeadlineTimer;
use drop_chain::release_one;
use grace::Grace;
use list::{Link, List, Pointers};
use merge::MergeLink;
use node_ref::{Counted, RefCount};
use once_box::OnceBox;
use state::StateCell;
use tagged::{Borrowed, Empty, Owned, Tagged, View};
pub(crate) use value::ValueNode;

/// What a `Context` is: one word (`tagged.rs`). The roots need no
/// allocation.
#[derive(Clone)]
pub(crate) struct Repr(Tagged<Node, ValueNode>);

/// What a `Context` is, seen through its [`Repr`].
pub(crate) enum Shape<'a> {
    Background,
    Todo,
    Cancel(&'a NodeRef<Node>),
    /// A value node; the detached node of `without_cancel` is one too, with
    /// a value of a type nobody outside this module can name.
    Value(Borrowed<'a, ValueNode>),
}

/// The value of the node `without_cancel` derives: it keeps the parent's
/// values and none of its cancellation.
pub(crate) struct Detached;

impl Repr {
    pub(crate) const fn background() -> Repr {
        Repr(Tagged::empty(Empty::First))
    }

    pub(crate) const fn todo() -> Repr {
        Repr(Tagged::empty(Empty::Second))
    }

    pub(crate) fn cancel(node: NodeRef<Node>) -> Repr {
        Repr(Tagged::from_owned(Owned::A(node)))
    }

    pub(crate) fn value(node: NodeRef<ValueNode>) -> Repr {
        Repr(Tagged::from_owned(Owned::B(node)))
    }

    #[inline]
    pub(crate) fn shape(&self) -> Shape<'_> {
        match self.0.view() {
            View::Empty(Empty::First) => Shape::Background,
            View::Empty(Empty::Second) => Shape::Todo,
            View::A(node) => Shape::Cancel(node),
            View::B(node) => Shape::Value(node),
        }
    }

    /// Whether this is a root, which owns nothing.
    #[inline]
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The nearest cancellable node at or above this one, if any.
    #[inline]
    pub(crate) fn anchor(&self) -> Option<&NodeRef<Node>> {
        match self.0.view() {
            View::A(node) => Some(node),
            View::B(node) => node.get().anchor.as_ref(),
            View::Empty(_) => None,
        }
    }

    /// The context this one was derived from; `None` for the roots.
    pub(crate) fn parent(&self) -> Option<&Context> {
        match self.0.view() {
            View::Empty(_) => None,
            View::A(node) => Some(&node.parent),
            View::B(node) => Some(&node.get().parent),
        }
    }

    /// The handle this holds, for `drop_chain`.
    fn into_owned(self) -> Owned<Node, ValueNode> {
        self.0.into_owned()
    }
}

/// A node that can be cancelled: by its `Canceller`, its deadline, its link
/// parent, or (merged) its second parent.
pub(crate) struct Node {
    count: RefCount,
    /// The node's state, and its lock, which guards its children.
    pub(crate) state: StateCell<List<ChildLink>>,
    /// Notified once, with every listener, when the node becomes done.
    pub(crate) event: Event,
    /// This node's place in its link parent's child list (invariant 2).
    links: Pointers<Node>,
    parent: Context,
    /// What only some nodes have, out of line: for deadline, merged and
    /// grace nodes, right after the node in the same allocation (`alloc.rs`);
    /// for the rest, a box of its own made on first use (a callback, a
    /// merged node registering).
    rare: OnceBox<Rare>,
}

/// The out-of-line part of a node.
struct Rare {
    /// Fixed at birth: `None` for a node that was born without.
    extra: Option<Extra>,
    /// Callbacks and registered merged nodes. Its lock is only taken with
    /// the node's lock held.
    attached: Mutex<Attached>,
}

impl Rare {
    fn with(extra: Option<Extra>) -> Rare {
        Rare {
            extra,
            attached: Mutex::new(Attached::new()),
        }
    }

    fn new(extra: Option<Extra>) -> Box<Rare> {
        Box::new(Rare::with(extra))
    }
}

/// The parts of a node that only deadline, merged and grace nodes have,
/// fixed at birth.
struct Extra {
    /// The earliest deadline on the path to the root (for a merged node,
    /// on either path), or `None` to ask the parent, as nodes without an
    /// `Extra` do (a merged node whose second parent has no deadline).
    deadline: Option<Option<Instant>>,
    /// What kind of node it is.
    role: Role,
}

/// What a node born with an `Extra` is, besides its deadline: one of these,
/// never two.
enum Role {
    /// A deadline node whose own deadline was not the earlier: it only
    /// keeps the deadline (so that `deadline()` stops here).
    Inherits,
    /// An own deadline, earlier than the parent's, and its timer.
    Timer(Arc<DeadlineTimer>),
    /// A second parent.
    Merge(MergeLink),
    /// A grace period after the parent is done (`grace.rs`).
    Grace(Grace),
}

impl Extra {
    fn timer(&self) -> Option<&Arc<DeadlineTimer>> {
        match &self.role {
            Role::Timer(timer) => Some(timer),
            _ => None,
        }
    }

    fn merge(&self) -> Option<&MergeLink> {
        match &self.role {
            Role::Merge(merge) => Some(merge),
            _ => None,
        }
    }

    fn grace(&self) -> Option<&Grace> {
        match &self.role {
            Role::Grace(grace) => Some(grace),
            _ => None,
        }
    }

    /// Whether a node of this kind is reached, besides its handles, only
    /// through its link parent's child list: no timer or grace holding a
    /// back-reference, not registered in a second parent's merged list.
    fn reached_by_link_only(&self) -> bool {
        match &self.role {
            Role::Inherits => true,
            Role::Merge(merge) => !merge.is_registered(),
            Role::Timer(_) | Role::Grace(_) => false,
        }
    }
}

/// What a cancellable node is, for `Display`.
pub(crate) enum Kind<'a> {
    Cancel,
    Deadline(Instant),
    Merge(&'a Context),
    Grace(Duration),
}

/// The `Link` of child lists: through [`Node::links`].
pub(crate) struct ChildLink;

// SAFETY: always the node's own `links` field, which no other list kind uses.
unsafe impl Link for ChildLink {
    type Target = Node;

    unsafe fn pointers(target: NonNull<Node>) -> NonNull<Pointers<Node>> {
        // SAFETY: `target` is live (the caller's promise); `addr_of!` makes
        // no reference, and the field's address is never null.
        unsafe { NonNull::new_unchecked(std::ptr::addr_of!((*target.as_ptr()).links).cast_mut()) }
    }
}

impl Node {
    #[inline]
    fn new_pair(parent: &Context, extra: Option<Extra>) -> (NodeRef<Node>, NodeRef<Node>) {
        Self::new_pair_in(parent, extra, false)
    }

    /// A plain child of `parent` marked as merged with `background()`
    /// (`merge.rs`): its `rare` carries the mark.
    fn new_pair_merged_with_background(parent: &Context) -> (NodeRef<Node>, NodeRef<Node>) {
        Self::new_pair_in(parent, None, true)
    }

    #[inline]
    fn new_pair_in(
        parent: &Context,
        extra: Option<Extra>,
        merged_with_background: bool,
    ) -> (NodeRef<Node>, NodeRef<Node>) {
        let aux = extra
            .as_ref()
            .and_then(Extra::merge)
            .is_some_and(|m| m.second().is_some());
        let make = |rare| Node {
            count: RefCount::new(),
            state: StateCell::new(aux, List::new()),
            event: Event::new(),
            links: Pointers::new(),
            parent: parent.clone(),
            rare,
        };
        match extra {
            None if merged_with_background => alloc::plain_pair(make, OnceBox::new_marked()),
            None => alloc::plain_pair(make, OnceBox::new(None)),
            // One allocation for the node and its out-of-line part.
            Some(extra) => alloc::wide_pair(make, extra),
        }
    }

    /// What this node was born with beyond a plain cancellable node.
    #[inline]
    fn extra(&self) -> Option<&Extra> {
        self.rare.get()?.extra.as_ref()
    }

    /// The callbacks and merged nodes attached to this node, made on first
    /// use. The caller holds the node's lock.
    fn attached(&self) -> &Mutex<Attached> {
        &self.rare.get_or_init(|| Rare::new(None)).attached
    }

    /// Like [`attached`](Self::attached), but `None` if nothing was ever
    /// attached.
    fn attached_if_any(&self) -> Option<&Mutex<Attached>> {
        Some(&self.rare.get()?.attached)
    }

    /// The node whose child list a node with this `parent` and `extra` is
    /// linked into, if any. A grace node has none: its parent's walk must
    /// not reach it (`grace.rs`).
    #[inline]
    fn link_parent<'a>(parent: &'a Context, extra: Option<&Extra>) -> Option<&'a NodeRef<Node>> {
        match extra {
            Some(Extra {
                role: Role::Grace(_),
                ..
            }) => None,
            _ => parent.repr.anchor(),
        }
    }

    fn merge_link(&self) -> Option<&MergeLink> {
        self.extra()?.merge()
    }

    fn timer(&self) -> Option<&Arc<DeadlineTimer>> {
        self.extra()?.timer()
    }

    /// Why the node is done, or `None` while it is live. One load, except
    /// for a live merged node, which also looks at its second parent
    /// (invariant 6).
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        self.state.err_or(|| merge::pull_second_parent(self))
    }

    /// `err().is_some()`, as cheap.
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.state.is_done_or(|| merge::pull_second_parent(self))
    }

    /// The earliest deadline on the path to the root: kept by the nearest
    /// deadline or grace node (or merged node whose second parent has one),
    /// found by walking up through the others, as Go does. Deriving a
    /// deadline node keeps its deadline even when its parent's is earlier,
    /// so that a chain of them never walks far.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let mut node = self;
        loop {
            if let Some(Extra {
                deadline: Some(kept),
                ..
            }) = node.extra()
            {
                return *kept;
            }
            node = node.parent.repr.anchor()?;
        }
    }

    pub(crate) fn kind(&self) -> Kind<'_> {
        if self.rare.marked() {
            return Kind::Merge(&merge::BACKGROUND);
        }
        if let Some(grace) = self.grace() {
            return Kind::Grace(grace.period);
        }
        match (self.timer(), self.merge_link()) {
            (_, Some(merge)) => Kind::Merge(&merge.other),
            (Some(timer), None) => Kind::Deadline(timer.when),
            (None, None) => Kind::Cancel,
        }
    }

    /// Stops the timers that would cancel this node: its deadline's, and
    /// a started grace's. For the winner of its finish (invariant 1).
    fn disarm_timers(&self) {
        if self.extra().is_none() {
            return;
        }
        if let Some(timer) = self.timer() {
            timer.disarm();
        }
        grace::disarm(self);
    }

    /// Records that a listener is registered, registering a merged node on
    /// its second parent first (invariant 6); returns the error if the node
    /// is already done, in which case that listener need not wait.
    pub(crate) fn mark_listened(this: &NodeRef<Node>) -> Option<Error> {
        merge::join_second_parent(this);
        this.state.mark_listened()
    }

    /// `last_release_if_unique` for a node with an out-of-line part.
    #[inline(never)]
    fn last_release_if_unique_rare(&self, rare: &Rare) -> bool {
        // Something was attached (a callback, a merged node, a timer) or the
        // node is in more than one list (a registered merged node) or has
        // back-references (a timer's, a grace's): the usual way. None of
        // these can start now: each needs a handle, and ours is the only
        // one (its Acquire made every earlier one visible).
        match &rare.extra {
            Some(extra) if extra.reached_by_link_only() && !self.state.has_dependents() => {
                self.leave_link_parent_if_unique(Some(extra))
            }
            _ => false,
        }
    }

    /// The end of `last_release_if_unique`, for a node reached only through
    /// handles and its link parent's child list: leaves that list if, under
    /// its lock, the count is still one.
    #[inline]
    fn leave_link_parent_if_unique(&self, extra: Option<&Extra>) -> bool {
        let Some(link_parent) = Self::link_parent(&self.parent, extra) else {
            // In no list at all: only handles reach it, and ours is the one.
            return true;
        };
        let mut children = link_parent.state.lock();
        if !self.count.is_unique() {
            // A walker found it and holds a handle: the usual way, then.
            return false;
        }
        // SAFETY: this node is live (our handle), and the only child list it
        // is ever linked into is its link parent's (invariant 2), whose lock
        // we hold.
        children.with(|list| unsafe { list.remove(NonNull::from(self)) });
        true
    }

    /// Leaves the lists this node is linked into (invariant 2): its link
    /// parent's child list and its second parent's merged list; for a grace
    /// node, its callback leaves its anchor's callback list.
    fn leave_lists(&self) {
        let extra = self.extra();
        if let Some(link_parent) = Self::link_parent(&self.parent, extra) {
            // SAFETY: this node is live (we hold `&self`), and the only
            // child list it is ever linked into is its link parent's
            // (invariant 2), whose lock we hold.
            link_parent
                .state
                .lock()
                .with(|list| unsafe { list.remove(NonNull::from(self)) });
        }
        // Only nodes born with an `Extra` are in a merged list or have a
        // grace callback in their anchor's list.
        if extra.is_some() {
            merge::leave(self);
            grace::leave(self);
        }
    }
}

// SAFETY: `ref_count` is the node's own field. `last_release` makes the node
// unreachable (invariant 4): it leaves its link parent's child list and its
// second parent's merged list, each under that list's lock (the only locks
// under which `try_acquire` is called on a node: `walk.rs`), and revokes the
// back-references held by its timer and its callbacks (`Backref`, under
// their own locks), and for a grace node those held by its grace callback
// and the grace's timer (`grace::release`). Nothing else points at a node
// without a count.
unsafe impl Counted for Node {
    #[inline]
    fn ref_count(&self) -> &RefCount {
        &self.count
    }

    /// For a node whose count is one (the caller's handle) and that is in
    /// no list but its link parent's child list and has handed out no
    /// back-reference: the only way another thread can make a handle to it
    /// is `try_acquire` under that list's lock. Under that lock, a count
    /// still at one means no walker holds a handle, and once the node has
    /// left the list none can make one.
    #[inline]
    fn last_release_if_unique(&self) -> bool {
        match self.rare.get() {
            None => self.leave_link_parent_if_unique(None),
            Some(rare) => self.last_release_if_unique_rare(rare),
        }
    }

    /// A node born with an out-of-line part shares its allocation with it;
    /// a plain one is a lone node (`alloc.rs`).
    unsafe fn free(this: NonNull<Node>) {
        // SAFETY: `Counted::free`'s contract, which our caller keeps; every
        // node is made by `alloc.rs` (`Node::new_pair`).
        unsafe { alloc::free(this) };
    }

    fn last_release(&self) {
        self.leave_lists();
        // A node with nothing out of line has no timer, no grace and
        // nothing attached but children, of which none is left
        // (invariant 3).
        if self.rare.get().is_none() {
            return;
        }
        if let Some(timer) = self.timer() {
            timer.node.revoke();
            timer.disarm();
        }
        grace::release(self);
        // Invariant 5: nothing was ever attached without the flag, and the
        // count's Acquire makes every attacher's flag visible here.
        if !self.state.has_dependents() {
            return;
        }
        // No walk can take the callbacks any more (nobody can reach the
        // node), but a `stop()` may still look for them until revoked.
        let attached = self.attached_if_any().map(|attached| {
            let _node = self.state.lock();
            std::mem::replace(&mut *lock(attached), Attached::new())
        });
        if let Some(attached) = attached {
            attached.discard();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Invariant 3: every child and merged node held this one, so none is
        // left; `last_release` has taken the callbacks.
        debug_assert!(self.state.get_mut().is_empty());
        // The parents are let go of without recursion: a chain of nodes, or
        // of merges through second parents, drops in constant stack.
        release_one(std::mem::take(&mut self.parent));
        // A second parent is let go of the same way, by `MergeLink`'s drop.
    }
}

/// Derives a cancellable child of `parent`, with its own deadline if `own`
/// is earlier than the parent's. Returns the node's two handles (for the
/// `Context` and the `Canceller`).
pub(crate) fn derive_cancel(
    parent: &Context,
    own: Option<(Instant, Option<Cause>)>,
) -> (NodeRef<Node>, NodeRef<Node>) {
    // A plain child keeps no deadline: it asks its parent (`Node::deadline`).
    // A deadline child keeps the earlier of its own and its parent's, and a
    // timer only if its own is the earlier.
    let extra = own.map(|(when, cause)| {
        let parent_deadline = parent.deadline();
        if parent_deadline.is_some_and(|p| p <= when) {
            return Extra {
                deadline: Some(parent_deadline),
                role: Role::Inherits,
            };
        }
        Extra {
            deadline: Some(Some(when)),
            role: Role::Timer(Arc::new(DeadlineTimer::new(
                when,
                Error::DeadlineExceeded,
                cause,
            ))),
        }
    });
    let (node, handle) = Node::new_pair(parent, extra);
    link(parent, &node);
    if let Some(timer) = node.timer() {
        // SAFETY: the node's last release revokes `timer.node`.
        unsafe { timer.node.set(&node) };
        // Invariant 5: a cancel that finishes the node from now on disarms
        // the timer; one that came first is seen here.
        if node.state.mark_dependent().is_none() {
            timer.arm(&node);
        }
    }
    (node, handle)
}

/// Links a new `node` into its link parent's child list, or makes it done
/// at once if the link parent already is.
#[inline]
fn link(parent: &Context, node: &NodeRef<Node>) {
    let Some(anchor) = parent.repr.anchor() else {
        return;
    };
    // Invariant 6: a merged link parent registers before a child attaches.
    merge::join_second_parent(anchor);
    // Invariant 5: flag (in the same read-modify-write that locks), then
    // link, under the link parent's lock.
    let (mut children, err) = anchor.state.lock_marking();
    match err {
        // SAFETY: `node` is new, so in no child list; it stays live until
        // it leaves this list, which it does under this lock before it is
        // freed (invariants 2 and 4); this list is only used under this lock.
        None => children.with(|list| unsafe { list.push_front(NodeRef::as_ptr(node)) }),
        Some(err) => {
            drop(children);
            node.state.finish(err, anchor.state.given_cause());
        }
    }
}

/// Derives a value node below `parent`.
pub(crate) fn derive_value<T: Send + Sync + 'static>(
    parent: &Context,
    value: T,
) -> NodeRef<ValueNode> {
    ValueNode::new(parent, parent.repr.anchor().cloned(), value)
}

/// Derives a node that keeps `parent`'s values and none of its cancellation.
pub(crate) fn derive_detached(parent: &Context) -> NodeRef<ValueNode> {
    ValueNode::new(parent, None, Detached)
}

/// For the tree's unit tests: a value that counts its drops in a shared
/// counter, to check that a node lets go of what it holds exactly once.
#[cfg(all(test, not(loom)))]
pub(crate) struct Probe(pub(crate) Arc<std::sync::atomic::AtomicUsize>);

#[cfg(all(test, not(loom)))]
impl Drop for Probe {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Races through the public API on real threads, small enough for Miri:
/// a node's last handle going on one thread while another thread reaches
/// the node (invariant 4), for every way of reaching it.
#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::task::{Wake, Waker};
    use std::thread;

    use crate::{Context, Error};

    fn rounds(full: usize) -> usize {
        if cfg!(miri) {
            4
        } else {
            full
        }
    }

    /// Runs `a` and `b` on two threads released together.
    fn race<A, B>(a: A, b: B)
    where
        A: FnOnce() + Send + 'static,
        B: FnOnce() + Send + 'static,
    {
        let barrier = Arc::new(Barrier::new(2));
        let other = barrier.clone();
        let t = thread::spawn(move || {
            other.wait();
            a();
        });
        barrier.wait();
        b();
        t.join().unwrap();
    }

    struct NoWake;
    impl Wake for NoWake {
        fn wake(self: Arc<Self>) {}
    }

    /// Children's last handles dropped on one thread while their parent is
    /// cancelled on another: the walk finds each child in the list (live,
    /// or on its way out) while its last release waits for the parent's
    /// lock.
    #[test]
    fn last_drops_race_parent_cancel() {
        for _ in 0..rounds(300) {
            let (parent, cancel) = Context::background().with_cancel();
            let kids: Vec<_> = (0..3).map(|_| parent.with_cancel()).collect();
            let grandchild = kids[0].0.with_cancel();
            race(move || drop(kids), move || cancel.cancel());
            assert_eq!(grandchild.0.err(), Some(Error::Canceled));
            let (late, _c) = parent.with_cancel();
            assert!(late.is_done());
        }
    }

    /// A registered merged child's last handles dropped while its second
    /// parent is cancelled: the walk finds it in the merged list.
    #[test]
    fn merged_last_drop_races_second_parent_cancel() {
        for _ in 0..rounds(300) {
            let (a, _ca) = Context::background().with_cancel();
            let (b, cancel_b) = Context::background().with_cancel();
            let merged: Vec<_> = (0..2).map(|_| a.merge(&b)).collect();
            for (m, _) in &merged {
                drop(m.with_cancel()); // registers on `b`
            }
            race(move || drop(merged), move || cancel_b.cancel());
            assert!(!a.is_done());
            let (late, _l) = a.merge(&b);
            assert_eq!(late.err(), Some(Error::Canceled));
        }
    }

    /// A `Done` that is its node's last handle, polled and dropped on one
    /// thread while the parent is cancelled on another.
    #[test]
    fn done_as_last_handle_races_parent_cancel() {
        for _ in 0..rounds(300) {
            let (parent, cancel) = Context::background().with_cancel();
            let (child, child_cancel) = parent.with_cancel();
            let mut done = child.done();
            drop((child, child_cancel));
            race(
                move || {
                    let waker = Waker::from(Arc::new(NoWake));
                    let mut cx = std::task::Context::from_waker(&waker);
                    let _ = Pin::new(&mut done).poll(&mut cx);
                    drop(done);
                },
                move || cancel.cancel(),
            );
            assert!(parent.is_done());
        }
    }

    /// `stop()` on one thread while the node's last handle goes on another
    /// (the callback's back-reference is revoked, or used, never dangling);
    /// and `stop()` against a cancel.
    #[test]
    fn after_func_stop_races_last_drop_and_cancel() {
        for _ in 0..rounds(300) {
            let ran = Arc::new(AtomicUsize::new(0));
            let (ctx, cancel) = Context::background().with_cancel();
            let counter = ran.clone();
            let handle = ctx.after_func(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            race(move || assert!(handle.stop()), move || drop((ctx, cancel)));
            assert_eq!(ran.load(Ordering::SeqCst), 0);

            let (ctx, cancel) = Context::background().with_cancel();
            let counter = ran.clone();
            let handle = ctx.after_func(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            let stopped = Arc::new(AtomicUsize::new(0));
            let s = stopped.clone();
            race(
                move || {
                    if handle.stop() {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                },
                move || {
                    cancel.cancel();
                    drop(ctx);
                },
            );
            assert_eq!(
                ran.load(Ordering::SeqCst) + stopped.load(Ordering::SeqCst),
                1
            );
            ran.store(0, Ordering::SeqCst);
        }
    }

    /// Siblings and clones dropped on several threads at once: each leaves
    /// the list exactly once and the list stays whole.
    #[test]
    fn siblings_and_clones_dropped_at_once() {
        let threads = if cfg!(miri) { 3 } else { 4 };
        for _ in 0..rounds(100) {
            let (parent, cancel) = Context::background().with_cancel();
            let shared = parent.with_cancel();
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let mine = parent.with_cancel();
                    let clone = shared.clone();
                    let b = barrier.clone();
                    thread::spawn(move || {
                        b.wait();
                        drop(mine);
                        drop(clone);
                    })
                })
                .collect();
            drop(shared);
            for h in handles {
                h.join().unwrap();
            }
            let (late, _l) = parent.with_cancel();
            cancel.cancel();
            assert!(late.is_done());
        }
    }

    /// What a live `with_cancel` child costs on the heap: one `Node`. Its
    /// rarely used parts (an own deadline's timer, a second parent,
    /// callbacks, merged children) are out of line, behind one pointer
    /// each. The bound is what this layout reaches; it may only go down.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_cancellable_node_stays_small() {
        assert!(
            std::mem::size_of::<super::Node>() <= 64,
            "Node grew to {} bytes",
            std::mem::size_of::<super::Node>()
        );
        assert_eq!(std::mem::size_of::<Context>(), 8);
    }

    /// A middle node cancelled on one thread while the root is cancelled on
    /// another: when the root's `cancel()` returns, every leaf is done,
    /// whichever walk reached the middle first (invariant 7).
    #[test]
    fn winning_cancel_returns_with_every_leaf_done() {
        for _ in 0..rounds(300) {
            let (root, cancel_root) = Context::background().with_cancel();
            let (mid, cancel_mid) = root.with_value(1u8).with_cancel();
            let leaves: Vec<_> = (0..3).map(|_| mid.with_cancel()).collect();
            let check: Vec<_> = leaves.iter().map(|(l, _)| l.clone()).collect();
            race(
                move || cancel_mid.cancel(),
                move || {
                    cancel_root.cancel();
                    for leaf in &check {
                        assert!(leaf.is_done());
                    }
                },
            );
            drop(leaves);
            assert!(root.is_done());
        }
    }
}
