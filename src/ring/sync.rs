//! The atomics the slot table uses: std's here; `model.rs` compiles the
//! table again on shuttle's for its randomized-schedule test.

pub use std::sync::atomic::{AtomicU64, Ordering};
