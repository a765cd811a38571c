//! The evidence of one period: what the windows since the last judgement
//! added up to. The engine may call at any cadence; the controller judges
//! only once a period is long enough.

use super::super::observation::WindowObservation;

/// Requests completed over a period: sums of their times to first byte and
/// latencies, their count and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Completed {
    pub ttfb_secs: f64,
    pub latency_secs: f64,
    pub count: u64,
    pub bytes: u64,
}

impl Completed {
    pub fn plus(self, other: &Completed) -> Completed {
        Completed {
            ttfb_secs: self.ttfb_secs + other.ttfb_secs,
            latency_secs: self.latency_secs + other.latency_secs,
            count: self.count + other.count,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// Windows summed since the last judgement.
#[derive(Debug, Clone, Default)]
pub(super) struct Period {
    pub bytes: u64,
    pub secs: f64,
    pub completions: u64,
    pub inflight_area: f64,
    pub latency_sum: f64,
    pub ttfb_sum: f64,
    pub rate_limited_secs: f64,
    /// Ready-queue fill (sum, windows) and consumer wait over the period.
    pub fill: (f64, u32),
    pub wait_secs: f64,
    /// Payload bytes batched for the consumer.
    pub batched_bytes: u64,
    /// How late the engine's timer fired, summed (`timer_lag_secs`).
    pub lag_secs: f64,
}

impl Period {
    pub fn add(&mut self, obs: &WindowObservation) {
        self.bytes += obs.bytes;
        self.secs += obs.window_secs;
        self.completions += obs.completions;
        self.inflight_area += obs.inflight_mean * obs.window_secs;
        self.latency_sum += obs.ttfb_secs_sum + obs.transfer_secs_sum;
        self.ttfb_sum += obs.ttfb_secs_sum;
        self.rate_limited_secs += obs.rate_limited_secs;
        if let Some(fill) = obs.ready_fill {
            self.fill.0 += fill;
            self.fill.1 += 1;
        }
        self.wait_secs += obs.consumer_wait_secs;
        self.batched_bytes += obs.batched_bytes;
        self.lag_secs += obs.timer_lag_secs;
    }

    /// The requests that completed in it.
    pub fn done(&self) -> Completed {
        Completed {
            ttfb_secs: self.ttfb_sum,
            latency_secs: self.latency_sum,
            count: self.completions,
            bytes: self.bytes,
        }
    }

    /// The ready queue's mean fill, where the consumer reported one.
    pub fn mean_fill(&self) -> Option<f64> {
        (self.fill.1 > 0).then(|| self.fill.0 / f64::from(self.fill.1))
    }

    /// Bytes counted per second.
    pub fn counted_bps(&self) -> f64 {
        self.bytes as f64 / self.secs
    }

    /// Goodput: the bytes counted and Little's law (requests in flight ×
    /// bytes per request / latency), averaged. Counted bytes arrive in
    /// waves (requests started together finish together) that a period
    /// boundary cuts anywhere; Little's estimate mixes latencies from before
    /// and after a change. Each is noisy in its own way.
    pub fn goodput_bps(&self) -> f64 {
        let counted = self.counted_bps();
        if self.completions == 0 || self.latency_sum <= 0.0 || self.inflight_area <= 0.0 {
            return counted;
        }
        let n = self.completions as f64;
        let inflight = self.inflight_area / self.secs;
        let little = inflight * (self.bytes as f64 / n) / (self.latency_sum / n);
        0.5 * (counted + little)
    }
}
