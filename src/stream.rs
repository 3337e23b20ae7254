//! Streams that end when a context is done.
//!
//! [`until_done`] is [`Context::run`] for a
//! [`Stream`]: it yields the stream's items until the context is done, then
//! ends, and [`UntilDone::err`] tells whether the context ended it.
//!
//! # Examples
//!
//! ```
//! use futures::{executor::block_on, StreamExt};
//! use ctxtree::{stream::until_done, Context};
//!
//! let (ctx, cancel) = Context::background().with_cancel();
//! let mut ticks = until_done(futures::stream::iter(0..), &ctx);
//! block_on(async {
//!     assert_eq!(ticks.next().await, Some(0));
//!     assert_eq!(ticks.next().await, Some(1));
//!     cancel.cancel();
//!     assert_eq!(ticks.next().await, None);
//! });
//! assert_eq!(ticks.err(), Some(ctxtree::Error::Canceled));
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_core::stream::{FusedStream, Stream};

use crate::context::Context;
use crate::done::Done;
use crate::error::Error;

/// `until_done` wraps `stream` so that it yields `stream`'s items until `ctx`
/// is done, and then ends.
///
/// Each poll looks at the context first, as [`Context::run`] does: once `ctx`
/// is done, no further item is yielded, even one the inner stream has ready,
/// and a context that is already done ends the stream on its first poll
/// without polling `stream` at all. When the context ends it, `stream` is
/// dropped at once (a channel receiver, say, is closed then, so its senders
/// learn of it); when `stream` ends by itself, it is dropped too. Either way
/// the result is a [`FusedStream`] that yields `None` from then on, and
/// [`UntilDone::err`] tells which of the two ended it.
///
/// Waiting costs nothing extra: the stream is woken by the inner stream or by
/// the context's [`Done`], whichever is first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use futures::{executor::block_on, StreamExt};
/// use ctxtree::{stream::until_done, Context, Error};
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
/// let mut forever = until_done(futures::stream::pending::<u8>(), &ctx);
/// assert_eq!(block_on(forever.next()), None);
/// assert_eq!(forever.err(), Some(Error::DeadlineExceeded));
/// ```
#[doc(alias = "take_until")]
pub fn until_done<S: Stream>(stream: S, ctx: &Context) -> UntilDone<S> {
    UntilDone {
        stream: Some(stream),
        done: ctx.done(),
        err: None,
    }
}

pin_project_lite::pin_project! {
    /// `UntilDone` is the stream returned by [`until_done`]: the inner
    /// stream's items until its context is done.
    ///
    /// Polled, it checks the context first and then the inner stream. It
    /// ends, for good, when either the context is done or the inner stream
    /// ends, and drops the inner stream then.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::{executor::block_on, StreamExt};
    /// use ctxtree::{stream::until_done, Context};
    ///
    /// let ctx = Context::background();
    /// let items: Vec<u8> = block_on(until_done(futures::stream::iter([1, 2, 3]), &ctx).collect());
    /// assert_eq!(items, [1, 2, 3]);
    /// ```
    #[must_use = "streams do nothing unless polled"]
    pub struct UntilDone<S> {
        // `None` once the stream has ended, for either reason.
        #[pin]
        stream: Option<S>,
        done: Done,
        err: Option<Error>,
    }
}

impl<S> UntilDone<S> {
    /// `err` returns the context's error if the context ended the stream, and
    /// `None` while the stream still yields items or if the inner stream
    /// ended by itself first.
    ///
    /// It reports what this stream saw, not the context's current state: a
    /// context that becomes done after the inner stream ended leaves it
    /// `None`, and so does one that is done but that this stream has not
    /// polled since.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures::{executor::block_on, StreamExt};
    /// use ctxtree::{stream::until_done, Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut finite = until_done(futures::stream::iter([1]), &ctx);
    /// assert_eq!(block_on(finite.next()), Some(1));
    /// assert_eq!(block_on(finite.next()), None);
    /// assert_eq!(finite.err(), None); // the inner stream ended first
    ///
    /// let mut endless = until_done(futures::stream::repeat(1), &ctx);
    /// cancel.cancel();
    /// assert_eq!(block_on(endless.next()), None);
    /// assert_eq!(endless.err(), Some(Error::Canceled));
    /// ```
    pub fn err(&self) -> Option<Error> {
        self.err
    }
}

impl<S: Stream> Stream for UntilDone<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        // Ended: never poll the inner stream, nor the completed `Done`, again.
        let Some(stream) = this.stream.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        // The context first. A pending `Done` has registered `cx`'s waker,
        // so a cancel from now on wakes this task even if the inner stream
        // never does.
        if let Poll::Ready(err) = Pin::new(&mut *this.done).poll(cx) {
            *this.err = Some(err);
            this.stream.set(None);
            return Poll::Ready(None);
        }
        match stream.poll_next(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Ready(None) => {
                this.stream.set(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.stream {
            // The context may end it at any time: no lower bound.
            Some(stream) => (0, stream.size_hint().1),
            None => (0, Some(0)),
        }
    }
}

impl<S: Stream> FusedStream for UntilDone<S> {
    fn is_terminated(&self) -> bool {
        self.stream.is_none()
    }
}

impl<S> fmt::Debug for UntilDone<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntilDone")
            .field("terminated", &self.stream.is_none())
            .field("err", &self.err)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
