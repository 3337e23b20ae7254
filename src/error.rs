//! The two ways a context ends, and the cause type that can explain why.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why a [`Context`](crate::Context) is done: Go's `context.Canceled` and
/// `context.DeadlineExceeded`.
///
/// A tiny `Copy` value, so it can be returned from every [`Done`](crate::Done)
/// and compared freely. Its `Display` strings are Go's.
///
/// # Examples
///
/// ```
/// use ctxtree::{Context, Error};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// cancel.cancel();
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(Error::Canceled.to_string(), "context canceled");
/// assert!(Error::DeadlineExceeded.is_timeout());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The context was cancelled by a [`Canceller`](crate::Canceller), or by
    /// an ancestor that was.
    Canceled,
    /// The context's deadline, or an ancestor's, passed.
    DeadlineExceeded,
}

impl Error {
    /// `is_timeout` tells whether the context ended because a deadline passed.
    ///
    /// # Examples
    ///
    /// ```
    /// use ctxtree::Error;
    ///
    /// assert!(Error::DeadlineExceeded.is_timeout());
    /// assert!(!Error::Canceled.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::DeadlineExceeded)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Canceled => "context canceled",
            Error::DeadlineExceeded => "context deadline exceeded",
        })
    }
}

impl std::error::Error for Error {}

/// `Canceled` becomes [`io::ErrorKind::Interrupted`], `DeadlineExceeded`
/// becomes [`io::ErrorKind::TimedOut`]; the `Error` stays inside, reachable
/// with [`io::Error::get_ref`], so `?` works in functions that return
/// [`io::Result`] and the reason is not lost.
///
/// # Caveats
///
/// Some I/O loops retry on `Interrupted` (`read_exact`, `write_all`): do not
/// return a cancelled context's error from inside a `Read` or `Write`
/// implementation, or such a loop would spin.
///
/// # Examples
///
/// ```
/// use std::io;
///
/// let e: io::Error = ctxtree::Error::DeadlineExceeded.into();
/// assert_eq!(e.kind(), io::ErrorKind::TimedOut);
/// let inner = e.get_ref().and_then(|e| e.downcast_ref::<ctxtree::Error>());
/// assert_eq!(inner, Some(&ctxtree::Error::DeadlineExceeded));
/// ```
impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err {
            Error::Canceled => io::ErrorKind::Interrupted,
            Error::DeadlineExceeded => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, err)
    }
}

/// Why a context was cancelled, as given to
/// [`Canceller::cancel_with_cause`](crate::Canceller::cancel_with_cause) or to
/// the `with_*_cause` constructors: Go's `context.Cause`.
///
/// Shared, so every descendant reports the same cause without copying it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use ctxtree::{Cause, Context};
///
/// let (ctx, cancel) = Context::background().with_cancel();
/// let cause: Cause = Arc::new(std::io::Error::other("backend failed"));
/// cancel.cancel_with_cause(cause);
/// assert_eq!(ctx.cause().unwrap().to_string(), "backend failed");
/// ```
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;
