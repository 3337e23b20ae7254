//! `ctxtree::wire`: the `grpc-timeout` format, deriving a server's context
//! from it, and cancelling that context when the client hangs up.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use ctxtree::wire::{
    cancel_on_eof, decode_timeout, encode_duration, encode_timeout, with_wire_timeout, WireError,
};
use ctxtree::{Context, Error};
use futures::{select, FutureExt};
use proptest::prelude::*;
use smol::{Async, Timer};

use crate::common::{patience, watchdog_async};

const NS: u128 = 1;
const US: u128 = 1_000;
const MS: u128 = 1_000_000;
const S: u128 = 1_000_000_000;
const MIN: u128 = 60 * S;
const HOUR: u128 = 60 * MIN;

/// A duration of `n` nanoseconds, for any `n` up to the 99999999H the
/// format can carry.
fn nanos(n: u128) -> Duration {
    Duration::new(u64::try_from(n / S).unwrap(), u32::try_from(n % S).unwrap())
}

/// The unit length, in nanoseconds, of an encoded value.
fn unit_of(encoded: &str) -> u128 {
    match encoded.chars().last() {
        Some('n') => NS,
        Some('u') => US,
        Some('m') => MS,
        Some('S') => S,
        Some('M') => MIN,
        Some('H') => HOUR,
        other => panic!("bad unit in {encoded:?}: {other:?}"),
    }
}

fn assert_well_formed(encoded: &str) {
    let digits = &encoded[..encoded.len() - 1];
    assert!(
        !digits.is_empty() && digits.len() <= 8 && digits.bytes().all(|b| b.is_ascii_digit()),
        "not a grpc-timeout value: {encoded:?}"
    );
}

// ---- decoding -------------------------------------------------------------

#[test]
fn decodes_the_protocol_documents_examples() {
    // From "gRPC over HTTP2", the grpc-timeout examples.
    assert_eq!(decode_timeout("1H"), Ok(Duration::from_secs(3600)));
    assert_eq!(decode_timeout("100m"), Ok(Duration::from_millis(100)));
    assert_eq!(decode_timeout("5S"), Ok(Duration::from_secs(5)));
    assert_eq!(
        decode_timeout("99999999n"),
        Ok(Duration::from_nanos(99_999_999))
    );
}

#[test]
fn decodes_every_unit() {
    assert_eq!(decode_timeout("7H"), Ok(Duration::from_secs(7 * 3600)));
    assert_eq!(decode_timeout("7M"), Ok(Duration::from_secs(7 * 60)));
    assert_eq!(decode_timeout("7S"), Ok(Duration::from_secs(7)));
    assert_eq!(decode_timeout("7m"), Ok(Duration::from_millis(7)));
    assert_eq!(decode_timeout("7u"), Ok(Duration::from_micros(7)));
    assert_eq!(decode_timeout("7n"), Ok(Duration::from_nanos(7)));
}

#[test]
fn decodes_the_extremes() {
    assert_eq!(decode_timeout("0n"), Ok(Duration::ZERO));
    assert_eq!(decode_timeout("0H"), Ok(Duration::ZERO));
    assert_eq!(decode_timeout("00000001S"), Ok(Duration::from_secs(1)));
    assert_eq!(
        decode_timeout("99999999H"),
        Ok(Duration::from_secs(99_999_999 * 3600))
    );
}

#[test]
fn rejects_malformed_values() {
    use WireError::*;
    let cases: &[(&str, WireError)] = &[
        ("", Empty),
        ("S", NoDigits),
        ("n", NoDigits),
        ("x", UnknownUnit('x')),
        ("123456789S", TooManyDigits),
        ("000000001S", TooManyDigits),
        ("100", MissingUnit),
        ("123456789", MissingUnit),
        ("5s", UnknownUnit('s')),
        ("5h", UnknownUnit('h')),
        ("5x", UnknownUnit('x')),
        ("5U", UnknownUnit('U')),
        ("+5S", InvalidCharacter('+')),
        ("-5S", InvalidCharacter('-')),
        ("5-", InvalidCharacter('-')),
        (" 5S", InvalidCharacter(' ')),
        ("5S ", InvalidCharacter(' ')),
        ("5 S", InvalidCharacter(' ')),
        ("\t5S", InvalidCharacter('\t')),
        ("5S\n", InvalidCharacter('\n')),
        ("1.5S", InvalidCharacter('.')),
        ("1S2S", InvalidCharacter('S')),
        ("5SS", InvalidCharacter('S')),
        ("٣S", InvalidCharacter('٣')), // an Arabic-Indic digit is not ASCII
        ("5µ", InvalidCharacter('µ')),
        ("５S", InvalidCharacter('５')), // a fullwidth digit
        ("é", InvalidCharacter('é')),
    ];
    for (input, want) in cases {
        assert_eq!(decode_timeout(input).as_ref(), Err(want), "input {input:?}");
    }
}

#[test]
fn errors_say_what_is_wrong() {
    let msg = |s: &str| decode_timeout(s).unwrap_err().to_string();
    assert_eq!(msg("123456789S"), "grpc-timeout: more than 8 digits");
    assert_eq!(msg(""), "grpc-timeout: empty value");
    assert!(msg("100").contains("missing unit"));
    assert!(msg("S").contains("no digits"));
    assert!(msg("5s").contains("unknown unit 's'"));
    assert!(msg(" 5S").contains("invalid character ' '"));
    // std::error::Error, so it travels as a cause or in a Box<dyn Error>.
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(WireError::Empty);
    assert!(boxed.source().is_none());
}

// ---- encoding -------------------------------------------------------------

#[test]
fn encodes_at_unit_boundaries() {
    let cases: &[(u128, &str)] = &[
        (0, "0n"),
        (1, "1n"),
        (99_999_999, "99999999n"),
        (100_000_000, "100000u"),
        (100_000_999, "100000u"),
        (100_001_000, "100001u"),
        (99_999_999 * US, "99999999u"),
        (99_999_999 * US + 999, "99999999u"),
        (100_000_000 * US, "100000m"),
        (99_999_999 * MS, "99999999m"),
        (100_000_000 * MS, "100000S"),
        (99_999_999 * S, "99999999S"),
        (100_000_000 * S, "1666666M"),
        (99_999_999 * MIN, "99999999M"),
        (100_000_000 * MIN, "1666666H"),
        (99_999_999 * HOUR, "99999999H"),
    ];
    for &(n, want) in cases {
        let d = nanos(n);
        assert_eq!(encode_duration(d), want, "{n} ns");
        let back = decode_timeout(want).unwrap();
        assert!(back <= d, "{want} decodes to more than {d:?}");
    }
}

#[test]
fn round_trips_exactly_when_the_unit_divides() {
    for (n, unit) in [
        (99_999_999, NS),
        (100_000_000, US),
        (99_999_999 * US, US),
        (100_000_000 * US, MS),
        (99_999_999 * MS, MS),
        (100_000_000 * MS, S),
        (99_999_999 * S, S),
        (100_000_020 * S, MIN),
        (99_999_999 * MIN, MIN),
        (100_000_020 * MIN, HOUR),
        (99_999_999 * HOUR, HOUR),
    ] {
        let d = nanos(n);
        let encoded = encode_duration(d);
        assert_eq!(unit_of(&encoded), unit, "{encoded}");
        assert_eq!(decode_timeout(&encoded), Ok(d), "{encoded}");
    }
}

#[test]
fn saturates_at_99999999_hours() {
    let max = Duration::from_secs(99_999_999 * 3600);
    assert_eq!(encode_duration(max), "99999999H");
    assert_eq!(
        encode_duration(max + Duration::from_secs(3599)),
        "99999999H"
    );
    assert_eq!(
        encode_duration(max + Duration::from_secs(3600)),
        "99999999H"
    );
    assert_eq!(encode_duration(Duration::MAX), "99999999H");
}

#[test]
fn encode_timeout_without_a_deadline_is_none() {
    assert_eq!(encode_timeout(&Context::background()), None);
    let (ctx, _cancel) = Context::background().with_cancel();
    assert_eq!(encode_timeout(&ctx), None);
    let (forever, _cancel) = Context::background().with_timeout(Duration::MAX);
    assert_eq!(encode_timeout(&forever), None);
}

#[test]
fn encode_timeout_on_a_passed_deadline_is_1n() {
    let (ctx, _cancel) = Context::background().with_deadline(Instant::now());
    assert_eq!(encode_timeout(&ctx).as_deref(), Some("1n"));
    let past = Instant::now() - Duration::from_millis(5);
    let (ctx, _cancel) = Context::background().with_deadline(past);
    assert_eq!(encode_timeout(&ctx).as_deref(), Some("1n"));
    // The receiver's context is born done, or all but.
    let (server, _cancel) = with_wire_timeout(&Context::background(), "1n").unwrap();
    assert_eq!(
        server.wait_timeout(patience()),
        Some(Error::DeadlineExceeded)
    );
}

#[test]
fn encode_timeout_sends_the_time_left() {
    let start = Instant::now();
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(300));
    let encoded = encode_timeout(&ctx).unwrap();
    // No fixed bound on the time spent: under valgrind on a busy machine
    // this took 180 ms. What was sent is the time left, so it is at most
    // the timeout and at least the timeout less the time spent (and less
    // a millisecond for the rounding to the wire's units).
    let spent = start.elapsed();
    assert_well_formed(&encoded);
    let left = decode_timeout(&encoded).unwrap();
    assert!(left <= Duration::from_millis(300), "{encoded}");
    assert!(
        left + spent + Duration::from_millis(1) >= Duration::from_millis(300),
        "{encoded} after {spent:?}"
    );
}

#[test]
fn encode_timeout_uses_the_nearest_deadline_on_the_path() {
    let (outer, _c1) = Context::background().with_timeout(Duration::from_millis(300));
    let (inner, _c2) = outer.with_value(1u8).with_timeout(Duration::from_secs(60));
    let left = decode_timeout(&encode_timeout(&inner).unwrap()).unwrap();
    assert!(left <= Duration::from_millis(300));
}

// ---- the server side ------------------------------------------------------

#[test]
fn with_wire_timeout_sets_the_decoded_deadline() {
    let before = Instant::now();
    let (ctx, _cancel) = with_wire_timeout(&Context::background(), "250m").unwrap();
    let after = Instant::now();
    let deadline = ctx.deadline().unwrap();
    assert!(deadline >= before + Duration::from_millis(250));
    assert!(deadline <= after + Duration::from_millis(250));
}

#[test]
fn with_wire_timeout_fires() {
    let start = Instant::now();
    let (ctx, _cancel) = with_wire_timeout(&Context::background(), "20m").unwrap();
    assert_eq!(ctx.wait_timeout(patience()), Some(Error::DeadlineExceeded));
    assert!(start.elapsed() >= Duration::from_millis(20));
}

#[test]
fn with_wire_timeout_keeps_the_parents_earlier_deadline() {
    let (parent, _c) = Context::background().with_timeout(Duration::from_millis(100));
    let (ctx, _cancel) = with_wire_timeout(&parent, "1H").unwrap();
    assert_eq!(ctx.deadline(), parent.deadline());
}

#[test]
fn with_wire_timeout_is_cancelled_with_its_parent() {
    let (parent, cancel) = Context::background().with_cancel();
    let (ctx, _cancel) = with_wire_timeout(&parent, "1H").unwrap();
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

#[test]
fn with_wire_timeout_rejects_bad_headers() {
    let parent = Context::background();
    for bad in ["", "1h", "1.5S", "123456789S", " 1S", "grpc-timeout: 1S"] {
        assert!(with_wire_timeout(&parent, bad).is_err(), "{bad:?}");
    }
}

// ---- the round trip, from client to server --------------------------------

#[test]
fn client_to_server_gives_no_more_than_the_time_left() {
    for budget in [MS, 99_999_999, 100_000_001, 5 * S, 3 * HOUR] {
        let (client, _c) = Context::background().with_timeout(nanos(budget));
        let encoded_at = Instant::now();
        let header = encode_timeout(&client).unwrap();
        let (server, _s) = with_wire_timeout(&Context::background(), &header).unwrap();
        let in_transit = encoded_at.elapsed();
        if header == "1n" {
            // The budget ran out before it was encoded (a slow machine, or
            // valgrind): the smallest positive timeout, so the server gives
            // up at once.
            assert!(server.wait_timeout(patience()).is_some(), "{budget} ns");
            continue;
        }
        // Later than the client's deadline by the time "in transit" at most.
        assert!(
            server.deadline().unwrap() <= client.deadline().unwrap() + in_transit,
            "{budget} ns sent as {header}"
        );
    }
}

// ---- properties -----------------------------------------------------------

proptest! {
    #[test]
    fn decode_never_panics_on_any_string(s in any::<String>()) {
        let _ = decode_timeout(&s);
    }

    #[test]
    fn decode_never_panics_on_near_misses(s in "[-+ ]?[0-9]{0,10}[HMSmunhsx ]?[0-9 ]?") {
        match decode_timeout(&s) {
            Ok(_) => {
                // Accepted: exactly 1 to 8 digits and a unit.
                let unit = s.chars().last().unwrap();
                prop_assert!("HMSmun".contains(unit));
                let digits = &s[..s.len() - 1];
                prop_assert!((1..=8).contains(&digits.len()));
                prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()));
            }
            Err(err) => prop_assert!(err.to_string().starts_with("grpc-timeout: ")),
        }
    }

    #[test]
    fn decode_accepts_every_well_formed_value(value in 0u64..100_000_000, unit in "[HMSmun]") {
        let d = decode_timeout(&format!("{value}{unit}")).unwrap();
        let per = nanos(unit_of(&unit));
        prop_assert_eq!(d, per * u32::try_from(value).unwrap());
    }

    #[test]
    fn encode_rounds_down_by_less_than_one_unit(
        secs in prop_oneof![0u64..10, 0u64..100_000, 0u64..1_000_000_000_000, any::<u64>()],
        subsec in 0u32..1_000_000_000,
    ) {
        let d = Duration::new(secs, subsec);
        let encoded = encode_duration(d);
        assert_well_formed(&encoded);
        let back = decode_timeout(&encoded).unwrap();
        prop_assert!(back <= d, "{:?} encoded as {} decodes to {:?}", d, encoded, back);
        if encoded != "99999999H" {
            let unit = nanos(unit_of(&encoded));
            prop_assert!(d - back < unit, "{:?} encoded as {} decodes to {:?}", d, encoded, back);
            // And it is the finest unit that fits: one finer would need 9 digits.
            if unit > Duration::from_nanos(1) {
                prop_assert!(d.as_nanos() / finer(unit).as_nanos() > 99_999_999);
            }
        } else {
            prop_assert!(d >= Duration::from_secs(99_999_999 * 3600));
        }
    }

    #[test]
    fn encode_decode_round_trips_every_decoded_value(value in 0u64..100_000_000, unit in "[HMSmun]") {
        // Whatever decodes, re-encoding gives the same duration back.
        let d = decode_timeout(&format!("{value}{unit}")).unwrap();
        prop_assert_eq!(decode_timeout(&encode_duration(d)), Ok(d));
    }
}

/// The next finer unit than `unit`.
fn finer(unit: Duration) -> Duration {
    let units = [NS, US, MS, S, MIN, HOUR].map(nanos);
    let i = units.iter().position(|u| *u == unit).unwrap();
    units[i - 1]
}

// ---- cancel_on_eof --------------------------------------------------------

/// A connected pair over 127.0.0.1: (client, server side).
fn tcp_pair() -> (TcpStream, Async<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, Async::new(server).unwrap())
}

#[test]
fn cancel_on_eof_cancels_when_the_client_hangs_up() {
    smol::block_on(async {
        let (client, server) = tcp_pair();
        let (ctx, cancel) = with_wire_timeout(&Context::background(), "1H").unwrap();
        let watcher = smol::spawn(async move { cancel_on_eof(&server, cancel).await });

        // Bytes the client sends are read and thrown away; still live.
        std::io::Write::write_all(&mut &client, b"more bytes").unwrap();
        Timer::after(Duration::from_millis(20)).await;
        assert!(!ctx.is_done());

        drop(client);
        assert_eq!(watchdog_async("done()", ctx.done()).await, Error::Canceled);
        let cause = ctx.cause().unwrap();
        assert!(
            cause.to_string().contains("closed the connection"),
            "cause: {cause}"
        );
        let io_err = cause.downcast_ref::<io::Error>().unwrap();
        assert_eq!(io_err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(watcher.await.is_ok());
    });
}

#[test]
fn cancel_on_eof_cancels_on_a_half_close() {
    smol::block_on(async {
        let (client, server) = tcp_pair();
        let (ctx, cancel) = Context::background().with_cancel();
        let watcher = smol::spawn(async move { cancel_on_eof(&server, cancel).await });
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(watchdog_async("done()", ctx.done()).await, Error::Canceled);
        assert!(watcher.await.is_ok());
        drop(client);
    });
}

#[test]
fn cancel_on_eof_leaves_the_context_live_while_the_client_stays() {
    smol::block_on(async {
        let (client, server) = tcp_pair();
        let (ctx, cancel) = Context::background().with_cancel();
        let (child, _c) = ctx.with_cancel();
        let watcher = smol::spawn(async move { cancel_on_eof(&server, cancel).await });

        std::io::Write::write_all(&mut &client, b"hello").unwrap();
        let got = select! {
            err = ctx.done() => Some(err),
            _ = FutureExt::fuse(Timer::after(Duration::from_millis(100))) => None,
        };
        assert_eq!(got, None);
        assert!(!ctx.is_done());
        assert!(!child.is_done());

        // Dropping the watcher stops it without cancelling.
        drop(watcher);
        drop(client);
        Timer::after(Duration::from_millis(20)).await;
        assert!(!ctx.is_done());
    });
}

#[test]
fn cancel_on_eof_in_a_select_loop_with_the_handler() {
    // The documented pattern, on smol: the handler sees the cancellation.
    smol::block_on(async {
        let (client, server) = tcp_pair();
        let (ctx, cancel) = with_wire_timeout(&Context::background(), "10S").unwrap();
        let handler = {
            let ctx = ctx.clone();
            async move {
                select! {
                    err = ctx.done() => Err(err),
                    _ = FutureExt::fuse(Timer::after(patience())) => Ok(()),
                }
            }
        };
        let hang_up = async move {
            Timer::after(Duration::from_millis(20)).await;
            drop(client);
            futures::future::pending::<()>().await
        };
        let watcher = cancel_on_eof(&server, cancel).fuse();
        let handler = handler.fuse();
        let hang_up = hang_up.fuse();
        futures::pin_mut!(watcher, handler, hang_up);
        let out = loop {
            select! {
                out = handler => break out,
                res = watcher => assert!(res.is_ok()),
                _ = hang_up => unreachable!(),
            }
        };
        assert_eq!(out, Err(Error::Canceled));
    });
}

/// A reader that fails, once interrupted and then for good.
struct Failing {
    interrupted: bool,
}

impl futures::io::AsyncRead for Failing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        _buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if !self.interrupted {
            self.interrupted = true;
            return Poll::Ready(Err(io::ErrorKind::Interrupted.into()));
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        )))
    }
}

#[test]
fn cancel_on_eof_cancels_on_a_read_error() {
    let (ctx, cancel) = Context::background().with_cancel();
    let res = futures::executor::block_on(cancel_on_eof(Failing { interrupted: false }, cancel));
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    let cause = ctx.cause().unwrap();
    let io_err = cause.downcast_ref::<io::Error>().unwrap();
    assert_eq!(io_err.kind(), io::ErrorKind::ConnectionReset);
    assert!(cause.to_string().contains("reset by peer"), "{cause}");
}

#[test]
fn cancel_on_eof_on_an_in_memory_reader() {
    let (ctx, cancel) = Context::background().with_cancel();
    let data = vec![7u8; 10_000];
    futures::executor::block_on(cancel_on_eof(&data[..], cancel)).unwrap();
    assert_eq!(
        ctx.cause().unwrap().to_string(),
        "peer closed the connection"
    );
}

#[test]
fn cancel_on_eof_keeps_an_earlier_reason() {
    let (ctx, cancel) = with_wire_timeout(&Context::background(), "0n").unwrap();
    futures::executor::block_on(cancel_on_eof(&b""[..], cancel)).unwrap();
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
}
