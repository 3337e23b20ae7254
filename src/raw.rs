//! Every `unsafe` block of the crate lives here: the node state word (which
//! owns a heap record for the cause) and the intrusive child list.
//!
//! Both expose safe methods. Their soundness rests on two invariants that the
//! tree module (`node.rs`) upholds and cites:
//!
//! * **L1**: a node's [`Links`] are read or written only while the lock of
//!   the [`ChildList`] it is linked into (its *link parent*) is held, and a
//!   node is pushed into at most one list in its life.
//! * **L2**: every pointer in a list was made by `Weak::into_raw` and owns
//!   that weak count, which it gives back exactly once: when it is unlinked
//!   or drained.

use std::cell::Cell;
use std::ptr;
use std::sync::{Arc, Weak};

use crate::error::{Cause, Error};
use crate::node::CancelNode;
use crate::sync::{AtomicUsize, Ordering};

/// Set once some `Done` or waiter has registered a listener on the node's
/// event, so that `cancel` only pays for a `notify` when somebody listens.
const LISTENED: usize = 0b0001;
const CANCELED: usize = 0b0010;
const DEADLINE: usize = 0b0100;
/// Set before a child is linked, a callback registered or a timer armed, so
/// that a canceller knows whether the node needs more than its state changed.
const DEPENDENTS: usize = 0b1000;
/// Set from birth on a merged node whose second parent can be done, so
/// that reading a live node's state costs one load and one test whether or
/// not it is merged (`merge.rs`: such a node reads its second parent's
/// state too). Only while live: finishing clears it, and the bit then
/// belongs to the cause record's address.
const SECOND: usize = 0b1_0000;
const KIND: usize = CANCELED | DEADLINE;
const RECORD: usize = !0b1111;

/// The cause of a finished node, on the heap so that its address fits in the
/// state word next to the flag bits (hence the alignment of 16).
#[repr(align(16))]
struct CauseRecord(Cause);

/// What the winner of `finish` must still do for the node.
#[derive(Clone, Copy)]
pub(crate) struct Finish {
    /// Someone listens on the event: notify it.
    pub(crate) listened: bool,
    /// Children, callbacks or a timer may be attached: visit them.
    pub(crate) dependents: bool,
}

impl Finish {
    /// Nothing to do beyond the state change.
    pub(crate) const LEAF: Finish = Finish {
        listened: false,
        dependents: false,
    };

    /// Nothing is attached and nobody listens: changing the state was all.
    fn is_leaf(self) -> bool {
        !self.listened && !self.dependents
    }
}

/// A node's state in one word: live or done, which error, the cause record,
/// and whether anyone listens. One compare-and-swap decides the first reason,
/// so `err()` and `cause()` can never disagree or change afterwards.
pub(crate) struct StateCell {
    word: AtomicUsize,
}

impl StateCell {
    /// A live state; `second`: the node is merged with a second parent
    /// that can be done, whose state [`err_or`](Self::err_or) must consult.
    pub(crate) fn new(second: bool) -> StateCell {
        StateCell {
            word: AtomicUsize::new(if second { SECOND } else { 0 }),
        }
    }

    /// Moves the node from live to done with `err` and `cause`. Returns
    /// `None` if it was already done (the first reason stays), otherwise what
    /// the winner must still do.
    pub(crate) fn finish(&self, err: Error, cause: Option<Cause>) -> Option<Finish> {
        self.finish_when(err, cause, false)
    }

    /// Like [`finish`](Self::finish), but only while nothing is attached and
    /// nobody listens (no flag set): then finishing is the state change
    /// alone, and the caller has nothing else to do. Returns whether it
    /// finished the node.
    pub(crate) fn finish_bare(&self, err: Error, cause: Option<Cause>) -> bool {
        self.finish_when(err, cause, true).is_some()
    }

    fn finish_when(&self, err: Error, cause: Option<Cause>, bare_only: bool) -> Option<Finish> {
        let refused =
            |word: usize| word & KIND != 0 || (bare_only && word & (LISTENED | DEPENDENTS) != 0);
        let mut current = self.word.load(Ordering::Acquire);
        // Checked before the record is made too: a done node (or, for a bare
        // finish, one with something attached) costs no allocation.
        if refused(current) {
            return None;
        }
        let record = match cause {
            Some(cause) => Box::into_raw(Box::new(CauseRecord(cause))) as usize,
            None => 0,
        };
        let kind = match err {
            Error::Canceled => CANCELED,
            Error::DeadlineExceeded => DEADLINE,
        };
        loop {
            let flags = current & (LISTENED | DEPENDENTS);
            if refused(current) {
                if record != 0 {
                    // SAFETY: `record` came from `Box::into_raw` above and was
                    // never published, so this is its only owner.
                    drop(unsafe { Box::from_raw(record as *mut CauseRecord) });
                }
                return None;
            }
            // AcqRel: pairs with `mark_listened` and `mark_dependent`, which
            // are read-modify-writes of this same word: whichever comes
            // second sees the other (see `Done::poll`).
            match self.word.compare_exchange_weak(
                current,
                record | kind | flags,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Finish {
                        listened: flags & LISTENED != 0,
                        dependents: flags & DEPENDENTS != 0,
                    })
                }
                Err(now) => current = now,
            }
        }
    }

    /// Records that a child, callback or timer is about to be attached;
    /// returns the error if the node is already done, in which case the
    /// caller must not attach it (nobody would visit it).
    pub(crate) fn mark_dependent(&self) -> Option<Error> {
        self.mark(DEPENDENTS)
    }

    /// Sets `flag`, returning the error if the node is done. When the flag
    /// is already set and the node live, a load suffices: the write that set
    /// the flag precedes any finishing CAS in this word's modification order
    /// (else it would have carried the done bits we did not see), so that
    /// CAS will report the flag; and if the CAS happened before our caller's
    /// attach under a lock or event-listener's lock, that lock's ordering
    /// would have shown us the done bits.
    fn mark(&self, flag: usize) -> Option<Error> {
        let current = self.word.load(Ordering::Acquire);
        if current & flag != 0 || current & KIND != 0 {
            return decode(current);
        }
        decode(self.word.fetch_or(flag, Ordering::AcqRel))
    }

    /// Records that a listener is registered; returns the error if the node
    /// is already done, in which case that listener need not wait.
    pub(crate) fn mark_listened(&self) -> Option<Error> {
        self.mark(LISTENED)
    }

    /// One `Acquire` load.
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        decode(self.word.load(Ordering::Acquire))
    }

    /// `err_or(second).is_some()`, written for a boolean: the live path is
    /// one load and one test.
    #[inline]
    pub(crate) fn is_done_or(&self, second: impl FnOnce() -> Option<Error>) -> bool {
        let word = self.word.load(Ordering::Acquire);
        word & (KIND | SECOND) != 0 && (word & KIND != 0 || second().is_some())
    }

    /// [`err`](Self::err), except that a live node born with a second
    /// parent asks `second` instead. One load and one test for any live
    /// node without one.
    #[inline]
    pub(crate) fn err_or(&self, second: impl FnOnce() -> Option<Error>) -> Option<Error> {
        let word = self.word.load(Ordering::Acquire);
        if word & SECOND == 0 || word & KIND != 0 {
            return decode(word);
        }
        second()
    }

    /// The cause given when the node finished, if one was.
    pub(crate) fn given_cause(&self) -> Option<Cause> {
        let record = record(self.word.load(Ordering::Acquire));
        if record == 0 {
            return None;
        }
        // SAFETY: a non-zero record address was published by the successful
        // CAS in `finish` (the Acquire load synchronizes with it) and is only
        // freed in `drop`, which cannot run while `&self` is alive.
        let record = unsafe { &*(record as *const CauseRecord) };
        Some(record.0.clone())
    }
}

/// The cause record's address in a state word, or 0: a live word has none
/// (its `SECOND` bit is no address).
fn record(word: usize) -> usize {
    if word & KIND == 0 {
        0
    } else {
        word & RECORD
    }
}

#[inline]
fn decode(word: usize) -> Option<Error> {
    match word & KIND {
        0 => None,
        CANCELED => Some(Error::Canceled),
        _ => Some(Error::DeadlineExceeded),
    }
}

impl Drop for StateCell {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        let record = record(*self.word.get_mut());
        // Loom cannot see the happens-before that `Arc`'s own count gives
        // the last drop (std's atomics are invisible to it), so an unsynced
        // `with_mut` would be a false alarm; a load is what loom can check.
        #[cfg(loom)]
        let record = record(self.word.load(Ordering::Acquire));
        if record != 0 {
            // SAFETY: the record was made by `Box::into_raw` in `finish`, is
            // owned by this cell alone, and `&mut self` means nobody reads it.
            drop(unsafe { Box::from_raw(record as *mut CauseRecord) });
        }
    }
}

/// A node's place in its link parent's child list. Guarded by invariant L1.
pub(crate) struct Links {
    prev: Cell<*const CancelNode>,
    next: Cell<*const CancelNode>,
    linked: Cell<bool>,
}

impl Links {
    pub(crate) fn new() -> Links {
        Links {
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            linked: Cell::new(false),
        }
    }
}

// SAFETY: the cells are only touched under the link parent's lock (L1), so
// sharing `Links` between threads never races.
unsafe impl Sync for Links {}
// SAFETY: the raw pointers are plain addresses guarded by L1 and L2; moving
// them to another thread is harmless.
unsafe impl Send for Links {}

/// The intrusive list of a node's live children. Lives inside the node's
/// mutex, so `&mut ChildList` means that lock is held (L1).
pub(crate) struct ChildList {
    head: *const CancelNode,
}

// SAFETY: the list is only reached through its owner's mutex; the pointers it
// holds are weak references (L2), which may move between threads.
unsafe impl Send for ChildList {}

impl ChildList {
    pub(crate) fn new() -> ChildList {
        ChildList { head: ptr::null() }
    }

    /// Links `child` at the front, holding a weak reference to it (L2), so a
    /// parent never keeps a child alive. No allocation.
    pub(crate) fn push(&mut self, child: &Arc<CancelNode>) {
        let raw = Weak::into_raw(Arc::downgrade(child));
        let links = child.links();
        debug_assert!(!links.linked.get());
        links.prev.set(ptr::null());
        links.next.set(self.head);
        links.linked.set(true);
        if !self.head.is_null() {
            // SAFETY: `head` is linked in this list, so its weak count (L2)
            // keeps its memory alive, and we hold the lock (L1).
            unsafe { (*self.head).links().prev.set(raw) };
        }
        self.head = raw;
    }

    /// Unlinks `child` in O(1) if it is still linked here, and gives back the
    /// list's weak reference. The caller passes a child whose link parent
    /// owns this list (L1).
    pub(crate) fn unlink(&mut self, child: &CancelNode) {
        let links = child.links();
        if !links.linked.get() {
            return;
        }
        let prev = links.prev.get();
        let next = links.next.get();
        // The pointer `push` made, read back from the list so that it keeps
        // the provenance of the whole allocation that `Weak::from_raw` needs.
        let raw = if prev.is_null() {
            std::mem::replace(&mut self.head, next)
        } else {
            // SAFETY: `prev` is linked in this list (weak count alive, L2) and
            // we hold the lock (L1).
            let prev_links = unsafe { (*prev).links() };
            prev_links.next.replace(next)
        };
        debug_assert!(ptr::eq(raw, child));
        if !next.is_null() {
            // SAFETY: as for `prev`.
            unsafe { (*next).links().prev.set(prev) };
        }
        links.linked.set(false);
        // SAFETY: `raw` is the pointer `push` made with `Weak::into_raw`; this
        // gives its weak count back, once, as it leaves the list (L2).
        drop(unsafe { Weak::from_raw(raw) });
    }

    /// Empties the list, finishing every child with `err` and `cause`. A
    /// child that nobody listens to and that has nothing attached is done
    /// right here; the others are pushed onto `out` for the caller to visit
    /// with no lock held. A child whose last handle is being dropped right
    /// now needs no visit: nothing can be attached to it, and its own drop
    /// finds itself unlinked.
    pub(crate) fn drain_into(
        &mut self,
        err: Error,
        cause: &Option<Cause>,
        out: &mut Vec<(Arc<CancelNode>, Finish)>,
    ) {
        let mut cur = std::mem::replace(&mut self.head, ptr::null());
        while !cur.is_null() {
            // SAFETY: `cur` is linked in this list, so it owns a weak count
            // (L2) that keeps the memory valid; we hold the lock (L1). Taking
            // the `Weak` back transfers that count to `weak`, released below.
            let weak = unsafe { Weak::from_raw(cur) };
            let child = weak_node(&weak);
            let links = child.links();
            let next = links.next.get();
            links.linked.set(false);
            if let Some(finish) = child.finish_as_child(err, cause) {
                if !finish.is_leaf() {
                    if let Some(child) = weak.upgrade() {
                        out.push((child, finish));
                    }
                }
            }
            drop(weak);
            cur = next;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }
}

fn weak_node(weak: &Weak<CancelNode>) -> &CancelNode {
    // SAFETY: the weak count held by `weak` keeps the allocation, and a node's
    // fields are not dropped before it unlinks itself under the lock the
    // caller holds (L1), so the node is valid for as long as `weak` is
    // borrowed, even if its last strong handle is being dropped.
    unsafe { &*weak.as_ptr() }
}
