//! ctxtree on a tokio multi-thread runtime, and a two-way bridge with
//! `tokio_util::sync::CancellationToken`, written with the public API only.
//!
//! ctxtree needs nothing from tokio: `ctx.done()` and `ctx.run(fut)` work in
//! tokio tasks and in `tokio::select!` as they are, and deadlines are
//! `async-io` timers, so no tokio timer is involved. The bridge is for code
//! that speaks `CancellationToken`, such as a library that takes one:
//!
//! * [`token_from_context`]: a token cancelled when a context is done, with
//!   `ctx.after_func(move || token.cancel())`. No task, no thread.
//! * [`context_from_token`]: a context cancelled when a token is, by a tokio
//!   task that waits on `token.cancelled()` and stops as soon as the context
//!   is done by itself.
//!
//! The program shows each direction with tokio tasks waiting on the other
//! side, and prints what happened:
//!
//! 1. context → token: a context with a 300 ms deadline; tokio-side tasks
//!    that know only the token (`token.run_until_cancelled`,
//!    `child_token().cancelled()`) stop at the deadline. A second bridge,
//!    stopped with `AfterFunc::stop` before its context is cancelled, leaves
//!    its token alone.
//! 2. token → context: the app's shutdown token is cancelled after 200 ms;
//!    tasks that know only the context (`ctx.run`, `select!` on
//!    `ctx.done()`) stop, and their context's cause says the token did it.
//! 3. The context ends first: its watcher task ends at once, and the token
//!    is left alone.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example tokio_interop
//! ```
//!
//! It exits with status 0 in under a second; a watchdog makes it exit with
//! status 2 if it ever hangs for 15 s.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxtree::{AfterFunc, Canceller, Context, Error};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Part 1: the context's deadline.
const DEADLINE: Duration = Duration::from_millis(300);
/// Part 2: when the shutdown token is cancelled.
const SHUTDOWN_AFTER: Duration = Duration::from_millis(200);
/// Work that would take far longer than the demo, unless cancelled.
const LONG_WORK: Duration = Duration::from_secs(10);
/// If the demo has not finished by then, something is wrong.
const WATCHDOG: Duration = Duration::from_secs(15);

/// Context → token: returns a `CancellationToken` that is cancelled as soon
/// as `ctx` is done (at once if it already is), for code that takes a
/// token.
///
/// The cancel runs as an [`after_func`](Context::after_func) callback, on
/// the thread that cancels `ctx` (for a deadline, `async-io`'s timer
/// thread); `CancellationToken::cancel` is short and does not block, as
/// such a callback must be. [`AfterFunc::stop`] detaches the bridge.
///
/// The token only learns *that* the context is done: read `ctx.err()` and
/// `ctx.cause()` for why. The callback does not keep `ctx` alive: keep
/// `ctx` (or a clone) for as long as the token should follow it, since a
/// context that nothing holds any more can never be done, and its callback
/// is dropped without running.
fn token_from_context(ctx: &Context) -> (CancellationToken, AfterFunc) {
    let token = CancellationToken::new();
    let bridge = ctx.after_func({
        let token = token.clone();
        move || token.cancel()
    });
    (token, bridge)
}

/// Token → context: derives a child of `parent` that is also cancelled when
/// `token` is, with the cause "cancellation token cancelled".
///
/// A tokio task waits on `token.cancelled()`, so this must be called inside
/// a tokio runtime. The task also waits on the child's `done()`, and ends
/// as soon as either side is done. It holds the child until then: cancel
/// the returned [`Canceller`] (or turn it into a guard) when the work is
/// over, as with any context, and the task ends. The handle lets you await
/// that; dropping it detaches the task.
fn context_from_token(
    parent: &Context,
    token: CancellationToken,
) -> (Context, Canceller, JoinHandle<()>) {
    let (ctx, cancel) = parent.with_cancel();
    let watcher = tokio::spawn({
        let done = ctx.done();
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = token.cancelled() => cancel.cancel_with_cause(Arc::new(io::Error::other(
                    "cancellation token cancelled",
                ))),
                // Done by itself (its canceller, a parent): nothing to bridge.
                _ = done => {}
            }
        }
    });
    (ctx, cancel, watcher)
}

/// Milliseconds since `start`, for the printout.
fn at(start: Instant) -> String {
    format!("{:>4} ms", start.elapsed().as_millis())
}

/// Part 1: a context's deadline reaches tokio code that knows only tokens.
async fn context_to_token(start: Instant) -> Result<(), String> {
    println!("== 1. context → token: a {DEADLINE:?} deadline cancels a token ==");
    let (ctx, _cancel) = Context::background().with_timeout(DEADLINE);
    let (token, _bridge) = token_from_context(&ctx);

    // Tokio-side code: it takes a token, and knows nothing of contexts.
    let job = tokio::spawn({
        let token = token.clone();
        async move {
            // `None` if the token is cancelled first; no reason given.
            token
                .run_until_cancelled(tokio::time::sleep(LONG_WORK))
                .await
        }
    });
    let child = tokio::spawn({
        let child = token.child_token();
        async move { child.cancelled().await }
    });

    let out = job.await.map_err(|e| e.to_string())?;
    println!(
        "{}: run_until_cancelled gave {out:?}; token.is_cancelled() = {}",
        at(start),
        token.is_cancelled()
    );
    child.await.map_err(|e| e.to_string())?;
    println!("{}: a child token of it is cancelled too", at(start));
    println!(
        "{}: the context says why: err: {}; cause: {}",
        at(start),
        ctx.err().map_or("none".into(), |e| e.to_string()),
        ctx.cause().map_or("none".into(), |c| c.to_string()),
    );
    if out.is_some() || ctx.err() != Some(Error::DeadlineExceeded) {
        return Err("part 1: the deadline did not reach the token".into());
    }

    // A bridge can be detached before its context is done.
    let (other, cancel_other) = Context::background().with_cancel();
    let (untouched, bridge) = token_from_context(&other);
    let stopped = bridge.stop();
    cancel_other.cancel();
    println!(
        "{}: a second bridge, stopped (stop() = {stopped}), then its context cancelled ({}): \
         its token cancelled: {}",
        at(start),
        other.err().map_or("live".into(), |e| e.to_string()),
        untouched.is_cancelled()
    );
    if !stopped || untouched.is_cancelled() {
        return Err("part 1: a stopped bridge still cancelled its token".into());
    }
    Ok(())
}

/// Part 2: cancelling a token stops tasks that know only a context.
async fn token_to_context(start: Instant) -> Result<(), String> {
    println!();
    println!("== 2. token → context: a shutdown token cancelled after {SHUTDOWN_AFTER:?} ==");
    // The app's tokio-side shutdown signal.
    let shutdown = CancellationToken::new();
    let (ctx, cancel, watcher) = context_from_token(&Context::background(), shutdown.child_token());
    // Cancel the context when this function returns, whatever happens: the
    // watcher task ends then, if the token has not ended it first.
    let _guard = cancel.guard();

    // ctxtree-side tasks: they take a context, and know nothing of tokens.
    let run_task = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.run(tokio::time::sleep(LONG_WORK)).await }
    });
    let select_task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            tokio::select! {
                err = ctx.done() => Err(err),
                _ = tokio::time::sleep(LONG_WORK) => Ok(()),
            }
        }
    });

    tokio::time::sleep(SHUTDOWN_AFTER).await;
    println!("{}: shutdown.cancel()", at(start));
    shutdown.cancel();

    let by_run = run_task.await.map_err(|e| e.to_string())?;
    let by_select = select_task.await.map_err(|e| e.to_string())?;
    watcher.await.map_err(|e| e.to_string())?;
    let cause = ctx.cause().map_or("none".into(), |c| c.to_string());
    println!("{}: ctx.run(...) gave {by_run:?}", at(start));
    println!("{}: select! on ctx.done() gave {by_select:?}", at(start));
    println!(
        "{}: the context: {ctx:?}; cause: {cause}; the watcher task has ended",
        at(start)
    );
    if by_run != Err(Error::Canceled) || by_select != Err(Error::Canceled) {
        return Err("part 2: the token did not reach the context".into());
    }
    if cause != "cancellation token cancelled" {
        return Err(format!("part 2: unexpected cause {cause}"));
    }
    Ok(())
}

/// Part 3: when the context is done first, its watcher task ends and the
/// token is left alone.
async fn context_ends_first(start: Instant) -> Result<(), String> {
    println!();
    println!("== 3. the context ends first: the watcher task stops ==");
    let token = CancellationToken::new();
    let (ctx, cancel, watcher) = context_from_token(&Context::background(), token.clone());
    cancel.cancel();
    watcher.await.map_err(|e| e.to_string())?;
    println!(
        "{}: cancelled by its Canceller ({}); the watcher task has ended; token cancelled: {}",
        at(start),
        ctx.err().map_or("live".into(), |e| e.to_string()),
        token.is_cancelled()
    );
    if token.is_cancelled() {
        return Err("part 3: the context cancelled the token".into());
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("watchdog: the demo did not finish within {WATCHDOG:?}");
        std::process::exit(2);
    });
    let start = Instant::now();
    context_to_token(start).await?;
    token_to_context(start).await?;
    context_ends_first(start).await
}
