//! Fetching one part: a range GET whose body chunks are kept as they
//! arrived (no copy), retried with backoff, resumed where a broken body
//! stopped, and pinned to the object's ETag.
//!
//! ```text
//!  part  [start ─────────────────────────── end)
//!  try 1 [██████████████▒  (reset after 40%)
//!  try 2                [████████████████████]   GET start+40%..end, If-Match
//! ```

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt};

use super::hedge::{self, Race};
use super::part_pool::pooled_bytes;
use super::{
    FetchConfig, FetchError, FetchStats, PartData, PartPool, RateGate, RequestSlot, RetryLoop,
};
use crate::source::{ShardRef, chain, classify, noting_retry_after};

/// Why one attempt stopped.
enum AttemptError {
    Store(object_store::Error),
    Changed {
        found: String,
    },
    Timeout,
    /// No bytes for this long: the connection is abandoned, the part
    /// resumes on another.
    Stalled(Duration),
    /// Bytes still coming, but the attempt has run this long (twice the
    /// stall limit: four mean part times): abandoned as a stall is, once
    /// a part.
    Slow(Duration),
    Io(std::io::Error),
    TooLong,
}

/// What has arrived of a part: its chunks so far, of `len` in all.
struct PartSink {
    chunks: Vec<Bytes>,
    filled: usize,
    len: usize,
    /// Bytes copied under memory pressure (see `GATHER_BYTES`).
    gather: Vec<u8>,
    /// Copy every chunk: the part was refused the pin allowance
    /// (`MemoryBudget::try_pin`).
    compact: bool,
}

/// The HTTP client reads each socket read into a buffer of up to 448 KiB
/// and hands the read over as a slice of it, so a chunk kept as it came
/// pins more than its bytes: in the daemon soak (256 MiB budget) live heap
/// reached 1.67× the budget, 705 such buffers alive. In the daemon a part
/// the pin allowance cannot pay for (`MemoryBudget::try_pin`), and any part
/// while live heap memory is above 3/4 of the budget
/// (`alloc_trim::over_target`), has its chunks copied into buffers of up
/// to 8 MiB that hold nothing else: one more copy of those bytes, paid only
/// where read-ahead is full (`stoker bench` keeps no allowance and never
/// pays it). Copying only chunks under 128 KiB freed nothing
/// measurable: most reads are larger, in buffers ~60% full.
const GATHER_BYTES: usize = 8 << 20;

impl PartSink {
    fn new(len: usize, compact: bool) -> PartSink {
        PartSink { chunks: Vec::new(), filled: 0, len, gather: Vec::new(), compact }
    }

    /// Adds the next chunk; `compact`: copy it into the part's own buffers
    /// (a part that started compacting goes on, so order holds).
    fn push(&mut self, chunk: Bytes, compact: bool) -> Result<(), AttemptError> {
        if self.filled + chunk.len() > self.len {
            return Err(AttemptError::TooLong);
        }
        self.filled += chunk.len();
        if chunk.is_empty() {
            return Ok(());
        }
        if self.gather.is_empty() && !compact && !self.compact {
            self.chunks.push(chunk);
            return Ok(());
        }
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            if self.gather.len() == self.gather.capacity() {
                self.flush();
                // What is left of the part (this chunk included), at most 8 MiB.
                let left = self.len - self.filled + rest.len();
                self.gather.reserve_exact(left.min(GATHER_BYTES));
            }
            let n = rest.len().min(self.gather.capacity() - self.gather.len());
            self.gather.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Moves the copied bytes into the part, in order.
    fn flush(&mut self) {
        if !self.gather.is_empty() {
            self.chunks.push(Bytes::from(std::mem::take(&mut self.gather)));
        }
    }

    /// Drops every byte from `to` on (what a winning hedge replaces).
    fn cut_to(&mut self, to: usize) {
        self.flush();
        let (mut kept, mut n) = (0, 0);
        while n < self.chunks.len() && kept < to {
            let chunk = &mut self.chunks[n];
            if kept + chunk.len() > to {
                chunk.truncate(to - kept);
            }
            kept += chunk.len();
            n += 1;
        }
        self.chunks.truncate(n);
        self.filled = kept;
    }

    /// Appends what another sink received (a hedge's bytes, after `cut_to`).
    fn append(&mut self, other: PartSink) -> Result<(), AttemptError> {
        for chunk in other.into_chunks() {
            self.push(chunk, false)?;
        }
        Ok(())
    }

    /// The part's chunks, once every byte is in.
    fn into_chunks(mut self) -> Vec<Bytes> {
        self.flush();
        self.chunks
    }
}

/// Fetches `range` of `shard`, retrying transient failures (a one-off
/// read outside any budget).
pub async fn fetch_part(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    range: Range<u64>,
    e_tag: Option<&str>,
    cfg: &FetchConfig,
    stats: &FetchStats,
) -> Result<PartData, FetchError> {
    let chunks =
        fetch_part_chunks(store, shard, range, e_tag, cfg, stats, None, None, None, None, false)
            .await?;
    Ok(PartData::unaccounted(chunks))
}

/// Fetches `range` of `shard` as the chunks it arrived in, retrying
/// transient failures. A local file is read in one positioned read into a
/// buffer from `pool` (when given). `slot`, the request's place in the
/// concurrency limit, is given back while it waits out a `Retry-After`.
/// `race`: the part may be asked to race a second request (see `hedge`).
/// `compact`: copy the body into buffers of the part's own as it arrives
/// (it was refused the pin allowance, `MemoryBudget::try_pin`).
// The request's identity (shard, range, ETag) and its context (store,
// config, stats, pool, gate, slot, race): bundling them would only rename
// the list.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_part_chunks(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    range: Range<u64>,
    e_tag: Option<&str>,
    cfg: &FetchConfig,
    stats: &FetchStats,
    pool: Option<&Arc<PartPool>>,
    gate: Option<&RateGate>,
    mut slot: Option<&mut RequestSlot>,
    race: Option<&Race>,
    compact: bool,
) -> Result<Vec<Bytes>, FetchError> {
    let len = usize::try_from(range.end - range.start)
        .map_err(|_| FetchError::Internal(format!("part {range:?} too large for memory")))?;
    let mut buf = PartSink::new(len, compact);
    let mut retry = RetryLoop::new(cfg, gate, stats);
    // A part abandons one slow connection at most: slow twice is the path,
    // not the connection, and a path that slowed for every part must not
    // cost every part a second request each time.
    let mut slow_left = true;
    loop {
        retry.begin().await;
        let from = range.start + buf.filled as u64;
        let sent = std::time::Instant::now();
        let mut ttfb = None;
        let stall = stats.stall_after(cfg.stall_floor, cfg.request_timeout);
        let slow = slow_left.then_some(2 * stall);
        let (attempt, asked) = noting_retry_after(tokio::time::timeout(
            cfg.request_timeout,
            read_into(
                store,
                shard,
                from..range.end,
                e_tag,
                &mut buf,
                &mut ttfb,
                stats,
                pool,
                Limits { stall, slow },
                race.map(|race| (race, gate)),
            ),
        ))
        .await;
        if range.start + buf.filled as u64 > from {
            retry.progress();
        }
        let attempt = attempt.unwrap_or(Err(AttemptError::Timeout));
        let detail = match attempt {
            Ok(()) if buf.filled == len => {
                FetchStats::add(&stats.parts, 1);
                let total = sent.elapsed();
                let ttfb = ttfb.unwrap_or(total);
                FetchStats::add(&stats.ttfb_us, ttfb.as_micros() as u64);
                FetchStats::add(&stats.transfer_us, total.saturating_sub(ttfb).as_micros() as u64);
                let histograms = crate::metrics::store();
                histograms.first_byte.observe(ttfb.as_secs_f64());
                histograms.transfer.observe(total.saturating_sub(ttfb).as_secs_f64());
                if let Some(gate) = gate {
                    gate.on_success();
                }
                return Ok(buf.into_chunks());
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
                    return Err(FetchError::from_store(
                        shard,
                        Some(range.clone()),
                        retry.attempts(),
                        e,
                    ));
                }
                if class.throttled {
                    retry.throttled(asked);
                }
                chain(&e)
            }
            Err(AttemptError::Timeout) => {
                FetchStats::add(&stats.timeouts, 1);
                format!("no complete reply within {:?}", cfg.request_timeout)
            }
            Err(AttemptError::Stalled(quiet)) => {
                FetchStats::add(&stats.stalls, 1);
                format!("no bytes for {quiet:?}: the connection stalled")
            }
            Err(AttemptError::Slow(took)) => {
                FetchStats::add(&stats.stalls, 1);
                slow_left = false;
                format!("still sending after {took:?}: the connection is slow")
            }
            Err(AttemptError::Io(e)) => format!("reading the local file: {e}"),
            Err(AttemptError::TooLong) => {
                "the store sent more bytes than the range asked for".into()
            }
        };
        FetchStats::add(&stats.errors, 1);
        // Waits the backoff, or the store's own `Retry-After` if longer
        // (off the concurrency limit: see `RequestSlot`).
        let slot = slot.as_deref_mut().filter(|_| asked.is_some());
        let waited = match slot {
            Some(slot) => {
                slot.give_back();
                let waited = retry.wait(asked).await;
                slot.take_again().await;
                waited
            }
            None => retry.wait(asked).await,
        };
        match waited {
            Ok(delay) => {
                let attempts = retry.attempts();
                tracing::debug!(shard = %shard.url, from, attempts, ?delay, %detail, "Retried part.");
            }
            Err(why) => {
                let (attempts, detail) = (retry.attempts(), format!("{detail}; {why}"));
                return Err(FetchError::Failed {
                    shard: shard.url.clone(),
                    range,
                    attempts,
                    detail,
                });
            }
        }
    }
}

/// How long an attempt may go: `stall`, the longest its reply may send
/// nothing (headers, or the next chunk); `slow`, if set, the longest its
/// body may take in all.
#[derive(Debug, Clone, Copy)]
struct Limits {
    stall: Duration,
    slow: Option<Duration>,
}

/// One GET of `range`, appended to `buf`; on a broken, stalled or slow body
/// `buf` keeps what arrived, so the next attempt resumes after it. With
/// `race`, the body may be raced by a second GET once signalled.
// As `fetch_part_chunks`, plus the attempt's sink, time to first byte and
// limits.
#[allow(clippy::too_many_arguments)]
async fn read_into(
    store: &dyn ObjectStore,
    shard: &ShardRef,
    range: Range<u64>,
    e_tag: Option<&str>,
    buf: &mut PartSink,
    ttfb: &mut Option<std::time::Duration>,
    stats: &FetchStats,
    pool: Option<&Arc<PartPool>>,
    limits: Limits,
    race: Option<(&Race, Option<&RateGate>)>,
) -> Result<(), AttemptError> {
    let stall = limits.stall;
    let sent = std::time::Instant::now();
    let opts = GetOptions {
        range: Some(GetRange::Bounded(range.clone())),
        if_match: e_tag.map(str::to_string),
        ..GetOptions::default()
    };
    let result = tokio::time::timeout(stall, store.get_opts(&shard.path, opts))
        .await
        .map_err(|_| AttemptError::Stalled(stall))?
        .map_err(AttemptError::Store)?;
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
        // A local file: one positioned read into one buffer, not a stream
        // of small chunks. If this attempt times out meanwhile, the buffer
        // is lost with the blocking task and the next attempt re-reads.
        GetResultPayload::File(file, _) => {
            let want = (served.end - served.start) as usize;
            if buf.filled + want > buf.len {
                return Err(AttemptError::TooLong);
            }
            let pool = pool.cloned();
            let chunk = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut data = match &pool {
                    Some(pool) => pool.take(want),
                    None => vec![0; want],
                };
                file.read_exact_at(&mut data[..want], served.start)?;
                Ok(match pool {
                    Some(pool) => pooled_bytes(data, want, pool),
                    None => {
                        data.truncate(want);
                        Bytes::from(data)
                    }
                })
            })
            .await
            .map_err(|e| AttemptError::Io(std::io::Error::other(e)))?
            .map_err(AttemptError::Io)?;
            // One exact buffer already: nothing to compact.
            buf.push(chunk, false)?;
            FetchStats::add(&stats.arrived_bytes, want as u64);
            Ok(())
        }
        GetResultPayload::Stream(stream) => {
            let Some((race, gate)) = race else {
                let progress = AtomicUsize::new(buf.filled);
                return read_body(stream, buf, &progress, stats, sent, limits).await;
            };
            let body = Body { stream, sent, limits };
            let request = Request { store, shard, e_tag, stats, pool };
            read_body_racing(body, buf, request, range.end, race, gate).await
        }
    }
}

/// A reply whose body is being read.
struct Body {
    stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    sent: std::time::Instant,
    limits: Limits,
}

/// What a second GET of the same part needs.
#[derive(Clone, Copy)]
struct Request<'a> {
    store: &'a dyn ObjectStore,
    shard: &'a ShardRef,
    e_tag: Option<&'a str>,
    stats: &'a FetchStats,
    pool: Option<&'a Arc<PartPool>>,
}

/// Reads `body` into `buf`; once `race` is signalled, and if a fresh
/// request would finish sooner (`hedge::worth_racing`) and the budget's
/// overdraft and the retry budget have room, GETs the rest of the part (up to `end`)
/// on another connection as well and keeps whichever finishes first.
async fn read_body_racing(
    body: Body,
    buf: &mut PartSink,
    request: Request<'_>,
    end: u64,
    race: &Race,
    gate: Option<&RateGate>,
) -> Result<(), AttemptError> {
    let stats = request.stats;
    let part_start = end - buf.len as u64;
    let (began, received_before) = (std::time::Instant::now(), buf.filled);
    let progress = AtomicUsize::new(buf.filled);
    let limits = body.limits;
    /// Which reply the part's bytes come from.
    enum Won {
        First(Result<(), AttemptError>),
        Hedge { at: usize, sink: PartSink, _grant: super::Reservation },
    }
    let won = {
        let first = read_body(body.stream, buf, &progress, stats, body.sent, limits);
        tokio::pin!(first);
        tokio::select! {
            biased;
            r = &mut first => return r,
            _ = race.signal.fired() => {}
        }
        // A reply judged on its first moments (a retry just started, a
        // connection in slow start) looks slower than it is.
        let judge_at = tokio::time::Instant::from_std(began + hedge::JUDGE_AFTER);
        tokio::select! {
            biased;
            r = &mut first => return r,
            _ = tokio::time::sleep_until(judge_at) => {}
        }
        let at = progress.load(Ordering::Acquire);
        let left = (end - part_start).saturating_sub(at as u64);
        let worth =
            hedge::worth_racing(stats, (at - received_before) as u64, began.elapsed(), left);
        let grant = worth.then(|| race.budget.try_overdraw(left)).flatten();
        let token = match (&grant, gate) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(gate)) => gate.acquire_retry(tokio::time::Instant::now()).await,
        };
        match grant.filter(|_| token) {
            None => Won::First(first.await),
            Some(grant) => {
                FetchStats::add(&stats.requests, 1);
                FetchStats::add(&stats.hedges, 1);
                tracing::debug!(shard = %request.shard.url, at = part_start + at as u64, left, "Racing a slow part.");
                let hedge = async {
                    let mut sink = PartSink::new(left as usize, false);
                    let mut ttfb = None;
                    let range = part_start + at as u64..end;
                    let Request { store, shard, e_tag, pool, .. } = request;
                    // The race's bytes repeat the first reply's: not
                    // goodput, nor a request the autotuner added, so its
                    // arrivals and first byte are kept out of the
                    // engine's counters.
                    let own = FetchStats::default();
                    let read = read_into(
                        store, shard, range, e_tag, &mut sink, &mut ttfb, &own, pool, limits, None,
                    );
                    // A short race lost; which error says so does not matter.
                    Box::pin(read).await.and_then(|()| {
                        if sink.filled == sink.len { Ok(sink) } else { Err(AttemptError::TooLong) }
                    })
                };
                tokio::pin!(hedge);
                tokio::select! {
                    r = &mut first => match r {
                        Ok(()) => Won::First(Ok(())),
                        // The first reply broke: the hedge may still bring the rest.
                        Err(e) => match hedge.await {
                            Ok(sink) => Won::Hedge { at, sink, _grant: grant },
                            Err(_) => Won::First(Err(e)),
                        },
                    },
                    h = &mut hedge => match h {
                        Ok(sink) => Won::Hedge { at, sink, _grant: grant },
                        Err(_) => Won::First(first.await),
                    },
                }
            }
        }
    };
    match won {
        Won::First(r) => r,
        Won::Hedge { at, sink, _grant } => {
            FetchStats::add(&stats.hedge_wins, 1);
            buf.cut_to(at);
            buf.append(sink)
        }
    }
}

/// Reads a reply's body into `buf`, telling `progress` how full it is.
async fn read_body(
    mut stream: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    buf: &mut PartSink,
    progress: &AtomicUsize,
    stats: &FetchStats,
    sent: std::time::Instant,
    Limits { stall, slow }: Limits,
) -> Result<(), AttemptError> {
    // Dropping the stream on a stall closes its connection.
    while let Some(chunk) = tokio::time::timeout(stall, stream.next())
        .await
        .map_err(|_| AttemptError::Stalled(stall))?
    {
        let chunk = chunk.map_err(AttemptError::Store)?;
        let n = chunk.len() as u64;
        buf.push(chunk, crate::alloc_trim::over_target())?;
        progress.store(buf.filled, Ordering::Release);
        FetchStats::add(&stats.arrived_bytes, n);
        // A trickle (a bad path, a struggling server) that never
        // goes quiet long enough to be a stall.
        if let Some(slow) = slow
            && buf.filled < buf.len
            && sent.elapsed() > slow
        {
            return Err(AttemptError::Slow(sent.elapsed()));
        }
    }
    Ok(())
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
    let mut retry = RetryLoop::new(cfg, gate, stats);
    loop {
        retry.begin().await;
        let (head, asked) =
            noting_retry_after(tokio::time::timeout(cfg.request_timeout, store.head(&shard.path)))
                .await;
        let e = match head {
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
        if !class.transient {
            return Err(FetchError::from_store(shard, None, retry.attempts(), e));
        }
        if class.throttled {
            retry.throttled(asked);
        }
        if let Err(why) = retry.wait(asked).await {
            let detail = format!("{}; {why}", chain(&e));
            return Err(FetchError::LookupFailed {
                shard: shard.url.clone(),
                attempts: retry.attempts(),
                detail,
            });
        }
    }
}

/// A request timeout large enough for one part at a slow link.
pub fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod sink_tests {
    use super::*;

    fn pushed(sizes: &[usize], compact: impl Fn(usize) -> bool) -> Vec<Bytes> {
        let len = sizes.iter().sum();
        let mut sink = PartSink::new(len, false);
        let mut next = 0u8;
        for (i, &n) in sizes.iter().enumerate() {
            let chunk: Vec<u8> = (0..n)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            assert!(sink.push(Bytes::from(chunk), compact(i)).is_ok());
        }
        sink.into_chunks()
    }

    fn bytes(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn chunks_are_kept_as_they_came_without_pressure() {
        let chunks = pushed(&[3, 5, 7], |_| false);
        assert_eq!(chunks.iter().map(Bytes::len).collect::<Vec<_>>(), vec![3, 5, 7]);
    }

    #[test]
    fn under_pressure_chunks_are_compacted_in_order() {
        let sizes = [3, 5, 7, 11];
        let kept = pushed(&sizes, |_| false);
        // Pressure from the second chunk on: the first stays, the rest
        // become one buffer of exactly their bytes.
        let compacted = pushed(&sizes, |i| i >= 1);
        assert_eq!(compacted.iter().map(Bytes::len).collect::<Vec<_>>(), vec![3, 23]);
        assert_eq!(bytes(&compacted), bytes(&kept));
        // Once a part compacts it goes on, even if the pressure ends.
        let once = pushed(&sizes, |i| i == 1);
        assert_eq!(once.iter().map(Bytes::len).collect::<Vec<_>>(), vec![3, 23]);
        assert_eq!(bytes(&once), bytes(&kept));
    }

    #[test]
    fn a_part_refused_the_pin_allowance_copies_every_chunk_and_its_hedge() {
        let mut sink = PartSink::new(10, true);
        assert!(sink.push(Bytes::from_static(b"abc"), false).is_ok());
        let mut hedge = PartSink::new(7, false);
        assert!(hedge.push(Bytes::from_static(b"defg"), false).is_ok());
        assert!(hedge.push(Bytes::from_static(b"hij"), false).is_ok());
        assert_eq!(hedge.chunks.len(), 2, "a hedge alone keeps its chunks");
        assert!(sink.append(hedge).is_ok());
        let chunks = sink.into_chunks();
        assert_eq!(chunks.len(), 1, "one buffer of the part's own");
        assert_eq!(&chunks[0][..], b"abcdefghij");
    }

    #[test]
    fn compacted_buffers_hold_at_most_8_mib() {
        let sizes = [5 << 20, 5 << 20, 1];
        let chunks = pushed(&sizes, |_| true);
        let lens: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![8 << 20, (2 << 20) + 1]);
    }

    #[test]
    fn a_chunk_past_the_range_is_refused() {
        let mut sink = PartSink::new(4, false);
        assert!(sink.push(Bytes::from_static(b"abc"), true).is_ok());
        assert!(matches!(sink.push(Bytes::from_static(b"de"), true), Err(AttemptError::TooLong)));
    }
}
