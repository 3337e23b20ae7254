//! A producer → transform → consumer pipeline on async-std in which one
//! stage's failure stops the others, and tells them why.
//!
//! ```text
//! pipeline   (Context::background().with_cancel(), shared by all stages)
//!
//! producer ──raw lines──▶ transform ──numbers──▶ consumer
//!         bounded(2)      parses each line     bounded(2)
//! ```
//!
//! The three stages are async-std tasks (`async_std::task::spawn`) joined by
//! bounded `async_std::channel`s, and they share one context. The producer
//! sends 10 lines, one of which is not a number. When the transform meets it,
//! it fails and cancels the context with its error as the cause
//! (`cancel_with_cause`). The other stages see `ctx.done()` and stop, each in
//! its own way:
//!
//! * the producer races every send against `ctx.done()` with
//!   `futures::select_biased!`;
//! * the transform itself races every receive against the context with
//!   `ctx.run(rx.recv())`;
//! * the consumer reads its channel through `ctxtree::stream::until_done`,
//!   a stream that ends when the context is done.
//!
//! Each stage then prints how many items it handled and why it stopped:
//! `err`, and the `cause`, which the consumer downcasts back to the
//! transform's error type.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example async_std_pipeline
//! ```
//!
//! It exits with status 0 in well under a second; a watchdog makes it exit
//! with status 2 if it ever hangs for 15 s.

use std::fmt;
use std::num::ParseIntError;
use std::sync::Arc;
use std::time::Duration;

use async_std::channel::{self, Receiver, Sender};
use async_std::task;
use ctxtree::stream::until_done;
use ctxtree::{Canceller, Context, Error};
use futures::{select_biased, FutureExt, StreamExt};

/// What the producer sends: one line is not a number.
const LINES: [&str; 10] = ["1", "2", "3", "4", "five", "6", "7", "8", "9", "10"];

/// The producer's pace: one line every so often.
const PACE: Duration = Duration::from_millis(20);

/// If the demo has not finished by then, something is wrong.
const WATCHDOG: Duration = Duration::from_secs(15);

/// The transform's error, which becomes the pipeline's cause.
#[derive(Debug)]
struct BadLine {
    index: usize,
    line: String,
    source: ParseIntError,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transform: line {} ({:?}) is not a number",
            self.index, self.line
        )
    }
}

impl std::error::Error for BadLine {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// How a stage ended.
struct Report {
    stage: &'static str,
    /// Items the stage handled: sent, transformed or consumed.
    items: usize,
    /// Why it stopped: the context's error, or `None` if it ran out of input
    /// or failed itself.
    err: Option<Error>,
    detail: String,
}

/// Sends `LINES`, one every `PACE`, until the context is done.
async fn producer(ctx: Context, tx: Sender<String>) -> Report {
    let mut sent = 0;
    for line in LINES {
        task::sleep(PACE).await;
        // `select_biased!` polls its branches in order: the context first,
        // as `ctx.run` does, so once the pipeline is cancelled no line goes
        // out, even if the channel has room.
        select_biased! {
            err = ctx.done() => {
                return Report { stage: "producer", items: sent, err: Some(err), detail: String::new() };
            }
            res = tx.send(line.to_string()).fuse() => {
                if res.is_err() {
                    return Report { stage: "producer", items: sent, err: ctx.err(), detail: "channel closed".into() };
                }
                sent += 1;
            }
        }
    }
    Report {
        stage: "producer",
        items: sent,
        err: None,
        detail: "sent every line".into(),
    }
}

/// Parses each line into a number. On a line that is not one, cancels the
/// whole pipeline with the error as the cause.
async fn transform(
    ctx: Context,
    cancel: Canceller,
    rx: Receiver<String>,
    tx: Sender<u64>,
) -> Report {
    let mut index = 0;
    loop {
        // `run` races the receive against the context: `Err` once it is done.
        let line = match ctx.run(rx.recv()).await {
            Ok(Ok(line)) => line,
            Ok(Err(_closed)) => {
                return Report {
                    stage: "transform",
                    items: index,
                    err: None,
                    detail: "input ended".into(),
                }
            }
            Err(err) => {
                return Report {
                    stage: "transform",
                    items: index,
                    err: Some(err),
                    detail: String::new(),
                }
            }
        };
        match line.parse::<u64>() {
            Ok(n) => {
                if let Err(err) = ctx.run(tx.send(n * n)).await {
                    return Report {
                        stage: "transform",
                        items: index,
                        err: Some(err),
                        detail: String::new(),
                    };
                }
                index += 1;
            }
            Err(source) => {
                let failure = BadLine {
                    index,
                    line,
                    source,
                };
                let detail = "failed; it cancelled the pipeline".to_string();
                // The first error cancels everyone, and says why.
                cancel.cancel_with_cause(Arc::new(failure));
                return Report {
                    stage: "transform",
                    items: index,
                    err: None,
                    detail,
                };
            }
        }
    }
}

/// Adds up the numbers until the input ends or the context is done.
async fn consumer(ctx: Context, rx: Receiver<u64>) -> Report {
    // An async-std receiver is a `Stream`; `until_done` ends it as soon as
    // the context is done, and drops (closes) the receiver then.
    let mut numbers = until_done(rx, &ctx);
    let mut count = 0;
    let mut sum = 0;
    while let Some(n) = numbers.next().await {
        count += 1;
        sum += n;
        println!("consumer:  got {n}");
    }
    // `err()` says whether the context ended the stream, not the channel.
    Report {
        stage: "consumer",
        items: count,
        err: numbers.err(),
        detail: format!("sum of squares so far: {sum}"),
    }
}

async fn pipeline() -> Result<(), String> {
    let (ctx, cancel) = Context::background().with_cancel();
    let (raw_tx, raw_rx) = channel::bounded(2);
    let (num_tx, num_rx) = channel::bounded(2);

    let stages = [
        task::spawn(producer(ctx.clone(), raw_tx)),
        task::spawn(transform(ctx.clone(), cancel, raw_rx, num_tx)),
        task::spawn(consumer(ctx.clone(), num_rx)),
    ];
    let mut reports = Vec::new();
    for stage in stages {
        reports.push(stage.await);
    }

    println!();
    println!("pipeline context: {ctx:?}");
    let cause = ctx.cause().ok_or("the pipeline context is not done")?;
    for r in &reports {
        let why = match r.err {
            Some(err) => format!("stopped by the context: err: {err}; cause: {cause}"),
            None => r.detail.clone(),
        };
        println!("{:>9}: {} items; {why}", r.stage, r.items);
        if r.err.is_some() && !r.detail.is_empty() {
            println!("{:>9}  ({})", "", r.detail);
        }
    }
    // Anyone holding the context can get the transform's error back.
    let bad = cause
        .downcast_ref::<BadLine>()
        .ok_or("the cause is not the transform's error")?;
    println!(
        "cause, downcast: line {} = {:?}, because {}",
        bad.index, bad.line, bad.source
    );

    // Check what the printout says, so that a regression fails the run.
    if ctx.err() != Some(Error::Canceled) || bad.line != "five" {
        return Err(format!("unexpected end: {ctx:?}, cause {cause}"));
    }
    for r in &reports {
        let expected = match r.stage {
            "transform" => None,
            _ => Some(Error::Canceled),
        };
        if r.err != expected {
            return Err(format!("{} stopped with {:?}", r.stage, r.err));
        }
    }
    Ok(())
}

fn main() -> Result<(), String> {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("watchdog: the demo did not finish within {WATCHDOG:?}");
        std::process::exit(2);
    });
    task::block_on(pipeline())
}
