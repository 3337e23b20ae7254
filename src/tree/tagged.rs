//! One word that owns a handle to an `A` or to a `B`, or is one of two
//! empty values: what a `Context` is, so that a node's parent costs eight
//! bytes.
//!
//! The word is the handle's pointer, with the low bit set for a `B`; both
//! kinds are aligned to at least 8, so a real pointer is never below 8, and
//! the two empty values are the addresses 0 and 4, with no provenance. Tags
//! are set and cleared by pointer arithmetic that keeps the pointer's
//! provenance, and read with a pointer-to-integer cast: no integer is ever
//! turned back into a pointer.
//!
//! An `A` handle's word is its pointer exactly, so a borrowed word can be
//! lent out as a `&NodeRef<A>` (`NodeRef` is `repr(transparent)`). A `B`
//! handle is lent out as a [`Borrowed`]: its pointer, with the lifetime of
//! the borrow.
//!
//! This module knows nothing of the tree.

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use super::node_ref::{Counted, NodeRef};

/// Set on the word of a `B` handle.
const B_TAG: usize = 1;
/// Below this, a word is one of the empty values.
const FIRST_POINTER: usize = 8;
/// The address of the second empty value.
const SECOND_EMPTY: usize = 4;

/// Which of the two empty values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Empty {
    First,
    Second,
}

/// What a [`Tagged`] holds, owned.
pub(crate) enum Owned<A: Counted, B: Counted> {
    Empty(Empty),
    A(NodeRef<A>),
    B(NodeRef<B>),
}

/// What a [`Tagged`] holds, borrowed.
pub(crate) enum View<'a, A: Counted, B: Counted> {
    Empty(Empty),
    A(&'a NodeRef<A>),
    B(Borrowed<'a, B>),
}

/// A `B` that a [`Tagged`] holds a handle to, for as long as it is borrowed.
pub(crate) struct Borrowed<'a, B: Counted> {
    ptr: NonNull<B>,
    _borrow: PhantomData<&'a NodeRef<B>>,
}

impl<B: Counted> Clone for Borrowed<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Counted> Copy for Borrowed<'_, B> {}

impl<'a, B: Counted> Borrowed<'a, B> {
    /// The value.
    #[inline]
    pub(crate) fn get(self) -> &'a B {
        // SAFETY: the `Tagged` this came from holds a count for `'a`, so the
        // value is not freed meanwhile; only shared references are made.
        unsafe { self.ptr.as_ref() }
    }

    /// The value's address, with the provenance of its whole allocation
    /// (which may be larger than a `B`: see `Counted::free`).
    #[inline]
    pub(crate) fn as_ptr(self) -> NonNull<B> {
        self.ptr
    }
}

/// An owned `NodeRef<A>`, `NodeRef<B>` or empty value, in one word.
pub(crate) struct Tagged<A: Counted, B: Counted> {
    word: *const u8,
    _owns: PhantomData<(NodeRef<A>, NodeRef<B>)>,
}

// SAFETY: a `Tagged` is one of two handles, and moving it moves that handle.
unsafe impl<A: Counted, B: Counted> Send for Tagged<A, B>
where
    NodeRef<A>: Send,
    NodeRef<B>: Send,
{
}
// SAFETY: through `&Tagged`, only `&NodeRef<A>` and `&B` are reached (and
// new handles made), as through `&NodeRef`.
unsafe impl<A: Counted, B: Counted> Sync for Tagged<A, B>
where
    NodeRef<A>: Sync,
    NodeRef<B>: Sync,
{
}

/// Both kinds leave the low three bits of their addresses free.
const fn aligned<A, B>() -> bool {
    std::mem::align_of::<A>() >= FIRST_POINTER && std::mem::align_of::<B>() >= FIRST_POINTER
}

impl<A: Counted, B: Counted> Tagged<A, B> {
    const ALIGNED: () = assert!(aligned::<A, B>(), "tagged kinds must be aligned to 8");

    /// An empty value.
    #[inline]
    pub(crate) const fn empty(which: Empty) -> Self {
        let address = match which {
            Empty::First => 0,
            Empty::Second => SECOND_EMPTY,
        };
        Tagged {
            // An address with no provenance, never dereferenced.
            word: ptr::null::<u8>().wrapping_add(address),
            _owns: PhantomData,
        }
    }

    /// Takes ownership of `handle`.
    #[inline]
    pub(crate) fn from_owned(handle: Owned<A, B>) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::ALIGNED;
        let word = match handle {
            Owned::Empty(which) => return Self::empty(which),
            Owned::A(node) => NodeRef::into_raw(node).as_ptr().cast::<u8>().cast_const(),
            Owned::B(node) => NodeRef::into_raw(node)
                .as_ptr()
                .cast::<u8>()
                .cast_const()
                .wrapping_add(B_TAG),
        };
        Tagged {
            word,
            _owns: PhantomData,
        }
    }

    /// Gives back the handle (or empty value) this holds.
    #[inline]
    pub(crate) fn into_owned(self) -> Owned<A, B> {
        let this = ManuallyDrop::new(self);
        let word = this.word;
        match this.peek() {
            Peek::Empty(which) => Owned::Empty(which),
            // SAFETY: the word was made from `NodeRef::into_raw` (`from_owned`)
            // and its count is now handed back, once: `self` is forgotten.
            Peek::A => Owned::A(unsafe { NodeRef::from_raw(Self::untagged(word, 0)) }),
            // SAFETY: as for `A`.
            Peek::B => Owned::B(unsafe { NodeRef::from_raw(Self::untagged(word, B_TAG)) }),
        }
    }

    /// What this holds, borrowed.
    #[inline]
    pub(crate) fn view(&self) -> View<'_, A, B> {
        match self.peek() {
            Peek::Empty(which) => View::Empty(which),
            Peek::A => {
                let word: *const *const u8 = &self.word;
                // SAFETY: an `A` word is exactly the pointer of a live
                // `NodeRef<A>` (untagged, non-null, with its provenance), and
                // `NodeRef<A>` is `repr(transparent)` over that pointer, so
                // the word may be read in place as the handle; the borrow is
                // shared and as long as `&self`, which keeps the count.
                View::A(unsafe { &*word.cast::<NodeRef<A>>() })
            }
            Peek::B => View::B(Borrowed {
                ptr: Self::untagged(self.word, B_TAG),
                _borrow: PhantomData,
            }),
        }
    }

    /// Whether this is one of the empty values.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        (self.word as usize) < FIRST_POINTER
    }

    #[inline]
    fn peek(&self) -> Peek {
        // A pointer-to-integer cast: reads the bits, exposes nothing.
        let address = self.word as usize;
        if address < FIRST_POINTER {
            if address == 0 {
                Peek::Empty(Empty::First)
            } else {
                Peek::Empty(Empty::Second)
            }
        } else if address & B_TAG == 0 {
            Peek::A
        } else {
            Peek::B
        }
    }

    /// The handle's pointer in a word with tag `tag`, provenance intact.
    #[inline]
    fn untagged<T>(word: *const u8, tag: usize) -> NonNull<T> {
        let ptr = word.wrapping_sub(tag).cast::<T>().cast_mut();
        // SAFETY: a pointer word is at least `FIRST_POINTER` before its tag
        // is taken off, so never null after.
        unsafe { NonNull::new_unchecked(ptr) }
    }
}

/// The kind of a word, without its pointer.
enum Peek {
    Empty(Empty),
    A,
    B,
}

impl<A: Counted, B: Counted> Clone for Tagged<A, B> {
    #[inline]
    fn clone(&self) -> Self {
        let owned = match self.view() {
            View::Empty(which) => return Self::empty(which),
            View::A(node) => Owned::A(node.clone()),
            View::B(node) => {
                // A borrowed copy of the handle, never dropped: cloning it
                // adds the count that the new `Tagged` owns.
                // SAFETY: `node` is the pointer of the handle `self` owns.
                let borrowed = ManuallyDrop::new(unsafe { NodeRef::from_raw(node.as_ptr()) });
                Owned::B((*borrowed).clone())
            }
        };
        Self::from_owned(owned)
    }
}

impl<A: Counted, B: Counted> Drop for Tagged<A, B> {
    #[inline]
    fn drop(&mut self) {
        if self.is_empty() {
            return;
        }
        let this = std::mem::replace(self, Self::empty(Empty::First));
        drop(this.into_owned());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::tree::node_ref::RefCount;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its last releases.
    struct Probe {
        count: RefCount,
        id: u32,
        released: Arc<AtomicUsize>,
    }

    // SAFETY: nothing but handles reaches a `Probe`.
    unsafe impl Counted for Probe {
        fn ref_count(&self) -> &RefCount {
            &self.count
        }
        fn last_release(&self) {
            self.released.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe(id: u32, released: &Arc<AtomicUsize>) -> NodeRef<Probe> {
        NodeRef::new(Probe {
            count: RefCount::new(),
            id,
            released: released.clone(),
        })
    }

    type Word = Tagged<Probe, Probe>;

    #[test]
    fn one_word_holds_each_kind_and_gives_it_back() {
        assert_eq!(std::mem::size_of::<Word>(), std::mem::size_of::<usize>());
        let released = Arc::new(AtomicUsize::new(0));
        let a = Word::from_owned(Owned::A(probe(1, &released)));
        let b = Word::from_owned(Owned::B(probe(2, &released)));
        let first = Word::empty(Empty::First);
        let second = Word::empty(Empty::Second);
        assert!(matches!(a.view(), View::A(n) if n.id == 1));
        assert!(matches!(b.view(), View::B(n) if n.get().id == 2));
        assert!(matches!(first.view(), View::Empty(Empty::First)));
        assert!(matches!(second.view(), View::Empty(Empty::Second)));
        assert!(first.is_empty() && second.is_empty() && !a.is_empty() && !b.is_empty());
        // Clones share the value and count it.
        let (a2, b2, s2) = (a.clone(), b.clone(), second.clone());
        assert!(matches!(s2.view(), View::Empty(Empty::Second)));
        drop((a, b));
        assert_eq!(released.load(Ordering::SeqCst), 0);
        match b2.into_owned() {
            Owned::B(node) => assert_eq!(node.id, 2),
            _ => panic!("not a B"),
        }
        assert_eq!(released.load(Ordering::SeqCst), 1);
        drop(a2);
        assert_eq!(released.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn shared_between_threads() {
        let released = Arc::new(AtomicUsize::new(0));
        let b = Word::from_owned(Owned::B(probe(7, &released)));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let mine = b.clone();
                std::thread::spawn(move || match mine.view() {
                    View::B(node) => node.get().id,
                    _ => 0,
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 7);
        }
        drop(b);
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }
}
