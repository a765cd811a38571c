//! How many requests a goodput needs (Little's law, and covering the waits
//! for first bytes), and the part size.
//!
//! * The mean latency of the start-up rounds that grew is the uncontended
//!   latency `L0`; a goodput `G` of requests of `B` bytes on average (the
//!   mean of the requests `L0` was measured on: a shard's last part is
//!   short, so 18.8 MiB shards in 8 MiB parts carry 6.3 MiB a request)
//!   needs `n = G·L0/B` requests in flight. The controller holds the
//!   headroom more, or what keeps the path busy 97% of the time despite the
//!   requests' waits for their first bytes where that is more (at a few
//!   requests, all of them waiting at once idles the path; `gap_cover`).
//! * Parts double when requests wait on the rate limiter (the store's
//!   request rate binds: each request must carry more), and, at a probe's
//!   slot, while covering the waits for first bytes takes a whole request
//!   more than Little's law: fewer, larger requests keep the path as busy
//!   with fewer GETs. At the probe's slot, not at once: a change of parts
//!   costs a settling period that a cold start should not pay. Only where
//!   the wait itself is long (a WAN): on loopback one more request covers
//!   it, and large parts cost memory, CPU and the first batch.

use super::super::gap_cover::requests_to_cover;
use super::ConcurrencyController;

impl ConcurrencyController {
    /// Requests in flight that `bps` needs at the uncontended latency, with
    /// headroom (Little's law: L = λ·W).
    pub(super) fn little_target(&self, bps: f64) -> usize {
        let Some((little, gaps)) = self.needs(bps) else {
            return self.concurrency;
        };
        // A tenth of a request of slack before rounding up: at one or two
        // requests, rounding is a larger step than the headroom.
        (little.max(gaps) - 0.1).ceil().max(1.0) as usize
    }

    /// Whether covering the requests' time-to-first-byte gaps, not Little's
    /// law, sets how many `bps` needs, by a whole request or more: a few
    /// large requests on a path with long waits (one 400 MB/s request on
    /// 1 Gbps, 30 ms to first byte: Little's law asks for 1.5, the gaps
    /// for 3).
    pub(super) fn gap_bound(&self, bps: f64) -> bool {
        self.needs(bps).is_some_and(|(little, gaps)| gaps >= (little - 0.1).ceil() + 1.0)
    }

    /// Whether the uncontended wait for a first byte is long enough for
    /// larger parts to pay (`gap_parts_min_ttfb_secs`).
    pub(super) fn long_first_byte_waits(&self) -> bool {
        self.min_latency_secs.is_finite()
            && self.min_latency_secs * self.ttfb_share >= self.cfg.gap_parts_min_ttfb_secs
    }

    /// The requests `bps` needs: by Little's law with headroom, and to cover
    /// the time-to-first-byte gaps (`gap_cover`); `None` before the
    /// uncontended latency is known.
    fn needs(&self, bps: f64) -> Option<(f64, f64)> {
        let ideal = self.ideal(bps)?;
        let moving = ideal * (1.0 - self.ttfb_share);
        let gaps = requests_to_cover(moving, self.ttfb_share, self.cfg.fill) as f64;
        Some((self.headroom * ideal, gaps))
    }

    /// Requests in flight that carry `bps` at the uncontended latency, by
    /// Little's law: requests per second (`bps` over the mean bytes per
    /// request) times the latency; `None` before both are measured.
    pub(super) fn ideal(&self, bps: f64) -> Option<f64> {
        (self.min_latency_secs.is_finite() && self.request_bytes > 0.0)
            .then(|| bps * self.min_latency_secs / self.request_bytes)
    }

    /// Doubles the part size (within its cap and the memory budget).
    /// Whether it grew.
    pub(super) fn double_part_bytes(&mut self) -> bool {
        if self.cfg.fixed_part_bytes.is_some() {
            return false;
        }
        let grown = (self.part_bytes * 2)
            .min(self.cfg.max_part_bytes)
            .min(self.cfg.max_inflight_bytes.max(1));
        if grown <= self.part_bytes {
            return false;
        }
        self.rescale_parts(grown);
        true
    }

    /// Moves to parts of `part_bytes`, rescaling what Little's law knows:
    /// `scale`× the transfer, the same wait for the first byte, so latency
    /// L·(f + scale·(1 − f)), of which the wait is f / (f + scale·(1 − f)).
    pub(super) fn rescale_parts(&mut self, part_bytes: u64) {
        let scale = part_bytes as f64 / self.part_bytes.max(1) as f64;
        self.part_bytes = part_bytes;
        self.concurrency = self.clamp(self.concurrency);
        let f = self.ttfb_share;
        let latency = f + scale * (1.0 - f);
        if self.min_latency_secs.is_finite() {
            self.min_latency_secs *= latency;
        }
        // Short last parts stay short; at large shards that is a small error.
        self.request_bytes *= scale;
        self.ttfb_share = f / latency;
    }

    /// At most once a period: requests spent a share of their slot time
    /// (`rate_part_share`) waiting on the rate limiter, so the request rate
    /// binds and each request must carry more.
    pub(super) fn adjust_part_bytes(&mut self, rate_limited_secs: f64, period_secs: f64) {
        if self.cfg.fixed_part_bytes.is_some() || period_secs <= 0.0 {
            return;
        }
        let slot_secs = period_secs * self.concurrency.max(1) as f64;
        if rate_limited_secs > self.cfg.rate_part_share * slot_secs {
            self.double_part_bytes();
        }
    }
}
