//! Per-request contexts on tower, hyper, axum and tonic: deadlines across
//! hops, and work cancelled when its client goes away (feature `tower`).
//!
//! hyper, axum and tonic are all built on tower's `Service` and `Layer`, so
//! two layers cover them:
//!
//! * [`ServerLayer`] gives every incoming request a [`Context`](crate::Context): a child of
//!   a server-wide context you pass in (your shutdown context), with the
//!   deadline of the request's `grpc-timeout` header (capped, or a default
//!   when it has none). The handler finds it in the request's extensions.
//!   It is cancelled with a [`ClientGone`] cause when the server drops the
//!   request because the client went away, and plainly once the response
//!   has been sent. If it is done before the handler answers, the layer
//!   answers by itself, as gRPC does: `grpc-status` 4 DEADLINE_EXCEEDED or
//!   14 UNAVAILABLE for gRPC requests, 504 or 503 for plain HTTP.
//! * [`ClientLayer`] makes an outgoing request obey the [`Context`](crate::Context) in its
//!   extensions: it sends the time left as `grpc-timeout`, and abandons the
//!   call with the context's [`Error`](crate::Error) as soon as the context
//!   is done.
//!
//! A service that calls other services passes its request's context on, and
//! the whole chain stops at the first client's deadline, or as soon as that
//! client hangs up: `examples/grpc_chain.rs` shows it with tonic.
//!
//! # With hyper
//!
//! Wrap your service with [`ServerLayer`], and hand it to hyper through
//! `hyper_util::service::TowerToHyperService`:
//!
//! ```no_run
//! use std::convert::Infallible;
//! use ctxtree::{tower::ServerLayer, Context};
//! use http_body_util::Full;
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto::Builder;
//! use hyper_util::service::TowerToHyperService;
//! use tower::{service_fn, ServiceBuilder};
//!
//! # async fn serve() -> std::io::Result<()> {
//! let (shutdown_ctx, _shutdown) = Context::background().with_cancel();
//! let service = ServiceBuilder::new()
//!     .layer(ServerLayer::new(shutdown_ctx))
//!     .service(service_fn(|req: http::Request<hyper::body::Incoming>| async move {
//!         let ctx = req.extensions().get::<Context>().unwrap().clone();
//!         // ... work under `ctx`: it is done at the client's deadline,
//!         // when the client hangs up, or at shutdown.
//!         Ok::<_, Infallible>(http::Response::new(Full::from(format!("{ctx}"))))
//!     }));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let service = TowerToHyperService::new(service.clone());
//!     tokio::spawn(async move {
//!         let _ = Builder::new(TokioExecutor::new())
//!             .serve_connection(TokioIo::new(stream), service)
//!             .await;
//!     });
//! }
//! # }
//! ```
//!
//! # Two-phase shutdown
//!
//! Hand the layer a context that ends a grace period *after* your shutdown
//! signal, made with [`Context::with_grace`](crate::Context::with_grace).
//! On the signal itself (the soft phase) stop accepting connections;
//! requests already in flight keep running until the grace runs out (the
//! hard phase), and then their contexts are done with the shutdown's error
//! and cause. A handler still running then is cut off, and the layer
//! answers for it (503 / `grpc-status` 14) unless it answers first:
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use ctxtree::{tower::ServerLayer, Context};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! let (shutdown, begin_shutdown) = Context::background().with_cancel(); // soft
//! let (in_flight, _stop_now) = shutdown.with_grace(Duration::from_millis(50)); // hard
//!
//! let service = ServerLayer::new(in_flight).layer(service_fn(|req: http::Request<String>| async move {
//!     let ctx = req.extensions().get::<Context>().unwrap().clone();
//!     // A long request: it works until its context is done.
//!     let err = ctx.done().await;
//!     let cause = ctx.cause().unwrap();
//!     Ok::<_, Infallible>(http::Response::new(format!("stopped: {err} ({cause})")))
//! }));
//!
//! let begun = Instant::now();
//! let cause: ctxtree::Cause = Arc::new(std::io::Error::other("shutting down"));
//! begin_shutdown.cancel_with_cause(cause);
//! // The accept loop watches `shutdown` and stops taking connections now ...
//! assert!(shutdown.is_done());
//! // ... while a request in flight runs on until the grace is over.
//! let request = service.oneshot(http::Request::new(String::new()));
//! let response = futures::executor::block_on(request).unwrap();
//! assert!(begun.elapsed() >= Duration::from_millis(50));
//! let body = futures::executor::block_on(response.into_body().collect()).unwrap();
//! assert_eq!(body.to_bytes(), "stopped: context canceled (shutting down)");
//! ```
//!
//! # With axum
//!
//! Add the layer to the router and take the context with the `Extension`
//! extractor:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use axum::{routing::get, Extension, Router};
//! use ctxtree::{tower::ServerLayer, Context};
//! use tower::ServiceExt;
//!
//! async fn handler(Extension(ctx): Extension<Context>) -> String {
//!     let left = ctx.deadline().map(|d| d.saturating_duration_since(Instant::now()));
//!     format!("{}", left.map_or(0, |d| d.as_millis()))
//! }
//!
//! let (shutdown_ctx, _shutdown) = Context::background().with_cancel();
//! let app: Router = Router::new()
//!     .route("/", get(handler))
//!     .layer(ServerLayer::new(shutdown_ctx).max_timeout(Duration::from_secs(30)));
//!
//! // Serve it with `axum::serve`; here one request goes straight in.
//! let req = http::Request::builder()
//!     .uri("/")
//!     .header("grpc-timeout", "2S")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let response = runtime.block_on(app.oneshot(req)).unwrap();
//! let body = runtime.block_on(axum::body::to_bytes(response.into_body(), 64)).unwrap();
//! let left: u64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
//! assert!(left > 0 && left <= 2000);
//! ```
//!
//! # With tonic
//!
//! Server: `Server::builder().layer(ServerLayer::new(ctx))`, and in a
//! handler `request.extensions().get::<Context>()`. Client: wrap the
//! channel with [`ClientLayer`] and put the context in each
//! `tonic::Request`'s extensions:
//!
//! ```
//! use ctxtree::{tower::{ClientLayer, ServerLayer}, Context};
//! use tower::ServiceBuilder;
//!
//! # let runtime = tokio::runtime::Runtime::new().unwrap();
//! # runtime.block_on(async {
//! let (shutdown_ctx, _shutdown) = Context::background().with_cancel();
//! // A server with no services, serving no connections, to show the types.
//! tonic::transport::Server::builder()
//!     .layer(ServerLayer::new(shutdown_ctx))
//!     .add_routes(tonic::service::Routes::default())
//!     .serve_with_incoming_shutdown(
//!         futures::stream::empty::<std::io::Result<tokio::net::TcpStream>>(),
//!         async {},
//!     )
//!     .await
//!     .unwrap();
//!
//! // A client: the channel connects lazily, on its first call.
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let mut client = tonic::client::Grpc::new(ServiceBuilder::new().layer(ClientLayer::new()).service(channel));
//!
//! // A call under a context that is already done fails at once.
//! let (ctx, cancel) = Context::background().with_cancel();
//! cancel.cancel();
//! let mut request = tonic::Request::new(());
//! request.extensions_mut().insert(ctx);
//! client.ready().await.unwrap();
//! let path = http::uri::PathAndQuery::from_static("/demo.Demo/Call");
//! let codec = tonic_prost::ProstCodec::<(), ()>::default();
//! let status = client.unary(request, path, codec).await.unwrap_err();
//! assert_eq!(status.message(), "context canceled");
//! # });
//! ```
//!
//! With tonic, mind that:
//!
//! * tonic's server enforces `grpc-timeout` too, in a layer outside this
//!   one; when its timer fires first, the client gets tonic's CANCELLED
//!   ("Timeout expired") rather than the layer's DEADLINE_EXCEEDED, and the
//!   handler's context still ends with
//!   [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded);
//! * a call abandoned by [`ClientLayer`] reaches the caller as a
//!   `tonic::Status` with code UNKNOWN, whose message is the context's
//!   error (`context deadline exceeded`, `context canceled`); the caller's
//!   own `ctx.err()` says which;
//! * tonic's channel enforces the `grpc-timeout` that [`ClientLayer`] sets
//!   as well, so a call still running at its context's deadline may end
//!   with tonic's CANCELLED ("Timeout expired") instead, and a
//!   [margin](ClientLayer::margin) also shortens the caller's own wait.
//!
//! # Errors
//!
//! [`ServerService`] passes your service's error through: the layer's own
//! answers are responses, not errors. [`ClientService`] and [`ClientBody`]
//! fail with a [`BoxError`], as `tower`'s middleware do: the context's
//! [`Error`](crate::Error) when the context ended the call (downcast to
//! `ctxtree::Error` to tell), or the inner service's or body's error.
//!
//! # Caveats
//!
//! * The server measures a request's deadline from when the layer sees
//!   the request, not from when the client sent it; see
//!   [`wire`](crate::wire#caveats). [`ClientLayer::margin`] lets a client
//!   make up for the time in transit.
//! * [`ClientGone`] means the server dropped the request before the
//!   response was complete; see its caveats for layers outside this one
//!   that drop requests themselves.

mod answer;
mod client;
mod server;

pub use client::{ClientBody, ClientFuture, ClientLayer, ClientService};
pub use server::{ClientGone, ServerBody, ServerFuture, ServerLayer, ServerService};

/// `BoxError` is the error of [`ClientService`] and [`ClientBody`]: the
/// context's [`Error`](crate::Error), or the inner service's or body's
/// error, boxed; the same type as `tower::BoxError`.
///
/// # Examples
///
/// ```
/// use ctxtree::{tower::BoxError, Error};
///
/// let err: BoxError = Box::new(Error::DeadlineExceeded);
/// assert_eq!(err.downcast_ref::<Error>(), Some(&Error::DeadlineExceeded));
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
