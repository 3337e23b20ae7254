//! `Context`: the public face of a node in the tree.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::after_func::AfterFunc;
use crate::canceller::Canceller;
use crate::done::{Done, Run};
use crate::error::{Cause, Error};
use crate::tree::{
    derive_cancel, derive_detached, derive_grace, derive_merged, derive_value, Detached, Kind,
    Repr, Shape, ValueNode,
};

/// A node in a cancellation tree: it is done when cancelled, when its
/// deadline passes, or when its parent is done, and it carries values.
///
/// `Context` is one word, cheap to clone (one reference-count increment),
/// and can be sent anywhere. The roots, [`background`](Context::background) and
/// [`todo`](Context::todo), are never done and allocate nothing. Every other
/// context is derived from a parent, with `with_*`, and lives while any of
/// its clones, its [`Canceller`], a [`Done`] or a [`Run`] of it lives.
///
/// # Examples
///
/// ```
/// use ctxtree::{Context, Error};
///
/// let root = Context::background();
/// let (parent, cancel) = root.with_cancel();
/// let child = parent.with_value(42u32);
/// assert_eq!(child.value::<u32>(), Some(&42));
///
/// cancel.cancel();
/// assert_eq!(child.err(), Some(Error::Canceled));
/// assert!(!root.is_done());
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) repr: Repr,
}

impl Default for Context {
    /// `Context::default()` is [`Context::background()`].
    fn default() -> Context {
        Context::background()
    }
}

impl Context {
    /// `background` returns the root context: never done, no deadline, no
    /// values, no cause. Its `done()` never resolves. It allocates nothing.
    ///
    /// Use it at the top of `main`, of a server, or of a test.
    ///
    /// # Examples
    ///
    /// ```
    /// let ctx = ctxtree::Context::background();
    /// assert!(!ctx.is_done());
    /// assert_eq!(ctx.to_string(), "context.Background");
    /// ```
    #[doc(alias = "Background")]
    pub fn background() -> Context {
        Context {
            repr: Repr::background(),
        }
    }

    /// `todo` is a root like [`background`](Context::background), used where
    /// the right context is not yet plumbed through. Never done.
    ///
    /// # Examples
    ///
    /// ```
    /// let ctx = ctxtree::Context::todo();
    /// assert_eq!(ctx.to_string(), "context.TODO");
    /// ```
    #[doc(alias = "TODO")]
    pub fn todo() -> Context {
        Context { repr: Repr::todo() }
    }

    /// `with_cancel` derives a child that is done when the returned
    /// [`Canceller`] cancels it or when `self` is done, whichever is first.
    ///
    /// If `self` is already done, the child is born done with the same error
    /// and cause. Dropping the `Canceller` does not cancel; see
    /// [`Canceller::guard`] for that.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert!(!ctx.is_done());
    /// cancel.cancel();
    /// assert!(ctx.is_done());
    /// ```
    #[doc(alias = "WithCancel")]
    pub fn with_cancel(&self) -> (Context, Canceller) {
        let (node, handle) = derive_cancel(self, None);
        (
            Context {
                repr: Repr::cancel(node),
            },
            Canceller::new(handle),
        )
    }

    /// `with_deadline` derives a child that is also done, with
    /// [`Error::DeadlineExceeded`], once `deadline` passes.
    ///
    /// If `self`'s deadline is at or before `deadline`, the child behaves as
    /// [`with_cancel`](Context::with_cancel) and reports the parent's
    /// deadline. A deadline already passed gives a child that is done at
    /// once. Otherwise an `async-io` timer, driven by async-io's own reactor,
    /// cancels the child when the deadline passes, whether or not anyone polls
    /// it; cancelling or dropping the child first deregisters that timer.
    ///
    /// # Precision
    ///
    /// The child may become done a little after `deadline` (timer resolution
    /// and scheduling), never before.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ctxtree::{Context, Error};
    ///
    /// let (ctx, _cancel) = Context::background().with_deadline(Instant::now() + Duration::from_millis(10));
    /// assert_eq!(ctx.wait(), Error::DeadlineExceeded);
    /// ```
    #[doc(alias = "WithDeadline")]
    pub fn with_deadline(&self, deadline: Instant) -> (Context, Canceller) {
        self.deadline_child(deadline, None)
    }

    /// `with_deadline_cause` is [`with_deadline`](Context::with_deadline),
    /// and when the deadline passes, `cause()` reports `cause`. A cancel
    /// through the `Canceller` reports its own cause instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Instant;
    /// use ctxtree::{Context, Error};
    ///
    /// let cause = Arc::new(std::io::Error::other("too slow"));
    /// let (ctx, _cancel) = Context::background().with_deadline_cause(Instant::now(), cause);
    /// assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    /// assert_eq!(ctx.cause().unwrap().to_string(), "too slow");
    /// ```
    #[doc(alias = "WithDeadlineCause")]
    pub fn with_deadline_cause(&self, deadline: Instant, cause: Cause) -> (Context, Canceller) {
        self.deadline_child(deadline, Some(cause))
    }

    /// `with_timeout` is [`with_deadline`](Context::with_deadline)`(now +
    /// timeout)`. A timeout so large that `now + timeout` overflows (such as
    /// `Duration::MAX`) means no deadline, never a panic.
    ///
    /// # Precision
    ///
    /// As for `with_deadline`: never early, possibly a little late.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctxtree::Context;
    ///
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    /// assert!(ctx.deadline().is_some());
    /// let (forever, _cancel) = Context::background().with_timeout(Duration::MAX);
    /// assert!(forever.deadline().is_none());
    /// ```
    #[doc(alias = "WithTimeout")]
    #[doc(alias = "timeout")]
    pub fn with_timeout(&self, timeout: Duration) -> (Context, Canceller) {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.with_deadline(deadline),
            None => self.with_cancel(),
        }
    }

    /// `with_timeout_cause` is [`with_deadline_cause`](Context::with_deadline_cause)`(now +
    /// timeout, cause)`; overflow means no deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use ctxtree::Context;
    ///
    /// let cause = Arc::new(std::io::Error::other("backend too slow"));
    /// let (ctx, _cancel) = Context::background().with_timeout_cause(Duration::from_millis(5), cause);
    /// ctx.wait();
    /// assert_eq!(ctx.cause().unwrap().to_string(), "backend too slow");
    /// ```
    #[doc(alias = "WithTimeoutCause")]
    pub fn with_timeout_cause(&self, timeout: Duration, cause: Cause) -> (Context, Canceller) {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.with_deadline_cause(deadline, cause),
            None => self.with_cancel(),
        }
    }

    fn deadline_child(&self, deadline: Instant, cause: Option<Cause>) -> (Context, Canceller) {
        let (node, handle) = derive_cancel(self, Some((deadline, cause)));
        (
            Context {
                repr: Repr::cancel(node),
            },
            Canceller::new(handle),
        )
    }

    /// `with_value` derives a child that carries `value`, found by its type
    /// with [`value`](Context::value). It is done exactly when `self` is.
    ///
    /// Use a type of your own (a newtype) as the key, so that crates never
    /// clash: the nearest value of the same type shadows farther ones.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// struct RequestId(u64);
    /// let ctx = Context::background().with_value(RequestId(7));
    /// assert_eq!(ctx.value::<RequestId>().map(|r| r.0), Some(7));
    /// ```
    #[doc(alias = "WithValue")]
    pub fn with_value<T: Send + Sync + 'static>(&self, value: T) -> Context {
        Context {
            repr: Repr::value(derive_value(self, value)),
        }
    }

    /// `without_cancel` derives a child that keeps `self`'s values but none
    /// of its cancellation: never done, no deadline, no cause. For work that
    /// must finish even if the request that started it is cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_value(1u8).with_cancel();
    /// let detached = ctx.without_cancel();
    /// cancel.cancel();
    /// assert!(!detached.is_done());
    /// assert_eq!(detached.value::<u8>(), Some(&1));
    /// ```
    #[doc(alias = "WithoutCancel")]
    pub fn without_cancel(&self) -> Context {
        Context {
            repr: Repr::value(derive_detached(self)),
        }
    }

    /// `merge` derives a child of `self` that is also done as soon as
    /// `other` is done: Go's missing `context.Merge`, C#'s linked token.
    ///
    /// The first reason wins: `err()` and `cause()` come from whichever
    /// parent finished first, or from the returned [`Canceller`]. `deadline()`
    /// is the earlier of the two parents'. Values come from `self` only.
    ///
    /// If `other` is already done, the child is born done with its reason. If
    /// `other` can never be done (a root, or below
    /// [`without_cancel`](Context::without_cancel)), nothing is registered on
    /// it and the child costs what `with_cancel` costs. Otherwise the child
    /// is registered on `other` lazily: only once something is attached to
    /// it (a child context, a callback, a `done()` or `wait()` that has to
    /// wait, a merge that uses it as `other`) does `other` link it into a
    /// list of its merged children (no allocation of its own), and from
    /// then on cancelling
    /// `other` reaches the child and its subtree before that `cancel()`
    /// returns, as it reaches `other`'s own children. Before that, the child
    /// has nothing for a cancel to reach, and reading it (`err()`,
    /// `is_done()`, `cause()`) looks at `other` too (one more load): so a
    /// merged context that is only checked and dropped never takes `other`'s
    /// lock, and nobody can tell the difference. Dropping every handle of
    /// the child removes it from both parents at once.
    /// Merging with an ancestor, a descendant or itself is fine: the second
    /// parent never keeps the child alive, so no cycle forms; nor do chains
    /// of merges (each merged with the one before) recurse when they are
    /// cancelled, dropped or printed.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    ///
    /// let (request, _cancel_request) = Context::background().with_value("req-1").with_cancel();
    /// let (shutdown, begin_shutdown) = Context::background().with_cancel();
    /// let (work, _cancel_work) = request.merge(&shutdown);
    ///
    /// assert_eq!(work.value::<&str>(), Some(&"req-1"));
    /// begin_shutdown.cancel();
    /// assert_eq!(work.err(), Some(Error::Canceled));
    /// assert!(!request.is_done());
    /// ```
    #[doc(alias = "Merge")]
    #[doc(alias = "linked_token")]
    pub fn merge(&self, other: &Context) -> (Context, Canceller) {
        let (node, handle) = derive_merged(self, other);
        (
            Context {
                repr: Repr::cancel(node),
            },
            Canceller::new(handle),
        )
    }

    /// `with_grace` derives a child that is done `grace` *after* `self` is
    /// done, rather than with it (or at once by the returned [`Canceller`]):
    /// two-phase shutdown. `self` being done is the soft signal (stop taking
    /// new work); the child, handed to the work already in flight, is the
    /// hard one, which comes when the grace runs out.
    ///
    /// The child is done with `self`'s [`Error`] and `self`'s cause (the
    /// [`Error`] itself if no cause was given), unless its own `Canceller`
    /// came first: the first reason wins, as always. Its values are
    /// `self`'s. Its [`deadline`](Context::deadline) is `self`'s plus
    /// `grace` (none if that overflows), the latest the hard stop can come.
    /// Contexts derived from it are its children as usual: its `Canceller`
    /// cancels them with it.
    ///
    /// * While `self` is live, so is the child. When `self` becomes done, an
    ///   `async-io` timer (as for [`with_deadline`](Context::with_deadline))
    ///   is armed for `now + grace`, and cancels the child when it fires,
    ///   whether or not anyone polls. Unlike other children, the child is not
    ///   done when `self`'s `cancel()` returns.
    /// * If `self` is already done, the grace starts now.
    /// * With `Duration::ZERO`, the child is done as soon as `self` is: by
    ///   the time the `cancel()` that made `self` done returns (it is done
    ///   on that thread, just after `self`'s own waiters are woken), or at
    ///   once if `self` already is.
    /// * If `now + grace` overflows (`Duration::MAX`), the grace never runs
    ///   out: the child ends only by its own `Canceller`, if at all.
    /// * If `self` can never be done (a root, or below
    ///   [`without_cancel`](Context::without_cancel)), nothing is registered
    ///   anywhere: the child is a [`with_cancel`](Context::with_cancel) of
    ///   a root that keeps `self`'s values.
    ///
    /// `self` does not keep the child alive: when every handle of the child
    /// is gone, what it registered on `self` is removed at once and a
    /// running grace timer is disarmed, so a long-lived context with many
    /// short-lived grace children holds memory for the live ones only.
    ///
    /// Go has no such call; it is built there from `WithoutCancel` and
    /// `AfterFunc`.
    ///
    /// # Precision
    ///
    /// As for `with_deadline`: the child may become done a little after
    /// the grace runs out, never before.
    ///
    /// # Examples
    ///
    /// A server stops taking new work on the soft signal, and the work in
    /// flight gets the hard one 200 ms later: a request that finishes in
    /// time completes, one that does not is cut off.
    ///
    /// ```
    /// use std::thread;
    /// use std::time::Duration;
    /// use ctxtree::{Context, Error};
    ///
    /// let (server, shutdown) = Context::background().with_cancel();
    /// let (in_flight, _cancel) = server.with_grace(Duration::from_millis(200));
    ///
    /// // A request handler: `steps` steps of 5 ms, cut off by the hard signal.
    /// let handle = |ctx: Context, steps: u32| {
    ///     thread::spawn(move || {
    ///         for step in 0..steps {
    ///             if let Some(err) = ctx.wait_timeout(Duration::from_millis(5)) {
    ///                 return Err((step, err));
    ///             }
    ///         }
    ///         Ok(steps)
    ///     })
    /// };
    /// let quick = handle(in_flight.clone(), 4);
    /// let slow = handle(in_flight.clone(), u32::MAX);
    ///
    /// // The soft signal: the accept loop, which watches `server`, stops.
    /// shutdown.cancel();
    /// assert!(server.is_done());
    ///
    /// assert_eq!(quick.join().unwrap(), Ok(4));
    /// let (_steps, err) = slow.join().unwrap().unwrap_err();
    /// assert_eq!(err, Error::Canceled);
    /// assert_eq!(in_flight.err(), Some(Error::Canceled));
    /// assert_eq!(in_flight.to_string(), "context.Background.WithCancel.WithGrace(200ms)");
    /// ```
    ///
    /// The parent's reason carries over, and so does a deadline:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use ctxtree::{Context, Error};
    ///
    /// let (request, _c) = Context::background().with_timeout(Duration::from_millis(10));
    /// let (cleanup, _c) = request.with_grace(Duration::from_millis(10));
    /// assert_eq!(cleanup.deadline(), request.deadline().map(|d| d + Duration::from_millis(10)));
    /// assert_eq!(cleanup.wait(), Error::DeadlineExceeded);
    /// assert!(request.is_done());
    ///
    /// let (parent, cancel) = Context::background().with_cancel();
    /// let (now, _c) = parent.with_grace(Duration::ZERO);
    /// cancel.cancel_with_cause(Arc::new(std::io::Error::other("going down")));
    /// assert_eq!(now.cause().unwrap().to_string(), "going down");
    /// ```
    #[doc(alias = "graceful_shutdown")]
    #[doc(alias = "soft_cancel")]
    #[doc(alias = "two_phase_shutdown")]
    #[doc(alias = "drain")]
    #[doc(alias = "WithoutCancel")]
    #[doc(alias = "AfterFunc")]
    pub fn with_grace(&self, grace: Duration) -> (Context, Canceller) {
        let (node, handle) = derive_grace(self, grace);
        (
            Context {
                repr: Repr::cancel(node),
            },
            Canceller::new(handle),
        )
    }

    /// `done` returns a new future that resolves with [`err`](Context::err)
    /// once this context is done; at once if it already is. It never resolves
    /// for a context that cannot be cancelled.
    ///
    /// [`Done`] is `Unpin` and fused, so it can go straight into
    /// `futures::select!`. Waiting costs no thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let done = ctx.done();
    /// cancel.cancel();
    /// assert_eq!(futures::executor::block_on(done), Error::Canceled);
    /// ```
    ///
    /// # In a loop
    ///
    /// A pending `Done` registers one `event-listener` listener on its first
    /// poll, which costs about as much as deriving a child. In a `select!`
    /// loop, make the `Done` once, outside the loop, and select on
    /// `&mut done`: every turn after the first then polls a registered
    /// listener, which is cheap.
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    /// use futures::{channel::mpsc, executor::block_on, select, StreamExt};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let (tx, mut rx) = mpsc::unbounded::<u32>();
    /// for n in 1..=3 {
    ///     tx.unbounded_send(n).unwrap();
    /// }
    /// let sum = block_on(async {
    ///     let mut done = ctx.done(); // once, not on every turn
    ///     let mut sum = 0;
    ///     loop {
    ///         select! {
    ///             err = &mut done => return Err(err),
    ///             n = rx.next() => match n {
    ///                 Some(n) => sum += n,
    ///                 None => return Ok(sum),
    ///             },
    ///         }
    ///         if sum == 6 {
    ///             cancel.cancel(); // the next turn sees it
    ///         }
    ///     }
    /// });
    /// assert_eq!(sum, Err(Error::Canceled));
    /// ```
    #[doc(alias = "Done")]
    pub fn done(&self) -> Done {
        Done::new(self.repr.anchor())
    }

    /// `err` returns `None` while the context is live, and then why it is
    /// done, forever the same. One atomic load (two for a live merged
    /// context, which reads its second parent too: see
    /// [`merge`](Context::merge)).
    ///
    /// While another thread (or a deadline) cancels an ancestor, a context
    /// can be seen done a moment before its descendants are, as with Go's
    /// `Done` channel: to know that a descendant is done, ask it or wait on
    /// it, not its ancestor. A `cancel()` that wins returns only once the
    /// whole subtree is done, and waiters are woken only then.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// assert_eq!(ctx.err(), None);
    /// cancel.cancel();
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// ```
    #[doc(alias = "Err")]
    #[inline]
    pub fn err(&self) -> Option<Error> {
        self.repr.anchor().and_then(|node| node.err())
    }

    /// `is_done` is `err().is_some()`: one atomic load, no lock (two loads
    /// for a live merged context).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// assert!(ctx.is_done());
    /// ```
    #[inline]
    pub fn is_done(&self) -> bool {
        self.repr.anchor().is_some_and(|node| node.is_done())
    }

    /// `cause` returns `None` while live; then the cause given to
    /// [`Canceller::cancel_with_cause`] or to a `with_*_cause` deadline, the
    /// parent's cause if the parent cancelled this context, and otherwise the
    /// [`Error`] itself, as Go's `context.Cause` does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use ctxtree::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let child = ctx.with_value(1u8);
    /// cancel.cancel_with_cause(Arc::new(std::io::Error::other("shutting down")));
    /// assert_eq!(child.cause().unwrap().to_string(), "shutting down");
    ///
    /// let (plain, cancel) = Context::background().with_cancel();
    /// cancel.cancel();
    /// assert_eq!(plain.cause().unwrap().downcast_ref::<Error>(), Some(&Error::Canceled));
    /// ```
    #[doc(alias = "Cause")]
    pub fn cause(&self) -> Option<Cause> {
        let node = self.repr.anchor()?;
        let err = node.err()?;
        Some(node.state.given_cause().unwrap_or_else(|| Arc::new(err)))
    }

    /// `deadline` returns the earliest deadline on the path to the root, if
    /// any.
    ///
    /// Deadline contexts keep theirs; the others ask their parent, as in Go,
    /// so the cost grows with the number of `with_cancel` and `with_value`
    /// levels between this context and the nearest deadline (or the root).
    /// Keeping no deadline is part of what makes a `with_cancel` node small.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ctxtree::Context;
    ///
    /// let soon = Instant::now() + Duration::from_secs(1);
    /// let (parent, _c1) = Context::background().with_deadline(soon);
    /// let (child, _c2) = parent.with_timeout(Duration::from_secs(60));
    /// assert_eq!(child.deadline(), Some(soon));
    /// ```
    #[doc(alias = "Deadline")]
    pub fn deadline(&self) -> Option<Instant> {
        self.repr.anchor().and_then(|node| node.deadline())
    }

    /// `value` finds the nearest value of type `T`, walking towards the root.
    /// Siblings never see each other's values.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Context;
    ///
    /// let outer = Context::background().with_value("outer");
    /// let inner = outer.with_value("inner");
    /// assert_eq!(inner.value::<&str>(), Some(&"inner"));
    /// assert_eq!(outer.value::<&str>(), Some(&"outer"));
    /// assert_eq!(outer.value::<u32>(), None);
    /// ```
    #[doc(alias = "Value")]
    pub fn value<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let mut cur = self;
        loop {
            if let Shape::Value(node) = cur.repr.shape() {
                if let Some(value) = ValueNode::value(node).downcast_ref::<T>() {
                    return Some(value);
                }
            }
            cur = cur.repr.parent()?;
        }
    }

    /// `after_func` arranges for `f` to run once, after this context is done,
    /// on the thread that completes the cancellation (for a deadline, the
    /// `async-io` driver's thread). If the context is already done, `f` runs
    /// now, on this thread. `f` should be short and must not block.
    ///
    /// The returned [`AfterFunc`] can [`stop`](AfterFunc::stop) it. It does
    /// not keep the context alive: if every handle of the context is dropped
    /// before it is done, `f` is dropped without running.
    ///
    /// # Panics
    ///
    /// A panic in `f` does not stop the rest of the tree from being cancelled
    /// nor the other callbacks from running. The first panic is then resumed
    /// on the thread that called `cancel()`; on the timer's thread it is
    /// reported by the panic hook and otherwise swallowed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use ctxtree::Context;
    ///
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let flag = ran.clone();
    /// let _handle = ctx.after_func(move || flag.store(true, Ordering::SeqCst));
    /// cancel.cancel();
    /// assert!(ran.load(Ordering::SeqCst));
    /// ```
    #[doc(alias = "AfterFunc")]
    pub fn after_func<F: FnOnce() + Send + 'static>(&self, f: F) -> AfterFunc {
        AfterFunc::register(self.repr.anchor(), f)
    }

    /// `run` races `fut` against this context: `Err(err)` if the context is
    /// done first (then `fut` is dropped), `Ok(output)` if `fut` finishes
    /// first. The context is polled first, so a done context never polls
    /// `fut`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let ok = futures::executor::block_on(ctx.run(async { 7 }));
    /// assert_eq!(ok, Ok(7));
    /// cancel.cancel();
    /// let err = futures::executor::block_on(ctx.run(async { 7 }));
    /// assert_eq!(err, Err(Error::Canceled));
    /// ```
    pub fn run<F: Future>(&self, fut: F) -> Run<F> {
        Run::new(self.done(), fut)
    }

    /// `wait` blocks this thread until the context is done and returns
    /// [`err`](Context::err). For a context that can never be done, it never
    /// returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Error};
    ///
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// std::thread::spawn(move || cancel.cancel());
    /// assert_eq!(ctx.wait(), Error::Canceled);
    /// ```
    pub fn wait(&self) -> Error {
        // With no deadline, `wait` returns only once the node is done (and
        // never for a context that cannot be done), so the fallback is
        // unreachable; it keeps this path free of panics.
        crate::done::wait(self.repr.anchor(), None).unwrap_or(Error::Canceled)
    }

    /// `wait_timeout` blocks until the context is done or `timeout` has
    /// elapsed; `None` means the time ran out first. A timeout too large to
    /// add to now is the same as [`wait`](Context::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctxtree::Context;
    ///
    /// let (ctx, _cancel) = Context::background().with_cancel();
    /// assert_eq!(ctx.wait_timeout(Duration::from_millis(1)), None);
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Error> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => crate::done::wait(self.repr.anchor(), Some(deadline)),
            None => Some(self.wait()),
        }
    }
}

/// Prints the path from the root, as Go's `String()` does:
/// `context.Background.WithCancel.WithValue(u32)`.
impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// What is left to print, last first: a work list instead of
        /// recursion, since merged contexts nest their second parent's path
        /// and such nesting can be as deep as a chain.
        enum Step<'a> {
            /// The whole path from the root to this context.
            Path(&'a Context),
            /// This context's own segment.
            Segment(&'a Context),
            /// The end of a `.Merge(…)`.
            Close,
        }
        let mut todo = vec![Step::Path(self)];
        while let Some(step) = todo.pop() {
            let ctx = match step {
                Step::Close => {
                    f.write_str(")")?;
                    continue;
                }
                Step::Path(ctx) => {
                    // Pushed leaf first, so the root's segment comes out first.
                    let mut cur = Some(ctx);
                    while let Some(ctx) = cur {
                        todo.push(Step::Segment(ctx));
                        cur = ctx.repr.parent();
                    }
                    continue;
                }
                Step::Segment(ctx) => ctx,
            };
            match ctx.repr.shape() {
                Shape::Background => f.write_str("context.Background")?,
                Shape::Todo => f.write_str("context.TODO")?,
                Shape::Cancel(node) => match node.kind() {
                    Kind::Cancel => f.write_str(".WithCancel")?,
                    Kind::Deadline(when) => write_deadline(f, when)?,
                    Kind::Grace(period) => write!(f, ".WithGrace({period:?})")?,
                    Kind::Merge(other) => {
                        f.write_str(".Merge(")?;
                        todo.push(Step::Close);
                        todo.push(Step::Path(other));
                    }
                },
                Shape::Value(node) if ValueNode::value(node).is::<Detached>() => {
                    f.write_str(".WithoutCancel")?
                }
                Shape::Value(node) => write!(f, ".WithValue({})", node.get().type_name)?,
            }
        }
        Ok(())
    }
}

/// Go prints the wall-clock deadline and the time left; an `Instant` has no
/// wall clock, so we print the time left (negative once passed).
fn write_deadline(f: &mut fmt::Formatter<'_>, when: Instant) -> fmt::Result {
    let now = Instant::now();
    if when >= now {
        write!(f, ".WithDeadline({:?})", when - now)
    } else {
        write!(f, ".WithDeadline(-{:?})", now - when)
    }
}

/// The path, as `Display` prints it, and the state: `live` or the error.
impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state: &dyn fmt::Display = match self.err() {
            None => &"live",
            Some(Error::Canceled) => &"context canceled",
            Some(Error::DeadlineExceeded) => &"context deadline exceeded",
        };
        f.debug_struct("Context")
            .field("path", &format_args!("{self}"))
            .field("state", &format_args!("{state}"))
            .finish()
    }
}
