//! `Context::merge`: a child of one context that is also done when a second
//! context is.
//!
//! The merged node is an ordinary cancellable child of its first parent
//! (linked in that parent's list, values from it). Its second parent learns
//! of it only when it must: when the first thing is attached to the merged
//! node (a child, a callback, a listener, a merge of its own), the node puts
//! one weak entry in the second parent's `on_done` list, next to
//! `after_func` callbacks, and the second parent's cancel walk finishes it
//! from then on, as it finishes children. Until then the merged node reads
//! the second parent's state whenever it is asked for its own (one more
//! load), and takes its reason the first time it finds it done. So a merged
//! context that is only checked and dropped never touches its second
//! parent's lock, and one that registered removes its entry when dropped:
//! nothing stays on the second parent either way.
//!
//! # Invariant 5 (of `node.rs`)
//!
//! * A merged node registers on its second parent before anything is
//!   attached to it (before its state gets a `LISTENED` or `DEPENDENTS`
//!   flag). Registering finds the second parent live (the entry goes in, and
//!   that parent's walk will finish the node) or done (the node takes its
//!   reason at once). So a merged node with a flag set is registered or
//!   done, and one without flags has nothing that a walk must reach: taking
//!   the second parent's reason is then a bare state change, which any
//!   observer may make ([`StateCell::finish_bare`](crate::raw::StateCell)).
//! * Whoever finishes a merged node first looks at its second parent: if it
//!   is done, it was done first, and its reason wins (as if its walk had
//!   reached the node, which it would have, merging eagerly).
//! * The second parent of a merged node is never itself an unregistered
//!   merged node: `merge` registers it first. So looking at the second
//!   parent's state is one load, never a walk up a chain of merges.

use crate::context::Context;
use crate::node::{link, new_node, CancelNode, Extra};
use crate::sync::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `MergeLink::position` before the node has an entry on its second parent.
pub(crate) const UNREGISTERED: usize = usize::MAX;

/// What a merged node keeps of its second parent, inside the node.
pub(crate) struct MergeLink {
    /// Kept for `Display`, and so that the second parent outlives the entry
    /// that it holds for this node. It never holds this node strongly, so
    /// no cycle forms, whatever the two parents are.
    pub(crate) other: Context,
    /// Where this node's entry sits in the second parent's `on_done` list,
    /// or `UNREGISTERED`; written under that parent's lock, and once set,
    /// never `UNREGISTERED` again.
    pub(crate) position: AtomicUsize,
}

impl MergeLink {
    /// The second parent's cancellable node, if it can ever be done.
    #[inline]
    pub(crate) fn second(&self) -> Option<&Arc<CancelNode>> {
        self.other.repr.anchor()
    }

    /// Whether the node has put its entry on its second parent. Relaxed: a
    /// set position only says that the entry went in while that parent was
    /// live; its walk, which takes the list under the parent's lock, is what
    /// finishes the node, whoever registered it.
    #[inline]
    pub(crate) fn is_registered(&self) -> bool {
        self.position.load(Ordering::Relaxed) != UNREGISTERED
    }

    /// Removes `node`'s entry from the second parent, if it has one there.
    /// Called from the node's `Drop`: whoever registered it held a handle,
    /// so that registration happened before this.
    pub(crate) fn leave(&self, node: &CancelNode) {
        if let Some(second) = self.second() {
            if self.is_registered() {
                second.remove_merged(node, &self.position);
            }
        }
    }
}

/// Derives the child of `first` that is also done when `second` is.
pub(crate) fn derive_merged(first: &Context, second: &Context) -> Arc<CancelNode> {
    let deadline = match (first.deadline(), second.deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(anchor) = second.repr.anchor() {
        // Invariant 5: our second parent's state must be its own to read.
        anchor.join_second_parent();
    }
    let merge = MergeLink {
        other: second.clone(),
        position: AtomicUsize::new(UNREGISTERED),
    };
    let node = Arc::new(new_node(first, deadline, Extra::Merge(merge)));
    link(first, &node);
    // A second parent that is already done makes the child done at once
    // with its reason, unless the first parent's came first. (A second
    // parent that can never be done is never looked at again.)
    if let Some(anchor) = second.repr.anchor() {
        if let Some(err) = anchor.state.err() {
            node.state.finish_bare(err, anchor.state.given_cause());
        }
    }
    node
}
