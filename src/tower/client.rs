//! The client side: an outgoing request carries its context's time left as
//! `grpc-timeout`, and is abandoned when the context is done.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use super::answer::GRPC_TIMEOUT;
use super::BoxError;
use crate::wire::{decode_timeout, encode_duration};
use crate::{Context, Done};

/// `ClientLayer` makes outgoing requests obey the [`Context`] they carry in
/// their extensions: the request is sent with `grpc-timeout` set to the
/// context's time left, and the call is abandoned with the context's
/// [`Error`](crate::Error) as soon as the context is done.
///
/// Put the context in the request with
/// `req.extensions_mut().insert(ctx.clone())`; a tonic client does the same
/// on its `tonic::Request`, whose extensions become the HTTP request's. A
/// request without a context goes through untouched.
///
/// See [`ClientService`] for exactly what a request goes through, and the
/// [module documentation](super) for the errors.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use ctxtree::{tower::ClientLayer, Context};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// // A stand-in for hyper's or tonic's client: it echoes the header.
/// let transport = service_fn(|req: http::Request<()>| async move {
///     let header = req.headers().get("grpc-timeout").cloned();
///     Ok::<_, Infallible>(http::Response::new(format!("{header:?}")))
/// });
/// let client = ServiceBuilder::new()
///     .layer(ClientLayer::new().margin(Duration::from_millis(5)))
///     .service(transport);
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(2));
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ctx);
/// let response = futures::executor::block_on(client.oneshot(req)).unwrap();
/// assert_eq!(response.status(), 200);
/// ```
#[doc(alias = "grpc-timeout")]
#[doc(alias = "deadline propagation")]
#[doc(alias = "propagate_deadline")]
#[doc(alias = "WithTimeout")]
#[derive(Clone, Debug, Default)]
pub struct ClientLayer {
    margin: Duration,
}

impl ClientLayer {
    /// `new` returns a layer that sends the time left as it is, with no
    /// margin.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = ctxtree::tower::ClientLayer::new();
    /// # drop(layer);
    /// ```
    pub fn new() -> ClientLayer {
        ClientLayer::default()
    }

    /// `margin` is taken off the time left before it is sent, for the
    /// request's time in transit: the server's clock starts only when the
    /// request arrives, so without a margin its deadline falls a little
    /// after the client's (see [`wire`](crate::wire#caveats)). A margin
    /// larger than the time left sends the smallest value, `1n`, so the
    /// server fails the call at once.
    ///
    /// A transport that enforces the `grpc-timeout` it sends, as tonic's
    /// channel does, then gives up that much before the context's deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctxtree::tower::ClientLayer;
    ///
    /// let layer = ClientLayer::new().margin(Duration::from_millis(20));
    /// # drop(layer);
    /// ```
    pub fn margin(mut self, margin: Duration) -> ClientLayer {
        self.margin = margin;
        self
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            margin: self.margin,
        }
    }
}

/// `ClientService` is the service a [`ClientLayer`] wraps around a client
/// (hyper-util's `Client`, tonic's `Channel`, or any
/// `Service<http::Request<_>>`).
///
/// For a request with a [`Context`] in its extensions, it:
///
/// 1. fails at once with the context's error, without calling the inner
///    service, if the context is done;
/// 2. sets `grpc-timeout` to the context's time left less the
///    [margin](ClientLayer::margin), rounded down as
///    [`wire::encode_duration`](crate::wire::encode_duration) does, or to
///    `1n` if nothing is left; a `grpc-timeout` the request already has is
///    kept if it is shorter, and a context with no deadline leaves the
///    header as it is;
/// 3. races the inner service's future against the context, polling the
///    context first, and drops the call as soon as the context is done (the
///    connection resets the HTTP/2 stream or closes the HTTP/1
///    connection, so a [`ServerLayer`](super::ServerLayer) on the other side
///    sees the client go away);
/// 4. wraps the response body in a [`ClientBody`], which keeps racing: a
///    body still streaming when the context is done ends with the
///    context's error.
///
/// Its error type is [`BoxError`]: the context's
/// [`Error`](crate::Error) or the inner service's error, boxed, as
/// `tower`'s own middleware do.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use ctxtree::{tower::ClientLayer, Context, Error};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// let transport = service_fn(|_req: http::Request<()>| async {
///     Ok::<_, Infallible>(http::Response::new(String::new()))
/// });
/// let client = ClientLayer::new().layer(transport);
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ctx);
/// let err = futures::executor::block_on(client.oneshot(req)).unwrap_err();
/// assert_eq!(err.downcast_ref::<Error>(), Some(&Error::Canceled));
/// ```
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
    margin: Duration,
}

/// The `grpc-timeout` value for `ctx`'s time left less `margin`; `None` if
/// `ctx` has no deadline.
fn timeout_header(ctx: &Context, margin: Duration) -> Option<Duration> {
    let deadline = ctx.deadline()?;
    Some(
        deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(margin),
    )
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ClientBody<ResBody>>;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> ClientFuture<S::Future> {
        let Some(ctx) = req.extensions().get::<Context>().cloned() else {
            return ClientFuture {
                fut: Some(self.inner.call(req)),
                done: None,
                ctx: None,
            };
        };
        if ctx.is_done() {
            return ClientFuture {
                fut: None,
                done: Some(ctx.done()),
                ctx: Some(ctx),
            };
        }
        if let Some(left) = timeout_header(&ctx, self.margin) {
            let kept = req
                .headers()
                .get(GRPC_TIMEOUT)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| decode_timeout(v).ok())
                .is_some_and(|asked| asked <= left);
            if !kept {
                // Nothing left encodes as `1n`, not `0n`: a deadline that has
                // passed, where a peer may read zero as "no deadline".
                let value = if left.is_zero() {
                    String::from("1n")
                } else {
                    encode_duration(left)
                };
                if let Ok(value) = HeaderValue::try_from(value) {
                    req.headers_mut().insert(GRPC_TIMEOUT, value);
                }
            }
        }
        ClientFuture {
            fut: Some(self.inner.call(req)),
            done: Some(ctx.done()),
            ctx: Some(ctx),
        }
    }
}

pin_project_lite::pin_project! {
    /// `ClientFuture` is the response future of a [`ClientService`]: the
    /// inner service's future raced against the request's context, which is
    /// polled first.
    ///
    /// It resolves to the response with its body wrapped in a
    /// [`ClientBody`], or to a [`BoxError`]: the context's
    /// [`Error`](crate::Error) if it was done first (the inner future is
    /// then dropped), or the inner service's error.
    ///
    /// # Panics
    ///
    /// Polling it again after it resolved panics, as most futures do.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use ctxtree::{tower::ClientLayer, Context, Error};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// // A server that never answers.
    /// let transport = service_fn(|_req: http::Request<()>| {
    ///     futures::future::pending::<Result<http::Response<String>, std::convert::Infallible>>()
    /// });
    /// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert(ctx);
    /// let err = futures::executor::block_on(ClientLayer::new().layer(transport).oneshot(req)).unwrap_err();
    /// assert_eq!(err.downcast_ref::<Error>(), Some(&Error::DeadlineExceeded));
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ClientFuture<F> {
        #[pin]
        fut: Option<F>,
        done: Option<Done>,
        ctx: Option<Context>,
    }
}

impl<F, B, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ClientBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(done) = this.done.as_mut() {
            if let Poll::Ready(err) = Pin::new(done).poll(cx) {
                this.fut.set(None);
                *this.done = None;
                return Poll::Ready(Err(Box::new(err)));
            }
        }
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            panic!("`ClientFuture` polled after it resolved");
        };
        match fut.poll(cx) {
            Poll::Ready(out) => {
                this.fut.set(None);
                let done = this.done.take();
                Poll::Ready(match out {
                    Ok(response) => Ok(response.map(|body| ClientBody {
                        inner: Some(body),
                        done,
                    })),
                    Err(err) => Err(err.into()),
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientFuture")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// `ClientBody` is the response body of a [`ClientService`]: the inner
    /// response's body, raced against the request's context.
    ///
    /// Each poll looks at the context first: once it is done, the body
    /// yields the context's [`Error`](crate::Error) as a [`BoxError`],
    /// drops the inner body (which abandons the stream), and then ends.
    /// Otherwise it passes the inner body's frames through, with its errors
    /// boxed. For a request that carried no context, it is the inner body
    /// with its errors boxed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use ctxtree::{tower::{ClientBody, ClientLayer}, Context, Error};
    /// use http_body_util::{BodyExt, StreamBody};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// // A response whose body never ends.
    /// type Endless = StreamBody<futures::stream::Pending<Result<http_body::Frame<bytes::Bytes>, Infallible>>>;
    /// let transport = service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, Infallible>(http::Response::new(Endless::new(futures::stream::pending())))
    /// });
    /// let (ctx, cancel) = Context::background().with_cancel();
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert(ctx);
    /// let response = futures::executor::block_on(ClientLayer::new().layer(transport).oneshot(req)).unwrap();
    ///
    /// cancel.cancel();
    /// let body: ClientBody<Endless> = response.into_body();
    /// let err = futures::executor::block_on(body.collect()).unwrap_err();
    /// assert_eq!(err.downcast_ref::<Error>(), Some(&Error::Canceled));
    /// ```
    pub struct ClientBody<B> {
        #[pin]
        inner: Option<B>,
        done: Option<Done>,
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        if let Some(done) = this.done.as_mut() {
            if let Poll::Ready(err) = Pin::new(done).poll(cx) {
                *this.done = None;
                if this.inner.is_some() {
                    this.inner.set(None);
                    return Poll::Ready(Some(Err(Box::new(err))));
                }
            }
        }
        match this.inner.as_mut().as_pin_mut() {
            None => Poll::Ready(None),
            Some(inner) => inner
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().map_or(true, |b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B> fmt::Debug for ClientBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBody").finish_non_exhaustive()
    }
}
