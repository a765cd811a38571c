//! Start-up: BBR's ramp, then an exit to the knee.
//!
//! * From one request, or, where the first reply's first byte took 8 ms or
//!   more (a far store) and nothing was refused, from 8 at once: rounds at
//!   1 and 2 requests there measure TCP slow start, not the path. A far
//!   start whose first level was already the plateau (a thin link) halves
//!   while a level keeps 90% of it, to learn a less shared request. Where
//!   first bytes take 35 ms or more, the far start's first round steps
//!   ×4 (8 → 32), and ends after its first span where arrivals doubled
//!   over it: each level's slow start there costs 0.3–0.6 s. Where the
//!   new connections' first bytes also took a handshake's round trip
//!   more than the first request's, it leaps to 32 without measuring 8;
//!   the uncontended latency is then a part at the best rate a request
//!   carried once up to speed, not what the parts started in slow start
//!   took.
//! * A round in which the consumer's queue stayed full (it takes less than
//!   the path gives) ends start-up, shedding towards what it takes.
//! * Double while goodput grows by a quarter per round; after three rounds
//!   without that (or three at the concurrency cap), or two whose requests
//!   took twice the uncontended latency (they queue), the pipe is full.
//! * Where the engine reports bytes as they arrive (it and the simulator
//!   do), a round is judged on them (`arrival_round`): it waits for the
//!   added requests' first bytes, then measures for max(2 TTFB, 100 ms), a
//!   few hundred ms where a round of completed parts took a part's latency
//!   and more.
//! * From 8 requests up, a doubling grows only if each added request
//!   carried 30% of what one request carried alone: near a knee set by CPU
//!   or the server, +25% in all can still be +0.15 of a request each, and
//!   doubling again only queues.
//! * Below 8 requests, a doubling whose added requests each carried 80%
//!   of a lone request's rate makes the next step ×4 (1, 2, 8, 16, 32:
//!   three rounds to 32 instead of five). Rounds whose requests each
//!   carried under 80% shared the path: their latency is not learnt.
//! * At the exit it holds what Little's law says the plateau needs, at
//!   least the smallest level measured within 5% of the plateau, and
//!   shrinks by at most a quarter (on arrivals; half on completions) —
//!   unless the top level measured no better than the one below it (from
//!   8 up): then at least that level, not three quarters of the top.
//! * From 8 requests up, a round in which the engine's timer fired late
//!   for 15% of the time ran on saturated cores: the client's CPU is
//!   the knee. Start-up ends there: a round that grew is held; one that
//!   did not is looked at again (its new connections may still be in
//!   slow start), and a second flat look exits to the best level measured
//!   (more connections only cost more CPU). A round late for 70% of its
//!   time ran on melting cores: flat, it exits at once (not slow start);
//!   grown, it exits to the level below (judged like any shrink).
//! * Without arrivals a round lasts 1.5 request latencies and a completion
//!   per slot; growth is judged on bytes counted (Little's estimate reads
//!   high while requests in flight double); the plateau's goodput is the
//!   mean of its rounds after the first (whose new requests still wait for
//!   first bytes), each the mean of both estimates.

use super::period::{Completed, Period};
use super::{ConcurrencyController, Judged, Shrink, State};
use crate::autotune::arrival_round::{ArrivalRound, RoundMeasure};

/// Where a ramp stands: the best goodput so far and the concurrency that
/// had it, rounds without growth, and the plateau's goodput summed over
/// its rounds with their count (the first after a doubling is left out:
/// its new requests are still waiting for their first bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ramp {
    pub best_bps: f64,
    pub best_concurrency: usize,
    pub stalled: u32,
    pub plateau: (f64, u32),
    /// Descending from a far start whose first level was already the
    /// plateau: the plateau's goodput (see `judge_descent`).
    pub descent: Option<f64>,
}

impl Ramp {
    /// A ramp from `concurrency` that had `bps`.
    pub fn from(best_bps: f64, best_concurrency: usize) -> Ramp {
        Ramp { best_bps, best_concurrency, stalled: 0, plateau: (0.0, 0), descent: None }
    }
}

impl ConcurrencyController {
    /// Judges one start-up round.
    pub(super) fn judge_startup(&mut self, ramp: Ramp, judged: &Judged) -> State {
        let Ramp { best_bps, best_concurrency, stalled, plateau, descent } = ramp;
        let measured = judged.measured;
        // Growth is judged on counted bytes: Little's estimate overstates
        // goodput while requests in flight double every round. The plateau,
        // where they do not, uses both.
        let blended = judged.bps;
        let bps = judged.counted;
        // STOKER_LOG=stoker::autotune=debug: what each round measured.
        tracing::debug!(
            concurrency = self.concurrency,
            // On arrivals, the bytes that arrived; otherwise those counted.
            mb_s = format_args!("{:.0}", bps / 1e6),
            on_arrivals = measured.is_some(),
            per_request_mb_s =
                format_args!("{:.1}", measured.map_or(0.0, |m| m.per_request_bps) / 1e6),
            lag_share = format_args!("{:.2}", measured.map_or(0.0, |m| m.lag_share)),
            best_mb_s = format_args!("{:.0}", best_bps / 1e6),
            best_concurrency,
            stalled,
            "Start-up round."
        );
        if let Some(m) = measured {
            self.best_request_bps = self.best_request_bps.max(m.per_request_bps);
            match self.levels.iter_mut().find(|(c, _)| *c == self.concurrency) {
                Some(level) => level.1 = level.1.max(bps),
                None => self.levels.push((self.concurrency, bps)),
            }
        }
        if let Some(top) = descent {
            return self.judge_descent(ramp, top, judged);
        }
        let growing = bps >= best_bps * self.cfg.startup_growth
            && !judged.demand_met
            && measured.is_none_or(|m| self.adds_enough(m, best_bps, best_concurrency));
        if growing {
            // A round whose requests each carried well under what one
            // carried alone grew, but its requests shared the path: their
            // latency is not the uncontended one (a ×4 step lands past the
            // knee before it is known).
            let shared = measured.is_some_and(|m| {
                m.per_request_bps < self.cfg.startup_fast_share * self.best_request_bps
            });
            if !shared || self.growth_rounds.is_empty() {
                self.learn_latency(judged.done, measured.is_some());
            }
            if self.cpu_bound(measured) {
                // It grew, but on saturated cores: a doubling would cost
                // more CPU than it adds (the knee is here). On melting
                // cores the knee is the level below: the growth was
                // against a round cut short in slow start, and what more
                // connections cost the node shows in every later second.
                // The step down is judged like any shrink (undone if it
                // costs goodput twice).
                let here = self.concurrency;
                let knee = if self.melting(measured)
                    && (self.cfg.cpu_judged_from..here).contains(&best_concurrency)
                {
                    best_concurrency
                } else {
                    here
                };
                return self.exit_startup(blended, here, true, None, Some(knee));
            }
            let next = self.clamp(self.concurrency * 2);
            if next == self.concurrency {
                // At the cap: a plateau by force; judged like one. This
                // round still grew: its requests had doubled, so counted
                // bytes, as for growth.
                return State::Startup(Ramp {
                    best_bps: bps,
                    best_concurrency: self.concurrency,
                    stalled: 1,
                    plateau: (bps, 1),
                    descent: None,
                });
            }
            let before = self.concurrency;
            let fast = measured.is_some_and(|m| self.adds_linearly(m, best_bps, best_concurrency));
            if (fast && before < self.cfg.startup_fast_below) || self.far_first_round(before) {
                self.concurrency = self.clamp(before * self.cfg.startup_fast_factor);
            } else {
                self.concurrency = next;
            }
            return State::Startup(Ramp::from(bps, before));
        }
        // No growth on saturated cores, twice: more rounds will not find
        // any, and the level that last grew is the knee. Not once: a far
        // store's new connections are still in TCP slow start when a round
        // of ~0.15 s ends, and saturated cores slow it further (netlab at
        // 20 ms: 32 read 650 MB/s against 16's 700 and start-up held 16;
        // the next 100 ms at 32 carried 1,000–1,170).
        // The knee is then the best level measured, not the last that grew
        // (the first look at a level may have caught it in slow start).
        // A round whose timer was late most of its time (`cpu_melt_lag`)
        // is not a level caught in slow start: its added connections are
        // what the cores cannot serve, and a second look only leaves more
        // slow requests in flight to drain after the exit.
        let melting = self.melting(measured);
        let cpu_knee =
            (self.cpu_bound(measured) && (stalled >= 1 || melting)).then(|| self.best_level());
        let full = stalled + 1 >= self.cfg.startup_patience
            || judged.demand_met
            || cpu_knee.is_some()
            // Two rounds without growth while requests take twice the
            // uncontended latency: they queue on a full path, and a third
            // round (over a second at 128 requests that wait their turn)
            // only delays the shrink.
            || (stalled >= 1 && self.queued(judged.done));
        if full {
            // The plateau's mean goodput, not its best round: the best of a
            // few noisy rounds overstates it, and a shrink judged against
            // that looks like a loss.
            let best = (plateau.0 + blended) / f64::from(plateau.1 + 1);
            if cpu_knee.is_none() && !judged.demand_met && self.descends_from(best_concurrency) {
                self.set_concurrency(best_concurrency / 2);
                return State::Startup(Ramp {
                    descent: Some(best),
                    ..Ramp::from(best, best_concurrency)
                });
            }
            return self.exit_startup(
                best,
                best_concurrency,
                measured.is_some(),
                judged.demand_met.then(|| judged.taken_bps()),
                cpu_knee,
            );
        }
        State::Startup(Ramp {
            best_bps: best_bps.max(bps),
            best_concurrency,
            stalled: stalled + 1,
            plateau: if stalled == 0 { plateau } else { (plateau.0 + blended, plateau.1 + 1) },
            descent: None,
        })
    }

    /// The smallest level measured within `accept_gain` of the best one.
    fn best_level(&self) -> usize {
        let top = self.levels.iter().map(|(_, bps)| *bps).fold(0.0, f64::max);
        self.smallest_level_carrying(top * (1.0 - self.cfg.accept_gain)).unwrap_or(1)
    }

    /// The smallest level measured that carried at least `bps`.
    fn smallest_level_carrying(&self, bps: f64) -> Option<usize> {
        self.levels.iter().filter(|(_, level)| *level >= bps).map(|(c, _)| *c).min()
    }

    /// Whether the round that grew from `before` requests was a far start's
    /// first on a long path (`far_fast_first_byte_secs`): it is judged
    /// against nothing below it, and its next step is ×4 (8 → 32), as
    /// 2 → 8 is where a near store's added requests each carried a whole
    /// one. A link that 8 requests already fill reads flat at 32, and
    /// start-up descends from 8 as after a flat 16.
    fn far_first_round(&self, before: usize) -> bool {
        before == self.cfg.far_start_concurrency
            && self.levels.len() == 1
            && self.far_round_on_a_long_path()
    }

    /// A far start on a long round trip leaps ×4 (8 → 32) as soon as its
    /// first round's requests have their first bytes, before that level
    /// is measured: where their first bytes (new connections: a handshake,
    /// then the request) took `far_fast_first_byte_secs` and the handshake
    /// a `leap_handshake_share` of that over the first request's (on the
    /// listing's connection), the wait is the path's round trip, and every
    /// level's new connections will spend many of them in TCP slow start;
    /// 32 is then reached while the first 8 are still in theirs, as a
    /// static 32 opens them. 32 is the first level measured; a link fewer
    /// requests fill reads it flat at 64 and start-up descends from 32.
    /// Where the wait is the server's (the handshake costs little), 8 is
    /// measured first: its uncontended latency is what Little's law needs
    /// (the simulated grid, whose time to first byte is the server's: a
    /// leap there learnt latency at 32 shared requests and held 1.26–1.68×
    /// the connections needed).
    pub(super) fn leap_far(&mut self) {
        let first = self.cfg.far_start_concurrency;
        let ready = matches!(self.state, State::Startup(r) if r.best_bps == 0.0)
            && self.far_level == Some(first)
            && self.concurrency == first
            && self.levels.is_empty()
            && self.round.settled();
        if !ready || !self.long_round_trip() {
            return;
        }
        if self.set_concurrency(first * self.cfg.startup_fast_factor) {
            self.round = ArrivalRound::new(self.concurrency - first);
            self.period = Period::default();
            self.far_level = Some(self.concurrency);
        }
    }

    /// Whether the far start's new connections waited
    /// `far_fast_first_byte_secs` for their first bytes, a
    /// `leap_handshake_share` of it more than the first request did.
    fn long_round_trip(&self) -> bool {
        let ((sum, n), (sum0, n0)) = (self.first_byte_secs, self.far_first_bytes);
        if n0 == 0 || n <= n0 {
            return false;
        }
        let (new, old) = ((sum - sum0) / (n - n0) as f64, sum0 / n0 as f64);
        new >= self.cfg.far_fast_first_byte_secs && new - old >= self.cfg.leap_handshake_share * new
    }

    /// Whether start-up leapt past the far start's first level
    /// (`leap_far`): nothing below the leap was measured.
    fn leapt(&self) -> bool {
        self.far_level.is_some_and(|l| l > self.cfg.far_start_concurrency)
    }

    /// Whether start-up is in (or has just measured) a far start's first
    /// level on a long path (`far_fast_first_byte_secs`).
    pub(super) fn far_round_on_a_long_path(&self) -> bool {
        self.far_level == Some(self.cfg.far_start_concurrency)
            && self.concurrency == self.cfg.far_start_concurrency
            && self.levels.len() <= 1
            && self.mean_first_byte_secs().is_some_and(|t| t >= self.cfg.far_fast_first_byte_secs)
    }

    /// Whether start-up, which began at `far_start_concurrency` on a far
    /// store, found its first level already the plateau: nothing below it
    /// was measured, and a thin link may need far fewer requests (one
    /// 400 MB/s connection fills a 1 Gbit/s link). Then it descends.
    fn descends_from(&self, best_concurrency: usize) -> bool {
        self.far_level == Some(best_concurrency)
            && best_concurrency > 1
            && self.arrivals
            && !self.levels.iter().any(|(c, _)| *c < best_concurrency)
    }

    /// One round of the descent from a far start's first level, which had
    /// the plateau's goodput `top`: halve while a level keeps
    /// `descent_keep` of it, down to one request. Then hold what Little's
    /// law asks of `top` (where a smaller level kept it, at the latency the
    /// least shared level measured), and at least the smallest level that
    /// kept `descent_keep` of the plateau. Each round waits
    /// for the requests in flight to drain to the new level
    /// (`ArrivalRound::after_shrink`).
    fn judge_descent(&mut self, ramp: Ramp, top: f64, judged: &Judged) -> State {
        let kept = judged.counted >= top * self.cfg.descent_keep;
        if kept && self.concurrency > 1 && !judged.demand_met {
            self.set_concurrency(self.concurrency / 2);
            return State::Startup(ramp);
        }
        // The smallest level measured that kept `share` of the plateau.
        let smallest =
            |share: f64| self.smallest_level_carrying(top * share).unwrap_or(ramp.best_concurrency);
        let (kept, knee) = (smallest(self.cfg.descent_keep), smallest(1.0 - self.cfg.accept_gain));
        if kept < ramp.best_concurrency {
            // Fewer requests kept the plateau: the far start's rounds shared
            // the path, and the latency they taught overstates the need.
            // Little's law at what one request carried on the least shared
            // level instead.
            self.latency_from_arrivals();
        }
        self.goodput_bps = top;
        let needed = self.little_target(top).max(kept);
        self.set_concurrency(needed);
        if self.concurrency < knee {
            // Judged like any shrink: back to the knee if it loses goodput.
            self.last_shrink = Some(Shrink::from(knee, top));
        }
        self.probe_interval = self.cfg.probe_soon;
        State::Steady { settle: true, periods: 0 }
    }

    /// Learns the uncontended latency from a round that grew. Rounds that
    /// still grew ran uncontended, except perhaps the last two when judged
    /// on completions (goodput lags a doubling by a round; arrivals are
    /// measured after the added requests stream, and each of their rounds is
    /// shorter than a request). The latency is the completion-weighted mean
    /// of the others: every completion counts, not the luckiest round.
    /// After a leap no round ran uncontended: see the exception below.
    fn learn_latency(&mut self, done: Completed, on_arrivals: bool) {
        self.growth_rounds.push(done);
        if on_arrivals && self.leapt() {
            // No level was measured below the leap: the parts completed so
            // far started in TCP slow start (8 MiB in ~0.4 s at 20 ms where
            // 32 streaming requests take ~0.25), and Little's law at that
            // latency asked for 48–57 where 32 carried the most (netlab,
            // four epochs). A part at the best rate a request carried
            // once up to speed (a round's last span) is the latency.
            self.latency_from_arrivals();
            self.guessed_latency_periods = self.cfg.guessed_latency_periods;
            return;
        }
        let n = self.growth_rounds.len();
        let lagging = if on_arrivals { 0 } else { 2 };
        let trusted = &self.growth_rounds[..n.saturating_sub(lagging).max(1)];
        let all = trusted.iter().fold(Completed::default(), Completed::plus);
        if all.count > 0 && all.latency_secs > 0.0 && all.bytes > 0 {
            self.min_latency_secs = all.latency_secs / all.count as f64;
            self.ttfb_share = all.ttfb_secs / all.latency_secs;
            self.request_bytes = all.bytes as f64 / all.count as f64;
        } else if on_arrivals {
            // Short rounds may complete nothing yet: the latency from what
            // arrived.
            self.latency_from_arrivals();
        }
    }

    /// The pipe is full at `best` goodput: hold what Little's law says it
    /// needs, at least half the last concurrency that grew (the ramp
    /// overshoots by up to 2×) and at most the top level (growth under 25%
    /// is still growth: at a few requests, the last ones fill
    /// time-to-first-byte gaps). `cpu_knee`: the level at which the
    /// client's cores saturated, held as it is. `demand_bps`: the consumer
    /// was the bottleneck and took that much.
    fn exit_startup(
        &mut self,
        best: f64,
        best_concurrency: usize,
        on_arrivals: bool,
        demand_bps: Option<f64>,
        cpu_knee: Option<usize>,
    ) -> State {
        // On arrivals each level's goodput is measured: hold at least the
        // smallest level that came within 5% of the plateau (the knee as
        // measured; Little's law at the uncontended latency undercounts
        // where requests that started together keep waiting for first bytes
        // together, or where latency grows with load).
        let knee = self.smallest_level_carrying(best * (1.0 - self.cfg.accept_gain)).unwrap_or(0);
        let needed = self.little_target(best).max(knee);
        let from = self.concurrency;
        let half = (best_concurrency / 2).max(1);
        // A quarter below the top level, or below twice the last level that
        // grew where a fast step (×4) overshot further.
        let top = from.min(2 * best_concurrency.max(1));
        let level = |c: usize| self.levels.iter().find(|(l, _)| *l == c).map(|(_, b)| *b);
        // A top level measured no better than the level below it (from
        // `startup_judged_from` up, on rounds long enough to trust): the
        // doubling added nothing, and the level below is the knee (on a
        // 2-core node 64 requests cost ~1 CPU-s a pass more than 32).
        let flat_top = best_concurrency >= self.cfg.startup_judged_from
            && from > best_concurrency
            && matches!((level(from), level(best_concurrency)),
                (Some(t), Some(b)) if t <= b * (1.0 + self.cfg.accept_gain));
        let lo = if let Some(knee) = cpu_knee {
            knee
        } else if on_arrivals && flat_top {
            best_concurrency
        } else if on_arrivals {
            half.max((top as f64 * self.cfg.exit_keep).floor() as usize)
        } else {
            half
        };
        self.goodput_bps = best;
        self.cpu_knee = cpu_knee;
        let hi = cpu_knee.unwrap_or(from).max(lo);
        self.set_concurrency(needed.clamp(lo, hi));
        if let Some(taken) = demand_bps {
            // The consumer takes less than the path gives: shed towards what
            // it takes, as steady state does.
            let shed = self.demand_target(taken, from as f64);
            self.set_concurrency(shed.min(self.concurrency));
        }
        if self.concurrency < from && demand_bps.is_none() {
            // Judged like any shrink: undone if it costs goodput (when
            // latency grows with load, Little's law at the uncontended
            // latency undercounts).
            self.last_shrink = Some(Shrink::from(best_concurrency.max(self.concurrency), best));
        }
        // Little's law at the uncontended latency is a guess where latency
        // grows with load: check it soon.
        self.probe_interval = self.cfg.probe_soon;
        State::Steady { settle: true, periods: 0 }
    }

    /// Whether a round on arrivals, from `cpu_judged_from` requests up,
    /// ran on saturated cores (the engine's timer late for
    /// `cpu_lag` of it): the knee is the client's CPU.
    fn cpu_bound(&self, measured: Option<RoundMeasure>) -> bool {
        self.concurrency >= self.cfg.cpu_judged_from
            && measured.is_some_and(|m| m.lag_share >= self.cfg.cpu_lag)
    }

    /// Whether a round's timer was late for `cpu_melt_lag` of it: the
    /// node's cores, not the path, set what more requests carry.
    fn melting(&self, measured: Option<RoundMeasure>) -> bool {
        measured.is_some_and(|m| m.lag_share >= self.cfg.cpu_melt_lag)
    }

    /// Whether the requests a doubling added each carried a fair share of
    /// what one request carries alone (`startup_added_share`), judged from
    /// `startup_judged_from` requests up. Below the knee every added request
    /// adds a whole request's rate; near it (the CPU of a 2-core node at
    /// 16 requests: +16 requests added 0.15 of one each, yet 25% in all)
    /// doubling again only queues requests and memory.
    fn adds_enough(&self, m: RoundMeasure, best_bps: f64, before: usize) -> bool {
        before < self.cfg.startup_judged_from
            || self
                .added_share(m, best_bps, before)
                .is_none_or(|s| s >= self.cfg.startup_added_share)
    }

    /// What each request the last step added carried, as a share of what
    /// one request carries alone; `None` when nothing was added or no lone
    /// rate is known yet.
    fn added_share(&self, m: RoundMeasure, best_bps: f64, before: usize) -> Option<f64> {
        let added = self.concurrency.saturating_sub(before);
        (added > 0 && self.best_request_bps > 0.0)
            .then(|| (m.bps - best_bps) / (added as f64 * self.best_request_bps))
    }

    /// Whether the requests the last step added each carried
    /// `startup_fast_share` of what one request carries alone: far below
    /// any knee, where the next step may grow faster. Not the first round
    /// (nothing was added yet).
    fn adds_linearly(&self, m: RoundMeasure, best_bps: f64, before: usize) -> bool {
        self.added_share(m, best_bps, before).is_some_and(|s| s >= self.cfg.startup_fast_share)
    }

    /// The uncontended latency from a growing round's arrivals, where no
    /// part has completed yet: by Little's law, a part's bytes over what one
    /// request in flight carried (waits for first bytes included), at the
    /// best per-request rate of the start-up rounds (the first ones had the
    /// path to themselves). Completed parts replace it as they come.
    fn latency_from_arrivals(&mut self) {
        if self.best_request_bps <= 0.0 {
            return;
        }
        self.min_latency_secs = self.part_bytes as f64 / self.best_request_bps;
        let ttfb = self.mean_first_byte_secs().unwrap_or(0.0);
        self.ttfb_share = (ttfb / self.min_latency_secs).min(0.9);
        self.request_bytes = self.part_bytes as f64;
    }

    /// Whether the requests completed in a period took `queued_latency`×
    /// the uncontended latency on average: they queue on a full path.
    fn queued(&self, done: Completed) -> bool {
        done.count > 0
            && self.min_latency_secs.is_finite()
            && done.latency_secs / done.count as f64
                > self.cfg.queued_latency * self.min_latency_secs
    }
}
