//! One client stream: its ring, its counters, and the memory it holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fetch::FetchEngine;
use crate::ring::SessionRing;

/// A live session, shared by its driver task, the service and the ring
/// socket.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    /// Secret that, with `id`, fetches the ring's descriptor.
    pub fd_token: String,
    /// The uid of the peer that opened it; only it gets the descriptor.
    pub uid: u32,
    pub ring: Arc<SessionRing>,
    pub engine: Arc<FetchEngine>,
    pub stats: SessionStats,
    /// The ring's bytes, counted against the daemon's ring memory.
    pub ring_bytes: RingReservation,
    /// This session's share of its user's caps.
    pub quota: super::user_quota::QuotaGuard,
    /// Set once the client has the ring's descriptor.
    pub fd_sent: tokio::sync::watch::Sender<bool>,
    pub opened_at: std::time::Instant,
    /// Device mode: the ring's copy in GPU memory (`None`: host mode).
    pub device: Option<super::device_ring::DeviceRing>,
    /// Samples the stream leaves out and repeats to give every rank the
    /// same steps (`even`), over its epochs; told in its end event (set
    /// once the split is known, which may be after the stream opened).
    pub evened: std::sync::Mutex<(u64, u64)>,
}

/// What a session delivered and how long its client waited.
pub type SessionStats = crate::metrics::Delivery;

impl Session {
    /// Adds what the client reports it waited, but never more than the
    /// session has existed: a client cannot inflate the figure.
    pub fn add_wait(&self, waited_us: u64) -> u64 {
        let age = self.opened_at.elapsed().as_micros() as u64;
        let mut added = 0;
        let _ = self.stats.wait_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            added = waited_us.min(age.saturating_sub(w));
            Some(w + added)
        });
        added
    }
}

/// Ring bytes taken from the daemon-wide cap; given back on drop.
#[derive(Debug)]
pub struct RingReservation {
    bytes: u64,
    total: Arc<AtomicU64>,
}

impl RingReservation {
    /// Takes `bytes` if the total stays within `cap`.
    pub fn take(total: &Arc<AtomicU64>, bytes: u64, cap: u64) -> Option<RingReservation> {
        total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= cap)
            })
            .ok()
            .map(|_| RingReservation { bytes, total: total.clone() })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for RingReservation {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Whatever the client still held comes back; a writer waiting for a
        // slot gives up, and the memfd goes when the last mapping does.
        self.ring.close();
        self.ring.reclaim();
    }
}
