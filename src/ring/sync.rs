//! The atomics the slot table uses: std's, or shuttle's when the `model`
//! feature runs the randomized-schedule model test (as tokio swaps in loom).

#[cfg(all(test, feature = "model"))]
pub use shuttle::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(all(test, feature = "model")))]
pub use std::sync::atomic::{AtomicU64, Ordering};
