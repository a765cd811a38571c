//! The controller's settings, each with where its value comes from.

/// Controller settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// 1 request: the first round measures the uncontended latency, which
    /// Little's law needs later (at 4, a small link is already shared).
    pub initial_concurrency: usize,
    /// A far store: when the first request's first byte took 8 ms or more
    /// (`far_first_byte_secs`; a WAN path or a cloud store, not loopback or
    /// the same rack, as `gap_parts_min_ttfb_secs`), start-up goes to 8
    /// requests at once instead of measuring a round at 1. There every new
    /// connection spends several round trips in TCP slow start, and the
    /// rounds at 1 and 2 requests measured slow start, not the path: on
    /// netlab at 10–60 ms a cold pass was ahead of the ramp from 1 in 8 of
    /// 10 batches (e.g. 20 ms: 0.75 against 0.71 of the best static, 1.09
    /// against 1.03 of the CRT; docs/AUTOTUNE.md), the first batch 0.38 s
    /// against 0.49. Starting at 32 broke the grid's thin links. Near
    /// stores keep the ramp from 1: starting at 8 on loopback overshot to
    /// 12 requests, cost 10% more CPU and a 3× later first batch. Eight
    /// requests are what a ×4 step from 2 reaches anyway.
    pub far_first_byte_secs: f64,
    pub far_start_concurrency: usize,
    /// A far start's first round steps ×4 (8 → 32), not ×2, where first
    /// bytes took 35 ms or more (`far_fast_first_byte_secs`; new
    /// connections wait two round trips: netlab's first bytes average ~25
    /// ms at 10 ms, ~40 at 20, ~60 at 30, ~117 at 60): there each level's
    /// new connections spend 0.3–0.7 s in TCP slow start. At 60 ms /
    /// 100 Mbit the ramp 8, 16, 32, 64 ran at 0.58 of static 64's rate
    /// between 1 and 2 s after start, the ramp 8, 32, 64 at 0.82. Not at
    /// 10 ms, where 8 → 32 overshoots a knee of 16 (0.85 against 0.92 of
    /// the best static; docs/AUTOTUNE.md). 80 ms until the eleventh
    /// session, which lowered it with `round_slow_start_rise`.
    pub far_fast_first_byte_secs: f64,
    /// A far start leaps to ×4 before measuring its first level where its
    /// new connections' first bytes took this share more than the first
    /// request's (a round trip's handshake; see `leap_far`): netlab's
    /// ~0.5 at 20–60 ms; the simulator's ~0 (no handshake).
    pub leap_handshake_share: f64,
    /// Where a far start's first level was already the plateau (a thin
    /// link: one 400 MB/s connection fills 1 Gbit/s), start-up halves while
    /// a level keeps 90% of the plateau, to measure a less shared request:
    /// the grid's smallest static level within 0.9 of the best is what a
    /// thin link needs (from 8 requests on 1 Gbit/s, 2–3).
    pub descent_keep: f64,
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
    /// 1.5 latencies per start-up round judged on completions (BBR's
    /// round is one; half more lets the doubled requests' first parts
    /// land).
    pub startup_latencies: f64,
    /// 2 latencies of settling after a shrink: the requests still in
    /// flight drain before new ones start (a dip of about a request
    /// latency), and judging that dip would undo every large shrink.
    pub shrink_settle_latencies: f64,
    /// 0.3: weight of the newest window in the smoothed request latency.
    pub latency_smoothing: f64,
    /// 0.5: weight of the newest period in the smoothed steady goodput.
    pub goodput_smoothing: f64,
    /// Startup: growth that counts as growth (BBR's 25%), and patience (3).
    pub startup_growth: f64,
    pub startup_patience: u32,
    /// Startup also ends after two rounds without growth whose requests
    /// took this many uncontended latencies (2): they queue.
    pub queued_latency: f64,
    /// On arrived bytes, the exit shrinks to at least 3/4 of the top
    /// level: the ramp reaches it within seconds, and a shrink by half left
    /// requests in cohorts (started together, waiting for first bytes
    /// together) for longer than the ramp took.
    pub exit_keep: f64,
    /// Requests held above Little's law's need (5%), and the band within
    /// which the target is ignored (15%).
    pub headroom: f64,
    pub hysteresis: f64,
    /// Headroom learnt from a shrink undone (×1.25) or a kept probe, at
    /// most 2×, decaying 3% a steady period back to `headroom`: re-learnt,
    /// not kept forever (at 1% a period, a headroom raised by a wave, not a
    /// real need, cost connections for 30 s).
    pub undo_headroom_growth: f64,
    pub max_headroom: f64,
    pub headroom_decay: f64,
    /// A steady step goes at most ×1.5 up and ×0.75 down: Little's target
    /// from one period can be far off after a change of path.
    pub max_step_up: f64,
    pub max_step_down: f64,
    /// Goodput grows with requests when Little's target is 8% above the
    /// concurrency held; two such periods in a row re-enter start-up
    /// (capacity appeared: a cap lifted, a link widened).
    pub unsaturated_margin: f64,
    /// The consumer is the bottleneck when its ready queue stayed 90% full
    /// and it waited under 5% of the period: shed towards what Little's law
    /// says the consumer's rate needs, at least a tenth of the requests and
    /// at most half of them a period (`demand_floor`; a tenth a period took
    /// 16 requests for a consumer that needs one 25 periods to come down).
    pub demand_fill: f64,
    pub demand_wait_share: f64,
    pub demand_shed: f64,
    pub demand_floor: f64,
    /// Requests spent over 10% of their slot time waiting on the rate
    /// limiter: the store's request rate binds, and goodput says nothing
    /// about how many requests the path needs (concurrency holds).
    pub rate_bound_share: f64,
    /// Over 20% of slot time on the rate limiter in a period: each request
    /// must carry more, so parts double.
    pub rate_part_share: f64,
    /// Timeouts: too many connections for the path; cut by 30%.
    pub timeout_cut: f64,
    /// Share of the path the requests in flight keep busy despite their
    /// time-to-first-byte gaps (97%; see `gap_cover`).
    pub fill: f64,
    /// Parts grow to cover first-byte waits only where the uncontended wait
    /// is at least this (8 ms: a WAN path, not loopback or the same rack).
    /// Below it one more request covers the wait for nothing, while 8×
    /// larger parts cost memory, CPU and the first batch: on loopback,
    /// 64 MiB parts against 8 MiB at 6 requests gave 0.50–0.85 CPU-s/GB
    /// against 0.41–0.45 and a first batch after 0.18–0.49 s against 0.08.
    pub gap_parts_min_ttfb_secs: f64,
    /// Upward probes: every 8 periods, +15%, kept on a 5% gain; each probe
    /// that fails doubles the wait, up to 4× (a probe costs connections).
    pub probe_every: u32,
    /// The wait after start-up and after a kept probe (2 periods): then
    /// the path may well have more room.
    pub probe_soon: u32,
    pub probe_step: f64,
    pub accept_gain: f64,
    pub probe_backoff_max: u32,
    /// Completions a steady period needs before it is judged (20: one
    /// completion is then 5% of the count, the gain judged on).
    pub judged_completions: u64,
    /// On arrived bytes, a doubling grows only if each added request added
    /// 30% of what one request carried alone, from 8 requests up: below 8,
    /// a 100 ms measure holds a few parts, and one request's wait for its
    /// next first byte swings the sum by a quarter.
    pub startup_added_share: f64,
    pub startup_judged_from: usize,
    /// On arrived bytes, a doubling whose added requests each carried 80%
    /// of what one request carried alone was far from any knee: the next
    /// step is ×4, not ×2. A cold ramp from 1 to 32 requests then takes
    /// three rounds, not five: on a 20 ms path that is ~0.35 s of a 3.5 s
    /// one-pass job saved (netlab, docs/AUTOTUNE.md).
    pub startup_fast_share: f64,
    pub startup_fast_factor: usize,
    pub startup_fast_below: usize,
    /// On arrived bytes, from `cpu_judged_from` requests up: a round in
    /// which the engine's timer fired late for 15% of the time ran on
    /// saturated cores, and start-up ends there (a round that grew is
    /// held, one that did not exits without waiting for patience). On
    /// netlab (2-core client, server and shaper on one machine) the lag at
    /// the best static level
    /// was 0.29–0.40 of the time at 10–20 ms paths, 0.04–0.11 one level
    /// below, and 0.5 one level above, where the extra connections cost
    /// 1–1.5 CPU-s a pass and a quarter of the goodput (docs/AUTOTUNE.md).
    /// At 30 ms the 32-request round, settling included, read 0.16–0.20:
    /// at 0.2 the ramp went on to 64 in half the runs, and the connections
    /// kept a quarter less goodput after it came back to 32.
    /// In steady state, while periods run this late, Little's law does not
    /// shrink below that knee.
    pub cpu_lag: f64,
    /// The CPU rule (`cpu_lag`) holds a level from 16 requests up, not 8:
    /// a doubling from 8 does not cost CPU. At 10 ms / 1 Gbit the round at
    /// 8 read 0.09–0.17 late and start-up held 8 in the runs over 0.15,
    /// where static 8 carried 721 MB/s for 2.0 CPU-s a pass and static 16
    /// 914 MB/s for 1.8 (each of 8 connections already carries ~100 MB/s;
    /// twice as many connections at half the rate each cost no more per
    /// byte). From 16 up each doubling cost more per pass: 16 → 32 +0.5
    /// CPU-s, 32 → 64 +1.4–1.6 (netlab, 10–30 ms; docs/AUTOTUNE.md).
    pub cpu_judged_from: usize,
    /// A flat start-up round whose timer was late for 70% of its time
    /// exits at once to the best level measured, without the second look
    /// a level caught in slow start gets. At the best static level the
    /// timer runs late 0.29–0.40 of the time (a first round at 32 after
    /// the leap, 20 ms / 400 Mbit: 0.22–0.55), one level above 0.5 or
    /// more. At 30 ms / 250 Mbit on a busy hour (netlab's packet work took
    /// both cores: static 64 ran at 239–428 MB/s against static 32's 600)
    /// the 64-request round read 0.80 and its second look 0.61: 0.66 s
    /// more at 64, whose slow requests (retried after 4 s) then held the
    /// parser for two seconds (docs/AUTOTUNE.md, "Melting cores"). A
    /// round that grew that late (at 20 ms, 64 against a 32-round cut
    /// short in slow start, 0.73–0.82 late) exits to the level below:
    /// held, 64 kept a four-epoch run at 618 MB/s against 712–918 at 32.
    pub cpu_melt_lag: f64,
    /// After a leap, the steady periods (4, ~1 s at 20 ms) in which the
    /// uncontended latency, guessed from arrivals, gives way to what whole
    /// parts took (at least `whole_part_share` of a part's bytes on
    /// average: 0.9).
    pub guessed_latency_periods: u32,
    pub whole_part_share: f64,
    /// Start-up rounds on arrived bytes (see `arrival_round`): measured
    /// over 2 times to first byte and at least 100 ms (two of the engine's
    /// windows; 50 ms gained a little on netlab at 20 ms, but let a round
    /// at a few requests read flat by noise: the loopback test's fast
    /// consumer then stopped at 3–5 requests), after at most 3 times to
    /// first byte of waiting for the added requests' first bytes.
    pub round_measure_ttfbs: f64,
    pub round_min_measure_secs: f64,
    pub round_settle_ttfbs: f64,
    /// A round measures on while its last window carried 15% more than the
    /// one before it (its connections still in TCP slow start), for at
    /// most 3 measuring spans, and is judged on its last span
    /// (`arrival_round`).
    pub round_rising: f64,
    pub round_max_spans: f64,
    /// A far start's first round on a long path (`far_fast_first_byte_secs`)
    /// ends after its first span where that span's last window carried
    /// twice its first: TCP slow start (a congestion window
    /// doubles every round trip), which measuring out takes 0.3 s at 20 ms
    /// and 0.6 s at 60 ms, where the ×4 step that follows is judged against
    /// nothing (any 32 reads as growth over 8). On netlab, one pass, 4–5
    /// alternating rounds, of the best static: 0.90 against 0.86 at 20 ms,
    /// 0.90 against 0.71 at 30 ms, 0.93 against 0.86 at 60 ms
    /// (docs/AUTOTUNE.md, "Not waiting out slow start"). The simulator has
    /// no slow start: its rounds never double over a span.
    pub round_slow_start_rise: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            initial_concurrency: 1,
            far_first_byte_secs: 0.008,
            far_start_concurrency: 8,
            far_fast_first_byte_secs: 0.035,
            leap_handshake_share: 0.3,
            descent_keep: 0.9,
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
            startup_latencies: 1.5,
            shrink_settle_latencies: 2.0,
            latency_smoothing: 0.3,
            goodput_smoothing: 0.5,
            startup_growth: 1.25,
            startup_patience: 3,
            queued_latency: 2.0,
            exit_keep: 0.75,
            headroom: 1.05,
            hysteresis: 0.15,
            undo_headroom_growth: 1.25,
            max_headroom: 2.0,
            headroom_decay: 0.97,
            max_step_up: 1.5,
            max_step_down: 0.75,
            unsaturated_margin: 1.08,
            demand_fill: 0.9,
            demand_wait_share: 0.05,
            demand_shed: 0.9,
            demand_floor: 0.5,
            rate_bound_share: 0.1,
            rate_part_share: 0.2,
            timeout_cut: 0.7,
            fill: 0.97,
            gap_parts_min_ttfb_secs: 0.008,
            probe_every: 8,
            probe_soon: 2,
            probe_step: 0.15,
            accept_gain: 0.05,
            probe_backoff_max: 4,
            judged_completions: 20,
            startup_added_share: 0.3,
            startup_judged_from: 8,
            startup_fast_share: 0.8,
            startup_fast_factor: 4,
            startup_fast_below: 8,
            cpu_lag: 0.15,
            cpu_judged_from: 16,
            cpu_melt_lag: 0.7,
            guessed_latency_periods: 4,
            whole_part_share: 0.9,
            round_measure_ttfbs: 2.0,
            round_min_measure_secs: 0.1,
            round_settle_ttfbs: 3.0,
            round_rising: 1.15,
            round_max_spans: 3.0,
            round_slow_start_rise: 2.0,
        }
    }
}
