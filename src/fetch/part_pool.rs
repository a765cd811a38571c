//! Reusable large buffers: parts read from local files, and batches.
//!
//! A fresh 8 MiB `Vec` is a fresh mmap: 2,048 page faults to fill it and an
//! munmap when it is dropped. Such buffers come and go at hundreds per
//! second, so they go back to a free list when the last slice of one is
//! dropped and the next user reuses one, already faulted in and initialised
//! (no zeroing either: a reader overwrites what it fills). Parts from the
//! network need none of this: they stay in the HTTP client's own chunks
//! (`part_data`).
//!
//! The free list keeps at most `max_retained_bytes`; live parts are bounded
//! by the memory budget, so part memory stays under budget + retained.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

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

    /// A retained buffer of at least `len` initialised bytes, if one is free.
    pub fn try_take(&self, len: usize) -> Option<Vec<u8>> {
        self.take_where(|b| b.len() >= len)
    }

    /// A retained buffer with room for `len` bytes (its capacity; fewer
    /// of them may be initialised), if one is free.
    pub fn try_take_room(&self, len: usize) -> Option<Vec<u8>> {
        self.take_where(|b| b.capacity() >= len)
    }

    fn take_where(&self, fits: impl Fn(&Vec<u8>) -> bool) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let at = free.iter().rposition(fits)?;
        let buf = free.swap_remove(at);
        self.retained_bytes.fetch_sub(buf.capacity() as u64, Ordering::Relaxed);
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(buf)
    }

    /// Frees every retained buffer (an idle daemon gives its memory back).
    pub fn clear(&self) {
        let drained = std::mem::take(&mut *self.free.lock().unwrap_or_else(|p| p.into_inner()));
        let n: u64 = drained.iter().map(|b| b.capacity() as u64).sum();
        self.retained_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed)
    }

    /// Keeps `buf` (all of its `len` bytes initialised) for a later
    /// `take`, unless that would retain more than the pool's cap.
    pub fn give(&self, buf: Vec<u8>) {
        // What it holds, initialised or not.
        let n = buf.capacity() as u64;
        if self.retained_bytes.load(Ordering::Relaxed) + n > self.max_retained_bytes {
            return;
        }
        self.retained_bytes.fetch_add(n, Ordering::Relaxed);
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
    }
}

/// A pooled buffer's first `len` bytes as `Bytes`; the buffer goes back to
/// `pool` when the last slice of it is dropped.
pub fn pooled_bytes(data: Vec<u8>, len: usize, pool: Arc<PartPool>) -> Bytes {
    let len = len.min(data.len());
    Bytes::from_owner(Pooled { data, len, pool })
}

struct Pooled {
    data: Vec<u8>,
    len: usize,
    pool: Arc<PartPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_to_the_pool_when_the_last_slice_goes() {
        let pool = PartPool::new(10_000);
        let buf = pool.take(100);
        let bytes = pooled_bytes(buf, 60, pool.clone());
        assert_eq!(bytes.len(), 60);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.retained_bytes(), 0, "a slice still holds it");
        drop(slice);
        assert_eq!(pool.retained_bytes(), 100);
        let again = pool.take(80);
        assert_eq!(again.len(), 100, "the same buffer came back");
        assert_eq!(pool.reused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_recycled_batch_buffer_is_taken_for_its_room_and_counted_by_it() {
        let pool = PartPool::new(10_000);
        let mut short = Vec::with_capacity(100);
        short.resize(10, 7);
        pool.give(short);
        assert_eq!(pool.retained_bytes(), 100, "what it holds, not what is initialised");
        assert!(pool.try_take(50).is_none(), "only 10 bytes are initialised");
        let buf = pool.try_take_room(50).expect("room for 50");
        assert_eq!((buf.len(), buf.capacity()), (10, 100));
        assert_eq!(pool.retained_bytes(), 0);
    }

    #[test]
    fn retention_is_capped() {
        let pool = PartPool::new(150);
        pool.give(vec![0; 100]);
        pool.give(vec![0; 100]);
        assert_eq!(pool.retained_bytes.load(Ordering::Relaxed), 100);
    }
}
