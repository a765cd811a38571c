//! Keeps the daemon's heap near the memory the operator configured.
//!
//! The HTTP client reads each socket read into a buffer of up to 448 KiB
//! and hands it over as a slice of that buffer; a fetched part kept as its
//! chunks (one copy per byte) pins whole buffers, ~60% full. In the daemon
//! soak (256 MiB budget) the live heap reached 1.67× the budget, and
//! jemalloc kept freed pages for reuse on top of that. A thread reads
//! jemalloc's figures every 100 ms and decides two things (`decide`):
//! - compact: while live heap is above 3/4 of the target, fetched parts
//!   are copied as they arrive into buffers that hold nothing else
//!   (`fetch::part_reader`), freeing the read buffers. A backstop: the
//!   daemon's parts are held within the budget by construction by the
//!   pin allowance (`MemoryBudget::try_pin`, `serve::engines`), which this
//!   sampling alone did not do (peaks of 1.09-1.17x in the soak);
//! - purge: while resident heap is above the target with 32 MiB or more of
//!   it free, freed pages go back to the kernel (purging on every free,
//!   jemalloc's decay 0, bounds it too but doubled the CPU per byte).
//!
//! Only the daemon asks for it: its batches live in the rings (shared
//! memory), so its heap is the fetch budget; `stoker bench` builds batches
//! on the heap, and a 128 MiB budget there purged and compacted constantly
//! (1.6 CPU-s/GB against 0.73) for no smaller RSS.
//!
//! Where jemalloc is not the global allocator (the library's own tests),
//! its statistics stay near zero and nothing is ever purged.
#![allow(unsafe_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often resident memory is checked.
const PERIOD: Duration = Duration::from_millis(100);
/// Freed memory held before a purge is worth it: 32 MiB (at 8, a daemon
/// whose live memory sat above its target purged 8 times a second to win
/// a few MiB each time).
const MIN_RETAINED: u64 = 32 << 20;

static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static PURGES: AtomicU64 = AtomicU64::new(0);
static OVER: AtomicBool = AtomicBool::new(false);
static STARTED: OnceLock<()> = OnceLock::new();

/// Keeps the heap near `target_bytes` (the tightest target asked for
/// wins): compaction and purging as `decide` says. Starts the thread on
/// first use.
pub fn keep_resident_under(target_bytes: u64) {
    TARGET.fetch_min(target_bytes, Ordering::Relaxed);
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("stoker-trim".into()).spawn(|| {
            loop {
                std::thread::sleep(PERIOD);
                if let Err(e) = trim_once(TARGET.load(Ordering::Relaxed)) {
                    tracing::debug!(error = %e, "Allocator statistics unavailable; not trimming.");
                    return;
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "Could not start the allocator trimming thread.");
        }
    });
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decision {
    compact: bool,
    purge: bool,
}

/// Compact from 3/4 of `target` of live heap: compaction acts on parts as
/// they arrive, so it must start before the heap reaches the target (at
/// 1×, the soak's peaks still reached 349 MiB of heap for a 256 MiB
/// budget). Purge above `target` of resident heap when enough of it is free.
fn decide(allocated: u64, resident: u64, target: u64) -> Decision {
    Decision {
        compact: allocated > target / 4 * 3,
        purge: resident > target && resident >= allocated.saturating_add(MIN_RETAINED),
    }
}

/// One check against `target`.
fn trim_once(target: u64) -> Result<(), tikv_jemalloc_ctl::Error> {
    tikv_jemalloc_ctl::epoch::advance()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read()? as u64;
    let resident = tikv_jemalloc_ctl::stats::resident::read()? as u64;
    let d = decide(allocated, resident, target);
    OVER.store(d.compact, Ordering::Relaxed);
    if !d.purge {
        return Ok(());
    }
    // "arena.<MALLCTL_ARENAS_ALL>.purge": a command with no value.
    // SAFETY: the name is NUL-terminated and the command reads and writes
    // nothing, so every pointer may be null and both lengths zero.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    tracing::trace!(allocated, resident, target, rc, "Purged the allocator's unused pages.");
    if rc == 0 {
        PURGES.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Whether the last check said to compact (live heap above 3/4 of the
/// target): then
/// fetched parts are compacted as they arrive (`fetch::part_reader`), one
/// copy that frees the HTTP client's larger read buffers.
pub fn over_target() -> bool {
    OVER.load(Ordering::Relaxed)
}

/// What the allocator holds now, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AllocatorFigures {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes of physical memory the allocator holds (live, freed but kept,
    /// and its own metadata).
    pub resident: u64,
    /// Purges so far.
    pub purges: u64,
}

/// The allocator's figures, `None` where its statistics cannot be read.
pub fn figures() -> Option<AllocatorFigures> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    Some(AllocatorFigures {
        allocated: tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64,
        resident: tikv_jemalloc_ctl::stats::resident::read().ok()? as u64,
        purges: PURGES.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn compaction_starts_at_three_quarters_of_the_target() {
        assert!(!decide(192 * MIB, 200 * MIB, 256 * MIB).compact);
        assert!(decide(193 * MIB, 200 * MIB, 256 * MIB).compact);
    }

    #[test]
    fn purges_only_above_the_target_with_enough_free() {
        // Under the target: nothing, however much is free.
        assert!(!decide(100 * MIB, 250 * MIB, 256 * MIB).purge);
        // Above it, 40 MiB free: purge.
        assert!(decide(260 * MIB, 300 * MIB, 256 * MIB).purge);
        // Above it, but the heap is live: a purge would win nothing.
        assert!(!decide(290 * MIB, 300 * MIB, 256 * MIB).purge);
    }
}
