//! `ring`: the shared-memory arena batches are handed out in.
//!
//! One sealed memfd per session (`MemfdSegment`), cut into equal slots whose
//! ownership is tracked lock-free (`SlotTable`): the daemon fills a slot,
//! leases it to the client, and gets it back on release, or all at once when
//! the client disconnects. The descriptor goes to the client over the Unix
//! socket (SCM_RIGHTS, with the service); the client can only map it read-only.
//!
//! ```text
//!  segment: [ slot 0 | slot 1 | … | slot n-1 ]   each slot_bytes, a batch in the layout of `batch`
//! ```
//!
//! With `gpu::driver`, the module allowed `unsafe`: mmap and raw copies
//! (readers of a leased slot outside it, `SessionRing::leased`, say why).

#![allow(unsafe_code)]

mod fd_passing;
mod memfd_segment;
mod session_ring;
mod slot_table;
#[cfg(test)]
mod slot_table_tests;
mod sync;
// The slot table on shuttle's atomics, under randomized schedules.
#[cfg(test)]
mod model;

pub use fd_passing::{MAX_PAYLOAD, recv_fd, send_fd};
pub use memfd_segment::{MemfdSegment, ReadOnlyMapping};
pub use session_ring::{Filling, Lease, SessionRing};
pub use slot_table::{SlotCounts, SlotError, SlotTable, SlotToken};

use crate::ErrorKind;

/// Errors of the ring.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("{what} failed: {errno}")]
    Os { what: &'static str, errno: nix::Error },
    #[error("a ring segment cannot be empty")]
    Empty,
    #[error("a ring of {bytes} bytes is too large for this platform")]
    TooLarge { bytes: u64 },
    #[error("{len} bytes at offset {offset} do not fit a segment of {size} bytes")]
    OutOfBounds { offset: u64, len: u64, size: u64 },
    #[error("the ring's descriptor is not sealed against shrinking")]
    Unsealed,
    #[error(transparent)]
    Slot(#[from] SlotError),
}

impl RingError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RingError::Os { .. } => ErrorKind::Internal,
            RingError::Empty
            | RingError::OutOfBounds { .. }
            | RingError::Unsealed
            | RingError::Slot(_) => ErrorKind::InvalidArgument,
            RingError::TooLarge { .. } => ErrorKind::ResourceExhausted,
        }
    }
}
