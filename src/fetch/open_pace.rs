//! Opening many requests at once, in cohorts.
//!
//! An engine that starts above 32 requests (`--concurrency 64`, a warm
//! start from the tuning cache) would open every connection in the same
//! moment, all in TCP slow start together. The autotuner's own start-up
//! never does: it opens at most 32 at once (its leap from 8) and doubles
//! only after a measured round. On netlab at 60 ms / 100 Mbit on a busy
//! hour, `--concurrency 64` opened at once carried 147–250 MB/s (median
//! 213) for 6.4–11 CPU-s a pass, the first batch after 1.0–1.9 s; opened
//! as 32 then 64 once the first cohort's first bytes had come, 225–358
//! (median 305) for 4.3–6.7 CPU-s, first batch after 0.8–1.2 s (4
//! alternating passes, ahead in each); a warm start at 64, 231–304
//! (median 280) against 156–342 (median 198). The kernel's packet work,
//! not the path, took both cores while 64 slow starts ran together
//! (docs/AUTOTUNE.md, "Opening in cohorts").
//!
//! Not from 8: a first cohort of 8 (then 16, 32) made `--concurrency 32`
//! at 20 ms lose 5–10% (the later cohorts' parts, on connections still in
//! slow start, held the parser while the first cohort's warm connections
//! raced ahead) and a warm start's first second 3–6× slower.
//!
//! The ceiling doubles once as many replies as the last cohort opened have
//! had their first byte, and at least twice their mean time to first
//! byte after it opened (a new connection's first byte takes two round
//! trips), at most a second after it (a store that never answers does not
//! hold the limit down); it is lifted once it no longer binds.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{ConcurrencyLimit, FetchEngine};

/// Requests opened at once before pacing starts: what the autotuner's
/// far start opens at once too (its leap from 8 to 32).
pub const FIRST_COHORT: usize = 32;
/// The least time between doublings, and how often the pacer looks.
const TICK: Duration = Duration::from_millis(10);
/// The most time between doublings.
const MAX_STEP: Duration = Duration::from_secs(1);

/// A limit for an engine starting at `start`: under a ceiling of
/// [`FIRST_COHORT`] when `start` is above it and a runtime is there to
/// raise it ([`spawn`]); otherwise plain.
pub fn limit_for(start: usize) -> (Arc<ConcurrencyLimit>, bool) {
    if start > FIRST_COHORT && tokio::runtime::Handle::try_current().is_ok() {
        (ConcurrencyLimit::under_ceiling(start, FIRST_COHORT), true)
    } else {
        (ConcurrencyLimit::new(start), false)
    }
}

/// Raises `engine`'s ceiling cohort by cohort until it no longer binds,
/// then lifts it.
pub fn spawn(engine: &Arc<FetchEngine>) {
    tokio::spawn(run(Arc::downgrade(engine)));
}

async fn run(engine: Weak<FetchEngine>) {
    let mut opened = FIRST_COHORT;
    loop {
        let Some((ceiling, before)) = engine.upgrade().map(|e| {
            let stats = e.stats.snapshot();
            (e.limit.ceiling(), (stats.first_bytes, stats.first_byte_us))
        }) else {
            return;
        };
        let since = Instant::now();
        loop {
            tokio::time::sleep(TICK).await;
            let Some(e) = engine.upgrade() else { return };
            if ceiling >= e.limit.limit() {
                // The limit came down under the ceiling: nothing to pace.
                e.limit.set_ceiling(usize::MAX);
                return;
            }
            let now = e.stats.snapshot();
            let firsts = now.first_bytes.saturating_sub(before.0);
            let waited = since.elapsed();
            let mean_ttfb =
                Duration::from_micros(now.first_byte_us.saturating_sub(before.1) / firsts.max(1));
            let arrived = firsts >= opened as u64 && waited >= 2 * mean_ttfb;
            if arrived || waited >= MAX_STEP {
                break;
            }
        }
        let Some(e) = engine.upgrade() else { return };
        let next = ceiling.saturating_mul(2);
        // STOKER_LOG=stoker::fetch=debug: when each cohort opened.
        tracing::debug!(
            from = ceiling,
            to = next.min(e.limit.limit()),
            waited_ms = since.elapsed().as_millis() as u64,
            "Opening the next cohort of requests."
        );
        if next >= e.limit.limit() {
            e.limit.set_ceiling(usize::MAX);
            return;
        }
        e.limit.set_ceiling(next);
        opened = next - ceiling;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchConfig;
    use object_store::memory::InMemory;

    fn engine(concurrency: usize) -> Arc<FetchEngine> {
        let config = FetchConfig { concurrency, ..FetchConfig::default() };
        FetchEngine::new(Arc::new(InMemory::new()), config)
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_never_answers_does_not_hold_the_limit_down() {
        // No request ever gets a first byte: each step waits its second.
        let e = engine(100);
        assert_eq!((e.limit.limit(), e.limit.ceiling()), (100, 32));
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(e.limit.ceiling(), 32, "a step waits for first bytes, up to a second");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(e.limit.ceiling(), 64);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(e.limit.ceiling(), usize::MAX, "lifted once it no longer binds");
        assert_eq!(e.limit.limit(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_brought_under_the_ceiling_ends_the_pacing() {
        let e = engine(64);
        e.limit.set_limit(20);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(e.limit.ceiling(), usize::MAX);
        assert_eq!(e.limit.limit(), 20);
    }

    #[tokio::test]
    async fn at_most_the_first_cohort_is_not_paced() {
        let e = engine(FIRST_COHORT);
        assert_eq!(e.limit.ceiling(), usize::MAX);
        assert_eq!(e.limit.limit(), FIRST_COHORT);
    }
}
