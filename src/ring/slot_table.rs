//! Slot states of a ring: who may touch which slot, lock-free.
//!
//! ```text
//!            acquire (daemon)         publish (daemon)         release (client, or reclaim)
//!  FREE ────────────────────▶ FILLING ───────────────▶ LEASED ───────────────────────────▶ FREE
//!   gen                         gen+1                    gen+1                              gen+1
//! ```
//!
//! Each slot's word packs a generation (upper 56 bits) and a state (low 8).
//! Every transition is one compare-and-swap on that word, so two parties can
//! never both win a slot, and a lease token (slot, generation) from before a
//! reclaim cannot release the slot's next occupant (no ABA): its generation
//! no longer matches.

use super::sync::{AtomicU64, Ordering};

const FREE: u64 = 0;
const FILLING: u64 = 1;
const LEASED: u64 = 2;

fn pack(generation: u64, state: u64) -> u64 {
    generation << 8 | state
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 8, word & 0xff)
}

/// A claim on one slot at one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotToken {
    pub slot: u32,
    pub generation: u64,
}

/// Why a slot transition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("slot {slot} does not exist")]
    NoSuchSlot { slot: u32 },
    #[error(
        "slot {slot} is not in the expected state for generation {generation} (stale or repeated)"
    )]
    Stale { slot: u32, generation: u64 },
}

/// The states of `n` slots.
#[derive(Debug)]
pub struct SlotTable {
    words: Box<[AtomicU64]>,
}

impl SlotTable {
    pub fn new(slots: u32) -> SlotTable {
        SlotTable { words: (0..slots).map(|_| AtomicU64::new(pack(0, FREE))).collect() }
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Claims a free slot for filling (the daemon), lowest index first.
    pub fn acquire(&self) -> Option<SlotToken> {
        for (i, word) in self.words.iter().enumerate() {
            let current = word.load(Ordering::Acquire);
            let (generation, state) = unpack(current);
            if state != FREE {
                continue;
            }
            let next = pack(generation + 1, FILLING);
            if word.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Some(SlotToken { slot: i as u32, generation: generation + 1 });
            }
        }
        None
    }

    fn transition(&self, token: SlotToken, from: u64, to: u64) -> Result<SlotToken, SlotError> {
        let word = self
            .words
            .get(token.slot as usize)
            .ok_or(SlotError::NoSuchSlot { slot: token.slot })?;
        let expected = pack(token.generation, from);
        let next_generation = token.generation + 1;
        word.compare_exchange(
            expected,
            pack(next_generation, to),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .map(|_| SlotToken { slot: token.slot, generation: next_generation })
        .map_err(|_| SlotError::Stale { slot: token.slot, generation: token.generation })
    }

    /// The slot is filled: lease it to the client. Returns the lease token.
    pub fn publish(&self, token: SlotToken) -> Result<SlotToken, SlotError> {
        self.transition(token, FILLING, LEASED)
    }

    /// The daemon gives up a slot it was filling (an error mid-batch).
    pub fn abandon(&self, token: SlotToken) -> Result<(), SlotError> {
        self.transition(token, FILLING, FREE).map(drop)
    }

    /// The client is done with a leased slot.
    pub fn release(&self, lease: SlotToken) -> Result<(), SlotError> {
        self.transition(lease, LEASED, FREE).map(drop)
    }

    /// The client went away: every leased slot comes back. Returns how many.
    pub fn reclaim_leased(&self) -> usize {
        let mut reclaimed = 0;
        for word in self.words.iter() {
            let mut current = word.load(Ordering::Acquire);
            loop {
                let (generation, state) = unpack(current);
                if state != LEASED {
                    break;
                }
                match word.compare_exchange(
                    current,
                    pack(generation + 1, FREE),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        reclaimed += 1;
                        break;
                    }
                    Err(now) => current = now,
                }
            }
        }
        reclaimed
    }

    /// Slots free now.
    pub fn free_count(&self) -> usize {
        self.words.iter().filter(|w| unpack(w.load(Ordering::Acquire)).1 == FREE).count()
    }

    /// Slots now free, filling and leased (each read once: a moment's view).
    pub fn counts(&self) -> SlotCounts {
        let mut c = SlotCounts::default();
        for w in self.words.iter() {
            match unpack(w.load(Ordering::Acquire)).1 {
                FREE => c.free += 1,
                FILLING => c.filling += 1,
                _ => c.leased += 1,
            }
        }
        c
    }
}

/// How many slots are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotCounts {
    pub free: u64,
    pub filling: u64,
    pub leased: u64,
}
