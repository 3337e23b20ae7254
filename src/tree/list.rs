//! An intrusive doubly linked list: the links live inside the values, so
//! linking allocates nothing and unlinking is O(1).
//!
//! The list is generic over what it links through the `unsafe` trait
//! [`Link`], which says where a value keeps its [`Pointers`]; one value can
//! sit in several lists at once through several `Link` kinds. It knows
//! nothing of what it holds: it stores pointers, never owns or frees a
//! value, and never calls into the values. Who may be linked, for how long,
//! and under which lock is the caller's promise, made at each `unsafe` call.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::sync::UnsafeCell;

/// How to find the [`Pointers`] that a value of type `Target` keeps for
/// lists of this kind.
///
/// # Safety
///
/// [`pointers`](Link::pointers) returns, for a given live target, always
/// the same `Pointers`, stored inside that target, used for no other list
/// kind.
pub(crate) unsafe trait Link {
    /// What the list links.
    type Target;

    /// The `Pointers` inside `target`.
    ///
    /// # Safety
    ///
    /// `target` points to a live `Target` that may be linked in lists of
    /// this kind.
    unsafe fn pointers(target: NonNull<Self::Target>) -> NonNull<Pointers<Self::Target>>;
}

/// A value's place in one list: its neighbours. Read and written only by
/// the list it is linked into (see [`List::push_front`]'s contract).
pub(crate) struct Pointers<T> {
    prev: UnsafeCell<Option<NonNull<T>>>,
    next: UnsafeCell<Option<NonNull<T>>>,
}

// SAFETY: the cells are plain neighbour addresses, only touched through the
// list the value is linked into, and every access to a list is serialized
// (`&mut List` to change it, by the contract of `push_front`): moving or
// sharing the cells between threads never races.
unsafe impl<T> Send for Pointers<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for Pointers<T> {}

impl<T> Pointers<T> {
    /// Unlinked.
    pub(crate) fn new() -> Pointers<T> {
        Pointers {
            prev: UnsafeCell::new(None),
            next: UnsafeCell::new(None),
        }
    }
}

impl<T> fmt::Debug for Pointers<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pointers").finish_non_exhaustive()
    }
}

/// One neighbour cell.
type Neighbour<T> = UnsafeCell<Option<NonNull<T>>>;

/// Reads a neighbour.
///
/// # Safety
///
/// `cell` points into a live `Pointers` that nobody writes concurrently.
unsafe fn get<T>(cell: *const Neighbour<T>) -> Option<NonNull<T>> {
    // SAFETY: live and not written concurrently (the caller's promise);
    // `Option<NonNull>` is `Copy`, so reading it moves nothing out.
    unsafe { (*cell).with(|p| *p) }
}

/// Writes a neighbour.
///
/// # Safety
///
/// `cell` points into a live `Pointers` that nobody reads or writes
/// concurrently.
unsafe fn set<T>(cell: *const Neighbour<T>, to: Option<NonNull<T>>) {
    // SAFETY: live and exclusive (the caller's promise).
    unsafe { (*cell).with_mut(|p| *p = to) }
}

/// The head of an intrusive list of `L::Target`s.
pub(crate) struct List<L: Link> {
    head: Option<NonNull<L::Target>>,
    _link: PhantomData<L>,
}

// SAFETY: the list holds addresses of values that live elsewhere and are
// `Sync` (they are shared between threads by their owners); moving the
// head to another thread (inside a mutex) is harmless. All access to the
// values' `Pointers` goes through the list, serialized by `&mut`.
unsafe impl<L: Link> Send for List<L> where L::Target: Sync {}

impl<L: Link> List<L> {
    /// An empty list.
    pub(crate) const fn new() -> List<L> {
        List {
            head: None,
            _link: PhantomData,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// # Safety
    ///
    /// As for [`Link::pointers`].
    unsafe fn links(
        node: NonNull<L::Target>,
    ) -> (*const Neighbour<L::Target>, *const Neighbour<L::Target>) {
        // SAFETY: per the caller.
        let p = unsafe { L::pointers(node) }.as_ptr();
        // SAFETY: `p` points into the live target; no reference is made.
        unsafe { (std::ptr::addr_of!((*p).prev), std::ptr::addr_of!((*p).next)) }
    }

    /// Links `node` at the front.
    ///
    /// # Safety
    ///
    /// * `node` points to a live value that is in no list of kind `L`.
    /// * It stays live until it is [`remove`](Self::remove)d from this
    ///   list: the list dereferences it until then.
    /// * While it is linked here, its `L` pointers are touched by nobody
    ///   but this list, and every use of this list is serialized with every
    ///   other (this list lives in a mutex, or is owned by one thread).
    pub(crate) unsafe fn push_front(&mut self, node: NonNull<L::Target>) {
        // SAFETY: `node` is live (contract) and unlinked, so its pointers
        // are ours to write; `head`, if any, is linked here, hence live, and
        // its pointers are ours too (`&mut self`).
        unsafe {
            let (prev, next) = Self::links(node);
            set(prev, None);
            set(next, self.head);
            if let Some(head) = self.head {
                set(Self::links(head).0, Some(node));
            }
        }
        self.head = Some(node);
    }

    /// Unlinks `node` in O(1) if it is linked here; returns whether it was.
    ///
    /// # Safety
    ///
    /// `node` points to a live value that is either linked in this list or
    /// in no list of kind `L` (then it is left alone).
    pub(crate) unsafe fn remove(&mut self, node: NonNull<L::Target>) -> bool {
        // SAFETY: `node` is live. If it is linked here, its pointers and its
        // neighbours' are this list's (`&mut self`); if it is in no list of
        // this kind, nobody writes its pointers, and we only read them.
        unsafe {
            let (prev_cell, next_cell) = Self::links(node);
            let prev = get(prev_cell);
            let next = get(next_cell);
            match prev {
                // Not the head: linked here (only a list writes `prev`).
                Some(prev) => set(Self::links(prev).1, next),
                // The head, or unlinked.
                None if self.head == Some(node) => self.head = next,
                None => return false,
            }
            if let Some(next) = next {
                set(Self::links(next).0, prev);
            }
            set(prev_cell, None);
            set(next_cell, None);
        }
        true
    }

    /// The linked values, from the front. Each is live while `self` is
    /// borrowed (the contract of `push_front`), so the iterator hands out
    /// references for that long.
    pub(crate) fn iter(&self) -> Iter<'_, L> {
        Iter {
            next: self.head,
            _list: PhantomData,
        }
    }
}

impl<L: Link> fmt::Debug for List<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("List")
            .field("empty", &self.is_empty())
            .finish()
    }
}

/// Iterator over a list's values.
pub(crate) struct Iter<'a, L: Link> {
    next: Option<NonNull<L::Target>>,
    _list: PhantomData<&'a List<L>>,
}

/// A value linked in a list that is borrowed for `'a`.
pub(crate) struct Linked<'a, T> {
    ptr: NonNull<T>,
    _list: PhantomData<&'a T>,
}

impl<'a, T> Linked<'a, T> {
    /// The value, live while the list is borrowed.
    pub(crate) fn get(&self) -> &'a T {
        // SAFETY: the value is linked in a list borrowed for `'a`, and a
        // linked value stays live until it is removed, which needs `&mut`
        // of that list (the contract of `push_front`). Only shared
        // references are made to it.
        unsafe { self.ptr.as_ref() }
    }

    /// The pointer the value was pushed with (the provenance of its whole
    /// allocation, unlike a pointer made from [`get`](Self::get)).
    pub(crate) fn ptr(&self) -> NonNull<T> {
        self.ptr
    }
}

impl<'a, L: Link> Iterator for Iter<'a, L> {
    type Item = Linked<'a, L::Target>;

    fn next(&mut self) -> Option<Linked<'a, L::Target>> {
        let node = self.next?;
        // SAFETY: `node` is linked in the list we borrow, so it is live and
        // its pointers are only written through `&mut` of that list, which
        // our borrow excludes.
        self.next = unsafe { get(List::<L>::links(node).1) };
        Some(Linked {
            ptr: node,
            _list: PhantomData,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Item {
        id: u32,
        a: Pointers<Item>,
        b: Pointers<Item>,
    }

    struct ByA;
    struct ByB;

    // SAFETY: always the `a` field of the target, used by no other kind.
    unsafe impl Link for ByA {
        type Target = Item;
        unsafe fn pointers(target: NonNull<Item>) -> NonNull<Pointers<Item>> {
            // SAFETY: `target` is live; no reference is made.
            unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*target.as_ptr()).a)) }
        }
    }

    // SAFETY: always the `b` field of the target, used by no other kind.
    unsafe impl Link for ByB {
        type Target = Item;
        unsafe fn pointers(target: NonNull<Item>) -> NonNull<Pointers<Item>> {
            // SAFETY: `target` is live; no reference is made.
            unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*target.as_ptr()).b)) }
        }
    }

    /// Items on the heap, owned here, handed to lists as raw pointers.
    fn items(n: u32) -> Vec<NonNull<Item>> {
        (0..n)
            .map(|id| {
                let item = Box::new(Item {
                    id,
                    a: Pointers::new(),
                    b: Pointers::new(),
                });
                // SAFETY: `Box::into_raw` is never null.
                unsafe { NonNull::new_unchecked(Box::into_raw(item)) }
            })
            .collect()
    }

    fn free(items: Vec<NonNull<Item>>) {
        for item in items {
            // SAFETY: made by `Box::into_raw` in `items`, unlinked by now.
            drop(unsafe { Box::from_raw(item.as_ptr()) });
        }
    }

    fn ids<L: Link<Target = Item>>(list: &List<L>) -> Vec<u32> {
        list.iter().map(|p| p.get().id).collect()
    }

    #[test]
    fn push_front_then_remove_anywhere() {
        let it = items(4);
        let mut list = List::<ByA>::new();
        assert!(list.is_empty());
        for &p in &it {
            // SAFETY: each item is live, unlinked, and outlives the list's use.
            unsafe { list.push_front(p) };
        }
        assert_eq!(ids(&list), [3, 2, 1, 0]);
        // SAFETY: every item is live and linked here or nowhere.
        unsafe {
            assert!(list.remove(it[1])); // middle
            assert_eq!(ids(&list), [3, 2, 0]);
            assert!(list.remove(it[3])); // head
            assert_eq!(ids(&list), [2, 0]);
            assert!(list.remove(it[0])); // tail
            assert_eq!(ids(&list), [2]);
            assert!(!list.remove(it[0])); // twice: not linked any more
            assert!(!list.remove(it[1]));
            assert!(list.remove(it[2]));
        }
        assert!(list.is_empty());
        free(it);
    }

    #[test]
    fn unlinked_item_is_left_alone_and_can_be_relinked() {
        let it = items(2);
        let mut list = List::<ByA>::new();
        // SAFETY: live items, linked here or nowhere.
        unsafe {
            list.push_front(it[0]);
            assert!(!list.remove(it[1]));
            assert_eq!(ids(&list), [0]);
            assert!(list.remove(it[0]));
            list.push_front(it[1]);
            list.push_front(it[0]);
        }
        assert_eq!(ids(&list), [0, 1]);
        // SAFETY: as above.
        unsafe {
            list.remove(it[0]);
            list.remove(it[1]);
        }
        free(it);
    }

    #[test]
    fn one_item_in_two_lists_of_two_kinds() {
        let it = items(3);
        let mut a = List::<ByA>::new();
        let mut b = List::<ByB>::new();
        // SAFETY: live items; each kind's pointers used by its list only.
        unsafe {
            for &p in &it {
                a.push_front(p);
            }
            b.push_front(it[0]);
            b.push_front(it[2]);
            assert!(a.remove(it[2]));
            assert_eq!(ids(&a), [1, 0]);
            assert_eq!(ids(&b), [2, 0]);
            assert!(b.remove(it[0]));
            assert_eq!(ids(&b), [2]);
            assert_eq!(ids(&a), [1, 0]);
            a.remove(it[0]);
            a.remove(it[1]);
            b.remove(it[2]);
        }
        assert!(a.is_empty() && b.is_empty());
        free(it);
    }

    /// Lists behind a mutex, changed from several threads: what the tree does.
    #[test]
    fn shared_behind_a_mutex() {
        use std::sync::{Arc, Mutex};
        struct Shared(Vec<NonNull<Item>>);
        // SAFETY: the items are only touched under the list's mutex.
        unsafe impl Send for Shared {}
        // SAFETY: as for `Send`.
        unsafe impl Sync for Shared {}
        let n = if cfg!(miri) { 8 } else { 200 };
        let it = Arc::new(Shared(items(n)));
        let list = Arc::new(Mutex::new(List::<ByA>::new()));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (it, list) = (it.clone(), list.clone());
                std::thread::spawn(move || {
                    for (i, &p) in it.0.iter().enumerate() {
                        if i % 2 == t {
                            let mut l = list.lock().unwrap();
                            // SAFETY: each item is pushed by one thread only,
                            // once, under the mutex, and outlives the list.
                            unsafe { l.push_front(p) };
                        }
                    }
                    for (i, &p) in it.0.iter().enumerate() {
                        if i % 2 == t {
                            let mut l = list.lock().unwrap();
                            // SAFETY: linked here, under the mutex.
                            assert!(unsafe { l.remove(p) });
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(list.lock().unwrap().is_empty());
        free(Arc::try_unwrap(it).ok().unwrap().0);
    }
}
