//! Reusable part buffers.
//!
//! A fresh 8 MiB `Vec` is a fresh mmap: 2,048 page faults to fill it and an
//! munmap when it is dropped. Parts come and go at hundreds per second, so
//! buffers go back to a free list when the last slice of a part is dropped
//! and the next part reuses one, already faulted in and initialised (no
//! zeroing either: a sink overwrites what it fills).
//!
//! The free list keeps at most `max_retained_bytes`; live parts are bounded
//! by the memory budget, so part memory stays under budget + retained.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::Reservation;

/// A free list of part buffers.
#[derive(Debug)]
pub struct PartPool {
    free: Mutex<Vec<Vec<u8>>>,
    retained_bytes: AtomicU64,
    max_retained_bytes: u64,
    /// Buffers handed out that came from the free list (for tests, metrics).
    pub reused: AtomicU64,
}

impl PartPool {
    pub fn new(max_retained_bytes: u64) -> Arc<PartPool> {
        Arc::new(PartPool {
            free: Mutex::new(Vec::new()),
            retained_bytes: AtomicU64::new(0),
            max_retained_bytes,
            reused: AtomicU64::new(0),
        })
    }

    /// A buffer of at least `len` initialised bytes.
    pub fn take(&self, len: usize) -> Vec<u8> {
        self.try_take(len).unwrap_or_else(|| vec![0; len])
    }

    /// A retained buffer of at least `len` bytes, if one is free.
    pub fn try_take(&self, len: usize) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let at = free.iter().rposition(|b| b.len() >= len)?;
        let buf = free.swap_remove(at);
        self.retained_bytes.fetch_sub(buf.len() as u64, Ordering::Relaxed);
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(buf)
    }

    /// Frees every retained buffer (an idle daemon gives its memory back).
    pub fn clear(&self) {
        let drained = std::mem::take(&mut *self.free.lock().unwrap_or_else(|p| p.into_inner()));
        let n: u64 = drained.iter().map(|b| b.len() as u64).sum();
        self.retained_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    /// Keeps `buf` (all of its `len` bytes initialised) for a later
    /// `take`, unless that would retain more than the pool's cap.
    pub fn give(&self, buf: Vec<u8>) {
        let n = buf.len() as u64;
        if self.retained_bytes.load(Ordering::Relaxed) + n > self.max_retained_bytes {
            return;
        }
        self.retained_bytes.fetch_add(n, Ordering::Relaxed);
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
    }
}

/// A fetched part: its buffer, the reservation that pays for it, and the
/// pool it returns to.
#[derive(Debug)]
pub struct PartBuffer {
    data: Vec<u8>,
    len: usize,
    pool: Arc<PartPool>,
    _reservation: Reservation,
}

impl AsRef<[u8]> for PartBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

/// The first `len` bytes of `data` as `Bytes`; the reservation lives, and
/// the buffer stays out of the pool, exactly as long as any slice of it.
pub fn pooled_bytes(
    data: Vec<u8>,
    len: usize,
    reservation: Reservation,
    pool: Arc<PartPool>,
) -> Bytes {
    shared_pooled_bytes(data, len, reservation, pool).0
}

/// As [`pooled_bytes`], plus a weak handle other sessions can turn into
/// the same bytes while anyone still holds them (no copy, no second charge
/// to the budget).
pub fn shared_pooled_bytes(
    data: Vec<u8>,
    len: usize,
    reservation: Reservation,
    pool: Arc<PartPool>,
) -> (Bytes, WeakPart) {
    let len = len.min(data.len());
    let part = Arc::new(PartBuffer { data, len, pool, _reservation: reservation });
    let weak = WeakPart(Arc::downgrade(&part));
    (Bytes::from_owner(SharedBuffer(part)), weak)
}

/// A part buffer as long as someone holds it.
#[derive(Debug, Clone)]
pub struct WeakPart(std::sync::Weak<PartBuffer>);

impl WeakPart {
    /// The part's bytes, if they are still alive.
    pub fn bytes(&self) -> Option<Bytes> {
        self.0.upgrade().map(|part| Bytes::from_owner(SharedBuffer(part)))
    }

    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

struct SharedBuffer(Arc<PartBuffer>);

impl AsRef<[u8]> for SharedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::MemoryBudget;

    #[tokio::test]
    async fn buffers_return_to_the_pool_and_free_the_budget() {
        let budget = MemoryBudget::new(1000);
        let pool = PartPool::new(10_000);
        let buf = pool.take(100);
        let bytes = pooled_bytes(buf, 60, budget.reserve(100).await, pool.clone());
        assert_eq!(bytes.len(), 60);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(budget.used_bytes(), 100);
        drop(slice);
        assert_eq!(budget.used_bytes(), 0);
        let again = pool.take(80);
        assert_eq!(again.len(), 100, "the same buffer came back");
        assert_eq!(pool.reused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn retention_is_capped() {
        let pool = PartPool::new(150);
        pool.give(vec![0; 100]);
        pool.give(vec![0; 100]);
        assert_eq!(pool.retained_bytes.load(Ordering::Relaxed), 100);
    }
}
