//! Fetching one part: a range GET streamed into a buffer of exactly the
//! part's size, retried with backoff, resumed where a broken body stopped,
//! and pinned to the object's ETag.
//!
//! ```text
//!  part  [start ─────────────────────────── end)
//!  try 1 [██████████████▒  (reset after 40%)
//!  try 2                [████████████████████]   GET start+40%..end, If-Match
//! ```

use std::ops::Range;
use std::time::Duration;

use futures::StreamExt;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt};
use rand::SeedableRng;

use super::{Backoff, FetchConfig, FetchError, FetchStats, RateGate};
use crate::source::{ShardRef, chain, classify};

/// Why one attempt stopped.
enum AttemptError {
    Store(object_store::Error),
    Changed { found: String },
    Timeout,
    Io(std::io::Error),
    TooLong,
}

/// A part's destination: a reusable, already initialised buffer (at least
/// the part's length) and how much of it holds data.
struct PartSink {
    data: Vec<u8>,
    filled: usize,
    len: usize,
}

impl PartSink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), AttemptError> {
        if self.filled + chunk.len() > self.len {
            return Err(AttemptError::TooLong);
        }
        self.data[self.filled..self.filled + chunk.len()].copy_from_slice(chunk);
        self.filled += chunk.len();
        Ok(())
    }
}

/// Fetches `range` of `shard` into a new buffer, retrying transient failures.
pub async fn fetch_part(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    range: Range<u64>,
    e_tag: Option<&str>,
    cfg: &FetchConfig,
    stats: &FetchStats,
) -> Result<Vec<u8>, FetchError> {
    let len = (range.end - range.start) as usize;
    let mut data =
        fetch_part_into(store, shard, range, e_tag, cfg, stats, vec![0; len], None).await?;
    data.truncate(len);
    Ok(data)
}

/// Fetches `range` of `shard` into `data` (at least the range's length, e.g.
/// a pooled buffer), retrying transient failures; returns `data` with the
/// part in its first `range.end - range.start` bytes.
// The request's identity (shard, range, ETag), its context (store, config,
// stats, gate) and its buffer: bundling them would only rename the list.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_part_into(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    range: Range<u64>,
    e_tag: Option<&str>,
    cfg: &FetchConfig,
    stats: &FetchStats,
    data: Vec<u8>,
    gate: Option<&RateGate>,
) -> Result<Vec<u8>, FetchError> {
    let len = usize::try_from(range.end - range.start)
        .ok()
        .filter(|&len| len <= data.len())
        .ok_or_else(|| FetchError::Internal(format!("buffer too small for part {range:?}")))?;
    let mut buf = PartSink { data, filled: 0, len };
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap);
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let from = range.start + buf.filled as u64;
        if let Some(gate) = gate {
            gate.acquire(stats).await;
        }
        FetchStats::add(&stats.requests, 1);
        let sent = std::time::Instant::now();
        let mut ttfb = None;
        let attempt = tokio::time::timeout(
            cfg.request_timeout,
            read_into(store, shard, from..range.end, e_tag, &mut buf, &mut ttfb, stats),
        )
        .await
        .unwrap_or(Err(AttemptError::Timeout));
        let detail = match attempt {
            Ok(()) if buf.filled == len => {
                FetchStats::add(&stats.parts, 1);
                let total = sent.elapsed();
                let ttfb = ttfb.unwrap_or(total);
                FetchStats::add(&stats.ttfb_us, ttfb.as_micros() as u64);
                FetchStats::add(&stats.transfer_us, total.saturating_sub(ttfb).as_micros() as u64);
                if let Some(gate) = gate {
                    gate.on_success();
                }
                return Ok(buf.data);
            }
            Ok(()) => format!("short body: {} of {len} bytes", buf.filled),
            Err(AttemptError::Changed { found }) => {
                FetchStats::add(&stats.errors, 1);
                return Err(FetchError::ShardChanged {
                    shard: shard.url.clone(),
                    offset: from,
                    expected: e_tag.unwrap_or_default().to_string(),
                    found,
                });
            }
            Err(AttemptError::Store(e)) => {
                let class = classify(&e);
                if !class.transient {
                    FetchStats::add(&stats.errors, 1);
                    return Err(FetchError::from_store(shard, Some(range.clone()), attempts, e));
                }
                if class.throttled {
                    FetchStats::add(&stats.throttled, 1);
                    if let Some(gate) = gate {
                        gate.on_throttle();
                    }
                }
                chain(&e)
            }
            Err(AttemptError::Timeout) => {
                FetchStats::add(&stats.timeouts, 1);
                format!("no complete reply within {:?}", cfg.request_timeout)
            }
            Err(AttemptError::Io(e)) => format!("reading the local file: {e}"),
            Err(AttemptError::TooLong) => {
                "the store sent more bytes than the range asked for".into()
            }
        };
        FetchStats::add(&stats.errors, 1);
        if attempts >= cfg.max_attempts {
            return Err(FetchError::Failed { shard: shard.url.clone(), range, attempts, detail });
        }
        let delay = backoff.next_delay(&mut rng);
        tracing::debug!(shard = %shard.url, from, attempts, ?delay, %detail, "Retrying part.");
        FetchStats::add(&stats.retries, 1);
        tokio::time::sleep(delay).await;
    }
}

/// One GET of `range`, appended to `buf`; on a broken body `buf` keeps what
/// arrived, so the next attempt resumes after it.
async fn read_into(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    range: Range<u64>,
    e_tag: Option<&str>,
    buf: &mut PartSink,
    ttfb: &mut Option<std::time::Duration>,
    stats: &FetchStats,
) -> Result<(), AttemptError> {
    if buf.data.len() < buf.len {
        // Lost to a timed-out local read (see below): start the part afresh.
        buf.data.resize(buf.len, 0);
        buf.filled = 0;
    }
    let sent = std::time::Instant::now();
    let opts = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        if_match: e_tag.map(str::to_string),
        ..GetOptions::default()
    };
    let result = store.get_opts(&shard.path, opts).await.map_err(AttemptError::Store)?;
    let waited = sent.elapsed();
    *ttfb = Some(waited);
    FetchStats::add(&stats.first_bytes, 1);
    FetchStats::add(&stats.first_byte_us, waited.as_micros() as u64);
    // Stores that ignore If-Match still tell us the ETag they served.
    if let (Some(expected), Some(found)) = (e_tag, result.meta.e_tag.as_deref())
        && expected != found
    {
        return Err(AttemptError::Changed { found: found.to_string() });
    }
    let served = result.range.clone();
    match result.payload {
        // A local file: one positioned read straight into the buffer, not a
        // stream of small chunks.
        GetResultPayload::File(file, _) => {
            let want = (served.end - served.start) as usize;
            if buf.filled + want > buf.len {
                return Err(AttemptError::TooLong);
            }
            // The sink moves into the blocking read. If this attempt times
            // out meanwhile, what stays behind is an empty sink of the same
            // length: the next attempt re-reads the part from its start.
            let mut sink =
                std::mem::replace(buf, PartSink { data: Vec::new(), filled: 0, len: buf.len });
            let (sink, read) = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let at = sink.filled;
                let r = file.read_exact_at(&mut sink.data[at..at + want], served.start);
                if r.is_ok() {
                    sink.filled += want;
                }
                (sink, r)
            })
            .await
            .map_err(|e| AttemptError::Io(std::io::Error::other(e)))?;
            *buf = sink;
            if read.is_ok() {
                FetchStats::add(&stats.arrived_bytes, want as u64);
            }
            read.map_err(AttemptError::Io)
        }
        GetResultPayload::Stream(mut stream) => {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(AttemptError::Store)?;
                buf.write(&chunk)?;
                FetchStats::add(&stats.arrived_bytes, chunk.len() as u64);
            }
            Ok(())
        }
    }
}

/// Size and ETag of `shard`, asked of the store when the listing did not say.
pub async fn head_shard(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    cfg: &FetchConfig,
    stats: &FetchStats,
    gate: Option<&RateGate>,
) -> Result<(u64, Option<String>), FetchError> {
    if let Some(size) = shard.size {
        return Ok((size, shard.e_tag.clone()));
    }
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap);
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Some(gate) = gate {
            gate.acquire(stats).await;
        }
        FetchStats::add(&stats.requests, 1);
        let e = match tokio::time::timeout(cfg.request_timeout, store.head(&shard.path)).await {
            Ok(Ok(meta)) => {
                if let Some(gate) = gate {
                    gate.on_success();
                }
                return Ok((meta.size, meta.e_tag));
            }
            Ok(Err(e)) => e,
            Err(_) => {
                object_store::Error::Generic { store: "stoker", source: "HEAD timed out".into() }
            }
        };
        FetchStats::add(&stats.errors, 1);
        let class = classify(&e);
        if !class.transient || attempts >= cfg.max_attempts {
            return Err(FetchError::from_store(shard, None, attempts, e));
        }
        FetchStats::add(&stats.throttled, u64::from(class.throttled));
        if let (true, Some(gate)) = (class.throttled, gate) {
            gate.on_throttle();
        }
        FetchStats::add(&stats.retries, 1);
        tokio::time::sleep(backoff.next_delay(&mut rng)).await;
    }
}

/// A request timeout large enough for one part at a slow link.
pub fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
