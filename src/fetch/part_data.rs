//! A fetched part as the chunks it arrived in.
//!
//! The HTTP client hands the body over in chunks it has already read into
//! its own buffers. Copying them into one part buffer would touch every
//! byte once more (it was a fifth of the CPU on loopback, page faults
//! included); the tar parser works over chunks of any size, so the part
//! stays a list of them and collation into the batch is the one user-space
//! copy of each byte.
//!
//! ```text
//!  PartHold { chunks: [c0, c1, c2], reservation }      (one per part)
//!      ▲            ▲            ▲
//!  Bytes(c0)    Bytes(c1)    Bytes(c2)   each keeps the hold alive
//! ```
//!
//! The part's budget reservation lives exactly as long as any slice of any
//! of its chunks, as it did for one buffer, and a weak handle lets another
//! session turn a part someone still holds into the same bytes.

use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::Reservation;

/// One fetched part: its chunks, in order.
#[derive(Debug, Clone, Default)]
pub struct PartData {
    chunks: Vec<Bytes>,
    len: u64,
}

/// What every chunk of a part keeps alive.
#[derive(Debug)]
struct PartHold {
    chunks: Vec<Bytes>,
    _reservation: Option<Reservation>,
}

/// One chunk of a held part.
struct HeldChunk {
    hold: Arc<PartHold>,
    index: usize,
}

impl AsRef<[u8]> for HeldChunk {
    fn as_ref(&self) -> &[u8] {
        &self.hold.chunks[self.index]
    }
}

impl PartData {
    /// `chunks` paid for by `reservation`, plus the weak handle sharing
    /// uses (no copy, no second charge to the budget).
    pub fn held(chunks: Vec<Bytes>, reservation: Reservation) -> (PartData, WeakPart) {
        let chunks = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let hold = Arc::new(PartHold { chunks, _reservation: Some(reservation) });
        let weak = WeakPart(Arc::downgrade(&hold));
        (PartData::from_hold(&hold), weak)
    }

    /// Chunks outside any budget (a one-off read, tests).
    pub fn unaccounted(chunks: Vec<Bytes>) -> PartData {
        let chunks: Vec<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        PartData { chunks, len }
    }

    fn from_hold(hold: &Arc<PartHold>) -> PartData {
        let chunks: Vec<Bytes> = (0..hold.chunks.len())
            .map(|index| Bytes::from_owner(HeldChunk { hold: hold.clone(), index }))
            .collect();
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        PartData { chunks, len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The bytes in one buffer (a copy; for tests and one-off reads).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.chunks.iter().for_each(|c| out.extend_from_slice(c));
        out
    }
}

/// A part as long as someone holds it.
#[derive(Debug, Clone)]
pub struct WeakPart(Weak<PartHold>);

impl WeakPart {
    /// The part's bytes, if they are still alive.
    pub fn bytes(&self) -> Option<PartData> {
        self.0.upgrade().map(|hold| PartData::from_hold(&hold))
    }

    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::MemoryBudget;

    #[tokio::test]
    async fn the_reservation_lives_as_long_as_any_slice_of_any_chunk() {
        let budget = MemoryBudget::new(1000);
        let chunks = vec![Bytes::from_static(b"abc"), Bytes::new(), Bytes::from_static(b"defg")];
        let (part, weak) = PartData::held(chunks, budget.reserve(7).await);
        assert_eq!((part.len(), part.chunks().len()), (7, 2), "empty chunks dropped");
        assert_eq!(part.to_vec(), b"abcdefg");
        let again = weak.bytes().expect("held");
        assert_eq!(again.to_vec(), b"abcdefg");
        let slice = part.chunks()[1].slice(1..3);
        drop((part, again));
        assert_eq!(budget.used_bytes(), 7, "a slice still holds the part");
        assert!(weak.is_alive());
        assert_eq!(&slice[..], b"ef");
        drop(slice);
        assert_eq!(budget.used_bytes(), 0);
        assert!(weak.bytes().is_none());
    }
}
