//! The retry budget: a token bucket on retries, one per endpoint and
//! bucket for the whole process (beside the request-rate limiter).
//!
//! Backoff spaces one request's retries; it does not bound what a whole
//! process sends a store that is down. Every request in flight retrying
//! every few seconds for a minute is hundreds of requests into an outage.
//! So a retry takes a token: the bucket holds 10, refills one every two
//! seconds, and every answered request adds two. In normal operation (a
//! failure now and then among many answers) it is always full and costs
//! nothing; in an outage retries fall to one every two seconds for the
//! whole endpoint (a minute's outage: ~40 retries); when the
//! store comes back, each answered retry lets two more go, so the backlog
//! clears in a few round trips instead of one a second. Clock injected:
//! pure and testable.

/// Budget settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    /// 10 retries may go at once (a burst of failures among many answers).
    pub max_tokens: f64,
    /// One retry every two seconds for the endpoint when nothing is
    /// answered: enough to notice the store is back, at a cost of ~30
    /// requests a minute.
    pub refill_per_sec: f64,
    /// Two tokens per answered request: answers, not the clock, pace the
    /// recovery.
    pub per_success: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig { max_tokens: 10.0, refill_per_sec: 0.5, per_success: 2.0 }
    }
}

#[derive(Debug, Clone)]
pub struct RetryBudget {
    cfg: RetryBudgetConfig,
    tokens: f64,
    last_secs: f64,
    /// Retries let through, and those that had to wait for a token.
    pub spent: u64,
    pub waited: u64,
}

impl RetryBudget {
    pub fn new(cfg: RetryBudgetConfig) -> RetryBudget {
        RetryBudget { tokens: cfg.max_tokens, cfg, last_secs: 0.0, spent: 0, waited: 0 }
    }

    fn advance(&mut self, now: f64) {
        let dt = (now - self.last_secs).max(0.0);
        self.last_secs = self.last_secs.max(now);
        self.tokens = (self.tokens + dt * self.cfg.refill_per_sec).min(self.cfg.max_tokens);
    }

    /// Takes a token for one retry at `now`, or says when to ask again.
    pub fn try_take(&mut self, now: f64) -> Result<(), f64> {
        self.advance(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.spent += 1;
            return Ok(());
        }
        Err(now + (1.0 - self.tokens) / self.cfg.refill_per_sec.max(1e-9))
    }

    /// A request was answered.
    pub fn on_success(&mut self, now: f64) {
        self.advance(now);
        self.tokens = (self.tokens + self.cfg.per_success).min(self.cfg.max_tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_gets_one_retry_every_two_seconds_after_the_burst() {
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        // 60 s of nothing answered, retries asked for every 10 ms.
        let mut let_through = 0;
        for i in 0..6000 {
            if b.try_take(f64::from(i) / 100.0).is_ok() {
                let_through += 1;
            }
        }
        assert!((38..=42).contains(&let_through), "{let_through} retries in 60 s");
    }

    #[test]
    fn answers_refill_it_so_recovery_is_fast() {
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        while b.try_take(0.0).is_ok() {}
        assert_eq!(b.try_take(0.0), Err(2.0));
        // One answered retry lets two more go at once.
        b.on_success(0.0);
        assert!(b.try_take(0.0).is_ok() && b.try_take(0.0).is_ok());
        assert!(b.try_take(0.0).is_err());
    }

    #[test]
    fn scattered_failures_never_wait() {
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        // 1,000 requests a second, 5% failed and retried, for 10 s.
        for i in 0..10_000 {
            let t = f64::from(i) / 1000.0;
            if i % 20 == 0 {
                assert!(b.try_take(t).is_ok(), "retry {i} waited");
            } else {
                b.on_success(t);
            }
        }
    }
}
