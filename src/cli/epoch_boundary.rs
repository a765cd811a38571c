//! Delivery around epoch boundaries: does a multi-epoch run slow down where
//! one epoch ends and the next begins? The fetch scheduler draws the next
//! epoch's order as the current one's last parts are planned, so it should
//! not; `bench --json` reports each boundary's rate against the rate in the
//! middle of the epoch before it, so that can be checked on any store.

/// Each delivered batch: seconds since the run began, payload bytes, epoch.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    points: Vec<(f64, u64, u64)>,
}

/// One boundary between epochs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochBoundary {
    /// The epoch that begins here.
    pub epoch: u64,
    /// When its first batch was delivered (seconds since the run began).
    pub at_s: f64,
    /// Half-width of the window measured around the boundary: 1 s, or a
    /// quarter of the shorter neighbouring epoch when that is shorter.
    pub window_s: f64,
    /// Payload bytes per second within `window_s` of the boundary.
    pub around_bytes_per_s: f64,
    /// Payload bytes per second over the middle half of the epoch before
    /// (over all of it when nothing was delivered in its middle half).
    pub mid_epoch_bytes_per_s: f64,
    /// `around / mid`: 1.0 is no dip.
    pub ratio: f64,
}

impl DeliveryLog {
    pub fn push(&mut self, secs: f64, bytes: u64, epoch: u64) {
        self.points.push((secs, bytes, epoch));
    }

    /// Bytes delivered in `[from, to)`.
    fn bytes_between(&self, from: f64, to: f64) -> u64 {
        self.points.iter().filter(|(t, _, _)| *t >= from && *t < to).map(|(_, b, _)| b).sum()
    }

    /// Each epoch's first and last delivery, in order.
    fn epochs(&self) -> Vec<(u64, f64, f64)> {
        let mut out: Vec<(u64, f64, f64)> = Vec::new();
        for &(t, _, e) in &self.points {
            match out.last_mut() {
                Some(last) if last.0 == e => last.2 = t,
                _ => out.push((e, t, t)),
            }
        }
        out
    }

    /// Every boundary that has a whole epoch before it and delivery after.
    pub fn boundaries(&self) -> Vec<EpochBoundary> {
        let epochs = self.epochs();
        epochs
            .windows(2)
            .filter_map(|w| {
                let ((_, prev_start, prev_end), (epoch, start, end)) = (w[0], w[1]);
                let prev_len = start - prev_start;
                let next_len = end - start;
                let window_s = 1.0_f64.min(prev_len / 4.0).min(next_len / 4.0);
                // The middle half of the epoch before, by time.
                let (mid_from, mid_to) =
                    (prev_start + prev_len / 4.0, prev_start + 3.0 * prev_len / 4.0);
                if window_s <= 0.0 || mid_to <= mid_from || prev_end > start {
                    return None;
                }
                let around = self.bytes_between(start - window_s, start + window_s) as f64
                    / (2.0 * window_s);
                // A short epoch of a few big batches may deliver nothing in
                // its middle half: then its whole length is the reference.
                let mid = match self.bytes_between(mid_from, mid_to) {
                    0 => self.bytes_between(prev_start, start) as f64 / prev_len,
                    b => b as f64 / (mid_to - mid_from),
                };
                (mid > 0.0).then(|| EpochBoundary {
                    epoch,
                    at_s: start,
                    window_s,
                    around_bytes_per_s: around,
                    mid_epoch_bytes_per_s: mid,
                    ratio: around / mid,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches of 1 MB every 10 ms for three epochs of 4 s, with `gap`
    /// seconds of nothing before each new epoch.
    fn run(gap: f64) -> DeliveryLog {
        let mut log = DeliveryLog::default();
        let mut t = 0.0;
        for epoch in 0..3 {
            if epoch > 0 {
                t += gap;
            }
            for _ in 0..400 {
                log.push(t, 1_000_000, epoch);
                t += 0.01;
            }
        }
        log
    }

    #[test]
    fn a_steady_run_has_no_dip() {
        let b = run(0.0).boundaries();
        assert_eq!(b.len(), 2);
        for x in &b {
            assert!((x.ratio - 1.0).abs() < 0.02, "{x:?}");
            assert!(x.window_s > 0.99, "{x:?}");
        }
        assert_eq!(b[0].epoch, 1);
    }

    #[test]
    fn a_gap_between_epochs_shows() {
        // Half a second of nothing in a 2 s window: a quarter less.
        let b = run(0.5).boundaries();
        assert!(b.iter().all(|x| (x.ratio - 0.75).abs() < 0.03), "{b:?}");
    }

    #[test]
    fn short_epochs_measure_a_narrower_window() {
        let mut log = DeliveryLog::default();
        for i in 0..200 {
            log.push(i as f64 * 0.01, 1, i / 100);
        }
        let b = log.boundaries();
        assert_eq!(b.len(), 1);
        assert!((b[0].window_s - 0.2475).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn an_epoch_with_an_empty_middle_is_measured_whole() {
        // Epoch 0: one batch at 0 and one at 1 s; nothing in between.
        let mut log = DeliveryLog::default();
        log.push(0.0, 100, 0);
        log.push(1.0, 100, 0);
        for i in 0..10 {
            log.push(2.0 + i as f64 * 0.1, 100, 1);
        }
        let b = log.boundaries();
        assert_eq!(b.len(), 1, "{b:?}");
        // 200 bytes over the 2 s from epoch 0's start to epoch 1's.
        assert!((b[0].mid_epoch_bytes_per_s - 100.0).abs() < 1e-9, "{b:?}");
    }
}
