//! What a controller settled on, to start the next run there.
//!
//! A one-pass job over a 2 GiB dataset on a 20 ms path lasts ~3.5 s, and a
//! ramp from one request costs a third of it. A run against the same
//! endpoint and bucket starts where the last one settled: the concurrency
//! and part size it held, and what Little's law needs to keep adjusting
//! (goodput, the uncontended latency and its share spent waiting for the
//! first byte, the mean bytes per request). It starts in steady state, so a
//! stale start is corrected by the usual steady rules and probes, not
//! trusted blindly; above 32 requests the engine opens them in cohorts
//! (`fetch::open_pace`), not all at once.

use serde::{Deserialize, Serialize};

/// A controller's settled state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmStart {
    pub concurrency: usize,
    pub part_bytes: u64,
    pub goodput_bps: f64,
    pub min_latency_secs: f64,
    pub ttfb_share: f64,
    pub request_bytes: f64,
}

impl WarmStart {
    /// Whether every figure is usable (a cache file is outside input).
    pub fn is_sane(&self) -> bool {
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        self.concurrency >= 1
            && self.concurrency <= 1 << 16
            && self.part_bytes >= 1
            && finite_pos(self.goodput_bps)
            && finite_pos(self.min_latency_secs)
            && finite_pos(self.request_bytes)
            && (0.0..1.0).contains(&self.ttfb_share)
    }
}
