//! The one process-wide limit on requests in flight.
//!
//! A semaphore whose size can change while permits are out: this is the knob
//! the autotuner turns. Growing adds permits at once; shrinking forgets idle
//! permits at once and retires the rest as they come back, so a new limit
//! takes effect within one request time and never cancels a request.
//!
//! A ceiling can hold the permits below the limit for a while: an engine
//! that starts many requests at once opens them in cohorts (`open_pace`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A resizable limit on concurrent requests.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    semaphore: Arc<Semaphore>,
    /// What was asked for (`set_limit`).
    limit: AtomicUsize,
    /// A cap on the permits while requests are opened in cohorts.
    ceiling: AtomicUsize,
    /// The semaphore's size: the limit under the ceiling. Under a lock:
    /// the autotuner's task sets the limit while the pacer raises the
    /// ceiling, and two resizes computed from different moments must not
    /// apply out of order (the last would leave the semaphore at a size
    /// neither asked for).
    granted: Mutex<usize>,
    /// Permits still to retire after a shrink.
    debt: AtomicUsize,
    in_flight: AtomicUsize,
}

/// One request's right to be in flight; returned on drop.
#[derive(Debug)]
pub struct ConnPermit {
    permit: Option<OwnedSemaphorePermit>,
    owner: Arc<ConcurrencyLimit>,
}

impl ConcurrencyLimit {
    pub fn new(limit: usize) -> Arc<ConcurrencyLimit> {
        Self::under_ceiling(limit, usize::MAX)
    }

    /// A limit whose permits stay under `ceiling` until it is raised.
    pub fn under_ceiling(limit: usize, ceiling: usize) -> Arc<ConcurrencyLimit> {
        let (limit, ceiling) = (limit.max(1), ceiling.max(1));
        let granted = limit.min(ceiling);
        Arc::new(ConcurrencyLimit {
            semaphore: Arc::new(Semaphore::new(granted)),
            limit: AtomicUsize::new(limit),
            ceiling: AtomicUsize::new(ceiling),
            granted: Mutex::new(granted),
            debt: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> ConnPermit {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = self.semaphore.clone().acquire_owned().await.ok();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ConnPermit { permit, owner: self.clone() }
    }

    /// The current limit (what was asked for, whatever the ceiling).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The ceiling on permits (`usize::MAX`: none).
    pub fn ceiling(&self) -> usize {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Changes the limit (at least 1).
    pub fn set_limit(&self, new_limit: usize) {
        self.limit.store(new_limit.max(1), Ordering::Release);
        self.regrant();
    }

    /// Changes the ceiling (`usize::MAX` lifts it).
    pub fn set_ceiling(&self, ceiling: usize) {
        self.ceiling.store(ceiling.max(1), Ordering::Release);
        self.regrant();
    }

    /// Sizes the semaphore to the limit under the ceiling.
    fn regrant(&self) {
        let mut granted = self.granted.lock().unwrap_or_else(|p| p.into_inner());
        let new = self.limit().min(self.ceiling());
        let old = std::mem::replace(&mut *granted, new);
        if new > old {
            let mut grow = new - old;
            // Cancel outstanding retirements before adding permits.
            let _ = self.debt.fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                let cancel = debt.min(grow);
                grow -= cancel;
                Some(debt - cancel)
            });
            self.semaphore.add_permits(grow);
        } else if new < old {
            let shrink = old - new;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.debt.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }
}

/// A request's place in the limit, which it gives back while it waits out
/// a store's `Retry-After`: a request sleeping is not on a connection.
/// Holding the slot through B2's scattered `Retry-After: 1` (2% of
/// replies) kept ~6 of ~10 slots asleep at any time. Other retry waits
/// keep the slot: in an outage without `Retry-After`, a slot given back
/// went to a new part's first attempt, which the retry budget does not
/// bound (145 requests into a 5 s outage instead of ~40).
#[derive(Debug)]
pub struct RequestSlot {
    held: Option<ConnPermit>,
    limit: Arc<ConcurrencyLimit>,
}

impl RequestSlot {
    pub fn new(permit: ConnPermit) -> RequestSlot {
        let limit = permit.owner.clone();
        RequestSlot { held: Some(permit), limit }
    }

    /// Gives the slot back until [`RequestSlot::take_again`].
    pub fn give_back(&mut self) {
        self.held = None;
    }

    /// Waits for a slot again (at once while one is held).
    pub async fn take_again(&mut self) {
        if self.held.is_none() {
            self.held = Some(self.limit.acquire().await);
        }
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.owner.in_flight.fetch_sub(1, Ordering::Relaxed);
        let retire = self
            .owner
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if let Some(permit) = self.permit.take()
            && retire
        {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shrink_retires_permits_as_they_return() {
        let limit = ConcurrencyLimit::new(4);
        let held: Vec<_> = futures::future::join_all((0..4).map(|_| limit.acquire())).await;
        assert_eq!(limit.in_flight(), 4);
        limit.set_limit(2);
        drop(held);
        assert_eq!(limit.semaphore.available_permits(), 2);
        limit.set_limit(5);
        assert_eq!(limit.semaphore.available_permits(), 5);
        limit.set_limit(1);
        assert_eq!(limit.semaphore.available_permits(), 1);
        assert_eq!(limit.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_ceiling_holds_permits_until_raised() {
        let limit = ConcurrencyLimit::under_ceiling(64, 8);
        assert_eq!(limit.limit(), 64);
        assert_eq!(limit.semaphore.available_permits(), 8);
        let held: Vec<_> = futures::future::join_all((0..8).map(|_| limit.acquire())).await;
        let ninth = tokio::time::timeout(std::time::Duration::from_millis(20), limit.acquire());
        assert!(ninth.await.is_err(), "a ninth request ran under a ceiling of 8");
        // The limit moves under the ceiling; the ceiling caps it.
        limit.set_limit(32);
        assert_eq!(limit.semaphore.available_permits(), 0);
        limit.set_ceiling(16);
        assert_eq!(limit.semaphore.available_permits(), 8);
        limit.set_ceiling(usize::MAX);
        assert_eq!(limit.semaphore.available_permits(), 24);
        // A limit below the ceiling is the limit.
        limit.set_limit(4);
        drop(held);
        assert_eq!(limit.semaphore.available_permits(), 4);
        assert_eq!(limit.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_slot_given_back_lets_another_request_run() {
        let limit = ConcurrencyLimit::new(1);
        let mut slot = RequestSlot::new(limit.acquire().await);
        assert_eq!(limit.in_flight(), 1);
        slot.give_back();
        assert_eq!(limit.in_flight(), 0);
        let other = limit.acquire().await;
        // The slot waits for the other request to finish.
        let again = tokio::time::timeout(std::time::Duration::from_millis(20), slot.take_again());
        assert!(again.await.is_err());
        drop(other);
        slot.take_again().await;
        assert_eq!(limit.in_flight(), 1);
        drop(slot);
        assert_eq!(limit.in_flight(), 0);
    }
}
