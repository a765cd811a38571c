//! The concurrency and part-size controller: a pure state machine fed
//! [`WindowObservation`]s at any cadence; it judges whole periods.
//!
//! ```text
//!  Startup ──3 rounds without ≥25% growth──▶ Steady ──every 8 periods──▶ ProbeUp
//!  (×2 per round)                          (Little's law)  ◀─keep if +5%─┘
//!                                  (2 periods after the exit or a kept probe)
//! ```
//!
//! * Startup is BBR's: double while goodput grows by a quarter per round;
//!   after three rounds without that (or three at the concurrency cap), or
//!   two whose requests took twice the uncontended latency (they queue),
//!   the pipe is full. Where the engine reports bytes as they arrive (it
//!   and the simulator do), a round is judged on them (`arrival_round`):
//!   it waits for the added requests' first bytes, then measures for
//!   max(2 TTFB, 100 ms), a few hundred ms where a round of completed
//!   parts took a part's latency and more. A doubling from 8 requests up
//!   also grows only if each added request carried 30% of what one request
//!   carried alone: near a knee set by CPU or the server, +25% in all can
//!   still be +0.15 of a request each, and doubling again only queues. At
//!   the exit it holds at least the smallest level measured within 5% of
//!   the plateau and shrinks by at most a quarter. Without arrivals a
//!   round lasts 1.5 request latencies and a completion per slot; growth is
//!   judged on bytes counted (Little's estimate reads high while requests
//!   in flight double); the plateau's goodput is the mean of its rounds
//!   after the first (whose new requests still wait for first bytes), each
//!   the mean of both estimates (counted bytes come in waves).
//! * Steady follows Little's law. The mean latency of the rounds that grew
//!   is the uncontended latency `L0`; a goodput `G` of requests of `B`
//!   bytes on average (the mean of the requests `L0` was measured on: a
//!   shard's last part is short) needs `n = G·L0/B` requests in flight,
//!   and the controller holds 5%
//!   more, or what keeps the path busy 97% of the time despite the
//!   requests' waits for their first bytes where that is more (at a few
//!   requests, all of them waiting at once idles the path; see
//!   `gap_cover`). When the path is not full, goodput grows with
//!   concurrency and the target rises with it; when it is full, more
//!   requests only queue, so the target stays at the knee. Changes smaller
//!   than a 15% band are ignored (hysteresis); each change is followed by a
//!   period to settle (two latencies after a shrink, while the requests in
//!   flight drain), and a shrink that costs goodput in two periods in a row
//!   is undone and raises the headroom (one period can fall in the trough
//!   of a wave).
//! * Every eighth period an upward probe (+15%) looks for capacity that
//!   appeared later; it is kept only if goodput rises by 5%, and then steps
//!   halfway back (the knee lies between base and probe), judged like any
//!   shrink. A probe that fails doubles the wait for the next (up to 32
//!   periods): probes cost connections. The first probe after start-up,
//!   and the next after a kept one, come two periods on: where latency
//!   grows with load (a server sharing the client's CPU, or one that the
//!   ramp's last round overloaded, so the plateau reads low) Little's law
//!   at `L0` settles low, and climbing at one probe per eight periods took
//!   longer than a 10 s benchmark.
//! * Periods last several request latencies and at least one completion per
//!   slot, and a judged steady period at least 20 completions (one more or
//!   less is then the 5% judged on), so a measurement can be trusted.
//!   Goodput is estimated by Little's law too (requests in flight × bytes
//!   per request / latency), averaged with the bytes counted.
//! * Caps: bytes in flight (concurrency × part size) within the memory
//!   budget; a consumer whose ready queue is full needs no more fetching, so
//!   concurrency only goes down then.
//! * Part size: when requests wait on the request-rate limiter (the store
//!   throttles the request rate), bytes per request must grow instead, so the
//!   part size doubles (within its cap and the memory budget). And when a
//!   probe is due on a path where a few requests spend much of their lives
//!   waiting for first bytes, so that covering those gaps takes a whole
//!   request more than Little's law, parts double until it does not: fewer
//!   requests (and fewer GETs) keep the path as busy. At the probe's slot,
//!   not at once: a change of parts costs a settling period that a cold
//!   start should not pay.
//! * Timeouts cut concurrency by 30%: too many connections for the path.

use super::arrival_round::{ArrivalRound, RoundMeasure, RoundTimes};
use super::gap_cover::requests_to_cover;
use super::observation::{Decision, Phase, WindowObservation};
use super::warm_start::WarmStart;

/// Controller settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// 1 request: the first round measures the uncontended latency, which
    /// Little's law needs later (at 4, a small link is already shared).
    pub initial_concurrency: usize,
    pub min_concurrency: usize,
    pub max_concurrency: usize,
    /// Bytes in flight may not exceed this (the fetch memory budget).
    pub max_inflight_bytes: u64,
    /// 8 MiB, the AWS CRT default; doubled when the request rate binds.
    pub initial_part_bytes: u64,
    pub min_part_bytes: u64,
    /// 64 MiB: beyond this a retry costs too much.
    pub max_part_bytes: u64,
    /// Pin concurrency (the user said `--concurrency N`).
    pub fixed_concurrency: Option<usize>,
    /// Pin part size (`--part-bytes`).
    pub fixed_part_bytes: Option<u64>,
    /// 3 request latencies per steady period, and at least 50 ms.
    pub steady_latencies: f64,
    pub min_window_secs: f64,
    /// Startup: growth that counts as growth (BBR's 25%), and patience (3).
    pub startup_growth: f64,
    pub startup_patience: u32,
    /// Startup also ends after two rounds without growth whose requests
    /// took this many uncontended latencies (2): they queue.
    pub queued_latency: f64,
    /// Requests held above Little's law's need (5%), and the band within
    /// which the target is ignored (15%).
    pub headroom: f64,
    pub hysteresis: f64,
    /// Share of the path the requests in flight keep busy despite their
    /// time-to-first-byte gaps (97%; see `gap_cover`).
    pub fill: f64,
    /// Upward probes: every 8 periods, +15%, kept on a 5% gain; each probe
    /// that fails doubles the wait, up to 4× (a probe costs connections).
    pub probe_every: u32,
    /// The wait after start-up and after a kept probe (2 periods): then
    /// the path may well have more room.
    pub probe_soon: u32,
    pub probe_step: f64,
    pub accept_gain: f64,
    /// Completions a steady period needs before it is judged (20: one
    /// completion is then 5% of the count, the gain judged on).
    pub judged_completions: u64,
    /// On arrived bytes, a doubling grows only if each added request added
    /// 30% of what one request carried alone, from 8 requests up: below 8,
    /// a 100 ms measure holds a few parts, and one request's wait for its
    /// next first byte swings the sum by a quarter.
    pub startup_added_share: f64,
    pub startup_judged_from: usize,
    /// Start-up rounds on arrived bytes (see `arrival_round`): measured
    /// over 2 times to first byte and at least 100 ms (two of the engine's
    /// 50 ms windows), after at most 3 times to first byte of waiting for
    /// the added requests' first bytes.
    pub round_measure_ttfbs: f64,
    pub round_min_measure_secs: f64,
    pub round_settle_ttfbs: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            initial_concurrency: 1,
            min_concurrency: 1,
            max_concurrency: 1024,
            max_inflight_bytes: 1 << 30,
            initial_part_bytes: 8 << 20,
            min_part_bytes: 1 << 20,
            max_part_bytes: 64 << 20,
            fixed_concurrency: None,
            fixed_part_bytes: None,
            steady_latencies: 3.0,
            min_window_secs: 0.05,
            startup_growth: 1.25,
            startup_patience: 3,
            queued_latency: 2.0,
            headroom: 1.05,
            hysteresis: 0.15,
            fill: 0.97,
            probe_every: 8,
            probe_soon: 2,
            probe_step: 0.15,
            accept_gain: 0.05,
            judged_completions: 20,
            startup_added_share: 0.3,
            startup_judged_from: 8,
            round_measure_ttfbs: 2.0,
            round_min_measure_secs: 0.1,
            round_settle_ttfbs: 3.0,
        }
    }
}

/// Requests completed over a period: sums of their times to first byte and
/// latencies, their count and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Completed {
    ttfb_secs: f64,
    latency_secs: f64,
    count: u64,
    bytes: u64,
}

impl Completed {
    fn plus(self, other: &Completed) -> Completed {
        Completed {
            ttfb_secs: self.ttfb_secs + other.ttfb_secs,
            latency_secs: self.latency_secs + other.latency_secs,
            count: self.count + other.count,
            bytes: self.bytes + other.bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// `plateau`: goodput summed over the rounds since growth stopped,
    /// and their count (the first after a doubling is left out: its new
    /// requests are still waiting for their first bytes).
    Startup {
        best_bps: f64,
        best_concurrency: usize,
        stalled: u32,
        plateau: (f64, u32),
    },
    Steady {
        settle: bool,
        periods: u32,
    },
    Probe {
        base: usize,
        base_bps: f64,
        settle: bool,
    },
}

/// The controller.
#[derive(Debug, Clone)]
pub struct ConcurrencyController {
    cfg: ControllerConfig,
    state: State,
    concurrency: usize,
    part_bytes: u64,
    /// Smoothed goodput in steady state.
    goodput_bps: f64,
    latency_secs: f64,
    window_secs: f64,
    /// Evidence gathered since the last judgement: the engine may call at
    /// any cadence; the controller judges only once a period is long enough.
    acc_bytes: u64,
    acc_secs: f64,
    acc_completions: u64,
    acc_inflight_area: f64,
    acc_latency_sum: f64,
    acc_ttfb_sum: f64,
    acc_rate_limited: f64,
    /// Ready-queue fill (sum, windows) and consumer wait over the period.
    acc_fill: (f64, u32),
    acc_wait: f64,
    /// The concurrency before the last shrink, the goodput it had, and how
    /// many judged periods since have lost goodput (two undo it).
    last_shrink: Option<(usize, f64, u32)>,
    /// The requests completed in each startup round that grew.
    growth_rounds: Vec<Completed>,
    /// Steady periods in a row in which goodput grew with requests.
    unsaturated_periods: u32,
    /// The uncontended request latency (see `on_window`), the share of it
    /// spent waiting for the first byte, and the mean bytes of the requests
    /// it was measured on: a shard's last part is short, so requests carry
    /// less than the part size (18.8 MiB shards in 8 MiB parts: 6.3 MiB),
    /// and Little's law with the part size asked for a quarter too few.
    min_latency_secs: f64,
    ttfb_share: f64,
    request_bytes: f64,
    /// Requests held per request Little's law asks for: starts at the
    /// configured headroom, raised by upward probes that paid off (jitter
    /// and time-to-first-byte gaps need more than the fluid ideal), and
    /// decays back 3% a period so that it is re-learnt, not kept forever
    /// (an undo raised by a wave, not a real need, costs connections until
    /// it has decayed; at 1% that took 30 s).
    headroom: f64,
    /// Steady periods between upward probes (see `probe_every`).
    probe_interval: u32,
    /// The start-up round in progress, judged on arrived bytes once the
    /// engine reports them (`arrivals`); before that, on completions.
    round: ArrivalRound,
    arrivals: bool,
    /// Times to first byte seen: sum and count.
    first_byte_secs: (f64, u64),
    /// The most one request carried in any start-up round measured on
    /// arrivals: what an added request is judged against, and Little's
    /// latency where no part has completed yet.
    best_request_bps: f64,
    /// Start-up levels measured on arrivals: (concurrency, best goodput).
    levels: Vec<(usize, f64)>,
}

impl ConcurrencyController {
    pub fn new(cfg: ControllerConfig) -> ConcurrencyController {
        let part_bytes = cfg.fixed_part_bytes.unwrap_or(cfg.initial_part_bytes);
        let concurrency = cfg.fixed_concurrency.unwrap_or(cfg.initial_concurrency);
        let mut c = ConcurrencyController {
            state: State::Startup {
                best_bps: 0.0,
                best_concurrency: concurrency,
                stalled: 0,
                plateau: (0.0, 0),
            },
            concurrency,
            part_bytes,
            goodput_bps: 0.0,
            latency_secs: 0.0,
            window_secs: cfg.min_window_secs,
            acc_bytes: 0,
            acc_secs: 0.0,
            acc_completions: 0,
            acc_inflight_area: 0.0,
            acc_latency_sum: 0.0,
            acc_ttfb_sum: 0.0,
            acc_rate_limited: 0.0,
            acc_fill: (0.0, 0),
            acc_wait: 0.0,
            unsaturated_periods: 0,
            growth_rounds: Vec::new(),
            last_shrink: None,
            min_latency_secs: f64::INFINITY,
            ttfb_share: 0.0,
            request_bytes: 0.0,
            headroom: cfg.headroom,
            probe_interval: cfg.probe_every,
            round: ArrivalRound::new(concurrency),
            arrivals: false,
            first_byte_secs: (0.0, 0),
            best_request_bps: 0.0,
            levels: Vec::new(),
            cfg,
        };
        c.concurrency = c.clamp(c.concurrency);
        c
    }

    /// A controller that starts where a previous run settled (`warm`), in
    /// steady state with an early probe, instead of ramping from one
    /// request. Pinned settings still win; a warm start that does not fit
    /// (`WarmStart::is_sane`) is a cold start.
    pub fn warm(cfg: ControllerConfig, warm: &WarmStart) -> ConcurrencyController {
        let mut c = ConcurrencyController::new(cfg);
        if !warm.is_sane() || c.cfg.fixed_concurrency.is_some() {
            return c;
        }
        // As the last run measured it, then at this run's part size.
        let run_part = c.part_bytes;
        c.part_bytes = warm.part_bytes;
        c.min_latency_secs = warm.min_latency_secs;
        c.ttfb_share = warm.ttfb_share;
        c.request_bytes = warm.request_bytes;
        if c.cfg.fixed_part_bytes.is_none() {
            // Within this run's caps: a smaller memory budget than the last
            // run's must not be handed parts it cannot hold.
            let cap = c.cfg.max_part_bytes.min(c.cfg.max_inflight_bytes).max(c.cfg.min_part_bytes);
            c.rescale_parts(warm.part_bytes.clamp(c.cfg.min_part_bytes, cap));
        } else {
            c.rescale_parts(run_part);
        }
        c.goodput_bps = warm.goodput_bps;
        c.latency_secs = c.min_latency_secs;
        c.concurrency = c.clamp(warm.concurrency);
        c.state = State::Steady { settle: true, periods: 0 };
        c.probe_interval = c.cfg.probe_soon;
        c
    }

    /// What this controller settled on, once start-up is over and the
    /// uncontended latency is known; `None` before (or when pinned).
    pub fn warm_start(&self) -> Option<WarmStart> {
        if self.cfg.fixed_concurrency.is_some() || matches!(self.state, State::Startup { .. }) {
            return None;
        }
        let concurrency = match self.state {
            // A probe's extra requests are not settled.
            State::Probe { base, .. } => base,
            _ => self.concurrency,
        };
        let warm = WarmStart {
            concurrency,
            part_bytes: self.part_bytes,
            goodput_bps: self.goodput_bps,
            min_latency_secs: self.min_latency_secs,
            ttfb_share: self.ttfb_share,
            request_bytes: self.request_bytes,
        };
        warm.is_sane().then_some(warm)
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub fn part_bytes(&self) -> u64 {
        self.part_bytes
    }

    /// How soon the controller wants to be called again.
    pub fn window_secs(&self) -> f64 {
        self.window_secs
    }

    /// Smoothed goodput in steady state (bytes per second).
    pub fn goodput_bps(&self) -> f64 {
        self.goodput_bps
    }

    pub fn phase(&self) -> Phase {
        if self.cfg.fixed_concurrency.is_some() {
            return Phase::Fixed;
        }
        match self.state {
            State::Startup { .. } => Phase::Startup,
            State::Steady { .. } => Phase::Steady,
            State::Probe { .. } => Phase::ProbeUp,
        }
    }

    fn decision(&self) -> Decision {
        Decision {
            concurrency: self.concurrency,
            part_bytes: self.part_bytes,
            window_secs: self.window_secs,
            phase: self.phase(),
        }
    }

    /// The largest concurrency the memory budget allows at the part size.
    fn memory_cap(&self) -> usize {
        ((self.cfg.max_inflight_bytes / self.part_bytes.max(1)) as usize).max(1)
    }

    fn clamp(&self, c: usize) -> usize {
        c.clamp(
            self.cfg.min_concurrency.max(1),
            self.cfg.max_concurrency.min(self.memory_cap()).max(1),
        )
    }

    /// How long the current period must run before it is judged.
    fn period_secs(&self) -> f64 {
        let latencies = match self.state {
            State::Startup { .. } => 1.5,
            // After a shrink, the requests still in flight drain before new
            // ones start (a dip of about a request latency): judging it
            // would undo every large shrink.
            State::Steady { settle: true, .. } if self.last_shrink.is_some() => 2.0,
            State::Steady { settle: true, .. } | State::Probe { settle: true, .. } => 1.0,
            _ => self.cfg.steady_latencies,
        };
        (latencies * self.latency_secs).max(self.cfg.min_window_secs)
    }

    /// Feeds one window; returns the settings to use from now on.
    pub fn on_window(&mut self, obs: &WindowObservation) -> Decision {
        if let Some(latency) = obs.mean_latency_secs() {
            self.latency_secs = if self.latency_secs == 0.0 {
                latency
            } else {
                0.7 * self.latency_secs + 0.3 * latency
            };
        }
        if obs.first_bytes > 0 {
            self.first_byte_secs.0 += obs.first_byte_secs_sum;
            self.first_byte_secs.1 += obs.first_bytes;
        }
        self.arrivals |= obs.arrived_bytes > 0 || obs.first_bytes > 0;
        if let Some(fixed) = self.cfg.fixed_concurrency {
            self.concurrency = fixed.max(1);
            return self.decision();
        }
        if obs.timeouts > 0 {
            self.concurrency = self.clamp((self.concurrency as f64 * 0.7).floor() as usize);
            self.state = State::Steady { settle: true, periods: 0 };
            self.reset_period();
            return self.decision();
        }
        self.acc_bytes += obs.bytes;
        self.acc_secs += obs.window_secs;
        self.acc_completions += obs.completions;
        self.acc_inflight_area += obs.inflight_mean * obs.window_secs;
        self.acc_latency_sum += obs.ttfb_secs_sum + obs.transfer_secs_sum;
        self.acc_ttfb_sum += obs.ttfb_secs_sum;
        self.acc_rate_limited += obs.rate_limited_secs;
        if let Some(fill) = obs.ready_fill {
            self.acc_fill.0 += fill;
            self.acc_fill.1 += 1;
        }
        self.acc_wait += obs.consumer_wait_secs;
        // Judge only a full period with a completion per slot (before the
        // first completion, even the latency is unknown).
        let settling = matches!(
            self.state,
            State::Steady { settle: true, .. } | State::Probe { settle: true, .. }
        );
        // A judged steady period counts enough completions that one more or
        // less is within the 5% a probe or a shrink is judged on: at one
        // request in flight, three latencies hold three completions, and
        // counted goodput swings by a third.
        let slots = match self.state {
            _ if settling => 1,
            State::Startup { .. } => self.concurrency as u64,
            _ => (self.concurrency as u64).max(self.cfg.judged_completions),
        };
        // Start-up on arrived bytes: the round decides when it is over.
        let measured = match self.state {
            State::Startup { .. } if self.arrivals => {
                let ttfb = self.mean_first_byte_secs();
                let times = RoundTimes {
                    measure_ttfbs: self.cfg.round_measure_ttfbs,
                    min_measure_secs: self.cfg.round_min_measure_secs,
                    settle_ttfbs: self.cfg.round_settle_ttfbs,
                };
                match self.round.feed(obs, ttfb, &times) {
                    Some(m) => Some(m),
                    None => return self.decision(),
                }
            }
            _ => None,
        };
        if measured.is_none()
            && (self.latency_secs == 0.0
                || self.acc_secs < self.period_secs()
                || self.acc_completions < slots)
        {
            return self.decision();
        }
        // On arrivals both estimates are the bytes that flowed.
        let (bps, counted) = match measured {
            Some(m) => (m.bps, m.bps),
            None => (self.period_goodput(), self.acc_bytes as f64 / self.acc_secs),
        };
        let concurrency_before = self.concurrency;
        let period_done = Completed {
            ttfb_secs: self.acc_ttfb_sum,
            latency_secs: self.acc_latency_sum,
            count: self.acc_completions,
            bytes: self.acc_bytes,
        };
        let (period_rate_limited, period_secs) = (self.acc_rate_limited, self.acc_secs);
        let period_fill =
            (self.acc_fill.1 > 0).then(|| self.acc_fill.0 / f64::from(self.acc_fill.1));
        let period_wait = self.acc_wait;
        self.reset_period();
        self.adjust_part_bytes(period_rate_limited, period_secs);
        // Demand is met when the ready queue stayed nearly full and the
        // consumer hardly waited over the period. Fill alone misleads: parts
        // arrive in bursts that fill the queue for a moment.
        let demand_met = period_fill.is_some_and(|f| f > 0.9) && period_wait < 0.05 * period_secs;
        self.state = match self.state {
            State::Startup { best_bps, best_concurrency, stalled, plateau } => {
                // Growth is judged on counted bytes: Little's estimate
                // overstates goodput while requests in flight double every
                // round. The plateau, where they do not, uses both.
                let blended = bps;
                let bps = counted;
                if let Some(m) = measured {
                    self.best_request_bps = self.best_request_bps.max(m.per_request_bps);
                    match self.levels.iter_mut().find(|(c, _)| *c == self.concurrency) {
                        Some(level) => level.1 = level.1.max(bps),
                        None => self.levels.push((self.concurrency, bps)),
                    }
                }
                let growing = bps >= best_bps * self.cfg.startup_growth
                    && !demand_met
                    && measured.is_none_or(|m| self.adds_enough(m, best_bps, best_concurrency));
                if growing {
                    // Rounds that still grew ran uncontended, except perhaps
                    // the last two when judged on completions (goodput lags
                    // a doubling by a round; arrivals are measured after the
                    // added requests stream, and each of their rounds is
                    // shorter than a request). The uncontended latency is
                    // the completion-weighted mean of the others: every
                    // completion counts, not the luckiest round.
                    self.growth_rounds.push(period_done);
                    let n = self.growth_rounds.len();
                    let lagging = if measured.is_some() { 0 } else { 2 };
                    let trusted = &self.growth_rounds[..n.saturating_sub(lagging).max(1)];
                    let all = trusted.iter().fold(Completed::default(), Completed::plus);
                    if all.count > 0 && all.latency_secs > 0.0 && all.bytes > 0 {
                        self.min_latency_secs = all.latency_secs / all.count as f64;
                        self.ttfb_share = all.ttfb_secs / all.latency_secs;
                        self.request_bytes = all.bytes as f64 / all.count as f64;
                    } else if measured.is_some() {
                        // Short rounds may complete nothing yet: the
                        // latency from what arrived.
                        self.latency_from_arrivals();
                    }
                }
                if growing {
                    let next = self.clamp(self.concurrency * 2);
                    if next == self.concurrency {
                        // At the cap: a plateau by force; judged like one.
                        State::Startup {
                            best_bps: bps,
                            best_concurrency: self.concurrency,
                            stalled: 1,
                            // This round still grew: its requests had
                            // doubled, so counted bytes, as for growth.
                            plateau: (bps, 1),
                        }
                    } else {
                        self.concurrency = next;
                        State::Startup {
                            best_bps: bps,
                            best_concurrency: self.concurrency / 2,
                            stalled: 0,
                            plateau: (0.0, 0),
                        }
                    }
                } else if stalled + 1 >= self.cfg.startup_patience
                    || demand_met
                    // Two rounds without growth while requests take twice
                    // the uncontended latency: they queue on a full path,
                    // and a third round (over a second at 128 requests
                    // that wait their turn) only delays the shrink.
                    || (stalled >= 1 && self.queued(period_done))
                {
                    // The pipe is full: hold what Little's law says the
                    // plateau's goodput needs, at least half the last
                    // concurrency that grew (the ramp overshoots by up to
                    // 2×) and at most the plateau's (growth under 25% is
                    // still growth: at a few requests, the last ones fill
                    // time-to-first-byte gaps). The plateau's mean goodput,
                    // not its best round: the best of a few noisy rounds
                    // overstates it, and a shrink judged against that looks
                    // like a loss.
                    let best = (plateau.0 + blended) / f64::from(plateau.1 + 1);
                    // On arrivals each level's goodput is measured: hold at
                    // least the smallest level that came within 5% of the
                    // plateau (the knee as measured; Little's law at the
                    // uncontended latency undercounts where requests that
                    // started together keep waiting for first bytes
                    // together, or where latency grows with load).
                    let knee = self
                        .levels
                        .iter()
                        .filter(|(_, level_bps)| *level_bps >= best * (1.0 - self.cfg.accept_gain))
                        .map(|(c, _)| *c)
                        .min()
                        .unwrap_or(0);
                    let needed = self.little_target(best).max(knee);
                    let from = self.concurrency;
                    // On arrivals the ramp reaches the top within seconds,
                    // and a shrink by half then leaves the requests in
                    // cohorts (those started together wait for first bytes
                    // together, and the path idles between them) for longer
                    // than the ramp took: shrink by at most a quarter, as a
                    // steady period does, and let steady state go on.
                    let lo = if measured.is_some() {
                        (best_concurrency / 2).max(from * 3 / 4).max(1)
                    } else {
                        (best_concurrency / 2).max(1)
                    };
                    self.goodput_bps = best;
                    self.set_concurrency(needed.clamp(lo, from.max(lo)));
                    if self.concurrency < from && !demand_met {
                        // Judged like any shrink: undone if it costs goodput
                        // (when latency grows with load, Little's law at the
                        // uncontended latency undercounts).
                        self.last_shrink = Some((best_concurrency.max(self.concurrency), best, 0));
                    }
                    // Little's law at the uncontended latency is a guess
                    // where latency grows with load: check it soon.
                    self.probe_interval = self.cfg.probe_soon;
                    State::Steady { settle: true, periods: 0 }
                } else {
                    State::Startup {
                        best_bps: best_bps.max(bps),
                        best_concurrency,
                        stalled: stalled + 1,
                        plateau: if stalled == 0 {
                            plateau
                        } else {
                            (plateau.0 + blended, plateau.1 + 1)
                        },
                    }
                }
            }
            State::Steady { settle: true, periods } => State::Steady { settle: false, periods },
            State::Steady { settle: false, periods }
                if self.last_shrink.is_some_and(|(_, before, _)| {
                    // Both estimates must agree: Little's overstates goodput
                    // right after a ramp (requests in flight doubled, the
                    // latencies seen are older), counted bytes come in waves.
                    let lost = before * (1.0 - self.cfg.accept_gain);
                    bps < lost && counted < lost
                }) =>
            {
                let (from, before, losses) =
                    self.last_shrink.take().unwrap_or((self.concurrency, bps, 1));
                if losses == 0 {
                    // One period can fall in a trough: requests started
                    // together (by the ramp, or by the burst that refills a
                    // drained shrink) finish together, and the link idles
                    // while their successors wait for first bytes. A loss
                    // counts when the next period confirms it.
                    self.last_shrink = Some((from, before, 1));
                    State::Steady { settle: false, periods }
                } else {
                    // The shrink cost goodput twice: Little's law
                    // undercounted (the latency estimate is low, or jitter
                    // needs slack). Undo it and hold more headroom from now on.
                    self.set_concurrency(from);
                    self.goodput_bps = before;
                    self.headroom = (self.headroom * 1.25).min(2.0);
                    State::Steady { settle: true, periods: 0 }
                }
            }
            State::Steady { settle: false, periods } => {
                self.last_shrink = None;
                self.goodput_bps =
                    if self.goodput_bps == 0.0 { bps } else { 0.5 * self.goodput_bps + 0.5 * bps };
                self.headroom = (self.headroom * 0.97).max(self.cfg.headroom);
                let c = self.concurrency as f64;
                // Requests waited on the rate limiter: the store's request
                // rate is the bottleneck, not the path, so goodput says
                // nothing about how many requests the path needs.
                let rate_bound = period_rate_limited > 0.1 * period_secs * c;
                // When a probe is due: larger parts, where they let fewer
                // requests keep the path busy, in one step (each change
                // costs a settling period).
                if periods + 1 >= self.probe_interval && !rate_bound && !demand_met {
                    while self.gap_bound(self.goodput_bps) && self.double_part_bytes() {}
                }
                let target = self.little_target(self.goodput_bps);
                let from_c = self.concurrency;
                let band = 1.0 + self.cfg.hysteresis;
                // Goodput grows in step with requests: not full yet.
                let unsaturated = target as f64 >= c * 1.08 && !rate_bound && !demand_met;
                let next = if demand_met {
                    // The consumer is the bottleneck: shed a tenth.
                    (c * 0.9).floor() as usize
                } else if rate_bound {
                    self.concurrency
                } else if target as f64 > c * band {
                    target.min((c * 1.5).ceil() as usize)
                } else if (target as f64) < c / band {
                    target.max((c * 0.75).floor() as usize)
                } else {
                    self.concurrency
                };
                if unsaturated && self.unsaturated_periods >= 1 {
                    // Twice in a row: capacity appeared (a cap lifted, a
                    // link widened). Ramp again instead of creeping up 10%
                    // a period.
                    self.unsaturated_periods = 0;
                    // The levels measured before belong to the old path.
                    self.levels.clear();
                    let best = self.goodput_bps;
                    let from = self.concurrency;
                    self.set_concurrency(from * 2);
                    State::Startup {
                        best_bps: best,
                        best_concurrency: from,
                        stalled: 0,
                        plateau: (0.0, 0),
                    }
                } else if self.set_concurrency(next) {
                    if next < from_c {
                        self.last_shrink = Some((from_c, self.goodput_bps, 0));
                    }
                    // The path changed: probe at the usual pace again.
                    self.probe_interval = self.cfg.probe_every;
                    self.unsaturated_periods =
                        if unsaturated { self.unsaturated_periods + 1 } else { 0 };
                    State::Steady { settle: true, periods: 0 }
                } else if periods + 1 >= self.probe_interval && !demand_met {
                    let base = self.concurrency;
                    let step = ((c * self.cfg.probe_step).round() as usize).max(1);
                    if self.set_concurrency(base + step) {
                        State::Probe { base, base_bps: self.goodput_bps, settle: true }
                    } else {
                        State::Steady { settle: false, periods: 0 }
                    }
                } else {
                    State::Steady { settle: false, periods: periods + 1 }
                }
            }
            State::Probe { base, base_bps, settle: true } => {
                State::Probe { base, base_bps, settle: false }
            }
            State::Probe { base, base_bps, settle: false } => {
                if bps >= base_bps * (1.0 + self.cfg.accept_gain) {
                    // More goodput than Little's law predicted for this many
                    // requests: learn the headroom that delivered it.
                    self.goodput_bps = bps;
                    let ideal = self.ideal(bps).unwrap_or(0.0);
                    // The knee lies somewhere between the base and the
                    // probe: try halfway back, judged like any shrink
                    // (undone if it costs goodput). A kept probe otherwise
                    // holds the whole step, and the headroom learnt from it
                    // keeps it inside the hysteresis band.
                    let probed = self.concurrency;
                    let trim = probed.saturating_sub(base) / 2;
                    if trim >= 2 {
                        self.set_concurrency(probed - trim);
                        self.last_shrink = Some((probed, bps, 0));
                    }
                    // Only from a few requests up: at one or two, rounding
                    // alone looks like a large headroom.
                    if ideal >= 2.0 {
                        self.headroom = self.headroom.max(self.concurrency as f64 / ideal).min(2.0);
                    }
                    // The path had room: look for more soon, not in eight
                    // periods (at +15% a probe, a knee twice as far takes
                    // five probes, 40 periods at the usual pace).
                    self.probe_interval = self.cfg.probe_soon;
                } else {
                    self.set_concurrency(base);
                    self.probe_interval = (self.probe_interval * 2).min(4 * self.cfg.probe_every);
                }
                State::Steady { settle: true, periods: 0 }
            }
        };
        if matches!(self.state, State::Startup { .. }) {
            self.round = ArrivalRound::new(self.concurrency.saturating_sub(concurrency_before));
        }
        self.decision()
    }

    /// Whether the requests a doubling added each carried a fair share of
    /// what one request carries alone (`startup_added_share`), judged from
    /// `startup_judged_from` requests up. Below the knee every added request
    /// adds a whole request's rate; near it (the CPU of a 2-core node at
    /// 16 requests: +16 requests added 0.15 of one each, yet 25% in all)
    /// doubling again only queues requests and memory.
    fn adds_enough(&self, m: RoundMeasure, best_bps: f64, before: usize) -> bool {
        let added = self.concurrency.saturating_sub(before);
        if before < self.cfg.startup_judged_from || added == 0 {
            return true;
        }
        let gain = m.bps - best_bps;
        gain >= self.cfg.startup_added_share * added as f64 * self.best_request_bps
    }

    /// The mean time to first byte seen so far.
    fn mean_first_byte_secs(&self) -> Option<f64> {
        let (sum, n) = self.first_byte_secs;
        (n > 0).then(|| sum / n as f64)
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

    /// Sets the concurrency (clamped); whether it changed.
    fn set_concurrency(&mut self, c: usize) -> bool {
        let c = self.clamp(c);
        let changed = c != self.concurrency;
        self.concurrency = c;
        changed
    }

    /// Goodput of the period: the bytes counted and Little's law (requests
    /// in flight × bytes per request / latency), averaged. Counted bytes
    /// arrive in waves (requests started together finish together) that a
    /// period boundary cuts anywhere; Little's estimate mixes latencies from
    /// before and after a change. Each is noisy in its own way.
    fn period_goodput(&self) -> f64 {
        let counted = self.acc_bytes as f64 / self.acc_secs;
        if self.acc_completions == 0 || self.acc_latency_sum <= 0.0 || self.acc_inflight_area <= 0.0
        {
            return counted;
        }
        let n = self.acc_completions as f64;
        let inflight = self.acc_inflight_area / self.acc_secs;
        let little = inflight * (self.acc_bytes as f64 / n) / (self.acc_latency_sum / n);
        0.5 * (counted + little)
    }

    fn reset_period(&mut self) {
        self.acc_bytes = 0;
        self.acc_secs = 0.0;
        self.acc_completions = 0;
        self.acc_inflight_area = 0.0;
        self.acc_latency_sum = 0.0;
        self.acc_ttfb_sum = 0.0;
        self.acc_rate_limited = 0.0;
        self.acc_fill = (0.0, 0);
        self.acc_wait = 0.0;
    }

    /// Requests in flight that `bps` needs at the uncontended latency, with
    /// headroom (Little's law: L = λ·W).
    fn little_target(&self, bps: f64) -> usize {
        let Some((little, gaps)) = self.needs(bps) else {
            return self.concurrency;
        };
        // Headroom: a share of the need, or what covers the requests'
        // time-to-first-byte gaps where that is more (at a few requests,
        // all of them waiting at once idles the path; see `gap_cover`).
        // A tenth of a request of slack before rounding up: at one or two
        // requests, rounding is a larger step than the headroom.
        (little.max(gaps) - 0.1).ceil().max(1.0) as usize
    }

    /// Whether covering the requests' time-to-first-byte gaps, not Little's
    /// law, sets how many `bps` needs, by a whole request or more: a few
    /// large requests on a path with long waits (one 400 MB/s request on
    /// 1 Gbps, 30 ms to first byte: Little's law asks for 1.5, the gaps
    /// for 3). Larger parts shrink the waits' share, so fewer requests (and
    /// fewer GETs) keep the path as busy.
    fn gap_bound(&self, bps: f64) -> bool {
        self.needs(bps).is_some_and(|(little, gaps)| gaps >= (little - 0.1).ceil() + 1.0)
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
    fn ideal(&self, bps: f64) -> Option<f64> {
        (self.min_latency_secs.is_finite() && self.request_bytes > 0.0)
            .then(|| bps * self.min_latency_secs / self.request_bytes)
    }

    /// Doubles the part size (within its cap and the memory budget), and
    /// rescales the uncontended latency to match: twice the transfer, the
    /// same wait for the first byte, so latency L·(f + 2(1 − f)) = L·(2 − f),
    /// of which the wait is f / (2 − f). Whether it grew.
    fn double_part_bytes(&mut self) -> bool {
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
    fn rescale_parts(&mut self, part_bytes: u64) {
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

    /// At most once a period: requests spent a fifth of their slot time
    /// waiting on the rate limiter, so the request rate binds and each
    /// request must carry more.
    fn adjust_part_bytes(&mut self, rate_limited_secs: f64, period_secs: f64) {
        if self.cfg.fixed_part_bytes.is_some() || period_secs <= 0.0 {
            return;
        }
        let slot_secs = period_secs * self.concurrency.max(1) as f64;
        if rate_limited_secs > 0.2 * slot_secs {
            self.double_part_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PART: u64 = 8 << 20;

    /// One second at concurrency `c` delivering `bps`, consistent with
    /// Little's law (latency = c · part / goodput).
    fn window(c: usize, bps: f64) -> WindowObservation {
        let completions = (bps / PART as f64).round().max(1.0);
        let latency = c as f64 * PART as f64 / bps;
        WindowObservation {
            window_secs: 1.0,
            bytes: (completions * PART as f64) as u64,
            completions: completions as u64,
            ttfb_secs_sum: 0.2 * latency * completions,
            transfer_secs_sum: 0.8 * latency * completions,
            inflight_mean: c as f64,
            ..WindowObservation::default()
        }
    }

    #[test]
    fn a_warm_start_holds_what_the_last_run_settled_on() {
        let warm = WarmStart {
            concurrency: 24,
            part_bytes: PART,
            goodput_bps: 6e8,
            min_latency_secs: 0.3,
            ttfb_share: 0.2,
            request_bytes: PART as f64,
        };
        let cold = ConcurrencyController::new(ControllerConfig::default());
        assert_eq!((cold.concurrency(), cold.phase()), (1, Phase::Startup));
        assert_eq!(cold.warm_start(), None, "nothing settled yet");
        let mut c = ConcurrencyController::warm(ControllerConfig::default(), &warm);
        assert_eq!((c.concurrency(), c.phase()), (24, Phase::Steady));
        assert_eq!(c.warm_start(), Some(warm));
        // Steady rules apply at once: the same path keeps it near 24
        // (Little's law: 6e8 · 0.3 / 8 MiB = 20.5, +5%).
        for _ in 0..10 {
            c.on_window(&window(24, 6e8));
        }
        assert!((20..=28).contains(&c.concurrency()), "{}", c.concurrency());
        // A pinned concurrency wins; figures that do not fit start cold.
        let pinned = ControllerConfig { fixed_concurrency: Some(3), ..ControllerConfig::default() };
        assert_eq!(ConcurrencyController::warm(pinned, &warm).concurrency(), 3);
        let bad = WarmStart { min_latency_secs: f64::NAN, ..warm };
        let c = ConcurrencyController::warm(ControllerConfig::default(), &bad);
        assert_eq!((c.concurrency(), c.phase()), (1, Phase::Startup));
        // Another part size rescales the latency: 16 MiB parts, twice the
        // transfer, the same wait: 0.3 · (0.2 + 2 · 0.8) = 0.54 s.
        let cfg =
            ControllerConfig { fixed_part_bytes: Some(2 * PART), ..ControllerConfig::default() };
        let c = ConcurrencyController::warm(cfg, &warm);
        let w = c.warm_start().expect("settled");
        assert!((w.min_latency_secs - 0.54).abs() < 1e-9, "{w:?}");
        assert_eq!(w.part_bytes, 2 * PART);
        // A smaller budget than the last run's: parts it can hold.
        let small = ControllerConfig { max_inflight_bytes: 4 << 20, ..ControllerConfig::default() };
        let big = WarmStart { part_bytes: 64 << 20, ..warm };
        let c = ConcurrencyController::warm(small, &big);
        assert_eq!((c.part_bytes(), c.concurrency()), (4 << 20, 1));
    }

    #[test]
    fn startup_doubles_then_settles_at_the_knee() {
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        // Goodput grows linearly up to 16 requests, then is flat.
        let goodput = |n: usize| (n.min(16) as f64) * 1e8;
        let mut seen = vec![c.concurrency()];
        for _ in 0..20 {
            let d = c.on_window(&window(c.concurrency(), goodput(c.concurrency())));
            seen.push(d.concurrency);
        }
        assert_eq!(&seen[..6], &[1, 2, 4, 8, 16, 32], "{seen:?}");
        // The value held most (upward probes come and go).
        let held = (1..=64).max_by_key(|c| seen[6..].iter().filter(|s| *s == c).count()).unwrap();
        assert!((16..=20).contains(&held), "Little's law: 16 needed, with headroom: {seen:?}");
        assert_ne!(c.phase(), Phase::Startup);
    }

    /// Rounds start-up spends without growth before it ends, when goodput
    /// stops growing at 12 requests and requests beyond them either queue
    /// (latency grows with the count, as Little's law says) or do not.
    fn flat_rounds_before_exit(queue: bool) -> usize {
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        let mut flat = 0;
        while c.phase() == Phase::Startup {
            let n = c.concurrency();
            let mut w = window(n, (n.min(12) as f64) * 1e8);
            if !queue {
                // The uncontended latency, whatever the count.
                let latency = PART as f64 / 1e8;
                let k = w.completions as f64;
                (w.ttfb_secs_sum, w.transfer_secs_sum) = (0.2 * latency * k, 0.8 * latency * k);
            }
            flat += usize::from(n > 16);
            c.on_window(&w);
            assert!(flat < 10, "start-up never ended");
        }
        flat
    }

    #[test]
    fn startup_ends_a_round_sooner_when_requests_queue() {
        // Three flat rounds (BBR's patience), or two when their requests
        // took twice the uncontended latency: more requests only queue.
        assert_eq!(flat_rounds_before_exit(false), 3);
        assert_eq!(flat_rounds_before_exit(true), 2);
    }

    /// Leaves start-up at 64 requests (full at 32), shrinks to Little's
    /// need and sees `losses` losing periods after the settling one.
    /// Returns the concurrency held from the exit on, window by window.
    fn shrink_then_lose(losses: usize) -> Vec<usize> {
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        let mut after_exit = Vec::new();
        for _ in 0..30 {
            let n = c.concurrency();
            let full = (n.min(32) as f64) * 1e8;
            // Window 0 is the exit's, window 1 settles; the next `losses`
            // lose 20%.
            let k = after_exit.len();
            let bps = if (2..2 + losses).contains(&k) { 0.8 * full } else { full };
            let d = c.on_window(&window(n, bps));
            if c.phase() != Phase::Startup || !after_exit.is_empty() {
                after_exit.push(d.concurrency);
            }
        }
        after_exit
    }

    #[test]
    fn a_shrink_is_undone_after_two_losing_periods_not_one() {
        // One losing period may be the trough of a wave: the shrink stands
        // (an upward probe two periods on fails and comes back to it).
        let one = shrink_then_lose(1);
        assert!(one[0] < 64, "{one:?}");
        assert!(one[..4].iter().all(|c| *c == one[0]), "{one:?}");
        assert_eq!(one[6], one[0], "{one:?}");
        // Two in a row: Little's law undercounted. Undone (to the last
        // concurrency that grew, 32, here no more than the shrink's 34) and
        // the headroom raised, so the target rises above the shrink's and
        // stays there longer than a probe would.
        let two = shrink_then_lose(2);
        assert!(two[5..8].iter().all(|c| *c > two[0]), "{two:?}");
    }

    #[test]
    fn pinned_values_stay_pinned() {
        let cfg = ControllerConfig {
            fixed_concurrency: Some(7),
            fixed_part_bytes: Some(1 << 20),
            ..Default::default()
        };
        let mut c = ConcurrencyController::new(cfg);
        for _ in 0..5 {
            let d = c.on_window(&WindowObservation { rate_limited_secs: 100.0, ..window(7, 1e8) });
            assert_eq!((d.concurrency, d.part_bytes, d.phase), (7, 1 << 20, Phase::Fixed));
        }
    }

    #[test]
    fn memory_budget_caps_bytes_in_flight() {
        let cfg = ControllerConfig { max_inflight_bytes: 64 << 20, ..Default::default() };
        let mut c = ConcurrencyController::new(cfg);
        for _ in 0..10 {
            let n = c.concurrency();
            c.on_window(&window(n, 1e8 * n as f64));
            assert!(c.concurrency() as u64 * c.part_bytes() <= 64 << 20);
        }
        assert_eq!(c.concurrency(), 8);
    }

    #[test]
    fn rate_limiting_grows_the_part_size() {
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        let before = c.part_bytes();
        c.on_window(&WindowObservation { rate_limited_secs: 4.0, ..window(1, 1e8) });
        assert_eq!(c.part_bytes(), before * 2);
    }

    /// One second of a fluid path: each request waits `ttfb` then moves at
    /// `per_conn` bytes/s, all of them together at most `link`.
    fn path_window(c: usize, part: u64, ttfb: f64, per_conn: f64, link: f64) -> WindowObservation {
        let part = part as f64;
        let bps = (c as f64 * part / (ttfb + part / per_conn)).min(link);
        let completions = (bps / part).max(1.0);
        let latency = c as f64 * part / bps;
        WindowObservation {
            window_secs: 1.0,
            bytes: (completions * part) as u64,
            completions: completions.round() as u64,
            ttfb_secs_sum: ttfb * completions,
            transfer_secs_sum: (latency - ttfb) * completions,
            inflight_mean: c as f64,
            ..WindowObservation::default()
        }
    }

    #[test]
    fn long_waits_at_a_few_requests_grow_the_part_size() {
        // One 400 MB/s request fills 1 Gbps but waits 30 ms for its first
        // byte per 67 ms on the wire: covering the waits takes 3 requests of
        // 8 MiB, Little's law 2. Larger parts need fewer.
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        let mut parts = vec![];
        for _ in 0..300 {
            c.on_window(&path_window(c.concurrency(), c.part_bytes(), 0.03, 4e8, 1.25e8));
            parts.push(c.part_bytes());
        }
        assert!(c.part_bytes() > PART, "{parts:?}");
        assert!(c.concurrency() <= 2, "{} requests of {} B", c.concurrency(), c.part_bytes());
        // Many requests with short waits: Little's law rules, parts stay.
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        for _ in 0..300 {
            c.on_window(&path_window(c.concurrency(), c.part_bytes(), 0.01, 5e7, 1.25e9));
        }
        assert_eq!(c.part_bytes(), PART);
        assert!((25..=40).contains(&c.concurrency()), "{}", c.concurrency());
    }

    #[test]
    fn a_kept_probe_steps_halfway_back() {
        // Full at 32 requests; once settled, the knee moves to 36: a probe
        // from 34 or so gains over 5% and is kept, and the knee lies
        // between its base and its top.
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        let mut seen = vec![];
        for i in 0..200 {
            let knee = if i < 40 { 32 } else { 36 };
            let n = c.concurrency();
            c.on_window(&window(n, (n.min(knee) as f64) * 1e8));
            seen.push((c.concurrency(), c.phase()));
        }
        let settled = seen.iter().find(|s| s.1 == Phase::Steady).map_or(0, |s| s.0);
        // The probe that is kept: the next steady period holds more.
        let kept = seen
            .windows(2)
            .find(|w| w[0].1 == Phase::ProbeUp && w[1].1 == Phase::Steady && w[1].0 != settled);
        let Some(&[(top, _), (after, _)]) = kept else { panic!("no probe kept: {seen:?}") };
        assert!(top > 36 && (36..top).contains(&after), "{settled} → {top} → {after}: {seen:?}");
        assert_eq!(seen.last().map(|s| s.0), Some(after), "{seen:?}");
    }

    #[test]
    fn little_counts_the_bytes_requests_carry_not_the_part_size() {
        // Shards end in short parts: here every request carries half a
        // part. Full at 16 requests; Little's law with the part size would
        // leave start-up at 9.
        let mut c = ConcurrencyController::new(ControllerConfig::default());
        let mut seen = vec![];
        while c.phase() == Phase::Startup && seen.len() < 20 {
            let n = c.concurrency();
            // Twice the completions of whole parts, each in half the time.
            let mut w = window(n, (n.min(16) as f64) * 1e8);
            w.completions *= 2;
            c.on_window(&w);
            seen.push(c.concurrency());
        }
        assert!((16..=20).contains(&c.concurrency()), "16 needed: {seen:?}");
    }

    /// Goodput of `n` requests on a server that is overloaded past 24 (it
    /// shares the client's CPU): linear up to 24, then lower with every
    /// request more, 0.6 of the peak at 64.
    fn overloaded(n: usize) -> f64 {
        1e8 * n.min(24) as f64 * (1.0 - n.saturating_sub(24) as f64 / 100.0)
    }

    /// Share of the overloaded server's peak reached after `secs` windows.
    fn overloaded_climb(cfg: ControllerConfig, secs: usize) -> (f64, Vec<usize>) {
        let mut c = ConcurrencyController::new(cfg);
        let mut seen = vec![];
        for _ in 0..secs {
            let n = c.concurrency();
            c.on_window(&window(n, overloaded(n)));
            seen.push(n);
        }
        (overloaded(c.concurrency()) / overloaded(24), seen)
    }

    #[test]
    fn probes_come_soon_after_the_exit_and_after_a_kept_probe() {
        // The ramp's last rounds overload the server, so the plateau reads
        // low and Little's law settles at 16. A probe two periods after the
        // exit and after each kept probe climbs back to the peak in about
        // 12 periods; at the usual eight periods it takes three times that.
        let (soon, seen) = overloaded_climb(ControllerConfig::default(), 25);
        assert!(soon >= 0.95, "{soon:.2} of the peak after 25 s: {seen:?}");
        let cfg = ControllerConfig { probe_soon: 8, ..ControllerConfig::default() };
        let (late, seen) = overloaded_climb(cfg, 25);
        assert!(late < 0.9, "{late:.2} of the peak after 25 s: {seen:?}");
    }

    #[test]
    fn timeouts_cut_concurrency() {
        let cfg = ControllerConfig { initial_concurrency: 40, ..Default::default() };
        let mut c = ConcurrencyController::new(cfg);
        c.on_window(&WindowObservation { timeouts: 2, ..window(40, 1e8) });
        assert_eq!(c.concurrency(), 28);
    }

    #[test]
    fn a_full_ready_queue_stops_the_ramp() {
        let cfg = ControllerConfig { initial_concurrency: 4, ..Default::default() };
        let mut c = ConcurrencyController::new(cfg);
        c.on_window(&WindowObservation { ready_fill: Some(1.0), ..window(4, 4e8) });
        assert!(c.concurrency() <= 4, "{}", c.concurrency());
        assert_eq!(c.phase(), Phase::Steady);
    }
}
