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

#[path = "../common/mod.rs"]
mod common;

mod after_func;
mod bad_input;
mod cancellation;
mod causes;
mod deadlines;
mod depth;
mod display;
mod executors;
mod group;
mod group_errors;
mod merge;
mod model;
mod reentrancy;
mod run_wait;
mod stream;
mod values;
mod wire;
