//! A deadline across two gRPC hops, and a hang-up that stops both, with
//! tonic and `ctxtree::tower`.
//!
//! client ──▶ service A ──▶ service B
//!
//! * Call 1: the client calls A with a 300 ms deadline. A works one step,
//!   then calls B under its own request's context: `ClientLayer` sends B
//!   what is left of the client's budget as `grpc-timeout`. B works in
//!   steps and stops at the client's deadline, not at its own 10 s limit.
//!   Every hop stops then; which of the timers due at that instant a hop
//!   notices first (its own context's, or tonic's enforcement of the same
//!   `grpc-timeout` on either side of each call) varies from run to run,
//!   so each hop prints why it stopped, and the checks look at when.
//! * Call 2: the client calls A with a 10 s budget and hangs up after
//!   250 ms. A's context is cancelled with a `ClientGone` cause; A's call to
//!   B is abandoned with it, so B's context is cancelled the same way.
//!
//! Each hop prints its budget when it starts and why it stopped; the program
//! checks the outcome and exits with an error if it is not what is described
//! above. The messages and the gRPC glue are written by hand, so no protoc
//! is needed.
//!
//! Run with `cargo run --example grpc_chain --features tower`.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use ctxtree::tower::{ClientGone, ClientLayer, ClientService, ServerLayer};
use ctxtree::{Context, Error};
use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::Status;
use tonic_prost::ProstCodec;
use tower::ServiceBuilder;

/// The client's deadline for call 1.
const CLIENT_DEADLINE: Duration = Duration::from_millis(300);
/// The client's budget for call 2, in which it hangs up after `HANG_UP_AFTER`.
const LONG_BUDGET: Duration = Duration::from_secs(10);
const HANG_UP_AFTER: Duration = Duration::from_millis(250);
/// B's own limit: far more than any client here gives it.
const B_LIMIT: Duration = Duration::from_secs(10);
/// One step of work.
const STEP: Duration = Duration::from_millis(50);
/// Steps B would do with all the time in the world (5 s of work).
const B_STEPS: u32 = 100;
/// Generous bound for what should happen at once, on a busy machine.
const PROMPTLY: Duration = Duration::from_secs(2);
/// The whole program never runs longer than this.
const WATCHDOG: Duration = Duration::from_secs(30);

type Result<T, E = Box<dyn StdError + Send + Sync>> = std::result::Result<T, E>;

/// The request both services take.
#[derive(Clone, PartialEq, prost::Message)]
struct WorkRequest {
    /// Which of the client's calls this is part of.
    #[prost(uint32, tag = "1")]
    call: u32,
}

/// The answer both services give: how many steps they did.
#[derive(Clone, PartialEq, prost::Message)]
struct WorkReply {
    #[prost(uint32, tag = "1")]
    steps: u32,
}

/// How a hop's work ended, sent to `main` to check.
#[derive(Debug)]
struct Stopped {
    hop: &'static str,
    call: u32,
    steps: u32,
    /// When, since the client started the call.
    at: Duration,
    /// `None` if the work finished rather than being stopped by its context.
    err: Option<Error>,
    /// For A: B's answer, if B failed.
    b_status: Option<tonic::Code>,
    client_gone: bool,
    /// The hop's deadline, measured as `at` is; `None` for none.
    deadline_at: Option<Duration>,
}

/// A gRPC client that obeys the context in each request's extensions.
type Client = tonic::client::Grpc<ClientService<Channel>>;

/// Shared by both services.
#[derive(Clone)]
struct Hop {
    name: &'static str,
    /// A's client to B; `None` for B.
    next: Option<Client>,
    reports: mpsc::UnboundedSender<Stopped>,
    /// When the client started each call, to print times relative to it.
    epoch: Arc<std::sync::Mutex<Instant>>,
}

impl tonic::server::NamedService for Hop {
    const NAME: &'static str = "chain.Work";
}

impl tower::Service<http::Request<tonic::body::Body>> for Hop {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != "/chain.Work/Do" {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let hop = self.clone();
        let method = tower::service_fn(move |request: tonic::Request<WorkRequest>| {
            let hop = hop.clone();
            async move {
                let ctx = request
                    .extensions()
                    .get::<Context>()
                    .expect("ServerLayer gives every request a context")
                    .clone();
                let call = request.get_ref().call;
                // The work runs in a task of its own, as real work often
                // does: it is not dropped with the handler, so only its
                // context can stop it.
                let work = tokio::spawn(hop.work(ctx, call));
                match work.await {
                    Ok(result) => result.map(tonic::Response::new),
                    Err(_) => Err(Status::internal("the work panicked")),
                }
            }
        });
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(grpc.unary(method, req).await)
        })
    }
}

impl Hop {
    fn since_epoch(&self) -> Duration {
        self.epoch.lock().unwrap().elapsed()
    }

    /// A hop's work under `ctx`: B works step after step; A works one step,
    /// then calls B under the same context.
    async fn work(mut self, ctx: Context, call: u32) -> Result<WorkReply, Status> {
        let budget = ctx
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let deadline_at = budget.map(|b| b + self.since_epoch());
        println!(
            "{:>8}  {}: call {call}: starts, budget left {}",
            ms(self.since_epoch()),
            self.name,
            budget.map_or("none".into(), ms)
        );
        let mut steps = 0;
        let limit = if self.next.is_some() { 1 } else { B_STEPS };
        while steps < limit {
            if ctx.run(tokio::time::sleep(STEP)).await.is_err() {
                break;
            }
            steps += 1;
        }
        let mut b_status = None;
        if let (Some(client), false) = (self.next.as_mut(), ctx.is_done()) {
            // The call to B carries A's request context: B gets what is left.
            let mut request = tonic::Request::new(WorkRequest { call });
            request.extensions_mut().insert(ctx.clone());
            let codec = ProstCodec::<WorkRequest, WorkReply>::default();
            let path = PathAndQuery::from_static("/chain.Work/Do");
            let answer = match client.ready().await {
                Ok(()) => client.unary(request, path, codec).await,
                Err(err) => Err(Status::unavailable(err.to_string())),
            };
            match answer {
                Ok(reply) => steps += reply.into_inner().steps,
                Err(status) => b_status = Some(status),
            }
        }
        let err = ctx.err();
        let cause = ctx.cause();
        let client_gone = cause
            .as_ref()
            .is_some_and(|c| c.downcast_ref::<ClientGone>().is_some());
        let why = match (&err, &b_status) {
            (Some(err), _) => match cause.map(|c| c.to_string()) {
                Some(cause) if cause != err.to_string() => format!("{err} (cause: {cause})"),
                _ => err.to_string(),
            },
            (None, Some(status)) => format!("B failed: {:?} {:?}", status.code(), status.message()),
            (None, None) => "finished".to_string(),
        };
        let at = self.since_epoch();
        println!(
            "{:>8}  {}: call {call}: stopped after {steps} step(s): {why}",
            ms(at),
            self.name
        );
        let _ = self.reports.send(Stopped {
            hop: self.name,
            call,
            steps,
            at,
            err,
            b_status: b_status.as_ref().map(Status::code),
            client_gone,
            deadline_at,
        });
        match (err, b_status) {
            (Some(err), _) if err.is_timeout() => Err(Status::deadline_exceeded(err.to_string())),
            (Some(err), _) => Err(Status::cancelled(err.to_string())),
            (None, Some(status)) => Err(status),
            (None, None) => Ok(WorkReply { steps }),
        }
    }
}

/// Serves `hop` behind a `ServerLayer`.
async fn serve(hop: Hop, layer: ServerLayer) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Server::builder().layer(layer).add_service(hop);
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    Ok(addr)
}

/// A client of `addr` that sends each request's context along.
async fn client(addr: SocketAddr) -> Result<Client> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // `ClientLayer::new().margin(...)` would send a little less than is
    // left. tonic's channel enforces the `grpc-timeout` it is given too, so
    // with tonic a margin also shortens the caller's own wait.
    Ok(tonic::client::Grpc::new(
        ServiceBuilder::new()
            .layer(ClientLayer::new())
            .service(channel),
    ))
}

/// Calls A under `ctx`.
async fn call_a(mut a: Client, ctx: Context, call: u32) -> Result<WorkReply, Status> {
    a.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(WorkRequest { call });
    request.extensions_mut().insert(ctx);
    let codec = ProstCodec::<WorkRequest, WorkReply>::default();
    let path = PathAndQuery::from_static("/chain.Work/Do");
    a.unary(request, path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// The two reports of `call`, A's and B's.
async fn reports(
    rx: &mut mpsc::UnboundedReceiver<Stopped>,
    call: u32,
) -> Result<(Stopped, Stopped)> {
    let mut a = None;
    let mut b = None;
    while a.is_none() || b.is_none() {
        let report = tokio::time::timeout(PROMPTLY * 5, rx.recv())
            .await
            .map_err(|_| format!("call {call}: a hop never stopped"))?
            .ok_or("the services are gone")?;
        if report.call != call {
            return Err(format!("a report of call {} during call {call}", report.call).into());
        }
        match report.hop {
            "A" => a = Some(report),
            _ => b = Some(report),
        }
    }
    Ok((a.unwrap(), b.unwrap()))
}

/// Fails with `what` unless `ok`.
fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        println!("        ok: {what}");
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

async fn demo() -> Result<()> {
    let (reports_tx, mut reports_rx) = mpsc::unbounded_channel();
    let epoch = Arc::new(std::sync::Mutex::new(Instant::now()));

    // Each server's shutdown context; B also has a long limit of its own.
    let (shutdown_ctx, shutdown) = Context::background().with_cancel();
    let b_addr = serve(
        Hop {
            name: "B",
            next: None,
            reports: reports_tx.clone(),
            epoch: epoch.clone(),
        },
        ServerLayer::new(shutdown_ctx.clone())
            .default_timeout(B_LIMIT)
            .max_timeout(B_LIMIT),
    )
    .await?;
    let a_addr = serve(
        Hop {
            name: "A",
            next: Some(client(b_addr).await?),
            reports: reports_tx,
            epoch: epoch.clone(),
        },
        ServerLayer::new(shutdown_ctx),
    )
    .await?;
    let a = client(a_addr).await?;

    println!(
        "== call 1: the client's {} deadline reaches B through A ==",
        ms(CLIENT_DEADLINE)
    );
    *epoch.lock().unwrap() = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(CLIENT_DEADLINE);
    println!(
        "{:>8}  client: call 1 with a deadline in {}",
        ms(Duration::ZERO),
        ms(CLIENT_DEADLINE)
    );
    let answer = call_a(a.clone(), ctx.clone(), 1).await;
    let answered_at = epoch.lock().unwrap().elapsed();
    match &answer {
        Ok(reply) => println!(
            "{:>8}  client: call 1 answered: {} steps",
            ms(answered_at),
            reply.steps
        ),
        Err(status) => println!(
            "{:>8}  client: call 1 failed: {:?} {:?} (own context: {})",
            ms(answered_at),
            status.code(),
            status.message(),
            ctx.err().map_or("live".into(), |e| e.to_string())
        ),
    }
    let (a1, b1) = reports(&mut reports_rx, 1).await?;
    println!("checks:");
    // Never before the client's deadline (timers do not fire early; the
    // time left is rounded down to the microsecond), and soon after it.
    let at_the_deadline = |at: Duration| {
        at + Duration::from_millis(1) >= CLIENT_DEADLINE && at < CLIENT_DEADLINE + PROMPTLY
    };
    check(answer.is_err(), "the client's call failed")?;
    let b_deadline = b1.deadline_at.ok_or("B had no deadline")?;
    check(
        at_the_deadline(b_deadline),
        "B's deadline was the client's, not its own 10 s",
    )?;
    check(
        b1.err.is_some() && at_the_deadline(b1.at),
        "B was stopped by its context at the client's deadline",
    )?;
    check(
        (a1.err.is_some() || a1.b_status.is_some()) && at_the_deadline(a1.at),
        "A was stopped at the client's deadline",
    )?;
    check(
        b1.steps >= 1 && b1.steps < B_STEPS,
        "B worked, and was cut short",
    )?;

    println!();
    println!(
        "== call 2: a {} budget, but the client hangs up after {} ==",
        ms(LONG_BUDGET),
        ms(HANG_UP_AFTER)
    );
    *epoch.lock().unwrap() = Instant::now();
    let (ctx, hang_up) = Context::background().with_timeout(LONG_BUDGET);
    println!(
        "{:>8}  client: call 2 with a budget of {}",
        ms(Duration::ZERO),
        ms(LONG_BUDGET)
    );
    let in_flight = tokio::spawn(call_a(a.clone(), ctx, 2));
    tokio::time::sleep(HANG_UP_AFTER).await;
    let hung_up_at = epoch.lock().unwrap().elapsed();
    println!("{:>8}  client: hangs up", ms(hung_up_at));
    // Cancelling the client's context abandons the call: the HTTP/2 stream
    // is reset, and A sees its client go away.
    hang_up.cancel();
    let answer = in_flight.await?;
    let (a2, b2) = reports(&mut reports_rx, 2).await?;
    println!("checks:");
    check(answer.is_err(), "the client's call was abandoned")?;
    check(
        a2.err == Some(Error::Canceled) && a2.client_gone,
        "A's context was cancelled because its client went away",
    )?;
    check(
        b2.err == Some(Error::Canceled) && b2.client_gone,
        "B's context was cancelled because A abandoned the call",
    )?;
    check(
        a2.at < hung_up_at + PROMPTLY && b2.at < hung_up_at + PROMPTLY,
        "both stopped right after the hang-up, long before the 10 s budget",
    )?;

    shutdown.cancel();
    println!();
    println!("all checks passed");
    Ok(())
}

/// Milliseconds, for the printout.
fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    // Never hang: exit with status 2 if the demo is still running by then.
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("watchdog: the demo did not finish within {WATCHDOG:?}");
        std::process::exit(2);
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(demo())
}
