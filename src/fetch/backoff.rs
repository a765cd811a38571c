//! Decorrelated-jitter backoff (AWS Architecture Blog, "Exponential Backoff
//! and Jitter"), as object_store uses: each sleep is drawn uniformly from
//! `[base, 3 × previous]`, capped. Jitter spreads the retries of many
//! clients that failed together, so they do not hit the store again in step.

use std::time::Duration;

use rand::Rng;

/// The state of one retry sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    previous: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, previous: base }
    }

    /// The next sleep; at least `base`, at most `cap`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let lo = self.base.as_secs_f64();
        let hi = (self.previous.as_secs_f64() * 3.0).max(lo);
        let drawn = if hi > lo { rng.random_range(lo..hi) } else { lo };
        let delay = Duration::from_secs_f64(drawn).min(self.cap);
        self.previous = delay;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_stay_within_bounds_and_grow() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (base, cap) = (Duration::from_millis(10), Duration::from_secs(2));
        let mut b = Backoff::new(base, cap);
        let delays: Vec<_> = (0..30).map(|_| b.next_delay(&mut rng)).collect();
        assert!(delays.iter().all(|d| *d >= base && *d <= cap));
        assert!(delays.iter().any(|d| *d > base * 10), "backoff grows: {delays:?}");
    }
}
