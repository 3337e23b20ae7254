//! Where a thread sleeps while another holds a node's lock (`state.rs`)
//! for longer than a short spin.
//!
//! Nodes are many and contention is rare, so no node carries a place to
//! sleep: a fixed table of condition variables, shared by all nodes, is
//! picked by the node's address. A wake-up for one node may wake threads
//! waiting for another that shares the slot; each checks its condition
//! again and goes back to sleep. Safe code only.

use crate::sync::{lock, Condvar, Mutex};

/// How many slots: enough that unrelated contended nodes rarely share one.
const SLOTS: usize = 64;

struct Slot {
    mutex: Mutex<()>,
    cond: Condvar,
}

#[cfg(not(loom))]
#[allow(clippy::declare_interior_mutable_const)] // only as an array's repeated item
const EMPTY: Slot = Slot {
    mutex: Mutex::new(()),
    cond: Condvar::new(),
};

#[cfg(not(loom))]
static SLOTS_TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

#[cfg(loom)]
loom::lazy_static! {
    static ref SLOTS_TABLE: Vec<Slot> = (0..SLOTS)
        .map(|_| Slot { mutex: Mutex::new(()), cond: Condvar::new() })
        .collect();
}

/// The slot of the thing at address `key`.
fn slot(key: usize) -> &'static Slot {
    // Nodes are at least 64 bytes apart: drop the bits they share.
    &SLOTS_TABLE[(key >> 6) % SLOTS]
}

/// Sleeps until woken by [`wake_all`] with the same `key`, unless `asleep`
/// (checked under the slot's mutex, so that no wake-up is lost in between)
/// says there is nothing to wait for. May return early: the caller checks
/// again.
pub(crate) fn wait_while(key: usize, asleep: impl FnOnce() -> bool) {
    let slot = slot(key);
    let guard = lock(&slot.mutex);
    if asleep() {
        // Poison cannot happen (no code that can panic runs under this
        // mutex), and an early return is allowed anyway.
        drop(slot.cond.wait(guard));
    }
}

/// Wakes every thread sleeping in [`wait_while`] for `key` (and any other
/// sharing its slot). The caller has already changed what their `asleep`
/// checks: taking the slot's mutex here orders that change after any check
/// still under way, so a sleeper either saw it or is asleep and woken now.
pub(crate) fn wake_all(key: usize) {
    let slot = slot(key);
    drop(lock(&slot.mutex));
    slot.cond.notify_all();
}
