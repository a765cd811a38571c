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

use super::{Backoff, FetchConfig, FetchError, FetchStats};
use crate::source::{ShardRef, chain, classify};

/// Why one attempt stopped.
enum AttemptError {
    Store(object_store::Error),
    Changed { found: String },
    Timeout,
    Io(std::io::Error),
    TooLong,
}

/// Fetches `range` of `shard`, retrying transient failures.
pub async fn fetch_part(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    range: Range<u64>,
    e_tag: Option<&str>,
    cfg: &FetchConfig,
    stats: &FetchStats,
) -> Result<Vec<u8>, FetchError> {
    let len = usize::try_from(range.end - range.start).map_err(|_| FetchError::Failed {
        shard: shard.url.clone(),
        range: range.clone(),
        attempts: 0,
        detail: "part larger than the address space".into(),
    })?;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap);
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let from = range.start + buf.len() as u64;
        FetchStats::add(&stats.requests, 1);
        let attempt = tokio::time::timeout(
            cfg.request_timeout,
            read_into(store, shard, from..range.end, e_tag, &mut buf, len),
        )
        .await
        .unwrap_or(Err(AttemptError::Timeout));
        let detail = match attempt {
            Ok(()) if buf.len() == len => {
                FetchStats::add(&stats.parts, 1);
                return Ok(buf);
            }
            Ok(()) => format!("short body: {} of {len} bytes", buf.len()),
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
                    return Err(FetchError::from_store(
                        shard,
                        Some(range.clone()),
                        attempts,
                        e,
                    ));
                }
                if class.throttled {
                    FetchStats::add(&stats.throttled, 1);
                }
                chain(&e)
            }
            Err(AttemptError::Timeout) => {
                format!("no complete reply within {:?}", cfg.request_timeout)
            }
            Err(AttemptError::Io(e)) => format!("reading the local file: {e}"),
            Err(AttemptError::TooLong) => {
                "the store sent more bytes than the range asked for".into()
            }
        };
        FetchStats::add(&stats.errors, 1);
        if attempts >= cfg.max_attempts {
            return Err(FetchError::Failed {
                shard: shard.url.clone(),
                range,
                attempts,
                detail,
            });
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
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<(), AttemptError> {
    let opts = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        if_match: e_tag.map(str::to_string),
        ..GetOptions::default()
    };
    let result = store
        .get_opts(&shard.path, opts)
        .await
        .map_err(AttemptError::Store)?;
    // Stores that ignore If-Match still tell us the ETag they served.
    if let (Some(expected), Some(found)) = (e_tag, result.meta.e_tag.as_deref())
        && expected != found
    {
        return Err(AttemptError::Changed {
            found: found.to_string(),
        });
    }
    let served = result.range.clone();
    match result.payload {
        // A local file: one positioned read straight into the buffer, not a
        // stream of small chunks.
        GetResultPayload::File(file, _) => {
            let want = (served.end - served.start) as usize;
            if buf.len() + want > len {
                return Err(AttemptError::TooLong);
            }
            let mut local = std::mem::take(buf);
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let at = local.len();
                local.resize(at + want, 0);
                let r = file.read_exact_at(&mut local[at..], served.start);
                if r.is_err() {
                    local.truncate(at);
                }
                (local, r)
            })
            .await
            .map_err(|e| AttemptError::Io(std::io::Error::other(e)))?;
            *buf = read.0;
            read.1.map_err(AttemptError::Io)
        }
        GetResultPayload::Stream(mut stream) => {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(AttemptError::Store)?;
                if buf.len() + chunk.len() > len {
                    return Err(AttemptError::TooLong);
                }
                buf.extend_from_slice(&chunk);
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
) -> Result<(u64, Option<String>), FetchError> {
    if let Some(size) = shard.size {
        return Ok((size, shard.e_tag.clone()));
    }
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap);
    let mut rng = rand_chacha::ChaCha8Rng::from_os_rng();
    let mut attempts = 0;
    loop {
        attempts += 1;
        FetchStats::add(&stats.requests, 1);
        let e = match tokio::time::timeout(cfg.request_timeout, store.head(&shard.path)).await {
            Ok(Ok(meta)) => return Ok((meta.size, meta.e_tag)),
            Ok(Err(e)) => e,
            Err(_) => object_store::Error::Generic {
                store: "stoker",
                source: "HEAD timed out".into(),
            },
        };
        FetchStats::add(&stats.errors, 1);
        let class = classify(&e);
        if !class.transient || attempts >= cfg.max_attempts {
            return Err(FetchError::from_store(shard, None, attempts, e));
        }
        FetchStats::add(&stats.throttled, u64::from(class.throttled));
        FetchStats::add(&stats.retries, 1);
        tokio::time::sleep(backoff.next_delay(&mut rng)).await;
    }
}

/// A request timeout large enough for one part at a slow link.
pub fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
