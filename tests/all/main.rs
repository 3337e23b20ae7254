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
//! leaves the heavy dev-dependencies out (`smol`, `tokio`, `async-std`,
//! `proptest`, `anyhow`), the modules built on them throughout are left
//! out too (deadlines, executors, group errors, the model, run and wait,
//! the wire format); in the others only the tests that need them are. The
//! rest uses std and `futures` only and runs there, e.g.
//! `cargo +nightly miri test --test all grace::`. Under Miri the tests that
//! derive a future deadline are ignored, each with its reason (async-io's
//! timers need `timerfd_create`, which Miri cannot emulate), and the big
//! loops and trees shrink (`common::miri_or`).

#[path = "../common/mod.rs"]
mod common;

mod after_func;
mod bad_input;
mod cancellation;
mod causes;
#[cfg(not(ctxtree_checks))]
mod deadlines;
mod depth;
mod display;
#[cfg(not(ctxtree_checks))]
mod executors;
mod grace;
mod group;
#[cfg(not(ctxtree_checks))]
mod group_errors;
mod merge;
#[cfg(not(ctxtree_checks))]
mod model;
mod reentrancy;
#[cfg(not(ctxtree_checks))]
mod run_wait;
mod stream;
mod values;
#[cfg(not(ctxtree_checks))]
mod wire;
