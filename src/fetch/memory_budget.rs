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
    /// The pin allowance (the daemon's; `None`: parts pin what they pin,
    /// as in `stoker bench`): see [`MemoryBudget::try_pin`].
    pin: Option<Arc<Semaphore>>,
    total_bytes: u64,
}

/// Bytes reserved from a [`MemoryBudget`]; released on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    /// What keeping the part as the client's chunks took from the pin
    /// allowance, released with the part.
    _pin: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// This reservation and `pin` (see [`MemoryBudget::try_pin`]), released
    /// together.
    pub fn with_pin(self, pin: Option<Reservation>) -> Reservation {
        Reservation { _pin: pin.map(|p| p._permit), ..self }
    }
}

/// Whether a part may be kept as the HTTP client's chunks (zero copy).
#[derive(Debug)]
pub enum PinCharge {
    /// No allowance kept (`stoker bench`): chunks as they came.
    Free,
    /// Charged to the allowance: chunks as they came.
    Charged(Reservation),
    /// The allowance is spent: copy the part as it arrives.
    Compact,
}

/// The HTTP client reads into buffers it hands over in slices: a chunk kept
/// as it came pins its whole buffer, and a buffer holds one read of at
/// least half its size (hyper's adaptive read buffer; the daemon soak saw
/// 1.67× its bytes), so a part kept that way is charged its length once
/// more, from the allowance.
pub const PIN_CHARGE: u64 = 1;

/// The largest single reservation: tokio counts permits in `u32`.
pub const MAX_RESERVATION: u64 = u32::MAX as u64;

impl MemoryBudget {
    pub fn new(total_bytes: u64) -> Arc<MemoryBudget> {
        Self::build(total_bytes, None)
    }

    /// A budget of `total_bytes` for parts plus a pin allowance of
    /// `pin_bytes`: live part memory stays within their sum by
    /// construction, whatever the client's read buffers hold (a part
    /// charged to the allowance pins at most twice its length; one that is
    /// not is copied into buffers of its own as it arrives).
    pub fn with_pin_allowance(total_bytes: u64, pin_bytes: u64) -> Arc<MemoryBudget> {
        let pin = pin_bytes.min(Semaphore::MAX_PERMITS as u64) as usize;
        Self::build(total_bytes, Some(Arc::new(Semaphore::new(pin))))
    }

    fn build(total_bytes: u64, pin: Option<Arc<Semaphore>>) -> Arc<MemoryBudget> {
        let total = total_bytes.min(Semaphore::MAX_PERMITS as u64);
        Arc::new(MemoryBudget {
            semaphore: Arc::new(Semaphore::new(total as usize)),
            overdraft: Arc::new(Semaphore::new((total / 16) as usize)),
            pin,
            total_bytes: total,
        })
    }

    /// Whether a part of `bytes` may be kept as the client's chunks: its
    /// charge from the pin allowance, taken now or not at all (never
    /// waits, so it cannot hold up the parser's next part).
    pub fn try_pin(&self, bytes: u64) -> PinCharge {
        let Some(pin) = &self.pin else { return PinCharge::Free };
        let n = bytes.saturating_mul(PIN_CHARGE);
        match u32::try_from(n).ok().and_then(|n| pin.clone().try_acquire_many_owned(n).ok()) {
            Some(permit) => PinCharge::Charged(Reservation { _permit: permit, _pin: None }),
            None => PinCharge::Compact,
        }
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
        Reservation { _permit: permit, _pin: None }
    }
}

impl MemoryBudget {
    /// `bytes` beyond the budget, from its overdraft, if that much is left
    /// now (never waits).
    pub fn try_overdraw(&self, bytes: u64) -> Option<Reservation> {
        let n = u32::try_from(bytes).ok()?;
        let permit = self.overdraft.clone().try_acquire_many_owned(n).ok()?;
        Some(Reservation { _permit: permit, _pin: None })
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

    #[tokio::test]
    async fn the_pin_allowance_charges_what_it_has_and_comes_back_with_the_part() {
        assert!(matches!(MemoryBudget::new(100).try_pin(1000), PinCharge::Free));
        let budget = MemoryBudget::with_pin_allowance(100, 50);
        let PinCharge::Charged(first) = budget.try_pin(40) else { panic!("40 of 50") };
        assert!(matches!(budget.try_pin(20), PinCharge::Compact), "only 10 left");
        assert!(matches!(budget.try_pin(u64::MAX), PinCharge::Compact));
        assert_eq!(budget.used_bytes(), 0, "the budget itself is untouched");
        // Held with the part's reservation, released with it.
        let part = budget.reserve(60).await.with_pin(Some(first));
        assert!(matches!(budget.try_pin(20), PinCharge::Compact));
        drop(part);
        assert_eq!(budget.used_bytes(), 0);
        assert!(matches!(budget.try_pin(50), PinCharge::Charged(_)));
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
