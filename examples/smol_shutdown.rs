//! Graceful shutdown of a smol app on Ctrl-C: one root context, cancelled
//! with a cause when SIGINT arrives, and workers that drain.
//!
//! ```text
//! shutdown   (Context::background().with_cancel(); cancelled on SIGINT,
//! │           with the cause "shutdown: SIGINT")
//! ├─ worker resize      units of 130ms
//! ├─ worker thumbnail   units of 270ms
//! ├─ worker upload      units of 450ms
//! └─ worker index       units of 700ms
//! ```
//!
//! Each worker is a smol task that does one unit of work after another. It
//! races the unit against `ctx.done()` with `futures::select!`, but does not
//! drop the unit when the context wins: it *drains*, finishing the unit it
//! is in, and then stops; it never starts a new unit once the context is
//! done. The signal comes from the `async-signal` crate, whose `Signals` is a
//! `Stream` of signals that works on any executor. When every worker has
//! stopped, the program prints how many units each one completed, how long
//! its drain took, and why it stopped (`err` and `cause`).
//!
//! A second Ctrl-C during the drain exits at once, with status 130.
//!
//! Run it and press Ctrl-C:
//!
//! ```text
//! cargo run --example smol_shutdown
//! ```
//!
//! or let a timer stand in for the signal after 2 s (as CI does); Ctrl-C
//! still works then:
//!
//! ```text
//! cargo run --example smol_shutdown -- --demo
//! ```
//!
//! A watchdog makes the program exit with status 2 if it has not finished
//! 15 s after the start (with `--demo`) or after the shutdown began.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use ctxtree::{Canceller, Cause, Context, Error};
use futures::{select, FutureExt, StreamExt};
use smol::Timer;

/// The workers, and how long one unit of work takes for each.
const WORKERS: [(&str, Duration); 4] = [
    ("resize", Duration::from_millis(130)),
    ("thumbnail", Duration::from_millis(270)),
    ("upload", Duration::from_millis(450)),
    ("index", Duration::from_millis(700)),
];

/// With `--demo`, the timer that stands in for Ctrl-C.
const DEMO_SIGNAL_AFTER: Duration = Duration::from_secs(2);

/// If the program is still running this long after the start (`--demo`) or
/// after the shutdown began, something is wrong.
const WATCHDOG: Duration = Duration::from_secs(15);

/// What one worker did, sent back through its task's result.
struct Report {
    name: &'static str,
    unit: Duration,
    /// Units of work completed, the drained one included.
    units: u32,
    /// How long the worker spent finishing its unit after the shutdown
    /// began; `None` if it was between units then.
    drain: Option<Duration>,
    err: Error,
    cause: Cause,
}

/// One worker: a unit of work after another until `ctx` is done. A unit in
/// progress when the shutdown begins is finished, not dropped.
async fn worker(ctx: Context, name: &'static str, unit: Duration) -> Report {
    let mut units = 0;
    let drain = loop {
        // Never start a unit once the shutdown has begun.
        if ctx.is_done() {
            break None;
        }
        // One unit of work; a real worker would process a job here.
        let work = sleep(unit).fuse();
        futures::pin_mut!(work);
        select! {
            _ = work => units += 1,
            err = ctx.done() => {
                // The shutdown began mid-unit: drain, that is, finish this
                // unit (the `select!` only borrowed it), then stop.
                let began = Instant::now();
                println!("{name:>9}: {err} mid-unit, finishing it");
                work.await;
                units += 1;
                break Some(began.elapsed());
            }
        }
    };
    Report {
        name,
        unit,
        units,
        drain,
        err: ctx
            .err()
            .expect("the worker stops only once the context is done"),
        cause: ctx.cause().expect("a done context has a cause"),
    }
}

/// Cancels the root context at the first SIGINT (or, with `demo`, when the
/// demo timer fires), with a cause that says which. Then it keeps watching:
/// a second Ctrl-C exits at once, without waiting for the drain.
async fn watch_signals(mut signals: Signals, shutdown: Canceller, demo: bool) {
    let demo_timer = async {
        if demo {
            sleep(DEMO_SIGNAL_AFTER).await
        } else {
            std::future::pending().await
        }
    };
    let cause = select! {
        signal = signals.next().fuse() => match signal {
            Some(Ok(Signal::Int)) => "shutdown: SIGINT".to_string(),
            Some(Ok(other)) => format!("shutdown: {other:?}"),
            Some(Err(err)) => format!("shutdown: reading signals failed: {err}"),
            None => "shutdown: no more signals".to_string(),
        },
        _ = demo_timer.fuse() => "shutdown: demo timer".to_string(),
    };
    println!("\n{cause}; draining (Ctrl-C again to exit at once)");
    shutdown.cancel_with_cause(Arc::new(io::Error::other(cause)));

    if let Some(Ok(_)) = signals.next().await {
        eprintln!("second Ctrl-C: exiting without waiting for the drain");
        std::process::exit(130);
    }
}

async fn run(demo: bool) -> io::Result<()> {
    let (root, shutdown) = Context::background().with_cancel();
    spawn_watchdog(demo, root.clone());

    // Registering SIGINT replaces its default action (ending the process).
    let signals = Signals::new([Signal::Int])?;
    let watcher = smol::spawn(watch_signals(signals, shutdown, demo));
    if demo {
        println!("demo: a timer stands in for Ctrl-C after {DEMO_SIGNAL_AFTER:?}");
    } else {
        println!("working; press Ctrl-C to shut down");
    }

    // Note when the shutdown begins: `after_func` runs on the thread that
    // cancels, as soon as it does.
    let started = Instant::now();
    let (began_tx, began) = std::sync::mpsc::sync_channel(1);
    let _note = root.after_func(move || {
        let _ = began_tx.send(Instant::now());
    });

    let tasks: Vec<_> = WORKERS
        .iter()
        .map(|&(name, unit)| smol::spawn(worker(root.clone(), name, unit)))
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await);
    }
    let stopped = Instant::now();
    // Dropping a smol task cancels it: stop watching for a second Ctrl-C.
    // That does not bring back SIGINT's default action (the signal registry
    // cannot): from here on Ctrl-C is ignored, as the program is exiting.
    drop(watcher);

    println!();
    println!("root: {root:?}");
    for r in &reports {
        let drain = match r.drain {
            Some(d) => format!("drained its unit in {:>3} ms", d.as_millis()),
            None => "was between units".to_string(),
        };
        println!(
            "{:>9}: {:>2} units of {:>3} ms; {drain}; err: {}; cause: {}",
            r.name,
            r.units,
            r.unit.as_millis(),
            r.err,
            r.cause,
        );
    }
    // Block on the channel: the callback runs after the cancel has woken
    // the workers, so they can all be done before it has.
    let began = began
        .recv()
        .map_err(|_| io::Error::other("the shutdown note was never sent"))?;
    println!(
        "shutdown began {} ms after the start; the last worker stopped {} ms later",
        (began - started).as_millis(),
        (stopped - began).as_millis(),
    );

    // Check what the printout says, so that a regression fails the run.
    for r in &reports {
        if r.err != Error::Canceled || !r.cause.to_string().starts_with("shutdown: ") {
            return Err(io::Error::other(format!(
                "{} stopped with {} / {}",
                r.name, r.err, r.cause
            )));
        }
    }
    Ok(())
}

/// Sleeps for `d`. (A smol `Timer` is both a `Future` and a `Stream`, so
/// `.fuse()` on it would be ambiguous with both extension traits in scope.)
async fn sleep(d: Duration) {
    Timer::after(d).await;
}

/// Exits with status 2 if the program hangs: `WATCHDOG` after the start with
/// `--demo`, or after the shutdown began without it (before that, waiting
/// for Ctrl-C is what the program is for).
fn spawn_watchdog(demo: bool, root: Context) {
    std::thread::spawn(move || {
        if !demo {
            root.wait();
        }
        drop(root);
        std::thread::sleep(WATCHDOG);
        eprintln!("watchdog: not finished within {WATCHDOG:?}");
        std::process::exit(2);
    });
}

fn main() -> io::Result<()> {
    let demo = std::env::args().skip(1).any(|arg| arg == "--demo");
    smol::block_on(run(demo))
}
