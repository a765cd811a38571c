//! A session's ring: one sealed segment cut into equal slots, each holding
//! one batch in the layout of `batch`, owned through the slot table.
//!
//! ```text
//!  begin_fill ─▶ Filling (exclusive &mut [u8] of the slot) ─publish─▶ Lease (slot, generation, offset)
//!                 └─ dropped unpublished: the slot is abandoned (free again)
//! ```

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::{MemfdSegment, RingError, SlotTable, SlotToken};

/// A session's slots over one segment.
#[derive(Debug)]
pub struct SessionRing {
    segment: MemfdSegment,
    table: SlotTable,
    slot_bytes: usize,
    /// Set when the session ends; wakes a writer waiting for a slot.
    closed: Mutex<bool>,
    freed: Condvar,
}

/// A slot being filled; only this value may write it.
#[derive(Debug)]
pub struct Filling<'a> {
    ring: &'a SessionRing,
    token: Option<SlotToken>,
}

/// A filled slot leased to the client: what its descriptor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub token: SlotToken,
    /// Byte offset of the slot in the segment.
    pub offset: u64,
    /// Bytes of the slot used by the batch.
    pub len: u64,
}

impl SessionRing {
    /// `slots` slots of `slot_bytes` (rounded up to 4 KiB pages).
    pub fn new(name: &str, slots: u32, slot_bytes: usize) -> Result<SessionRing, RingError> {
        let slot_bytes = slot_bytes.div_ceil(4096) * 4096;
        let total = slot_bytes
            .checked_mul(slots as usize)
            .ok_or(RingError::TooLarge { bytes: u64::MAX })?;
        Ok(SessionRing {
            segment: MemfdSegment::create(name, total)?,
            table: SlotTable::new(slots),
            slot_bytes,
            closed: Mutex::new(false),
            freed: Condvar::new(),
        })
    }

    pub fn segment(&self) -> &MemfdSegment {
        &self.segment
    }

    pub fn slots(&self) -> &SlotTable {
        &self.table
    }

    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// The bytes of a published batch, read in this process (e.g. copied to
    /// a GPU) instead of by a client.
    ///
    /// # Safety
    ///
    /// `lease` must be a live lease of this ring held by the caller, not
    /// released (nor the ring reclaimed) while the slice lives: a released
    /// slot may be refilled under it.
    pub unsafe fn leased(&self, lease: &Lease) -> &[u8] {
        let offset = lease.token.slot as usize * self.slot_bytes;
        let len = (lease.len as usize).min(self.slot_bytes);
        if lease.token.slot as usize >= self.table.len() {
            return &[];
        }
        // SAFETY: slot < slots, so the range lies inside the segment; the
        // slot is LEASED (published, no writer) for as long as the
        // caller's contract keeps it so.
        unsafe { std::slice::from_raw_parts(self.segment.as_ptr().add(offset), len) }
    }

    /// Claims a free slot for filling; `None` while every slot is in use
    /// (the client holds them: back-pressure).
    pub fn begin_fill(&self) -> Option<Filling<'_>> {
        self.table.acquire().map(|token| Filling { ring: self, token: Some(token) })
    }

    /// Claims a free slot, waiting while the client holds them all;
    /// `None` once the ring is closed.
    pub fn wait_fill(&self) -> Option<Filling<'_>> {
        loop {
            if self.is_closed() {
                return None;
            }
            if let Some(filling) = self.begin_fill() {
                return Some(filling);
            }
            let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
            // A release between the try above and this wait only costs the
            // timeout: the table is lock-free, the condvar is a doorbell.
            let _ = self.freed.wait_timeout(closed, Duration::from_millis(50));
        }
    }

    /// The client released a lease.
    pub fn release(&self, lease: SlotToken) -> Result<(), RingError> {
        self.table.release(lease)?;
        self.freed.notify_all();
        Ok(())
    }

    /// The client is gone: every leased slot is free again. Returns how many.
    pub fn reclaim(&self) -> usize {
        let n = self.table.reclaim_leased();
        self.freed.notify_all();
        n
    }

    /// Ends the session: a waiting writer gives up.
    pub fn close(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.freed.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Filling<'_> {
    fn offset(&self, token: SlotToken) -> usize {
        token.slot as usize * self.ring.slot_bytes
    }

    /// The slot's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let Some(token) = self.token else {
            return &mut [];
        };
        let offset = self.offset(token);
        // SAFETY: the slot table put this slot in FILLING for `token`, held
        // only by this `Filling` (not Clone); `&mut self` makes the slice
        // exclusive for its lifetime; the range is inside the segment
        // (slot < slots, slot_bytes × slots = segment length).
        unsafe { self.ring.segment.slot_mut(offset, self.ring.slot_bytes) }
    }

    /// Leases the slot to the client; `len` bytes of it hold the batch.
    pub fn publish(mut self, len: usize) -> Result<Lease, RingError> {
        let token = self.token.take().ok_or(RingError::Empty)?;
        let offset = self.offset(token) as u64;
        let lease = self.ring.table.publish(token)?;
        Ok(Lease { token: lease, offset, len: len.min(self.ring.slot_bytes) as u64 })
    }
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            // Unpublished (an error mid-batch): the slot is free again.
            let _ = self.ring.table.abandon(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{batch_bytes, collate, collate_into};
    use crate::ring::{ReadOnlyMapping, recv_fd, send_fd};
    use crate::synth::SynthConfig;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_batch_collated_into_a_slot_reads_back_through_a_client_mapping() {
        let samples = SynthConfig::test_samples(200_000, 10_000);
        let samples = &samples[..8];
        let ring = SessionRing::new("stoker-test", 4, batch_bytes(samples) as usize).unwrap();

        let mut filling = ring.begin_fill().unwrap();
        let (keys, columns, _) = collate_into(samples, filling.bytes_mut());
        let lease = filling.publish(ring.slot_bytes()).unwrap();

        // The client: descriptor over the socket, read-only mapping.
        let (daemon, client) = UnixStream::pair().unwrap();
        send_fd(daemon.as_fd(), ring.segment().fd(), b"ring").unwrap();
        let (fd, _) = recv_fd(client.as_fd()).unwrap();
        let ro = ReadOnlyMapping::map(fd.as_fd(), ring.segment().len()).unwrap();
        let slot = &ro.bytes()[lease.offset as usize..][..lease.len as usize];

        // Same bytes as collation into a fresh buffer.
        let reference = collate(samples, 0, 0);
        assert_eq!(keys, reference.keys);
        assert_eq!(columns, reference.columns);
        assert_eq!(&slot[..reference.buf.len()], &reference.buf[..]);

        assert_eq!(ring.slots().free_count(), 3);
        ring.release(lease.token).unwrap();
        assert_eq!(ring.slots().free_count(), 4);
    }

    #[test]
    fn an_unpublished_fill_frees_its_slot_and_a_full_ring_says_so() {
        let ring = SessionRing::new("stoker-test", 2, 4096).unwrap();
        let a = ring.begin_fill().unwrap();
        let b = ring.begin_fill().unwrap();
        assert!(ring.begin_fill().is_none(), "all slots busy");
        drop(a);
        assert_eq!(ring.slots().free_count(), 1);
        let lease = b.publish(10).unwrap();
        assert_eq!(ring.slots().reclaim_leased(), 1, "client gone");
        assert!(ring.release(lease.token).is_err(), "stale after reclaim");
        assert_eq!(ring.slots().free_count(), 2);
    }
}
