//! Carrying a deadline across a process boundary, as gRPC's `grpc-timeout`
//! header does, and cancelling a server's context when its client hangs up.
//!
//! An [`Instant`] means nothing in another process, so a client does not send
//! its deadline: it sends the time *left* until it, and the server starts its
//! own clock from there. gRPC spells that time as at most 8 ASCII digits and
//! one unit:
//!
//! | unit | meaning      |
//! |------|--------------|
//! | `H`  | hours        |
//! | `M`  | minutes      |
//! | `S`  | seconds      |
//! | `m`  | milliseconds |
//! | `u`  | microseconds |
//! | `n`  | nanoseconds  |
//!
//! so `100m` is 100 ms and `1H` an hour (the gRPC over HTTP/2 protocol
//! document, `Timeout → "grpc-timeout" TimeoutValue TimeoutUnit`).
//!
//! * The client calls [`encode_timeout`] on its request's context and sends
//!   the value, if any, in its request.
//! * The server calls [`with_wire_timeout`] with that value: the child it
//!   gets is done when the client's deadline passes, measured from when the
//!   request arrived, or earlier if the server's own context says so.
//! * [`cancel_on_eof`], run next to the handler, cancels that child when the
//!   client closes the connection, so a server stops working for a client
//!   that has gone.
//!
//! Encoding rounds *down*, so the server never gets more time than the
//! client had left when it encoded the value.
//!
//! # Caveats
//!
//! The server's clock starts when it calls [`with_wire_timeout`], not when
//! the client called [`encode_timeout`]: the time in between (the request in
//! transit and in queues) is not subtracted, as no clock is shared to measure
//! it. So the server's deadline falls that much after the client's, as in
//! gRPC. A client that cannot afford it sends a little less than it has.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ctxtree::{wire, Context};
//!
//! // Client: a 300 ms budget, sent as a header value such as "299987u".
//! let (client_ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
//! let sent_at = Instant::now();
//! let header = wire::encode_timeout(&client_ctx).unwrap();
//! assert!(wire::decode_timeout(&header).unwrap() <= Duration::from_millis(300));
//!
//! // Server: its own context (here with a 2 s budget), narrowed by the
//! // client's budget, counted from when the request arrives.
//! let (server, _stop) = Context::background().with_timeout(Duration::from_secs(2));
//! let (request_ctx, _cancel) = wire::with_wire_timeout(&server, &header).unwrap();
//! let (client_deadline, server_deadline) =
//!     (client_ctx.deadline().unwrap(), request_ctx.deadline().unwrap());
//! assert!(server_deadline <= client_deadline + sent_at.elapsed());
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_io::AsyncRead;

use crate::canceller::Canceller;
use crate::context::Context;

/// The most digits a `grpc-timeout` value may have.
const MAX_DIGITS: usize = 8;

/// The largest value 8 digits can hold.
const MAX_VALUE: u128 = 99_999_999;

/// The units, finest first, with their length in nanoseconds.
const UNITS: [(char, u128); 6] = [
    ('n', 1),
    ('u', 1_000),
    ('m', 1_000_000),
    ('S', 1_000_000_000),
    ('M', 60 * 1_000_000_000),
    ('H', 60 * 60 * 1_000_000_000),
];

/// What the longest duration that can be sent saturates to.
const SATURATED: &str = "99999999H";

/// `encode_timeout` returns the time left until `ctx`'s deadline as a
/// `grpc-timeout` value, or `None` if `ctx` has no deadline.
///
/// The value is [`encode_duration`] of the time left, rounded down, so the
/// receiver never gets more time than `ctx` has left now (see the
/// [module's caveats](self#caveats) for the time in transit). A deadline that has
/// already passed, or that is exactly now, encodes as `1n` (one nanosecond)
/// rather than `0n`: the receiver's context is then born as good as done, and
/// the request still carries a deadline, where a gRPC peer may read `0` as
/// "no timeout".
///
/// Only the deadline is looked at: a context cancelled by its
/// [`Canceller`] before its deadline still encodes the time left. Check
/// [`Context::is_done`] before sending a request.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use ctxtree::{wire, Context};
///
/// assert_eq!(wire::encode_timeout(&Context::background()), None);
///
/// let (ctx, _cancel) = Context::background().with_timeout(Duration::from_secs(5));
/// let header = wire::encode_timeout(&ctx).unwrap(); // such as "4999987u"
/// assert!(wire::decode_timeout(&header).unwrap() <= Duration::from_secs(5));
///
/// let (late, _cancel) = Context::background().with_deadline(Instant::now());
/// assert_eq!(wire::encode_timeout(&late).as_deref(), Some("1n"));
/// ```
#[doc(alias = "grpc-timeout")]
pub fn encode_timeout(ctx: &Context) -> Option<String> {
    let deadline = ctx.deadline()?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Some(String::from("1n"))
    } else {
        Some(encode_duration(left))
    }
}

/// `encode_duration` spells `d` as a `grpc-timeout` value: at most 8 ASCII
/// digits and one unit, `H`, `M`, `S`, `m`, `u` or `n`.
///
/// It picks the finest unit in which `d` fits in 8 digits and rounds down,
/// so [`decode_timeout`] of the result is never more than `d`, and less by
/// under one of that unit. Durations of 100 000 000 hours or more saturate to
/// `99999999H` (over 11 000 years). Zero encodes as `0n`; only
/// [`encode_timeout`] turns a deadline with nothing left into `1n`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ctxtree::wire::encode_duration;
///
/// assert_eq!(encode_duration(Duration::from_millis(300)), "300000u");
/// assert_eq!(encode_duration(Duration::from_nanos(99_999_999)), "99999999n");
/// assert_eq!(encode_duration(Duration::from_nanos(100_000_001)), "100000u");
/// assert_eq!(encode_duration(Duration::from_secs(3600 * 100_000)), "6000000M");
/// assert_eq!(encode_duration(Duration::ZERO), "0n");
/// assert_eq!(encode_duration(Duration::MAX), "99999999H");
/// ```
pub fn encode_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, len) in UNITS {
        let value = nanos / len;
        if value <= MAX_VALUE {
            return format!("{value}{unit}");
        }
    }
    String::from(SATURATED)
}

/// `decode_timeout` parses a `grpc-timeout` value: 1 to 8 ASCII digits
/// followed by one unit, `H`, `M`, `S`, `m`, `u` or `n`.
///
/// It is strict: no signs, no spaces anywhere (trim the header value first if
/// your HTTP library does not), no decimal point, no more than 8 digits, and
/// exactly one unit, at the end. Leading zeros count as digits. Zero (`0S`)
/// is accepted and means a deadline that has already passed. It never panics;
/// every malformed input is a [`WireError`] that names the problem.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ctxtree::wire::{decode_timeout, WireError};
///
/// assert_eq!(decode_timeout("1H"), Ok(Duration::from_secs(3600)));
/// assert_eq!(decode_timeout("100m"), Ok(Duration::from_millis(100)));
/// assert_eq!(decode_timeout("100"), Err(WireError::MissingUnit));
/// assert_eq!(decode_timeout("123456789S"), Err(WireError::TooManyDigits));
/// assert_eq!(decode_timeout("5s"), Err(WireError::UnknownUnit('s')));
/// assert_eq!(decode_timeout(" 5S"), Err(WireError::InvalidCharacter(' ')));
/// ```
pub fn decode_timeout(s: &str) -> Result<Duration, WireError> {
    let Some(unit) = s.chars().next_back() else {
        return Err(WireError::Empty);
    };
    // A character that is never valid (a space, a sign, non-ASCII) is the
    // problem to name, wherever it is; then a letter before the end.
    if let Some(bad) = s.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(WireError::InvalidCharacter(bad));
    }
    let digits = &s[..s.len() - unit.len_utf8()];
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_digit()) {
        return Err(WireError::InvalidCharacter(bad));
    }
    let from_value: fn(u64) -> Duration = match unit {
        '0'..='9' => return Err(WireError::MissingUnit),
        'H' => |v| Duration::from_secs(v * 3600),
        'M' => |v| Duration::from_secs(v * 60),
        'S' => Duration::from_secs,
        'm' => Duration::from_millis,
        'u' => Duration::from_micros,
        'n' => Duration::from_nanos,
        other if other.is_ascii_alphabetic() => return Err(WireError::UnknownUnit(other)),
        other => return Err(WireError::InvalidCharacter(other)),
    };
    if digits.is_empty() {
        return Err(WireError::NoDigits);
    }
    if digits.len() > MAX_DIGITS {
        return Err(WireError::TooManyDigits);
    }
    // At most 8 ASCII digits, so at most 99_999_999: neither this nor the
    // hours' `* 3600` can overflow a u64.
    let value = digits
        .bytes()
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
    Ok(from_value(value))
}

/// `with_wire_timeout` derives a server-side child of `parent` whose deadline
/// is now plus the `grpc-timeout` value `header`, as
/// [`Context::with_timeout`]`(decode_timeout(header)?)` does.
///
/// The child is done when that deadline passes, with
/// [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded), or when
/// `parent` is done, or when the returned [`Canceller`] cancels it, such as
/// from [`cancel_on_eof`]. A server that also has a budget of its own gets
/// the earlier of the two deadlines by deriving from a `parent` that has it.
///
/// # Errors
///
/// The [`WireError`] of [`decode_timeout`] if `header` is malformed; no
/// child is created then. Decide yourself whether to refuse such a request
/// or to serve it under the parent's deadline alone.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use ctxtree::{wire, Context};
///
/// let (server, _stop) = Context::background().with_cancel();
/// let before = Instant::now();
/// let (ctx, _cancel) = wire::with_wire_timeout(&server, "250m").unwrap();
/// let deadline = ctx.deadline().unwrap();
/// assert!(deadline >= before + Duration::from_millis(250));
/// assert!(deadline <= Instant::now() + Duration::from_millis(250));
///
/// assert!(wire::with_wire_timeout(&server, "soon").is_err());
/// ```
pub fn with_wire_timeout(
    parent: &Context,
    header: &str,
) -> Result<(Context, Canceller), WireError> {
    let timeout = decode_timeout(header)?;
    Ok(parent.with_timeout(timeout))
}

/// `cancel_on_eof` reads from `reader`, discarding what it reads, until end
/// of file or an error, and then cancels through `canceller`: it turns "the
/// client hung up" into a cancelled context, as Go's `net/http` does for a
/// request's context.
///
/// At end of file the cause is an [`io::Error`] of kind
/// [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) that says "peer closed
/// the connection", and it returns `Ok(())`. On a read error the cause is an
/// `io::Error` of the same kind that says "reading from the peer failed: "
/// and the error, and it returns that error.
/// [`Interrupted`](io::ErrorKind::Interrupted) reads are retried.
///
/// Run it *next to* the handler, on the connection's read half, so that it
/// watches while the handler works: in a `futures::select!` loop with the
/// handler (as below), or in a task of its own that you drop when the
/// handler is done. Pass `&stream` for types that read through a shared
/// reference, such as `smol::Async<TcpStream>` or `smol::net::TcpStream`, or
/// a clone or the read half of the stream.
///
/// # Caveats
///
/// It consumes the bytes it reads. Use it once the whole request has been
/// read, for protocols in which the client sends nothing more until it gets
/// its response, or on a read half that carries nothing else. A client that
/// shuts down only its write half (a half-close) also reads as end of file.
///
/// # Cancellation safety
///
/// Dropping the future stops the watch without cancelling anything; bytes
/// it has read are lost.
///
/// # Examples
///
/// ```
/// use futures::{channel::mpsc, executor::block_on, select, FutureExt, TryStreamExt};
/// use ctxtree::{wire, Context, Error};
///
/// // An in-memory connection: the client hangs up when `client` is dropped.
/// let (client, incoming) = mpsc::unbounded::<std::io::Result<Vec<u8>>>();
/// let connection = incoming.into_async_read();
///
/// let (ctx, cancel) = wire::with_wire_timeout(&Context::background(), "10S").unwrap();
/// let handler = {
///     let ctx = ctx.clone();
///     async move {
///         // A long request, that watches its context.
///         select! {
///             err = ctx.done() => Err(err),
///             _ = futures::future::pending::<()>().fuse() => Ok(()),
///         }
///     }
/// };
/// drop(client);
///
/// let out = block_on(async {
///     let watcher = wire::cancel_on_eof(connection, cancel).fuse();
///     let handler = handler.fuse();
///     futures::pin_mut!(watcher, handler);
///     loop {
///         select! {
///             out = handler => break out,
///             _ = watcher => {} // the context is cancelled; the handler sees it
///         }
///     }
/// });
/// assert_eq!(out, Err(Error::Canceled));
/// assert_eq!(ctx.cause().unwrap().to_string(), "peer closed the connection");
/// ```
#[doc(alias = "cancel_on_disconnect")]
#[doc(alias = "hangup")]
pub async fn cancel_on_eof<R: AsyncRead + Unpin>(
    mut reader: R,
    canceller: Canceller,
) -> io::Result<()> {
    let mut buf = [0u8; 512];
    loop {
        let read = poll_fn(|cx| Pin::new(&mut reader).poll_read(cx, &mut buf)).await;
        match read {
            Ok(0) => {
                canceller.cancel_with_cause(Arc::new(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection",
                )));
                return Ok(());
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                canceller.cancel_with_cause(Arc::new(io::Error::new(
                    err.kind(),
                    format!("reading from the peer failed: {err}"),
                )));
                return Err(err);
            }
        }
    }
}

/// `WireError` says why [`decode_timeout`] rejected a `grpc-timeout` value.
///
/// Its `Display` names the header and the problem, such as
/// `grpc-timeout: more than 8 digits`.
///
/// # Examples
///
/// ```
/// use ctxtree::wire::{decode_timeout, WireError};
///
/// let err = decode_timeout("123456789m").unwrap_err();
/// assert_eq!(err, WireError::TooManyDigits);
/// assert_eq!(err.to_string(), "grpc-timeout: more than 8 digits");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The value is the empty string.
    Empty,
    /// A unit with no digits before it, such as `S`.
    NoDigits,
    /// More than 8 digits, such as `123456789S` (leading zeros count).
    TooManyDigits,
    /// Digits with no unit after them, such as `100`.
    MissingUnit,
    /// An ASCII letter where the unit goes that is not one of `H`, `M`, `S`,
    /// `m`, `u`, `n`, such as the `s` of `5s`.
    UnknownUnit(char),
    /// A character that is neither a digit nor, at the end, a unit letter: a
    /// sign, a space, a decimal point, a non-ASCII character, or a letter
    /// before the end (the first `S` of `1S2S`).
    InvalidCharacter(char),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Empty => f.write_str("grpc-timeout: empty value"),
            WireError::NoDigits => f.write_str("grpc-timeout: no digits before the unit"),
            WireError::TooManyDigits => f.write_str("grpc-timeout: more than 8 digits"),
            WireError::MissingUnit => {
                f.write_str("grpc-timeout: missing unit (one of H, M, S, m, u, n)")
            }
            WireError::UnknownUnit(c) => write!(
                f,
                "grpc-timeout: unknown unit {c:?} (expected one of H, M, S, m, u, n)"
            ),
            WireError::InvalidCharacter(c) => write!(
                f,
                "grpc-timeout: invalid character {c:?} (expected 1 to 8 ASCII digits and a unit)"
            ),
        }
    }
}

impl StdError for WireError {}
