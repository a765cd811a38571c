//! The concurrency and part-size controller: a pure state machine fed
//! [`WindowObservation`]s at any cadence; it judges whole periods.
//!
//! ```text
//!  Startup ──pipe full──▶ Steady ──every few periods──▶ Probe
//!  (×2 per round)        (Little's law)  ◀──kept or not──┘
//!     ▲                        │
//!     └── capacity appeared ───┘  (goodput grew with requests twice)
//! ```
//!
//! * [`startup`]: double per round while goodput grows by a quarter (BBR),
//!   rounds judged on bytes as they arrive; exit to the knee, or where the
//!   client's cores saturate (the engine's timer runs late). From one
//!   request, or from 8 at once where the first byte took 8 ms or more (a
//!   far store: slow start, not the path, is what rounds at 1 and 2
//!   would measure).
//! * [`steady`]: hold what Little's law says the goodput needs
//!   ([`little`]), with hysteresis; a shrink that costs goodput twice is
//!   undone.
//! * [`probe`]: every few periods, +15%, kept on a 5% gain.
//! * Periods last several request latencies and at least one completion
//!   per slot, and a judged steady period at least 20 completions (one more
//!   or less is then the 5% judged on). Goodput is the bytes counted and
//!   Little's estimate, averaged ([`period`]).
//! * Caps: bytes in flight (concurrency × part size) within the memory
//!   budget; a consumer whose ready queue is full needs no more fetching,
//!   so concurrency only goes down then. Timeouts cut concurrency.
//! * Part size doubles where the request rate binds, or where larger parts
//!   keep the path as busy with fewer requests ([`little`]).
//!
//! Every constant is a field of [`ControllerConfig`], with where its value
//! comes from; what was tried and measured is in `docs/AUTOTUNE.md`.

mod config;
mod little;
mod period;
mod probe;
mod startup;
mod steady;
#[cfg(test)]
mod tests;

pub use config::ControllerConfig;

use period::{Completed, Period};
use startup::Ramp;

use super::arrival_round::{ArrivalRound, RoundMeasure, RoundTimes};
use super::observation::{Decision, Phase, WindowObservation};
use super::warm_start::WarmStart;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Startup(Ramp),
    /// `settle`: the period after a change, not judged; `periods`: judged
    /// since the last change (a probe is due every `probe_interval`).
    Steady {
        settle: bool,
        periods: u32,
    },
    /// Probing above `base`, which had `base_bps`.
    Probe {
        base: usize,
        base_bps: f64,
        settle: bool,
    },
}

/// A shrink under judgement: the concurrency before it, the goodput that
/// had, and how many judged periods since have lost goodput (two undo it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shrink {
    from: usize,
    before_bps: f64,
    losses: u32,
}

impl Shrink {
    fn from(from: usize, before_bps: f64) -> Shrink {
        Shrink { from, before_bps, losses: 0 }
    }
}

/// What a finished period showed.
#[derive(Debug, Clone, Copy)]
struct Judged {
    /// Goodput: on arrivals the bytes that flowed; otherwise counted bytes
    /// and Little's estimate averaged.
    bps: f64,
    /// Bytes counted per second.
    counted: f64,
    /// The start-up round measured on arrived bytes, if it was.
    measured: Option<RoundMeasure>,
    /// The requests that completed in it.
    done: Completed,
    /// The consumer had all it wanted (see `demand_fill`).
    demand_met: bool,
    /// Payload bytes batched for the consumer per second: what it took,
    /// where `demand_met`.
    batched_bps: f64,
    rate_limited_secs: f64,
    secs: f64,
    /// Share of it the engine's timer fired late (saturated cores).
    lag_share: f64,
}

impl Judged {
    /// What the consumer took per second where it was the bottleneck: the
    /// bytes batched for it (its queue stayed full), or where nothing
    /// reports batches, the bytes counted. Not Little's estimate: requests
    /// held back by a full queue count there as if they streamed.
    fn taken_bps(&self) -> f64 {
        if self.batched_bps > 0.0 { self.batched_bps } else { self.counted }
    }
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
    /// Evidence gathered since the last judgement.
    period: Period,
    last_shrink: Option<Shrink>,
    /// The requests completed in each startup round that grew.
    growth_rounds: Vec<Completed>,
    /// Steady periods in a row in which goodput grew with requests.
    unsaturated_periods: u32,
    /// The uncontended request latency (see `little`), the share of it
    /// spent waiting for the first byte, and the mean bytes of the requests
    /// it was measured on.
    min_latency_secs: f64,
    ttfb_share: f64,
    request_bytes: f64,
    /// Requests held per request Little's law asks for: starts at the
    /// configured headroom, raised by upward probes that paid off and by
    /// shrinks undone (jitter and time-to-first-byte gaps need more than
    /// the fluid ideal), and decays back a little each period.
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
    /// Where start-up found the client's cores saturated: steady state
    /// does not shrink below it on Little's law while they still are.
    cpu_knee: Option<usize>,
    /// Start-up began far (a far store): the first level it measures,
    /// `far_start_concurrency` or, after a leap, ×4 that.
    far_level: Option<usize>,
    /// First bytes seen (sum, count) when the far start began: the first
    /// request's, on a connection the listing opened.
    far_first_bytes: (f64, u64),
    /// The store has refused a request (503 SlowDown) since the start.
    throttled_seen: bool,
    /// Steady periods left in which the uncontended latency, a guess from
    /// arrivals after a leap, gives way to what whole parts took
    /// (`lower_guessed_latency`).
    guessed_latency_periods: u32,
}

impl ConcurrencyController {
    pub fn new(cfg: ControllerConfig) -> ConcurrencyController {
        let part_bytes = cfg.fixed_part_bytes.unwrap_or(cfg.initial_part_bytes);
        let concurrency = cfg.fixed_concurrency.unwrap_or(cfg.initial_concurrency);
        let mut c = ConcurrencyController {
            state: State::Startup(Ramp::from(0.0, concurrency)),
            concurrency,
            part_bytes,
            goodput_bps: 0.0,
            latency_secs: 0.0,
            window_secs: cfg.min_window_secs,
            period: Period::default(),
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
            cpu_knee: None,
            far_level: None,
            far_first_bytes: (0.0, 0),
            throttled_seen: false,
            guessed_latency_periods: 0,
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
        if self.cfg.fixed_concurrency.is_some() || matches!(self.state, State::Startup(_)) {
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
            State::Startup(_) => Phase::Startup,
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

    /// Sets the concurrency (clamped); whether it changed.
    fn set_concurrency(&mut self, c: usize) -> bool {
        let c = self.clamp(c);
        let changed = c != self.concurrency;
        self.concurrency = c;
        changed
    }

    /// How long the current period must run before it is judged.
    fn period_secs(&self) -> f64 {
        let latencies = match self.state {
            State::Startup(_) => self.cfg.startup_latencies,
            State::Steady { settle: true, .. } if self.last_shrink.is_some() => {
                self.cfg.shrink_settle_latencies
            }
            State::Steady { settle: true, .. } | State::Probe { settle: true, .. } => 1.0,
            _ => self.cfg.steady_latencies,
        };
        (latencies * self.latency_secs).max(self.cfg.min_window_secs)
    }

    /// The mean time to first byte seen so far.
    fn mean_first_byte_secs(&self) -> Option<f64> {
        let (sum, n) = self.first_byte_secs;
        (n > 0).then(|| sum / n as f64)
    }

    /// Feeds one window; returns the settings to use from now on.
    pub fn on_window(&mut self, obs: &WindowObservation) -> Decision {
        if let Some(latency) = obs.mean_latency_secs() {
            let s = self.cfg.latency_smoothing;
            self.latency_secs = if self.latency_secs == 0.0 {
                latency
            } else {
                (1.0 - s) * self.latency_secs + s * latency
            };
        }
        if obs.first_bytes > 0 {
            self.first_byte_secs.0 += obs.first_byte_secs_sum;
            self.first_byte_secs.1 += obs.first_bytes;
        }
        self.arrivals |= obs.arrived_bytes > 0 || obs.first_bytes > 0;
        self.throttled_seen |= obs.throttled > 0;
        if let Some(fixed) = self.cfg.fixed_concurrency {
            self.concurrency = fixed.max(1);
            return self.decision();
        }
        if obs.timeouts > 0 {
            let cut = (self.concurrency as f64 * self.cfg.timeout_cut).floor() as usize;
            self.concurrency = self.clamp(cut);
            self.state = State::Steady { settle: true, periods: 0 };
            self.period = Period::default();
            return self.decision();
        }
        if self.start_far() {
            return self.decision();
        }
        self.period.add(obs);
        // Not judged per period: a node at one 64 MiB request holds 20
        // completions (a period) only after 28 s.
        if matches!(self.state, State::Steady { .. })
            && let Some(floor) =
                self.contested_floor(obs.contested_rate_rps).filter(|&f| f > self.concurrency)
        {
            self.set_concurrency(floor);
            self.state = State::Steady { settle: true, periods: 0 };
            self.period = Period::default();
            return self.decision();
        }
        let Some(judged) = self.judge_period(obs) else {
            self.leap_far();
            return self.decision();
        };
        let concurrency_before = self.concurrency;
        self.adjust_part_bytes(judged.rate_limited_secs, judged.secs);
        self.state = match self.state {
            State::Startup(ramp) => self.judge_startup(ramp, &judged),
            State::Steady { settle: true, periods } => State::Steady { settle: false, periods },
            State::Steady { settle: false, periods } => self.judge_steady(periods, &judged),
            State::Probe { base, base_bps, settle: true } => {
                State::Probe { base, base_bps, settle: false }
            }
            State::Probe { base, base_bps, settle: false } => {
                self.judge_probe(base, base_bps, judged.bps)
            }
        };
        match self.state {
            State::Startup(r) if r.descent.is_some() => {
                self.round = ArrivalRound::after_shrink(self.concurrency);
            }
            State::Startup(_) => {
                self.round = ArrivalRound::new(self.concurrency.saturating_sub(concurrency_before));
            }
            _ => {}
        }
        self.decision()
    }

    /// Start-up's first round on a far store (the first bytes took
    /// `far_first_byte_secs`): `far_start_concurrency` requests at once, and
    /// the round starts again with them (see the config). Whether it did.
    fn start_far(&mut self) -> bool {
        let first_round = matches!(self.state, State::Startup(r) if r.best_bps == 0.0)
            && self.levels.is_empty()
            && self.growth_rounds.is_empty();
        let far = self.mean_first_byte_secs().is_some_and(|t| t >= self.cfg.far_first_byte_secs);
        // A store that already refuses is not one to open 8 at once on (a
        // fleet starting together on one request cap).
        if !first_round
            || !far
            || self.throttled_seen
            || self.concurrency >= self.cfg.far_start_concurrency
        {
            return false;
        }
        let before = self.concurrency;
        if !self.set_concurrency(self.cfg.far_start_concurrency) {
            return false;
        }
        self.round = ArrivalRound::new(self.concurrency - before);
        self.period = Period::default();
        self.far_level = Some(self.concurrency);
        self.far_first_bytes = self.first_byte_secs;
        true
    }

    /// Whether the period is over, and if so what it showed (the period
    /// starts afresh). A period is judged once it is long enough and holds
    /// a completion per slot (before the first completion, even the latency
    /// is unknown); a start-up round on arrived bytes decides for itself.
    fn judge_period(&mut self, obs: &WindowObservation) -> Option<Judged> {
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
            State::Startup(_) => self.concurrency as u64,
            _ => (self.concurrency as u64).max(self.cfg.judged_completions),
        };
        let measured = match self.state {
            State::Startup(_) if self.arrivals => {
                let ttfb = self.mean_first_byte_secs();
                let times = RoundTimes {
                    measure_ttfbs: self.cfg.round_measure_ttfbs,
                    min_measure_secs: self.cfg.round_min_measure_secs,
                    settle_ttfbs: self.cfg.round_settle_ttfbs,
                    rising: self.cfg.round_rising,
                    max_spans: self.cfg.round_max_spans,
                    slow_start_rise: self
                        .far_round_on_a_long_path()
                        .then_some(self.cfg.round_slow_start_rise),
                };
                Some(self.round.feed(obs, ttfb, &times)?)
            }
            _ => None,
        };
        let p = &self.period;
        // Demand is met when the ready queue stayed nearly full and the
        // consumer hardly waited over the period. Fill alone misleads: parts
        // arrive in bursts that fill the queue for a moment.
        let demand_met = p.mean_fill().is_some_and(|f| f > self.cfg.demand_fill)
            && p.wait_secs < self.cfg.demand_wait_share * p.secs;
        // A consumer that takes little lets few requests complete: its
        // periods are judged on time alone (at 16 requests and a full
        // memory budget, 20 completions took longer than the test's 4 s).
        if measured.is_none()
            && (self.latency_secs == 0.0
                || p.secs < self.period_secs()
                || (p.completions < slots && !demand_met))
        {
            return None;
        }
        // On arrivals both estimates are the bytes that flowed.
        let (bps, counted) = match measured {
            Some(m) => (m.bps, m.bps),
            None => (p.goodput_bps(), p.counted_bps()),
        };
        let judged = Judged {
            bps,
            counted,
            measured,
            done: p.done(),
            demand_met,
            batched_bps: p.batched_bytes as f64 / p.secs.max(1e-9),
            rate_limited_secs: p.rate_limited_secs,
            secs: p.secs,
            lag_share: if p.secs > 0.0 { p.lag_secs / p.secs } else { 0.0 },
        };
        self.period = Period::default();
        Some(judged)
    }
}
