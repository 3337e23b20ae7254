//! The synchronization primitives the tree is written against.
//!
//! Plain `std` normally; `loom`'s model-checked versions under `cfg(loom)`, so
//! `RUSTFLAGS="--cfg loom" cargo test --test loom` explores every interleaving
//! of the state machine and the child list.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU8, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU8, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

/// Locks `mutex`, ignoring poison: no user code ever runs under our locks, so
/// a poisoned lock can only come from an allocation failure, and the data it
/// guards is still consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
