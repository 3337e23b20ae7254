//! The synchronization primitives the tree is written against.
//!
//! Plain `std` normally; `loom`'s model-checked versions under `cfg(loom)`, so
//! `RUSTFLAGS="--cfg loom" cargo test --test loom` explores every interleaving
//! of the state machine, the reference count and the child lists.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering},
    Condvar, Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering},
    Condvar, Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` behind loom's interface (`with` / `with_mut` hand
/// a raw pointer to a closure), so that under loom every access to the
/// cell is checked for a happens-before edge with the last write.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(data: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(data))
    }

    /// Calls `f` with a pointer to the contents, for reading.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a pointer to the contents, for writing.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks `mutex`, ignoring poison: no user code ever runs under our locks, so
/// a poisoned lock can only come from an allocation failure, and the data it
/// guards is still consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(not(loom))]
pub(crate) use async_io::Timer;

#[cfg(loom)]
pub(crate) use loom_timer::Timer;

/// Under loom, async-io does not build (see Cargo.toml), and its reactor
/// thread could not be modelled anyway. This stand-in is ready once its
/// instant has passed and otherwise never wakes: the loom models use no
/// deadlines, and a firing deadline takes the same `cancel` path they do check.
#[cfg(loom)]
mod loom_timer {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    pub(crate) struct Timer {
        when: Instant,
    }

    impl Timer {
        pub(crate) fn at(when: Instant) -> Timer {
            Timer { when }
        }
    }

    impl Future for Timer {
        type Output = Instant;

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Instant> {
            if Instant::now() >= self.when {
                Poll::Ready(self.when)
            } else {
                Poll::Pending
            }
        }
    }
}
