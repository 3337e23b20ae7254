//! `Group` with the error types applications use: `anyhow::Error` and
//! `Box<dyn Error + Send + Sync>` beside ordinary error types. The first
//! error cancels the others with a cause that holds the very `Arc` that
//! `wait` returns (a `TaskError` for the two boxed kinds, the error itself
//! otherwise), the error's `source()` chain survives the wrapper, the first
//! error wins, and `Group::new` infers everything from the tasks' type.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use ctxtree::{AsDynError, AsError, Cause, Context, Error, Group, GroupError, TaskError, Wait};
use futures::executor::block_on;

use crate::common::{yield_once, Executor};

type BoxError = Box<dyn StdError + Send + Sync>;

/// An error type of the test's own, with an optional source.
#[derive(Debug)]
struct Backend {
    name: &'static str,
    source: Option<io::Error>,
}

impl Backend {
    fn failed(name: &'static str) -> Backend {
        Backend { name, source: None }
    }

    fn refused(name: &'static str) -> Backend {
        Backend {
            name,
            source: Some(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused",
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {} failed", self.name)
    }
}

impl StdError for Backend {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// The display strings of an error and its sources, outermost first.
fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

/// Spawns `waiters` tasks that wait for the group's context and record the
/// cause they see, then one task that fails with `fail()`. Returns what
/// `wait` resolved to, the group's context and the causes the waiters saw.
fn fail_one<E, M>(
    waiters: usize,
    fail: impl FnOnce() -> E + Send + 'static,
) -> (Result<(), Arc<E>>, Context, Vec<Cause>)
where
    E: GroupError<M>,
{
    let group = Group::<E>::new(&Context::background());
    let ctx = group.context().clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..waiters {
        let ctx = ctx.clone();
        let seen = seen.clone();
        group.spawn(async move {
            let err = ctx.done().await;
            assert_eq!(err, Error::Canceled);
            seen.lock()
                .unwrap()
                .push(ctx.cause().expect("done, so a cause"));
            Ok(())
        });
    }
    group.spawn(async move {
        yield_once().await;
        Err(fail())
    });
    let result = block_on(group.wait());
    let seen = Arc::try_unwrap(seen).unwrap().into_inner().unwrap();
    (result, ctx, seen)
}

/// The `Arc<E>` inside a `TaskError<E>` cause; fails if it is not one.
fn task_error<E>(cause: &Cause) -> &Arc<E>
where
    E: Deref<Target = dyn StdError + Send + Sync> + fmt::Debug + fmt::Display + 'static,
{
    cause
        .downcast_ref::<TaskError<E>>()
        .unwrap_or_else(|| panic!("the cause is not a TaskError: {cause:?}"))
        .inner()
}

// ---------------------------------------------------------------------------
// A failing task cancels the others, with the same error as cause and result.

#[test]
fn an_anyhow_failure_cancels_the_others_with_the_same_error() {
    let (result, ctx, seen) = fail_one(4, || anyhow::anyhow!("backend 3 failed"));
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "backend 3 failed");
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(seen.len(), 4, "every waiter saw the cancellation");
    for cause in seen.iter().chain([&ctx.cause().unwrap()]) {
        assert!(Arc::ptr_eq(task_error::<anyhow::Error>(cause), &err));
        assert_eq!(cause.to_string(), "backend 3 failed");
    }
}

#[test]
fn a_boxed_failure_cancels_the_others_with_the_same_error() {
    let (result, ctx, seen) = fail_one(4, || -> BoxError { Box::new(Backend::failed("b")) });
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "backend b failed");
    assert!(err.is::<Backend>(), "the box still holds the task's error");
    assert_eq!(seen.len(), 4, "every waiter saw the cancellation");
    for cause in seen.iter().chain([&ctx.cause().unwrap()]) {
        assert!(Arc::ptr_eq(task_error::<BoxError>(cause), &err));
        assert_eq!(cause.to_string(), "backend b failed");
    }
}

#[test]
fn an_error_type_of_its_own_is_the_cause_itself() {
    let (result, ctx, seen) = fail_one(2, || Backend::failed("c"));
    let err = result.unwrap_err();
    for cause in seen.iter().chain([&ctx.cause().unwrap()]) {
        let backend = cause
            .downcast_ref::<Backend>()
            .expect("the cause is the error");
        assert!(std::ptr::eq(backend, &*err), "one allocation, not a copy");
    }
}

#[test]
fn into_inner_gives_back_the_arc_wait_returned() {
    let (result, ctx, _) = fail_one(0, || anyhow::anyhow!("x"));
    let err = result.unwrap_err();
    let cause = ctx.cause().unwrap();
    let task_err = cause
        .downcast_ref::<TaskError<anyhow::Error>>()
        .unwrap()
        .clone();
    assert!(Arc::ptr_eq(&task_err.into_inner(), &err));
}

// ---------------------------------------------------------------------------
// The error chain survives the wrapper.

#[test]
fn an_anyhow_chain_is_the_causes_chain() {
    let (result, ctx, _) = fail_one(1, || {
        anyhow::Error::new(Backend::refused("users"))
            .context("loading the profile")
            .context("serving /home")
    });
    let err = result.unwrap_err();
    let cause = ctx.cause().unwrap();
    let expected = vec![
        "serving /home",
        "loading the profile",
        "backend users failed",
        "connection refused",
    ];
    assert_eq!(chain(&*cause), expected);
    let from_anyhow: Vec<String> = err.chain().map(|e| e.to_string()).collect();
    assert_eq!(from_anyhow, expected, "the same chain as anyhow's own");
    // The sources are the original errors, downcastable as such.
    let backend = chain_find::<Backend>(&*cause).expect("the backend error is in the chain");
    assert_eq!(backend.name, "users");
    let io = chain_find::<io::Error>(&*cause).expect("the io error is in the chain");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    // Formatting is anyhow's own: `{:#}` prints the chain on one line.
    assert_eq!(
        format!("{cause:#}"),
        "serving /home: loading the profile: backend users failed: connection refused"
    );
    assert_eq!(format!("{cause:?}"), format!("{err:?}"));
}

#[test]
fn a_boxed_chain_is_the_causes_chain() {
    let (result, ctx, _) = fail_one(1, || -> BoxError { Box::new(Backend::refused("orders")) });
    let err = result.unwrap_err();
    let cause = ctx.cause().unwrap();
    assert_eq!(
        chain(&*cause),
        ["backend orders failed", "connection refused"]
    );
    assert_eq!(chain(&*cause), chain(&**err));
    let io = cause
        .source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .expect("the source is the backend's io error");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(format!("{cause:?}"), format!("{err:?}"));
}

/// The first error of type `T` in `err`'s chain.
fn chain_find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

// ---------------------------------------------------------------------------
// With several failing, the first error wins.

/// Four tasks fail, after 3, 1, 2 and 4 yields: the one spawned second
/// fails first, and its error is both the result and the cause.
fn first_error_wins<E, M>(make: fn(usize) -> E) -> (Arc<E>, Context)
where
    E: GroupError<M> + fmt::Display,
{
    let group = Group::<E>::new(&Context::background());
    let ctx = group.context().clone();
    let finished = Arc::new(Mutex::new(Vec::new()));
    for (id, yields) in [(0, 3), (1, 1), (2, 2), (3, 4)] {
        let finished = finished.clone();
        group.spawn(async move {
            for _ in 0..yields {
                yield_once().await;
            }
            finished.lock().unwrap().push(id);
            Err(make(id))
        });
    }
    let err = block_on(group.wait()).unwrap_err();
    // Every task ran to its error: the later errors were dropped, not
    // avoided.
    assert_eq!(*finished.lock().unwrap(), [1, 2, 0, 3]);
    assert_eq!(err.to_string(), "task 1 failed");
    (err, ctx)
}

#[test]
fn the_first_anyhow_error_wins() {
    let (err, ctx) = first_error_wins(|id| anyhow::anyhow!("task {id} failed"));
    assert!(Arc::ptr_eq(
        task_error::<anyhow::Error>(&ctx.cause().unwrap()),
        &err
    ));
}

#[test]
fn the_first_boxed_error_wins() {
    let (err, ctx) = first_error_wins(|id| -> BoxError { format!("task {id} failed").into() });
    assert!(Arc::ptr_eq(
        task_error::<BoxError>(&ctx.cause().unwrap()),
        &err
    ));
}

// ---------------------------------------------------------------------------
// Inference: no annotation at `Group::new` when the tasks fix the error type.

#[test]
fn new_infers_the_error_type_and_marker_from_the_tasks() {
    let bg = Context::background();

    let group = Group::new(&bg);
    let ctx = group.context().clone();
    group.spawn(async { Err(io::Error::other("io")) });
    let err = block_on(group.wait()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(ctx.cause().unwrap().is::<io::Error>());

    let group = Group::new(&bg);
    let ctx = group.context().clone();
    group.spawn(async { Err(Backend::failed("own")) });
    let err = block_on(group.wait()).unwrap_err();
    assert_eq!(err.name, "own");
    assert!(ctx.cause().unwrap().is::<Backend>());

    let group = Group::new(&bg);
    let ctx = group.context().clone();
    group.spawn(async {
        // `?` converts into the group's error type, as in application code.
        let _: u32 = "not a number".parse()?;
        Ok::<(), anyhow::Error>(())
    });
    let err = block_on(group.wait()).unwrap_err();
    assert!(err.is::<std::num::ParseIntError>());
    assert!(ctx.cause().unwrap().is::<TaskError<anyhow::Error>>());

    let group = Group::new(&bg);
    let ctx = group.context().clone();
    group.spawn(async {
        let _: u32 = "not a number".parse()?;
        Ok::<(), BoxError>(())
    });
    let err = block_on(group.wait()).unwrap_err();
    assert!(err.is::<std::num::ParseIntError>());
    assert!(ctx.cause().unwrap().is::<TaskError<BoxError>>());
}

#[test]
fn a_cause_as_the_error_type_is_an_error_and_needs_no_marker() {
    // `Arc<dyn Error + Send + Sync>` is an `Error` itself: it takes the
    // first marker, and the group's cause is that `Arc` in an `Arc`.
    let group = Group::new(&Context::background());
    let ctx = group.context().clone();
    group.spawn(async { Err::<(), Cause>(Arc::new(Backend::failed("d"))) });
    let err = block_on(group.wait()).unwrap_err();
    let cause = ctx.cause().unwrap();
    let inner = cause
        .downcast_ref::<Cause>()
        .expect("the cause is the error");
    assert!(std::ptr::eq(inner, &*err));
    assert!(inner.is::<Backend>());
}

#[test]
fn the_marker_can_be_named() {
    let group = Group::<io::Error>::new::<AsError>(&Context::background());
    group.spawn(async { Ok(()) });
    assert!(block_on(group.wait()).is_ok());
    let group = Group::<BoxError>::new::<AsDynError>(&Context::background());
    group.spawn(async { Ok(()) });
    assert!(block_on(group.wait()).is_ok());
}

// ---------------------------------------------------------------------------
// Spawners, other executors, auto traits.

#[test]
fn a_spawner_adds_failing_anyhow_tasks_from_inside_a_task() {
    let group = Group::new(&Context::background());
    let ctx = group.context().clone();
    let spawner = group.spawner();
    group.spawn(async move {
        spawner.spawn(async { Err(anyhow::anyhow!("spawned late")) });
        Ok(())
    });
    let err = block_on(group.wait()).unwrap_err();
    assert!(Arc::ptr_eq(
        task_error::<anyhow::Error>(&ctx.cause().unwrap()),
        &err
    ));
}

#[test]
fn an_anyhow_group_runs_as_a_tokio_task() {
    let (parent, stop) = Context::background().with_cancel();
    let group = Group::new(&parent);
    let ctx = group.context().clone();
    group.spawn(async move {
        ctx.done().await;
        Err(anyhow::anyhow!("stopped by the parent"))
    });
    // `Wait<anyhow::Error>` is `Send`: it moves to a worker thread.
    let err = Executor::TokioMultiThread
        .block_on(|spawner| {
            let handle = spawner.spawn_join(group.wait());
            stop.cancel();
            handle
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "stopped by the parent");
}

#[test]
fn the_new_types_are_send_sync_and_errors() {
    fn send<T: Send>() {}
    fn send_sync_error<T: StdError + Send + Sync + 'static>() {}
    send::<Wait<anyhow::Error>>();
    send::<Wait<BoxError>>();
    send::<Group<anyhow::Error>>();
    send::<ctxtree::Spawner<BoxError>>();
    send_sync_error::<TaskError<anyhow::Error>>();
    send_sync_error::<TaskError<BoxError>>();
}
