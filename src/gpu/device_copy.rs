//! Host ring → device ring: which host slots may go back, and which device
//! slot the next batch goes to.
//!
//! ```text
//!  host slot (leased) ─cuMemcpyHtoDAsync─▶ device slot k ─event k recorded─▶ event done ─▶ host slot released
//! ```
//!
//! Copies run in order on one stream, so they complete in order: the
//! queue retires from its oldest entry and stops at the first copy still
//! running. A device slot (and its event) is reused only after its last
//! copy retired, so an event is never re-recorded while a host slot still
//! depends on it. The bookkeeping is pure; the driver calls are the
//! caller's (`done` below is `Event::is_done`).

use std::collections::VecDeque;

/// One queued copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight<T> {
    /// What to give back once the copy ran (a host ring lease).
    pub lease: T,
    /// The device slot (and event) it went to.
    pub slot: usize,
    pub bytes: u64,
}

/// Copies queued on one stream over `slots` device slots.
#[derive(Debug)]
pub struct CopyQueue<T> {
    pending: VecDeque<InFlight<T>>,
    slots: usize,
    next: usize,
}

impl<T> CopyQueue<T> {
    pub fn new(slots: usize) -> CopyQueue<T> {
        CopyQueue { pending: VecDeque::with_capacity(slots), slots: slots.max(1), next: 0 }
    }

    /// The device slot for the next copy; `None` while every slot holds a
    /// copy not yet retired (wait on [`Self::oldest`]'s event, then retire).
    pub fn next_slot(&self) -> Option<usize> {
        (self.pending.len() < self.slots).then_some(self.next)
    }

    /// Records a copy queued into [`Self::next_slot`]; returns its slot.
    /// Call only when `next_slot` is `Some`.
    pub fn push(&mut self, lease: T, bytes: u64) -> Option<usize> {
        let slot = self.next_slot()?;
        self.pending.push_back(InFlight { lease, slot, bytes });
        self.next = (self.next + 1) % self.slots;
        Some(slot)
    }

    pub fn oldest(&self) -> Option<&InFlight<T>> {
        self.pending.front()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Retires copies from the oldest while `done(slot)` says they ran;
    /// returns them, oldest first, for their host slots to go back.
    pub fn retire<E>(
        &mut self,
        mut done: impl FnMut(usize) -> Result<bool, E>,
    ) -> Result<Vec<InFlight<T>>, E> {
        let mut out = Vec::new();
        while let Some(front) = self.pending.front() {
            if !done(front.slot)? {
                break;
            }
            out.extend(self.pending.pop_front());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn slots_go_round_and_a_full_queue_waits_for_the_oldest() {
        let mut q = CopyQueue::new(3);
        assert_eq!(q.push("a", 10), Some(0));
        assert_eq!(q.push("b", 10), Some(1));
        assert_eq!(q.push("c", 10), Some(2));
        assert_eq!(q.next_slot(), None, "every device slot holds a live copy");
        assert_eq!(q.push("d", 10), None);
        assert_eq!(q.oldest().map(|f| f.slot), Some(0));
        let done = q.retire(|slot| Ok::<_, Infallible>(slot == 0)).unwrap();
        assert_eq!(done.iter().map(|f| f.lease).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(q.push("d", 10), Some(0), "slot 0 reused only after its copy retired");
    }

    #[test]
    fn retiring_stops_at_the_first_copy_still_running() {
        let mut q = CopyQueue::new(4);
        for l in 0..4 {
            q.push(l, 1);
        }
        // Slot 2 reports done but slot 1 does not: copies on one stream
        // finish in order, so nothing past 1 is trusted yet.
        let done = q.retire(|slot| Ok::<_, Infallible>(slot != 1)).unwrap();
        assert_eq!(done.iter().map(|f| f.lease).collect::<Vec<_>>(), vec![0]);
        assert_eq!(q.len(), 3);
        let done = q.retire(|_| Ok::<_, Infallible>(true)).unwrap();
        assert_eq!(done.iter().map(|f| f.lease).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_driver_error_stops_retiring_and_loses_nothing() {
        let mut q = CopyQueue::new(2);
        q.push('x', 1);
        q.push('y', 1);
        let err = q.retire(|_| Err::<bool, _>("cuEventQuery failed"));
        assert_eq!(err, Err("cuEventQuery failed"));
        assert_eq!(q.len(), 2, "still owed back");
    }
}
