//! `AfterFunc`: the handle of an `after_func` callback (the callback's slot
//! and its rules are in `tree/callbacks.rs`).

use std::fmt;
use std::sync::Arc;

use crate::tree::{register_callback, stop_callback, Callback, Node, NodeRef};

/// The handle of a callback registered with
/// [`Context::after_func`](crate::Context::after_func); Go's `stop` function.
///
/// Dropping it does not stop the callback, and it does not keep the context
/// alive.
///
/// # Examples
///
/// ```
/// use ctxtree::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let handle = ctx.after_func(|| unreachable!("stopped before the cancel"));
/// assert!(handle.stop());
/// cancel.cancel();
/// assert!(!handle.stop());
/// ```
pub struct AfterFunc {
    /// Shared with the node's list while the callback is registered; it
    /// reaches the node through a back-reference that does not keep it.
    slot: Arc<dyn Callback>,
}

impl AfterFunc {
    pub(crate) fn register<F: FnOnce() + Send + 'static>(
        node: Option<&NodeRef<Node>>,
        f: F,
    ) -> AfterFunc {
        AfterFunc {
            slot: register_callback(node, f),
        }
    }

    /// `stop` keeps the callback from running. It returns `true` if this
    /// call stopped it, and `false` if the callback had already started or
    /// was already stopped. Once stopped, the closure is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// let (ctx, _cancel) = Context::background().with_cancel();
    /// let handle = ctx.after_func(|| {});
    /// assert!(handle.stop());
    /// assert!(!handle.stop());
    /// ```
    pub fn stop(&self) -> bool {
        stop_callback(&self.slot)
    }
}

impl fmt::Debug for AfterFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterFunc").finish_non_exhaustive()
    }
}
