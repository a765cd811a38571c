//! Counters of the fetch engine, read by `bench` (and later by metrics and
//! the autotuner). Plain relaxed atomics: each is an independent count.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide fetch counters.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Requests sent (HEAD and GET, first tries and retries).
    pub requests: AtomicU64,
    /// Requests repeated after a transient failure.
    pub retries: AtomicU64,
    /// Replies that asked us to slow down (503, 429).
    pub throttled: AtomicU64,
    /// Failed attempts (each retried one, and each final failure).
    pub errors: AtomicU64,
    /// Payload bytes of completed parts.
    pub bytes: AtomicU64,
    /// Payload bytes as they arrive, of completed parts or not (the
    /// autotuner's start-up rounds are shorter than a part).
    pub arrived_bytes: AtomicU64,
    /// Replies whose first byte arrived, and microseconds to it summed.
    pub first_bytes: AtomicU64,
    pub first_byte_us: AtomicU64,
    /// Parts completed.
    pub parts: AtomicU64,
    /// Over completed parts: microseconds to the first byte (the reply's
    /// headers) and of transfer after it, for the autotuner.
    pub ttfb_us: AtomicU64,
    pub transfer_us: AtomicU64,
    /// Attempts that timed out.
    pub timeouts: AtomicU64,
    /// Attempts abandoned because their bytes stopped arriving, or came
    /// too slowly to finish (see `part_reader`).
    pub stalls: AtomicU64,
    /// Microseconds requests waited on the request-rate limiter.
    pub rate_limited_us: AtomicU64,
    /// Second requests racing a part that held up the line (`hedge`), and
    /// how many of them brought the part's bytes first.
    pub hedges: AtomicU64,
    pub hedge_wins: AtomicU64,
}

/// A plain copy of [`FetchStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchSnapshot {
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub errors: u64,
    pub bytes: u64,
    pub arrived_bytes: u64,
    pub first_bytes: u64,
    pub first_byte_us: u64,
    pub parts: u64,
    pub ttfb_us: u64,
    pub transfer_us: u64,
    pub timeouts: u64,
    pub stalls: u64,
    pub rate_limited_us: u64,
    pub hedges: u64,
    pub hedge_wins: u64,
}

impl FetchStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// How long a reply may send nothing (no headers, or no next body
    /// chunk) before its connection counts as stalled and the part resumes
    /// on another: twice the mean part time so far, so a stall costs about
    /// one part time, not the request timeout; at least `floor` (2 s by
    /// default: a lossy path's retransmission timeouts back off to
    /// seconds); 10 s before any part has completed; never more than
    /// `request_timeout`.
    pub fn stall_after(
        &self,
        floor: std::time::Duration,
        request_timeout: std::time::Duration,
    ) -> std::time::Duration {
        let parts = self.parts.load(Ordering::Relaxed);
        let secs = if parts == 0 {
            10.0
        } else {
            let us =
                self.ttfb_us.load(Ordering::Relaxed) + self.transfer_us.load(Ordering::Relaxed);
            (2.0 * us as f64 / 1e6 / parts as f64).max(floor.as_secs_f64())
        };
        std::time::Duration::from_secs_f64(secs).min(request_timeout)
    }

    pub fn snapshot(&self) -> FetchSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FetchSnapshot {
            requests: get(&self.requests),
            retries: get(&self.retries),
            throttled: get(&self.throttled),
            errors: get(&self.errors),
            bytes: get(&self.bytes),
            arrived_bytes: get(&self.arrived_bytes),
            first_bytes: get(&self.first_bytes),
            first_byte_us: get(&self.first_byte_us),
            parts: get(&self.parts),
            ttfb_us: get(&self.ttfb_us),
            transfer_us: get(&self.transfer_us),
            timeouts: get(&self.timeouts),
            stalls: get(&self.stalls),
            rate_limited_us: get(&self.rate_limited_us),
            hedges: get(&self.hedges),
            hedge_wins: get(&self.hedge_wins),
        }
    }
}
