//! A deadline that crosses a process boundary, and a hang-up that cancels
//! the server's work, with `ctxtree::wire`.
//!
//! One program runs a server and a client on 127.0.0.1 (smol). A request is
//! one line, `grpc-timeout: <value>\n`, where the value is the time the
//! client has left, spelled as in gRPC (`299999u`, `10S`, ...). The server
//! has a budget of its own of 2 s per request and derives the request's
//! context from both:
//!
//! ```text
//! context.Background
//! └─ WithDeadline(2s)          the server's own budget
//!    └─ WithDeadline(≈300ms)   with_wire_timeout(header): the client's
//! ```
//!
//! and then works in 3 steps of 200 ms, each raced against `ctx.done()`.
//! Meanwhile `cancel_on_eof` watches the connection and cancels the context
//! if the client hangs up.
//!
//! 1. The client's context has a 300 ms deadline. The server stops at the
//!    client's deadline, not at its own: step 1 finishes, step 2 is
//!    interrupted at about 300 ms with "context deadline exceeded".
//! 2. The client sends a 10 s budget, but hangs up after 250 ms. The
//!    server's context is cancelled as soon as it reads end of file, during
//!    step 2, with the cause "peer closed the connection"; the program
//!    prints how long after the hang-up that was (typically well under a
//!    millisecond).
//!
//! The program checks both outcomes and exits with status 0 in well under
//! a second; a watchdog makes it exit with status 2 if it ever hangs for
//! 10 s.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example propagate
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ctxtree::wire::{self, cancel_on_eof};
use ctxtree::{Canceller, Context, Error};
use futures::{select, FutureExt};
use smol::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use smol::Timer;

/// The server's own budget for any request.
const SERVER_BUDGET: Duration = Duration::from_secs(2);
/// The server's work: this many steps of this long.
const STEPS: u32 = 3;
const STEP: Duration = Duration::from_millis(200);
/// The first client's deadline.
const CLIENT_DEADLINE: Duration = Duration::from_millis(300);
/// The second client's budget, and when it hangs up instead.
const LONG_BUDGET: Duration = Duration::from_secs(10);
const HANG_UP_AFTER: Duration = Duration::from_millis(250);
/// If the demo has not finished by then, something is wrong.
const WATCHDOG: Duration = Duration::from_secs(10);

/// How the server's work on one request ended.
#[derive(Debug)]
struct Outcome {
    /// The steps that finished.
    steps_done: u32,
    /// Why the work stopped early, if it did, and when.
    stopped: Option<(Error, Instant)>,
}

/// The server's work: `STEPS` steps, each abandoned as soon as `ctx` is done.
async fn work(ctx: &Context, start: Instant) -> Outcome {
    for step in 1..=STEPS {
        // Between steps: no point starting one for a context that is done.
        if let Some(err) = ctx.err() {
            println!("server:   before step {step}: {err}");
            return Outcome {
                steps_done: step - 1,
                stopped: Some((err, Instant::now())),
            };
        }
        select! {
            _ = Timer::after(STEP).fuse() => {
                println!("server:   step {step} finished at {}", ms(start.elapsed()));
            }
            err = ctx.done() => {
                let at = Instant::now();
                println!(
                    "server:   step {step} interrupted at {}: {err}",
                    ms(at - start)
                );
                return Outcome { steps_done: step - 1, stopped: Some((err, at)) };
            }
        }
    }
    Outcome {
        steps_done: STEPS,
        stopped: None,
    }
}

/// Runs `handler` while `cancel_on_eof` watches the connection's read side:
/// the pattern from `cancel_on_eof`'s documentation. When the watcher ends
/// (the context is cancelled), the loop goes on driving the handler, which
/// sees the cancellation through its context.
async fn watching_hang_up<T>(
    read_half: impl AsyncRead + Unpin,
    canceller: Canceller,
    handler: impl Future<Output = T>,
) -> T {
    let watcher = cancel_on_eof(read_half, canceller).fuse();
    let handler = handler.fuse();
    futures::pin_mut!(watcher, handler);
    loop {
        select! {
            out = handler => return out,
            _ = watcher => {}
        }
    }
}

/// Serves one connection: reads the header line, derives the request's
/// context from it, works, and answers.
async fn serve_one(mut stream: TcpStream) -> io::Result<(Context, Outcome)> {
    let start = Instant::now();
    let mut reader = BufReader::new(stream.clone());
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let value = line
        .trim_end()
        .strip_prefix("grpc-timeout: ")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no grpc-timeout header"))?;

    // The server's own budget, narrowed by the client's.
    let (own, _own_cancel) = Context::background().with_timeout(SERVER_BUDGET);
    let (ctx, cancel) = wire::with_wire_timeout(&own, value)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
    let left = ctx
        .deadline()
        .expect("a context with a timeout has a deadline")
        .saturating_duration_since(Instant::now());
    let nearest = if ctx.deadline() == own.deadline() {
        "the server's own"
    } else {
        "the client's"
    };
    println!("server:   got `grpc-timeout: {value}`; own budget {SERVER_BUDGET:?}");
    println!("server:   context: {ctx}");
    println!("server:   deadline in {left:.1?}: {nearest} is the nearer");

    // The client sends nothing after its header line, so the rest of the
    // connection's read side is free for the watcher.
    let outcome = watching_hang_up(reader, cancel, work(&ctx, start)).await;

    let answer = match outcome.stopped {
        None => format!("done, {} steps\n", outcome.steps_done),
        Some((err, _)) => format!(
            "stopped after {} of {STEPS} steps: {err}\n",
            outcome.steps_done
        ),
    };
    // The client may have gone; then the write fails, and that is fine.
    let _ = stream.write_all(answer.as_bytes()).await;
    Ok((ctx, outcome))
}

/// The server: serves `n` connections, one after the other.
async fn server(listener: TcpListener, n: usize) -> io::Result<Vec<(Context, Outcome)>> {
    let mut outcomes = Vec::new();
    for _ in 0..n {
        let (stream, _) = listener.accept().await?;
        outcomes.push(serve_one(stream).await?);
    }
    Ok(outcomes)
}

/// Request 1: a 300 ms deadline, and the client waits for the answer.
async fn client_with_deadline(addr: SocketAddr) -> io::Result<()> {
    let (ctx, _cancel) = Context::background().with_timeout(CLIENT_DEADLINE);
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    let header = wire::encode_timeout(&ctx).expect("the client's context has a deadline");
    println!("client:   deadline in {CLIENT_DEADLINE:?}, sends `grpc-timeout: {header}`");
    stream
        .write_all(format!("grpc-timeout: {header}\n").as_bytes())
        .await?;
    // A real client would give up at its own deadline; this one waits for
    // the answer, to show that the server gave up by itself.
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).await?;
    println!(
        "client:   answer at {}: {:?} (own context: {})",
        ms(start.elapsed()),
        answer.trim_end(),
        ctx.err().map_or("live".to_string(), |e| e.to_string()),
    );
    Ok(())
}

/// Request 2: a 10 s budget, but the client hangs up after 250 ms.
async fn client_hanging_up(addr: SocketAddr, hung_up_at: Arc<OnceLock<Instant>>) -> io::Result<()> {
    let (ctx, _cancel) = Context::background().with_timeout(LONG_BUDGET);
    let mut stream = TcpStream::connect(addr).await?;
    let header = wire::encode_timeout(&ctx).expect("the client's context has a deadline");
    println!(
        "client:   budget {LONG_BUDGET:?}, sends `grpc-timeout: {header}`, hangs up after {HANG_UP_AFTER:?}"
    );
    stream
        .write_all(format!("grpc-timeout: {header}\n").as_bytes())
        .await?;
    Timer::after(HANG_UP_AFTER).await;
    let _ = hung_up_at.set(Instant::now());
    drop(stream); // closes the connection: the server reads end of file
    println!("client:   hung up");
    Ok(())
}

async fn demo() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = smol::spawn(server(listener, 2));

    println!("== request 1: the client's deadline ({CLIENT_DEADLINE:?}) reaches the server ==");
    client_with_deadline(addr).await?;

    println!();
    println!("== request 2: the client hangs up ==");
    let hung_up_at = Arc::new(OnceLock::new());
    client_hanging_up(addr, hung_up_at.clone()).await?;

    let outcomes = server.await?;

    // Request 1: stopped by the client's deadline, after step 1.
    let (_, first) = &outcomes[0];
    match first.stopped {
        Some((Error::DeadlineExceeded, _)) => {}
        ref other => return Err(io::Error::other(format!("request 1 ended with {other:?}"))),
    }

    // Request 2: cancelled because the client hung up.
    let (ctx, second) = &outcomes[1];
    let Some((Error::Canceled, cancelled_at)) = second.stopped else {
        return Err(io::Error::other(format!("request 2 ended with {second:?}")));
    };
    let cause = ctx.cause().expect("a done context has a cause");
    if !cause.to_string().contains("closed the connection") {
        return Err(io::Error::other(format!("request 2's cause: {cause}")));
    }
    let hung_up_at = *hung_up_at.get().expect("the client hung up");
    println!(
        "server:   context cancelled {:?} after the client hung up; cause: {cause}",
        cancelled_at.saturating_duration_since(hung_up_at)
    );
    Ok(())
}

/// Milliseconds, for the printout.
fn ms(d: Duration) -> String {
    format!("{:>3} ms", d.as_millis())
}

fn main() -> io::Result<()> {
    // Never hang: exit with status 2 if the demo is still running by then.
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("watchdog: the demo did not finish within {WATCHDOG:?}");
        std::process::exit(2);
    });
    smol::block_on(demo())
}
