//! ctxtree with plain `std::thread`s: no executor, no async at all.
//!
//! ```text
//! job   (Context::background().with_cancel(); the main thread cancels it
//! │      after 1 s, with the cause "main: enough for today")
//! ├─ worker fast     pauses 40ms between units
//! ├─ worker slow     pauses 150ms between units
//! ├─ worker eager    pauses 5ms between units
//! └─ budget          with_timeout_cause(400ms, "budget: 400 ms used up")
//!    └─ worker capped   pauses 40ms between units
//! ```
//!
//! Each worker is a thread that does units of work, one after the other. A
//! unit is 5 steps of blocking work (a 10 ms `thread::sleep` stands in for a
//! blocking call); before each step the worker checks `ctx.is_done()`, one
//! atomic load, and abandons the unit if the context is done. Between units
//! it pauses with `ctx.wait_timeout(pause)`: a sleep that ends early, at
//! once, when the context is done (`Some(err)`), and otherwise returns
//! `None` when the pause is over.
//!
//! The main thread cancels `job` after 1 s; the `capped` worker's own
//! deadline ends it before that. Each worker's thread returns a report, and
//! the program prints how many units each completed, where it was when it
//! noticed, how long after the cancellation (or deadline) that was, and
//! why (`err` and `cause`).
//!
//! Run it with:
//!
//! ```text
//! cargo run --example threads
//! ```
//!
//! It exits with status 0 in about a second; a watchdog makes it exit with
//! status 2 if it ever hangs for 15 s.

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ctxtree::{Cause, Context, Error};

/// Steps per unit of work, and how long each step blocks.
const STEPS: u32 = 5;
const STEP: Duration = Duration::from_millis(10);

/// When the main thread cancels the job.
const CANCEL_AFTER: Duration = Duration::from_secs(1);
/// The `capped` worker's own budget.
const BUDGET: Duration = Duration::from_millis(400);
/// If the demo has not finished by then, something is wrong.
const WATCHDOG: Duration = Duration::from_secs(15);

/// Where a worker was when it noticed that its context was done.
#[derive(Debug)]
enum Noticed {
    /// Before step `n` (1-based) of a unit, which it abandoned.
    MidUnit(u32),
    /// As a unit ended: the context was done by then, so `wait_timeout`
    /// returned at once.
    UnitEnd,
    /// In `wait_timeout`, woken in the middle of a pause.
    Pausing,
}

/// What one worker's thread returns.
struct Report {
    name: &'static str,
    units: u32,
    noticed: Noticed,
    at: Instant,
    err: Error,
    cause: Cause,
}

/// One unit of work: `STEPS` blocking steps, abandoned before any step once
/// `ctx` is done. `Err(step)` names the step it did not start.
fn unit_of_work(ctx: &Context) -> Result<(), u32> {
    for step in 1..=STEPS {
        if ctx.is_done() {
            return Err(step);
        }
        thread::sleep(STEP); // stands in for a blocking call
    }
    Ok(())
}

/// A worker: units of work separated by cancellable pauses, until `ctx` is
/// done.
fn worker(name: &'static str, ctx: Context, pause: Duration) -> Report {
    let mut units = 0;
    let noticed = loop {
        if let Err(step) = unit_of_work(&ctx) {
            break Noticed::MidUnit(step);
        }
        units += 1;
        // A sleep that the context cuts short (or skips, if it is done).
        let done_before = ctx.is_done();
        if ctx.wait_timeout(pause).is_some() {
            break if done_before {
                Noticed::UnitEnd
            } else {
                Noticed::Pausing
            };
        }
    };
    Report {
        name,
        units,
        noticed,
        at: Instant::now(),
        err: ctx
            .err()
            .expect("the worker stops only once the context is done"),
        cause: ctx.cause().expect("a done context has a cause"),
    }
}

fn main() -> Result<(), String> {
    thread::spawn(|| {
        thread::sleep(WATCHDOG);
        eprintln!("watchdog: the demo did not finish within {WATCHDOG:?}");
        std::process::exit(2);
    });

    let start = Instant::now();
    let (job, cancel_job) = Context::background().with_cancel();
    let (budget, _cancel_budget) =
        job.with_timeout_cause(BUDGET, Arc::new(io::Error::other("budget: 400 ms used up")));
    let budget_deadline = budget.deadline().expect("a context with a timeout has one");

    let workers = [
        ("fast", job.clone(), Duration::from_millis(40)),
        ("slow", job.clone(), Duration::from_millis(150)),
        ("eager", job.clone(), Duration::from_millis(5)),
        ("capped", budget.clone(), Duration::from_millis(40)),
    ];
    let handles: Vec<_> = workers
        .into_iter()
        .map(|(name, ctx, pause)| {
            let handle = thread::spawn(move || worker(name, ctx, pause));
            (pause, handle)
        })
        .collect();

    // The main thread could block on `job.wait_timeout(CANCEL_AFTER)` as
    // well; nothing else cancels `job`, so a plain sleep does.
    thread::sleep(CANCEL_AFTER);
    let cancelled_at = Instant::now();
    println!(
        "main: cancelling the job at {} ms",
        (cancelled_at - start).as_millis()
    );
    cancel_job.cancel_with_cause(Arc::new(io::Error::other("main: enough for today")));

    let mut reports = Vec::new();
    for (pause, handle) in handles {
        let report = handle.join().map_err(|_| "a worker panicked".to_string())?;
        reports.push((pause, report));
    }

    println!();
    for (pause, r) in &reports {
        // Measured from what ended this worker's context.
        let since = match r.err {
            Error::DeadlineExceeded => r.at.saturating_duration_since(budget_deadline),
            _ => r.at.saturating_duration_since(cancelled_at),
        };
        let noticed = match r.noticed {
            Noticed::MidUnit(step) => format!("before step {step} of a unit"),
            Noticed::UnitEnd => "as a unit ended".to_string(),
            Noticed::Pausing => format!("in a {} ms pause", pause.as_millis()),
        };
        println!(
            "{:>6}: {:>2} units; noticed {noticed}, {:.1?} after; err: {}; cause: {}",
            r.name, r.units, since, r.err, r.cause
        );
    }

    // Check what the printout says, so that a regression fails the run.
    for (_, r) in &reports {
        let (err, cause) = match r.name {
            "capped" => (Error::DeadlineExceeded, "budget: 400 ms used up"),
            _ => (Error::Canceled, "main: enough for today"),
        };
        if r.err != err || r.cause.to_string() != cause {
            return Err(format!("{} stopped with {} / {}", r.name, r.err, r.cause));
        }
    }
    Ok(())
}
