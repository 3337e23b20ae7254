//! `after_func` callbacks: one slot per callback, shared by the node that
//! will run it and the handle that can stop it.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::node::CancelNode;
use crate::sync::{lock, AtomicU8, AtomicUsize, Mutex, Ordering};

const PENDING: u8 = 0;
const STARTED: u8 = 1;
const STOPPED: u8 = 2;

/// What a node knows of a registered callback.
pub(crate) trait Callback: Send + Sync {
    /// Runs the callback unless it was stopped or already ran.
    fn run(&self);
    /// Stops it if it has not started; `true` if this call stopped it.
    fn stop(&self) -> bool;
    /// Drops the closure without running it: its node was dropped. A later
    /// `stop()` still returns `true`, since the callback never ran.
    fn discard(&self);
    /// Where the callback sits in its node's list, kept up to date under
    /// that node's lock so that removing it is O(1).
    fn position(&self) -> &AtomicUsize;
}

/// One allocation per callback: the state that decides run-versus-stop,
/// and the closure itself.
struct Slot<F> {
    state: AtomicU8,
    position: AtomicUsize,
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
        let f = lock(&self.f).take();
        drop(f);
    }

    fn position(&self) -> &AtomicUsize {
        &self.position
    }
}

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
    slot: Arc<dyn Callback>,
    node: Weak<CancelNode>,
}

impl AfterFunc {
    pub(crate) fn register<F: FnOnce() + Send + 'static>(
        node: Option<&Arc<CancelNode>>,
        f: F,
    ) -> AfterFunc {
        let slot: Arc<dyn Callback> = Arc::new(Slot {
            state: AtomicU8::new(PENDING),
            position: AtomicUsize::new(0),
            f: Mutex::new(Some(f)),
        });
        let Some(node) = node else {
            // A context that is never done: `f` can never run.
            slot.discard();
            return AfterFunc {
                slot,
                node: Weak::new(),
            };
        };
        if let Some(slot) = node.add_callback(slot.clone()) {
            slot.run();
        }
        AfterFunc {
            slot,
            node: Arc::downgrade(node),
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
        let stopped = self.slot.stop();
        if stopped {
            if let Some(node) = self.node.upgrade() {
                node.remove_callback(&self.slot);
            }
        }
        stopped
    }
}

impl fmt::Debug for AfterFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterFunc").finish_non_exhaustive()
    }
}
