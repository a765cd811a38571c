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
}
