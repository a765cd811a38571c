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

use crate::batch::{Batch, collate};
use crate::fetch::{FetchEngine, PartEvent, spawn_shard_stream};
use crate::order::{OrderConfig, ShuffleBuffer, plan_shards, stream_rng};
use crate::shard::{Sample, ShardParser};
use crate::source::Dataset;
use crate::{Error, Result};

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
    /// exact resume replays the epoch's order up to here (see `resume`).
    pub skip_batches: u64,
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
        }
    }
}

impl PipelineConfig {
    /// Checks the settings before anything starts.
    pub fn validate(&self) -> Result<()> {
        self.order.validate()?;
        if self.batch_size == 0 {
            return Err(Error::Config("--batch-size must be at least 1".into()));
        }
        Ok(())
    }
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
    Sample { epoch: u64, sample: Sample },
    EpochEnd { epoch: u64 },
    Failed(Error),
}

/// Where the batch thread collates a batch: a fresh buffer ([`VecWriter`])
/// or a slot of a session's shared-memory ring (the daemon).
pub trait BatchWriter: Send + 'static {
    type Out: Send + 'static;
    /// Collates `samples` as batch `index` of `epoch`, waiting for room if
    /// the writer has none; `Ok(None)` when the writer was closed (stop).
    fn write(&mut self, samples: &[Sample], epoch: u64, index: u64) -> Result<Option<Self::Out>>;
}

/// Collates each batch into its own `Vec` (benchmarks, tests, in-process use).
#[derive(Debug, Default, Clone, Copy)]
pub struct VecWriter;

impl BatchWriter for VecWriter {
    type Out = Batch;
    fn write(&mut self, samples: &[Sample], epoch: u64, index: u64) -> Result<Option<Batch>> {
        Ok(Some(collate(samples, epoch, index)))
    }
}

/// A running pipeline; iterate with [`Pipeline::next`].
#[derive(Debug)]
pub struct Pipeline<B = Batch> {
    batches: mpsc::Receiver<Result<B>>,
    demand: Arc<crate::fetch::DemandGauge>,
    pub stats: Arc<PipelineStats>,
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
        Pipeline::start_with(dataset, engine, cfg, VecWriter)
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
        let mut plan = Vec::new();
        let mut epoch_of = Vec::new();
        for epoch in cfg.order.epoch..cfg.order.epoch + cfg.epochs {
            for s in plan_shards(dataset.shards.len(), epoch, &cfg.order) {
                plan.push((plan.len(), dataset.shards[s].clone()));
                epoch_of.push(epoch);
            }
        }
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
        spawn(
            "stoker-parse",
            Box::new(move || parse_loop(events, epoch_of, sample_tx, budget / 4, &parse_stats)),
        )?;
        let batch_stats = stats.clone();
        spawn(
            "stoker-batch",
            Box::new(move || batch_loop(sample_rx, batch_tx, cfg, budget, writer, &batch_stats)),
        )?;
        Ok(Pipeline { batches, demand, stats })
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

fn parse_loop(
    mut events: mpsc::Receiver<PartEvent>,
    epoch_of: Vec<u64>,
    tx: SyncSender<SampleMsg>,
    max_member_bytes: u64,
    stats: &PipelineStats,
) {
    let mut parser: Option<(ShardParser, u64)> = None;
    let mut last_epoch: Option<u64> = None;
    let mut out = Vec::new();
    let fail = |e: Error| {
        let _ = tx.send(SampleMsg::Failed(e));
    };
    while let Some(event) = events.blocking_recv() {
        let result: Result<()> = match event {
            PartEvent::ShardStart { index, shard, .. } => {
                let epoch = epoch_of[index];
                if let Some(prev) = last_epoch.filter(|&e| e != epoch)
                    && tx.send(SampleMsg::EpochEnd { epoch: prev }).is_err()
                {
                    return;
                }
                last_epoch = Some(epoch);
                parser =
                    Some((ShardParser::new(shard.url.as_str().into(), max_member_bytes), epoch));
                Ok(())
            }
            PartEvent::Part { data, .. } => match (data.blocking_recv(), parser.as_mut()) {
                (Ok(Ok(bytes)), Some((p, _))) => p.push(bytes, &mut out).map_err(Error::from),
                (Ok(Err(e)), _) => Err(e.into()),
                (Err(_), _) => Err(Error::Internal("a fetch task ended without a result".into())),
                (_, None) => Err(Error::Internal("a part arrived outside a shard".into())),
            },
            PartEvent::ShardEnd { .. } => match parser.take() {
                Some((p, _)) => p.finish(&mut out).map(|_| ()).map_err(Error::from).inspect(|()| {
                    stats.shards_done.fetch_add(1, Ordering::Relaxed);
                }),
                None => Err(Error::Internal("a shard ended that never started".into())),
            },
            PartEvent::Failed(e) => Err(e.into()),
        };
        if let Err(e) = result {
            return fail(e);
        }
        let epoch = parser.as_ref().map(|(_, e)| *e).or(last_epoch).unwrap_or_default();
        stats.samples_parsed.fetch_add(out.len() as u64, Ordering::Relaxed);
        for sample in out.drain(..) {
            if tx.send(SampleMsg::Sample { epoch, sample }).is_err() {
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
    shuffle: Option<ShuffleBuffer<Sample>>,
}

fn batch_loop<W: BatchWriter>(
    rx: Receiver<SampleMsg>,
    tx: mpsc::Sender<Result<W::Out>>,
    cfg: PipelineConfig,
    budget: u64,
    mut writer: W,
    stats: &PipelineStats,
) {
    let first_epoch = cfg.order.epoch;
    let new_epoch = |epoch: u64| EpochBatcher {
        epoch,
        index: 0,
        pending: Vec::with_capacity(cfg.batch_size),
        pending_bytes: 0,
        shuffle: (cfg.order.shuffle_buffer > 1).then(|| {
            let rng = stream_rng("samples", &[cfg.order.seed, epoch, cfg.order.rank as u64]);
            ShuffleBuffer::new(cfg.order.shuffle_buffer, cfg.shuffle_bytes, rng)
        }),
    };
    let mut state: Option<EpochBatcher> = None;
    let mut ready = Vec::new();
    // Sends a full or final batch; false when the consumer is gone. The
    // first `skip_batches` of a resumed run are built (the order depends
    // on them) but not collated.
    let mut send = |st: &mut EpochBatcher| -> bool {
        let skip = st.epoch == first_epoch && st.index < cfg.skip_batches;
        let out = if skip { Ok(None) } else { writer.write(&st.pending, st.epoch, st.index) };
        st.index += 1;
        st.pending.clear();
        st.pending_bytes = 0;
        match out {
            Ok(Some(batch)) => tx.blocking_send(Ok(batch)).is_ok(),
            Ok(None) => skip,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                false
            }
        }
    };
    for msg in rx {
        match msg {
            SampleMsg::Sample { epoch, sample } => {
                let st = match &mut state {
                    Some(st) if st.epoch == epoch => st,
                    _ => state.insert(new_epoch(epoch)),
                };
                match &mut st.shuffle {
                    Some(buffer) => {
                        let sample = keep_fields(sample, &cfg.fields);
                        let n = sample.nbytes();
                        buffer.push(sample.compacted(), n, &mut ready);
                    }
                    None => ready.push(keep_fields(sample, &cfg.fields)),
                }
                for sample in ready.drain(..) {
                    st.pending_bytes += sample.nbytes();
                    st.pending.push(sample);
                    if st.pending.len() == cfg.batch_size && !send(st) {
                        return;
                    }
                }
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
                for sample in ready.drain(..) {
                    st.pending.push(sample);
                    if st.pending.len() == cfg.batch_size && !send(&mut st) {
                        return;
                    }
                }
                if !st.pending.is_empty() {
                    if cfg.drop_last {
                        stats.samples_dropped.fetch_add(st.pending.len() as u64, Ordering::Relaxed);
                    } else if !send(&mut st) {
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

/// The sample with only the `wanted` fields (all when empty).
fn keep_fields(mut sample: Sample, wanted: &[String]) -> Sample {
    if !wanted.is_empty() {
        sample.fields.retain(|(name, _)| wanted.iter().any(|w| w == name));
    }
    sample
}
