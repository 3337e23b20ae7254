// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]
//! Helpers shared by the `tower` feature's test binaries: a hyper 1 server
//! on 127.0.0.1 that speaks HTTP/1.1 and HTTP/2, hyper clients of both, and
//! a handler whose paths exercise the server layer.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ctxtree::Context;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

// The one patience and watchdog of every test binary (tests/common):
// generous bounds for anything that should happen "at once", since this is
// a noisy 2-core machine and valgrind may run the tests.
#[path = "../common/mod.rs"]
mod common;

pub use common::patience;

/// The HTTP version a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// Serves `service` on 127.0.0.1, HTTP/1.1 and HTTP/2 on the same port,
/// until the runtime ends. Returns its address.
pub async fn serve<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The request body the test clients send.
pub type ReqBody = Full<Bytes>;

/// One client connection, HTTP/1.1 or HTTP/2.
pub struct Conn {
    sender: Sender,
    driver: JoinHandle<()>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

impl Conn {
    pub async fn open(addr: SocketAddr, proto: Proto) -> Conn {
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        match proto {
            Proto::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                let driver = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Conn {
                    sender: Sender::H1(sender),
                    driver,
                }
            }
            Proto::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                let driver = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Conn {
                    sender: Sender::H2(sender),
                    driver,
                }
            }
        }
    }

    /// Sends `req` and returns the response future, which does not borrow
    /// the connection: spawn it, or drop it to abandon the request (on
    /// HTTP/2 that resets the stream). It panics if no response comes in
    /// [`patience`], so that a regression fails a test rather than hangs it.
    pub async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> impl Future<Output = hyper::Result<Response<Incoming>>> + Send + 'static {
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                within(sender.ready()).await.unwrap();
                futures::future::Either::Left(sender.send_request(req))
            }
            Sender::H2(sender) => {
                within(sender.ready()).await.unwrap();
                futures::future::Either::Right(sender.send_request(req))
            }
        };
        within(response)
    }

    /// Closes the connection: the client hangs up.
    pub fn hang_up(self) {
        self.driver.abort();
        drop(self.sender);
    }
}

/// A request to `path` on `addr`, with `grpc-timeout` if given, and the gRPC
/// content type if `grpc`.
pub fn request(
    addr: SocketAddr,
    path: &str,
    timeout: Option<&str>,
    grpc: bool,
) -> Request<ReqBody> {
    let mut builder = Request::builder().uri(format!("http://{addr}{path}"));
    if let Some(timeout) = timeout {
        builder = builder.header("grpc-timeout", timeout);
    }
    if grpc {
        builder = builder
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

/// The whole body of `response`, as text.
pub async fn text(response: Response<Incoming>) -> String {
    let bytes = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A response header as text, if present.
pub fn header(response: &Response<Incoming>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The response body of the test handler.
pub type ResBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the test handler reports: each request's context, as it starts,
/// and how many requests reached it.
#[derive(Clone)]
pub struct Seen {
    tx: mpsc::UnboundedSender<Context>,
    calls: Arc<AtomicUsize>,
}

/// The other end of [`Seen`].
pub struct Contexts {
    rx: mpsc::UnboundedReceiver<Context>,
    calls: Arc<AtomicUsize>,
}

pub fn seen() -> (Seen, Contexts) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    (
        Seen {
            tx,
            calls: calls.clone(),
        },
        Contexts { rx, calls },
    )
}

impl Contexts {
    /// The context of the next request that reached the handler.
    pub async fn next(&mut self) -> Context {
        tokio::time::timeout(patience(), self.rx.recv())
            .await
            .expect("a request reached the handler")
            .expect("the handler is alive")
    }

    /// How many requests reached the handler.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A value of the server-wide context, to show that request contexts
/// derive from it.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerName(pub &'static str);

/// The test handler. By path:
///
/// * `/deadline`: answers with the time left until the context's deadline
///   in microseconds, or `none`, and the server's name;
/// * `/wait`: never answers;
/// * `/full`: answers `hello` with a known length;
/// * `/trailers`: answers two data frames, then trailers;
/// * `/stream`: streams a chunk every 10 ms until the body is dropped.
pub fn handler(
    seen: Seen,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<ResBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ResBody>, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            seen.calls.fetch_add(1, Ordering::SeqCst);
            let ctx = req
                .extensions()
                .get::<Context>()
                .expect("ServerLayer puts a Context in every request")
                .clone();
            let _ = seen.tx.send(ctx.clone());
            let body: ResBody = match req.uri().path() {
                "/deadline" => {
                    let left = ctx.deadline().map_or_else(
                        || "none".to_string(),
                        |d| {
                            d.saturating_duration_since(Instant::now())
                                .as_micros()
                                .to_string()
                        },
                    );
                    let name = ctx.value::<ServerName>().map_or("?", |n| n.0);
                    Full::from(format!("{left} {name}")).boxed_unsync()
                }
                "/wait" => std::future::pending().await,
                "/full" => Full::from("hello").boxed_unsync(),
                "/trailers" => {
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-done", "yes".parse().unwrap());
                    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                        Ok(Frame::data(Bytes::from("one "))),
                        Ok(Frame::data(Bytes::from("two"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
                }
                "/stream" => {
                    let chunks = futures::stream::unfold((), |()| async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Some((Ok(Frame::data(Bytes::from("chunk "))), ()))
                    });
                    StreamBody::new(chunks).boxed_unsync()
                }
                _ => Empty::new().boxed_unsync(),
            };
            Ok(Response::new(body))
        }
    })
}

/// Awaits `fut`, boundedly: a regression fails the test, never hangs it.
pub async fn within<F: Future>(fut: F) -> F::Output {
    common::watchdog_async("a bounded wait", fut).await
}

/// Waits, boundedly, for `ctx` to be done.
pub async fn done(ctx: &Context) -> ctxtree::Error {
    common::watchdog_async("the context is done", ctx.done()).await
}

/// Microseconds, parsed from the `/deadline` answer.
pub fn micros_left(answer: &str) -> u128 {
    answer
        .split(' ')
        .next()
        .and_then(|left| left.parse().ok())
        .unwrap_or_else(|| panic!("no time left in {answer:?}"))
}
