//! A request fans out to five backends in a `Group`, under a context merged
//! from the request's own and the server's shutdown context.
//!
//! ```text
//! request (with_timeout(2s), RequestId)      shutdown (server-wide)
//!    └──────────────── merge ───────────────────┘
//!                        └─ group context
//!                             ├─ users             ~40ms
//!                             ├─ orders            ~400ms
//!                             ├─ inventory         fails after ~600ms
//!                             ├─ recommendations   ~1.2s
//!                             └─ search            ~1.8s
//! ```
//!
//! First request: `inventory` fails. The group cancels its context with that
//! failure as the cause, so `recommendations` and `search` stop at once and
//! report it; `wait` returns the same error. Second request: the server
//! begins shutting down 60ms in; through the merge, every backend still
//! running is cancelled with the shutdown's cause, and the request's own
//! context stays live. Nothing is spawned: `wait` drives the five calls
//! itself, here on `smol::block_on`.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example group
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctxtree::{Cause, Context, Error, Group};
use futures::{select, FutureExt};
use smol::Timer;

/// The simulated backends: how long each takes, and whether it fails.
const BACKENDS: [(&str, u64, bool); 5] = [
    ("users", 40, false),
    ("orders", 400, false),
    ("inventory", 600, true),
    ("recommendations", 1_200, false),
    ("search", 1_800, false),
];
// The gaps are wide so that a stalled machine cannot reorder the story: the
// shutdown in request 2 (at 60ms) must come before `orders` finishes.

/// If the demo has not finished by then, something is wrong: give up.
const WATCHDOG: Duration = Duration::from_secs(10);

/// A request-scoped value, found by type.
struct RequestId(u32);

/// What a failing backend returns; the group shares it as the cause.
#[derive(Debug)]
struct BackendError {
    backend: &'static str,
    reason: &'static str,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.reason)
    }
}

impl std::error::Error for BackendError {}

/// The server's shutdown reason.
#[derive(Debug)]
struct ShuttingDown;

impl fmt::Display for ShuttingDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server shutting down")
    }
}

impl std::error::Error for ShuttingDown {}

/// How one backend call ended.
enum Outcome {
    Finished,
    Failed,
    Cancelled { err: Error, cause: Cause },
}

type Log = Arc<Mutex<Vec<(&'static str, Duration, Outcome)>>>;

/// One backend call: simulated work, abandoned as soon as `ctx` is done.
async fn call_backend(
    ctx: Context,
    name: &'static str,
    work: Duration,
    fails: bool,
    start: Instant,
    log: Log,
) -> Result<(), BackendError> {
    let outcome = select! {
        _ = Timer::after(work).fuse() => if fails { Outcome::Failed } else { Outcome::Finished },
        err = ctx.done() => Outcome::Cancelled {
            err,
            cause: ctx.cause().expect("a done context has a cause"),
        },
    };
    let failed = matches!(outcome, Outcome::Failed);
    log.lock().unwrap().push((name, start.elapsed(), outcome));
    if failed {
        return Err(BackendError {
            backend: name,
            reason: "connection refused",
        });
    }
    // Being cancelled is not this backend's error: the group already has
    // the reason.
    Ok(())
}

/// Serves one request: the five backends in a group under `request`
/// merged with `shutdown`. Returns the group's result and what each did.
async fn serve(
    request: &Context,
    shutdown: &Context,
    fail_inventory: bool,
) -> (Result<(), Arc<BackendError>>, Log) {
    let (ctx, _cancel) = request.merge(shutdown);
    // Values come from the request's side of the merge.
    let id = ctx.value::<RequestId>().map_or(0, |r| r.0);
    println!("  request {id}, context: {ctx}");
    let group = Group::<BackendError>::new(&ctx);
    let start = Instant::now();
    let log: Log = Arc::default();
    for (name, ms, fails) in BACKENDS {
        group.spawn(call_backend(
            group.context().clone(),
            name,
            Duration::from_millis(ms),
            fails && fail_inventory,
            start,
            log.clone(),
        ));
    }
    let result = group.wait().await;
    (result, log)
}

fn print_log(log: &Log) {
    let mut log = log.lock().unwrap();
    log.sort_by_key(|(_, at, _)| *at);
    for (name, at, outcome) in log.iter() {
        let at = format!("{:>5}ms", at.as_millis());
        match outcome {
            Outcome::Finished => println!("  {at}  {name:<16} finished"),
            Outcome::Failed => println!("  {at}  {name:<16} FAILED"),
            Outcome::Cancelled { err, cause } => {
                println!("  {at}  {name:<16} cancelled: err = {err}, cause = {cause}")
            }
        }
    }
}

/// How many backends were cancelled, and whether all of them were cancelled
/// with a cause of type `T`.
fn cancelled_with<T: std::error::Error + 'static>(log: &Log) -> (usize, bool) {
    let log = log.lock().unwrap();
    let cancelled: Vec<_> = log
        .iter()
        .filter_map(|(_, _, o)| match o {
            Outcome::Cancelled { cause, .. } => Some(cause.is::<T>()),
            _ => None,
        })
        .collect();
    (cancelled.len(), cancelled.iter().all(|is_t| *is_t))
}

fn main() {
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("error: the demo did not finish within {WATCHDOG:?}");
        std::process::exit(1);
    });

    let (shutdown, begin_shutdown) = Context::background().with_cancel();

    smol::block_on(async {
        println!("request 1: the inventory backend fails");
        let (request, _c) = Context::background()
            .with_value(RequestId(1))
            .with_timeout(Duration::from_secs(2));
        let (result, log) = serve(&request, &shutdown, true).await;
        print_log(&log);
        let err = result.expect_err("inventory fails");
        println!("  group result: Err({err})");
        assert_eq!(err.backend, "inventory");
        // Those still running when inventory failed (at least the two slow
        // ones) were cancelled, all with its failure as the cause.
        let (cancelled, all_by_failure) = cancelled_with::<BackendError>(&log);
        assert!(cancelled >= 2 && all_by_failure);
        assert!(!request.is_done(), "the request itself is not cancelled");

        println!();
        println!("request 2: the server begins shutting down after 60ms");
        let (request, _c) = Context::background()
            .with_value(RequestId(2))
            .with_timeout(Duration::from_secs(2));
        let shutdown_timer = smol::spawn(async move {
            Timer::after(Duration::from_millis(60)).await;
            println!("  (server: begin shutdown)");
            begin_shutdown.cancel_with_cause(Arc::new(ShuttingDown));
        });
        let (result, log) = serve(&request, &shutdown, true).await;
        shutdown_timer.await;
        print_log(&log);
        println!("  group result: {result:?}");
        assert!(result.is_ok(), "nobody failed: they were all cancelled");
        let (cancelled, all_by_shutdown) = cancelled_with::<ShuttingDown>(&log);
        assert!(cancelled >= 3 && all_by_shutdown);
        assert!(
            !request.is_done(),
            "the request's own context is still live"
        );
        assert!(shutdown.is_done());
    });
}
