//! `autotune`: choosing how many range-GETs to keep in flight, how large
//! each is, and how fast to send them, from what is measured.
//!
//! Pure: no I/O, no clock of its own. The fetch engine (and the simulator in
//! [`sim_store`]) feed observations with their own notion of time, which is
//! what lets the controller be tested across a grid of store behaviours in
//! simulated seconds.
//!
//! ```text
//!  fetch engine ──WindowObservation──▶ ConcurrencyController ──Decision──▶ ConcurrencyLimit, part size
//!        │                                                                        ▲
//!        └─ each request: RateLimiter::try_acquire ◀── 503/429: on_throttle ──────┘ (request rate, per endpoint)
//! ```

mod arrival_round;
mod concurrency_controller;
mod gap_cover;
mod observation;
mod rate_limiter;
// Test support (the grid test, `examples/sim_cell`), not library API.
#[doc(hidden)]
pub mod sim_store;
mod warm_start;

pub use concurrency_controller::{ConcurrencyController, ControllerConfig};
pub use observation::{Decision, Phase, WindowObservation};
pub use rate_limiter::{RateLimiter, RateLimiterConfig};
pub use warm_start::WarmStart;
