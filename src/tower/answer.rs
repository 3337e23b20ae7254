//! The answers the server layer gives by itself: for a context done before
//! the handler answered, and for a malformed `grpc-timeout`.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

use super::server::ServerBody;

/// gRPC's DEADLINE_EXCEEDED.
pub(crate) const GRPC_DEADLINE_EXCEEDED: u32 = 4;
/// gRPC's INTERNAL: what gRPC's own servers answer to a malformed
/// `grpc-timeout`.
pub(crate) const GRPC_INTERNAL: u32 = 13;
/// gRPC's UNAVAILABLE: what a gRPC server that is shutting down answers.
pub(crate) const GRPC_UNAVAILABLE: u32 = 14;

/// The request header that carries the time left, and the response headers
/// of a gRPC status.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";
const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

/// `is_grpc` tells whether a request is a gRPC call, by its content type:
/// `application/grpc`, `application/grpc+proto`, `application/grpc-web`...
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// What to answer with when the layer answers by itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answer {
    pub(crate) http: StatusCode,
    pub(crate) grpc: u32,
}

impl Answer {
    /// The response: for gRPC, HTTP 200 with the code and message in the
    /// headers and an empty body (gRPC's "trailers-only" response); for
    /// plain HTTP, the status and the message as a text body.
    pub(crate) fn response<B>(self, grpc: bool, message: &str) -> Response<ServerBody<B>> {
        if grpc {
            let mut response = Response::new(ServerBody::answer(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(GRPC_STATUS, HeaderValue::from(self.grpc));
            if let Ok(value) = HeaderValue::try_from(percent_encode(message)) {
                headers.insert(GRPC_MESSAGE, value);
            }
            response
        } else {
            let mut response =
                Response::new(ServerBody::answer(Bytes::from(format!("{message}\n"))));
            *response.status_mut() = self.http;
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    }
}

/// `percent_encode` spells a `grpc-message` value as gRPC asks: the message's
/// UTF-8 bytes, each byte outside printable ASCII and `%` itself as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_printable_ascii() {
        assert_eq!(percent_encode("a b'c"), "a b'c");
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn grpc_content_types() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_grpc(&headers));
    }
}
