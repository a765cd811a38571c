//! The request-rate gate: the autotuner's [`RateLimiter`] behind a lock, on
//! the wall clock, one per endpoint and bucket for the whole process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::FetchStats;
use crate::autotune::{RateLimiter, RateLimiterConfig};

/// A shared, clocked [`RateLimiter`].
#[derive(Debug)]
pub struct RateGate {
    limiter: Mutex<RateLimiter>,
    origin: Instant,
}

static GATES: LazyLock<Mutex<HashMap<String, Arc<RateGate>>>> = LazyLock::new(Default::default);

impl RateGate {
    pub fn new() -> Arc<RateGate> {
        Arc::new(RateGate {
            limiter: Mutex::new(RateLimiter::new(RateLimiterConfig::default())),
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

    pub fn on_success(&self) {
        self.with(|l, now| l.on_success(now));
    }

    pub fn on_throttle(&self) {
        self.with(|l, now| l.on_throttle(now));
    }

    /// No requests for `pause` (the store's `Retry-After`).
    pub fn pause(&self, pause: Duration) {
        self.with(|l, now| l.pause(now, pause.as_secs_f64()));
    }

    /// The current limit in requests per second (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.with(|l, _| l.rate())
    }
}
