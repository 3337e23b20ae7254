//! Two-phase shutdown of a smol app on Ctrl-C: a soft signal that stops
//! new work, and a hard one, a grace period later, that cuts off the work
//! still in flight.
//!
//! ```text
//! shutdown   (Context::background().with_cancel(); cancelled on SIGINT,
//! │           with the cause "shutdown: SIGINT": the soft signal)
//! └─ hard    (shutdown.with_grace(1s): done 1 s after it, with its error
//!             and cause: the hard signal)
//!
//! worker resize      units of 130ms
//! worker thumbnail   units of 270ms
//! worker upload      units of 450ms
//! worker index       units of 5s
//! ```
//!
//! Each worker is a smol task that does one unit of work after another.
//! It looks at `shutdown` only between units: once it is done, the worker
//! takes no new unit. The unit itself runs under `hard` (`hard.run(unit)`),
//! so a unit in flight when the shutdown begins may finish within the grace
//! period, and is dropped when the grace runs out. The signal comes from the
//! `async-signal` crate, whose `Signals` is a `Stream` of signals that works
//! on any executor. When every worker has stopped, the program prints how
//! many units each one completed, whether its last unit finished or was cut
//! off and how long after the soft signal, and why it stopped (`err` and
//! `cause`).
//!
//! A second Ctrl-C during the grace period cuts it short: it cancels `hard`
//! through its own `Canceller`, and every unit still in flight is dropped
//! at once.
//!
//! Run it and press Ctrl-C:
//!
//! ```text
//! cargo run --example smol_shutdown
//! ```
//!
//! or let a timer stand in for the signal after 2 s (as CI does); Ctrl-C
//! still works then. With the timer, `index` is 2 s into a 5 s unit when the
//! shutdown begins, so the hard signal cuts it off, while `resize`'s unit
//! finishes well within the grace; the program checks both:
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
    ("index", Duration::from_secs(5)),
];

/// How long the work in flight may go on after the soft signal.
const GRACE: Duration = Duration::from_secs(1);

/// With `--demo`, the timer that stands in for Ctrl-C.
const DEMO_SIGNAL_AFTER: Duration = Duration::from_secs(2);

/// If the program is still running this long after the start (`--demo`) or
/// after the shutdown began, something is wrong.
const WATCHDOG: Duration = Duration::from_secs(15);

/// What one worker did, sent back through its task's result.
struct Report {
    name: &'static str,
    unit: Duration,
    /// Units of work completed.
    units: u32,
    /// `Some` if the hard signal cut off the unit in flight.
    cut_off: Option<Error>,
    /// When the worker stopped.
    stopped: Instant,
}

/// One worker: a unit of work after another until `shutdown` is done, each
/// unit under `hard`, which drops it if the grace runs out first.
async fn worker(shutdown: Context, hard: Context, name: &'static str, unit: Duration) -> Report {
    let mut units = 0;
    let mut cut_off = None;
    // Never start a unit once the shutdown has begun.
    while !shutdown.is_done() {
        // One unit of work; a real worker would process a job here, and
        // pass `hard` down to whatever it calls.
        match hard.run(sleep(unit)).await {
            Ok(()) => units += 1,
            Err(err) => {
                println!("{name:>9}: {err} (hard signal): unit dropped");
                cut_off = Some(err);
                break;
            }
        }
    }
    Report {
        name,
        unit,
        units,
        cut_off,
        stopped: Instant::now(),
    }
}

/// Cancels the root context at the first SIGINT (or, with `demo`, when the
/// demo timer fires), with a cause that says which: the soft signal. A
/// second Ctrl-C cancels `hard` at once: the grace is cut short.
async fn watch_signals(mut signals: Signals, shutdown: Canceller, hard: Canceller, demo: bool) {
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
    println!("\n{cause}: no new work; work in flight has {GRACE:?} (Ctrl-C again to cut it short)");
    shutdown.cancel_with_cause(Arc::new(io::Error::other(cause)));

    if let Some(Ok(_)) = signals.next().await {
        println!("second Ctrl-C: cutting the grace short");
        hard.cancel_with_cause(Arc::new(io::Error::other("shutdown: second SIGINT")));
    }
}

async fn run(demo: bool) -> io::Result<()> {
    let (root, shutdown) = Context::background().with_cancel();
    let (hard, cut_short) = root.with_grace(GRACE);
    spawn_watchdog(demo, root.clone());

    // Registering SIGINT replaces its default action (ending the process).
    let signals = Signals::new([Signal::Int])?;
    let watcher = smol::spawn(watch_signals(signals, shutdown, cut_short, demo));
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
        .map(|&(name, unit)| smol::spawn(worker(root.clone(), hard.clone(), name, unit)))
        .collect();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await);
    }
    // Dropping a smol task cancels it: stop watching for a second Ctrl-C.
    // That does not bring back SIGINT's default action (the signal registry
    // cannot): from here on Ctrl-C is ignored, as the program is exiting.
    drop(watcher);
    // Block on the channel: the callback runs after the cancel has woken
    // the workers, so they can all be done before it has.
    let began = began
        .recv()
        .map_err(|_| io::Error::other("the shutdown note was never sent"))?;

    println!();
    println!("soft: {root:?}");
    println!("hard: {hard:?}");
    for r in &reports {
        let after = r.stopped.saturating_duration_since(began).as_millis();
        let end = match r.cut_off {
            Some(_) => format!("its last unit was cut off {after:>4} ms after the soft signal"),
            None => format!("stopped {after:>4} ms after the soft signal"),
        };
        println!(
            "{:>9}: {:>2} units of {:>4} ms; {end}",
            r.name,
            r.units,
            r.unit.as_millis(),
        );
    }
    let last = reports.iter().map(|r| r.stopped).max().unwrap_or(began);
    println!(
        "shutdown began {} ms after the start; the last worker stopped {} ms later",
        (began - started).as_millis(),
        last.saturating_duration_since(began).as_millis(),
    );
    println!("soft signal: {}", describe(root.err(), root.cause()));
    println!("hard signal: {}", describe(hard.err(), hard.cause()));

    check(&root, &hard, &reports, began, demo)
}

/// Checks what the printout says, so that a regression fails the run.
fn check(
    root: &Context,
    hard: &Context,
    reports: &[Report],
    began: Instant,
    demo: bool,
) -> io::Result<()> {
    let fail = |what: String| Err(io::Error::other(what));
    let soft_cause = root.cause().map(|c| c.to_string()).unwrap_or_default();
    if root.err() != Some(Error::Canceled) || !soft_cause.starts_with("shutdown: ") {
        return fail(format!(
            "the root ended with {:?} / {soft_cause}",
            root.err()
        ));
    }
    for r in reports {
        if let Some(err) = r.cut_off {
            // The hard signal has the soft one's reason (or the second
            // Ctrl-C's), and never comes before the grace has run out,
            // unless a second Ctrl-C cut it short.
            let hard_cause = hard.cause().map(|c| c.to_string()).unwrap_or_default();
            if err != Error::Canceled || !hard_cause.starts_with("shutdown: ") {
                return fail(format!("{} was cut off with {err} / {hard_cause}", r.name));
            }
            let cut_short = hard_cause == "shutdown: second SIGINT";
            if !cut_short && r.stopped.duration_since(began) < GRACE {
                return fail(format!("{} was cut off before the grace ran out", r.name));
            }
        }
    }
    if demo {
        // Timed by the demo's timer: `index` is mid-unit with 3 s to go,
        // `resize` at most 130 ms from the end of its unit.
        let by_name = |name| reports.iter().find(|r| r.name == name);
        if by_name("index").and_then(|r| r.cut_off).is_none() {
            return fail("index was not cut off by the hard signal".to_string());
        }
        if by_name("resize").and_then(|r| r.cut_off).is_some() {
            return fail("resize did not finish its unit within the grace".to_string());
        }
        if hard.err().is_none() {
            return fail("the hard signal never came".to_string());
        }
    }
    Ok(())
}

fn describe(err: Option<Error>, cause: Option<Cause>) -> String {
    match (err, cause) {
        (Some(err), Some(cause)) => format!("{err}, cause: {cause}"),
        (Some(err), None) => err.to_string(),
        (None, _) => "not done (every unit finished in time)".to_string(),
    }
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
