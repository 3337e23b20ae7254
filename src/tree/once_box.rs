//! A box that is set at most once and then read without a lock: where a
//! node keeps what few nodes need (an own deadline's timer, a second parent,
//! a grace period, callbacks), behind one word, so that a plain node pays
//! eight bytes for all of it.
//!
//! Set at birth for the nodes that need it from the start; set on first use
//! by whichever thread gets there first for the rest (a compare-and-swap
//! from null, the loser dropping its own box). Never replaced or cleared
//! afterwards, and freed only with the `OnceBox`, which takes `&mut self`:
//! so a reference handed out by [`get`](OnceBox::get) is valid for as long
//! as the `OnceBox` is borrowed.
//!
//! A value set at birth may also live outside any box of the `OnceBox`'s
//! own, in memory its owner manages (the rest of the node's allocation):
//! the word then carries a tag bit, and the `OnceBox` never frees it.
//!
//! The word carries one more bit, set at birth and never changed, that the
//! `OnceBox` does not interpret ([`marked`](OnceBox::marked)): a node
//! keeps there a fact it has no other room for.
//!
//! This module knows nothing of the tree.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::sync::{AtomicPtr, Ordering};

/// Set in the word when the value is not the `OnceBox`'s to free.
const BORROWED: usize = 1;
/// Set at birth, never changed, never interpreted here.
const MARK: usize = 2;
const TAGS: usize = BORROWED | MARK;

/// A `Box<T>`, set at most once, readable from any thread.
pub(crate) struct OnceBox<T> {
    ptr: AtomicPtr<T>,
    /// It owns a `T` (for drop check; `Send`/`Sync` are stated below).
    _owns: PhantomData<Box<T>>,
}

// SAFETY: the box is moved with the `OnceBox`, and dropped where it is:
// as `Box<T>` asks, `T: Send`.
unsafe impl<T: Send> Send for OnceBox<T> {}
// SAFETY: through `&OnceBox`, any thread may read the `T` (`T: Sync`) and
// may make the `T` that another thread later reads and drops (`T: Send`).
unsafe impl<T: Send + Sync> Sync for OnceBox<T> {}

impl<T> OnceBox<T> {
    const TAGS_FIT: () = assert!(std::mem::align_of::<T>() > TAGS, "tag bits taken");

    /// A `OnceBox` holding `value`, or nothing yet.
    pub(crate) fn new(value: Option<Box<T>>) -> OnceBox<T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::TAGS_FIT;
        OnceBox {
            ptr: AtomicPtr::new(value.map_or(ptr::null_mut(), Box::into_raw)),
            _owns: PhantomData,
        }
    }

    /// An empty `OnceBox` whose [`marked`](Self::marked) bit is set.
    pub(crate) fn new_marked() -> OnceBox<T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::TAGS_FIT;
        OnceBox {
            // An address with no provenance: it is never dereferenced.
            ptr: AtomicPtr::new(ptr::null_mut::<u8>().wrapping_add(MARK).cast()),
            _owns: PhantomData,
        }
    }

    /// Whether it was born with the mark ([`new_marked`](Self::new_marked)).
    #[inline]
    pub(crate) fn marked(&self) -> bool {
        // A pointer-to-integer cast: reads the tag, exposes nothing.
        self.ptr.load(Ordering::Relaxed) as usize & MARK != 0
    }

    /// A `OnceBox` holding the value at `value`, which it never frees.
    ///
    /// # Safety
    ///
    /// `value` points at a live `T`, with the provenance to read it, that
    /// outlives the `OnceBox` and that nothing writes to or makes `&mut` to
    /// while the `OnceBox` lives. Its owner drops it.
    pub(crate) unsafe fn borrowed(value: NonNull<T>) -> OnceBox<T> {
        // `T` is aligned to at least 4 (checked at compile time), so the tag
        // bits are free; set by pointer arithmetic, which keeps the
        // provenance.
        #[allow(clippy::let_unit_value)]
        let () = Self::TAGS_FIT;
        OnceBox {
            ptr: AtomicPtr::new(value.as_ptr().cast::<u8>().wrapping_add(BORROWED).cast()),
            _owns: PhantomData,
        }
    }

    /// Whether the value is borrowed ([`borrowed`](Self::borrowed)), not
    /// owned.
    pub(crate) fn is_borrowed(&self) -> bool {
        // A pointer-to-integer cast: reads the tag, exposes nothing.
        self.ptr.load(Ordering::Relaxed) as usize & BORROWED != 0
    }

    /// The value, if it has been set.
    #[inline]
    pub(crate) fn get(&self) -> Option<&T> {
        // Acquire: pairs with the Release of the CAS that published it, so
        // the value's contents are visible.
        let ptr = untagged(self.ptr.load(Ordering::Acquire));
        // SAFETY: a non-null pointer came from `Box::into_raw` (in `new` or
        // `get_or_init`) and is never replaced; the box is freed only by
        // `drop`, which needs `&mut self`, so not while `&self` is borrowed.
        // A borrowed value outlives `self` (the contract of `borrowed`).
        // Only shared references to it are ever made through `&self`.
        unsafe { ptr.as_ref() }
    }

    /// The value, set to `make()` first if it was not set.
    pub(crate) fn get_or_init(&self, make: impl FnOnce() -> Box<T>) -> &T {
        // Acquire: as in `get`.
        let empty = self.ptr.load(Ordering::Acquire);
        // SAFETY: as in `get`.
        if let Some(value) = unsafe { untagged(empty).as_ref() } {
            return value;
        }
        let new = Box::into_raw(make());
        // Keeps the mark: the word is empty, so its only tag is that.
        let word = new.cast::<u8>().wrapping_add(empty as usize & MARK).cast();
        match self
            .ptr
            .compare_exchange(empty, word, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: published by this CAS, never replaced, freed only by
            // `drop` (`&mut self`), as in `get`.
            Ok(_) => unsafe { &*new },
            Err(won) => {
                // SAFETY: `new` came from `Box::into_raw` above and was never
                // published: this is its only owner.
                drop(unsafe { Box::from_raw(new) });
                // SAFETY: the word changed from empty, and is only ever set
                // once, so `won` holds the published box (non-null once
                // untagged), visible through the Acquire on failure; valid
                // as in `get`.
                unsafe { &*untagged(won) }
            }
        }
    }

    fn load_mut(&mut self) -> *mut T {
        #[cfg(not(loom))]
        let ptr = *self.ptr.get_mut();
        #[cfg(loom)]
        let ptr = self.ptr.with_mut(|ptr| *ptr);
        ptr
    }
}

/// The pointer in a word, without its tags, provenance intact.
#[inline]
fn untagged<T>(word: *mut T) -> *mut T {
    word.cast::<u8>().wrapping_sub(word as usize & TAGS).cast()
}

impl<T> Drop for OnceBox<T> {
    fn drop(&mut self) {
        let word = self.load_mut();
        let ptr = untagged(word);
        // A borrowed value is its owner's to drop.
        if !ptr.is_null() && word as usize & BORROWED == 0 {
            // SAFETY: the pointer came from `Box::into_raw` and is owned by
            // `self` alone; `&mut self` means nobody reads it any more.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::sync::{Arc, Barrier};

    /// Counts its drops.
    struct Counted(Arc<StdAtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn set_at_birth_or_on_first_use_and_dropped_once() {
        let drops = Arc::new(StdAtomicUsize::new(0));
        let born = OnceBox::new(Some(Box::new(Counted(drops.clone()))));
        assert!(born.get().is_some());
        // Already set: `make` is not called.
        born.get_or_init(|| unreachable!());
        let empty = OnceBox::<Counted>::new(None);
        assert!(empty.get().is_none());
        empty.get_or_init(|| Box::new(Counted(drops.clone())));
        assert!(empty.get().is_some());
        drop((born, empty));
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn a_borrowed_value_is_read_but_never_freed() {
        let drops = Arc::new(StdAtomicUsize::new(0));
        let mut outside = std::mem::ManuallyDrop::new(Counted(drops.clone()));
        let value = NonNull::from(&mut *outside);
        // SAFETY: `outside` outlives the cell and is dropped by us below.
        let cell = unsafe { OnceBox::borrowed(value) };
        assert!(cell.is_borrowed());
        assert!(std::ptr::eq(cell.get().unwrap(), value.as_ptr()));
        cell.get_or_init(|| unreachable!());
        drop(cell);
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 0);
        // SAFETY: the cell is gone; this is the value's only owner.
        unsafe { std::mem::ManuallyDrop::drop(&mut outside) };
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!OnceBox::<u64>::new(Some(Box::new(1))).is_borrowed());
    }

    /// The mark is kept through a first use, which sets the value as usual,
    /// and never read as a pointer.
    #[test]
    fn the_mark_survives_the_first_use() {
        let drops = Arc::new(StdAtomicUsize::new(0));
        let cell = OnceBox::<Counted>::new_marked();
        assert!(cell.marked() && !cell.is_borrowed());
        assert!(cell.get().is_none());
        cell.get_or_init(|| Box::new(Counted(drops.clone())));
        assert!(cell.marked() && cell.get().is_some());
        cell.get_or_init(|| unreachable!());
        drop(cell);
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!OnceBox::<Counted>::new(None).marked());
        assert!(OnceBox::<Counted>::new_marked().get().is_none());
    }

    /// Threads racing to set it: one value wins, every thread sees that
    /// one, and the losers' values (from threads that found it unset and
    /// made one) are dropped at once.
    #[test]
    fn racing_first_uses_agree_on_one_value() {
        let threads = if cfg!(miri) { 3 } else { 4 };
        for _ in 0..if cfg!(miri) { 4 } else { 200 } {
            let drops = Arc::new(StdAtomicUsize::new(0));
            let made = Arc::new(StdAtomicUsize::new(0));
            // Marked, so that the race also keeps the mark.
            let cell = Arc::new(OnceBox::<(usize, Counted)>::new_marked());
            let barrier = Arc::new(Barrier::new(threads));
            let seen: Vec<usize> = (0..threads)
                .map(|i| {
                    let (cell, barrier) = (cell.clone(), barrier.clone());
                    let (drops, made) = (drops.clone(), made.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        cell.get_or_init(|| {
                            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            Box::new((i, Counted(drops)))
                        })
                        .0
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert!(seen.iter().all(|&s| s == seen[0]));
            assert_eq!(cell.get().map(|v| v.0), Some(seen[0]));
            assert!(cell.marked());
            let made = made.load(std::sync::atomic::Ordering::SeqCst);
            assert!(made >= 1);
            assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), made - 1);
            drop(cell);
            assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), made);
        }
    }
}
