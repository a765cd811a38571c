//! One start-up round judged on bytes as they arrive.
//!
//! ```text
//!  change ─▶ [settle: the added requests wait for first bytes] ─▶ [measure: arrived bytes / time] ─▶ judged
//!            ends when every added request has its first byte,       max(2 × TTFB, 100 ms), on while
//!            or after 3 × TTFB (the budget or the plan held some back)  arrivals still rise (≤ 3 spans)
//! ```
//!
//! New connections spend their first round trips in TCP slow start: on a
//! 30 ms path a round measured over its first 100 ms of arrivals read each
//! level low, the next doubling then looked like growth against it, and
//! the ramp went on past the knee (32 → 64 in 4 of 5 cold runs on netlab at
//! 30 ms / 250 Mbit, holding 64 in 3). So a round measures on while the
//! last window carried 15% more than the one before it, up to three
//! spans, and is judged on its last span: the level's rate once its
//! connections are up to speed.
//!
//! A round judged on completed parts lasts until every slot has completed
//! a part: on a 20 ms path with 8 MiB parts at 50 MB/s per connection that
//! is ~0.4 s a round, and the ramp from 1 to 32 requests took 2 s of a 3 s
//! job. Arrived bytes tell the same thing once the added requests stream:
//! a round is then about a time to first byte plus 100 ms, and the measure
//! has no completion waves in it (requests started together finish
//! together, which a round of completions catches or misses).

use super::observation::WindowObservation;

/// What a round measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RoundMeasure {
    /// Bytes arrived per second over the measured part.
    pub bps: f64,
    /// The same per request in flight: what one connection carries.
    pub per_request_bps: f64,
    /// Share of the round's time (settling included) the engine's timer
    /// fired late: the client's cores were saturated (`cpu_lag`).
    pub lag_share: f64,
}

/// Settings of a round (see `ControllerConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RoundTimes {
    /// Measure for this many times to first byte (2)…
    pub measure_ttfbs: f64,
    /// …and at least this long (100 ms: two of the engine's windows).
    pub min_measure_secs: f64,
    /// Stop waiting for first bytes after this many times to first byte
    /// (3): the memory budget or the end of the plan may hold requests back.
    pub settle_ttfbs: f64,
    /// Measure on while the last window carried this much more per second
    /// than the one before it (1.15: slow start still ramping)…
    pub rising: f64,
    /// …for at most this many measuring spans in all (3).
    pub max_spans: f64,
    /// Where set, a round whose first span's last window carried this many
    /// times its first ends there: TCP slow start (a congestion window
    /// doubles every round trip), not the level's rate.
    pub slow_start_rise: Option<f64>,
}

/// A round in progress.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct ArrivalRound {
    /// Requests the change before this round added.
    added: u64,
    settle_secs: f64,
    first_bytes: u64,
    measuring: bool,
    measured_secs: f64,
    lag_secs: f64,
    /// After a shrink: measuring waits until the requests in flight have
    /// drained to the new level (those already started would be measured
    /// as the smaller level's goodput).
    drain_to: Option<f64>,
    /// The measured windows: seconds, bytes arrived, requests in flight ×
    /// seconds.
    windows: Vec<(f64, u64, f64)>,
}

impl ArrivalRound {
    pub fn new(added: usize) -> ArrivalRound {
        ArrivalRound { added: added as u64, ..ArrivalRound::default() }
    }

    /// A round after a shrink to `concurrency` requests.
    pub fn after_shrink(concurrency: usize) -> ArrivalRound {
        ArrivalRound { drain_to: Some(concurrency as f64), ..ArrivalRound::default() }
    }

    /// Whether the added requests have their first bytes (or the wait for
    /// them is over): measuring has begun.
    pub fn settled(&self) -> bool {
        self.measuring
    }

    /// Feeds one window; the measure once the round is over. `ttfb_secs`:
    /// the mean time to first byte seen so far (`None` before any).
    pub fn feed(
        &mut self,
        obs: &WindowObservation,
        ttfb_secs: Option<f64>,
        times: &RoundTimes,
    ) -> Option<RoundMeasure> {
        // Lag over the whole round: the step's own cost (new connections
        // set up at once) is part of what it did to the cores.
        self.lag_secs += obs.timer_lag_secs;
        if let Some(level) = self.drain_to {
            // Half a request of slack: the window's mean of 10 ms samples.
            if obs.inflight_mean > level + 0.5 {
                return None;
            }
            self.drain_to = None;
            self.added = 0;
        }
        if !self.measuring {
            self.settle_secs += obs.window_secs;
            self.first_bytes += obs.first_bytes;
            let ttfb = ttfb_secs?;
            // Measuring starts with the next window: the new requests have
            // streamed for a window by then (TCP's slow start).
            self.measuring =
                self.first_bytes >= self.added || self.settle_secs >= times.settle_ttfbs * ttfb;
            return None;
        }
        self.measured_secs += obs.window_secs;
        self.windows.push((
            obs.window_secs,
            obs.arrived_bytes,
            obs.inflight_mean * obs.window_secs,
        ));
        let ttfb = ttfb_secs.unwrap_or(0.0);
        let span = (times.measure_ttfbs * ttfb).max(times.min_measure_secs);
        // (A nanosecond of slack: windows of 50 ms do not sum exactly.)
        if self.measured_secs + 1e-9 < span {
            return None;
        }
        let slow_start = times.slow_start_rise.is_some_and(|f| self.grew_over_span(f));
        if self.rising(times.rising)
            && !slow_start
            && self.measured_secs + 1e-9 < times.max_spans * span
        {
            return None;
        }
        // The last span: the windows from the end that cover it.
        let (mut secs, mut bytes, mut area) = (0.0, 0u64, 0.0);
        for &(s, b, a) in self.windows.iter().rev() {
            (secs, bytes, area) = (secs + s, bytes + b, area + a);
            if secs + 1e-9 >= span {
                break;
            }
        }
        let bps = bytes as f64 / secs;
        let inflight = (area / secs).max(1.0);
        let lag_share = (self.lag_secs / (self.settle_secs + self.measured_secs)).min(1.0);
        Some(RoundMeasure { bps, per_request_bps: bps / inflight, lag_share })
    }

    /// Whether the last measured window carried `factor`× what the first
    /// carried per second (the span grew: TCP slow start).
    fn grew_over_span(&self, factor: f64) -> bool {
        match self.windows[..] {
            [ref first, .., ref last] => rate(last) >= factor * rate(first),
            _ => false,
        }
    }

    /// Whether the last measured window carried `factor`× what the one
    /// before it carried per second (arrivals still rising).
    fn rising(&self, factor: f64) -> bool {
        match self.windows[..] {
            [.., ref before, ref last] => rate(last) > factor * rate(before),
            _ => false,
        }
    }
}

/// Bytes per second of a measured window (0 for an empty one).
fn rate(&(secs, bytes, _): &(f64, u64, f64)) -> f64 {
    if secs > 0.0 { bytes as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: RoundTimes = RoundTimes {
        measure_ttfbs: 2.0,
        min_measure_secs: 0.1,
        settle_ttfbs: 3.0,
        rising: 1.15,
        max_spans: 3.0,
        slow_start_rise: None,
    };

    fn window(arrived: u64, first_bytes: u64, inflight: f64) -> WindowObservation {
        WindowObservation {
            window_secs: 0.05,
            arrived_bytes: arrived,
            first_bytes,
            inflight_mean: inflight,
            ..WindowObservation::default()
        }
    }

    #[test]
    fn measures_after_the_added_requests_stream() {
        let mut r = ArrivalRound::new(2);
        // Two windows of waiting: the old request streams, one new one starts.
        assert_eq!(r.feed(&window(1000, 0, 3.0), Some(0.05), &TIMES), None);
        assert_eq!(r.feed(&window(1000, 1, 3.0), Some(0.05), &TIMES), None);
        // The second new request: settled; its window is not measured.
        assert_eq!(r.feed(&window(2000, 1, 3.0), Some(0.05), &TIMES), None);
        // 100 ms of three streams at 30 000 B/s each.
        assert_eq!(r.feed(&window(4500, 0, 3.0), Some(0.05), &TIMES), None);
        let m = r.feed(&window(4500, 0, 3.0), Some(0.05), &TIMES).expect("judged");
        assert!((m.bps - 90_000.0).abs() < 1e-6, "{m:?}");
        assert!((m.per_request_bps - 30_000.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn a_round_measures_on_while_arrivals_rise_and_is_judged_on_its_last_span() {
        let mut r = ArrivalRound::new(0);
        assert_eq!(r.feed(&window(1000, 1, 2.0), Some(0.05), &TIMES), None);
        // Slow start: each window carries more; the round goes on.
        assert_eq!(r.feed(&window(1000, 0, 2.0), Some(0.05), &TIMES), None);
        assert_eq!(r.feed(&window(2000, 0, 2.0), Some(0.05), &TIMES), None);
        assert_eq!(r.feed(&window(4000, 0, 2.0), Some(0.05), &TIMES), None);
        // Up to speed: judged on the last 100 ms, not the ramp's mean.
        let m = r.feed(&window(4000, 0, 2.0), Some(0.05), &TIMES).expect("judged");
        assert!((m.bps - 80_000.0).abs() < 1e-6, "{m:?}");
        assert!((m.per_request_bps - 40_000.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn a_round_in_slow_start_ends_after_its_first_span_where_asked() {
        // A far start's first round on a long path: arrivals doubled over
        // its first span (TCP slow start); judged after 100 ms, not 300.
        let times = RoundTimes { slow_start_rise: Some(2.0), ..TIMES };
        let mut r = ArrivalRound::new(0);
        assert_eq!(r.feed(&window(1000, 1, 1.0), Some(0.05), &times), None);
        assert_eq!(r.feed(&window(1000, 0, 1.0), Some(0.05), &times), None);
        let m = r.feed(&window(2000, 0, 1.0), Some(0.05), &times).expect("judged");
        assert!((m.bps - 3000.0 / 0.1).abs() < 1e-6, "{m:?}");
        // Rising, by less than twice over the span: measured on.
        let mut r = ArrivalRound::new(0);
        assert_eq!(r.feed(&window(1000, 1, 1.0), Some(0.05), &times), None);
        assert_eq!(r.feed(&window(1000, 0, 1.0), Some(0.05), &times), None);
        assert_eq!(r.feed(&window(1500, 0, 1.0), Some(0.05), &times), None);
    }

    #[test]
    fn a_round_that_keeps_rising_ends_after_three_spans() {
        let mut r = ArrivalRound::new(0);
        assert_eq!(r.feed(&window(1000, 1, 1.0), Some(0.05), &TIMES), None);
        let mut judged = None;
        for i in 0..6 {
            judged = r.feed(&window(1000 << i, 0, 1.0), Some(0.05), &TIMES);
            assert_eq!(judged.is_some(), i == 5, "window {i}: {judged:?}");
        }
        let m = judged.expect("judged");
        assert!((m.bps - (16_000.0 + 32_000.0) / 0.1).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn requests_held_back_do_not_stall_the_round() {
        // Four added, one ever starts (the budget holds three back).
        let mut r = ArrivalRound::new(4);
        assert_eq!(r.feed(&window(0, 1, 1.0), Some(0.04), &TIMES), None);
        assert_eq!(r.feed(&window(100, 0, 1.0), Some(0.04), &TIMES), None);
        // 3 × 40 ms of settling are over after the third window.
        assert_eq!(r.feed(&window(100, 0, 1.0), Some(0.04), &TIMES), None);
        assert_eq!(r.feed(&window(100, 0, 1.0), Some(0.04), &TIMES), None);
        assert!(r.feed(&window(100, 0, 1.0), Some(0.04), &TIMES).is_some());
    }

    #[test]
    fn a_round_after_a_shrink_waits_for_the_requests_to_drain() {
        let mut r = ArrivalRound::after_shrink(4);
        // Eight still in flight, then six: the old level's goodput.
        assert_eq!(r.feed(&window(8000, 0, 8.0), Some(0.04), &TIMES), None);
        assert_eq!(r.feed(&window(6000, 0, 6.0), Some(0.04), &TIMES), None);
        // Drained: one window to start measuring, then 100 ms at 4.
        assert_eq!(r.feed(&window(4000, 0, 4.0), Some(0.04), &TIMES), None);
        assert_eq!(r.feed(&window(4000, 0, 4.0), Some(0.04), &TIMES), None);
        let m = r.feed(&window(4000, 0, 4.0), Some(0.04), &TIMES).expect("judged");
        assert!((m.bps - 80_000.0).abs() < 1e-6, "{m:?}");
        assert!((m.per_request_bps - 20_000.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn nothing_is_judged_before_a_first_byte() {
        let mut r = ArrivalRound::new(0);
        for _ in 0..100 {
            assert_eq!(r.feed(&window(0, 0, 1.0), None, &TIMES), None);
        }
    }

    #[test]
    fn long_waits_measure_longer() {
        // 200 ms to first byte: measure 400 ms, not 100.
        let mut r = ArrivalRound::new(0);
        assert_eq!(r.feed(&window(0, 0, 1.0), Some(0.2), &TIMES), None);
        let judged = (0..20).position(|_| r.feed(&window(10, 0, 1.0), Some(0.2), &TIMES).is_some());
        assert_eq!(judged, Some(7), "8 windows of 50 ms");
    }
}
