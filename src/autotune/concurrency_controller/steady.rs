//! Steady state: follow Little's law, undo shrinks that cost goodput, and
//! start an upward probe every few periods.
//!
//! When the path is not full, goodput grows with concurrency and Little's
//! target rises with it; when it is full, more requests only queue, so the
//! target stays at the knee. Changes smaller than the hysteresis band are
//! ignored; each change is followed by a period to settle (two latencies
//! after a shrink, while the requests in flight drain), and a shrink that
//! costs goodput in two judged periods in a row is undone and raises the
//! headroom (one period can fall in the trough of a wave: requests started
//! together finish together, and the link idles while their successors
//! wait for first bytes). Two periods in a row whose Little's target is
//! 8% above the concurrency held mean capacity appeared: start-up runs
//! again from twice the concurrency, except above a knee start-up found
//! in the client's cores (there Little's steps and probes climb).

use super::startup::Ramp;
use super::{ConcurrencyController, Judged, Shrink, State};

impl ConcurrencyController {
    /// Judges one settled steady period (`periods` judged since the last
    /// change).
    pub(super) fn judge_steady(&mut self, periods: u32, judged: &Judged) -> State {
        if let Some(shrink) = self.last_shrink.filter(|s| self.lost_since(s, judged)) {
            return self.judge_loss(shrink, periods);
        }
        self.last_shrink = None;
        self.lower_guessed_latency(judged);
        let bps = judged.bps;
        let s = self.cfg.goodput_smoothing;
        self.goodput_bps =
            if self.goodput_bps == 0.0 { bps } else { (1.0 - s) * self.goodput_bps + s * bps };
        self.headroom = (self.headroom * self.cfg.headroom_decay).max(self.cfg.headroom);
        let c = self.concurrency as f64;
        let demand_met = judged.demand_met;
        // Requests waited on the rate limiter: the store's request rate is
        // the bottleneck, not the path, so goodput says nothing about how
        // many requests the path needs.
        let rate_bound = judged.rate_limited_secs > self.cfg.rate_bound_share * judged.secs * c;
        // When a probe is due: larger parts, where they let fewer requests
        // keep the path busy, in one step (each change costs a settling
        // period).
        if periods + 1 >= self.probe_interval
            && !rate_bound
            && !demand_met
            && self.long_first_byte_waits()
        {
            while self.gap_bound(self.goodput_bps) && self.double_part_bytes() {}
        }
        let target = self.little_target(self.goodput_bps);
        let from = self.concurrency;
        let band = 1.0 + self.cfg.hysteresis;
        // Goodput grows in step with requests: not full yet.
        let unsaturated =
            target as f64 >= c * self.cfg.unsaturated_margin && !rate_bound && !demand_met;
        let next = if demand_met {
            // The consumer is the bottleneck: shed towards what Little's law
            // says its rate needs, at most half a period (a far start can
            // open 16 for a consumer that needs 1), at least a tenth.
            self.demand_target(judged.taken_bps(), c)
        } else if rate_bound {
            self.concurrency
        } else if target as f64 > c * band {
            target.min((c * self.cfg.max_step_up).ceil() as usize)
        } else if (target as f64) < c / band {
            // Not below the knee start-up found on saturated cores while
            // they still are: there Little's law at the uncontended latency
            // undercounts (requests also wait for CPU), and on netlab at
            // 10 ms the shrinks from the knee (16) to 12 and 10 cost
            // a tenth of the goodput. A floor, never a raise: below the
            // knee already (a timeout's cut, a consumer's shed), it holds.
            let floor = self.cpu_knee.filter(|_| judged.lag_share >= self.cfg.cpu_lag);
            let floor = floor.unwrap_or(0).min(self.concurrency);
            target.max((c * self.cfg.max_step_down).floor() as usize).max(floor)
        } else {
            self.concurrency
        };
        // Not above a knee start-up found in the client's cores: there
        // "unsaturated" is Little's law at a latency the busy cores no
        // longer give, and a doubling only costs CPU (netlab at 20 ms, four
        // epochs: 3 of 16 runs went 37 → 64 after 6 s, one held 64 at
        // 0.6 of what 38 carried). Little's steps still climb.
        let above_cpu_knee = self.cpu_knee.is_some_and(|k| from >= k);
        // STOKER_LOG=stoker::autotune=debug: what each steady period judged.
        tracing::debug!(
            concurrency = from,
            next,
            target,
            goodput_mb_s = format_args!("{:.0}", self.goodput_bps / 1e6),
            latency_ms = format_args!("{:.0}", self.min_latency_secs * 1e3),
            request_mib = format_args!("{:.1}", self.request_bytes / 1048576.0),
            headroom = format_args!("{:.2}", self.headroom),
            lag_share = format_args!("{:.2}", judged.lag_share),
            periods,
            "Steady period."
        );
        if unsaturated && self.unsaturated_periods >= 1 && !above_cpu_knee {
            // Twice in a row: capacity appeared (a cap lifted, a link
            // widened). Ramp again instead of creeping up a step a period.
            self.unsaturated_periods = 0;
            // The levels measured before belong to the old path.
            self.levels.clear();
            self.cpu_knee = None;
            let best = self.goodput_bps;
            self.set_concurrency(from * 2);
            return State::Startup(Ramp::from(best, from));
        }
        if self.set_concurrency(next) {
            if next < from && !demand_met {
                // Judged: undone if it costs goodput. Not a shed for a
                // consumer that takes less: the goodput it loses is the
                // consumer's (a shed from 16 to 14 was undone that way).
                self.last_shrink = Some(Shrink::from(from, self.goodput_bps));
            }
            // The path changed: probe at the usual pace again.
            self.probe_interval = self.cfg.probe_every;
            self.unsaturated_periods = if unsaturated { self.unsaturated_periods + 1 } else { 0 };
            return State::Steady { settle: true, periods: 0 };
        }
        if periods + 1 >= self.probe_interval && !demand_met {
            return self.start_probe(c);
        }
        State::Steady { settle: false, periods: periods + 1 }
    }

    /// After a leap the uncontended latency is a guess: a part at the best
    /// rate a request carried in the leap's round, whose connections were
    /// still leaving TCP slow start (netlab at 20 ms: 8 MiB at 30–33 MB/s,
    /// 0.27 s, where whole parts at 32 requests took 0.23 in steady state;
    /// Little's law then asked for 37–49 requests where 32 carry the
    /// most). In the first steady periods, what whole parts took, if
    /// less, replaces it: any latency seen is at least the uncontended
    /// one. Only then: later, requests completing faster than before is
    /// what capacity appearing looks like, and it must still read so.
    fn lower_guessed_latency(&mut self, judged: &Judged) {
        if self.guessed_latency_periods == 0 {
            return;
        }
        self.guessed_latency_periods -= 1;
        let done = judged.done;
        if done.count < self.cfg.judged_completions || done.latency_secs <= 0.0 {
            return;
        }
        let (latency, bytes) = (done.latency_secs / done.count as f64, done.bytes as f64);
        // Whole parts only (the stream's first parts are cut small).
        let whole = bytes / done.count as f64 >= self.cfg.whole_part_share * self.request_bytes;
        if whole && latency < self.min_latency_secs {
            self.min_latency_secs = latency;
            self.ttfb_share = done.ttfb_secs / done.latency_secs;
        }
    }

    /// The requests in flight that use the rate the limiter allows while
    /// the store refuses: that rate times the latency, with headroom. The
    /// limiter shares a capped store out between nodes (AIMD), but only
    /// between nodes that ask for what it allows: a node of a fleet held at
    /// two slow requests (a 64 MiB part a second and a half) took 0.7
    /// answers a second where 2 were fair, and its limiter's rate went
    /// unused (Jain 0.85 over 1,000 such nodes).
    pub(super) fn contested_floor(&self, rps: Option<f64>) -> Option<usize> {
        let rps = rps?;
        (self.latency_secs > 0.0).then(|| (rps * self.latency_secs * self.headroom).ceil() as usize)
    }

    /// Whether a period lost goodput against what the last shrink had.
    /// Both estimates must agree: Little's overstates goodput right after a
    /// ramp (requests in flight doubled, the latencies seen are older),
    /// counted bytes come in waves.
    fn lost_since(&self, shrink: &Shrink, judged: &Judged) -> bool {
        let lost = shrink.before_bps * (1.0 - self.cfg.accept_gain);
        judged.bps < lost && judged.counted < lost
    }

    /// A period after a shrink lost goodput: the first loss is noted (it
    /// may be a trough), the second undoes the shrink (Little's law
    /// undercounted: the latency estimate is low, or jitter needs slack)
    /// and holds more headroom from now on.
    fn judge_loss(&mut self, shrink: Shrink, periods: u32) -> State {
        if shrink.losses == 0 {
            self.last_shrink = Some(Shrink { losses: 1, ..shrink });
            return State::Steady { settle: false, periods };
        }
        self.last_shrink = None;
        self.set_concurrency(shrink.from);
        self.goodput_bps = shrink.before_bps;
        self.headroom = (self.headroom * self.cfg.undo_headroom_growth).min(self.cfg.max_headroom);
        State::Steady { settle: true, periods: 0 }
    }

    /// Where a consumer-bound period sheds to from `c`, the consumer taking
    /// `bps` (`Judged::taken_bps`): Little's target for it, within
    /// [`demand_floor`, `demand_shed`] of `c`.
    pub(super) fn demand_target(&self, bps: f64, c: f64) -> usize {
        let shed = (c * self.cfg.demand_shed).floor() as usize;
        let floor = (c * self.cfg.demand_floor).floor() as usize;
        self.little_target(bps).clamp(floor.min(shed), shed)
    }
}
