//! The request-rate limiter: AIMD on requests per second, one per endpoint
//! and bucket, shared by every stream and session of the process.
//!
//! Throttling (503 SlowDown, 429) is a statement about the request *rate*,
//! not about bytes in flight, so it is answered here, not by the
//! concurrency controller:
//!
//! ```text
//!  unlimited ──first throttle──▶ rate = 0.9 × successes/s ──quiet 3 s, 150 answers──▶ ×2 per second
//!                                 │  + 0.04 requests/s per second  │
//!                                 │  (0.005 below 20 answers/s)    │
//!                                 └──────── throttle: cut ◀────────┘   (at most once per 0.5 s)
//! ```
//!
//! The cut goes to 90% of the rate the store just *accepted* (not a fixed
//! fraction of what we asked for), so the average stays above 90% of the
//! store's cap. Where the last second held fewer than 20 answers (a node
//! of a fleet sharing a cap hears ~2 a second) a count is no rate: there
//! the cut takes 7.5% off the limit and the step is 0.005, which is AIMD
//! proper and keeps 1,000 daemons started at once within Jain 0.96 of
//! each other at ~1.8% refused; and the controller keeps enough requests
//! in flight to use the limit ([`RateLimiter::contested_rate`]). A
//! `Retry-After` is the refused request's own wait (its
//! retry honours it); only in a storm — several throttled replies in a row
//! with no success between — does it pause every request. A few such
//! replies among many answered (B2 sends `Retry-After: 1` with scattered
//! 503s) once paused the whole endpoint each time: 2.3% of replies cost
//! 92% of the rate. Refusals that carry a `Retry-After` and are at most
//! 5% of what the store answered (a store's scattered 503s, which come at
//! any rate) are the store's own: no cut, and the rate grows on. Plain
//! refusals (S3's SlowDown, a fleet over one cap) always cut: letting any
//! refusal be the store's own let busy sessions stop cutting, and the
//! grid's shared-limiter table rose from 0.2% to 0.6–0.9% 503s. After a quiet
//! spell the rate grows multiplicatively, so a cap that is lifted is found
//! within seconds; once the limit is far above what is asked of it, the
//! limiter switches itself off. Clock injected: pure and testable.

use std::collections::VecDeque;

/// Limiter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimiterConfig {
    /// 0.9: the cut, relative to the accepted rate of the last second.
    pub cut_to: f64,
    /// 0.5 s: one overshoot brings a burst of 503s; cut once for it.
    pub cut_interval_secs: f64,
    /// 0.04 requests per second, every second: additive increase while
    /// recently throttled, the same for every process whatever its rate.
    /// Growth in proportion to the rate (2% a second, until 2026-12-02)
    /// with cuts in proportion to it is MIMD, which keeps whatever spread
    /// a fleet started with: 1,000 daemons on one capped store ended at
    /// 0.9 to 30 answers a second each where 2 was fair (Jain 0.56). A
    /// fixed step lets the slow catch up (AIMD). A lone process is not
    /// held back by it: once quiet, it grows ×2 a second.
    pub additive_rps_per_sec: f64,
    /// 3 s without throttling before multiplicative growth…
    pub quiet_secs: f64,
    /// …and 150 requests answered since the last throttle: a node sending
    /// 2 requests a second (one of 1,000 sharing a store's cap) has heard
    /// too little in 3 s to call the store quiet, and with a third of such
    /// nodes doubling at any time, 15% of all replies were 503s (at 50
    /// answers 6.3%, at 150 4.3% with the step above; at 400 a lone
    /// process under a 50/s cap took 0.43 of it: its quiet spells came too
    /// seldom).
    pub quiet_successes: u64,
    /// ×2 per second once quiet.
    pub growth_per_sec: f64,
    /// 50 ms of requests may go at once.
    pub burst_secs: f64,
    /// Never below one request per second.
    pub min_rate: f64,
    /// Cuts stop at a quarter of the highest accepted rate, which halves
    /// every 10 s while the store answers (not through an outage): a node
    /// that was fast before a fleet filled the store (30 answers a second
    /// against a fair 2) must not keep a floor of a quarter of that for
    /// good.
    pub peak_half_life_secs: f64,
    /// Refusals with a `Retry-After` that make up at most `max_baseline`
    /// of the last second's answers are the store's own (B2 refuses ~2%
    /// with `503 + Retry-After` at any rate): no cut, and the largest such
    /// share is learned, so that plain refusals cut only above 1.5x it
    /// plus `cut_margin`. Cutting for every such reply once drove the rate
    /// to its floor, a quarter of the peak (0.20x of the fault-free rate
    /// at 2%, scripts/store-faults).
    pub cut_margin: f64,
    /// 5%: the most refusals taken as the store's own.
    pub max_baseline: f64,
    /// The baseline halves every this many seconds (a store's cap may
    /// come back).
    pub baseline_half_life_secs: f64,
    /// Answers in the last second below which a share is not judged
    /// (a node of a fleet hears a few a second: every throttle counts).
    pub share_min_answers: f64,
    /// 3: throttled replies in a row (no success between) that make a
    /// storm, in which a `Retry-After` pauses every request. Fewer is
    /// scattered refusals: only the refused request waits.
    pub storm_in_a_row: u32,
    /// 0.925: where the last second held fewer than `share_min_answers`
    /// answers (a node of a fleet, at its share of a store's cap), a cut
    /// goes to this fraction of the current limit, not of the accepted
    /// rate: a count of 0–4 answers is no rate, and cuts to 0.9 × such
    /// counts spread 1,000 daemons from 1 to 8 requests a second (Jain
    /// 0.85). Cuts of a fraction of the limit (AIMD proper) keep an equal
    /// start equal, and a shallow one keeps each node's sawtooth narrow:
    /// 0.9 gave Jain 0.94, 0.925 gives 0.96 (docs/AUTOTUNE.md).
    pub sparse_cut_to: f64,
    /// 0.005 requests a second, every second: the additive step where the
    /// last second held fewer than `share_min_answers` answers. The
    /// refused share settles near the step over the cut's depth times
    /// the rate squared: at a fleet's fair 2 a second, 0.005 / (0.075 ×
    /// 4) ≈ 1.7% (1.8% measured); the 0.04 above would refuse 13%.
    pub sparse_additive_rps_per_sec: f64,
    /// 2: a sparse cut starts from at most this many times the rate
    /// sent over the last second, not from a limit far above it.
    pub sparse_sent_ratio: f64,
}

impl Default for RateLimiterConfig {
    fn default() -> Self {
        RateLimiterConfig {
            cut_to: 0.9,
            cut_interval_secs: 0.5,
            additive_rps_per_sec: 0.04,
            quiet_secs: 3.0,
            quiet_successes: 150,
            growth_per_sec: 2.0,
            burst_secs: 0.05,
            min_rate: 1.0,
            peak_half_life_secs: 10.0,
            storm_in_a_row: 3,
            cut_margin: 0.002,
            max_baseline: 0.05,
            baseline_half_life_secs: 120.0,
            share_min_answers: 20.0,
            sparse_cut_to: 0.925,
            sparse_additive_rps_per_sec: 0.005,
            sparse_sent_ratio: 2.0,
        }
    }
}

/// An AIMD token bucket on requests.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    cfg: RateLimiterConfig,
    /// Requests per second; `None` while unlimited.
    rate: Option<f64>,
    tokens: f64,
    last_secs: f64,
    paused_until: f64,
    last_cut: f64,
    last_throttle: f64,
    successes: VecDeque<f64>,
    issued: VecDeque<f64>,
    /// The last second's throttled replies.
    throttles: VecDeque<f64>,
    /// Refused share the store keeps up whatever our rate, and when learned.
    baseline_share: f64,
    baseline_at: f64,
    /// When the first request went: rates over the first second are
    /// counts over the time since, not over a whole second.
    first_request: Option<f64>,
    /// Throttled replies seen.
    pub throttled: u64,
    /// Requests answered since the last throttle.
    successes_since_throttle: u64,
    /// Throttled replies since the last success.
    throttled_in_a_row: u32,
    /// Times a `Retry-After` paused every request (a storm).
    pub pauses: u64,
    /// The highest accepted rate seen at a throttle (halving every
    /// `peak_half_life_secs`), and when: cuts stop at a quarter of it, so
    /// throttling that does not depend on our rate (a store answering 503
    /// at random) cannot drive the rate to nothing.
    peak_accepted: f64,
    peak_at: f64,
    /// The limit grew multiplicatively (quiet) since the last cut: it is
    /// no estimate of the store's rate, so the next cut lands under the
    /// accepted rate, not a fraction below the limit.
    grew_quiet: bool,
}

impl RateLimiter {
    pub fn new(cfg: RateLimiterConfig) -> RateLimiter {
        RateLimiter {
            cfg,
            rate: None,
            tokens: 0.0,
            last_secs: 0.0,
            paused_until: f64::NEG_INFINITY,
            last_cut: f64::NEG_INFINITY,
            last_throttle: f64::NEG_INFINITY,
            successes: VecDeque::new(),
            issued: VecDeque::new(),
            throttles: VecDeque::new(),
            baseline_share: 0.0,
            baseline_at: 0.0,
            first_request: None,
            throttled: 0,
            successes_since_throttle: 0,
            throttled_in_a_row: 0,
            pauses: 0,
            peak_accepted: 0.0,
            peak_at: 0.0,
            grew_quiet: false,
        }
    }

    /// The current limit in requests per second (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Fewer than `share_min_answers` answers (accepted or refused) in
    /// the last second: too few for a count to be a rate.
    fn sparse(&mut self, now: f64) -> bool {
        Self::window_rate(&mut self.successes, now) + Self::window_rate(&mut self.throttles, now)
            < self.cfg.share_min_answers
    }

    fn window_rate(q: &mut VecDeque<f64>, now: f64) -> f64 {
        while q.front().is_some_and(|&t| t < now - 1.0) {
            q.pop_front();
        }
        q.len() as f64
    }

    /// Long enough since the last throttle, and enough heard since, to
    /// grow multiplicatively.
    fn quiet(&self, now: f64) -> bool {
        now - self.last_throttle >= self.cfg.quiet_secs
            && self.successes_since_throttle >= self.cfg.quiet_successes
    }

    /// The limit while the store is refusing us (the additive phase): the
    /// request rate the store takes from this process, which the
    /// concurrency controller must keep enough requests in flight to use.
    /// `None` while unlimited or growing after a quiet spell (a limit that
    /// doubles each second is no rate to size anything by).
    pub fn contested_rate(&self, now: f64) -> Option<f64> {
        self.rate.filter(|_| !self.quiet(now))
    }

    fn advance(&mut self, now: f64) {
        let dt = (now - self.last_secs).max(0.0);
        self.last_secs = now;
        let Some(rate) = self.rate else {
            return;
        };
        let quiet = self.quiet(now);
        self.grew_quiet |= quiet;
        let rate = if quiet {
            rate * self.cfg.growth_per_sec.powf(dt)
        } else if self.sparse(now) {
            rate + self.cfg.sparse_additive_rps_per_sec * dt
        } else {
            rate + self.cfg.additive_rps_per_sec * dt
        };
        let burst = (rate * self.cfg.burst_secs).max(1.0);
        self.tokens = (self.tokens + rate * dt).min(burst);
        // Far above what is asked of it, long after the last throttle:
        // nothing to limit any more.
        let asked = Self::window_rate(&mut self.issued, now);
        self.rate = if quiet && now - self.last_throttle > 10.0 && rate > 8.0 * asked.max(1.0) {
            None
        } else {
            Some(rate)
        };
    }

    /// Takes a token for one request at `now`, or says when to ask again.
    pub fn try_acquire(&mut self, now: f64) -> Result<(), f64> {
        self.advance(now);
        if now < self.paused_until {
            return Err(self.paused_until);
        }
        match self.rate {
            None => {}
            Some(rate) if self.tokens >= 1.0 => {
                let _ = rate;
                self.tokens -= 1.0;
            }
            Some(rate) => return Err(now + (1.0 - self.tokens) / rate.max(1e-9)),
        }
        self.issued.push_back(now);
        self.first_request.get_or_insert(now);
        Ok(())
    }

    /// A request completed without throttling.
    pub fn on_success(&mut self, now: f64) {
        self.successes.push_back(now);
        self.successes_since_throttle += 1;
        self.throttled_in_a_row = 0;
        Self::window_rate(&mut self.successes, now);
    }

    /// The store asked for no requests for `secs` (`Retry-After`): every
    /// request waits, whatever the rate.
    pub fn pause(&mut self, now: f64, secs: f64) {
        self.pauses += 1;
        self.paused_until = self.paused_until.max(now + secs.max(0.0));
    }

    /// A throttled reply said `Retry-After: secs` (seen where the HTTP
    /// reply is, before [`RateLimiter::on_throttle_with_wait`] hears of it: object_store
    /// drops the header). The refused request waits that long in any case;
    /// in a storm every request does. True when it paused every request.
    pub fn on_retry_after(&mut self, now: f64, secs: f64) -> bool {
        let storm = self.throttled_in_a_row + 1 >= self.cfg.storm_in_a_row;
        if storm {
            self.pause(now, secs);
        }
        storm
    }

    /// The store answered 503/429 without a `Retry-After` (S3's SlowDown,
    /// a fleet over a shared cap): a statement about the request rate,
    /// answered by cutting.
    pub fn on_throttle(&mut self, now: f64) {
        self.throttle(now, false);
    }

    /// The store answered 503/429 with a `Retry-After` (B2's scattered
    /// refusals): paced by that wait, and perhaps the store's own.
    pub fn on_throttle_with_wait(&mut self, now: f64) {
        self.throttle(now, true);
    }

    fn throttle(&mut self, now: f64, asked_wait: bool) {
        self.advance(now);
        self.throttled += 1;
        self.throttled_in_a_row = self.throttled_in_a_row.saturating_add(1);
        self.throttles.push_back(now);
        let refused = Self::window_rate(&mut self.throttles, now);
        let answered = Self::window_rate(&mut self.successes, now) + refused;
        let judged = answered >= self.cfg.share_min_answers;
        let share = if judged { refused / answered } else { 1.0 };
        let since_cut = now - self.last_cut;
        let baseline = self.baseline_share
            * 0.5f64.powf((now - self.baseline_at) / self.cfg.baseline_half_life_secs);
        let scattered = !judged || share <= self.cfg.max_baseline;
        if asked_wait && scattered {
            // Refusals that name their own wait (B2), scattered or too few
            // answers yet to tell: each refused request waits it out, the
            // rest go on (a storm pauses them all, above). Not a sign of
            // our rate: no cut, and the rate keeps growing as if quiet.
            // (Cutting at the first of them and restarting the quiet clock
            // at each held the limit where it was cut for the whole run:
            // 2% of replies cost 0.31x of the rate; one in the first
            // 100 ms started the run at 9 requests a second.)
            if judged {
                self.baseline_share = self.baseline_share.max(share);
                self.baseline_at = now;
            }
            return;
        }
        if share <= 1.5 * baseline + self.cfg.cut_margin {
            // Within the store's own share, learned from the above.
            return;
        }
        self.last_throttle = now;
        self.successes_since_throttle = 0;
        if since_cut < self.cfg.cut_interval_secs {
            return;
        }
        self.last_cut = now;
        // A store that throttles 100 ms into the run accepted its requests
        // over 100 ms, not over a second (at least 0.1 s: one lucky early
        // request is not a rate).
        let span = self.first_request.map_or(1.0, |t| (now - t).clamp(0.1, 1.0));
        let accepted = Self::window_rate(&mut self.successes, now) / span;
        let asked = Self::window_rate(&mut self.issued, now) / span;
        // The peak fades only while the store answers: through an outage
        // or a storm (nothing accepted) it holds, so the rate comes back
        // from a quarter of it, not from nothing.
        if accepted > 0.0 {
            let since = (now - self.peak_at).max(0.0);
            self.peak_accepted *= 0.5f64.powf(since / self.cfg.peak_half_life_secs);
        }
        self.peak_accepted = self.peak_accepted.max(accepted);
        self.peak_at = now;
        let floor = (0.25 * self.peak_accepted).max(self.cfg.min_rate);
        // Nothing accepted yet (throttled on the first requests): no rate
        // to land under, so halve what was asked, as AIMD does.
        let target = match self.rate {
            // AIMD proper where a count is no rate: 7.5% below the limit,
            // or below twice what was sent where the limit is far above
            // that (a node fast before a fleet filled the store is not
            // cut from a limit it no longer uses).
            Some(limit) if !judged && !self.grew_quiet => {
                self.cfg.sparse_cut_to * limit.min(self.cfg.sparse_sent_ratio * asked)
            }
            _ if accepted > 0.0 => self.cfg.cut_to * accepted,
            _ => 0.5 * asked,
        };
        let target = target.max(floor);
        // Never raise the limit on a throttle.
        let current = self.rate.unwrap_or(asked.max(target));
        self.rate = Some(target.min(current).max(floor));
        self.grew_quiet = false;
        self.tokens = self.tokens.min(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` requests at 100 a second from time 0, each let through;
    /// `accepted`: the store answered each one.
    fn send(l: &mut RateLimiter, n: usize, accepted: bool) {
        for i in 0..n {
            let t = i as f64 / 100.0;
            assert!(l.try_acquire(t).is_ok());
            if accepted {
                l.on_success(t);
            }
        }
    }

    #[test]
    fn unlimited_until_throttled_then_cut_to_accepted_rate() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        // 100 requests in a second, all accepted.
        send(&mut l, 100, true);
        l.on_throttle(1.0);
        let rate = l.rate().unwrap();
        assert!((85.0..=95.0).contains(&rate), "{rate}");
        // Cuts are spaced: a burst of 503s is one signal.
        l.on_throttle(1.1);
        assert!((l.rate().unwrap() - rate).abs() < 5.0);
    }

    #[test]
    fn an_early_throttle_measures_the_rate_over_the_time_run() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        // 20 requests in the first 200 ms: 100/s, not 20/s.
        send(&mut l, 20, true);
        l.on_throttle(0.2);
        let rate = l.rate().unwrap();
        assert!((85.0..=95.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_throttle_before_any_success_halves_the_rate_asked() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        send(&mut l, 10, false);
        l.on_throttle(0.1);
        let rate = l.rate().unwrap();
        assert!((45.0..=55.0).contains(&rate), "{rate}");
    }

    #[test]
    fn retry_after_pauses_everything_only_in_a_storm() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        send(&mut l, 100, true);
        // Scattered: a refusal between successes pauses nobody else.
        for t in [1.0, 1.2, 1.4] {
            assert!(!l.on_retry_after(t, 2.0));
            l.on_throttle(t);
            l.on_success(t + 0.05);
        }
        assert!(l.try_acquire(1.5).is_ok());
        assert_eq!(l.pauses, 0);
        // Three refusals in a row: a storm; the third pauses every request.
        assert!(!l.on_retry_after(2.0, 2.0));
        l.on_throttle(2.0);
        assert!(!l.on_retry_after(2.1, 2.0));
        l.on_throttle(2.1);
        assert!(l.on_retry_after(2.2, 2.0));
        l.on_throttle(2.2);
        assert_eq!(l.try_acquire(3.0), Err(4.2));
        assert!(l.try_acquire(4.5).is_ok());
        assert_eq!(l.pauses, 1);
    }

    #[test]
    fn grows_back_after_a_quiet_spell() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        for i in 0..50 {
            l.on_success(i as f64 / 50.0);
        }
        l.on_throttle(1.0);
        let cut = l.rate().unwrap();
        // Still 50 answers a second (not sparse): 2 s of additive increase,
        // 0.08 requests a second more.
        for i in 0..100 {
            l.on_success(1.0 + f64::from(i) / 50.0);
        }
        let _ = l.try_acquire(3.0);
        let additive = l.rate().unwrap();
        assert!((additive - cut - 0.08).abs() < 1e-9, "{cut} → {additive}");
        // Quiet: 3 s and 150 answers since the throttle.
        for i in 0..150 {
            l.on_success(3.0 + f64::from(i) / 50.0);
        }
        let _ = l.try_acquire(8.0);
        assert!(l.rate().is_none_or(|r| r > cut * 8.0), "{:?}", l.rate());
    }

    /// `n` requests sent and answered at `per_sec` from `from`.
    fn steady(l: &mut RateLimiter, from: f64, n: u32, per_sec: f64) {
        for i in 0..n {
            let t = from + f64::from(i) / per_sec;
            let _ = l.try_acquire(t);
            l.on_success(t);
        }
    }

    /// A node that hears a few answers a second (one of a fleet at its
    /// share of a store's cap): a count is no rate, so cuts take a
    /// fraction off the limit (AIMD proper), the step is small, and a
    /// limit far above what is sent is cut from twice that instead.
    #[test]
    fn a_node_that_hears_few_answers_cuts_its_limit_by_a_fraction() {
        let cfg = RateLimiterConfig::default();
        let mut l = RateLimiter::new(cfg.clone());
        steady(&mut l, 0.0, 5, 5.0);
        l.on_throttle(1.0);
        let first = l.rate().unwrap();
        assert!((first - 4.5).abs() < 1e-9, "first cut {first}: 0.9 × 5 accepted");
        // 2 s at 4 a second: the sparse step.
        steady(&mut l, 1.0, 8, 4.0);
        let _ = l.try_acquire(3.0);
        let grown = l.rate().unwrap();
        let step = 2.0 * cfg.sparse_additive_rps_per_sec;
        assert!((grown - first - step).abs() < 1e-6, "{first} → {grown}");
        l.on_throttle(3.0);
        let cut = l.rate().unwrap();
        assert!((cut - cfg.sparse_cut_to * grown).abs() < 1e-6, "{grown} → {cut}");
        // Sending one a second under a limit of ~4: cut from twice that.
        steady(&mut l, 3.5, 2, 1.0);
        l.on_throttle(5.0);
        let low = l.rate().unwrap();
        let from_sent = cfg.sparse_cut_to * cfg.sparse_sent_ratio * 1.0;
        assert!((low - from_sent).abs() < 1e-6, "{cut} → {low}, not {from_sent}");
    }

    /// After a quiet spell the limit doubled each second and says nothing
    /// of the store: even a node that hears few answers cuts to under
    /// what was accepted, not a fraction off that limit.
    #[test]
    fn after_quiet_growth_a_sparse_cut_lands_under_the_accepted_rate() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        steady(&mut l, 0.0, 10, 10.0);
        l.on_throttle(1.0);
        // 17 s at 10 a second: quiet after 150 answers (16 s), then the
        // limit doubles each second.
        steady(&mut l, 1.0, 170, 10.0);
        let _ = l.try_acquire(18.0);
        assert!(l.rate().is_some_and(|r| r > 25.0), "no quiet growth: {:?}", l.rate());
        l.on_throttle(18.0);
        let cut = l.rate().unwrap();
        assert!((8.0..=9.5).contains(&cut), "{cut}: 0.9 × ~10 accepted");
    }

    /// The floor of a quarter of the peak follows the peak down: a node
    /// that was fast before a fleet filled the store is not held above its
    /// share by what it once had.
    #[test]
    fn the_floor_follows_an_old_peak_down() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        // 100 answers a second at first, then a cut.
        send(&mut l, 100, true);
        l.on_throttle(1.0);
        assert!(l.rate().unwrap() >= 25.0, "{:?}", l.rate());
        // A minute later the store accepts 2 a second from this node.
        let mut t = 60.0;
        for _ in 0..10 {
            l.on_success(t);
            l.on_success(t + 0.5);
            t += 1.0;
            l.on_throttle(t);
        }
        let floor_then = 0.25 * 100.0;
        assert!(l.rate().unwrap() < floor_then / 4.0, "held at {:?}", l.rate());
    }

    /// Through a storm (nothing accepted) the peak holds: the rate comes
    /// back from a quarter of it, not from nothing.
    #[test]
    fn a_storm_does_not_fade_the_floor() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        send(&mut l, 100, true);
        // 60 s of every request refused.
        let mut t = 1.0;
        while t < 61.0 {
            l.on_throttle(t);
            t += 0.5;
        }
        // A quarter of the peak, less what faded in the storm's first
        // second, while the last answers were still in the window.
        assert!(l.rate().unwrap() >= 22.0, "{:?} after a storm", l.rate());
    }

    #[test]
    fn scattered_refusals_with_retry_after_do_not_cut() {
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        let mut t = 0.0;
        // 100 answers a second, every 50th refused with `Retry-After`
        // (B2), for 20 s.
        for i in 0..2000 {
            t = f64::from(i) / 100.0;
            let _ = l.try_acquire(t);
            if i % 50 == 49 {
                l.on_retry_after(t, 1.0);
                l.on_throttle_with_wait(t)
            } else {
                l.on_success(t)
            }
        }
        // The store's own: never cut, never limited.
        assert_eq!(l.rate(), None, "after 20 s of 2% scattered refusals");
        // A real cap on top (1 in 5 refused): cut.
        for i in 0..100 {
            let t = t + f64::from(i + 1) / 100.0;
            if i % 5 == 4 { l.on_throttle(t) } else { l.on_success(t) }
        }
        assert!(l.rate().is_some(), "a real cap (1 in 5 refused) did not limit");
    }

    #[test]
    fn a_node_that_hears_little_does_not_call_the_store_quiet() {
        // Two answers a second (one node of a large fleet): after 5 s
        // without a throttle, only 10 answers; the rate grows additively.
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        for i in 0..4 {
            l.on_success(f64::from(i) / 2.0);
        }
        l.on_throttle(2.0);
        let cut = l.rate().unwrap();
        for i in 0..10 {
            l.on_success(2.0 + f64::from(i) / 2.0);
        }
        let _ = l.try_acquire(7.0);
        let r = l.rate().unwrap();
        assert!(r > cut && r < cut * 1.15, "{cut} → {r}");
    }

    #[test]
    fn plain_refusals_keep_cutting() {
        // The same 2% without `Retry-After` (S3's SlowDown, a fleet over a
        // shared cap): a statement about the rate, cut at each (to 90% of
        // the ~98/s this sender kept being accepted at), never learned.
        let mut l = RateLimiter::new(RateLimiterConfig::default());
        for i in 0..2000 {
            let t = f64::from(i) / 100.0;
            let _ = l.try_acquire(t);
            if i % 50 == 49 { l.on_throttle(t) } else { l.on_success(t) }
        }
        let rate = l.rate().unwrap_or(f64::INFINITY);
        assert!(rate < 90.0, "{rate}: plain refusals were learned as the store's own");
        assert_eq!(l.baseline_share, 0.0);
    }
}
