//! Timers: the `async-io` timer that cancels a node at an instant, whether
//! or not anyone polls: a deadline node's own deadline, and the end of a
//! grace period (`grace.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::Instant;

use super::node_ref::Backref;
use super::{walk, Node};
use crate::error::{Cause, Error};
use crate::sync::{lock, Mutex, Timer};

/// An instant, the reason to cancel a node with when it passes, and the
/// timer that does it: [`Error::DeadlineExceeded`] and the deadline's cause
/// for a deadline node, the parent's reason for a grace period. It is its
/// own waker, so the reactor cancels the node with nobody polling; it
/// reaches the node through a back-reference that the node revokes when its
/// last handle goes, so a pending timer never keeps a dropped node alive.
pub(crate) struct DeadlineTimer {
    pub(super) node: Backref<Node>,
    pub(crate) when: Instant,
    err: Error,
    cause: Option<Cause>,
    timer: Mutex<Option<Timer>>,
}

impl DeadlineTimer {
    /// Not pointing at its node yet, not armed; when `when` passes it
    /// cancels the node with `err` and `cause`.
    pub(super) fn new(when: Instant, err: Error, cause: Option<Cause>) -> DeadlineTimer {
        DeadlineTimer {
            node: Backref::new(),
            when,
            err,
            cause,
            timer: Mutex::new(None),
        }
    }

    /// Registers the timer with the reactor, or cancels now if its instant
    /// has already passed. The caller has set `node`'s `DEPENDENTS` flag
    /// (invariant 5), so that a cancel finishing the node from then on
    /// disarms the timer.
    pub(super) fn arm(self: &Arc<Self>, node: &Node) {
        let mut slot = lock(&self.timer);
        // A cancel that raced us has already disarmed (under this lock,
        // after its CAS): then there is nothing to register.
        if node.state.err().is_some() {
            return;
        }
        let mut timer = Timer::at(self.when);
        let waker = Waker::from(Arc::clone(self));
        let mut cx = std::task::Context::from_waker(&waker);
        match Pin::new(&mut timer).poll(&mut cx) {
            Poll::Pending => *slot = Some(timer),
            Poll::Ready(_) => {
                drop(slot);
                self.expire();
            }
        }
    }

    /// Deregisters the timer from the reactor (dropping an `async_io::Timer`
    /// does that) and breaks the timer → waker → self cycle.
    // Under loom the stand-in timer has no `Drop`; the explicit drop is for
    // async-io's, outside our lock.
    #[cfg_attr(loom, allow(clippy::drop_non_drop))]
    pub(super) fn disarm(&self) {
        let timer = lock(&self.timer).take();
        drop(timer);
    }

    fn expire(&self) {
        if let Some(node) = self.node.acquire() {
            // On the reactor's thread there is nobody to resume a callback's
            // panic to; the panic hook has already reported it.
            drop(walk::cancel(&node, self.err, self.cause.clone()));
        }
        // `node`, dropped above, may have been the last handle: no lock held.
    }
}

impl Wake for DeadlineTimer {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if Instant::now() >= self.when {
            self.expire();
            return;
        }
        // Woken early (the reactor never does this, but a waker may be
        // woken by anyone): poll again to stay registered.
        let mut slot = lock(&self.timer);
        if let Some(timer) = slot.as_mut() {
            let waker = Waker::from(Arc::clone(self));
            let mut cx = std::task::Context::from_waker(&waker);
            if Pin::new(timer).poll(&mut cx).is_ready() {
                drop(slot);
                self.expire();
            }
        }
    }
}
