//! Go's [`context`](https://pkg.go.dev/context) for async Rust, on no
//! particular executor: cancellation trees, deadlines and request-scoped
//! values.
//!
//! # The model
//!
//! A [`Context`] is a node in a tree. The roots, [`Context::background`] and
//! [`Context::todo`], are never done. Every other context is derived from a
//! parent and is *done* once, for the first of these reasons:
//!
//! * its [`Canceller`] cancels it ([`Context::with_cancel`]);
//! * its deadline passes ([`Context::with_deadline`], [`Context::with_timeout`]);
//!   an `async-io` timer enforces it, so it fires even if nobody polls;
//! * its parent becomes done: cancellation flows down the whole subtree,
//!   never up, and reaches every descendant before `cancel()` returns;
//! * or, for a context derived with [`Context::with_grace`], a grace period
//!   has passed since its parent became done.
//!
//! Once done, [`err`](Context::err) says why ([`Error::Canceled`] or
//! [`Error::DeadlineExceeded`]) and [`cause`](Context::cause) can carry your
//! own error; neither ever changes again.
//!
//! [`with_value`](Context::with_value) attaches a value found by its type,
//! and [`without_cancel`](Context::without_cancel) keeps the values but not
//! the cancellation.
//!
//! ```
//! use std::time::Duration;
//! use ctxtree::{Context, Error};
//!
//! struct UserId(u64);
//!
//! let root = Context::background();
//! let (request, cancel) = root.with_timeout(Duration::from_secs(30));
//! let request = request.with_value(UserId(42));
//! let (step, _step_cancel) = request.with_cancel();
//!
//! assert_eq!(step.value::<UserId>().map(|u| u.0), Some(42));
//! cancel.cancel();
//! assert_eq!(step.err(), Some(Error::Canceled));
//! ```
//!
//! # Waiting, on any executor
//!
//! [`Context::done`] returns a future built on `event-listener`, so it works
//! on smol, async-std, tokio, `futures::executor` or any other executor. It is
//! `Unpin` and fused, so it drops straight into `futures::select!`:
//!
//! ```
//! use futures::{executor::block_on, select, FutureExt};
//! use ctxtree::Context;
//!
//! async fn work() -> u32 { 7 }
//!
//! let (ctx, _cancel) = Context::background().with_cancel();
//! let out = block_on(async {
//!     select! {
//!         err = ctx.done() => Err(err),
//!         n = work().fuse() => Ok(n),
//!     }
//! });
//! assert_eq!(out, Ok(7));
//! ```
//!
//! [`Context::run`] does that race for you, and a plain thread can block with
//! [`Context::wait`] or [`Context::wait_timeout`].
//!
//! # Beyond Go: merged contexts, grace periods and error groups
//!
//! [`Context::merge`] derives a context that is done when either of two
//! parents is (Go declined `context.Merge`; C# calls it a linked token):
//!
//! ```
//! use ctxtree::{Context, Error};
//!
//! let (request, _c) = Context::background().with_cancel();
//! let (shutdown, stop_server) = Context::background().with_cancel();
//! let (work, _w) = request.merge(&shutdown);
//! stop_server.cancel();
//! assert_eq!(work.err(), Some(Error::Canceled));
//! ```
//!
//! [`Context::with_grace`] derives a context that is done a grace period
//! *after* its parent is: two-phase shutdown, in which the parent is the
//! soft signal (stop taking new work) and the grace child, handed to the
//! work in flight, the hard one:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ctxtree::{Context, Error};
//!
//! let (server, shutdown) = Context::background().with_cancel();
//! let (in_flight, _c) = server.with_grace(Duration::from_millis(20));
//! let soft = Instant::now();
//! shutdown.cancel();
//! assert!(server.is_done());
//! assert_eq!(in_flight.wait(), Error::Canceled);
//! assert!(soft.elapsed() >= Duration::from_millis(20));
//! ```
//!
//! [`Group`] is Go's `errgroup` without an executor: its tasks run inside
//! the [`wait`](Group::wait) future, and the first error cancels the rest,
//! with that error as the [`cause`](Context::cause):
//!
//! ```
//! use std::io;
//! use ctxtree::{Context, Group};
//!
//! let group = Group::<io::Error>::new(&Context::background());
//! let ctx = group.context().clone();
//! group.spawn(async { Err(io::Error::other("backend down")) });
//! group.spawn(async move {
//!     ctx.done().await; // cancelled by the failure above
//!     Ok(())
//! });
//! let err = futures::executor::block_on(group.wait()).unwrap_err();
//! assert_eq!(err.to_string(), "backend down");
//! ```
//!
//! The error type may also be `anyhow::Error` or
//! `Box<dyn Error + Send + Sync>`; then the cause is a [`TaskError`] around
//! the same error (see [`GroupError`]).
//!
//! [`wire`] carries deadlines across processes, and [`stream::until_done`]
//! ends a stream with its context.
//!
//! # Servers and clients: the `tower` feature
//!
//! With the `tower` feature (off by default), `ctxtree::tower` gives each
//! request of a tower, hyper, axum or tonic server a context of its own,
//! with the client's `grpc-timeout` as its deadline, cancelled when the
//! client goes away or the server shuts down; and its client layer sends a
//! context's time left with each outgoing request and abandons the call
//! when the context is done:
//!
//! ```toml
//! ctxtree = { version = "0.1", features = ["tower"] }
//! ```
//!
//! # Rules of use
//!
//! As in Go: pass a `Context` explicitly to the functions that need it; do
//! not store it in long-lived structs; cancel what you derive as soon as the
//! work is over (a [`CancelGuard`] makes that automatic). Unlike Go, a
//! forgotten cancel leaks nothing: a child that nothing can observe any more
//! leaves its parent at once.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod after_func;
mod canceller;
mod context;
mod done;
mod error;
mod group;
pub mod stream;
mod sync;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
mod tree;
pub mod wire;

pub use after_func::AfterFunc;
pub use canceller::{CancelGuard, Canceller};
pub use context::Context;
pub use done::{Done, Run};
pub use error::{Cause, Error};
pub use group::{AsDynError, AsError, Group, GroupError, Spawner, TaskError, Wait};
