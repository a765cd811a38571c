//! One retry policy for every store call: parts, HEADs and listings.
//!
//! ```text
//!  attempt ─transient failure─▶ wait max(backoff, the reply's Retry-After)
//!     ▲                         ─▶ a retry token (the endpoint's budget)
//!     └──────────────────────────┘  …until no progress for `outage_tolerance`
//! ```
//!
//! A request gives up when it has made no progress (no bytes, no answer)
//! for the outage tolerance (2 minutes by default), or after
//! `max_attempts`: an outage of a minute costs a pause, not the job, and
//! the endpoint's retry budget bounds what the process sends into it.

use std::time::Duration;

use tokio::time::Instant;

use rand::SeedableRng;

use super::{Backoff, FetchConfig, FetchStats, RateGate};

/// Why a request stopped retrying.
#[derive(Debug, Clone, PartialEq)]
pub enum GiveUp {
    Attempts(u32),
    /// No progress for this long.
    Outage(Duration),
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUp::Attempts(n) => write!(f, "gave up after {n} attempts"),
            GiveUp::Outage(d) => {
                write!(
                    f,
                    "the store failed every attempt for {:.0} s (outage tolerance)",
                    d.as_secs_f64()
                )
            }
        }
    }
}

/// The retry state of one request.
#[derive(Debug)]
pub struct RetryLoop<'a> {
    cfg: &'a FetchConfig,
    gate: Option<&'a RateGate>,
    stats: &'a FetchStats,
    backoff: Backoff,
    rng: rand_chacha::ChaCha8Rng,
    attempts: u32,
    progress_at: Instant,
}

impl<'a> RetryLoop<'a> {
    pub fn new(cfg: &'a FetchConfig, gate: Option<&'a RateGate>, stats: &'a FetchStats) -> Self {
        RetryLoop {
            cfg,
            gate,
            stats,
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_cap),
            rng: rand_chacha::ChaCha8Rng::from_os_rng(),
            attempts: 0,
            progress_at: Instant::now(),
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts an attempt: waits for the endpoint's request rate, counts it.
    pub async fn begin(&mut self) {
        self.attempts += 1;
        if let Some(gate) = self.gate {
            gate.acquire(self.stats).await;
        }
        FetchStats::add(&self.stats.requests, 1);
    }

    /// A reply said slow down (503 SlowDown, 429): counted, and the
    /// endpoint's rate limiter hears of it, with whether it asked for a
    /// wait (`Retry-After`, `asked`).
    pub fn throttled(&self, asked: Option<Duration>) {
        FetchStats::add(&self.stats.throttled, 1);
        if let Some(gate) = self.gate {
            gate.on_throttle(asked.is_some());
        }
    }

    /// Bytes arrived: the outage clock starts again.
    pub fn progress(&mut self) {
        self.progress_at = Instant::now();
    }

    /// After a transient failure: waits for the next attempt (backoff, or
    /// the store's `asked` Retry-After if longer, then a retry token), or
    /// says why not.
    pub async fn wait(&mut self, asked: Option<Duration>) -> Result<Duration, GiveUp> {
        if self.attempts >= self.cfg.max_attempts {
            return Err(GiveUp::Attempts(self.attempts));
        }
        let deadline = self.progress_at + self.cfg.outage_tolerance;
        let now = Instant::now();
        if now >= deadline {
            return Err(GiveUp::Outage(self.progress_at.elapsed()));
        }
        // The store asked for a wait past the tolerance: it is down for longer
        // than we ride out.
        if let Some(asked) = asked
            && now + asked >= deadline
        {
            return Err(GiveUp::Outage(self.progress_at.elapsed() + asked));
        }
        // Our own backoff stops at the deadline, with one last attempt there:
        // an outage shorter than the tolerance is ridden out however the
        // jitter fell (a draw past the deadline used to give up early, at
        // 1.4 s of a 2 s tolerance in one test run).
        let delay = self
            .backoff
            .next_delay(&mut self.rng)
            .max(asked.unwrap_or_default())
            .min(deadline - now);
        FetchStats::add(&self.stats.retries, 1);
        tokio::time::sleep(delay).await;
        if let Some(gate) = self.gate
            && !gate.acquire_retry(deadline).await
        {
            return Err(GiveUp::Outage(self.progress_at.elapsed()));
        }
        Ok(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_outage_ends_after_the_tolerance_not_a_count() {
        let cfg =
            FetchConfig { outage_tolerance: Duration::from_secs(120), ..FetchConfig::default() };
        let stats = FetchStats::default();
        let gate = RateGate::new();
        let mut retry = RetryLoop::new(&cfg, Some(&gate), &stats);
        let started = Instant::now();
        let why = loop {
            retry.begin().await;
            if let Err(why) = retry.wait(None).await {
                break why;
            }
        };
        let lasted = started.elapsed();
        assert!(matches!(why, GiveUp::Outage(_)), "{why}");
        assert!(
            lasted >= Duration::from_secs(120) && lasted < Duration::from_secs(121),
            "the whole tolerance, then one last attempt: {lasted:?}"
        );
        assert!(retry.attempts() > 10, "more than the old 10 attempts: {}", retry.attempts());
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_outage_clock_and_retry_after_is_honoured() {
        let cfg =
            FetchConfig { outage_tolerance: Duration::from_secs(10), ..FetchConfig::default() };
        let stats = FetchStats::default();
        let mut retry = RetryLoop::new(&cfg, None, &stats);
        retry.begin().await;
        let waited = retry.wait(Some(Duration::from_secs(3))).await.expect("retry");
        assert!(waited >= Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(6)).await;
        retry.progress();
        retry.begin().await;
        assert!(
            retry.wait(Some(Duration::from_secs(8))).await.is_ok(),
            "8 s < 10 s since progress"
        );
        assert!(matches!(retry.wait(Some(Duration::from_secs(9))).await, Err(GiveUp::Outage(_))));
    }
}
