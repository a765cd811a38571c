//! The streaming pipeline: one run of epochs for one rank, from shards to
//! batches.
//!
//! ```text
//!  tokio: fetch scheduler ──PartEvent──▶ parse thread ──samples (256)──▶ batch thread ──batches (prefetch)──▶ consumer
//!         (range GETs)                   zstd, tar, group                 shuffle, collate
//! ```
//!
//! Each queue is bounded, so a slow consumer stops the fetch within a few
//! batches. Dropping the [`Pipeline`] stops every stage: each one's send
//! fails and it returns.
//!
//! Memory. Fetched parts are paid for by the engine's memory budget until
//! the last sample slicing them is collated. The scheduler reserves in the
//! order the parser consumes, so the parser can always make progress unless
//! what sits downstream of it pins the whole budget. Three bounds keep that
//! from happening: a member may use at most a quarter of the budget; the
//! samples of the batch being built at most half (otherwise a named
//! `OverBudget` error, not a hang); and the sample shuffle buffer holds
//! compacted copies (bounded by `shuffle_bytes`), not slices of parts, so a
//! long-lived buffered sample never pins an 8 MiB part.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use tokio::sync::mpsc;

use crate::batch::{Batch, batch_bytes, collate, collate_in};
use crate::fetch::{FetchEngine, PartEvent, PartPool, spawn_shard_stream};
use crate::index::{IndexCache, ShardIndex};
use crate::order::reshard::{PlanItem, Progress};
use crate::order::{Even, OrderConfig, RunEntry, RunPlan, ShuffleBuffer, stream_rng};
use crate::shard::{Sample, ShardParser};
use crate::source::{Dataset, ShardRef};
use crate::{Error, Result};

/// The most samples a batch may hold: 2^20, far beyond any training batch,
/// and small enough that the per-batch sample lists stay small (2^31, as
/// a hostile client asked, aborted the daemon allocating 120 GB).
pub const MAX_BATCH_SAMPLES: usize = 1 << 20;

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub order: OrderConfig,
    /// How many epochs to run, starting at `order.epoch`.
    pub epochs: u64,
    /// 64 samples: a common training batch; the ring (later) sizes slots by it.
    pub batch_size: usize,
    /// Drop an epoch's last batch when it is short (as PyTorch's `drop_last`).
    pub drop_last: bool,
    /// 4 batches ready ahead of the consumer: enough to absorb jitter,
    /// little enough that a stop is quick.
    pub prefetch_batches: usize,
    /// 256 MiB: the byte cap of the sample shuffle buffer.
    pub shuffle_bytes: u64,
    /// Fields (extensions) to deliver; empty: all.
    pub fields: Vec<String>,
    /// Batches of the first epoch that are built but not delivered: an
    /// exact resume replays the epoch's order up to here (see
    /// `serve::resume_token`).
    pub skip_batches: u64,
    /// The first epoch's plan when it is not the rank's stride of the
    /// shards: its share of the work other ranks left (`order::reshard`).
    pub plan: Option<Vec<PlanItem>>,
    /// Hand each batch the stream's [`Progress`] after it (costs a pass
    /// over the shuffle buffer per batch; the daemon's resume tokens).
    pub track_progress: bool,
    /// Split each epoch among ranks by samples, from every shard's index
    /// (`order::even_plan`), instead of by whole shards.
    pub split: Option<SampleSplit>,
    /// Where shards read whole are indexed as a by-product.
    pub index_cache: Option<Arc<IndexCache>>,
    /// Resume the first epoch by seeking (see [`Resume`]) instead of
    /// replaying `skip_batches`.
    pub resume: Option<Resume>,
}

/// Where a stream stood after a batch, enough to go on from there without
/// replaying its epoch: the samples it held (fetched again, each alone
/// where an index says where it is), the shuffle buffer's random state,
/// and the read position (fetching goes on from there; a plain tar with
/// an index is entered at the sample).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Plan item and sample ordinal to read from.
    pub item: u32,
    pub ordinal: u32,
    /// (shard, ordinal): the first `rest` wait for a batch, the others
    /// are the shuffle buffer's, in slot order.
    pub held: Vec<(u32, u32)>,
    pub rest: u32,
    pub rng_word_pos: Option<u128>,
    /// Batches of the epoch already delivered (the next one's index).
    pub batches: u64,
}

/// An epoch split by samples: the dataset's index (one per shard, in its
/// order) and what to do with a remainder.
#[derive(Debug, Clone)]
pub struct SampleSplit {
    pub index: Arc<[Arc<ShardIndex>]>,
    pub even: Even,
}

impl SampleSplit {
    pub fn counts(&self) -> Arc<[u32]> {
        self.index.iter().map(|i| i.count()).collect()
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            order: OrderConfig::default(),
            epochs: 1,
            batch_size: 64,
            drop_last: false,
            prefetch_batches: 4,
            shuffle_bytes: 256 << 20,
            fields: Vec::new(),
            skip_batches: 0,
            plan: None,
            track_progress: false,
            split: None,
            index_cache: None,
            resume: None,
        }
    }
}

impl PipelineConfig {
    /// Checks the settings before anything starts.
    pub fn validate(&self) -> Result<()> {
        self.order.validate()?;
        check_batch_size(self.batch_size as u64)
    }
}

/// Whether `n` samples make a batch we accept (see [`MAX_BATCH_SAMPLES`]);
/// `bench` and the daemon's requests are checked here.
pub fn check_batch_size(n: u64) -> Result<()> {
    if n == 0 || n > MAX_BATCH_SAMPLES as u64 {
        return Err(Error::Config(format!(
            "the batch size (--batch-size, batch_size) must be between 1 and \
             {MAX_BATCH_SAMPLES}, not {n}"
        )));
    }
    Ok(())
}

/// Counters of one pipeline run.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub shards_done: AtomicU64,
    pub samples_parsed: AtomicU64,
    /// Samples left out by `drop_last`.
    pub samples_dropped: AtomicU64,
}

/// Messages from the parse thread to the batch thread.
enum SampleMsg {
    Sample {
        epoch: u64,
        tag: Tag,
        sample: Sample,
    },
    /// A resumed stream's held sample, fetched again.
    Restored {
        tag: Tag,
        sample: Sample,
    },
    EpochEnd {
        epoch: u64,
    },
    Failed(Error),
}

/// Which sample this is: its epoch plan item, shard and ordinal there.
#[derive(Debug, Clone, Copy)]
struct Tag {
    item: u32,
    shard: u32,
    ordinal: u32,
}

/// Where the batch thread collates a batch: a fresh buffer ([`VecWriter`])
/// or a slot of a session's shared-memory ring (the daemon).
pub trait BatchWriter: Send + 'static {
    type Out: Send + 'static;
    /// Collates `samples` as batch `index` of `epoch`, waiting for room if
    /// the writer has none; `Ok(None)` when the writer was closed (stop).
    /// `progress` is the stream's after this batch (with `track_progress`).
    fn write(
        &mut self,
        samples: &[Sample],
        epoch: u64,
        index: u64,
        progress: Option<Progress>,
    ) -> Result<Option<Self::Out>>;
}

/// Collates each batch into its own `Vec` (benchmarks, tests, in-process
/// use): a buffer the consumer recycled ([`Pipeline::recycle`]; initialised
/// already, so written in parallel), else a new one written front to back
/// (a parallel write would need it zeroed first: a whole extra pass).
#[derive(Debug, Clone)]
pub struct VecWriter {
    recycled: Arc<PartPool>,
}

/// Recycled batch buffers kept at most: the batches in flight between the
/// batch thread and a consumer that recycles (the ready queue and a few).
const RECYCLED_BYTES: u64 = 256 << 20;

impl Default for VecWriter {
    fn default() -> Self {
        VecWriter { recycled: PartPool::new(RECYCLED_BYTES) }
    }
}

impl BatchWriter for VecWriter {
    type Out = Batch;
    fn write(
        &mut self,
        samples: &[Sample],
        epoch: u64,
        index: u64,
        _progress: Option<Progress>,
    ) -> Result<Option<Batch>> {
        Ok(Some(match self.recycled.try_take_room(batch_bytes(samples) as usize) {
            Some(buf) => collate_in(buf, samples, epoch, index),
            None => collate(samples, epoch, index),
        }))
    }
}

/// A running pipeline; iterate with [`Pipeline::next`].
#[derive(Debug)]
pub struct Pipeline<B = Batch> {
    batches: mpsc::Receiver<Result<B>>,
    demand: Arc<crate::fetch::DemandGauge>,
    pub stats: Arc<PipelineStats>,
    /// Where [`Pipeline::recycle`] puts buffers (the `Vec` writer's).
    recycled: Option<Arc<PartPool>>,
}

/// Samples queued between parsing and batching.
const SAMPLE_QUEUE: usize = 256;

impl Pipeline<Batch> {
    /// Starts the stages, each batch in its own buffer. Must be called
    /// inside a tokio runtime (the fetch scheduler runs on it).
    pub fn start(
        dataset: &Dataset,
        engine: Arc<FetchEngine>,
        cfg: PipelineConfig,
    ) -> Result<Pipeline<Batch>> {
        let writer = VecWriter::default();
        let recycled = writer.recycled.clone();
        let mut pipeline = Pipeline::start_with(dataset, engine, cfg, writer)?;
        pipeline.recycled = Some(recycled);
        Ok(pipeline)
    }

    /// Batches written into a recycled buffer so far.
    pub fn recycled_reuses(&self) -> u64 {
        self.recycled.as_ref().map_or(0, |r| r.reused.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Hands a consumed batch's buffer back for a later batch: no
    /// allocation, and a parallel copy into it.
    pub fn recycle(&self, batch: Batch) {
        if let Some(recycled) = &self.recycled {
            // As long as its batch (initialised); a later, larger batch
            // zeroes only what it needs past that (`collate_in`), not the
            // whole spare capacity every time (1.3% of a loopback pass's
            // CPU did).
            recycled.give(batch.buf);
        }
    }
}

impl<B: Send + 'static> Pipeline<B> {
    /// Starts the stages, collating through `writer`.
    pub fn start_with<W: BatchWriter<Out = B>>(
        dataset: &Dataset,
        engine: Arc<FetchEngine>,
        cfg: PipelineConfig,
        writer: W,
    ) -> Result<Pipeline<B>> {
        cfg.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Internal("Pipeline::start needs a tokio runtime".into()));
        }
        if let Some(bad) =
            cfg.plan.iter().flatten().find(|i| i.shard as usize >= dataset.shards.len())
        {
            return Err(Error::Config(format!(
                "the plan names shard {} of a dataset of {}",
                bad.shard,
                dataset.shards.len()
            )));
        }
        if let Some(split) = &cfg.split
            && split.index.len() != dataset.shards.len()
        {
            return Err(Error::Internal("the index does not cover the dataset".into()));
        }
        // Drawn lazily by the fetch scheduler: one epoch's order at a time.
        let shards = dataset.shards.clone();
        let mut plan = RunPlan::new(&cfg.order, shards.len(), cfg.epochs, cfg.plan.clone());
        if let Some(split) = &cfg.split {
            plan = plan.by_samples(split.counts(), split.even);
        }
        if let Some(r) = &cfg.resume {
            plan = plan.starting_at(r.item, r.ordinal);
        }
        // A shard read in part is entered at its sample when an index says
        // where: the split's, else (resuming) a fresh one in the cache.
        let split_index = cfg.split.as_ref().map(|s| s.index.clone());
        let cache = cfg.resume.as_ref().and(cfg.index_cache.clone());
        let index_of = move |shard: &ShardRef, s: u32| -> Option<Arc<ShardIndex>> {
            if let Some(ix) = &split_index {
                return ix.get(s as usize).cloned();
            }
            match cache.as_ref()?.load(&shard.url, shard.e_tag.as_deref(), shard.size?) {
                crate::index::Lookup::Fresh(ix) => Some(ix),
                _ => None,
            }
        };
        let restore = restore_reads(&cfg, &dataset.shards, &index_of);
        let plan = plan.filter_map(move |entry| {
            let shard = shards[entry.shard as usize].clone();
            let partial = entry.filter != crate::order::reshard::SampleFilter::ALL;
            let shard_index = if partial { index_of(&shard, entry.shard) } else { None };
            let (read, bytes) = EntryRead::of(entry, shard_index.as_ref())?;
            Some((read, shard, bytes))
        });
        let plan = restore.into_iter().chain(plan);
        let budget = engine.budget.total_bytes();
        let demand = engine.demand.clone();
        let events = spawn_shard_stream(engine, plan);
        let (sample_tx, sample_rx) = sync_channel(SAMPLE_QUEUE);
        let (batch_tx, batches) = mpsc::channel(cfg.prefetch_batches.max(1));
        let stats = Arc::new(PipelineStats::default());
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Internal(format!("spawning {name}: {e}")))
        };
        let parse_stats = stats.clone();
        let indexing = Indexing {
            planned: cfg.split.as_ref().map(|s| s.index.clone()),
            cache: cfg.index_cache.clone(),
        };
        spawn(
            "stoker-parse",
            Box::new(move || parse_loop(events, sample_tx, budget / 4, &parse_stats, indexing)),
        )?;
        let batch_stats = stats.clone();
        let batched = demand.clone();
        spawn(
            "stoker-batch",
            Box::new(move || {
                let out = BatchOut { tx: batch_tx, demand: batched };
                batch_loop(sample_rx, out, cfg, budget, writer, &batch_stats)
            }),
        )?;
        Ok(Pipeline { batches, demand, stats, recycled: None })
    }

    /// The next batch; `None` when every epoch is done or after an error.
    pub async fn next(&mut self) -> Option<Result<B>> {
        // How full the ready queue was, and how long we waited: the
        // autotuner's view of demand.
        let fill = self.batches.len() as f64 / self.batches.max_capacity().max(1) as f64;
        let asked = std::time::Instant::now();
        let batch = self.batches.recv().await;
        self.demand.record(fill, asked.elapsed());
        batch
    }
}

/// The reads that fetch a resumed stream's held samples again, ahead of
/// its plan: per shard, the runs of consecutive ordinals (each entered at
/// its first sample when an index says where), else the shard whole.
fn restore_reads(
    cfg: &PipelineConfig,
    shards: &[Arc<ShardRef>],
    index_of: &dyn Fn(&ShardRef, u32) -> Option<Arc<ShardIndex>>,
) -> Vec<crate::fetch::ShardRead<EntryRead>> {
    use crate::order::reshard::SampleFilter;
    let Some(resume) = &cfg.resume else {
        return Vec::new();
    };
    let mut by_shard: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for &(shard, ordinal) in &resume.held {
        by_shard.entry(shard).or_default().push(ordinal);
    }
    let mut reads = Vec::new();
    for (s, mut ordinals) in by_shard {
        let Some(shard) = shards.get(s as usize) else {
            continue;
        };
        ordinals.sort_unstable();
        ordinals.dedup();
        let index = index_of(shard, s).filter(|ix| ix.seekable());
        let filters: Vec<SampleFilter> = match &index {
            Some(_) => {
                let mut runs: Vec<(u32, u32)> = Vec::new();
                for o in ordinals {
                    match runs.last_mut() {
                        Some((_, end)) if *end == o => *end = o + 1,
                        _ => runs.push((o, o + 1)),
                    }
                }
                runs.into_iter().map(|(a, b)| SampleFilter::range(a, b)).collect()
            }
            None => vec![SampleFilter { from: u32::MAX, only: ordinals, to: u32::MAX }],
        };
        for filter in filters {
            let entry = RunEntry { epoch: cfg.order.epoch, item: u32::MAX, shard: s, filter };
            if let Some((mut read, bytes)) = EntryRead::of(entry, index.as_ref()) {
                read.restore = true;
                reads.push((read, shard.clone(), bytes));
            }
        }
    }
    reads
}

/// How a plan entry is read: whole (and indexed as it goes), or, for a
/// plain tar with an index, only the bytes of its range of samples: from
/// its first sample's start to the next range's (the index's offsets).
#[derive(Debug)]
struct EntryRead {
    entry: RunEntry,
    /// Ordinal of the first sample the bytes hold.
    first_ordinal: u32,
    /// The ordinal the bytes stop before, when they stop before the end.
    stops_at: Option<u32>,
    whole: bool,
    /// Fetches a resumed stream's held samples again.
    restore: bool,
}

impl EntryRead {
    /// `None` when the index says the entry selects nothing (a resume
    /// that had read its last sample): nothing to read.
    fn of(
        entry: RunEntry,
        index: Option<&Arc<ShardIndex>>,
    ) -> Option<(EntryRead, Option<std::ops::Range<u64>>)> {
        let f = &entry.filter;
        if let Some(ix) = index.filter(|ix| ix.seekable() && f.only.is_empty()) {
            let count = ix.count();
            let (from, to) = (f.from.min(count), f.to.min(count));
            if from >= to {
                return None;
            }
            if from > 0 || to < count {
                let at = |ordinal: u32| ix.starts.get(ordinal as usize).copied();
                let start = at(from).unwrap_or(ix.size);
                let end = if to < count { at(to).unwrap_or(u64::MAX) } else { u64::MAX };
                let stops_at = (to < count).then_some(to);
                let read = EntryRead {
                    entry,
                    first_ordinal: from,
                    stops_at,
                    whole: false,
                    restore: false,
                };
                return Some((read, Some(start..end)));
            }
        }
        let read =
            EntryRead { entry, first_ordinal: 0, stops_at: None, whole: true, restore: false };
        Some((read, None))
    }
}

/// The parse thread's view of the index: the one the plan came from (each
/// shard read is checked against it) and where to record new ones.
struct Indexing {
    planned: Option<Arc<[Arc<ShardIndex>]>>,
    cache: Option<Arc<IndexCache>>,
}

/// A shard being read whole, indexed as it is parsed.
struct Recording {
    url: String,
    e_tag: Option<Arc<str>>,
    size: u64,
    starts: Vec<u64>,
}

impl Indexing {
    /// Whether the shard that starts is the version the plan was made
    /// from (when it was made from an index).
    fn check_start(&self, shard: u32, url: &str, e_tag: Option<&str>, size: u64) -> Result<()> {
        let Some(index) = self.planned.as_ref().and_then(|p| p.get(shard as usize)) else {
            return Ok(());
        };
        index
            .matches(url, e_tag, size)
            .map_err(|e| Error::IndexMismatch { shard: url.to_string(), detail: e.to_string() })
    }

    /// At a shard's clean end (`end`: the ordinal after its last sample
    /// read): where it ended against the plan's index, and the new index
    /// saved.
    fn finish(
        &self,
        shard: u32,
        rec: Option<Recording>,
        compressed: bool,
        end: u64,
        stops_at: Option<u32>,
    ) -> Result<()> {
        if let Some(index) = self.planned.as_ref().and_then(|p| p.get(shard as usize)) {
            let want = stops_at.unwrap_or(index.count());
            if u64::from(want) != end {
                return Err(Error::IndexMismatch {
                    shard: index.url.clone(),
                    detail: format!("its samples end at {end}, the index says at {want}"),
                });
            }
        }
        if let (Some(cache), Some(rec)) = (&self.cache, rec) {
            let index =
                ShardIndex::new(&rec.url, rec.e_tag.as_deref(), rec.size, compressed, rec.starts);
            if let Err(e) = cache.save(index) {
                tracing::warn!(dir = %cache.dir().display(), error = %e, "Index not saved.");
            }
        }
        Ok(())
    }
}

fn parse_loop(
    mut events: mpsc::Receiver<PartEvent<EntryRead>>,
    tx: SyncSender<SampleMsg>,
    max_member_bytes: u64,
    stats: &PipelineStats,
    indexing: Indexing,
) {
    // The shard being parsed; the plan entry of the last shard started (its
    // samples may complete at its end) and its next sample ordinal.
    let mut parser: Option<ShardParser> = None;
    let mut current: Option<EntryRead> = None;
    let mut recording: Option<Recording> = None;
    let mut ordinal = 0u32;
    let mut last_epoch: Option<u64> = None;
    let mut out = Vec::new();
    let fail = |e: Error| {
        let _ = tx.send(SampleMsg::Failed(e));
    };
    while let Some(event) = events.blocking_recv() {
        let result: Result<()> = match event {
            PartEvent::ShardStart { tag, shard, size, e_tag, span } => {
                let epoch = tag.entry.epoch;
                ordinal = tag.first_ordinal;
                let url = shard.url.as_str();
                if let Err(e) = indexing.check_start(tag.entry.shard, url, e_tag.as_deref(), size) {
                    return fail(e);
                }
                // Read from its first byte to its last: index it.
                recording = tag.whole.then(|| Recording {
                    url: shard.url.clone(),
                    e_tag,
                    size,
                    starts: Vec::new(),
                });
                if let Some(prev) = last_epoch.filter(|&e| e != epoch)
                    && tx.send(SampleMsg::EpochEnd { epoch: prev }).is_err()
                {
                    return;
                }
                last_epoch = Some(epoch);
                parser = Some(if tag.whole {
                    ShardParser::new(url.into(), max_member_bytes)
                } else {
                    let early = tag.stops_at.is_some();
                    ShardParser::plain_tar_from(url.into(), max_member_bytes, span.start, early)
                });
                current = Some(tag);
                Ok(())
            }
            PartEvent::Part { data, .. } => match (data.blocking_recv(), parser.as_mut()) {
                (Ok(Ok(part)), Some(p)) => part
                    .into_chunks()
                    .into_iter()
                    .try_for_each(|chunk| p.push(chunk, &mut out))
                    .map_err(Error::from),
                (Ok(Err(e)), _) => Err(e.into()),
                (Err(_), _) => Err(Error::Internal("a fetch task ended without a result".into())),
                (_, None) => Err(Error::Internal("a part arrived outside a shard".into())),
            },
            PartEvent::ShardEnd => match (parser.take(), current.as_ref()) {
                (Some(p), Some(read)) => {
                    let compressed = p.compressed();
                    p.finish(&mut out).map_err(Error::from).and_then(|_| {
                        let rec = recording.take().map(|mut rec| {
                            rec.starts.extend(out.iter().map(|s| s.offset));
                            rec
                        });
                        let end = u64::from(ordinal) + out.len() as u64;
                        stats.shards_done.fetch_add(1, Ordering::Relaxed);
                        indexing.finish(read.entry.shard, rec, compressed, end, read.stops_at)
                    })
                }
                _ => Err(Error::Internal("a shard ended that never started".into())),
            },
            PartEvent::Failed(e) => Err(e.into()),
        };
        if let Err(e) = result {
            return fail(e);
        }
        stats.samples_parsed.fetch_add(out.len() as u64, Ordering::Relaxed);
        if let Some(rec) = recording.as_mut() {
            rec.starts.extend(out.iter().map(|s| s.offset));
        }
        let Some(read) = current.as_ref() else {
            out.clear();
            continue;
        };
        let entry = &read.entry;
        for sample in out.drain(..) {
            let tag = Tag { item: entry.item, shard: entry.shard, ordinal };
            ordinal += 1;
            if !entry.filter.selects(tag.ordinal) {
                continue;
            }
            let msg = if read.restore {
                SampleMsg::Restored { tag, sample }
            } else {
                SampleMsg::Sample { epoch: entry.epoch, tag, sample }
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    }
    if let Some(epoch) = last_epoch {
        let _ = tx.send(SampleMsg::EpochEnd { epoch });
    }
}

/// Batch-building state for one epoch.
struct EpochBatcher {
    epoch: u64,
    index: u64,
    pending: Vec<Sample>,
    pending_bytes: u64,
    shuffle: Option<ShuffleBuffer<(Tag, Sample)>>,
    /// The last sample read: plan item and ordinal + 1.
    read: Option<(u32, u32)>,
}

impl EpochBatcher {
    /// The stream's progress once the pending batch is delivered; `rest`:
    /// samples out of the shuffle buffer not yet in a batch.
    fn progress(&self, rest: &[(Tag, Sample)]) -> Progress {
        let (item, next_ordinal) = self.read.unwrap_or((0, 0));
        let buffered = self.shuffle.iter().flat_map(|b| b.iter());
        let leftovers = rest.iter().chain(buffered).map(|(t, _)| (t.shard, t.ordinal)).collect();
        let rng_word_pos = self.shuffle.as_ref().map(ShuffleBuffer::word_pos);
        Progress { item, next_ordinal, leftovers, rest: rest.len() as u32, rng_word_pos }
    }
}

/// Where the batch thread sends batches, and where it counts their bytes
/// for the autotuner (what a consumer whose queue is full takes).
struct BatchOut<B> {
    tx: mpsc::Sender<Result<B>>,
    demand: Arc<crate::fetch::DemandGauge>,
}

fn batch_loop<W: BatchWriter>(
    rx: Receiver<SampleMsg>,
    out: BatchOut<W::Out>,
    cfg: PipelineConfig,
    budget: u64,
    mut writer: W,
    stats: &PipelineStats,
) {
    let BatchOut { tx, demand } = out;
    let first_epoch = cfg.order.epoch;
    let new_epoch = |epoch: u64| EpochBatcher {
        epoch,
        index: 0,
        // Grows with what arrives: a batch's samples are also bounded by
        // the memory budget, long before `batch_size` where samples are big.
        pending: Vec::with_capacity(cfg.batch_size.min(4096)),
        pending_bytes: 0,
        shuffle: (cfg.order.shuffle_buffer > 1).then(|| {
            let rng = stream_rng("samples", &[cfg.order.seed, epoch, cfg.order.rank as u64]);
            ShuffleBuffer::new(cfg.order.shuffle_buffer, cfg.shuffle_bytes, rng)
        }),
        read: None,
    };
    let mut state: Option<EpochBatcher> = None;
    let mut ready: Vec<(Tag, Sample)> = Vec::new();
    // A resumed stream starts where its token says: the held samples come
    // first (fetched again), then the shuffle buffer is put back as it was.
    let mut restoring: Option<Restoring> = None;
    if let Some(r) = &cfg.resume {
        let mut st = new_epoch(first_epoch);
        (st.index, st.read) = (r.batches, Some((r.item, r.ordinal)));
        let restore = Restoring::new(st, r);
        if r.held.is_empty() {
            match restore.install(r, &mut ready) {
                Ok(st) => state = Some(st),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        } else {
            restoring = Some(restore);
        }
    }
    // Sends a full or final batch; false when the consumer is gone. The
    // first `skip_batches` of a resumed run are built (the order depends
    // on them) but not collated.
    let mut send = |st: &mut EpochBatcher, rest: &[(Tag, Sample)]| -> bool {
        let skip = st.epoch == first_epoch && st.index < cfg.skip_batches;
        let out = if skip {
            Ok(None)
        } else {
            let progress = cfg.track_progress.then(|| st.progress(rest));
            writer.write(&st.pending, st.epoch, st.index, progress)
        };
        st.index += 1;
        st.pending.clear();
        let bytes = std::mem::take(&mut st.pending_bytes);
        match out {
            Ok(Some(batch)) => {
                demand.batched(bytes as u64);
                tx.blocking_send(Ok(batch)).is_ok()
            }
            Ok(None) => skip,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                false
            }
        }
    };
    let unrestored = || {
        Error::Config(
            "the resume state names samples its shards do not have (did a shard change?): \
             start the epoch again without it"
                .into(),
        )
    };
    for msg in rx {
        if restoring.is_some() && !matches!(msg, SampleMsg::Restored { .. } | SampleMsg::Failed(_))
        {
            let _ = tx.blocking_send(Err(unrestored()));
            return;
        }
        match msg {
            SampleMsg::Restored { tag, sample } => {
                let Some(mut restore) = restoring.take() else {
                    continue;
                };
                if restore.put(tag, keep_fields(sample, &cfg.fields)) {
                    restoring = Some(restore);
                    continue;
                }
                let Some(r) = &cfg.resume else { continue };
                let mut st = match restore.install(r, &mut ready) {
                    Ok(st) => st,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                // The samples that waited for a batch go on to one.
                let mut out = ready.drain(..);
                while let Some((_, sample)) = out.next() {
                    st.pending_bytes += sample.nbytes();
                    st.pending.push(sample);
                    if st.pending.len() == cfg.batch_size && !send(&mut st, out.as_slice()) {
                        return;
                    }
                }
                drop(out);
                state = Some(st);
            }
            SampleMsg::Sample { epoch, tag, sample } => {
                let st = match &mut state {
                    Some(st) if st.epoch == epoch => st,
                    _ => state.insert(new_epoch(epoch)),
                };
                st.read = Some((tag.item, tag.ordinal + 1));
                let sample = keep_fields(sample, &cfg.fields);
                match &mut st.shuffle {
                    Some(buffer) => {
                        let n = sample.nbytes();
                        buffer.push((tag, sample.compacted()), n, &mut ready);
                    }
                    None => ready.push((tag, sample)),
                }
                let mut out = ready.drain(..);
                while let Some((_, sample)) = out.next() {
                    st.pending_bytes += sample.nbytes();
                    st.pending.push(sample);
                    if st.pending.len() == cfg.batch_size && !send(st, out.as_slice()) {
                        return;
                    }
                }
                drop(out);
                if st.pending_bytes > budget / 2 {
                    let _ = tx.blocking_send(Err(Error::OverBudget {
                        what: format!("a batch of {} samples ({} bytes so far)", cfg.batch_size, st.pending_bytes),
                        budget_bytes: budget,
                        hint: "a batch may use at most half of it; raise --memory-budget or lower --batch-size",
                    }));
                    return;
                }
            }
            SampleMsg::EpochEnd { epoch } => {
                let Some(mut st) = state.take().filter(|st| st.epoch == epoch) else {
                    continue;
                };
                if let Some(buffer) = &mut st.shuffle {
                    buffer.drain(&mut ready);
                }
                let mut out = ready.drain(..);
                while let Some((_, sample)) = out.next() {
                    st.pending.push(sample);
                    if st.pending.len() == cfg.batch_size && !send(&mut st, out.as_slice()) {
                        return;
                    }
                }
                drop(out);
                if !st.pending.is_empty() {
                    if cfg.drop_last {
                        stats.samples_dropped.fetch_add(st.pending.len() as u64, Ordering::Relaxed);
                    } else if !send(&mut st, &[]) {
                        return;
                    }
                }
            }
            SampleMsg::Failed(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// A resumed stream's held samples as they arrive, and the epoch's state
/// to put them into.
struct Restoring {
    st: EpochBatcher,
    /// Where each (shard, ordinal) goes in `got` (a padded rank can hold
    /// one sample twice).
    slots: std::collections::HashMap<(u32, u32), Vec<usize>>,
    got: Vec<Option<(Tag, Sample)>>,
    left: usize,
}

impl Restoring {
    fn new(st: EpochBatcher, r: &Resume) -> Restoring {
        let mut slots: std::collections::HashMap<(u32, u32), Vec<usize>> = Default::default();
        for (i, &key) in r.held.iter().enumerate() {
            slots.entry(key).or_default().push(i);
        }
        Restoring { st, slots, got: vec![None; r.held.len()], left: r.held.len() }
    }

    /// Takes a sample; false once every held sample is here.
    fn put(&mut self, tag: Tag, sample: Sample) -> bool {
        let tag = Tag { item: 0, ..tag };
        for &i in self.slots.get(&(tag.shard, tag.ordinal)).into_iter().flatten() {
            if let Some(slot) = self.got.get_mut(i).filter(|s| s.is_none()) {
                *slot = Some((tag, sample.clone()));
                self.left -= 1;
            }
        }
        self.left > 0
    }

    /// The epoch's state with its shuffle buffer as it was; the samples
    /// that waited for a batch go to `ready`.
    fn install(self, r: &Resume, ready: &mut Vec<(Tag, Sample)>) -> Result<EpochBatcher> {
        let mut st = self.st;
        let held: Vec<(Tag, Sample)> = self.got.into_iter().flatten().collect();
        let rest = (r.rest as usize).min(held.len());
        let mut held = held.into_iter();
        ready.extend(held.by_ref().take(rest));
        let buffered: Vec<((Tag, Sample), u64)> = held
            .map(|(t, s)| {
                let n = s.nbytes();
                ((t, s.compacted()), n)
            })
            .collect();
        match (&mut st.shuffle, r.rng_word_pos) {
            (Some(buffer), Some(pos)) => buffer.restore(buffered, pos),
            (None, _) if buffered.is_empty() => {}
            _ => {
                return Err(Error::Config(
                    "the resume state's shuffle buffer does not fit the stream's settings".into(),
                ));
            }
        }
        Ok(st)
    }
}

/// The sample with only the `wanted` fields (all when empty).
fn keep_fields(mut sample: Sample, wanted: &[String]) -> Sample {
    if !wanted.is_empty() {
        sample.fields.retain(|(name, _)| wanted.iter().any(|w| w == name));
    }
    sample
}
