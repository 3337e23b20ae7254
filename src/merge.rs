//! `Context::merge`: a child of one context that is also done when a second
//! context is.
//!
//! The merged node is an ordinary cancellable child of its first parent
//! (linked in that parent's list, values from it). Its second parent knows
//! it by one weak entry in its `on_done` list, next to `after_func`
//! callbacks: when the second parent is cancelled, the walk finishes the
//! merged node with that reason, as it finishes children. The entry needs
//! no allocation of its own, and the merged node removes it when dropped,
//! so nothing stays registered on the second parent.

use crate::context::Context;
use crate::node::{link, new_node, CancelNode, Extra};
use crate::sync::AtomicUsize;
use std::sync::Arc;

/// What a merged node keeps of its second parent, inside the node.
pub(crate) struct MergeLink {
    /// Kept for `Display`, and so that the second parent outlives the entry
    /// that it holds for this node. It never holds this node strongly, so
    /// no cycle forms, whatever the two parents are.
    pub(crate) other: Context,
    /// Where this node's entry sits in the second parent's `on_done` list;
    /// read and written under that parent's lock.
    pub(crate) position: AtomicUsize,
}

impl MergeLink {
    /// Removes `node`'s entry from the second parent, if it has one there.
    pub(crate) fn leave(&self, node: &CancelNode) {
        if let Some(anchor) = self.other.repr.anchor() {
            anchor.remove_merged(node, &self.position);
        }
    }
}

/// Derives the child of `first` that is also done when `second` is.
pub(crate) fn derive_merged(first: &Context, second: &Context) -> Arc<CancelNode> {
    let deadline = match (first.deadline(), second.deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let merge = MergeLink {
        other: second.clone(),
        position: AtomicUsize::new(0),
    };
    let node = Arc::new(new_node(first, deadline, Extra::Merge(merge)));
    link(first, &node);
    // A second parent that can never be done (a root, or below
    // `without_cancel`) gets nothing registered. (If the first parent has
    // already finished the node, registering is harmless: a second reason
    // loses, and the entry goes when the node does.)
    if let (Some(anchor), Extra::Merge(merge)) = (second.repr.anchor(), &node.extra) {
        if let Some(err) = anchor.add_merged(&node, &merge.position) {
            // Already done: the child is done at once with its reason,
            // unless its first parent's reason came first.
            node.state.finish(err, anchor.state.given_cause());
        }
    }
    node
}
