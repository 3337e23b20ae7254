//! Waiting for a context: the `Done` future, `Run`, and blocking waits.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use event_listener::{EventListener, Listener};
use futures_core::future::FusedFuture;

use crate::error::Error;
use crate::tree::{Node, NodeRef};

/// The future returned by [`Context::done`](crate::Context::done): resolves
/// with the context's [`Error`] once it is done.
///
/// It is `Unpin` and [`FusedFuture`], so `futures::select!` takes it as is.
/// It holds the context's node alive (and linked in the tree), so a pending
/// `Done` still resolves when an ancestor is cancelled. Dropping a pending
/// `Done` leaves nothing registered.
///
/// # Cancellation safety
///
/// Dropping it at any time is fine; a new `done()` observes the same state.
///
/// # Examples
///
/// ```
/// use futures::{executor::block_on, select, FutureExt};
/// use ctxtree::{Context, Error};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let got = block_on(async {
///     select! {
///         err = ctx.done() => Err(err),
///         out = futures::future::pending::<u8>().fuse() => Ok(out),
///     }
/// });
/// assert_eq!(got, Err(Error::Canceled));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Done {
    /// First, so that it is dropped before the node it listens to.
    listener: Option<EventListener>,
    /// `None` for a context that can never be done, or that already was
    /// when this `Done` was made (then `ready` holds the error). May be the
    /// node's last handle.
    node: Option<NodeRef<Node>>,
    ready: Option<Error>,
    terminated: bool,
}

impl Done {
    pub(crate) fn new(node: Option<&NodeRef<Node>>) -> Done {
        // A done node needs no reference: its error never changes.
        let ready = node.and_then(|n| n.err());
        Done {
            node: if ready.is_some() { None } else { node.cloned() },
            ready,
            listener: None,
            terminated: false,
        }
    }
}

impl Future for Done {
    type Output = Error;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let this = self.get_mut();
        if let Some(err) = this.ready {
            this.terminated = true;
            return Poll::Ready(err);
        }
        let Some(node) = &this.node else {
            return Poll::Pending;
        };
        loop {
            // Fast path, and the re-check after every wakeup: one load.
            if let Some(err) = node.err() {
                this.listener = None;
                this.terminated = true;
                return Poll::Ready(err);
            }
            match &mut this.listener {
                None => {
                    // Register first, then flag the state. No wakeup is lost:
                    // the flag lives in the state word that the cancel's CAS
                    // changes, so one of them sees the other (`StateCell::mark`
                    // says why even a plain load of an already-set flag is
                    // enough). Either we see `done` here, or the canceller
                    // sees the flag after our listener is in the list and
                    // notifies it.
                    this.listener = Some(node.event.listen());
                    if let Some(err) = Node::mark_listened(node) {
                        this.listener = None;
                        this.terminated = true;
                        return Poll::Ready(err);
                    }
                }
                Some(listener) => match Pin::new(listener).poll(cx) {
                    // Notified: the loop re-checks the state. The listener is
                    // dropped first: it must not be polled after it completed.
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

impl FusedFuture for Done {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field(
                "err",
                &self
                    .ready
                    .or_else(|| self.node.as_ref().and_then(|n| n.err())),
            )
            .finish()
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`Context::run`](crate::Context::run): `fut`
    /// raced against the context.
    ///
    /// Resolves to `Ok(output)` if `fut` finishes first and `Err(err)` if the
    /// context is done first; the context is polled first, and `fut` is
    /// dropped as soon as the context wins.
    ///
    /// # Panics
    ///
    /// Polling it again after it resolved panics, as most futures do.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// let res = futures::executor::block_on(ctx.run(futures::future::pending::<()>()));
    /// assert_eq!(res, Err(Error::Canceled));
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct Run<F> {
        done: Done,
        #[pin]
        fut: Option<F>,
    }
}

impl<F> Run<F> {
    pub(crate) fn new(done: Done, fut: F) -> Run<F> {
        Run {
            done,
            fut: Some(fut),
        }
    }
}

impl<F: Future> Future for Run<F> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.fut.is_none() {
            panic!("`Run` polled after it resolved");
        }
        if let Poll::Ready(err) = Pin::new(&mut *this.done).poll(cx) {
            this.fut.set(None);
            return Poll::Ready(Err(err));
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            unreachable!("checked above")
        };
        match fut.poll(cx) {
            Poll::Ready(out) => {
                this.fut.set(None);
                Poll::Ready(Ok(out))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> FusedFuture for Run<F>
where
    F: Future,
{
    fn is_terminated(&self) -> bool {
        self.fut.is_none()
    }
}

impl<F> fmt::Debug for Run<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Blocks until `node` is done or `deadline` passes. A context that can
/// never be done waits for the deadline only.
pub(crate) fn wait(node: Option<&NodeRef<Node>>, deadline: Option<Instant>) -> Option<Error> {
    let Some(node) = node else {
        match deadline {
            Some(deadline) => {
                // Sleep in a loop: `sleep` may wake early.
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left);
                }
                return None;
            }
            None => loop {
                std::thread::park();
            },
        }
    };
    loop {
        if let Some(err) = node.err() {
            return Some(err);
        }
        // Same protocol as `Done::poll`: register, flag, then block.
        let listener = node.event.listen();
        if let Some(err) = Node::mark_listened(node) {
            return Some(err);
        }
        match deadline {
            None => listener.wait(),
            Some(deadline) => {
                if listener.wait_deadline(deadline).is_none() {
                    return node.err();
                }
            }
        }
    }
}
