//! The synchronization primitives the tree is written against.
//!
//! Plain `std` normally; `loom`'s model-checked versions under `cfg(loom)`, so
//! `RUSTFLAGS="--cfg loom" cargo test --test loom` explores every interleaving
//! of the state machine and the child list.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

/// The data of a mutex we own exclusively: no locking needed.
pub(crate) fn get_mut<T>(mutex: &mut Mutex<T>) -> &mut T {
    match mutex.get_mut() {
        Ok(data) => data,
        Err(poisoned) => poisoned.into_inner(),
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
