//! A small TCP server in which every connection gets a context with a
//! deadline, and the handler fans out to three backends under it.
//!
//! The tree, per connection:
//!
//! ```text
//! server   (Context::background().with_cancel(), cancelled at shutdown)
//! └─ connection   (with_timeout(300ms); cancelled with the cause
//!    │             "client disconnected" if the client hangs up)
//!    └─ request   (with_timeout(budget): the client may ask for less)
//!       ├─ users             ~50ms
//!       ├─ orders            ~100ms
//!       └─ recommendations   ~2s
//! ```
//!
//! Each backend races its work against `ctx.done()` with `futures::select!`.
//! While the backends work, the handler keeps reading from the socket: end of
//! file means the client has gone, and it cancels the connection's context,
//! which cancels everything below it. A client in the same program sends
//! three requests one after the other: a plain one (the slow backend misses
//! the deadline), one that hangs up after 75ms without reading its response,
//! and one that asks for an 80ms budget. For each, the program prints which
//! backends finished, which were cancelled, and why (`err` and `cause`).
//!
//! Run it with:
//!
//! ```text
//! cargo run --example request
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ctxtree::{Cause, Context, Error};
use futures::future::join_all;
use futures::{select, FutureExt};
use smol::channel::{self, Sender};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::{TcpListener, TcpStream};
use smol::Timer;

/// Every connection must be answered within this time.
const CONNECTION_DEADLINE: Duration = Duration::from_millis(300);

/// The simulated backends, and how long each one takes.
const BACKENDS: [(&str, Duration); 3] = [
    ("users", Duration::from_millis(50)),
    ("orders", Duration::from_millis(100)),
    ("recommendations", Duration::from_secs(2)),
];

/// If the whole demo has not finished by then, something is wrong: give up.
const WATCHDOG: Duration = Duration::from_secs(5);

/// How one backend call ended.
enum Outcome {
    Finished(Duration),
    Cancelled { err: Error, cause: Cause },
}

/// What the server did for one request, sent to `main` to print.
type Report = Vec<(&'static str, Outcome)>;

/// One backend call: `work` of simulated latency, abandoned as soon as `ctx`
/// is done.
async fn call_backend(ctx: &Context, work: Duration) -> Outcome {
    select! {
        _ = Timer::after(work).fuse() => Outcome::Finished(work),
        err = ctx.done() => Outcome::Cancelled {
            err,
            cause: ctx.cause().expect("a done context has a cause"),
        },
    }
}

/// Calls every backend at once, all under the same context.
async fn fan_out(ctx: &Context) -> Report {
    let calls = BACKENDS
        .iter()
        .map(|&(name, work)| async move { (name, call_backend(ctx, work).await) });
    join_all(calls).await
}

/// `budget=80ms` in the request line asks for a tighter deadline.
fn parse_budget(request: &str) -> Option<Duration> {
    let millis = request.split_whitespace().find_map(|word| {
        let value = word.strip_prefix("budget=")?.strip_suffix("ms")?;
        value.parse().ok()
    })?;
    Some(Duration::from_millis(millis))
}

/// Serves one connection: reads a request line, fans out, answers.
async fn handle(server: Context, mut stream: TcpStream, reports: Sender<Report>) {
    let (conn, cancel_conn) = server.with_timeout(CONNECTION_DEADLINE);

    // Even reading the request is bounded by the connection's deadline.
    let mut reader = BufReader::new(stream.clone());
    let mut request = String::new();
    match conn.run(reader.read_line(&mut request)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }

    // The request's own context: the budget it asked for, never later than
    // the connection's deadline (the earliest deadline on the path wins).
    let budget = parse_budget(&request).unwrap_or(CONNECTION_DEADLINE);
    let (ctx, cancel_request) = conn.with_timeout(budget);
    // Whatever is still running when this function returns is cancelled.
    let _guard = cancel_request.guard();

    // A client sends nothing after its request line, so a read that returns
    // end of file (or fails) means it has hung up: cancel the connection,
    // and with it the request and every backend call below it.
    let watch_hang_up = smol::spawn(async move {
        let mut byte = [0u8; 1];
        while let Ok(1..) = reader.read(&mut byte).await {}
        let cause = io::Error::new(io::ErrorKind::ConnectionAborted, "client disconnected");
        cancel_conn.cancel_with_cause(Arc::new(cause));
    });

    let report = fan_out(&ctx).await;
    // Dropping a smol task cancels it: stop watching before answering.
    drop(watch_hang_up);

    let finished: Vec<&str> = report
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Finished(_)))
        .map(|&(name, _)| name)
        .collect();
    let response = format!(
        "200 OK, {} of {} backends: {}\n",
        finished.len(),
        report.len(),
        finished.join(", ")
    );
    // The client may be gone already; then the write fails, and that is fine.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = reports.send(report).await;
}

/// Accepts connections until the server's context is done.
async fn serve(server: Context, listener: TcpListener, reports: Sender<Report>) {
    while let Ok(Ok((stream, _))) = server.run(listener.accept()).await {
        smol::spawn(handle(server.clone(), stream, reports.clone())).detach();
    }
}

/// Sends `request`; then either reads the response, or waits `hang_up_after`
/// and closes the connection without reading it.
async fn client(
    addr: SocketAddr,
    request: &str,
    hang_up_after: Option<Duration>,
) -> io::Result<Option<String>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(format!("{request}\n").as_bytes()).await?;
    if let Some(delay) = hang_up_after {
        Timer::after(delay).await;
        return Ok(None); // dropping `stream` closes the connection
    }
    let mut response = String::new();
    BufReader::new(stream).read_line(&mut response).await?;
    Ok(Some(response.trim_end().to_string()))
}

async fn demo() -> io::Result<()> {
    let (server, shutdown) = Context::background().with_cancel();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (reports_tx, reports) = channel::unbounded();
    let server_task = smol::spawn(serve(server, listener, reports_tx));
    println!("listening on {addr}; each connection has {CONNECTION_DEADLINE:?}\n");

    let requests = [
        ("GET /dashboard", None),
        ("GET /dashboard", Some(Duration::from_millis(75))),
        ("GET /dashboard budget=80ms", None),
    ];
    for (i, (request, hang_up_after)) in requests.into_iter().enumerate() {
        print!("request {}: {request:?}", i + 1);
        match hang_up_after {
            Some(delay) => println!(", the client hangs up after {delay:?}"),
            None => println!(),
        }
        let response = client(addr, request, hang_up_after).await?;
        let report = reports.recv().await.map_err(io::Error::other)?;
        for (name, outcome) in &report {
            match outcome {
                Outcome::Finished(work) => println!("  {name:<16} finished ({work:?} of work)"),
                Outcome::Cancelled { err, cause } => {
                    println!("  {name:<16} cancelled: err = {err}, cause = {cause}")
                }
            }
        }
        match response {
            Some(response) => println!("  client received: {response:?}\n"),
            None => println!("  client received: nothing, it had hung up\n"),
        }
    }

    // Shutting down: cancelling the server's context ends the accept loop.
    shutdown.cancel();
    server_task.await;
    Ok(())
}

fn main() -> io::Result<()> {
    smol::block_on(async {
        let watchdog = async {
            Timer::after(WATCHDOG).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "the demo hung"))
        };
        smol::future::or(demo(), watchdog).await
    })
}
