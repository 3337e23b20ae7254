//! `ClientLayer` around hyper-util's client, against real hyper 1 servers on
//! 127.0.0.1, over HTTP/1.1 and HTTP/2.

mod tower_common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ctxtree::tower::{BoxError, ClientBody, ClientGone, ClientLayer, ClientService, ServerLayer};
use ctxtree::wire::decode_timeout;
use ctxtree::{Context, Error};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_common::{done, handler, patience, seen, serve, within, Proto, ReqBody};

type HyperClient = Client<HttpConnector, ReqBody>;

fn client(proto: Proto, layer: ClientLayer) -> ClientService<HyperClient> {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(proto == Proto::Http2)
        .build_http();
    layer.layer(client)
}

/// A server with no layer that answers with the `grpc-timeout` it got, or
/// `none`, and counts its requests.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let addr = serve(tower::service_fn(move |req: Request<Incoming>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let value = req
            .headers()
            .get("grpc-timeout")
            .map_or_else(|| "none".to_string(), |v| v.to_str().unwrap().to_string());
        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(value)))) }
    }))
    .await;
    (addr, calls)
}

/// A request to `path` on `addr` under `ctx`, if any.
fn request(addr: SocketAddr, path: &str, ctx: Option<&Context>) -> Request<ReqBody> {
    let mut req = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Some(ctx) = ctx {
        req.extensions_mut().insert(ctx.clone());
    }
    req
}

async fn call(
    client: &ClientService<HyperClient>,
    req: Request<ReqBody>,
) -> Result<Response<ClientBody<Incoming>>, BoxError> {
    within(client.clone().oneshot(req)).await
}

async fn text(response: Response<ClientBody<Incoming>>) -> String {
    let bytes = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn context_error(err: &BoxError) -> Option<Error> {
    err.downcast_ref::<Error>().copied()
}

// ---------------------------------------------------------------------------
// The time left goes out as `grpc-timeout`
// ---------------------------------------------------------------------------

async fn sends_the_time_left(proto: Proto) {
    let (addr, _) = echo_server().await;
    for margin in [Duration::ZERO, Duration::from_secs(1)] {
        let client = client(proto, ClientLayer::new().margin(margin));
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
        let before = Instant::now();
        let response = call(&client, request(addr, "/", Some(&ctx))).await.unwrap();
        let sent = text(response).await;
        let sent_left = decode_timeout(&sent).unwrap();
        // Rounded down from the time left when it was sent, which is at
        // most the time left before the call.
        let most = ctx.deadline().unwrap() - before - margin;
        assert!(sent_left <= most, "sent {sent}, at most {most:?}");
        assert!(
            sent_left > most - Duration::from_secs(2),
            "sent {sent}, at most {most:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_the_time_left_http1() {
    sends_the_time_left(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_the_time_left_http2() {
    sends_the_time_left(Proto::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_sent_without_a_deadline_or_with_a_header_already() {
    let (addr, _) = echo_server().await;
    let client = client(Proto::Http2, ClientLayer::new());

    // No context: untouched.
    let sent = text(call(&client, request(addr, "/", None)).await.unwrap()).await;
    assert_eq!(sent, "none");
    // A context without a deadline: no header.
    let (ctx, _cancel) = Context::background().with_cancel();
    let sent = text(call(&client, request(addr, "/", Some(&ctx))).await.unwrap()).await;
    assert_eq!(sent, "none");
    // ...and a header the request has is kept.
    let mut req = request(addr, "/", Some(&ctx));
    req.headers_mut()
        .insert("grpc-timeout", "7S".parse().unwrap());
    let sent = text(call(&client, req).await.unwrap()).await;
    assert_eq!(sent, "7S");

    // A deadline: a shorter header is kept, a longer one replaced.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
    let mut req = request(addr, "/", Some(&ctx));
    req.headers_mut()
        .insert("grpc-timeout", "1S".parse().unwrap());
    let sent = text(call(&client, req).await.unwrap()).await;
    assert_eq!(sent, "1S");
    let mut req = request(addr, "/", Some(&ctx));
    req.headers_mut()
        .insert("grpc-timeout", "10S".parse().unwrap());
    let sent = text(call(&client, req).await.unwrap()).await;
    assert!(
        decode_timeout(&sent).unwrap() <= Duration::from_secs(5),
        "{sent}"
    );
    // A malformed one is replaced too.
    let mut req = request(addr, "/", Some(&ctx));
    req.headers_mut()
        .insert("grpc-timeout", "soon".parse().unwrap());
    let sent = text(call(&client, req).await.unwrap()).await;
    assert!(
        decode_timeout(&sent).unwrap() <= Duration::from_secs(5),
        "{sent}"
    );
}

// ---------------------------------------------------------------------------
// A spent budget and a done context fail fast
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_is_sent_as_the_smallest_value() {
    // More margin than time left: the smallest value goes out.
    let (addr, _) = echo_server().await;
    let client = client(
        Proto::Http2,
        ClientLayer::new().margin(Duration::from_secs(30)),
    );
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(10));
    let sent = text(call(&client, request(addr, "/", Some(&ctx))).await.unwrap()).await;
    assert_eq!(sent, "1n");

    // And a server with the layer fails it at once, without its handler.
    let (seen, contexts) = seen();
    let addr = serve(ServerLayer::new(Context::background()).layer(handler(seen))).await;
    let started = Instant::now();
    let response = call(&client, request(addr, "/wait", Some(&ctx)))
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < patience());
    assert!(
        !ctx.is_done(),
        "failed by the server, not by the client's deadline"
    );
    assert_eq!(contexts.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_context_fails_without_sending() {
    let (addr, calls) = echo_server().await;
    let client = client(Proto::Http1, ClientLayer::new());
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let err = call(&client, request(addr, "/", Some(&ctx)))
        .await
        .unwrap_err();
    assert_eq!(context_error(&err), Some(Error::Canceled));

    let (ctx, _cancel) = Context::background().with_deadline(Instant::now());
    let err = call(&client, request(addr, "/", Some(&ctx)))
        .await
        .unwrap_err();
    assert_eq!(context_error(&err), Some(Error::DeadlineExceeded));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was sent");
}

/// A done context fails before the inner service is even called: some
/// services start their work in `call`, not in the future it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_context_never_calls_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: Request<ReqBody>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
    });
    let client = ClientLayer::new().layer(inner);
    let (ctx, cancel) = Context::background().with_cancel();
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));

    let response = within(client.clone().oneshot(request(addr, "/", Some(&ctx)))).await;
    assert!(response.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    cancel.cancel();
    let err = within(client.oneshot(request(addr, "/", Some(&ctx))))
        .await
        .unwrap_err();
    assert_eq!(context_error(&err), Some(Error::Canceled));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not called again");
}

// ---------------------------------------------------------------------------
// A context done mid-call abandons the call
// ---------------------------------------------------------------------------

async fn cancel_abandons_the_call(proto: Proto) {
    let (seen, mut contexts) = seen();
    let addr = serve(ServerLayer::new(Context::background()).layer(handler(seen))).await;
    let client = client(proto, ClientLayer::new());
    let (ctx, cancel) = Context::background().with_timeout(Duration::from_secs(60));
    let call = tokio::spawn({
        let client = client.clone();
        let req = request(addr, "/wait", Some(&ctx));
        async move { client.oneshot(req).await }
    });
    let server_ctx = contexts.next().await;

    let cancelled_at = Instant::now();
    cancel.cancel();
    let out = tokio::time::timeout(patience(), call)
        .await
        .unwrap()
        .unwrap();
    let err = out.unwrap_err();
    assert_eq!(context_error(&err), Some(Error::Canceled), "{err}");
    assert!(cancelled_at.elapsed() < patience());

    // The server saw its client go away.
    assert_eq!(done(&server_ctx).await, Error::Canceled);
    let cause = server_ctx.cause().unwrap();
    assert!(cause.downcast_ref::<ClientGone>().is_some(), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_abandons_the_call_http1() {
    cancel_abandons_the_call(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_abandons_the_call_http2() {
    cancel_abandons_the_call(Proto::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_abandons_the_call() {
    // A server that never answers and knows nothing of deadlines.
    let addr = serve(tower::service_fn(|_req: Request<Incoming>| {
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    }))
    .await;
    let client = client(Proto::Http2, ClientLayer::new());
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = call(&client, request(addr, "/", Some(&ctx)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(context_error(&err), Some(Error::DeadlineExceeded), "{err}");
    assert!(took >= Duration::from_millis(190), "gave up after {took:?}");
    assert!(took < patience(), "gave up after {took:?}");
}

/// A response body still streaming when the context is done ends with the
/// context's error, and the server sees the client go away mid-body.
async fn a_streaming_body_stops_with_the_context(proto: Proto) {
    let (seen, mut contexts) = seen();
    let addr = serve(ServerLayer::new(Context::background()).layer(handler(seen))).await;
    let client = client(proto, ClientLayer::new());
    let (ctx, cancel) = Context::background().with_cancel();
    let response = call(&client, request(addr, "/stream", Some(&ctx)))
        .await
        .unwrap();
    let server_ctx = contexts.next().await;
    let mut body = response.into_body();
    let first = within(body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "chunk ");

    cancel.cancel();
    let err = within(body.frame()).await.unwrap().unwrap_err();
    assert_eq!(context_error(&err), Some(Error::Canceled), "{err}");
    assert!(
        body.frame().await.is_none(),
        "the body ends after the error"
    );

    assert_eq!(done(&server_ctx).await, Error::Canceled);
    let cause = server_ctx.cause().unwrap();
    let gone = cause
        .downcast_ref::<ClientGone>()
        .unwrap_or_else(|| panic!("the cause is {cause}"));
    assert!(gone.in_body());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_stops_with_the_context_http1() {
    a_streaming_body_stops_with_the_context(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_stops_with_the_context_http2() {
    a_streaming_body_stops_with_the_context(Proto::Http2).await;
}

/// A call chain: a server whose handler calls another server under its own
/// request's context hands on the client's deadline, less what it spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_hands_its_budget_on() {
    let (back_addr, _) = echo_server().await;
    let outgoing = client(Proto::Http2, ClientLayer::new());
    let front = ServerLayer::new(Context::background()).layer(tower::service_fn(
        move |req: Request<Incoming>| {
            let outgoing = outgoing.clone();
            async move {
                let ctx = req.extensions().get::<Context>().unwrap().clone();
                let sent = text(
                    call(&outgoing, request(back_addr, "/", Some(&ctx)))
                        .await
                        .unwrap(),
                )
                .await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(sent))))
            }
        },
    ));
    let front_addr = serve(front).await;

    let client = client(Proto::Http1, ClientLayer::new());
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(3));
    let sent_on = text(
        call(&client, request(front_addr, "/", Some(&ctx)))
            .await
            .unwrap(),
    )
    .await;
    let left = decode_timeout(&sent_on).unwrap();
    assert!(left <= Duration::from_secs(3), "{sent_on}");
    assert!(left > Duration::from_secs(1), "{sent_on}");
}
