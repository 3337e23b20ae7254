//! `Group`: Go's `errgroup`, without an executor.
//!
//! Tasks are futures. Waiting on the group drives all of them inside the
//! waiting future, as `join_all` does, so it works on any executor and under
//! `futures::executor::block_on`. The first error cancels the group's
//! context, with that error as the cause.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use crate::canceller::Canceller;
use crate::context::Context;
use crate::error::Cause;
use crate::sync::{lock, AtomicBool, Mutex, Ordering};
use crate::tree::Panic;

type Task<E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'static>>;

/// Turns the group's first error into the cause it cancels its context with.
/// Picked by [`Group::new`], where the error type's [`GroupError`] impl is
/// known, so that nothing else needs that bound.
type ToCause<E> = fn(Arc<E>) -> Cause;

/// `GroupError` is implemented by the error types a [`Group`] accepts; the
/// marker `M` says how the error becomes the group context's
/// [`cause`](Context::cause). It is sealed: the two impls below are all
/// there is.
///
/// * [`AsError`]: any `E: Error + Send + Sync + 'static` (an
///   [`io::Error`](std::io::Error), your own error enum, or a
///   [`Cause`]). The cause is the very `Arc<E>` that [`Wait`] resolves to,
///   so it downcasts to `E`.
/// * [`AsDynError`]: an owning handle to a boxed
///   `dyn Error + Send + Sync + 'static`, one that dereferences (mutably) to
///   it and is `Debug + Display + Send + Sync + 'static`:
///   `anyhow::Error` and `Box<dyn Error + Send + Sync>`. These are not
///   `Error` themselves, so the cause is a [`TaskError<E>`] holding the
///   same `Arc<E>` that `Wait` resolves to: downcast the cause to
///   `TaskError<E>`.
///
/// The error types applications use match exactly one impl (an
/// `Arc<dyn Error + Send + Sync>` is an `Error` and dereferences only
/// immutably; `anyhow::Error` and `Box<dyn Error + Send + Sync>` are not
/// `Error`s), so [`Group::new`] infers `M` from the error type alone: no
/// call site names it.
///
/// # Caveats
///
/// A `Box<dyn Error>` without `+ Send + Sync` is rejected at compile time:
/// a group's error crosses threads as its context's cause, and a
/// `Box<dyn Error>` may not. Box the error as `Box<dyn Error + Send + Sync>`
/// instead (`?` converts every `Error + Send + Sync` into it).
///
/// ```compile_fail,E0277
/// use ctxtree::{Context, Group};
///
/// let group = Group::new(&Context::background());
/// group.spawn(async { Err::<(), Box<dyn std::error::Error>>("no".into()) });
/// ```
///
/// A type of your own that is an `Error` and also dereferences mutably to a
/// `dyn Error + Send + Sync` would match both impls: then name the marker,
/// `Group::<MyError>::new::<AsError>(&ctx)`.
///
/// # Examples
///
/// The same code for the three kinds of error; none names the marker:
///
/// ```
/// use std::sync::Arc;
/// use ctxtree::{Context, Group, TaskError};
///
/// type BoxError = Box<dyn std::error::Error + Send + Sync>;
///
/// // An error type of its own: the cause is the error itself.
/// let group = Group::new(&Context::background());
/// let ctx = group.context().clone();
/// group.spawn(async { Err(std::io::Error::other("disk full")) });
/// let err = futures::executor::block_on(group.wait()).unwrap_err();
/// let cause = ctx.cause().unwrap();
/// assert!(cause.is::<std::io::Error>());
///
/// // anyhow: the cause is a `TaskError` holding the same `Arc`.
/// let group = Group::new(&Context::background());
/// let ctx = group.context().clone();
/// group.spawn(async { Err(anyhow::anyhow!("backend down")) });
/// let err = futures::executor::block_on(group.wait()).unwrap_err();
/// let cause = ctx.cause().unwrap();
/// let task_err = cause.downcast_ref::<TaskError<anyhow::Error>>().unwrap();
/// assert!(Arc::ptr_eq(task_err.inner(), &err));
///
/// // A boxed error: the same.
/// let group = Group::new(&Context::background());
/// let ctx = group.context().clone();
/// group.spawn(async { Err::<(), BoxError>("timed out".into()) });
/// let err = futures::executor::block_on(group.wait()).unwrap_err();
/// let cause = ctx.cause().unwrap();
/// let task_err = cause.downcast_ref::<TaskError<BoxError>>().unwrap();
/// assert!(Arc::ptr_eq(task_err.inner(), &err));
/// assert_eq!(cause.to_string(), "timed out");
/// ```
#[doc(alias = "errgroup")]
pub trait GroupError<M>: sealed::Sealed<M> + Send + Sync + 'static {}

/// The [`GroupError`] marker of error types that are an
/// [`Error`](std::error::Error) themselves: the cause is the error.
///
/// Inferred by [`Group::new`]; name it only to settle a type that matches
/// both markers (see [`GroupError`]).
///
/// # Examples
///
/// ```
/// use ctxtree::{AsError, Context, Group};
///
/// // Never needed for `io::Error`, but allowed:
/// let group = Group::<std::io::Error>::new::<AsError>(&Context::background());
/// assert!(futures::executor::block_on(group.wait()).is_ok());
/// ```
#[derive(Debug)]
pub enum AsError {}

/// The [`GroupError`] marker of owning handles to a boxed
/// `dyn Error + Send + Sync` (`anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`): the cause is a [`TaskError`] around
/// the error.
///
/// Inferred by [`Group::new`]; name it only to settle a type that matches
/// both markers (see [`GroupError`]).
///
/// # Examples
///
/// ```
/// use ctxtree::{AsDynError, Context, Group};
///
/// let group = Group::<anyhow::Error>::new::<AsDynError>(&Context::background());
/// assert!(futures::executor::block_on(group.wait()).is_ok());
/// ```
#[derive(Debug)]
pub enum AsDynError {}

mod sealed {
    use super::{AsDynError, AsError, Cause, TaskError};
    use std::error::Error;
    use std::fmt::{Debug, Display};
    use std::ops::DerefMut;
    use std::sync::Arc;

    /// The conversion behind [`GroupError`](super::GroupError), out of
    /// reach of other crates so that they can neither call it nor add impls.
    pub trait Sealed<M> {
        /// The cause a group cancels its context with when `err` is its
        /// first error: `err` itself, or wrapped, never a copy.
        fn to_cause(err: Arc<Self>) -> Cause;
    }

    impl<E: Error + Send + Sync + 'static> Sealed<AsError> for E {
        fn to_cause(err: Arc<Self>) -> Cause {
            err
        }
    }

    impl<E> Sealed<AsDynError> for E
    where
        E: DerefMut<Target = dyn Error + Send + Sync + 'static>
            + Debug
            + Display
            + Send
            + Sync
            + 'static,
    {
        fn to_cause(err: Arc<Self>) -> Cause {
            Arc::new(TaskError { err })
        }
    }
}

impl<E: Error + Send + Sync + 'static> GroupError<AsError> for E {}

impl<E> GroupError<AsDynError> for E where
    E: DerefMut<Target = dyn Error + Send + Sync + 'static>
        + fmt::Debug
        + fmt::Display
        + Send
        + Sync
        + 'static
{
}

/// `TaskError` is the [`cause`](Context::cause) of a [`Group`] whose error
/// type is not an [`Error`] itself but a handle to one (`anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`): it holds the very `Arc<E>` that
/// [`Wait`] resolves to, so the cause and the result are still one error.
///
/// `Display` and `Debug` are the error's own (`{:#}` and `{:?}` of an
/// `anyhow::Error` print its chain), and [`source`](Error::source) is the
/// source of the error inside, so walking the cause's chain visits the same
/// errors as walking the error's.
///
/// # Examples
///
/// ```
/// use std::error::Error as _;
/// use std::sync::Arc;
/// use anyhow::Context as _;
/// use ctxtree::{Context, Group, TaskError};
///
/// let group = Group::new(&Context::background());
/// let ctx = group.context().clone();
/// group.spawn(async {
///     let config = std::fs::read("/nonexistent/app.toml").context("loading the config")?;
///     drop(config);
///     Ok(())
/// });
/// let err: Arc<anyhow::Error> = futures::executor::block_on(group.wait()).unwrap_err();
///
/// let cause = ctx.cause().unwrap();
/// let task_err = cause.downcast_ref::<TaskError<anyhow::Error>>().unwrap();
/// assert!(Arc::ptr_eq(task_err.inner(), &err));
/// assert_eq!(cause.to_string(), "loading the config");
/// // The chain goes on past the wrapper, as the error's own does.
/// let source = cause.source().unwrap();
/// assert!(source.is::<std::io::Error>());
/// ```
#[doc(alias = "errgroup")]
pub struct TaskError<E> {
    err: Arc<E>,
}

impl<E> TaskError<E> {
    /// `inner` is the group's error: the same `Arc` that [`Wait`] resolved
    /// to.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group, TaskError};
    ///
    /// let group = Group::new(&Context::background());
    /// let ctx = group.context().clone();
    /// group.spawn(async { Err(anyhow::anyhow!("no")) });
    /// let err = futures::executor::block_on(group.wait()).unwrap_err();
    /// let cause = ctx.cause().unwrap();
    /// let inner = cause.downcast_ref::<TaskError<anyhow::Error>>().unwrap().inner();
    /// assert!(std::sync::Arc::ptr_eq(inner, &err));
    /// ```
    pub fn inner(&self) -> &Arc<E> {
        &self.err
    }

    /// `into_inner` gives back the group's error: the same `Arc` that
    /// [`Wait`] resolved to.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group, TaskError};
    ///
    /// type BoxError = Box<dyn std::error::Error + Send + Sync>;
    ///
    /// let group = Group::new(&Context::background());
    /// let ctx = group.context().clone();
    /// group.spawn(async { Err::<(), BoxError>("no".into()) });
    /// drop(futures::executor::block_on(group.wait()));
    /// let cause = ctx.cause().unwrap();
    /// let err = cause.downcast_ref::<TaskError<BoxError>>().unwrap().clone().into_inner();
    /// assert_eq!(err.to_string(), "no");
    /// ```
    pub fn into_inner(self) -> Arc<E> {
        self.err
    }
}

impl<E> Clone for TaskError<E> {
    fn clone(&self) -> Self {
        TaskError {
            err: self.err.clone(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.err, f)
    }
}

impl<E: fmt::Debug> fmt::Debug for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.err, f)
    }
}

impl<E> Error for TaskError<E>
where
    E: Deref<Target = dyn Error + Send + Sync + 'static> + fmt::Debug + fmt::Display,
{
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        (**self.err).source()
    }
}

/// An error group: tasks that share a context, where the first error cancels
/// the rest (Go's `errgroup.WithContext`).
///
/// Create it from a parent with [`Group::new`]; give each task the group's
/// [`context`](Group::context); add tasks with [`spawn`](Group::spawn) (or,
/// from inside running tasks, with a [`Spawner`]); then await
/// [`wait`](Group::wait), which runs every task concurrently inside that one
/// future and resolves once all have finished.
///
/// # Errors and causes
///
/// The first task to return `Err(e)` cancels the group's context with `e` as
/// the [`cause`](Context::cause), which the other tasks can read and
/// downcast; `wait` returns that same error. Later errors are dropped. The
/// error is shared as an `Arc<E>`: the cause and the result are one
/// allocation, so the same error is both, and `E` need not be `Clone`.
///
/// # Panics
///
/// A panicking task first cancels the group's context, so the other tasks see
/// the cancellation, and then the panic resumes out of the `wait` future.
///
/// # Examples
///
/// ```
/// use std::io;
/// use ctxtree::{Context, Group};
///
/// let group = Group::<io::Error>::new(&Context::background());
/// for i in 0..5 {
///     let ctx = group.context().clone();
///     group.spawn(async move {
///         if i == 3 {
///             return Err(io::Error::other("backend 3 failed"));
///         }
///         ctx.run(futures::future::pending::<()>()).await.ok();
///         Ok(())
///     });
/// }
/// let ctx = group.context().clone();
/// let err = futures::executor::block_on(group.wait()).unwrap_err();
/// assert_eq!(err.to_string(), "backend 3 failed");
/// assert_eq!(ctx.cause().unwrap().to_string(), "backend 3 failed");
/// ```
#[doc(alias = "errgroup")]
#[must_use = "a group runs nothing until `wait` is awaited"]
pub struct Group<E> {
    ctx: Context,
    canceller: Canceller,
    shared: Arc<Shared<E>>,
    limit: usize,
    to_cause: ToCause<E>,
}

/// Adds tasks to a running [`Group`], from inside its tasks or anywhere else
/// (Go's `g.Go` called from a goroutine of the group).
///
/// # Examples
///
/// ```
/// use std::io;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use ctxtree::{Context, Group};
///
/// let group = Group::<io::Error>::new(&Context::background());
/// let spawner = group.spawner();
/// let count = Arc::new(AtomicUsize::new(0));
/// let c = count.clone();
/// group.spawn(async move {
///     let c2 = c.clone();
///     spawner.spawn(async move { c2.fetch_add(1, Ordering::SeqCst); Ok(()) });
///     c.fetch_add(1, Ordering::SeqCst);
///     Ok(())
/// });
/// futures::executor::block_on(group.wait()).unwrap();
/// assert_eq!(count.load(Ordering::SeqCst), 2);
/// ```
pub struct Spawner<E> {
    shared: Arc<Shared<E>>,
}

/// State shared by the group, its spawners and its waiter.
struct Shared<E> {
    incoming: Mutex<Incoming<E>>,
    /// Indices of running tasks that were woken, and the waiter's waker.
    ready: Arc<ReadyQueue>,
}

struct Incoming<E> {
    tasks: Vec<Task<E>>,
    /// Set once `wait` resolved: tasks spawned later are dropped unrun.
    closed: bool,
}

struct ReadyQueue {
    state: Mutex<ReadyState>,
}

struct ReadyState {
    indices: Vec<usize>,
    waiter: Option<Waker>,
}

impl ReadyQueue {
    fn push(&self, index: usize) {
        let waiter = {
            let mut state = lock(&self.state);
            state.indices.push(index);
            state.waiter.clone()
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }

    fn wake_waiter(&self) {
        let waiter = lock(&self.state).waiter.clone();
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

/// The waker of one task slot: marks the slot ready and wakes the waiter.
struct SlotWaker {
    index: usize,
    ready: Arc<ReadyQueue>,
    /// Already in the ready list: further wakes before the next poll add
    /// nothing, so the list stays as short as the number of slots.
    queued: AtomicBool,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.push(self.index);
        }
    }
}

impl<E> Group<E> {
    /// `new` creates a group whose context is a child of `parent`:
    /// cancelling `parent` cancels the group's tasks' context too.
    ///
    /// `E` is an error type of its own or an `anyhow::Error` or
    /// `Box<dyn Error + Send + Sync>` (see [`GroupError`]); the marker `M`
    /// is inferred from it, and `E` from the tasks when not given.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group};
    ///
    /// let group = Group::<std::io::Error>::new(&Context::background());
    /// assert!(!group.context().is_done());
    ///
    /// // `E` = `anyhow::Error`, fixed by the task.
    /// let group = Group::new(&Context::background());
    /// group.spawn(async { anyhow::ensure!(1 + 1 == 2, "arithmetic"); Ok(()) });
    /// assert!(futures::executor::block_on(group.wait()).is_ok());
    /// ```
    #[doc(alias = "WithContext")]
    pub fn new<M>(parent: &Context) -> Group<E>
    where
        E: GroupError<M>,
    {
        let (ctx, canceller) = parent.with_cancel();
        Group {
            ctx,
            canceller,
            shared: Arc::new(Shared {
                incoming: Mutex::new(Incoming {
                    tasks: Vec::new(),
                    closed: false,
                }),
                ready: Arc::new(ReadyQueue {
                    state: Mutex::new(ReadyState {
                        indices: Vec::new(),
                        waiter: None,
                    }),
                }),
            }),
            limit: usize::MAX,
            to_cause: <E as sealed::Sealed<M>>::to_cause,
        }
    }

    /// `context` is the context to hand to the tasks: done when a task
    /// fails, when the parent is done, or once the group has finished.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group};
    ///
    /// let group = Group::<std::io::Error>::new(&Context::background());
    /// let ctx = group.context().clone();
    /// futures::executor::block_on(group.wait()).unwrap();
    /// assert!(ctx.is_done());
    /// ```
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// `set_limit` lets at most `limit` tasks run at once (Go's `SetLimit`):
    /// the others wait their turn, unpolled, in the order they were spawned.
    /// The default is no limit; a limit of 0 is taken as 1, since no task
    /// could ever run otherwise.
    ///
    /// # Caveats
    ///
    /// Under a limit, a task that waits for a task queued behind it never
    /// finishes, as in Go: keep the tasks of a limited group independent.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group};
    ///
    /// let mut group = Group::<std::io::Error>::new(&Context::background());
    /// group.set_limit(8);
    /// ```
    #[doc(alias = "SetLimit")]
    pub fn set_limit(&mut self, limit: usize) -> &mut Self {
        self.limit = limit.max(1);
        self
    }

    /// `spawn` adds a task (Go's `g.Go`). It starts when [`wait`](Group::wait)
    /// is polled and a slot under the limit is free.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group};
    ///
    /// let group = Group::<std::io::Error>::new(&Context::background());
    /// group.spawn(async { Ok(()) });
    /// assert!(futures::executor::block_on(group.wait()).is_ok());
    /// ```
    #[doc(alias = "Go")]
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        spawn_into(&self.shared, Box::pin(task));
    }

    /// `spawner` returns a handle that adds tasks while the group runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group};
    ///
    /// let group = Group::<std::io::Error>::new(&Context::background());
    /// let spawner = group.spawner();
    /// spawner.spawn(async { Ok(()) });
    /// assert!(futures::executor::block_on(group.wait()).is_ok());
    /// ```
    pub fn spawner(&self) -> Spawner<E> {
        Spawner {
            shared: self.shared.clone(),
        }
    }

    /// `wait` runs every task, concurrently, inside the returned future, and
    /// resolves once all have finished: `Ok(())`, or the first error. Then it
    /// cancels the group's context, as Go's `Wait` does.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group};
    ///
    /// let group = Group::<std::io::Error>::new(&Context::background());
    /// group.spawn(async { Err(std::io::Error::other("no")) });
    /// let err = futures::executor::block_on(group.wait()).unwrap_err();
    /// assert_eq!(err.to_string(), "no");
    /// ```
    #[doc(alias = "Wait")]
    pub fn wait(self) -> Wait<E> {
        Wait {
            canceller: self.canceller,
            shared: self.shared,
            tasks: Tasks {
                limit: self.limit,
                slots: Vec::new(),
                free: Vec::new(),
                queued: VecDeque::new(),
                running: 0,
                first_err: None,
                to_cause: self.to_cause,
                round: 0,
            },
            done: false,
        }
    }
}

impl<E> Spawner<E> {
    /// `spawn` adds a task to the group. If the group has already finished,
    /// the task is dropped without being polled.
    ///
    /// # Examples
    ///
    /// See [`Spawner`].
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        spawn_into(&self.shared, Box::pin(task));
    }
}

impl<E> Clone for Spawner<E> {
    fn clone(&self) -> Self {
        Spawner {
            shared: self.shared.clone(),
        }
    }
}

fn spawn_into<E>(shared: &Shared<E>, task: Task<E>) {
    {
        let mut incoming = lock(&shared.incoming);
        if incoming.closed {
            return;
        }
        incoming.tasks.push(task);
    }
    shared.ready.wake_waiter();
}

struct Slot<E> {
    task: Option<Task<E>>,
    waker: Waker,
    state: Arc<SlotWaker>,
    /// The `Wait::poll` call that last polled this slot, so that a task that
    /// wakes itself is polled once per call, not in a loop that starves
    /// whatever else runs beside the group.
    round: u64,
}

pin_project_lite::pin_project! {
    /// The future returned by [`Group::wait`]: drives every task of the group
    /// and resolves to `Ok(())` or the first error.
    ///
    /// # Fairness
    ///
    /// One poll of `Wait` polls each ready task at most once, and at most
    /// 1,024 task polls in all; then it wakes itself and returns `Pending`,
    /// so that other futures on the same thread run even while the group's
    /// tasks keep waking themselves or spawning more tasks.
    ///
    /// # Cancellation safety
    ///
    /// Dropping it drops every task that has not finished, and cancels the
    /// group's context.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{Context, Group};
    ///
    /// let group = Group::<std::io::Error>::new(&Context::background());
    /// let ctx = group.context().clone();
    /// group.spawn(async { Ok(()) });
    /// let wait = group.wait();
    /// drop(wait); // the task never ran, and the group's context is cancelled
    /// assert!(ctx.is_done());
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct Wait<E> {
        canceller: Canceller,
        shared: Arc<Shared<E>>,
        tasks: Tasks<E>,
        done: bool,
    }

    impl<E> PinnedDrop for Wait<E> {
        fn drop(this: Pin<&mut Self>) {
            let cancelled = catch_unwind(AssertUnwindSafe(|| this.canceller.cancel()));
            if let Err(panic) = cancelled {
                if !std::thread::panicking() {
                    resume_unwind(panic);
                }
            }
        }
    }
}

/// How many task polls one `Wait::poll` makes before it yields to its
/// executor (waking itself first): a group whose tasks keep spawning tasks
/// must not hold its thread forever, or the futures beside it (a timeout, a
/// shutdown signal) would never run.
const POLL_BUDGET: usize = 1024;

/// The waiter's side of the group: the task slots and the queue before them.
struct Tasks<E> {
    limit: usize,
    /// Slots of running tasks; a finished task's slot is reused by the next,
    /// so trivial tasks started one after another share one slot.
    slots: Vec<Slot<E>>,
    free: Vec<usize>,
    /// Spawned but not started: over the limit, or not yet reached.
    queued: VecDeque<Task<E>>,
    running: usize,
    first_err: Option<Arc<E>>,
    /// Makes the cause out of the first error (see `ToCause`).
    to_cause: ToCause<E>,
    /// Counts `Wait::poll` calls (see `Slot::round`).
    round: u64,
}

impl<E> Tasks<E> {
    /// Puts `task` in a free slot (or a new one) and returns its index. The
    /// slot's waker starts out queued, so wakes before the first poll add
    /// nothing: the caller polls it at once.
    fn start(&mut self, task: Task<E>, ready: &Arc<ReadyQueue>) -> usize {
        self.running += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index];
            slot.task = Some(task);
            // A new task gets its first poll in this round, whatever the
            // slot's last task did in it.
            slot.round = 0;
            slot.state.queued.store(true, Ordering::Release);
            return index;
        }
        let index = self.slots.len();
        let state = Arc::new(SlotWaker {
            index,
            ready: ready.clone(),
            queued: AtomicBool::new(true),
        });
        self.slots.push(Slot {
            task: Some(task),
            waker: Waker::from(state.clone()),
            state,
            round: 0,
        });
        index
    }

    /// Polls the task in slot `index` once, in this `round`. Returns `false`
    /// if it was already polled in this round (a task that woke itself),
    /// for the caller to defer. A task that finishes frees its slot; the
    /// first error cancels the group with that error as the cause.
    fn poll_slot(&mut self, index: usize, round: u64, canceller: &Canceller) -> bool {
        let slot = &mut self.slots[index];
        // A stale index: the task has finished since it was queued.
        let Some(task) = slot.task.as_mut() else {
            return true;
        };
        if slot.round == round {
            return false;
        }
        slot.round = round;
        // Cleared before the poll: a wake during it queues the slot again.
        slot.state.queued.store(false, Ordering::Release);
        let mut task_cx = TaskContext::from_waker(&slot.waker);
        let result = match catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut task_cx))) {
            Ok(Poll::Pending) => return true,
            Ok(Poll::Ready(result)) => result,
            // The other tasks must see the cancellation first.
            Err(panic) => cancel_then_resume(canceller, panic),
        };
        slot.task = None;
        self.free.push(index);
        self.running -= 1;
        if let Err(err) = result {
            if self.first_err.is_none() {
                let err = Arc::new(err);
                let cause = (self.to_cause)(err.clone());
                self.first_err = Some(err);
                canceller.cancel_with_cause(cause);
            }
        }
        true
    }
}

impl<E> Future for Wait<E> {
    type Output = Result<(), Arc<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.done {
            panic!("`Wait` polled after it resolved");
        }
        let shared = &**this.shared;
        let tasks = this.tasks;
        // Register first, so a wake that lands while we poll is not lost.
        {
            let mut state = lock(&shared.ready.state);
            match &state.waiter {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waiter = Some(cx.waker().clone()),
            }
        }
        tasks.round += 1;
        let round = tasks.round;
        let mut deferred = Vec::new();
        let mut budget = POLL_BUDGET;
        while budget > 0 {
            tasks
                .queued
                .extend(mem::take(&mut lock(&shared.incoming).tasks));
            // Start queued tasks while there is room under the limit, each
            // polled at once: one that finishes frees its slot for the next.
            let mut started = false;
            while tasks.running < tasks.limit && budget > 0 {
                let Some(task) = tasks.queued.pop_front() else {
                    break;
                };
                let index = tasks.start(task, &shared.ready);
                let polled = tasks.poll_slot(index, round, this.canceller);
                debug_assert!(polled, "a task just started is polled in this round");
                started = true;
                budget -= 1;
            }
            let ready = mem::take(&mut lock(&shared.ready.state).indices);
            if ready.is_empty() && !started {
                break;
            }
            for index in ready {
                if budget == 0 || !tasks.poll_slot(index, round, this.canceller) {
                    deferred.push(index);
                } else {
                    budget -= 1;
                }
            }
        }
        if !deferred.is_empty() || budget == 0 {
            // Tasks that woke themselves, or work left when the budget ran
            // out: go on in the next call, and make sure there is one.
            lock(&shared.ready.state).indices.extend(deferred);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if tasks.running > 0 || !tasks.queued.is_empty() {
            return Poll::Pending;
        }
        // Nothing runs and nothing is queued: close the group, unless a task
        // was spawned in the meantime (then go round again).
        {
            let mut incoming = lock(&shared.incoming);
            if !incoming.tasks.is_empty() {
                drop(incoming);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            incoming.closed = true;
        }
        *this.done = true;
        this.canceller.cancel();
        Poll::Ready(match tasks.first_err.take() {
            Some(err) => Err(err),
            None => Ok(()),
        })
    }
}

fn cancel_then_resume(canceller: &Canceller, panic: Panic) -> ! {
    // A callback's panic during this cancel would be a second panic; the
    // task's own panic is the one to report.
    let _ = catch_unwind(AssertUnwindSafe(|| canceller.cancel()));
    resume_unwind(panic)
}

impl<E> fmt::Debug for Group<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("context", &self.ctx)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<E> fmt::Debug for Spawner<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner").finish_non_exhaustive()
    }
}

impl<E> fmt::Debug for Wait<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("running", &self.tasks.running)
            .field("queued", &self.tasks.queued.len())
            .finish_non_exhaustive()
    }
}
