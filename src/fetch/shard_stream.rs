//! The fetch scheduler: shards in plan order become an ordered stream of
//! part events, with many range-GETs in flight underneath.
//!
//! ```text
//!  shards ─HEAD (lookahead)─▶ for each part, in consumption order:
//!                               reserve budget ─▶ take a permit ─▶ spawn GET
//!                               send the part's receiver downstream (in order)
//! ```
//!
//! Order is fixed by the scheduler, not by completion, so the parser sees
//! every shard's bytes in sequence however the network reorders replies.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::hedge::{HEDGE_CHECK, HedgeSignal, Line, Overdue};
use super::part_reader::{fetch_part_chunks, head_shard};
use super::part_sharing::Publisher;
use super::{
    Claim, ConnPermit, FetchEngine, FetchError, PartData, PartKey, PartPlan, PinCharge, Race,
    RequestSlot, Reservation,
};
use crate::source::ShardRef;

/// What the scheduler sends downstream, in order. `T` is the caller's tag
/// of each shard (the pipeline's plan entry), handed back at its start.
#[derive(Debug)]
pub enum PartEvent<T> {
    /// A shard of `size` bytes begins, of the version the store calls
    /// `e_tag` (every part is pinned to it); its bytes `span` follow in parts.
    ShardStart {
        tag: T,
        shard: Arc<ShardRef>,
        size: u64,
        e_tag: Option<Arc<str>>,
        span: std::ops::Range<u64>,
    },
    /// The next part of the current shard, once it has arrived.
    Part { offset: u64, data: oneshot::Receiver<Result<PartData, FetchError>> },
    /// The current shard's parts are all sent.
    ShardEnd,
    /// The shard could not even be looked up.
    Failed(FetchError),
}

/// How many parts may wait, fetched or in flight, between the scheduler and
/// the parser. The memory budget is the real bound; this only caps the
/// number of small channel entries.
const EVENT_QUEUE: usize = 4096;

/// A stream's first shard's first `LEAD_PARTS` parts' worth of bytes go
/// in parts of 1/`LEAD_SPLIT` the size (at least `MIN_LEAD_PART`): the
/// parser takes a part once all of it has arrived, so the first batch
/// waits for its whole parts, each on one connection in TCP slow start.
/// Cut smaller, its bytes come over several of the requests a start opens
/// at once. The lead ends on a part boundary and in the first shard, so
/// later parts are cut as any stream cuts them: a session that starts on
/// a shard another session is fetching shares all of it but its lead.
const LEAD_PARTS: u64 = 2;
const LEAD_SPLIT: u64 = 4;
const MIN_LEAD_PART: u64 = 1 << 20;

/// What one part's fetch holds.
struct PartFetch {
    range: std::ops::Range<u64>,
    reservation: Reservation,
    permit: ConnPermit,
    publisher: Option<Publisher>,
}

/// Fetches a part on its own task; the receiver gets its bytes. The part
/// joins `line` until its task ends.
fn spawn_fetch(
    engine: &Arc<FetchEngine>,
    shard: &Arc<ShardRef>,
    e_tag: &Option<Arc<str>>,
    fetch: PartFetch,
    line: &mut Line,
) -> oneshot::Receiver<Result<PartData, FetchError>> {
    let (done, data) = oneshot::channel();
    let (engine, shard, e_tag) = (engine.clone(), shard.clone(), e_tag.clone());
    let PartFetch { range, reservation, permit, publisher } = fetch;
    let len = range.end - range.start;
    let signal = Arc::new(HedgeSignal::default());
    line.push(&signal, len);
    let race = engine.config.hedge.then(|| Race { signal, budget: engine.budget.clone() });
    // Kept as the client's chunks only if the pin allowance pays for the
    // buffers they hold (the daemon's; `stoker bench` keeps none).
    let (pin, compact) = match engine.budget.try_pin(len) {
        PinCharge::Free => (None, false),
        PinCharge::Charged(pin) => (Some(pin), false),
        PinCharge::Compact => (None, true),
    };
    let sent = std::time::Instant::now();
    tokio::spawn(async move {
        let mut slot = RequestSlot::new(permit);
        let offset = range.start;
        let r = fetch_part_chunks(
            engine.store.as_ref(),
            &shard,
            range,
            e_tag.as_deref(),
            &engine.config,
            &engine.stats,
            Some(&engine.pool),
            engine.gate.as_deref(),
            Some(&mut slot),
            race.as_ref(),
            compact,
        )
        .await;
        drop((slot, race));
        // STOKER_LOG=stoker::fetch::shard_stream=trace: every part's time,
        // to find the one a stalled parser waited on.
        let ms = sent.elapsed().as_millis() as u64;
        tracing::trace!(shard = %shard.url, offset, len, ms, ok = r.is_ok(), "Part fetched.");
        let r = r.map(|chunks| {
            crate::fetch::FetchStats::add(&engine.stats.bytes, len);
            let (bytes, weak) = PartData::held(chunks, reservation.with_pin(pin));
            if let Some(publisher) = publisher {
                publisher.publish(Some(weak));
            }
            bytes
        });
        // (A failed fetch drops its publisher: joiners fetch for themselves.)
        let _ = done.send(r);
    });
    data
}

/// The bytes a claim leads to, if another session's fetch has them.
async fn shared_part(engine: &FetchEngine, claim: Claim) -> Option<PartData> {
    match claim {
        Claim::Missing => None,
        Claim::Ready(bytes) => Some(bytes),
        Claim::Waiting(rx) => engine.sharing.join(rx).await,
    }
}

/// Sends a part that is already here; false when the parser is gone.
async fn send_ready<T>(tx: &mpsc::Sender<PartEvent<T>>, offset: u64, bytes: PartData) -> bool {
    let (done, data) = oneshot::channel();
    let _ = done.send(Ok(bytes));
    tx.send(PartEvent::Part { offset, data }).await.is_ok()
}

/// One shard to read: the caller's tag, the shard, and the bytes of it to
/// read (`None`: all; a range is cut to the object's size).
pub type ShardRead<T> = (T, Arc<ShardRef>, Option<std::ops::Range<u64>>);

/// Starts fetching `shards` (tag, shard, bytes) in order on the current
/// tokio runtime. The iterator is drawn lazily, a HEAD lookahead ahead of the
/// parts being fetched, so a run of many epochs costs memory for what is in
/// flight, not for its whole plan. Dropping the receiver stops the
/// scheduler, also while it waits for budget, a permit or another session's
/// fetch (a session that ended must not take budget ahead of live ones, or
/// fetch for nobody).
pub fn spawn_shard_stream<T, I>(engine: Arc<FetchEngine>, shards: I) -> mpsc::Receiver<PartEvent<T>>
where
    T: Send + 'static,
    I: IntoIterator<Item = ShardRead<T>>,
    I::IntoIter: Send + 'static,
{
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    // This stream's name in the engine's part sharing.
    static STREAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let me = STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let gone = tx.clone();
    let shards = shards.into_iter();
    tokio::spawn(async move {
        // Dropping `schedule` mid-wait drops what it holds (reservation,
        // permit, publisher): all of it goes back.
        tokio::select! {
            biased;
            _ = gone.closed() => {}
            _ = schedule(engine, shards, tx, me) => {}
        }
    });
    rx
}

/// The scheduler: HEADs ahead, then each shard's parts in order.
async fn schedule<T: Send + 'static>(
    engine: Arc<FetchEngine>,
    shards: impl Iterator<Item = ShardRead<T>> + Send,
    tx: mpsc::Sender<PartEvent<T>>,
    me: u64,
) {
    let lookahead = engine.config.head_lookahead.max(1);
    // Spawned, so lookahead HEADs progress while the loop below waits
    // for budget or permits; `buffered` keeps them in plan order.
    let heads = futures::stream::iter(shards).map(|(tag, shard, bytes)| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let head = head_shard(
                engine.store.as_ref(),
                &shard,
                &engine.config,
                &engine.stats,
                engine.gate.as_deref(),
            )
            .await;
            (tag, shard, bytes, head)
        })
    });
    let mut heads = heads.buffered(lookahead);
    let mut line = Line::default();
    let mut first = true;
    while let Some(joined) = heads.next().await {
        let Ok((tag, shard, bytes, head)) = joined else {
            let e = FetchError::Internal("a HEAD task panicked".into());
            let _ = tx.send(PartEvent::Failed(e)).await;
            return;
        };
        let (size, e_tag) = match head {
            Ok(h) => h,
            Err(e) => {
                let _ = tx.send(PartEvent::Failed(e)).await;
                return;
            }
        };
        let e_tag: Option<Arc<str>> = e_tag.map(Into::into);
        let span = bytes.map_or(0..size, |r| r.start.min(size)..r.end.min(size));
        let start = PartEvent::ShardStart {
            tag,
            shard: shard.clone(),
            size,
            e_tag: e_tag.clone(),
            span: span.clone(),
        };
        if tx.send(start).await.is_err() {
            return;
        }
        let part_bytes = engine.part_bytes();
        let span_len = span.end.saturating_sub(span.start);
        let lead_part = (part_bytes / LEAD_SPLIT).max(MIN_LEAD_PART);
        let lead = if first && lead_part < part_bytes {
            (LEAD_PARTS * part_bytes).min(span_len)
        } else {
            0
        };
        first = false;
        let parts = PartPlan::new(span_len, part_bytes).ranges_led(lead, lead_part);
        for range in parts.map(|r| r.start + span.start..r.end + span.start) {
            // Another session fetching (or holding) the same part? Join
            // it; waiting here keeps reservations in consumption order,
            // and the fetch waited on already holds its budget and permit.
            let key = PartKey::new(&shard.url, e_tag.clone(), &range);
            let (offset, len) = (range.start, range.end - range.start);
            if let Some(bytes) = shared_part(&engine, engine.sharing.claim(&key, me)).await {
                if !send_ready(&tx, offset, bytes).await {
                    return;
                }
                continue;
            }
            watch_passed(&engine, &mut line);
            let mut reservation = watching(&engine, &mut line, engine.budget.reserve(len)).await;
            let mut permit = watching(&engine, &mut line, engine.limit.acquire()).await;
            let publisher = match engine.sharing.start(key, me) {
                Ok(publisher) => Some(publisher),
                Err(theirs) => {
                    // Someone started it meanwhile: use theirs.
                    drop((permit, reservation));
                    if let Some(bytes) = shared_part(&engine, theirs).await {
                        if !send_ready(&tx, offset, bytes).await {
                            return;
                        }
                        continue;
                    }
                    // Their fetch failed: ours, unshared.
                    reservation = watching(&engine, &mut line, engine.budget.reserve(len)).await;
                    permit = watching(&engine, &mut line, engine.limit.acquire()).await;
                    None
                }
            };
            let fetch = PartFetch { range, reservation, permit, publisher };
            let data = spawn_fetch(&engine, &shard, &e_tag, fetch, &mut line);
            if tx.send(PartEvent::Part { offset, data }).await.is_err() {
                return;
            }
        }
        if tx.send(PartEvent::ShardEnd).await.is_err() {
            return;
        }
    }
    // The last parts: a straggler among them is the whole job's tail.
    while watch(&engine, &mut line) {
        tokio::time::sleep(HEDGE_CHECK).await;
    }
}

/// Signals the head of `line` if it is late; false once it is empty.
fn watch(engine: &FetchEngine, line: &mut Line) -> bool {
    // Before any part has completed nothing is late yet.
    line.check(std::time::Instant::now(), Overdue::from_stats(&engine.stats))
}

/// Signals a late part that parts sent after it have passed (see
/// `Line::check_passed`); called as each part is sent, so whenever a part
/// finishes (its permit lets the next one go) the line is looked at.
fn watch_passed(engine: &FetchEngine, line: &mut Line) {
    if let Some(overdue) = Overdue::from_stats(&engine.stats) {
        line.check_passed(std::time::Instant::now(), overdue);
    }
}

/// Waits for `wait` (budget or a permit, keeping its place in the queue),
/// watching `line` once blocked for half a mean part time: a scheduler
/// held up behind a slow head (the budget full of parts fetched after it,
/// or every connection taken by slow replies) is what hedging is for. A
/// short wait is no sign of that: on saturated cores every part runs late
/// and permits still come back every few milliseconds, and racing there
/// only adds load (a 64-request netlab pass raced 12 parts in 0.1 s).
async fn watching<T>(engine: &FetchEngine, line: &mut Line, wait: impl Future<Output = T>) -> T {
    tokio::pin!(wait);
    let blocked = std::time::Instant::now();
    loop {
        tokio::select! {
            // A wait that is over at once (the usual case) sets no timer.
            biased;
            r = &mut wait => return r,
            _ = tokio::time::sleep(HEDGE_CHECK) => {
                let long = Overdue::from_stats(&engine.stats).is_some_and(|overdue| {
                    blocked.elapsed() >= overdue.after(engine.part_bytes()) / 4
                });
                if long {
                    watch(engine, line);
                } else {
                    watch_passed(engine, line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchConfig;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    /// The parts (offset, length) a stream over shards of `sizes` bytes
    /// fetches with parts of `part_bytes`, per shard; the bytes come back
    /// as stored.
    async fn parts_of_a_stream(sizes: &[u64], part_bytes: u64) -> Vec<Vec<(u64, u64)>> {
        let store = Arc::new(InMemory::new());
        let mut shards = Vec::new();
        let mut stored = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let path = Path::from(format!("s{i}.tar"));
            let bytes: Vec<u8> = (0..size).map(|b| (b % 251) as u8 ^ i as u8).collect();
            store.put(&path, bytes.clone().into()).await.unwrap();
            stored.push(bytes);
            let url = format!("memory://t/s{i}.tar");
            shards.push((i, Arc::new(ShardRef { url, path, size: None, e_tag: None }), None));
        }
        let config = FetchConfig {
            part_bytes,
            auto_concurrency: false,
            auto_part_bytes: false,
            rate_limit: false,
            ..FetchConfig::default()
        };
        let engine = FetchEngine::new(store, config);
        let mut rx = spawn_shard_stream(engine, shards);
        let mut parts: Vec<Vec<(u64, u64)>> = Vec::new();
        let mut got: Vec<Vec<u8>> = Vec::new();
        while let Some(event) = rx.recv().await {
            match event {
                PartEvent::ShardStart { .. } => {
                    parts.push(Vec::new());
                    got.push(Vec::new());
                }
                PartEvent::Part { offset, data } => {
                    let bytes = data.await.unwrap().unwrap().to_vec();
                    parts.last_mut().unwrap().push((offset, bytes.len() as u64));
                    got.last_mut().unwrap().extend(bytes);
                }
                PartEvent::ShardEnd => {}
                PartEvent::Failed(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, stored, "every byte once, in order");
        parts
    }

    #[tokio::test]
    async fn a_stream_fetches_its_first_parts_small() {
        // 8 MiB parts: the first shard's first 16 MiB go in 2 MiB parts,
        // then 8 MiB parts; later shards are cut as always (on the part
        // boundaries another stream shares).
        const M: u64 = 1 << 20;
        let small = |n: u64| (0..n).map(|i| (2 * i * M, 2 * M)).collect::<Vec<_>>();
        let parts = parts_of_a_stream(&[20 * M, 9 * M], 8 * M).await;
        assert_eq!(parts[0], [small(8), vec![(16 * M, 4 * M)]].concat());
        assert_eq!(parts[1], [(0, 8 * M), (8 * M, M)]);
        // A first shard shorter than the lead is cut small whole.
        let parts = parts_of_a_stream(&[5 * M, 9 * M], 8 * M).await;
        assert_eq!(parts[0], [small(2), vec![(4 * M, M)]].concat());
        assert_eq!(parts[1], [(0, 8 * M), (8 * M, M)]);
        // Parts of 1 MiB or less are not cut.
        let parts = parts_of_a_stream(&[3 * M], M).await;
        assert_eq!(parts[0], [(0, M), (M, M), (2 * M, M)]);
    }

    #[tokio::test]
    async fn a_dropped_stream_stops_even_while_it_waits_for_budget() {
        let store = Arc::new(InMemory::new());
        let mut shards = Vec::new();
        for i in 0..3 {
            let path = Path::from(format!("s{i}.tar"));
            store.put(&path, vec![7u8; 4096].into()).await.unwrap();
            let url = format!("memory://t/s{i}.tar");
            shards.push((i, Arc::new(ShardRef { url, path, size: None, e_tag: None }), None));
        }
        // Room for one part only: the scheduler waits for budget after it.
        let config = FetchConfig {
            part_bytes: 4096,
            memory_budget_bytes: 4096,
            auto_concurrency: false,
            auto_part_bytes: false,
            rate_limit: false,
            ..FetchConfig::default()
        };
        let engine = FetchEngine::new(store, config);
        let mut rx = spawn_shard_stream(engine.clone(), shards);
        let mut held = None;
        while held.is_none() {
            if let Some(PartEvent::Part { data, .. }) = rx.recv().await {
                held = Some(data.await.unwrap().unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let requests = engine.stats.requests.load(Ordering::Relaxed);
        drop(rx);
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(engine.budget.used_bytes(), 0, "nothing fetched for a stream that is gone");
        assert_eq!(engine.stats.requests.load(Ordering::Relaxed), requests);
    }
}
