//! Polling a future by hand: once, with a waker that counts its wakes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

/// Polls `fut` once with a waker that does nothing.
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = TaskContext::from_waker(futures::task::noop_waker_ref());
    Pin::new(fut).poll(&mut cx)
}

/// A waker that counts how often it (or any clone of it) is woken, so a
/// test can check that a wakeup came, and came once.
pub struct CountingWaker {
    count: Arc<Count>,
    waker: Waker,
}

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    /// A waker not woken yet.
    pub fn new() -> Self {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        CountingWaker { count, waker }
    }

    /// How often it has been woken so far.
    pub fn wakes(&self) -> usize {
        self.count.0.load(Ordering::SeqCst)
    }

    /// The waker itself.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Polls `fut` once with this waker.
    pub fn poll<F: Future + Unpin>(&self, fut: &mut F) -> Poll<F::Output> {
        let mut cx = TaskContext::from_waker(&self.waker);
        Pin::new(fut).poll(&mut cx)
    }
}

impl Default for CountingWaker {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a fresh `ctx.done()` is pending when polled, and still pending
/// when polled again (as the `Done` of a context that is never done is).
pub fn done_stays_pending(ctx: &ctxtree::Context) -> bool {
    let mut done = ctx.done();
    poll_once(&mut done).is_pending() && poll_once(&mut done).is_pending()
}

/// Pending once (waking itself at once), then ready: lets tasks interleave
/// without a timer, on any executor.
pub fn yield_once() -> YieldOnce {
    YieldOnce(false)
}

/// The future of [`yield_once`].
pub struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
