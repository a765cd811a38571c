//! What the consumer side tells the autotuner: how full the ready queue is
//! when a batch is taken, and how long the consumer waited for it. A full
//! queue means fetching faster helps nobody; waits mean it would.

use std::sync::atomic::{AtomicU64, Ordering};

/// Consumer-side counters, summed; the autotuner reads deltas.
#[derive(Debug, Default)]
pub struct DemandGauge {
    /// Sum of queue fill (per mille) at each take, and the number of takes.
    fill_permille_sum: AtomicU64,
    takes: AtomicU64,
    /// Microseconds the consumer waited.
    wait_us: AtomicU64,
    /// Payload bytes put in batches for the consumer: while its queue is
    /// full, what it takes.
    batched_bytes: AtomicU64,
}

/// A plain copy of [`DemandGauge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemandSnapshot {
    pub fill_permille_sum: u64,
    pub takes: u64,
    pub wait_us: u64,
    pub batched_bytes: u64,
}

impl DemandGauge {
    /// A batch was taken with the queue `fill` (0..=1) full after a wait.
    pub fn record(&self, fill: f64, waited: std::time::Duration) {
        self.fill_permille_sum.fetch_add((fill.clamp(0.0, 1.0) * 1000.0) as u64, Ordering::Relaxed);
        self.takes.fetch_add(1, Ordering::Relaxed);
        self.wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// A batch of `bytes` payload bytes was queued for the consumer.
    pub fn batched(&self, bytes: u64) {
        self.batched_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DemandSnapshot {
        DemandSnapshot {
            fill_permille_sum: self.fill_permille_sum.load(Ordering::Relaxed),
            takes: self.takes.load(Ordering::Relaxed),
            wait_us: self.wait_us.load(Ordering::Relaxed),
            batched_bytes: self.batched_bytes.load(Ordering::Relaxed),
        }
    }
}
