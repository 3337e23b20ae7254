//! `Canceller` and `CancelGuard`: the right to cancel a context.

use crate::error::{Cause, Error};
use crate::tree::{self, Node, NodeRef};
use std::fmt;

/// The right to cancel one context (Go's `CancelFunc`), returned with it by
/// `with_cancel`, `with_deadline` and `with_timeout`.
///
/// Cancelling is idempotent and first-wins: later calls, from any thread,
/// change nothing. Dropping a `Canceller` does **not** cancel; use
/// [`guard`](Canceller::guard) for that. A `Canceller` keeps its context's
/// node alive.
///
/// # Examples
///
/// ```
/// use ctxtree::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let other = cancel.clone();
/// std::thread::spawn(move || other.cancel()).join().unwrap();
/// assert!(ctx.is_done());
/// ```
#[derive(Clone)]
pub struct Canceller {
    node: NodeRef<Node>,
}

impl Canceller {
    pub(crate) fn new(node: NodeRef<Node>) -> Canceller {
        Canceller { node }
    }

    /// `cancel` makes the context, and every context derived from it, done
    /// with [`Error::Canceled`], unless it already is.
    ///
    /// # Guarantees
    ///
    /// * A `cancel` that makes the context done returns only once every
    ///   descendant is done (those below
    ///   [`without_cancel`](crate::Context::without_cancel) excepted, and
    ///   those of [`with_grace`](crate::Context::with_grace), whose grace
    ///   only starts then), and
    ///   once the waiters and callbacks of the nodes it finished have been
    ///   woken and run. This holds even while other threads cancel parts of
    ///   the subtree at the same moment: where another thread's walk got to
    ///   a descendant first, this call finishes what is below it too,
    ///   rather than wait for that thread. (Waking that descendant's waiters
    ///   and running its callbacks stay with the thread that finished it.)
    /// * A `cancel` that finds the context already done, or being cancelled
    ///   by another thread, returns at once and changes nothing: it never
    ///   blocks on another thread, so a callback may cancel any context,
    ///   its own node's ancestors included.
    /// * A descendant that another thread is reading may be seen done a
    ///   moment before its own descendants are; see
    ///   [`Context::err`](crate::Context::err).
    ///
    /// # Panics
    ///
    /// Resumes the first panic of an [`after_func`](crate::Context::after_func)
    /// callback, after the whole subtree is cancelled and every other
    /// callback has run.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    ///
    /// let (parent, cancel) = Context::background().with_cancel();
    /// let (child, _c) = parent.with_cancel();
    /// cancel.cancel();
    /// assert_eq!(child.err(), Some(Error::Canceled));
    /// ```
    #[doc(alias = "CancelFunc")]
    pub fn cancel(&self) {
        self.cancel_as(Error::Canceled, None);
    }

    /// `cancel_with_cause` is [`cancel`](Canceller::cancel) that also
    /// records `cause`, which [`Context::cause`](crate::Context::cause)
    /// then reports here and in every descendant. If the context is already
    /// done, the first cause stays.
    ///
    /// # Panics
    ///
    /// As for [`cancel`](Canceller::cancel).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ctxtree::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel_with_cause(Arc::new(std::io::Error::other("first")));
    /// cancel.cancel_with_cause(Arc::new(std::io::Error::other("second")));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "first");
    /// ```
    #[doc(alias = "CancelCauseFunc")]
    pub fn cancel_with_cause(&self, cause: Cause) {
        self.cancel_as(Error::Canceled, Some(cause));
    }

    fn cancel_as(&self, err: Error, cause: Option<Cause>) {
        if let Some(panic) = tree::cancel(&self.node, err, cause) {
            std::panic::resume_unwind(panic);
        }
    }

    /// `guard` turns this `Canceller` into a [`CancelGuard`] that cancels the
    /// context when it is dropped, so that leaving a scope, by return, `?`
    /// or panic, always cancels.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// {
    ///     let _guard = cancel.guard();
    /// }
    /// assert!(ctx.is_done());
    /// ```
    #[doc(alias = "drop_guard")]
    pub fn guard(self) -> CancelGuard {
        CancelGuard {
            node: Some(self.node),
        }
    }
}

impl fmt::Debug for Canceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Canceller")
            .field("err", &self.node.err())
            .finish()
    }
}

/// Cancels its context when dropped. Made by [`Canceller::guard`].
///
/// # Panics
///
/// Dropping it resumes a callback's panic as
/// [`Canceller::cancel`] does, except while the thread is already panicking,
/// when that panic is swallowed (a second panic would abort).
///
/// # Examples
///
/// ```
/// use ctxtree::Context;
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let guard = cancel.guard();
/// drop(guard);
/// assert!(ctx.is_done());
/// ```
#[must_use = "a CancelGuard cancels as soon as it is dropped"]
pub struct CancelGuard {
    node: Option<NodeRef<Node>>,
}

impl CancelGuard {
    /// `disarm` gives back the [`Canceller`] without cancelling.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let cancel = cancel.guard().disarm();
    /// assert!(!ctx.is_done());
    /// cancel.cancel();
    /// assert!(ctx.is_done());
    /// ```
    pub fn disarm(mut self) -> Canceller {
        match self.node.take() {
            Some(node) => Canceller { node },
            None => unreachable!("a guard holds its node until dropped or disarmed"),
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            if let Some(panic) = tree::cancel(&node, Error::Canceled, None) {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

impl fmt::Debug for CancelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelGuard").finish_non_exhaustive()
    }
}
