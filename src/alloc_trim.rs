//! Keeps the allocator's retained memory within the memory the operator
//! configured.
//!
//! The binary allocates with jemalloc, which keeps freed pages for reuse
//! and returns them to the kernel over ~10 s (its dirty-page decay).
//! Fetched parts are freed in bulk, so under load the daemon held ~1.8× its
//! fetch budget resident (`scripts/soak`, 256 MiB of budget: median 337,
//! peak 496 MiB anonymous). Purging on every free (decay 0) bounds that
//! but doubled the CPU per byte. Here a thread looks every 100 ms and
//! purges only while jemalloc's resident memory is above the target (the
//! fetch budget) and it holds more than 32 MiB it could give back. Only
//! the daemon asks for it: its batches live in the rings (shared memory),
//! so its heap is the fetch budget; `stoker bench` builds batches on the
//! heap, and a 128 MiB budget there purged and compacted constantly
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

/// Purge retained pages whenever jemalloc's resident memory exceeds
/// `target_bytes` (the tightest target asked for wins). Starts the thread
/// on first use.
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

/// One check: purge when resident memory is over `target` and some of it
/// is freed memory held for reuse. Whether it purged.
fn trim_once(target: u64) -> Result<bool, tikv_jemalloc_ctl::Error> {
    tikv_jemalloc_ctl::epoch::advance()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read()? as u64;
    let resident = tikv_jemalloc_ctl::stats::resident::read()? as u64;
    // Compaction starts at 3/4 of the target: it acts on parts as they
    // arrive, so it must start before the heap reaches the target (at 1×,
    // the soak's peaks still reached 349 MiB of heap for a 256 MiB budget).
    OVER.store(allocated > target / 4 * 3, Ordering::Relaxed);
    if resident <= target || resident < allocated + MIN_RETAINED {
        return Ok(false);
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
    PURGES.fetch_add(1, Ordering::Relaxed);
    Ok(rc == 0)
}

/// Whether live heap memory was above 3/4 of the target at the last check: then
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
