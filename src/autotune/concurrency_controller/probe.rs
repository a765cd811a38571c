//! Upward probes: every few steady periods, +15%, kept only on a 5% gain.
//!
//! A probe looks for capacity that appeared later (or that Little's law at
//! the uncontended latency undercounts, where latency grows with load). A
//! kept probe steps halfway back (the knee lies between base and probe),
//! judged like any shrink, and the next probe comes soon; one that fails
//! doubles the wait for the next, up to `probe_backoff_max`× (probes cost
//! connections).

use super::{ConcurrencyController, Shrink, State};

impl ConcurrencyController {
    /// Starts a probe `probe_step` above the concurrency `c` held.
    pub(super) fn start_probe(&mut self, c: f64) -> State {
        let base = self.concurrency;
        let step = ((c * self.cfg.probe_step).round() as usize).max(1);
        if self.set_concurrency(base + step) {
            State::Probe { base, base_bps: self.goodput_bps, settle: true }
        } else {
            State::Steady { settle: false, periods: 0 }
        }
    }

    /// Judges a settled probe from `base` (which had `base_bps`) by the
    /// goodput `bps` it had.
    pub(super) fn judge_probe(&mut self, base: usize, base_bps: f64, bps: f64) -> State {
        if bps >= base_bps * (1.0 + self.cfg.accept_gain) {
            // More goodput than Little's law predicted for this many
            // requests: learn the headroom that delivered it.
            self.goodput_bps = bps;
            let ideal = self.ideal(bps).unwrap_or(0.0);
            // The knee lies somewhere between the base and the probe: try
            // halfway back, judged like any shrink (undone if it costs
            // goodput). A kept probe otherwise holds the whole step, and the
            // headroom learnt from it keeps it inside the hysteresis band.
            let probed = self.concurrency;
            let trim = probed.saturating_sub(base) / 2;
            if trim >= 2 {
                self.set_concurrency(probed - trim);
                self.last_shrink = Some(Shrink::from(probed, bps));
            }
            // Only from a few requests up: at one or two, rounding alone
            // looks like a large headroom.
            if ideal >= 2.0 {
                self.headroom =
                    self.headroom.max(self.concurrency as f64 / ideal).min(self.cfg.max_headroom);
            }
            // The path had room: look for more soon, not in eight periods
            // (at +15% a probe, a knee twice as far takes five probes).
            self.probe_interval = self.cfg.probe_soon;
        } else {
            self.set_concurrency(base);
            self.probe_interval =
                (self.probe_interval * 2).min(self.cfg.probe_backoff_max * self.cfg.probe_every);
        }
        State::Steady { settle: true, periods: 0 }
    }
}
