//! What the controller sees each window, and what it decides.

/// Measurements of one window, gathered by the fetch engine (or the
/// simulator). Times are seconds on the injected clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowObservation {
    /// End of the window.
    pub now_secs: f64,
    pub window_secs: f64,
    /// Payload bytes of requests completed in the window (goodput).
    pub bytes: u64,
    /// Requests completed successfully in the window.
    pub completions: u64,
    /// Sums over those completions: time to first byte, and transfer time.
    pub ttfb_secs_sum: f64,
    pub transfer_secs_sum: f64,
    /// Payload bytes received in the window, of completed parts or not:
    /// goodput as it flows, for start-up rounds shorter than a part.
    pub arrived_bytes: u64,
    /// Requests whose first byte arrived in the window, and the sum of
    /// their times to it.
    pub first_bytes: u64,
    pub first_byte_secs_sum: f64,
    /// Replies asking us to slow down (503 SlowDown, 429).
    pub throttled: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Time requests waited on the request-rate limiter, summed.
    pub rate_limited_secs: f64,
    /// The request-rate limiter's limit while the store refuses requests
    /// (`RateLimiter::contested_rate`): enough requests must be in flight
    /// to use it, or the limiter's fairness between nodes is lost.
    pub contested_rate_rps: Option<f64>,
    /// Mean requests in flight over the window.
    pub inflight_mean: f64,
    /// How full the ready queue was on average (0 empty … 1 full); `None`
    /// when there is no consumer to ask (a pure fetch benchmark).
    pub ready_fill: Option<f64>,
    /// Time the consumer waited for data in the window.
    pub consumer_wait_secs: f64,
    /// Payload bytes batched for the consumer in the window: while its
    /// queue stays full, the rate it takes data at.
    pub batched_bytes: u64,
    /// How late the engine's sampling timer fired in the window, summed:
    /// its runtime (or the machine) had no idle core to wake it on time.
    /// Where CPU is the knee, more requests only cost more of it.
    pub timer_lag_secs: f64,
}

impl WindowObservation {
    pub fn goodput_bps(&self) -> f64 {
        if self.window_secs > 0.0 { self.bytes as f64 / self.window_secs } else { 0.0 }
    }

    /// Mean request latency (TTFB + transfer), if anything completed.
    pub fn mean_latency_secs(&self) -> Option<f64> {
        (self.completions > 0)
            .then(|| (self.ttfb_secs_sum + self.transfer_secs_sum) / self.completions as f64)
    }
}

/// The controller's phase, for reports and plots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Multiplicative ramp while goodput grows.
    Startup,
    /// Hill climbing with hysteresis.
    Steady,
    /// Trying a larger setting.
    ProbeUp,
    /// Pinned by the user.
    Fixed,
}

/// What to use from now on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub concurrency: usize,
    pub part_bytes: u64,
    /// How long the next window should last.
    pub window_secs: f64,
    pub phase: Phase,
}
