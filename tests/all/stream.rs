//! `ctxtree::stream::until_done`: a stream that ends when its context is done.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
#[cfg(not(ctxtree_checks))]
use std::time::Duration;
use std::time::Instant;

use ctxtree::stream::{until_done, UntilDone};
use ctxtree::{Context, Error};
use futures::channel::mpsc;
use futures::select;
use futures::stream::{self, FusedStream, Stream, StreamExt};

// The executors, smol's timers and the async watchdog need the heavy
// dev-dependencies, which `--cfg ctxtree_checks` (Miri, ThreadSanitizer)
// leaves out, and so the tests that use them.
#[cfg(not(ctxtree_checks))]
use crate::common::{patience, watchdog_async, Spawner, EXECUTORS};

/// A stream that counts how often it is polled and is never ready.
struct CountPolls(Arc<AtomicUsize>);

impl Stream for CountPolls {
    type Item = u8;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<Option<u8>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Poll::Pending
    }
}

/// Stops after 3 items when cancelled mid-stream; the senders learn it.
async fn cancel_mid_stream() {
    let (tx, rx) = mpsc::unbounded::<u32>();
    let (ctx, cancel) = Context::background().with_cancel();
    let mut items = until_done(rx, &ctx);
    for i in 1..=3 {
        tx.unbounded_send(i).unwrap();
    }
    for i in 1..=3 {
        assert_eq!(items.next().await, Some(i));
    }
    assert_eq!(items.err(), None);
    cancel.cancel();
    // Sent after the cancel but before the next poll: never yielded.
    tx.unbounded_send(4).unwrap();
    assert_eq!(items.next().await, None);
    assert_eq!(items.err(), Some(Error::Canceled));
    assert!(items.is_terminated());
    // The receiver was dropped, so the channel is closed.
    assert!(tx.unbounded_send(5).is_err());
    assert!(tx.is_closed());
    assert_eq!(items.next().await, None);
}

#[test]
fn ends_when_cancelled_mid_stream() {
    futures::executor::block_on(cancel_mid_stream());
}

#[test]
#[cfg(not(ctxtree_checks))]
fn ends_when_cancelled_while_waiting_for_an_item() {
    smol::block_on(async {
        let (tx, rx) = mpsc::unbounded::<u32>();
        let (ctx, cancel) = Context::background().with_cancel();
        let mut items = until_done(rx, &ctx);
        tx.unbounded_send(1).unwrap();
        assert_eq!(items.next().await, Some(1));
        // The next item never comes; a cancel from another thread ends it.
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            cancel.cancel();
        });
        assert_eq!(watchdog_async("next()", items.next()).await, None);
        assert_eq!(items.err(), Some(Error::Canceled));
        canceller.join().unwrap();
        drop(tx);
    });
}

#[test]
fn buffered_items_are_not_yielded_after_a_cancel() {
    futures::executor::block_on(async {
        let (tx, rx) = mpsc::unbounded::<u32>();
        let (ctx, cancel) = Context::background().with_cancel();
        let items = until_done(rx, &ctx);
        for i in 1..=3 {
            tx.unbounded_send(i).unwrap();
        }
        cancel.cancel();
        // The context is polled first: not even the buffered items come out.
        assert_eq!(items.collect::<Vec<_>>().await, Vec::<u32>::new());
    });
}

#[test]
fn passes_every_item_when_not_cancelled() {
    futures::executor::block_on(async {
        let (tx, rx) = mpsc::unbounded::<u32>();
        let (ctx, _cancel) = Context::background().with_cancel();
        for i in 0..100 {
            tx.unbounded_send(i).unwrap();
        }
        drop(tx);
        let mut items = until_done(rx, &ctx);
        let mut got = Vec::new();
        while let Some(i) = items.next().await {
            got.push(i);
        }
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        // The inner stream ended by itself.
        assert_eq!(items.err(), None);
        assert!(items.is_terminated());
        assert!(!ctx.is_done());
    });
}

#[test]
fn passes_every_item_under_a_background_context() {
    let items = until_done(stream::iter(0..1000), &Context::background());
    assert_eq!(items.size_hint(), (0, Some(1000)));
    let got: Vec<u32> = futures::executor::block_on(items.collect());
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn ends_at_once_on_a_done_context_without_polling_the_inner_stream() {
    let polls = Arc::new(AtomicUsize::new(0));
    let (ctx, cancel) = Context::background().with_cancel();
    cancel.cancel();
    let mut items = until_done(CountPolls(polls.clone()), &ctx);
    assert!(!items.is_terminated());
    assert_eq!(futures::executor::block_on(items.next()), None);
    assert_eq!(items.err(), Some(Error::Canceled));
    assert_eq!(polls.load(Ordering::SeqCst), 0);
    assert_eq!(items.size_hint(), (0, Some(0)));

    let (late, _c) = Context::background().with_deadline(Instant::now());
    let mut items = until_done(CountPolls(polls.clone()), &late);
    assert_eq!(futures::executor::block_on(items.next()), None);
    assert_eq!(items.err(), Some(Error::DeadlineExceeded));
    assert_eq!(polls.load(Ordering::SeqCst), 0);
}

#[test]
fn never_polls_the_inner_stream_after_the_end() {
    let polls = Arc::new(AtomicUsize::new(0));
    let (ctx, cancel) = Context::background().with_cancel();
    let mut items = until_done(CountPolls(polls.clone()), &ctx);
    let waker = futures::task::noop_waker();
    let mut cx = TaskContext::from_waker(&waker);
    assert_eq!(Pin::new(&mut items).poll_next(&mut cx), Poll::Pending);
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    cancel.cancel();
    for _ in 0..3 {
        assert_eq!(Pin::new(&mut items).poll_next(&mut cx), Poll::Ready(None));
    }
    assert_eq!(polls.load(Ordering::SeqCst), 1);
}

#[test]
#[cfg(not(ctxtree_checks))]
fn ends_at_a_deadline() {
    smol::block_on(async {
        let start = Instant::now();
        let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
        let mut items = until_done(stream::pending::<u8>(), &ctx);
        assert_eq!(watchdog_async("next()", items.next()).await, None);
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(took < patience(), "{took:?}");
        assert_eq!(items.err(), Some(Error::DeadlineExceeded));
    });
}

#[test]
fn ends_when_a_parent_is_cancelled() {
    futures::executor::block_on(async {
        let (parent, cancel) = Context::background().with_cancel();
        let child = parent.with_value(1u8);
        let mut items = until_done(stream::repeat(7u8), &child);
        assert_eq!(items.next().await, Some(7));
        cancel.cancel();
        assert_eq!(items.next().await, None);
        assert_eq!(items.err(), Some(Error::Canceled));
    });
}

#[test]
fn a_cancel_after_the_inner_stream_ended_changes_nothing() {
    futures::executor::block_on(async {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut items = until_done(stream::iter([1u8]), &ctx);
        assert_eq!(items.next().await, Some(1));
        assert_eq!(items.next().await, None);
        cancel.cancel();
        assert_eq!(items.next().await, None);
        assert_eq!(items.err(), None);
    });
}

#[test]
fn works_in_select_as_a_fused_stream() {
    futures::executor::block_on(async {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut items = until_done(stream::iter([1u8, 2]), &ctx);
        let mut other = stream::pending::<u8>().fuse();
        let mut got = Vec::new();
        loop {
            select! {
                x = items.next() => match x {
                    Some(x) => got.push(x),
                    None => break,
                },
                _ = other.next() => unreachable!(),
            }
        }
        cancel.cancel();
        assert_eq!(got, [1, 2]);
    });
}

/// On an executor: items through a task of its own, a cancel, a deadline.
#[cfg(not(ctxtree_checks))]
async fn on_an_executor(spawner: Spawner) {
    cancel_mid_stream().await;

    let (tx, rx) = mpsc::unbounded::<u32>();
    let (ctx, cancel) = Context::background().with_cancel();
    let consumer = spawner.spawn_join(async move {
        let mut items = until_done(rx, &ctx);
        let mut got = Vec::new();
        while let Some(i) = items.next().await {
            got.push(i);
        }
        (got, items.err())
    });
    for i in 0..3 {
        tx.unbounded_send(i).unwrap();
    }
    // Wait until the consumer has taken them, then cancel.
    while !tx.is_empty() {
        smol::Timer::after(Duration::from_millis(1)).await;
    }
    cancel.cancel();
    let (got, err) = consumer.await;
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(err, Some(Error::Canceled));

    // A deadline, driven by async-io's reactor, wakes a task of any executor.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(20));
    let mut items = until_done(stream::pending::<u8>(), &ctx);
    let end = watchdog_async("next()", items.next()).await;
    assert_eq!(end, None);
    assert_eq!(items.err(), Some(Error::DeadlineExceeded));
}

#[test]
#[cfg(not(ctxtree_checks))]
fn works_on_every_executor() {
    for exec in EXECUTORS {
        exec.block_on(on_an_executor);
    }
}

#[test]
fn is_send_and_unpin_when_the_inner_stream_is() {
    fn assert_send<T: Send>() {}
    fn assert_unpin<T: Unpin>() {}
    assert_send::<UntilDone<mpsc::UnboundedReceiver<u32>>>();
    assert_unpin::<UntilDone<mpsc::UnboundedReceiver<u32>>>();
}

#[test]
fn debug_shows_the_state() {
    let (ctx, cancel) = Context::background().with_cancel();
    let mut items = until_done(stream::pending::<u8>(), &ctx);
    assert!(format!("{items:?}").contains("terminated: false"));
    cancel.cancel();
    assert_eq!(futures::executor::block_on(items.next()), None);
    let debug = format!("{items:?}");
    assert!(debug.contains("terminated: true"), "{debug}");
    assert!(debug.contains("Canceled"), "{debug}");
}
