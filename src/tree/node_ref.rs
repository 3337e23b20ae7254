//! A counted heap pointer of the crate's own, and a revocable back-reference.
//!
//! [`NodeRef`] is `Arc` without `Weak`: the count lives in the value
//! ([`RefCount`], on the `sync` facade's atomics, so loom sees every
//! increment and decrement). What `Weak` gave the tree (finding a node from
//! a list that does not own it) is [`NodeRef::try_acquire`] instead, an
//! increment that never revives a count that has reached zero, made while
//! holding the lock that the node's last release must take before the node
//! is freed.
//!
//! When the last handle goes, [`Counted::last_release`] runs with a *shared*
//! reference: the value makes itself unreachable (leaves every list, revokes
//! every [`Backref`]) while others may still be looking at it under their
//! locks, and only then is the box taken back and dropped. So nobody can
//! reach a value while its `Drop` runs with `&mut self`.
//!
//! This module knows nothing of the tree: what "unreachable" takes is the
//! implementor's business, stated by the `unsafe` trait it implements.

use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;

use crate::sync::{lock, AtomicUsize, Mutex, Ordering};

/// Above this many handles, cloning aborts (as `Arc` does): the count must
/// never wrap to zero while handles exist.
const MAX_COUNT: usize = isize::MAX as usize;

/// The number of [`NodeRef`] handles to a value, embedded in the value.
/// Only this module reads or writes it.
pub(crate) struct RefCount(AtomicUsize);

impl RefCount {
    /// A count of one: the handle [`NodeRef::new`] is about to return.
    pub(crate) fn new() -> RefCount {
        RefCount(AtomicUsize::new(1))
    }

    /// Whether the count is one: to a caller that holds a handle, that its
    /// handle is the only one. Acquire, as a last release's is: every other
    /// handle's uses happen before whatever the caller does next.
    #[inline]
    pub(crate) fn is_unique(&self) -> bool {
        self.0.load(Ordering::Acquire) == 1
    }
}

/// A value that [`NodeRef`] can own.
///
/// # Safety
///
/// * `ref_count` returns the same [`RefCount`], embedded in `self`, every
///   time.
/// * When `last_release` returns, no other thread can reach the value any
///   more: every place from which another thread could find it (a list, a
///   [`Backref`]) has given it up, under the lock that guards that place,
///   and every [`NodeRef::try_acquire`] made on it since the count reached
///   zero has been made under one of those locks. The value is then freed
///   (dropped with `&mut self`), right after `last_release` returns.
pub(crate) unsafe trait Counted {
    /// The value's own count.
    fn ref_count(&self) -> &RefCount;

    /// Called once, by the handle whose drop takes the count to zero,
    /// before the value is freed; see the trait's `# Safety`.
    fn last_release(&self);

    /// A shortcut for a last handle, which saves the decrement: called by a
    /// handle that has found the count at one (its own, so the value is not
    /// freed meanwhile). Returns `true` if it has done what
    /// [`last_release`](Counted::last_release) does, and made sure, at a
    /// moment when the count was still one, that nothing can make a new
    /// handle any more: the value is then freed at once, with the count
    /// untouched. Returns `false`, having changed nothing, otherwise; the
    /// handle then decrements as usual. By default, `false`.
    ///
    /// The implementor's `# Safety` covers this too: returning `true` is a
    /// promise that no other thread can reach the value any more, as when
    /// `last_release` returns, and that no handle but the caller's existed
    /// then.
    #[inline]
    fn last_release_if_unique(&self) -> bool {
        false
    }

    /// Frees the value at `this`, after its last release. By default it is
    /// a `Box<Self>`; a value that is the head of a larger allocation (a
    /// type-erased one) frees that allocation instead.
    ///
    /// # Safety
    ///
    /// `this` is the pointer of a value whose count has reached zero and
    /// whose `last_release` has returned; it came from `Box::into_raw` of a
    /// `Box<Self>`, or from whatever allocation an override frees. Nothing
    /// uses the value afterwards.
    unsafe fn free(this: NonNull<Self>)
    where
        Self: Sized,
    {
        // SAFETY: the caller's promise: a `Box<Self>` nobody uses any more.
        drop(unsafe { Box::from_raw(this.as_ptr()) });
    }
}

/// A counted handle to a heap value `T`: `Arc<T>` without weak references.
/// One pointer, exactly (`tagged.rs` reads a handle in place).
#[repr(transparent)]
pub(crate) struct NodeRef<T: Counted> {
    ptr: NonNull<T>,
    /// The handle owns a `T` (for drop check and auto traits).
    _owns: PhantomData<T>,
}

// SAFETY: a `NodeRef` hands out `&T` to any thread that holds one and may
// drop `T` on any thread (the last handle's), exactly as `Arc<T>` does, so
// it asks what `Arc` asks: `T: Send + Sync`.
unsafe impl<T: Counted + Send + Sync> Send for NodeRef<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Counted + Send + Sync> Sync for NodeRef<T> {}

impl<T: Counted> NodeRef<T> {
    /// Moves `value` to the heap and returns its one handle. `value`'s count
    /// must be fresh from [`RefCount::new`].
    #[cfg(test)]
    pub(crate) fn new(value: T) -> NodeRef<T> {
        debug_assert_eq!(value.ref_count().0.load(Ordering::Relaxed), 1);
        let ptr = Box::into_raw(Box::new(value));
        NodeRef {
            // SAFETY: `Box::into_raw` never returns null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            _owns: PhantomData,
        }
    }

    /// Two handles to a new value, for the price of one count write.
    #[cfg(test)]
    pub(crate) fn new_pair(value: T) -> (NodeRef<T>, NodeRef<T>) {
        // Relaxed: the value is not shared yet.
        value.ref_count().0.store(2, Ordering::Relaxed);
        let ptr = Box::into_raw(Box::new(value));
        // SAFETY: `Box::into_raw` never returns null.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        let handle = || NodeRef {
            ptr,
            _owns: PhantomData,
        };
        (handle(), handle())
    }

    /// Gives up the handle for its pointer, count and all: the way back is
    /// [`from_raw`](Self::from_raw).
    #[inline]
    pub(crate) fn into_raw(this: NodeRef<T>) -> NonNull<T> {
        let this = std::mem::ManuallyDrop::new(this);
        this.ptr
    }

    /// Takes back a handle given up by [`into_raw`](Self::into_raw), or
    /// adopts a new value.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`into_raw`](Self::into_raw) and that count is handed
    /// back once; or `ptr` points at a new `T` whose count is fresh from
    /// [`RefCount::new`], at the start of an allocation that
    /// [`Counted::free`] frees, with the provenance of that allocation.
    #[inline]
    pub(crate) unsafe fn from_raw(ptr: NonNull<T>) -> NodeRef<T> {
        NodeRef {
            ptr,
            _owns: PhantomData,
        }
    }

    /// Two handles to a new value that the caller has put in place, for
    /// the price of one count write.
    ///
    /// # Safety
    ///
    /// `ptr` points at a new `T`, not yet shared, whose count is fresh from
    /// [`RefCount::new`], at the start of an allocation that
    /// [`Counted::free`] frees, with the provenance of that allocation.
    pub(crate) unsafe fn adopt_pair(ptr: NonNull<T>) -> (NodeRef<T>, NodeRef<T>) {
        // SAFETY: the caller's promise: a live `T` nobody else sees yet.
        let value = unsafe { ptr.as_ref() };
        debug_assert_eq!(value.ref_count().0.load(Ordering::Relaxed), 1);
        // Relaxed: the value is not shared yet.
        value.ref_count().0.store(2, Ordering::Relaxed);
        let handle = || NodeRef {
            ptr,
            _owns: PhantomData,
        };
        (handle(), handle())
    }

    /// The value's address, with the provenance of its whole allocation:
    /// what lists store and [`try_acquire`](Self::try_acquire) takes back.
    #[inline]
    pub(crate) fn as_ptr(this: &NodeRef<T>) -> NonNull<T> {
        this.ptr
    }

    /// Whether two handles point at the same value.
    #[cfg(test)]
    pub(crate) fn ptr_eq(a: &NodeRef<T>, b: &NodeRef<T>) -> bool {
        a.ptr == b.ptr
    }

    /// Gives this handle back if it is not the last one; otherwise returns
    /// it, for the caller to drop where a last release may run.
    #[inline]
    pub(crate) fn release_unless_last(this: NodeRef<T>) -> Result<(), NodeRef<T>> {
        let count = &this.ref_count().0;
        let mut current = count.load(Ordering::Relaxed);
        while current > 1 {
            // Release, as in `drop`: our uses happen before the free.
            match count.compare_exchange_weak(
                current,
                current - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    std::mem::forget(this);
                    return Ok(());
                }
                Err(now) => current = now,
            }
        }
        Err(this)
    }

    /// A new handle to the value at `ptr`, unless its count has already
    /// reached zero (then its last release is under way, and it must not be
    /// revived): an increment only from a non-zero count.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`as_ptr`](Self::as_ptr) (or [`NodeRef::new`]'s
    /// allocation by another path), and the value has not been freed and
    /// cannot be freed while this call runs: the caller holds a lock that
    /// the value's [`Counted::last_release`] must take before it returns,
    /// and has found the value in a place that lock guards and that
    /// `last_release` clears.
    pub(crate) unsafe fn try_acquire(ptr: NonNull<T>) -> Option<NodeRef<T>> {
        // SAFETY: the caller guarantees the value is not freed during this
        // call, and only shared access is made (the count is atomic).
        let count = &unsafe { ptr.as_ref() }.ref_count().0;
        let mut current = count.load(Ordering::Relaxed);
        loop {
            if current == 0 {
                return None;
            }
            if current > MAX_COUNT {
                std::process::abort();
            }
            // Acquire on success, as `Weak::upgrade` does: what the handle
            // that made the count non-zero published is visible to us.
            match count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(NodeRef {
                        ptr,
                        _owns: PhantomData,
                    })
                }
                Err(now) => current = now,
            }
        }
    }
}

impl<T: Counted> Deref for NodeRef<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this handle holds one count, so the value is not freed
        // while `self` is borrowed; only shared references are ever made
        // while the count is non-zero.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Counted> Clone for NodeRef<T> {
    #[inline]
    fn clone(&self) -> NodeRef<T> {
        // Relaxed, as `Arc::clone`: a new handle is made from an existing
        // one, which already keeps the value alive and ordered.
        let old = self.ref_count().0.fetch_add(1, Ordering::Relaxed);
        if old > MAX_COUNT {
            std::process::abort();
        }
        NodeRef {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: Counted> Drop for NodeRef<T> {
    #[inline]
    fn drop(&mut self) {
        // The only handle: the value may know a way out without the
        // decrement (`Counted::last_release_if_unique`).
        if self.ref_count().is_unique() && (**self).last_release_if_unique() {
            // SAFETY: as in `release_last`: the value says that nobody else
            // can reach it and no other handle exists, and the Acquire of
            // `is_unique` orders every other handle's uses before this.
            unsafe { T::free(self.ptr) };
            return;
        }
        // Release: our uses of the value happen before whoever frees it.
        if self.ref_count().0.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        self.release_last();
    }
}

impl<T: Counted> NodeRef<T> {
    #[inline(never)]
    fn release_last(&mut self) {
        // Acquire: every other handle's uses (their Release decrements)
        // happen before the free. A load rather than a fence, as std's
        // `Arc` does under ThreadSanitizer, which does not model fences.
        let _ = self.ref_count().0.load(Ordering::Acquire);
        // SAFETY: the count is zero, so no handle but this dying one
        // exists and none can be made (`try_acquire` does not revive a
        // zero count); the value is not freed before `last_release` returns.
        unsafe { self.ptr.as_ref() }.last_release();
        // SAFETY: `ptr` came from `Box::into_raw` in `new`/`new_pair`, or
        // from an allocation `T::free` frees (`from_raw`). The `Counted`
        // contract says nobody else can reach the value now, so this is the
        // only access and it may be freed.
        unsafe { T::free(self.ptr) };
    }
}

/// A back-reference that does not own its target: a pointer, cleared by
/// the target's [`Counted::last_release`], that can be turned into a
/// handle while the target lives. For things a node hands to the outside
/// world that must not keep it alive (its timer's waker, its callbacks'
/// handles).
pub(crate) struct Backref<T: Counted> {
    target: Mutex<Option<NonNull<T>>>,
}

// SAFETY: the pointer is only read or written under the mutex, and only
// turned into a `NodeRef` (which is `Send`/`Sync` for such `T`) there.
unsafe impl<T: Counted + Send + Sync> Send for Backref<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Counted + Send + Sync> Sync for Backref<T> {}

impl<T: Counted> Backref<T> {
    /// A back-reference to nothing yet.
    pub(crate) fn new() -> Backref<T> {
        Backref {
            target: Mutex::new(None),
        }
    }

    /// Points this back-reference at `target`.
    ///
    /// # Safety
    ///
    /// `target`'s [`Counted::last_release`] calls [`revoke`](Self::revoke)
    /// on this back-reference (or one that points it elsewhere) before it
    /// returns, unless this back-reference has been revoked before then.
    pub(crate) unsafe fn set(&self, target: &NodeRef<T>) {
        *lock(&self.target) = Some(NodeRef::as_ptr(target));
    }

    /// A handle to the target, if it is still set and its count is not
    /// already zero.
    pub(crate) fn acquire(&self) -> Option<NodeRef<T>> {
        let target = lock(&self.target);
        let ptr = (*target)?;
        // SAFETY: the target's last release revokes this back-reference
        // under the mutex we hold (the contract of `set`), so while the
        // pointer is still here the target is not freed.
        unsafe { NodeRef::try_acquire(ptr) }
    }

    /// Forgets the target: [`acquire`](Self::acquire) finds nothing from
    /// now on.
    pub(crate) fn revoke(&self) {
        *lock(&self.target) = None;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::sync::{Arc, Barrier};

    /// Counts its last releases and its drops, and checks that the first
    /// comes before the second.
    struct Probe {
        count: RefCount,
        released: Arc<StdAtomicUsize>,
        dropped: Arc<StdAtomicUsize>,
        backref: Option<Arc<Backref<Probe>>>,
    }

    // SAFETY: the only place a probe can be found from is its backref,
    // which `last_release` revokes.
    unsafe impl Counted for Probe {
        fn ref_count(&self) -> &RefCount {
            &self.count
        }

        fn last_release(&self) {
            assert_eq!(self.dropped.load(Ordering::SeqCst), 0);
            self.released.fetch_add(1, Ordering::SeqCst);
            if let Some(b) = &self.backref {
                b.revoke();
            }
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            assert_eq!(self.released.load(Ordering::SeqCst), 1);
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe() -> (Probe, Arc<StdAtomicUsize>, Arc<StdAtomicUsize>) {
        let released = Arc::new(StdAtomicUsize::new(0));
        let dropped = Arc::new(StdAtomicUsize::new(0));
        let p = Probe {
            count: RefCount::new(),
            released: released.clone(),
            dropped: dropped.clone(),
            backref: None,
        };
        (p, released, dropped)
    }

    fn count_of(r: &NodeRef<Probe>) -> usize {
        r.ref_count().0.load(Ordering::SeqCst)
    }

    #[test]
    fn last_handle_releases_then_frees_once() {
        let (p, released, dropped) = probe();
        let a = NodeRef::new(p);
        let b = a.clone();
        assert_eq!(count_of(&a), 2);
        assert!(NodeRef::ptr_eq(&a, &b));
        drop(a);
        assert_eq!(released.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn new_pair_counts_two() {
        let (p, _released, dropped) = probe();
        let (a, b) = NodeRef::new_pair(p);
        assert_eq!(count_of(&a), 2);
        drop(a);
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn try_acquire_counts_up_from_live() {
        let (p, _released, dropped) = probe();
        let a = NodeRef::new(p);
        // SAFETY: `a` keeps the value alive.
        let b = unsafe { NodeRef::try_acquire(NodeRef::as_ptr(&a)) }.unwrap();
        assert_eq!(count_of(&a), 2);
        drop(a);
        drop(b);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backref_acquires_until_revoked_by_last_release() {
        let (mut p, _released, dropped) = probe();
        let backref = Arc::new(Backref::new());
        p.backref = Some(backref.clone());
        let a = NodeRef::new(p);
        // SAFETY: the probe's last release revokes `backref`.
        unsafe { backref.set(&a) };
        let b = backref.acquire().unwrap();
        assert_eq!(count_of(&a), 2);
        drop(b);
        drop(a);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert!(backref.acquire().is_none());
    }

    /// The last handle is dropped on one thread while another acquires
    /// through the back-reference and drops what it got: the value is
    /// released and freed exactly once, and never revived.
    #[test]
    fn last_drop_races_backref_acquire() {
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        for _ in 0..rounds {
            let (mut p, released, dropped) = probe();
            let backref = Arc::new(Backref::new());
            p.backref = Some(backref.clone());
            let a = NodeRef::new(p);
            // SAFETY: the probe's last release revokes `backref`.
            unsafe { backref.set(&a) };
            let barrier = Arc::new(Barrier::new(2));
            let (b2, br2) = (barrier.clone(), backref.clone());
            let t = std::thread::spawn(move || {
                b2.wait();
                if let Some(got) = br2.acquire() {
                    let extra = got.clone();
                    drop(got);
                    drop(extra);
                }
            });
            barrier.wait();
            drop(a);
            t.join().unwrap();
            assert_eq!(released.load(Ordering::SeqCst), 1);
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
            assert!(backref.acquire().is_none());
        }
    }

    /// Clones dropped on several threads at once: one last release.
    #[test]
    fn clones_dropped_on_many_threads() {
        let threads = if cfg!(miri) { 3 } else { 8 };
        let (p, released, dropped) = probe();
        let a = NodeRef::new(p);
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (mine, b) = (a.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    drop(mine);
                })
            })
            .collect();
        drop(a);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
