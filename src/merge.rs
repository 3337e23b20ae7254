//! `Context::merge`: a child of one context that is also done when a second
//! context is.
//!
//! The merged node is an ordinary cancellable child of its first parent
//! (linked in that parent's list, values from it). Its second parent sees it
//! only through one `after_func`-style callback that holds the node weakly:
//! when the second parent is done, the callback cancels the node with that
//! parent's reason; when the node is dropped first, it stops the callback,
//! so nothing stays registered on the second parent.

use std::sync::{Arc, OnceLock, Weak};

use crate::after_func::AfterFunc;
use crate::context::Context;
use crate::node::{link, new_node, CancelNode, Extra, Repr};

/// What a merged node keeps of its second parent.
pub(crate) struct MergeLink {
    /// Kept alive so its reason and path stay readable; it never holds the
    /// merged node strongly, so no cycle forms, whatever the two parents are.
    pub(crate) other: Context,
    /// The callback registered on `other`, set once right after linking.
    forward: OnceLock<AfterFunc>,
}

impl MergeLink {
    /// Stops the forwarding callback and removes it from `other`.
    pub(crate) fn unregister(&self) {
        if let Some(forward) = self.forward.get() {
            forward.stop();
        }
    }
}

/// Derives the child of `first` that is also done when `second` is.
pub(crate) fn derive_merged(first: &Context, second: &Context) -> Arc<CancelNode> {
    let deadline = match (first.deadline(), second.deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // A root can never be done: the child is a plain `with_cancel` child
    // that only remembers the root's name for `Display`.
    let root = match &second.repr {
        Repr::Background => Some("context.Background"),
        Repr::Todo => Some("context.TODO"),
        _ => None,
    };
    if let Some(root) = root {
        let node = Arc::new(new_node(first, deadline, Extra::MergeRoot(root)));
        link(first, &node);
        return node;
    }
    let merge = MergeLink {
        other: second.clone(),
        forward: OnceLock::new(),
    };
    let node = Arc::new(new_node(first, deadline, Extra::Merge(Box::new(merge))));
    link(first, &node);
    // A second parent that can never be done gets nothing registered.
    if let (Some(anchor), None) = (second.repr.anchor(), node.state.err()) {
        let weak = Arc::downgrade(&node);
        let forward = AfterFunc::register(Some(anchor), move || forward_cancel(&weak));
        if let Extra::Merge(merge) = &node.extra {
            // Cannot fail: this is the only place that sets it.
            let _ = merge.forward.set(forward);
        }
    }
    node
}

/// Runs on the second parent's cancelling thread, after its walk: cancels the
/// merged node with the second parent's error and cause, unless the node is
/// gone or already done (first reason wins).
fn forward_cancel(node: &Weak<CancelNode>) {
    let Some(node) = node.upgrade() else { return };
    let Extra::Merge(merge) = &node.extra else {
        return;
    };
    let Some(anchor) = merge.other.repr.anchor() else {
        return;
    };
    if let Some(err) = anchor.state.err() {
        if let Some(panic) = node.cancel(err, anchor.state.given_cause()) {
            // Inside the second parent's callback loop, which catches this
            // and resumes the first panic on its cancelling thread.
            std::panic::resume_unwind(panic);
        }
    }
}
