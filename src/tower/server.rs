//! The server side: a context per request, cancelled when the client goes
//! away, and an answer of the layer's own when it is done first.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use super::answer::{
    is_grpc, Answer, GRPC_DEADLINE_EXCEEDED, GRPC_INTERNAL, GRPC_TIMEOUT, GRPC_UNAVAILABLE,
};
use crate::wire::{decode_timeout, WireError};
use crate::{Canceller, Cause, Context, Done, Error};

/// How close to its deadline a request may be dropped and still be taken
/// for the deadline's doing rather than the client's. A server that also
/// enforces `grpc-timeout` itself (tonic does, in a layer outside this one)
/// drops the request a hair before this layer's timer fires. A client whose
/// own deadline passed resets its call, and the reset can arrive before the
/// server's deadline by as much as the request's time in transit exceeded
/// the reset's: scheduling delays on a busy host, so a margin of tens of
/// milliseconds. At worst, a client that truly went away this close to
/// the deadline has its request run on until the deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(25);

/// `ServerLayer` gives every request a [`Context`] of its own, derived from
/// a server-wide context: done when the request's `grpc-timeout` passes,
/// when the server-wide context is done (shutdown), or when the client goes
/// away, and cancelled once the response has been sent.
///
/// The handler finds the context in the request's extensions,
/// `req.extensions().get::<Context>()`; axum handlers take it with
/// `axum::Extension<Context>`, tonic handlers with
/// `request.extensions().get::<Context>()`. See the
/// [module documentation](super) for the whole story and
/// [`ServerService`] for what each request goes through.
///
/// For a two-phase shutdown, give it `shutdown.with_grace(grace)` as the
/// server-wide context, and stop accepting on `shutdown` itself: requests
/// in flight then get the grace to finish (see
/// [Two-phase shutdown](super#two-phase-shutdown)).
///
/// Settings, all optional:
///
/// * [`max_timeout`](ServerLayer::max_timeout): no request's context lives
///   longer than this, whatever the client asks.
/// * [`default_timeout`](ServerLayer::default_timeout): the timeout of a
///   request that sends no `grpc-timeout`.
/// * [`answer_when_done`](ServerLayer::answer_when_done),
///   [`deadline_response`](ServerLayer::deadline_response) and
///   [`cancel_response`](ServerLayer::cancel_response): whether and how the
///   layer answers when the context is done before the handler answers
///   (by default 504 or gRPC's DEADLINE_EXCEEDED for a deadline, 503 or
///   UNAVAILABLE for a cancel such as a shutdown).
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use ctxtree::{tower::ServerLayer, Context};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// let (server_ctx, _shutdown) = Context::background().with_cancel();
/// let service = ServiceBuilder::new()
///     .layer(ServerLayer::new(server_ctx).max_timeout(Duration::from_secs(30)))
///     .service(service_fn(|req: http::Request<String>| async move {
///         let ctx = req.extensions().get::<Context>().expect("set by ServerLayer");
///         let left = ctx.deadline().map(|d| d.saturating_duration_since(std::time::Instant::now()));
///         Ok::<_, Infallible>(http::Response::new(format!("{left:?}")))
///     }));
///
/// let req = http::Request::builder()
///     .header("grpc-timeout", "2S")
///     .body(String::new())
///     .unwrap();
/// let response = futures::executor::block_on(service.oneshot(req)).unwrap();
/// assert_eq!(response.status(), 200);
/// ```
#[doc(alias = "grpc-timeout")]
#[doc(alias = "deadline propagation")]
#[doc(alias = "RequestContext")]
#[doc(alias = "request_context")]
#[doc(alias = "WithTimeout")]
#[doc(alias = "TimeoutLayer")]
#[doc(alias = "cancel_on_disconnect")]
#[derive(Clone, Debug)]
pub struct ServerLayer {
    config: Arc<Config>,
}

/// What every request of a [`ServerLayer`] shares.
#[derive(Clone, Debug)]
struct Config {
    server: Context,
    max_timeout: Option<Duration>,
    default_timeout: Option<Duration>,
    answer_when_done: bool,
    deadline: Answer,
    cancel: Answer,
}

impl ServerLayer {
    /// `new` returns a layer whose requests' contexts are children of
    /// `server`: cancel `server` (your shutdown context) and every request
    /// in flight is cancelled, with `server`'s cause. Values of `server` are
    /// seen by every request.
    ///
    /// By default a request's deadline is its `grpc-timeout`, if it sends
    /// one, with no maximum, and the layer answers by itself when a context
    /// is done before the handler answers.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{tower::ServerLayer, Context};
    ///
    /// let (shutdown_ctx, shutdown) = Context::background().with_cancel();
    /// let layer = ServerLayer::new(shutdown_ctx);
    /// # drop((layer, shutdown));
    /// ```
    pub fn new(server: Context) -> ServerLayer {
        ServerLayer {
            config: Arc::new(Config {
                server,
                max_timeout: None,
                default_timeout: None,
                answer_when_done: true,
                deadline: Answer {
                    http: StatusCode::GATEWAY_TIMEOUT,
                    grpc: GRPC_DEADLINE_EXCEEDED,
                },
                cancel: Answer {
                    http: StatusCode::SERVICE_UNAVAILABLE,
                    grpc: GRPC_UNAVAILABLE,
                },
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// `max_timeout` caps every request's timeout at `max`: a request that
    /// asks for more, or for no deadline at all, gets `max`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ctxtree::{tower::ServerLayer, Context};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// let layer = ServerLayer::new(Context::background()).max_timeout(Duration::from_secs(5));
    /// let service = layer.layer(service_fn(|req: http::Request<()>| async move {
    ///     let ctx = req.extensions().get::<ctxtree::Context>().unwrap();
    ///     let left = ctx.deadline().unwrap().saturating_duration_since(Instant::now());
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(left.as_secs_f64().to_string()))
    /// }));
    ///
    /// // The client asks for an hour: it gets 5 s.
    /// let req = http::Request::builder().header("grpc-timeout", "1H").body(()).unwrap();
    /// let response = futures::executor::block_on(service.oneshot(req)).unwrap();
    /// # use http_body_util::BodyExt;
    /// let body = futures::executor::block_on(response.into_body().collect()).unwrap().to_bytes();
    /// let left: f64 = std::str::from_utf8(&body).unwrap().parse().unwrap();
    /// assert!(left <= 5.0);
    /// ```
    #[doc(alias = "server_timeout")]
    pub fn max_timeout(mut self, max: Duration) -> ServerLayer {
        self.config().max_timeout = Some(max);
        self
    }

    /// `default_timeout` is the timeout of a request that sends no
    /// `grpc-timeout` (still capped by
    /// [`max_timeout`](ServerLayer::max_timeout)). Without it, such a
    /// request has no deadline of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctxtree::{tower::ServerLayer, Context};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// let layer = ServerLayer::new(Context::background()).default_timeout(Duration::from_secs(10));
    /// let service = layer.layer(service_fn(|req: http::Request<()>| async move {
    ///     let ctx = req.extensions().get::<ctxtree::Context>().unwrap();
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(ctx.deadline().is_some().to_string()))
    /// }));
    /// let response = futures::executor::block_on(service.oneshot(http::Request::new(()))).unwrap();
    /// # use http_body_util::BodyExt;
    /// let body = futures::executor::block_on(response.into_body().collect()).unwrap().to_bytes();
    /// assert_eq!(&body[..], b"true");
    /// ```
    pub fn default_timeout(mut self, timeout: Duration) -> ServerLayer {
        self.config().default_timeout = Some(timeout);
        self
    }

    /// `answer_when_done` says whether the layer answers by itself when a
    /// request's context is done before the handler has answered (the
    /// default), dropping the handler's future; with `false`, the handler
    /// is left to notice the context and answer as it likes.
    ///
    /// A request whose context is already done when it arrives (the server
    /// is shutting down, or the client's budget is spent) is answered at
    /// once, without calling the handler, unless this is `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctxtree::{tower::ServerLayer, Context};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// // The handler answers 200 "late" after its context is done.
    /// let layer = ServerLayer::new(Context::background()).answer_when_done(false);
    /// let service = layer.layer(service_fn(|req: http::Request<()>| async move {
    ///     let ctx = req.extensions().get::<ctxtree::Context>().unwrap().clone();
    ///     ctx.done().await;
    ///     Ok::<_, std::convert::Infallible>(http::Response::new("late".to_string()))
    /// }));
    /// let req = http::Request::builder().header("grpc-timeout", "10m").body(()).unwrap();
    /// let response = futures::executor::block_on(service.oneshot(req)).unwrap();
    /// assert_eq!(response.status(), 200);
    /// ```
    pub fn answer_when_done(mut self, answer: bool) -> ServerLayer {
        self.config().answer_when_done = answer;
        self
    }

    /// `deadline_response` sets the layer's answer when a request's deadline
    /// passes before the handler answers: `http` for plain HTTP requests
    /// (default 504 Gateway Timeout), and for gRPC requests HTTP 200 with
    /// `grpc-status: grpc_code` (default 4, DEADLINE_EXCEEDED; with tonic,
    /// `tonic::Code::DeadlineExceeded as u32`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{tower::ServerLayer, Context};
    /// use http::StatusCode;
    ///
    /// let layer = ServerLayer::new(Context::background())
    ///     .deadline_response(StatusCode::REQUEST_TIMEOUT, 4);
    /// # drop(layer);
    /// ```
    pub fn deadline_response(mut self, http: StatusCode, grpc_code: u32) -> ServerLayer {
        self.config().deadline = Answer {
            http,
            grpc: grpc_code,
        };
        self
    }

    /// `cancel_response` sets the layer's answer when a request's context is
    /// cancelled before the handler answers, which happens when the
    /// server-wide context is cancelled (a shutdown): `http` for plain HTTP
    /// requests (default 503 Service Unavailable), and for gRPC requests
    /// HTTP 200 with `grpc-status: grpc_code` (default 14, UNAVAILABLE, what
    /// gRPC servers answer while shutting down; 1 is CANCELLED). The
    /// message is the cancel's cause.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::{tower::ServerLayer, Context};
    /// use http::StatusCode;
    ///
    /// let layer = ServerLayer::new(Context::background())
    ///     .cancel_response(StatusCode::SERVICE_UNAVAILABLE, 1);
    /// # drop(layer);
    /// ```
    pub fn cancel_response(mut self, http: StatusCode, grpc_code: u32) -> ServerLayer {
        self.config().cancel = Answer {
            http,
            grpc: grpc_code,
        };
        self
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// `ServerService` is the service a [`ServerLayer`] wraps around yours.
///
/// For each request it:
///
/// 1. reads `grpc-timeout`; a malformed value is answered at once, for
///    gRPC with `grpc-status` 13 (INTERNAL, as gRPC's own servers do) and a
///    `grpc-message` that names the problem, for plain HTTP with 400 and
///    the same message, and your service is not called;
/// 2. derives the request's [`Context`] from the server-wide one, with a
///    deadline of the timeout (capped, or the default; see [`ServerLayer`]),
///    and puts it in the request's extensions;
/// 3. calls your service, and while its future runs:
///    * if the future is dropped before it completes, the context is
///      cancelled with a [`ClientGone`] cause;
///    * if the context is done first, the layer drops the future and
///      answers by itself (see [`ServerLayer::answer_when_done`]);
/// 4. wraps the response body in a [`ServerBody`], which keeps the context
///    alive while the body streams, cancels it with [`ClientGone`] if the
///    body is dropped before it is complete, and cancels it plainly once
///    it is complete, as Go's `net/http` does when a handler returns.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use ctxtree::{tower::{ServerLayer, ServerService}, Context};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let handler = service_fn(|_req: http::Request<()>| async {
///     Ok::<_, Infallible>(http::Response::new(String::from("hi")))
/// });
/// let service: ServerService<_> = ServerLayer::new(Context::background()).layer(handler);
/// let req = http::Request::builder().header("grpc-timeout", "soon").body(()).unwrap();
/// let response = futures::executor::block_on(service.oneshot(req)).unwrap();
/// assert_eq!(response.status(), 400);
/// ```
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    config: Arc<Config>,
}

impl Config {
    /// The timeout a request gets: its `grpc-timeout` or the default, capped.
    fn timeout(&self, headers: &HeaderMap) -> Result<Option<Duration>, WireError> {
        let asked = match headers.get(GRPC_TIMEOUT) {
            Some(value) => Some(decode_header(value)?),
            None => self.default_timeout,
        };
        Ok(match (asked, self.max_timeout) {
            (Some(asked), Some(max)) => Some(asked.min(max)),
            (asked, max) => asked.or(max),
        })
    }

    /// The answer for a context that is done.
    fn done_response<B>(&self, ctx: &Context, grpc: bool) -> Response<ServerBody<B>> {
        let err = ctx.err().unwrap_or(Error::Canceled);
        let answer = if err.is_timeout() {
            self.deadline
        } else {
            self.cancel
        };
        let message = ctx
            .cause()
            .map_or_else(|| err.to_string(), |c| c.to_string());
        answer.response(grpc, &message)
    }
}

/// A header value as [`decode_timeout`] reads it; bytes that are not UTF-8
/// are reported as an invalid character, like any other bad character.
fn decode_header(value: &HeaderValue) -> Result<Duration, WireError> {
    match std::str::from_utf8(value.as_bytes()) {
        Ok(s) => decode_timeout(s),
        Err(_) => decode_timeout(&String::from_utf8_lossy(value.as_bytes())),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> ServerFuture<S::Future> {
        let grpc = is_grpc(req.headers());
        let config = &self.config;
        let timeout = match config.timeout(req.headers()) {
            Ok(timeout) => timeout,
            Err(err) => {
                let answer = Answer {
                    http: StatusCode::BAD_REQUEST,
                    grpc: GRPC_INTERNAL,
                };
                return ServerFuture::early(Early {
                    answer,
                    grpc,
                    message: format!("malformed {err}"),
                });
            }
        };
        let (ctx, canceller) = match timeout {
            Some(timeout) => config.server.with_timeout(timeout),
            None => config.server.with_cancel(),
        };
        if config.answer_when_done && ctx.is_done() {
            let err = ctx.err().unwrap_or(Error::Canceled);
            let answer = if err.is_timeout() {
                config.deadline
            } else {
                config.cancel
            };
            let message = ctx
                .cause()
                .map_or_else(|| err.to_string(), |c| c.to_string());
            return ServerFuture::early(Early {
                answer,
                grpc,
                message,
            });
        }
        req.extensions_mut().insert(ctx.clone());
        let bodyless = req.method() == Method::HEAD;
        let guard = Guard {
            canceller: Some(canceller),
            deadline: ctx.deadline(),
            in_body: false,
            body_complete: false,
        };
        let fut = self.inner.call(req);
        ServerFuture {
            fut: Some(fut),
            early: None,
            done: config.answer_when_done.then(|| ctx.done()),
            watch: Some(Watch {
                ctx,
                guard,
                config: config.clone(),
                grpc,
                bodyless,
            }),
        }
    }
}

/// An answer the layer gives without calling the handler.
#[derive(Debug)]
struct Early {
    answer: Answer,
    grpc: bool,
    message: String,
}

/// What a running request needs to answer by itself and to hand its context
/// on to the body.
struct Watch {
    ctx: Context,
    guard: Guard,
    config: Arc<Config>,
    grpc: bool,
    bodyless: bool,
}

/// The right to cancel a request's context, and what to say if it is
/// dropped before the response is complete.
struct Guard {
    /// `None` once the request is over.
    canceller: Option<Canceller>,
    /// The context's deadline, to tell a drop by the deadline from a drop
    /// by the client.
    deadline: Option<Instant>,
    /// Whether the response future has resolved and the body is streaming.
    in_body: bool,
    /// Whether the body has yielded all the bytes its size hint promised:
    /// a server may then drop it without polling it to its end.
    body_complete: bool,
}

impl Guard {
    /// The request is over: cancel its context plainly, as Go's `net/http`
    /// does when a handler returns.
    fn finish(&mut self) {
        if let Some(canceller) = self.canceller.take() {
            canceller.cancel();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(canceller) = self.canceller.take() else {
            return;
        };
        let cause: Option<Cause> = if self.body_complete {
            None
        } else {
            if self
                .deadline
                .is_some_and(|d| d <= Instant::now() + DEADLINE_SLACK)
            {
                // Dropped at the deadline: by a timer of the server's own
                // or by a client whose deadline passed. The context's timer
                // ends it in a moment, with DeadlineExceeded.
                return;
            }
            Some(Arc::new(ClientGone {
                in_body: self.in_body,
            }))
        };
        let cancel = move || match cause {
            Some(cause) => canceller.cancel_with_cause(cause),
            None => canceller.cancel(),
        };
        if std::thread::panicking() {
            // A callback's panic resumed now would abort the process.
            let _ = catch_unwind(AssertUnwindSafe(cancel));
        } else {
            cancel();
        }
    }
}

pin_project_lite::pin_project! {
    /// `ServerFuture` is the response future of a [`ServerService`]: your
    /// service's future, raced against the request's context.
    ///
    /// It resolves to your service's response with its body wrapped in a
    /// [`ServerBody`], to your service's error, or, when the context is done
    /// first, to the layer's own answer (see [`ServerLayer`]). Dropping it
    /// before it resolves cancels the request's context with [`ClientGone`].
    ///
    /// # Panics
    ///
    /// Polling it again after it resolved panics, as most futures do.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ctxtree::{tower::{ClientGone, ServerLayer}, Context};
    /// use tower::{service_fn, Layer, Service};
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let mut service = ServerLayer::new(Context::background()).layer(service_fn(move |req: http::Request<()>| {
    ///     tx.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
    ///     futures::future::pending::<Result<http::Response<String>, Infallible>>()
    /// }));
    /// let future = service.call(http::Request::new(()));
    /// let ctx = rx.recv().unwrap();
    /// drop(future); // as a server does when its client goes away
    /// assert!(ctx.cause().unwrap().downcast_ref::<ClientGone>().is_some());
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ServerFuture<F> {
        #[pin]
        fut: Option<F>,
        early: Option<Early>,
        done: Option<Done>,
        watch: Option<Watch>,
    }
}

impl<F> ServerFuture<F> {
    fn early(early: Early) -> ServerFuture<F> {
        ServerFuture {
            fut: None,
            early: Some(early),
            done: None,
            watch: None,
        }
    }
}

impl<F, B, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ServerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(early) = this.early.take() {
            return Poll::Ready(Ok(early.answer.response(early.grpc, &early.message)));
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            panic!("`ServerFuture` polled after it resolved");
        };
        // The handler first: an answer it has ready is better than ours.
        if let Poll::Ready(out) = fut.poll(cx) {
            this.fut.set(None);
            let watch = this.watch.take();
            return Poll::Ready(match (out, watch) {
                (Ok(response), Some(watch)) => Ok(watch.into_response(response)),
                (Ok(response), None) => Ok(response.map(|b| ServerBody::inner(b, None))),
                (Err(err), Some(mut watch)) => {
                    watch.guard.finish();
                    Err(err)
                }
                (Err(err), None) => Err(err),
            });
        }
        if let Some(done) = this.done {
            if Pin::new(done).poll(cx).is_ready() {
                // Drop the handler's future, then answer; the context is
                // done already, so there is nothing left to cancel.
                this.fut.set(None);
                if let Some(mut watch) = this.watch.take() {
                    watch.guard.finish();
                    return Poll::Ready(Ok(watch.config.done_response(&watch.ctx, watch.grpc)));
                }
            }
        }
        Poll::Pending
    }
}

impl Watch {
    /// Hands the context on to the response's body, or ends it if the
    /// response has no body to send.
    fn into_response<B: Body>(mut self, response: Response<B>) -> Response<ServerBody<B>> {
        let (parts, body) = response.into_parts();
        let no_body = self.bodyless
            || parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED
            || body.is_end_stream();
        let watch = if no_body {
            // Servers drop such bodies unpolled: the request is over.
            self.guard.finish();
            None
        } else {
            self.guard.in_body = true;
            Some(BodyWatch {
                remaining: body.size_hint().exact(),
                guard: self.guard,
            })
        };
        Response::from_parts(parts, ServerBody::inner(body, watch))
    }
}

impl<F> fmt::Debug for ServerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFuture")
            .field("ctx", &self.watch.as_ref().map(|w| &w.ctx))
            .finish_non_exhaustive()
    }
}

/// The request's context, watched while the body streams.
struct BodyWatch {
    guard: Guard,
    /// Bytes still to come, when the body said exactly how many it has.
    remaining: Option<u64>,
}

pin_project_lite::pin_project! {
    /// `ServerBody` is the response body of a [`ServerService`]: either your
    /// service's body, passed through frame by frame, or the text of an
    /// answer the layer gave by itself.
    ///
    /// Its data is [`Bytes`], as with hyper's, axum's and tonic's bodies
    /// (`http_body_util::Full<Bytes>`, `axum::body::Body`,
    /// `tonic::body::Body`), and its error is your body's, so hyper, axum
    /// (`Router::layer`) and tonic (`Server::layer`) all accept it. An enum
    /// of the two rather than a `Default` bound on your body, so that the
    /// layer's answers carry a message.
    ///
    /// While your body streams, the request's context stays alive. It is
    /// cancelled plainly once the body is complete: it ended, yielded its
    /// trailers, or yielded every byte its size hint promised (a server may
    /// then drop it without polling it to the end, as hyper's HTTP/2 does
    /// after the trailers). Dropped before that, the body cancels the
    /// context with a [`ClientGone`] cause whose
    /// [`in_body`](ClientGone::in_body) is true: the server stopped sending
    /// it, because the client went away. A response to a `HEAD` request, a
    /// 1xx, 204 or 304, or one whose body is empty, ends the context as soon
    /// as it is ready, as servers do not poll such bodies.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ctxtree::{tower::{ServerBody, ServerLayer}, Context};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let service = ServerLayer::new(Context::background()).layer(service_fn(move |req: http::Request<()>| {
    ///     tx.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
    ///     async { Ok::<_, Infallible>(http::Response::new(Full::from("hello"))) }
    /// }));
    /// let response = futures::executor::block_on(service.oneshot(http::Request::new(()))).unwrap();
    /// let ctx = rx.recv().unwrap();
    /// assert!(!ctx.is_done()); // the body is still to be sent
    ///
    /// let body: ServerBody<Full<bytes::Bytes>> = response.into_body();
    /// let bytes = futures::executor::block_on(body.collect()).unwrap().to_bytes();
    /// assert_eq!(&bytes[..], b"hello");
    /// assert_eq!(ctx.err(), Some(ctxtree::Error::Canceled)); // sent: the request is over
    /// ```
    pub struct ServerBody<B> {
        #[pin]
        inner: Option<B>,
        answer: Option<Bytes>,
        watch: Option<BodyWatch>,
    }
}

impl<B> ServerBody<B> {
    pub(crate) fn answer(text: Bytes) -> ServerBody<B> {
        ServerBody {
            inner: None,
            answer: (!text.is_empty()).then_some(text),
            watch: None,
        }
    }

    fn inner(body: B, watch: Option<BodyWatch>) -> ServerBody<B> {
        ServerBody {
            inner: Some(body),
            answer: None,
            watch,
        }
    }
}

impl<B> Body for ServerBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(this.answer.take().map(|text| Ok(Frame::data(text))));
        };
        let frame = ready!(inner.poll_frame(cx));
        if let Some(watch) = this.watch.as_mut() {
            let complete = match &frame {
                None | Some(Err(_)) => true,
                Some(Ok(frame)) => {
                    if let (Some(data), Some(remaining)) = (frame.data_ref(), &mut watch.remaining)
                    {
                        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                        *remaining = remaining.saturating_sub(len);
                    }
                    frame.is_trailers()
                        || this
                            .inner
                            .as_ref()
                            .as_pin_ref()
                            .is_some_and(|b| b.is_end_stream())
                }
            };
            if complete {
                watch.guard.finish();
                *this.watch = None;
            } else if watch.remaining == Some(0) {
                watch.guard.body_complete = true;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(body) => body.is_end_stream(),
            None => self.answer.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.answer) {
            (Some(body), _) => body.size_hint(),
            (None, Some(text)) => {
                SizeHint::with_exact(u64::try_from(text.len()).unwrap_or(u64::MAX))
            }
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

impl<B> fmt::Debug for ServerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBody")
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

/// `ClientGone` is the [cause](Context::cause) of a request's context that
/// the server stopped serving before the response was complete: the
/// client closed the connection or reset the HTTP/2 stream, and the server
/// dropped the response future ([`in_body`](ClientGone::in_body) is false)
/// or the response body ([`in_body`](ClientGone::in_body) is true).
///
/// The context's [`err`](Context::err) is then [`Error::Canceled`]. The
/// cause is an `Arc<dyn Error>`: downcast it to tell this case from the
/// others (a deadline, the server-wide context).
///
/// # Caveats
///
/// The layer only sees that its future or body was dropped, not why. A
/// layer *outside* it that drops requests on its own (`tower`'s `Timeout`,
/// a load shedder, tonic's `Server::timeout`) reads as a client that went
/// away; set timeouts on the [`ServerLayer`] instead. A drop less than
/// 25 ms before the request's deadline, or after it, is taken as the
/// deadline's doing (tonic enforces `grpc-timeout` itself, in a layer
/// outside this one, and a client whose deadline passed resets its
/// stream, a little before the server's deadline as the request took
/// time to arrive): the context is then left to its deadline, which ends
/// it within those 25 ms with [`Error::DeadlineExceeded`].
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use ctxtree::{tower::{ClientGone, ServerLayer}, Context, Error};
/// use tower::{service_fn, Layer, Service};
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let mut service = ServerLayer::new(Context::background()).layer(service_fn(move |req: http::Request<()>| {
///     tx.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
///     futures::future::pending::<Result<http::Response<String>, Infallible>>()
/// }));
/// drop(service.call(http::Request::new(())));
///
/// let ctx = rx.recv().unwrap();
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// let cause = ctx.cause().unwrap();
/// let gone = cause.downcast_ref::<ClientGone>().unwrap();
/// assert!(!gone.in_body());
/// assert_eq!(gone.to_string(), "the client went away before the response was sent");
/// ```
#[doc(alias = "disconnect")]
#[doc(alias = "hangup")]
#[doc(alias = "RequestDropped")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientGone {
    in_body: bool,
}

impl ClientGone {
    /// `in_body` tells whether the response's head had been sent and its
    /// body was being sent when the client went away.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ctxtree::{tower::{ClientGone, ServerLayer}, Context};
    /// use http_body_util::StreamBody;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// // A body that never ends.
    /// type Endless = StreamBody<futures::stream::Pending<Result<http_body::Frame<bytes::Bytes>, Infallible>>>;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let service = ServerLayer::new(Context::background()).layer(service_fn(move |req: http::Request<()>| {
    ///     tx.send(req.extensions().get::<Context>().unwrap().clone()).unwrap();
    ///     async { Ok::<_, Infallible>(http::Response::new(Endless::new(futures::stream::pending()))) }
    /// }));
    /// let response = futures::executor::block_on(service.oneshot(http::Request::new(()))).unwrap();
    /// drop(response); // the server stops sending the body
    ///
    /// let cause = rx.recv().unwrap().cause().unwrap();
    /// assert!(cause.downcast_ref::<ClientGone>().unwrap().in_body());
    /// ```
    pub fn in_body(&self) -> bool {
        self.in_body
    }
}

impl fmt::Display for ClientGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.in_body {
            "the client went away while the response body was being sent"
        } else {
            "the client went away before the response was sent"
        })
    }
}

impl StdError for ClientGone {}
