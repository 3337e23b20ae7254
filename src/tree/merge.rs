//! `Context::merge`: a child of one context that is also done when a second
//! context is. Every rule about merged nodes lives here.
//!
//! The merged node is an ordinary cancellable child of its first parent
//! (linked in that parent's child list, values from it). Its second parent
//! learns of it only when it must: when the first thing is attached to the
//! merged node (a child, a callback, a listener, a merge of its own), the
//! node links itself into the second parent's merged list (intrusive, like
//! the child list: no allocation per entry), and the second parent's cancel
//! walk finishes it from then on, as it finishes children. Until then the
//! merged node reads the second parent's state whenever it is asked for its
//! own (one more load; the state word's `AUX` bit, set at birth, says so),
//! and takes its reason the first time it finds it done. So a merged
//! context that is only checked and dropped never touches its second
//! parent's lock, and one that registered leaves the list when dropped:
//! nothing stays on the second parent either way.
//!
//! A node merged with `background()`, which can never be done, is a plain
//! child of its first parent with one mark (for `Display`): there is
//! nothing to register on, no deadline to take and no reason to prefer.
//!
//! # Invariant 6 (of `tree/mod.rs`)
//!
//! * A merged node registers on its second parent before anything is
//!   attached to it (before its state gets a `LISTENED` or `DEPENDENTS`
//!   flag). Registering finds the second parent live (the node is linked,
//!   and that parent's walk will reach it) or done (the node takes its
//!   reason at once). So a merged node with a flag set is registered or
//!   done, and one without flags has nothing that a walk must reach: taking
//!   the second parent's reason is then a bare state change, which any
//!   observer may make (`StateCell::finish_bare`).
//! * Whoever finishes a merged node first looks at its second parent: if it
//!   is done, it was done first, and its reason wins (as if its walk had
//!   reached the node, which it would have, merging eagerly). The one
//!   exception is a node reached by its first parent's walk that has
//!   something attached: its descendants must share one reason with it, and
//!   the walk that reaches it passes its own down (the second parent's walk
//!   finds it done and, if it must, helps below it with that reason).
//! * The second parent of a merged node is never itself an unregistered
//!   merged node: `derive_merged` registers it first. So looking at the
//!   second parent's state is one load, never a walk up a chain of merges.

use std::ptr::NonNull;

use super::drop_chain::release_one;
use super::list::{Link, Pointers};
use super::node_ref::NodeRef;
use super::state::Finish;
use super::{link, Extra, Node, Repr, Role, Shape};
use crate::context::Context;
use crate::error::{Cause, Error};
use crate::sync::{lock, AtomicBool, Ordering};

/// What a merged node keeps of its second parent, out of line in its
/// `Extra`.
pub(super) struct MergeLink {
    /// Kept for `Display`, and so that the second parent outlives this
    /// node's place in its merged list. It never holds this node, so no
    /// cycle forms, whatever the two parents are.
    pub(super) other: Context,
    /// Whether the node has linked itself into the second parent's merged
    /// list; written under that parent's lock, and never cleared.
    registered: AtomicBool,
    /// The node's place in that list.
    links: Pointers<Node>,
}

impl Drop for MergeLink {
    fn drop(&mut self) {
        // Without recursion, as a node lets go of its first parent: a chain
        // of merges through second parents drops in constant stack.
        release_one(std::mem::take(&mut self.other));
    }
}

impl MergeLink {
    /// Whether the node has registered on its second parent. Relaxed: the
    /// node's last handle asks, and the count's Acquire made the write of
    /// whoever registered (holding a handle) visible.
    pub(super) fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// The second parent's cancellable node, if it can ever be done.
    #[inline]
    pub(super) fn second(&self) -> Option<&NodeRef<Node>> {
        self.other.repr.anchor()
    }
}

/// The `Link` of merged lists: through a merged node's `MergeLink`.
pub(super) struct MergedLink;

// SAFETY: always the `links` of the target's own `MergeLink`, fixed at
// birth and used by no other list kind.
unsafe impl Link for MergedLink {
    type Target = Node;

    unsafe fn pointers(target: NonNull<Node>) -> NonNull<Pointers<Node>> {
        // SAFETY: `target` is live (the caller's promise); only a shared
        // reference is made, and the links are cells.
        let node = unsafe { target.as_ref() };
        match node.merge_link() {
            Some(merge) => NonNull::from(&merge.links),
            // Only merged nodes are ever linked into a merged list.
            None => unreachable!("a merged list holds only merged nodes"),
        }
    }
}

/// The second parent of every node merged with `background()`, for
/// `Display`: such a node keeps no second parent of its own.
pub(super) static BACKGROUND: Context = Context {
    repr: Repr::background(),
};

/// Derives the child of `first` that is also done when `second` is.
/// Returns its two handles.
pub(crate) fn derive_merged(first: &Context, second: &Context) -> (NodeRef<Node>, NodeRef<Node>) {
    if let Shape::Background = second.repr.shape() {
        // `background()` is never done, has no deadline and no values (a
        // merged node reads its first parent's anyway): the node is a plain
        // child of `first`, without the out-of-line part of other merged
        // nodes, that only remembers, for `Display`, what it was merged
        // with (a bit of its `rare` word).
        let (node, handle) = Node::new_pair_merged_with_background(first);
        link(first, &node);
        return (node, handle);
    }
    // Without a deadline on the second path, the first parent's is the
    // node's: it asks its parent, as a plain node does, and nobody walks up
    // now. Otherwise it keeps the earlier of the two.
    let deadline = second
        .deadline()
        .map(|second| Some(first.deadline().map_or(second, |first| first.min(second))));
    if let Some(anchor) = second.repr.anchor() {
        // Our second parent's state must be its own to read.
        join_second_parent(anchor);
    }
    let extra = Extra {
        deadline,
        role: Role::Merge(MergeLink {
            other: second.clone(),
            registered: AtomicBool::new(false),
            links: Pointers::new(),
        }),
    };
    let (node, handle) = Node::new_pair(first, Some(extra));
    link(first, &node);
    // A second parent that is already done makes the child done at once
    // with its reason, unless the first parent's came first. (A second
    // parent that can never be done is never looked at again.)
    if let Some(anchor) = second.repr.anchor() {
        if let Some((err, cause)) = anchor.state.reason() {
            node.state.finish_bare(err, cause);
        }
    }
    (node, handle)
}

/// Before anything is attached to a merged node (a child, a callback, a
/// listener, a merged node of its own), it registers on its second parent,
/// or, if that parent is done, takes its reason. Cheap when there is
/// nothing to do: a field check, or a load.
#[inline]
pub(super) fn join_second_parent(node: &NodeRef<Node>) {
    if let Some(merge) = node.merge_link() {
        if let Some(second) = merge.second() {
            // Relaxed: a stale `false` only sends us to check under the lock.
            if !merge.registered.load(Ordering::Relaxed) && node.state.err().is_none() {
                register(node, second, merge);
            }
        }
    }
}

#[inline(never)]
fn register(node: &NodeRef<Node>, second: &NodeRef<Node>, merge: &MergeLink) {
    // Invariant 5 on the second parent: flag (as it locks), then link.
    let (children, err) = second.state.lock_marking();
    match err {
        None => {
            // Another thread may have registered it meanwhile: once is enough.
            if !merge.registered.load(Ordering::Relaxed) {
                // SAFETY: `node` is live (we hold a handle) and in no merged
                // list: only this function links it, under this lock, and
                // sets `registered` when it does. It stays live until it
                // leaves this list under this lock (`leave`, from its last
                // release at the latest), and the list is only used under
                // this lock.
                unsafe {
                    lock(second.attached())
                        .merged
                        .push_front(NodeRef::as_ptr(node))
                };
                merge.registered.store(true, Ordering::Relaxed);
            }
        }
        Some(err) => {
            let cause = second.state.given_cause();
            drop(children);
            // Nothing is attached to the node yet (attachers register
            // first), so a bare finish is all it needs; it fails if
            // something else finished the node first.
            node.state.finish_bare(err, cause);
        }
    }
}

/// Takes `node` out of its second parent's merged list, if it is there.
pub(super) fn leave(node: &Node) {
    let Some(merge) = node.merge_link() else {
        return;
    };
    let Some(second) = merge.second() else {
        return;
    };
    // From the last release, whoever registered held a handle, so that
    // registration happened before (the count's Release/Acquire). From the
    // end of the node's own cancel, a registration racing it is left in
    // place, and the last release removes it.
    if !merge.registered.load(Ordering::Relaxed) {
        return;
    }
    let _second = second.state.lock();
    if let Some(attached) = second.attached_if_any() {
        // SAFETY: `node` is live (the caller's `&`), and the only merged
        // list it is ever linked into is its second parent's, whose lock we
        // hold; if it has left already, `remove` leaves it alone.
        unsafe { lock(attached).merged.remove(NonNull::from(node)) };
    }
}

/// The second parent's error and cause, if `node` is merged and its second
/// parent is done.
fn second_reason(node: &Node) -> Option<(Error, Option<Cause>)> {
    node.merge_link()?.second()?.state.reason()
}

/// For a live merged node's reads (`AUX`): if its second parent is done,
/// take its reason now, provided nothing is attached (otherwise that
/// parent's walk finishes it); then report the node's own state.
#[inline(never)]
pub(super) fn pull_second_parent(node: &Node) -> Option<Error> {
    let (err, cause) = second_reason(node)?;
    node.state.finish_bare(err, cause);
    node.state.err()
}

/// The reason a node's own cancel (its `Canceller` or its deadline) gives
/// it: its own, unless it is merged and its second parent is done, which
/// was first.
pub(super) fn own_reason(node: &Node, err: Error, cause: Option<Cause>) -> (Error, Option<Cause>) {
    second_reason(node).unwrap_or((err, cause))
}

/// Finishes `node` as a child in its link parent's walk, with that walk's
/// reason, except that a bare merged node whose second parent is already
/// done takes the second parent's reason. Only a bare one: a node with a
/// subtree is visited with the walk's reason, which its descendants must
/// share.
#[inline]
pub(super) fn finish_as_child(node: &Node, err: Error, cause: &Option<Cause>) -> Option<Finish> {
    if node.merge_link().is_some() {
        if let Some((second_err, second_cause)) = second_reason(node) {
            if node.state.finish_bare(second_err, second_cause) {
                return Some(Finish::LEAF);
            }
        }
    }
    node.state.finish(err, cause.clone())
}
