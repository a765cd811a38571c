//! Input stall: how long a consumer waited for its next batch, in seconds
//! and as a share of its wall time. The first batch is counted apart (it
//! includes start-up: listing, first bytes), so the fraction says whether
//! the steady state keeps up.

use std::time::Duration;

/// Waits of one consumer, as it asks for batches.
#[derive(Debug, Default, Clone)]
pub struct StallClock {
    first_batch: Option<Duration>,
    waited_after_first: Duration,
    batches: u64,
}

/// What [`StallClock`] measured, for reports.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stall {
    /// The emulated training step per batch, if there was one.
    pub step_ms: Option<f64>,
    /// Seconds until the first batch (start-up).
    pub first_batch_s: f64,
    /// Seconds waited for batches after the first.
    pub waited_s: f64,
    /// Seconds from the first batch to the end.
    pub wall_s: f64,
    /// `waited_s / wall_s`: 0 is a consumer that never waited.
    pub fraction: f64,
}

impl StallClock {
    /// One batch arrived after the consumer waited `waited` for it.
    pub fn batch(&mut self, waited: Duration) {
        match self.first_batch {
            None => self.first_batch = Some(waited),
            Some(_) => self.waited_after_first += waited,
        }
        self.batches += 1;
    }

    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// The figures over a run whose wall time since the first request for
    /// a batch is `wall` (start-up included).
    pub fn stall(&self, wall: Duration, step_ms: Option<f64>) -> Stall {
        let first = self.first_batch.unwrap_or(wall);
        let after = wall.saturating_sub(first);
        let waited = self.waited_after_first.min(after);
        let fraction =
            if after.is_zero() { 0.0 } else { waited.as_secs_f64() / after.as_secs_f64() };
        Stall {
            step_ms,
            first_batch_s: first.as_secs_f64(),
            waited_s: waited.as_secs_f64(),
            wall_s: after.as_secs_f64(),
            fraction,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn start_up_is_apart_and_the_rest_is_a_share_of_wall_time() {
        let mut c = StallClock::default();
        c.batch(ms(300)); // start-up
        for _ in 0..10 {
            c.batch(ms(1)); // 1 ms waits between 5 ms steps
        }
        // 300 ms start-up, then 10 × (1 ms wait + 5 ms step) = 60 ms.
        let s = c.stall(ms(360), Some(5.0));
        assert!((s.first_batch_s - 0.3).abs() < 1e-9);
        assert!((s.waited_s - 0.010).abs() < 1e-9);
        assert!((s.wall_s - 0.060).abs() < 1e-9);
        assert!((s.fraction - 1.0 / 6.0).abs() < 1e-9, "{s:?}");
        assert_eq!(c.batches(), 11);
    }

    #[test]
    fn no_batch_or_one_batch_is_no_stall_not_a_division_by_zero() {
        let s = StallClock::default().stall(ms(50), None);
        assert_eq!(s.fraction, 0.0);
        assert_eq!(s.wall_s, 0.0);
        let mut c = StallClock::default();
        c.batch(ms(50));
        assert_eq!(c.stall(ms(50), None).fraction, 0.0);
    }

    #[test]
    fn waits_never_exceed_the_wall_time() {
        let mut c = StallClock::default();
        c.batch(ms(10));
        c.batch(ms(500)); // a wall clock taken too early cannot give > 1
        let s = c.stall(ms(110), None);
        assert!(s.fraction <= 1.0, "{s:?}");
    }
}
