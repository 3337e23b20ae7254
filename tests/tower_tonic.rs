//! `ServerLayer` and `ClientLayer` with tonic 0.14: a real tonic server and
//! tonic clients on 127.0.0.1. The messages and the client and server glue
//! are written by hand (no protoc): `#[derive(prost::Message)]`,
//! `tonic::server::Grpc` and `tonic::client::Grpc` with the prost codec.

mod common;

use std::convert::Infallible;
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
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::ServiceBuilder;

use common::patience;

/// What the caller asks for: nothing but which method it calls.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BudgetRequest {
    #[prost(string, tag = "1")]
    pub note: String,
}

/// What the handler saw: the time left on its context, in microseconds
/// (0 for none), and whether it had a deadline at all.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BudgetReply {
    #[prost(uint64, tag = "1")]
    pub micros_left: u64,
    #[prost(bool, tag = "2")]
    pub has_deadline: bool,
}

/// The service `demo.Budget`, with two methods: `Left` answers with the
/// time left, `Wait` never answers.
#[derive(Clone)]
struct BudgetService {
    contexts: mpsc::UnboundedSender<Context>,
}

impl tonic::server::NamedService for BudgetService {
    const NAME: &'static str = "demo.Budget";
}

impl tower::Service<http::Request<tonic::body::Body>> for BudgetService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let contexts = self.contexts.clone();
        let wait = match req.uri().path() {
            "/demo.Budget/Left" => false,
            "/demo.Budget/Wait" => true,
            _ => {
                return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
            }
        };
        let method = tower::service_fn(move |request: tonic::Request<BudgetRequest>| {
            let contexts = contexts.clone();
            async move {
                let ctx = request
                    .extensions()
                    .get::<Context>()
                    .ok_or_else(|| Status::internal("no context"))?
                    .clone();
                let _ = contexts.send(ctx.clone());
                if wait {
                    std::future::pending::<()>().await;
                }
                let left = ctx
                    .deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()));
                Ok(tonic::Response::new(BudgetReply {
                    micros_left: left.map_or(0, |d| d.as_micros() as u64),
                    has_deadline: left.is_some(),
                }))
            }
        });
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// Serves `demo.Budget` behind a `ServerLayer` of `server_ctx`; returns its
/// address and the contexts its handler sees.
async fn serve(server_ctx: Context) -> (SocketAddr, mpsc::UnboundedReceiver<Context>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .layer(ServerLayer::new(server_ctx))
        .add_service(BudgetService { contexts: tx });
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
    (addr, rx)
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Calls `method` through `client`.
async fn call<T>(
    client: &mut tonic::client::Grpc<T>,
    method: &'static str,
    request: tonic::Request<BudgetRequest>,
) -> Result<BudgetReply, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<ctxtree::tower::BoxError>,
    T::Error: Into<ctxtree::tower::BoxError>,
{
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(e.into().to_string()))?;
    let path = PathAndQuery::from_static(method);
    let codec = ProstCodec::<BudgetRequest, BudgetReply>::default();
    tokio::time::timeout(patience(), client.unary(request, path, codec))
        .await
        .expect("the call ended in time")
        .map(tonic::Response::into_inner)
}

async fn next(contexts: &mut mpsc::UnboundedReceiver<Context>) -> Context {
    tokio::time::timeout(patience(), contexts.recv())
        .await
        .expect("a call reached the handler")
        .unwrap()
}

async fn done(ctx: &Context) -> Error {
    tokio::time::timeout(patience(), ctx.done())
        .await
        .expect("the context is done in time")
}

fn layered(channel: Channel) -> tonic::client::Grpc<ClientService<Channel>> {
    tonic::client::Grpc::new(
        ServiceBuilder::new()
            .layer(ClientLayer::new())
            .service(channel),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_reads_the_deadline_a_tonic_client_set() {
    let (addr, mut contexts) = serve(Context::background()).await;
    let mut client = tonic::client::Grpc::new(channel(addr).await);

    let mut request = tonic::Request::new(BudgetRequest::default());
    request.set_timeout(Duration::from_secs(5));
    let reply = call(&mut client, "/demo.Budget/Left", request)
        .await
        .unwrap();
    assert!(reply.has_deadline);
    assert!(reply.micros_left <= 5_000_000, "{reply:?}");
    assert!(reply.micros_left > 2_000_000, "{reply:?}");

    // Without a timeout, no deadline.
    let request = tonic::Request::new(BudgetRequest::default());
    let reply = call(&mut client, "/demo.Budget/Left", request)
        .await
        .unwrap();
    assert!(!reply.has_deadline);
    let _ = (next(&mut contexts).await, next(&mut contexts).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_sends_the_contexts_budget() {
    let (addr, _contexts) = serve(Context::background()).await;
    let mut client = layered(channel(addr).await);

    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
    let mut request = tonic::Request::new(BudgetRequest::default());
    request.extensions_mut().insert(ctx);
    let reply = call(&mut client, "/demo.Budget/Left", request)
        .await
        .unwrap();
    assert!(reply.has_deadline);
    assert!(reply.micros_left <= 2_000_000, "{reply:?}");
    assert!(reply.micros_left > 500_000, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passing_ends_the_handlers_context_and_the_call() {
    let (addr, mut contexts) = serve(Context::background()).await;
    let mut client = tonic::client::Grpc::new(channel(addr).await);

    let mut request = tonic::Request::new(BudgetRequest::default());
    request.set_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let status = call(&mut client, "/demo.Budget/Wait", request)
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("a deadline passing: {:?} after {took:?}", status.code());
    // tonic's server enforces the timeout too, outside the layer: whichever
    // answers first, the layer (DEADLINE_EXCEEDED) or tonic (CANCELLED).
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(took < patience(), "{took:?}");

    // The handler's context ended at its deadline, not as a client gone.
    let ctx = next(&mut contexts).await;
    assert_eq!(done(&ctx).await, Error::DeadlineExceeded);
    let cause = ctx.cause().unwrap();
    assert!(cause.downcast_ref::<ClientGone>().is_none(), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_client_context_reaches_the_handler() {
    let (addr, mut contexts) = serve(Context::background()).await;
    let mut client = layered(channel(addr).await);

    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let mut request = tonic::Request::new(BudgetRequest::default());
    request.extensions_mut().insert(ctx);
    let in_flight =
        tokio::spawn(async move { call(&mut client, "/demo.Budget/Wait", request).await });
    let server_ctx = next(&mut contexts).await;

    cancel.cancel();
    let status = tokio::time::timeout(patience(), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert_eq!(status.message(), "context canceled");

    assert_eq!(done(&server_ctx).await, Error::Canceled);
    let cause = server_ctx.cause().unwrap();
    assert!(cause.downcast_ref::<ClientGone>().is_some(), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_timeout_is_refused_with_a_status() {
    let (addr, contexts) = serve(Context::background()).await;
    let mut client = tonic::client::Grpc::new(channel(addr).await);

    let mut request = tonic::Request::new(BudgetRequest::default());
    request
        .metadata_mut()
        .insert("grpc-timeout", "soon".parse().unwrap());
    let status = call(&mut client, "/demo.Budget/Left", request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("malformed grpc-timeout: invalid character"),
        "{status:?}"
    );
    assert!(contexts.is_empty(), "the handler never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutdown_cancels_the_handlers() {
    let (server_ctx, shutdown) = Context::background().with_cancel();
    let (addr, mut contexts) = serve(server_ctx).await;
    let channel = channel(addr).await;

    let mut in_flight = Vec::new();
    for _ in 0..3 {
        let mut client = tonic::client::Grpc::new(channel.clone());
        in_flight.push(tokio::spawn(async move {
            let request = tonic::Request::new(BudgetRequest::default());
            call(&mut client, "/demo.Budget/Wait", request).await
        }));
    }
    let mut ctxs = Vec::new();
    for _ in 0..3 {
        ctxs.push(next(&mut contexts).await);
    }
    shutdown.cancel_with_cause(Arc::new(std::io::Error::other("server shutting down")));
    for ctx in &ctxs {
        assert_eq!(ctx.cause().unwrap().to_string(), "server shutting down");
    }
    for call in in_flight {
        let status = tokio::time::timeout(patience(), call)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "server shutting down");
    }
}
