//! `ServerLayer` on a real hyper 1 server on 127.0.0.1, with real hyper
//! clients over HTTP/1.1 and HTTP/2, and on axum.

mod tower_common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctxtree::tower::{ClientGone, ServerLayer};
use ctxtree::{Context, Error};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt};
use tower_common::{
    done, handler, header, micros_left, patience, request, seen, serve, text, within, Conn, Proto,
    ServerName,
};

/// A server whose requests' contexts derive from `server_ctx`; returns its
/// address and what its handler sees.
async fn server_with(layer: ServerLayer) -> (std::net::SocketAddr, tower_common::Contexts) {
    let (seen, contexts) = seen();
    let addr = serve(layer.layer(handler(seen))).await;
    (addr, contexts)
}

fn named_server() -> Context {
    Context::background().with_value(ServerName("test-server"))
}

// ---------------------------------------------------------------------------
// The client's deadline reaches the handler
// ---------------------------------------------------------------------------

async fn handler_sees_the_clients_deadline(proto: Proto) {
    let (addr, mut contexts) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, proto).await;

    let response = conn
        .send(request(addr, "/deadline", Some("5S"), false))
        .await
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer = text(response).await;
    let left = micros_left(&answer);
    // Sent 5 s; the server's clock starts when the request arrives, so the
    // handler sees at most 5 s, and on this machine surely more than 2 s.
    assert!(left <= 5_000_000, "{answer}");
    assert!(left > 2_000_000, "{answer}");
    // The request's context derives from the server-wide one.
    assert!(answer.ends_with(" test-server"), "{answer}");

    let ctx = contexts.next().await;
    // Sent: the request is over, and its context is cancelled plainly.
    assert_eq!(done(&ctx).await, Error::Canceled);
    assert!(ctx.cause().unwrap().downcast_ref::<ClientGone>().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_sees_the_clients_deadline_http1() {
    handler_sees_the_clients_deadline(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_sees_the_clients_deadline_http2() {
    handler_sees_the_clients_deadline(Proto::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_timeout_caps_and_default_applies() {
    let max = Duration::from_secs(2);
    // A client asking for an hour gets the maximum.
    let (addr, _c) = server_with(ServerLayer::new(named_server()).max_timeout(max)).await;
    let mut conn = Conn::open(addr, Proto::Http2).await;
    let answer = text(
        conn.send(request(addr, "/deadline", Some("1H"), false))
            .await
            .await
            .unwrap(),
    )
    .await;
    assert!(micros_left(&answer) <= 2_000_000, "{answer}");
    // So does a client asking for nothing.
    let answer = text(
        conn.send(request(addr, "/deadline", None, false))
            .await
            .await
            .unwrap(),
    )
    .await;
    assert!(micros_left(&answer) <= 2_000_000, "{answer}");

    // The default applies when the client sends no `grpc-timeout`, capped.
    let layer = ServerLayer::new(named_server()).default_timeout(Duration::from_secs(3));
    let (addr, _c) = server_with(layer.clone()).await;
    let mut conn = Conn::open(addr, Proto::Http1).await;
    let answer = text(
        conn.send(request(addr, "/deadline", None, false))
            .await
            .await
            .unwrap(),
    )
    .await;
    let left = micros_left(&answer);
    assert!(left <= 3_000_000 && left > 1_000_000, "{answer}");
    // ...but not when it sends one.
    let answer = text(
        conn.send(request(addr, "/deadline", Some("20S"), false))
            .await
            .await
            .unwrap(),
    )
    .await;
    assert!(micros_left(&answer) > 3_000_000, "{answer}");
    let (addr, _c) = server_with(layer.max_timeout(max)).await;
    let mut conn = Conn::open(addr, Proto::Http1).await;
    let answer = text(
        conn.send(request(addr, "/deadline", None, false))
            .await
            .await
            .unwrap(),
    )
    .await;
    assert!(micros_left(&answer) <= 2_000_000, "{answer}");

    // No header, no default, no maximum: no deadline.
    let (addr, _c) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, Proto::Http1).await;
    let answer = text(
        conn.send(request(addr, "/deadline", None, false))
            .await
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer, "none test-server");
}

// ---------------------------------------------------------------------------
// A client that hangs up cancels the handler's context
// ---------------------------------------------------------------------------

/// How a client hangs up.
#[derive(Clone, Copy, Debug)]
enum HangUp {
    /// Closes the connection.
    Close,
    /// Drops the request's response future: on HTTP/2 the stream is reset
    /// and the connection stays.
    DropRequest,
}

async fn hang_up_cancels_with_client_gone(proto: Proto, how: HangUp) {
    let (addr, mut contexts) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, proto).await;
    // A long budget: only the hang-up can end this request early.
    let in_flight = tokio::spawn(conn.send(request(addr, "/wait", Some("60S"), false)).await);
    let ctx = contexts.next().await;
    assert!(!ctx.is_done());

    let hung_up_at = Instant::now();
    match how {
        HangUp::Close => {
            in_flight.abort();
            conn.hang_up();
        }
        HangUp::DropRequest => in_flight.abort(),
    }
    assert_eq!(done(&ctx).await, Error::Canceled);
    let took = hung_up_at.elapsed();
    let cause = ctx.cause().unwrap();
    let gone = cause
        .downcast_ref::<ClientGone>()
        .unwrap_or_else(|| panic!("the cause is {cause}, not ClientGone"));
    assert!(!gone.in_body());
    assert!(took < patience(), "cancelled {took:?} after the hang-up");
    eprintln!("{proto:?} {how:?}: cancelled {took:?} after the hang-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_cancels_with_client_gone_http1() {
    hang_up_cancels_with_client_gone(Proto::Http1, HangUp::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_cancels_with_client_gone_http2() {
    hang_up_cancels_with_client_gone(Proto::Http2, HangUp::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reset_cancels_with_client_gone_http2() {
    hang_up_cancels_with_client_gone(Proto::Http2, HangUp::DropRequest).await;
}

/// A client that stops reading a streaming body mid-way cancels the
/// handler's context with `ClientGone`, `in_body` true.
async fn body_dropped_mid_stream_is_client_gone(proto: Proto) {
    let (addr, mut contexts) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, proto).await;
    let response = conn
        .send(request(addr, "/stream", None, false))
        .await
        .await
        .unwrap();
    let ctx = contexts.next().await;
    let mut body = response.into_body();
    let first = within(body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "chunk ");
    assert!(!ctx.is_done(), "the context lives while the body streams");

    drop(body); // HTTP/2: the stream is reset; HTTP/1.1: the connection closes.
    if proto == Proto::Http1 {
        conn.hang_up();
    }
    assert_eq!(done(&ctx).await, Error::Canceled);
    let cause = ctx.cause().unwrap();
    let gone = cause
        .downcast_ref::<ClientGone>()
        .unwrap_or_else(|| panic!("the cause is {cause}, not ClientGone"));
    assert!(gone.in_body());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_dropped_mid_stream_is_client_gone_http1() {
    body_dropped_mid_stream_is_client_gone(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_dropped_mid_stream_is_client_gone_http2() {
    body_dropped_mid_stream_is_client_gone(Proto::Http2).await;
}

/// A body sent to its end, trailers included, ends the context plainly:
/// hyper's HTTP/2 drops the body after the trailers without polling it to
/// its end, and that must not read as a client that went away.
async fn complete_body_is_not_client_gone(proto: Proto, path: &str) {
    let (addr, mut contexts) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, proto).await;
    let response = conn
        .send(request(addr, path, None, true))
        .await
        .await
        .unwrap();
    let ctx = contexts.next().await;
    let collected = within(response.into_body().collect()).await.unwrap();
    if path == "/trailers" && proto == Proto::Http2 {
        assert_eq!(collected.trailers().unwrap()["x-done"], "yes");
    }
    assert!(!collected.to_bytes().is_empty());
    assert_eq!(done(&ctx).await, Error::Canceled);
    let cause = ctx.cause().unwrap();
    assert_eq!(
        cause.downcast_ref::<Error>(),
        Some(&Error::Canceled),
        "{cause}"
    );
    // The connection is still good, and the next request is served.
    let response = conn
        .send(request(addr, "/full", None, false))
        .await
        .await
        .unwrap();
    assert_eq!(text(response).await, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_body_is_not_client_gone_http1() {
    complete_body_is_not_client_gone(Proto::Http1, "/full").await;
    complete_body_is_not_client_gone(Proto::Http1, "/trailers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_body_is_not_client_gone_http2() {
    complete_body_is_not_client_gone(Proto::Http2, "/full").await;
    complete_body_is_not_client_gone(Proto::Http2, "/trailers").await;
}

// ---------------------------------------------------------------------------
// The server-wide context reaches every request
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_context_cancel_reaches_every_request() {
    let (server_ctx, shutdown) = named_server().with_cancel();
    let (addr, mut contexts) = server_with(ServerLayer::new(server_ctx)).await;

    // Four requests in flight: two HTTP/1.1 connections (one of them gRPC),
    // and two streams of one HTTP/2 connection (one of them gRPC).
    let mut in_flight = Vec::new();
    for (proto, grpc) in [
        (Proto::Http1, false),
        (Proto::Http1, true),
        (Proto::Http2, false),
        (Proto::Http2, true),
    ] {
        let mut conn = Conn::open(addr, proto).await;
        let response = conn.send(request(addr, "/wait", None, grpc)).await;
        in_flight.push((grpc, tokio::spawn(response), conn));
    }
    let mut ctxs = Vec::new();
    for _ in 0..4 {
        ctxs.push(contexts.next().await);
    }
    assert!(ctxs.iter().all(|c| !c.is_done()));

    shutdown.cancel_with_cause(Arc::new(std::io::Error::other("server shutting down")));
    for ctx in &ctxs {
        // Done before `cancel` returned, with the server's cause.
        assert_eq!(ctx.err(), Some(Error::Canceled));
        assert_eq!(ctx.cause().unwrap().to_string(), "server shutting down");
    }
    // And the layer answered each, as gRPC or plain HTTP.
    for (grpc, response, _conn) in in_flight {
        let response = tokio::time::timeout(patience(), response)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if grpc {
            assert_eq!(response.status(), 200);
            assert_eq!(header(&response, "grpc-status").as_deref(), Some("14"));
            assert_eq!(
                header(&response, "grpc-message").as_deref(),
                Some("server shutting down")
            );
        } else {
            assert_eq!(response.status(), 503);
            assert_eq!(text(response).await, "server shutting down\n");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_already_shut_down_does_not_call_the_handler() {
    let (server_ctx, shutdown) = named_server().with_cancel();
    shutdown.cancel();
    let (addr, contexts) = server_with(ServerLayer::new(server_ctx)).await;
    let mut conn = Conn::open(addr, Proto::Http2).await;
    let response = conn
        .send(request(addr, "/deadline", None, false))
        .await
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(text(response).await, "context canceled\n");
    assert_eq!(contexts.calls(), 0);
}

// ---------------------------------------------------------------------------
// Malformed `grpc-timeout`
// ---------------------------------------------------------------------------

async fn malformed_grpc_timeout_gets_a_clear_error(proto: Proto) {
    let (addr, contexts) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, proto).await;
    for (value, problem) in [
        ("soon", "grpc-timeout: invalid character 's'"),
        ("123456789S", "grpc-timeout: more than 8 digits"),
        ("5s", "grpc-timeout: unknown unit 's'"),
        ("100", "grpc-timeout: missing unit"),
        ("-1S", "grpc-timeout: invalid character '-'"),
        ("S", "grpc-timeout: no digits before the unit"),
    ] {
        // Plain HTTP: 400 and the problem in the body.
        let response = conn
            .send(request(addr, "/deadline", Some(value), false))
            .await
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{value}");
        let body = text(response).await;
        assert!(
            body.starts_with(&format!("malformed {problem}")),
            "{value}: {body}"
        );

        // gRPC: HTTP 200, grpc-status 13 INTERNAL and the problem as the
        // message, percent-encoded as gRPC asks (none of these needs it).
        let response = conn
            .send(request(addr, "/deadline", Some(value), true))
            .await
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{value}");
        assert_eq!(header(&response, "grpc-status").as_deref(), Some("13"));
        let message = header(&response, "grpc-message").unwrap();
        assert!(
            message.starts_with(&format!("malformed {problem}")),
            "{value}: {message}"
        );
        assert_eq!(text(response).await, "");
    }
    assert_eq!(contexts.calls(), 0, "the handler never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeout_gets_a_clear_error_http1() {
    malformed_grpc_timeout_gets_a_clear_error(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeout_gets_a_clear_error_http2() {
    malformed_grpc_timeout_gets_a_clear_error(Proto::Http2).await;
}

/// Bytes that are not text in the header are a malformed value too, not a
/// panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_text_grpc_timeout_gets_a_clear_error() {
    let (addr, contexts) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, Proto::Http1).await;
    let mut req = request(addr, "/deadline", None, false);
    req.headers_mut().insert(
        "grpc-timeout",
        http::HeaderValue::from_bytes(b"5\xffS").unwrap(),
    );
    let response = conn.send(req).await.await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(text(response)
        .await
        .starts_with("malformed grpc-timeout: invalid character"));
    assert_eq!(contexts.calls(), 0);
}

// ---------------------------------------------------------------------------
// A deadline that passes before the handler answers
// ---------------------------------------------------------------------------

async fn deadline_before_the_answer(proto: Proto) {
    let (addr, mut contexts) = server_with(ServerLayer::new(named_server())).await;
    let mut conn = Conn::open(addr, proto).await;
    for grpc in [false, true] {
        let sent_at = Instant::now();
        let response = conn
            .send(request(addr, "/wait", Some("100m"), grpc))
            .await
            .await
            .unwrap();
        let took = sent_at.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "answered after {took:?}"
        );
        assert!(took < patience(), "answered after {took:?}");
        if grpc {
            assert_eq!(response.status(), 200);
            assert_eq!(header(&response, "grpc-status").as_deref(), Some("4"));
            assert_eq!(
                header(&response, "grpc-message").as_deref(),
                Some("context deadline exceeded")
            );
        } else {
            assert_eq!(response.status(), 504);
            assert_eq!(text(response).await, "context deadline exceeded\n");
        }
        let ctx = contexts.next().await;
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_before_the_answer_http1() {
    deadline_before_the_answer(Proto::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_before_the_answer_http2() {
    deadline_before_the_answer(Proto::Http2).await;
}

/// The status codes are configurable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_cancel_responses_are_configurable() {
    let (server_ctx, shutdown) = named_server().with_cancel();
    let layer = ServerLayer::new(server_ctx)
        .deadline_response(http::StatusCode::REQUEST_TIMEOUT, 1)
        .cancel_response(http::StatusCode::INTERNAL_SERVER_ERROR, 10);
    let (addr, mut contexts) = server_with(layer).await;
    let mut conn = Conn::open(addr, Proto::Http2).await;
    let response = conn
        .send(request(addr, "/wait", Some("50m"), false))
        .await
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    let response = conn
        .send(request(addr, "/wait", Some("50m"), true))
        .await
        .await
        .unwrap();
    assert_eq!(header(&response, "grpc-status").as_deref(), Some("1"));
    let _ = (contexts.next().await, contexts.next().await);

    let waiting = tokio::spawn(conn.send(request(addr, "/wait", None, true)).await);
    let _ = contexts.next().await;
    shutdown.cancel();
    let response = tokio::time::timeout(patience(), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(header(&response, "grpc-status").as_deref(), Some("10"));
}

/// A request dropped just before its deadline passes (by tonic's own timer,
/// by a client whose deadline passed) ends with the deadline, not as a
/// client gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_at_the_deadline_is_the_deadline() {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut service = ServerLayer::new(Context::background()).layer(tower::service_fn(
        move |req: http::Request<()>| {
            tx.send(req.extensions().get::<Context>().unwrap().clone())
                .unwrap();
            std::future::pending::<Result<http::Response<String>, Infallible>>()
        },
    ));
    let req = http::Request::builder()
        .header("grpc-timeout", "50m")
        .body(())
        .unwrap();
    let future = service.ready().await.unwrap().call(req);
    let ctx = rx.recv().unwrap();
    // 5 ms early, as a timer set a little earlier from the same header, or
    // a client's reset that travelled faster than its request, would be.
    let deadline = ctx.deadline().unwrap();
    tokio::time::sleep_until((deadline - Duration::from_millis(5)).into()).await;
    drop(future);
    assert_eq!(done(&ctx).await, Error::DeadlineExceeded);
    assert!(ctx.cause().unwrap().downcast_ref::<ClientGone>().is_none());
}

// ---------------------------------------------------------------------------
// axum
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_handler_takes_the_context_as_an_extension() {
    use axum::{routing::get, Extension, Router};

    async fn budget(Extension(ctx): Extension<Context>) -> String {
        let left = ctx
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let name = ctx.value::<ServerName>().map_or("?", |n| n.0);
        format!("{} {name}", left.map_or(0, |d| d.as_micros()))
    }

    let (server_ctx, _shutdown) = named_server().with_cancel();
    let app = Router::new()
        .route("/deadline", get(budget))
        .layer(ServerLayer::new(server_ctx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    for proto in [Proto::Http1, Proto::Http2] {
        let mut conn = Conn::open(addr, proto).await;
        let response = conn
            .send(request(addr, "/deadline", Some("3S"), false))
            .await
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer = text(response).await;
        let left = micros_left(&answer);
        assert!(left <= 3_000_000 && left > 1_000_000, "{answer}");
        assert!(answer.ends_with(" test-server"), "{answer}");

        // The layer's own answers go through axum too.
        let response = conn
            .send(request(addr, "/deadline", Some("x"), false))
            .await
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
}
