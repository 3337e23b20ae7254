//! The integration tests that can share a process, as one test binary: one
//! link instead of one per file. Each module is one area of the contract.
//!
//! The binaries that must own their process stay apart: those that install
//! a counting `#[global_allocator]` (`alloc_audit`, `leak`, `merge_leak`,
//! `roots`, `stress`, `timer_leak`), the loom models (`loom`, built only
//! under `--cfg loom`), `cancel_guarantee`, which Miri and ThreadSanitizer
//! run on its own, and the `tower` feature's tests (`tower_*`).
//!
//! Run one area with a filter on its module path, e.g.
//! `cargo test --test all model::`.
//!
//! Under `--cfg ctxtree_checks` (the Miri and ThreadSanitizer runs), which
//! leaves the heavy dev-dependencies out, the modules that need them
//! (`smol`, `tokio`, `async-std`, `proptest`, `anyhow`) are left out too:
//! the rest of the binary uses std and `futures` only and runs there, e.g.
//! `cargo +nightly miri test --test all grace::`.

#[path = "../common/mod.rs"]
mod common;

mod after_func;
mod bad_input;
#[cfg(not(ctxtree_checks))]
mod cancellation;
mod causes;
#[cfg(not(ctxtree_checks))]
mod deadlines;
mod depth;
mod display;
#[cfg(not(ctxtree_checks))]
mod executors;
mod grace;
#[cfg(not(ctxtree_checks))]
mod group;
#[cfg(not(ctxtree_checks))]
mod group_errors;
#[cfg(not(ctxtree_checks))]
mod merge;
#[cfg(not(ctxtree_checks))]
mod model;
mod reentrancy;
#[cfg(not(ctxtree_checks))]
mod run_wait;
#[cfg(not(ctxtree_checks))]
mod stream;
mod values;
#[cfg(not(ctxtree_checks))]
mod wire;
