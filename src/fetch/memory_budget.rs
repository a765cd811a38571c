//! The one process-wide memory budget for fetched bytes.
//!
//! Every part reserves its length before its request is sent and gives it
//! back when the last slice of it is dropped downstream (the parsed samples
//! hold slices of the part, not copies). Reservations are granted first come,
//! first served (tokio's semaphore is fair) and the fetch scheduler reserves
//! in the order the parser consumes, so the part the parser waits for is
//! always granted before any later one: the budget cannot deadlock the
//! pipeline as long as what downstream holds stays below it (see `pipeline`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A byte budget shared by every fetch in the process.
#[derive(Debug)]
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    /// 1/16 of the total beyond it, for the second request racing a slow
    /// reply (`hedge`): when that matters the budget is full, and the
    /// winner's bytes replace the loser's. One for every engine sharing
    /// the budget (the daemon's endpoints), so it bounds them all.
    overdraft: Arc<Semaphore>,
    total_bytes: u64,
}

/// Bytes reserved from a [`MemoryBudget`]; released on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

/// The largest single reservation: tokio counts permits in `u32`.
pub const MAX_RESERVATION: u64 = u32::MAX as u64;

impl MemoryBudget {
    pub fn new(total_bytes: u64) -> Arc<MemoryBudget> {
        let total = total_bytes.min(Semaphore::MAX_PERMITS as u64);
        Arc::new(MemoryBudget {
            semaphore: Arc::new(Semaphore::new(total as usize)),
            overdraft: Arc::new(Semaphore::new((total / 16) as usize)),
            total_bytes: total,
        })
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes reserved now.
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes - self.semaphore.available_permits() as u64
    }

    /// Waits until `bytes` (at most [`MAX_RESERVATION`] and the total) are free.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let n = bytes.min(MAX_RESERVATION).min(self.total_bytes) as u32;
        let permit = self.semaphore.clone().acquire_many_owned(n).await;
        let permit = permit.expect("the budget semaphore is never closed");
        Reservation { _permit: permit }
    }
}

impl MemoryBudget {
    /// `bytes` beyond the budget, from its overdraft, if that much is left
    /// now (never waits).
    pub fn try_overdraw(&self, bytes: u64) -> Option<Reservation> {
        let n = u32::try_from(bytes).ok()?;
        let permit = self.overdraft.clone().try_acquire_many_owned(n).ok()?;
        Some(Reservation { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room() {
        let budget = MemoryBudget::new(100);
        let first = budget.reserve(60).await;
        assert_eq!(budget.used_bytes(), 60);
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), budget.reserve(60)).await;
        assert!(waiting.is_err(), "over budget must wait");
        drop(first);
        let _second = budget.reserve(60).await;
        assert_eq!(budget.used_bytes(), 60);
    }

    #[test]
    fn the_overdraft_is_a_sixteenth_and_comes_back() {
        let budget = MemoryBudget::new(1600);
        let first = budget.try_overdraw(60).expect("100 allowed");
        assert!(budget.try_overdraw(60).is_none(), "over the overdraft");
        assert_eq!(budget.used_bytes(), 0, "the budget itself is untouched");
        drop(first);
        assert!(budget.try_overdraw(100).is_some());
        assert!(budget.try_overdraw(u64::MAX).is_none());
    }
}
