//! Racing the part that holds up the line.
//!
//! The parser takes parts in order, so one slow reply (a connection in
//! loss recovery on a WAN path: 3–16 MB/s where its neighbours get 50)
//! stops everything behind it once the parts fetched after it have filled
//! the memory budget. On a 20 ms netlab path a static 32 × 8 MiB pass sat
//! 0.5 s of its 4 s at one request in flight this way, the whole budget
//! full of finished parts waiting for that one.
//!
//! ```text
//!  scheduler (waiting for budget, or past its last part)
//!    every HEDGE_CHECK: its unfinished parts, oldest first, while each is
//!    late (in flight twice what its length takes at the mean pace)
//!    ──▶ signal it (once)
//!  scheduler (sending a part)
//!    a late part that a part sent after it has passed (finished first)
//!    ──▶ signal it (once)
//!  the part's task, signalled mid-body, when it is worth it:
//!    attempt  [██████▒▒▒▒▒▒·········]  keeps reading
//!    hedge            [████████████████]  GET filled..end, If-Match,
//!                                         fresh connection
//!    first to finish wins; the other is dropped (its connection closed)
//! ```
//!
//! Bounded three ways: at most one hedge per attempt (a part signals once;
//! a retry after a lost race may race again); its bytes come from the
//! memory budget's overdraft, 1/16 of it (`MemoryBudget::try_overdraw`:
//! the budget is full when it matters, and the winner's bytes replace the
//! loser's); and each hedge
//! spends a token of the endpoint's retry budget, so a struggling store is
//! not raced.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::FetchStats;

/// How often a waiting scheduler looks at the head of its line: well
/// under a part time on any path worth racing (≥ 100 ms).
pub const HEDGE_CHECK: Duration = Duration::from_millis(20);

/// How long a reply's body has been read before its pace is judged.
pub const JUDGE_AFTER: Duration = Duration::from_millis(100);

/// One part's "you are holding up the line".
#[derive(Debug, Default)]
pub struct HedgeSignal {
    fired: AtomicBool,
    notify: Notify,
}

impl HedgeSignal {
    /// Asks the part to race (at most once).
    pub fn fire(&self) {
        if !self.fired.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Resolves once fired (at once if already fired).
    pub async fn fired(&self) {
        if self.fired.load(Ordering::Acquire) {
            return;
        }
        self.notify.notified().await;
    }
}

/// What a part's fetch may race with: its signal, and the memory budget
/// whose overdraft holds the race's bytes.
#[derive(Debug, Clone)]
pub struct Race {
    pub signal: Arc<HedgeSignal>,
    pub budget: Arc<super::MemoryBudget>,
}

/// A scheduler's unfinished parts, oldest first: what it may signal.
#[derive(Debug, Default)]
pub struct Line {
    /// When each part was sent, its length, and its signal.
    parts: VecDeque<(Instant, u64, Weak<HedgeSignal>)>,
    /// When `check_passed` last signalled a part.
    passed_fired: Option<Instant>,
}

impl Line {
    /// A part just sent; its task holds `signal` until it is done.
    /// Finished parts at the head are forgotten here too, so a line that is
    /// never checked (the budget never full) stays as long as what is in
    /// flight behind its oldest part.
    pub fn push(&mut self, signal: &Arc<HedgeSignal>, len: u64) {
        self.forget_finished();
        self.parts.push_back((Instant::now(), len, Arc::downgrade(signal)));
    }

    fn forget_finished(&mut self) {
        while self.parts.front().is_some_and(|(_, _, s)| s.strong_count() == 0) {
            self.parts.pop_front();
        }
    }

    /// Forgets finished parts at the head, and signals every part from the
    /// head on that is `overdue` (none is before a part has completed): a
    /// straggler behind a straggler must not wait for the first to finish
    /// before it is raced, it holds the line next. False once every part
    /// is done.
    pub fn check(&mut self, now: Instant, overdue: Option<Overdue>) -> bool {
        self.forget_finished();
        let Some(overdue) = overdue else {
            return !self.parts.is_empty();
        };
        for (sent, len, signal) in &self.parts {
            if now.saturating_duration_since(*sent) < overdue.after(*len) {
                break;
            }
            if let Some(signal) = signal.upgrade() {
                signal.fire();
            }
        }
        !self.parts.is_empty()
    }

    /// Signals the oldest `overdue` part that a part sent after it has
    /// passed (finished first): the parser takes parts in order, so it
    /// waits on the older one while the parts behind it fill the budget.
    /// Needs no blocked scheduler: on a 30 ms netlab path one part of 294
    /// took 1.9 s where the median took 0.35, and the parser stood 1.3 s
    /// before the budget (1 GiB) was full enough to block anything.
    /// One part at a time, the next no sooner than half the time after
    /// which the last counted late: when the whole process stalls (this
    /// VM's timer ran 0.3–0.4 s late), every part is late and they finish
    /// in a burst; racing them all (30 races at 10 ms, 3 won) added load
    /// where nothing was slow but the cores.
    pub fn check_passed(&mut self, now: Instant, overdue: Overdue) {
        // Parts before the last finished one have been passed.
        let Some(last_done) = self.parts.iter().rposition(|(_, _, s)| s.strong_count() == 0) else {
            return;
        };
        let oldest = self.parts.iter().take(last_done).find_map(|(sent, len, signal)| {
            let late = overdue.after(*len);
            let signal = signal.upgrade()?;
            (now.saturating_duration_since(*sent) >= late && !signal.fired.load(Ordering::Acquire))
                .then_some((signal, late / 2))
        });
        let Some((signal, spacing)) = oldest else {
            return;
        };
        if self.passed_fired.is_some_and(|t| now.saturating_duration_since(t) < spacing) {
            return;
        }
        signal.fire();
        self.passed_fired = Some(now);
    }
}

/// When a part counts as late: twice the time a part of its length takes
/// at the mean pace of completed parts (a part takes that and more on a
/// shared path; twice is past what sharing explains), at least 100 ms (a
/// few round trips: a shorter part is not worth a second request). Per
/// length, not per part: a stream's first parts are cut small (the lead,
/// `shard_stream`), and at 10 ms a mean of those made whole parts look
/// late, 2–7 races a pass that lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overdue {
    ttfb_secs: f64,
    secs_per_byte: f64,
}

impl Overdue {
    /// `None` before any part has completed (nothing to compare with).
    pub fn from_stats(stats: &FetchStats) -> Option<Overdue> {
        let parts = stats.parts.load(Ordering::Relaxed);
        let bytes = stats.bytes.load(Ordering::Relaxed);
        if parts == 0 || bytes == 0 {
            return None;
        }
        Some(Overdue {
            ttfb_secs: stats.ttfb_us.load(Ordering::Relaxed) as f64 / 1e6 / parts as f64,
            secs_per_byte: stats.transfer_us.load(Ordering::Relaxed) as f64 / 1e6 / bytes as f64,
        })
    }

    /// How long a part of `len` bytes may be in flight before it is late.
    pub fn after(&self, len: u64) -> Duration {
        let mean = self.ttfb_secs + len as f64 * self.secs_per_byte;
        Duration::from_secs_f64((2.0 * mean).max(0.1))
    }
}

/// Whether racing `left` bytes is worth a second request, for a reply
/// that has brought `got` bytes in `receiving` since its first byte: yes
/// when it would take longer to finish at its own pace than a fresh
/// request at the mean pace of completed parts (time to first byte plus
/// transfer) takes.
pub fn worth_racing(stats: &FetchStats, got: u64, receiving: Duration, left: u64) -> bool {
    let parts = stats.parts.load(Ordering::Relaxed);
    let transfer_secs = stats.transfer_us.load(Ordering::Relaxed) as f64 / 1e6;
    let bytes = stats.bytes.load(Ordering::Relaxed);
    if parts == 0 || transfer_secs <= 0.0 || bytes == 0 || left == 0 {
        return false;
    }
    let fresh = stats.ttfb_us.load(Ordering::Relaxed) as f64 / 1e6 / parts as f64
        + left as f64 * transfer_secs / bytes as f64;
    let own_rate = got as f64 / receiving.as_secs_f64().max(1e-3);
    // Nothing yet (or a trickle): any finish is further off than a fresh one.
    own_rate <= 0.0 || left as f64 / own_rate > fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(parts: u64, ttfb_ms: u64, transfer_ms: u64, bytes: u64) -> FetchStats {
        let s = FetchStats::default();
        FetchStats::add(&s.parts, parts);
        FetchStats::add(&s.ttfb_us, parts * ttfb_ms * 1000);
        FetchStats::add(&s.transfer_us, parts * transfer_ms * 1000);
        FetchStats::add(&s.bytes, bytes);
        s
    }

    #[test]
    fn overdue_parts_from_the_head_on_are_signalled_and_finished_ones_forgotten() {
        let mut line = Line::default();
        let (a, b) = (Arc::new(HedgeSignal::default()), Arc::new(HedgeSignal::default()));
        line.push(&a, 1);
        line.push(&b, 1);
        let now = Instant::now();
        assert!(line.check(now, Some(late_after(10.0))));
        assert!(!a.fired.load(Ordering::Relaxed), "not overdue yet");
        let c = Arc::new(HedgeSignal::default());
        std::thread::sleep(Duration::from_millis(20));
        line.push(&c, 1);
        // a and b overdue, c (sent 20 ms later) not.
        let later = Instant::now() + Duration::from_secs(10) - Duration::from_millis(10);
        assert!(line.check(later, Some(late_after(10.0))));
        assert!(a.fired.load(Ordering::Relaxed));
        assert!(b.fired.load(Ordering::Relaxed), "overdue behind the head");
        assert!(!c.fired.load(Ordering::Relaxed), "not overdue");
        drop((a, b));
        assert!(line.check(later + Duration::from_secs(1), Some(late_after(10.0))));
        assert!(c.fired.load(Ordering::Relaxed), "the head now, and overdue");
        drop(c);
        assert!(!line.check(now, Some(late_after(10.0))), "all done");
    }

    #[test]
    fn a_late_part_is_signalled_once_a_part_sent_after_it_has_finished() {
        let mut line = Line::default();
        let signals: Vec<_> = (0..4).map(|_| Arc::new(HedgeSignal::default())).collect();
        for s in &signals {
            line.push(s, 1);
        }
        let fired = |s: &[Arc<HedgeSignal>]| -> Vec<bool> {
            s.iter().map(|s| s.fired.load(Ordering::Relaxed)).collect()
        };
        let late = Instant::now() + Duration::from_secs(10);
        // All late, none passed: the parser may be behind, not waiting.
        line.check_passed(late, late_after(1.0));
        assert_eq!(fired(&signals), [false; 4]);
        // The third finished: the two before it hold the line.
        let mut signals = signals;
        let third = signals.remove(2);
        drop(third);
        line.check_passed(Instant::now(), late_after(1.0));
        assert_eq!(fired(&signals), [false; 3], "passed, but not late yet");
        line.check_passed(late, late_after(1.0));
        assert_eq!(fired(&signals), [true, false, false], "the oldest first");
        // One a half lateness: a burst of late parts is a stalled process
        // as often as slow replies.
        line.check_passed(late + Duration::from_millis(400), late_after(1.0));
        assert_eq!(fired(&signals), [true, false, false], "not again so soon");
        line.check_passed(late + Duration::from_millis(600), late_after(1.0));
        assert_eq!(fired(&signals), [true, true, false], "the next oldest");
        line.check_passed(late + Duration::from_millis(1200), late_after(1.0));
        assert_eq!(fired(&signals), [true, true, false], "the last was not passed");
    }

    #[test]
    fn a_short_part_is_late_sooner_than_a_long_one() {
        let mut line = Line::default();
        let (long, short) = (Arc::new(HedgeSignal::default()), Arc::new(HedgeSignal::default()));
        line.push(&long, 8 << 20);
        line.push(&short, 2 << 20);
        // 1 s a MiB: the short part is late after 4 s, the long after 16.
        let pace = Overdue { ttfb_secs: 0.0, secs_per_byte: 1.0 / f64::from(1 << 20) };
        let now = Instant::now() + Duration::from_secs(5);
        line.check(now, Some(pace));
        assert!(!long.fired.load(Ordering::Relaxed), "the head is not late yet");
        line.check_passed(now, pace);
        assert!(!short.fired.load(Ordering::Relaxed), "late, but nothing passed it");
        drop(long);
        assert!(line.check(now, Some(pace)));
        assert!(short.fired.load(Ordering::Relaxed), "the head now, and late");
    }

    #[tokio::test]
    async fn a_fired_signal_resolves_before_and_after_it_is_awaited() {
        let s = Arc::new(HedgeSignal::default());
        s.fire();
        s.fired().await;
        let late = Arc::new(HedgeSignal::default());
        let waiter = tokio::spawn({
            let late = late.clone();
            async move { late.fired().await }
        });
        tokio::task::yield_now().await;
        late.fire();
        late.fire();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }

    /// Late after `secs` whatever a part's length.
    fn late_after(secs: f64) -> Overdue {
        Overdue { ttfb_secs: secs / 2.0, secs_per_byte: 0.0 }
    }

    #[test]
    fn a_part_is_late_after_twice_its_time_at_the_mean_pace_and_at_least_100_ms() {
        assert_eq!(Overdue::from_stats(&FetchStats::default()), None);
        // 4 parts of 8 MiB: 50 ms to first byte, 250 ms transfer each.
        let late = Overdue::from_stats(&stats(4, 50, 250, 4 * (8 << 20))).unwrap();
        let whole = late.after(8 << 20).as_secs_f64();
        assert!((whole - 0.6).abs() < 1e-9, "{whole}");
        // A quarter part: its own time, not the mean part's.
        let quarter = late.after(2 << 20).as_secs_f64();
        assert!((quarter - 2.0 * (0.05 + 0.0625)).abs() < 1e-9, "{quarter}");
        let fast = Overdue::from_stats(&stats(4, 1, 2, 4 << 20)).unwrap();
        assert_eq!(fast.after(1 << 20), Duration::from_millis(100));
    }

    #[test]
    fn racing_pays_only_where_a_fresh_request_would_finish_first() {
        // Completed parts: 8 MiB in 40 ms + 160 ms (50 MiB/s per reply).
        let s = stats(10, 40, 160, 10 * (8 << 20));
        let left = 4u64 << 20; // a fresh request: 40 + 80 ms
        // At 5 MiB/s: 800 ms to go on its own.
        assert!(worth_racing(&s, 5 << 20, Duration::from_secs(1), left));
        // At its neighbours' pace: 80 ms to go; not worth a request.
        assert!(!worth_racing(&s, 50 << 20, Duration::from_secs(1), left));
        // Nothing yet at all.
        assert!(worth_racing(&s, 0, Duration::from_secs(1), left));
        // Nothing to compare with.
        assert!(!worth_racing(&FetchStats::default(), 0, Duration::from_secs(1), left));
    }
}
