//! Batch buffers a consumer hands back for the next batches. A recycled
//! buffer is already initialised, so collation can write it in parallel
//! without zeroing it first (a fresh `Vec` is written serially, front to
//! back: zeroing would be a whole extra pass). Only in-process consumers
//! (`stoker bench`) recycle; the daemon writes into ring slots.

use std::sync::Mutex;

/// A few spare buffers, shared by the batch thread and the consumer.
#[derive(Debug, Default)]
pub struct SpareBuffers {
    bufs: Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept at most: the batches in flight between the batch thread
/// and a consumer that recycles (the ready queue plus a few).
const KEEP: usize = 8;

impl SpareBuffers {
    /// Keeps `buf` for a later batch (dropped when enough are kept).
    pub fn put(&self, buf: Vec<u8>) {
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if bufs.len() < KEEP {
            bufs.push(buf);
        }
    }

    pub fn take(&self) -> Option<Vec<u8>> {
        self.bufs.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }
}
