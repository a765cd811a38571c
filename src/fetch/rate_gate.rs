//! The request-rate gate: the autotuner's [`RateLimiter`] and the
//! [`RetryBudget`] behind a lock, on the wall clock, one per endpoint and
//! bucket for the whole process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::FetchStats;
use super::retry_budget::{RetryBudget, RetryBudgetConfig};
use crate::autotune::{RateLimiter, RateLimiterConfig};

/// A shared, clocked [`RateLimiter`] and [`RetryBudget`].
#[derive(Debug)]
pub struct RateGate {
    limiter: Mutex<RateLimiter>,
    budget: Mutex<RetryBudget>,
    origin: Instant,
}

static GATES: LazyLock<Mutex<HashMap<String, Arc<RateGate>>>> = LazyLock::new(Default::default);

impl RateGate {
    pub fn new() -> Arc<RateGate> {
        Arc::new(RateGate {
            limiter: Mutex::new(RateLimiter::new(RateLimiterConfig::default())),
            budget: Mutex::new(RetryBudget::new(RetryBudgetConfig::default())),
            origin: Instant::now(),
        })
    }

    /// The process-wide gate of `endpoint` (e.g. `s3://bucket`).
    pub fn for_endpoint(endpoint: &str) -> Arc<RateGate> {
        let mut gates = GATES.lock().unwrap_or_else(|p| p.into_inner());
        gates.entry(endpoint.to_string()).or_insert_with(RateGate::new).clone()
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn with<T>(&self, f: impl FnOnce(&mut RateLimiter, f64) -> T) -> T {
        let now = self.now();
        f(&mut self.limiter.lock().unwrap_or_else(|p| p.into_inner()), now)
    }

    /// Waits for a token; the wait is added to `stats.rate_limited_us`.
    pub async fn acquire(&self, stats: &FetchStats) {
        let started = Instant::now();
        loop {
            let wait = self.with(|l, now| l.try_acquire(now).err().map(|until| until - now));
            match wait {
                None => break,
                Some(secs) => {
                    tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.000_1, 5.0))).await
                }
            }
        }
        FetchStats::add(&stats.rate_limited_us, started.elapsed().as_micros() as u64);
    }

    /// The limiter's rate while the store refuses requests (see
    /// [`RateLimiter::contested_rate`]).
    pub fn contested_rate(&self) -> Option<f64> {
        self.with(|l, now| l.contested_rate(now))
    }

    fn with_budget<T>(&self, f: impl FnOnce(&mut RetryBudget, f64) -> T) -> T {
        let now = self.now();
        f(&mut self.budget.lock().unwrap_or_else(|p| p.into_inner()), now)
    }

    /// Waits for a retry token until `deadline`; false if none came by then.
    pub async fn acquire_retry(&self, deadline: tokio::time::Instant) -> bool {
        let mut waited = false;
        loop {
            let Err(at) = self.with_budget(|b, now| b.try_take(now).map_err(|at| at - now)) else {
                if waited {
                    self.with_budget(|b, _| b.waited += 1);
                }
                return true;
            };
            waited = true;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            // Answers refill the bucket too: look again soon.
            let nap = Duration::from_secs_f64(at.clamp(0.001, 0.05)).min(deadline - now);
            tokio::time::sleep(nap).await;
        }
    }

    /// Retries let through, and how many of them waited for a token.
    pub fn retries(&self) -> (u64, u64) {
        self.with_budget(|b, _| (b.spent, b.waited))
    }

    pub fn on_success(&self) {
        self.with(|l, now| l.on_success(now));
        self.with_budget(|b, now| b.on_success(now));
    }

    /// A 503/429; `asked_wait`: it carried a `Retry-After`.
    pub fn on_throttle(&self, asked_wait: bool) {
        let (before, after) = self.with(|l, now| {
            let before = l.rate();
            if asked_wait {
                l.on_throttle_with_wait(now)
            } else {
                l.on_throttle(now)
            }
            (before, l.rate())
        });
        if before != after {
            tracing::debug!(
                ?before,
                ?after,
                "Throttled: the request-rate limit changed (requests/s)."
            );
        }
    }

    /// A throttled reply said `Retry-After: pause`: every request waits
    /// that long if this is a storm (see [`RateLimiter::on_retry_after`]).
    pub fn on_retry_after(&self, pause: Duration) -> bool {
        self.with(|l, now| l.on_retry_after(now, pause.as_secs_f64()))
    }

    /// Times a storm's `Retry-After` paused every request.
    pub fn pauses(&self) -> u64 {
        self.with(|l, _| l.pauses)
    }

    /// The current limit in requests per second (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.with(|l, _| l.rate())
    }
}
