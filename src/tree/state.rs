//! A node's state in one word: live or done, which error, the cause, a
//! few flags, and the node's lock.
//!
//! The word is an `AtomicPtr` to the cause record (on the heap, aligned to
//! 128 bytes) with seven tag bits in the low bits. Tags are set and cleared
//! by pointer arithmetic that keeps the record's provenance, and read with a
//! pointer-to-integer cast: no integer is ever turned back into a pointer.
//! One compare-and-swap moves the word from live to done, so the first
//! reason wins and `err()` and `cause()` can never disagree or change.
//!
//! The word knows nothing of the tree: besides the reason, it records that
//! something listens (`LISTENED`), that something is attached
//! (`DEPENDENTS`), and carries one bit set at birth that it does not
//! interpret (`AUX`): readers of a live word with that bit ask their caller
//! instead.
//!
//! It is also a lock (`LOCKED`, and `PARKED` when a thread sleeps for it)
//! over one value of the owner's choosing (a node's child list), so that
//! taking the lock and setting `DEPENDENTS` is one read-modify-write. A
//! finish never takes the lock: it changes the word under a lock holder's
//! feet, keeping the lock bits, and whoever then takes the lock sees it.
//! A thread that finds the lock held spins briefly, then sleeps in
//! `park.rs` until the holder lets go.

use std::ptr;

use super::park;
use crate::error::{Cause, Error};
use crate::sync::{AtomicPtr, Ordering, UnsafeCell};

/// Set once some `Done` or waiter has registered a listener on the node's
/// event, so that a canceller only pays for a `notify` when somebody listens.
const LISTENED: usize = 0b0_0001;
const CANCELED: usize = 0b0_0010;
const DEADLINE: usize = 0b0_0100;
/// Set before something is attached to the node (a child, a callback, a
/// timer), so that a canceller knows whether more than the state must change.
const DEPENDENTS: usize = 0b0_1000;
/// Set at birth, never changed, never interpreted here: see
/// [`StateCell::err_or`].
const AUX: usize = 0b001_0000;
/// The lock is held.
const LOCKED: usize = 0b010_0000;
/// A thread sleeps (or is about to) until the lock is let go of.
const PARKED: usize = 0b100_0000;
const KIND: usize = CANCELED | DEADLINE;
/// The bits a finish keeps as they were.
const KEPT: usize = LISTENED | DEPENDENTS | AUX | LOCKED | PARKED;
const TAGS: usize = 0b111_1111;

/// How many times a thread that finds the lock held looks again before it
/// sleeps: holders only link, unlink or walk a list.
#[cfg(not(loom))]
const SPINS: u32 = 64;
/// Under loom a spin is only more interleavings: sleep at once.
#[cfg(loom)]
const SPINS: u32 = 0;

/// The cause of a finished node, on the heap so that a pointer to it fits in
/// the state word beside the tag bits (hence the alignment of 128).
#[repr(align(128))]
struct CauseRecord(Cause);

/// What the winner of a finish must still do for the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Finish {
    /// Someone listens on the node's event: notify it.
    pub(crate) listened: bool,
    /// Something may be attached: visit it.
    pub(crate) dependents: bool,
}

impl Finish {
    /// Nothing is attached and nobody listens: the state change was all.
    pub(crate) const LEAF: Finish = Finish {
        listened: false,
        dependents: false,
    };

    pub(crate) fn is_leaf(self) -> bool {
        !self.listened && !self.dependents
    }
}

/// The tag bits of a word (a pointer-to-integer cast: allowed, and it does
/// not expose the pointer's provenance to integer-to-pointer casts, of which
/// there are none).
#[inline]
fn tags(word: *mut CauseRecord) -> usize {
    word as usize & TAGS
}

/// `record` (null or a record) with the tag bits `tags`, by pointer
/// arithmetic: the result keeps `record`'s provenance.
#[inline]
fn tagged(record: *mut CauseRecord, tags: usize) -> *mut CauseRecord {
    record.cast::<u8>().wrapping_add(tags).cast()
}

/// The record pointer in a word (null if none), provenance intact.
#[inline]
fn record(word: *mut CauseRecord) -> *mut CauseRecord {
    word.cast::<u8>().wrapping_sub(tags(word)).cast()
}

#[inline]
fn decode(word: *mut CauseRecord) -> Option<Error> {
    match tags(word) & KIND {
        0 => None,
        CANCELED => Some(Error::Canceled),
        _ => Some(Error::DeadlineExceeded),
    }
}

/// A node's state word, and the value its lock guards.
pub(crate) struct StateCell<T> {
    word: AtomicPtr<CauseRecord>,
    /// Touched only through a [`Guard`] or `&mut self`.
    data: UnsafeCell<T>,
}

// SAFETY: as for a mutex: `data` is reached from a shared cell only through
// a `Guard`, and the lock lets one guard exist at a time, so sharing the
// cell hands `T` from thread to thread but never to two at once: `T: Send`
// suffices. The cause record is `Send + Sync` (`Cause` is).
unsafe impl<T: Send> Sync for StateCell<T> {}
// SAFETY: as above; the word owns the record, which is `Send`.
unsafe impl<T: Send> Send for StateCell<T> {}

/// The lock of a [`StateCell`], held: gives access to the value it guards.
pub(crate) struct Guard<'a, T> {
    cell: &'a StateCell<T>,
    /// The word as the locking CAS wrote it.
    word: *mut CauseRecord,
}

impl<T> StateCell<T> {
    /// A live, unlocked state guarding `data`; `aux` sets the uninterpreted
    /// bit for good.
    pub(crate) fn new(aux: bool, data: T) -> StateCell<T> {
        StateCell {
            word: AtomicPtr::new(tagged(ptr::null_mut(), if aux { AUX } else { 0 })),
            data: UnsafeCell::new(data),
        }
    }

    /// Takes the lock.
    #[inline]
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        self.lock_with(false)
    }

    /// Takes the lock and, in the same read-modify-write, records that
    /// something is about to be attached; also returns the error if the
    /// state was already done then, in which case the flag is not set and
    /// the caller must not attach (no canceller would visit it). A finish
    /// that comes later sees the flag, and visits under this lock.
    #[inline]
    pub(crate) fn lock_marking(&self) -> (Guard<'_, T>, Option<Error>) {
        let guard = self.lock_with(true);
        // The locking CAS only added bits: the kind is as it was then.
        let err = decode(guard.word);
        (guard, err)
    }

    /// The value, for the owner of the cell.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        // SAFETY: `&mut self`: no guard exists, and none can be made.
        self.data.with_mut(|data| unsafe { &mut *data })
    }

    #[inline]
    fn lock_with(&self, mark: bool) -> Guard<'_, T> {
        let word = match self.cas_lock(self.word.load(Ordering::Relaxed), mark) {
            Some(word) => word,
            None => self.lock_slow(mark),
        };
        Guard { cell: self, word }
    }

    /// Locks by a CAS from `current`, if that is an unlocked word; with
    /// `mark`, sets `DEPENDENTS` too if the state is live. Returns the word
    /// it wrote.
    #[inline]
    fn cas_lock(&self, current: *mut CauseRecord, mark: bool) -> Option<*mut CauseRecord> {
        if tags(current) & LOCKED != 0 {
            return None;
        }
        let mut add = LOCKED;
        if mark && tags(current) & (KIND | DEPENDENTS) == 0 {
            add |= DEPENDENTS;
        }
        let locked = tagged(current, add);
        // Acquire: what the last holder did under the lock happens before
        // what we do. Release: the flag pairs with the finishing CAS, as in
        // `mark`, a read-modify-write of this same word.
        self.word
            .compare_exchange_weak(current, locked, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| locked)
    }

    /// Spins a little, then sleeps until the lock is free, and takes it.
    #[cold]
    #[inline(never)]
    fn lock_slow(&self, mark: bool) -> *mut CauseRecord {
        let mut spins_left = SPINS;
        loop {
            let current = self.word.load(Ordering::Relaxed);
            if tags(current) & LOCKED == 0 {
                match self.cas_lock(current, mark) {
                    Some(word) => return word,
                    None => continue,
                }
            }
            if spins_left > 0 && tags(current) & PARKED == 0 {
                spins_left -= 1;
                std::hint::spin_loop();
                continue;
            }
            // Ask the holder to wake us when it lets go: it clears `PARKED`
            // as it unlocks and then wakes this key's sleepers.
            if tags(current) & PARKED == 0
                && self
                    .word
                    .compare_exchange_weak(
                        current,
                        tagged(current, PARKED),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                continue;
            }
            park::wait_while(self.key(), || {
                tags(self.word.load(Ordering::Relaxed)) & (LOCKED | PARKED) == LOCKED | PARKED
            });
        }
    }

    /// Lets go of the lock, waking the sleepers if any. `current` is the
    /// word as the locker left it, the likely value now.
    #[inline]
    fn unlock(&self, mut current: *mut CauseRecord) {
        loop {
            let unlocked = tagged(record(current), tags(current) & !(LOCKED | PARKED));
            // Release: what we did under the lock happens before what the
            // next holder does.
            match self.word.compare_exchange_weak(
                current,
                unlocked,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if tags(current) & PARKED != 0 {
            self.wake();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake(&self) {
        park::wake_all(self.key());
    }

    /// Where sleepers for this lock wait: the cell's address.
    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// Moves the state from live to done with `err` and `cause`. Returns
    /// `None` if it was already done (the first reason stays), otherwise
    /// what the winner must still do.
    pub(crate) fn finish(&self, err: Error, cause: Option<Cause>) -> Option<Finish> {
        self.finish_when(err, cause, false)
    }

    /// Like [`finish`](Self::finish), but only while nothing is attached and
    /// nobody listens (neither flag set): then finishing is the state change
    /// alone. Returns whether it finished the state.
    pub(crate) fn finish_bare(&self, err: Error, cause: Option<Cause>) -> bool {
        self.finish_when(err, cause, true).is_some()
    }

    fn finish_when(&self, err: Error, cause: Option<Cause>, bare_only: bool) -> Option<Finish> {
        let refused = |word: *mut CauseRecord| {
            tags(word) & KIND != 0 || (bare_only && tags(word) & (LISTENED | DEPENDENTS) != 0)
        };
        let mut current = self.word.load(Ordering::Acquire);
        // Checked before the record is made too: refusing costs no allocation.
        if refused(current) {
            return None;
        }
        let record = match cause {
            Some(cause) => Box::into_raw(Box::new(CauseRecord(cause))),
            None => ptr::null_mut(),
        };
        let kind = match err {
            Error::Canceled => CANCELED,
            Error::DeadlineExceeded => DEADLINE,
        };
        loop {
            if refused(current) {
                if !record.is_null() {
                    // SAFETY: `record` came from `Box::into_raw` above and
                    // was never published, so this is its only owner.
                    drop(unsafe { Box::from_raw(record) });
                }
                return None;
            }
            let flags = tags(current) & KEPT;
            // AcqRel: pairs with `mark`, a read-modify-write of this same
            // word: whichever comes second sees the other. Release also
            // publishes the record to every Acquire reader of the word.
            match self.word.compare_exchange_weak(
                current,
                tagged(record, kind | flags),
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

    /// Records that something is about to be attached; returns the error if
    /// the state is already done, in which case the caller must not attach
    /// it (no canceller would visit it).
    pub(crate) fn mark_dependent(&self) -> Option<Error> {
        self.mark(DEPENDENTS)
    }

    /// Records that a listener is registered; returns the error if the
    /// state is already done, in which case that listener need not wait.
    pub(crate) fn mark_listened(&self) -> Option<Error> {
        self.mark(LISTENED)
    }

    /// Sets `flag`, returning the error if the state is done. When the flag
    /// is already set and the state live, a load suffices: the write that
    /// set the flag precedes any finishing CAS in this word's modification
    /// order (else that write would have carried the done bits we did not
    /// see), so that CAS reports the flag.
    fn mark(&self, flag: usize) -> Option<Error> {
        let mut current = self.word.load(Ordering::Acquire);
        // `AtomicPtr` has no `fetch_or` on our MSRV: a CAS on the tag bits,
        // which keeps the provenance of whatever the word points to.
        loop {
            if tags(current) & (flag | KIND) != 0 {
                return decode(current);
            }
            // AcqRel: pairs with the finishing CAS (see `finish_when`).
            match self.word.compare_exchange_weak(
                current,
                tagged(current, flag),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return None,
                Err(now) => current = now,
            }
        }
    }

    /// Why the state is done, or `None` while live. One `Acquire` load.
    #[inline]
    pub(crate) fn err(&self) -> Option<Error> {
        decode(self.word.load(Ordering::Acquire))
    }

    /// `err_or(aux).is_some()`, written for a boolean: the live path is one
    /// load and one test.
    #[inline]
    pub(crate) fn is_done_or(&self, aux: impl FnOnce() -> Option<Error>) -> bool {
        let word = self.word.load(Ordering::Acquire);
        tags(word) & (KIND | AUX) != 0 && (tags(word) & KIND != 0 || aux().is_some())
    }

    /// [`err`](Self::err), except that a live state born with the `AUX`
    /// bit returns what `aux` says instead. One load and one test for any
    /// live state without it.
    #[inline]
    pub(crate) fn err_or(&self, aux: impl FnOnce() -> Option<Error>) -> Option<Error> {
        let word = self.word.load(Ordering::Acquire);
        if tags(word) & (AUX | KIND) != AUX {
            return decode(word);
        }
        aux()
    }

    /// Whether the `DEPENDENTS` flag is set: something was attached, or was
    /// about to be when the state was found done.
    pub(crate) fn has_dependents(&self) -> bool {
        tags(self.word.load(Ordering::Acquire)) & DEPENDENTS != 0
    }

    /// The error and cause of a done state, or `None` while live.
    pub(crate) fn reason(&self) -> Option<(Error, Option<Cause>)> {
        let word = self.word.load(Ordering::Acquire);
        let err = decode(word)?;
        Some((err, Self::cause_in(word)))
    }

    /// The cause given when the state finished, if one was.
    pub(crate) fn given_cause(&self) -> Option<Cause> {
        Self::cause_in(self.word.load(Ordering::Acquire))
    }

    /// The cause in `word`, a word loaded (Acquire) from this cell.
    fn cause_in(word: *mut CauseRecord) -> Option<Cause> {
        let record = record(word);
        if record.is_null() {
            return None;
        }
        // SAFETY: a non-null record was published by the successful CAS in
        // `finish_when` (the Acquire load synchronizes with it), is never
        // replaced (the word is done), and is only freed by `drop`, which
        // needs `&mut self`, so not while the caller's `&self` lives.
        Some(unsafe { &*record }.0.clone())
    }
}

impl<T> Guard<'_, T> {
    /// Calls `f` with the guarded value.
    #[inline]
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: this guard holds the lock, so no other guard exists and
        // no `&mut` to the cell does (one would forbid our `&`): the value
        // is ours alone until the guard is dropped, and the reference does
        // not outlive this call.
        self.cell.data.with_mut(|data| f(unsafe { &mut *data }))
    }
}

impl<T> Drop for Guard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.cell.unlock(self.word);
    }
}

impl<T> Drop for StateCell<T> {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        let word = *self.word.get_mut();
        #[cfg(loom)]
        let word = self.word.with_mut(|word| *word);
        let record = record(word);
        if !record.is_null() {
            // SAFETY: the record was made by `Box::into_raw` in
            // `finish_when`, is owned by this cell alone, and `&mut self`
            // means nobody reads it any more.
            drop(unsafe { Box::from_raw(record) });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn cause(msg: &'static str) -> Cause {
        Arc::new(std::io::Error::other(msg))
    }

    #[test]
    fn first_finish_wins_and_keeps_its_cause() {
        let s = StateCell::new(false, ());
        assert_eq!(s.err(), None);
        assert!(s.reason().is_none());
        let f = s.finish(Error::DeadlineExceeded, Some(cause("first")));
        assert_eq!(f, Some(Finish::LEAF));
        assert!(s.finish(Error::Canceled, Some(cause("second"))).is_none());
        assert!(!s.finish_bare(Error::Canceled, None));
        assert_eq!(s.err(), Some(Error::DeadlineExceeded));
        assert_eq!(s.given_cause().unwrap().to_string(), "first");
        let (err, c) = s.reason().unwrap();
        assert_eq!(err, Error::DeadlineExceeded);
        assert_eq!(c.unwrap().to_string(), "first");
    }

    #[test]
    fn finish_without_cause() {
        let s = StateCell::new(false, ());
        assert!(s.finish(Error::Canceled, None).is_some());
        assert_eq!(s.err(), Some(Error::Canceled));
        assert!(s.given_cause().is_none());
    }

    #[test]
    fn flags_are_reported_to_the_winner() {
        let s = StateCell::new(false, ());
        assert_eq!(s.mark_listened(), None);
        assert_eq!(s.mark_listened(), None);
        assert!(!s.has_dependents());
        assert_eq!(s.mark_dependent(), None);
        assert!(s.has_dependents());
        assert!(
            !s.finish_bare(Error::Canceled, None),
            "flags refuse a bare finish"
        );
        let f = s.finish(Error::Canceled, Some(cause("c"))).unwrap();
        assert!(f.listened && f.dependents);
        assert!(s.has_dependents());
        assert_eq!(s.mark_dependent(), Some(Error::Canceled));
        assert_eq!(s.mark_listened(), Some(Error::Canceled));
        assert_eq!(s.given_cause().unwrap().to_string(), "c");
    }

    #[test]
    fn bare_finish_when_nothing_is_attached() {
        let s = StateCell::new(false, ());
        assert!(s.finish_bare(Error::DeadlineExceeded, Some(cause("bare"))));
        assert_eq!(s.err(), Some(Error::DeadlineExceeded));
        assert_eq!(s.given_cause().unwrap().to_string(), "bare");
    }

    #[test]
    fn aux_bit_asks_the_caller_only_while_live() {
        let plain = StateCell::new(false, ());
        assert_eq!(plain.err_or(|| unreachable!()), None);
        assert!(!plain.is_done_or(|| unreachable!()));

        let aux = StateCell::new(true, ());
        assert_eq!(aux.err(), None);
        assert_eq!(
            aux.err_or(|| Some(Error::DeadlineExceeded)),
            Some(Error::DeadlineExceeded)
        );
        assert!(aux.is_done_or(|| Some(Error::Canceled)));
        assert!(!aux.is_done_or(|| None));
        assert_eq!(aux.mark_listened(), None);
        let f = aux.finish(Error::Canceled, Some(cause("aux"))).unwrap();
        assert!(f.listened && !f.dependents);
        assert_eq!(aux.err_or(|| unreachable!()), Some(Error::Canceled));
        assert!(aux.is_done_or(|| unreachable!()));
        assert_eq!(aux.given_cause().unwrap().to_string(), "aux");
    }

    /// Racing finishes with different causes on several threads: one wins,
    /// everyone then reads the same reason, and the losers' records are
    /// freed (Miri reports a leak otherwise).
    #[test]
    fn racing_finishes_agree() {
        let rounds = if cfg!(miri) { 5 } else { 500 };
        let threads = 3;
        for _ in 0..rounds {
            let s = Arc::new(StateCell::new(false, ()));
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let (s, b) = (s.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        if i == 0 {
                            let _ = s.mark_dependent();
                        }
                        let won = s
                            .finish(Error::Canceled, Some(cause(["a", "b", "c"][i])))
                            .is_some();
                        (won, s.given_cause().unwrap().to_string())
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(results.iter().filter(|(won, _)| *won).count(), 1);
            let first = &results[0].1;
            assert!(results.iter().all(|(_, c)| c == first));
        }
    }

    /// Threads that take the lock in turn and change the value under it
    /// with a yield in between: no change is lost. With the yield, waiters
    /// find the lock held, spin, and sleep (`PARKED`).
    #[test]
    fn lock_excludes_across_threads() {
        let (threads, rounds) = if cfg!(miri) { (3, 20) } else { (4, 2_000) };
        let s = Arc::new(StateCell::new(false, 0usize));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        let mut guard = s.lock();
                        let seen = guard.with(|n| *n);
                        std::thread::yield_now();
                        guard.with(|n| *n = seen + 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(s.lock().with(|n| *n), threads * rounds);
        assert_eq!(tags(s.word.load(Ordering::Relaxed)) & (LOCKED | PARKED), 0);
    }

    /// A thread that waits long enough sleeps, and the holder wakes it when
    /// it lets go.
    #[test]
    fn a_sleeper_is_woken_when_the_lock_is_let_go() {
        let s = Arc::new(StateCell::new(false, 0usize));
        let mut guard = s.lock();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.lock().with(|n| *n));
        // Wait for the other thread to ask to be woken: a signal, not a
        // sleep of a guessed length.
        while tags(s.word.load(Ordering::Relaxed)) & PARKED == 0 {
            std::thread::yield_now();
        }
        guard.with(|n| *n = 7);
        drop(guard);
        assert_eq!(t.join().unwrap(), 7);
        assert_eq!(tags(s.word.load(Ordering::Relaxed)) & (LOCKED | PARKED), 0);
    }

    /// Locking with a mark sets `DEPENDENTS` only on a live state, and
    /// reports a done one; a finish under a held lock keeps the lock and
    /// reports the flag.
    #[test]
    fn lock_marking_and_finish_share_the_word() {
        let s = StateCell::new(false, ());
        {
            let (_guard, err) = s.lock_marking();
            assert_eq!(err, None);
            assert!(s.has_dependents());
            let f = s.finish(Error::Canceled, Some(cause("held"))).unwrap();
            assert!(f.dependents && !f.listened);
            assert_ne!(tags(s.word.load(Ordering::Relaxed)) & LOCKED, 0);
        }
        assert_eq!(tags(s.word.load(Ordering::Relaxed)) & LOCKED, 0);
        assert_eq!(s.given_cause().unwrap().to_string(), "held");
        let (_guard, err) = s.lock_marking();
        assert_eq!(err, Some(Error::Canceled));

        let done = StateCell::new(false, ());
        assert!(done.finish(Error::DeadlineExceeded, None).is_some());
        let (guard, err) = done.lock_marking();
        assert_eq!(err, Some(Error::DeadlineExceeded));
        drop(guard);
        assert!(!done.has_dependents(), "a done state is not flagged");
    }

    /// Races `mark` (on a spawned thread) against a finish, many times:
    /// either the marker saw the state done, or the finisher saw the flag
    /// that `flag` picks out of its `Finish`.
    fn race_mark_against_finish(
        mark: fn(&StateCell<()>) -> Option<Error>,
        flag: fn(Finish) -> bool,
    ) {
        let rounds = if cfg!(miri) { 10 } else { 1_000 };
        for _ in 0..rounds {
            let s = Arc::new(StateCell::new(false, ()));
            let barrier = Arc::new(Barrier::new(2));
            let (s2, b2) = (s.clone(), barrier.clone());
            let t = std::thread::spawn(move || {
                b2.wait();
                mark(&s2)
            });
            barrier.wait();
            let finish = s.finish(Error::Canceled, None).unwrap();
            let seen = t.join().unwrap();
            assert!(flag(finish) || seen == Some(Error::Canceled));
        }
    }

    /// Locks with marks against finishes: invariant 5 of the tree, when one
    /// CAS both locks and flags.
    #[test]
    fn lock_marking_and_finish_see_each_other() {
        race_mark_against_finish(|s| s.lock_marking().1, |f| f.dependents);
    }

    /// A listener flag against a finish: the protocol that keeps `Done`
    /// from losing a wakeup.
    #[test]
    fn mark_and_finish_see_each_other() {
        race_mark_against_finish(StateCell::mark_listened, |f| f.listened);
    }
}
