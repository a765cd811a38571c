//! Resuming by seeking, against a real S3-protocol server: a stream
//! resumed from the progress after batch k delivers exactly what the
//! uninterrupted one delivered after it, byte for byte, while fetching only
//! what it had not delivered (the held samples again, alone, and the rest
//! of the epoch from the read position), not the epoch up to k again.

use crate::support;

use std::sync::atomic::Ordering;

use stoker::batch::Batch;
use stoker::fetch::FetchEngine;
use stoker::index::{IndexCache, ensure_index};
use stoker::order::OrderConfig;
use stoker::order::reshard::Progress;
use stoker::pipeline::{BatchWriter, Pipeline, PipelineConfig, Resume, VecWriter};
use stoker::shard::Sample;
use stoker::source::Dataset;
use support::*;

/// Batches with the progress after each.
#[derive(Default)]
struct Tracking(VecWriter);

impl BatchWriter for Tracking {
    type Out = (Batch, Progress);
    fn write(
        &mut self,
        samples: &[Sample],
        epoch: u64,
        index: u64,
        progress: Option<Progress>,
    ) -> stoker::Result<Option<(Batch, Progress)>> {
        let batch = self.0.write(samples, epoch, index, None)?;
        Ok(batch.map(|b| (b, progress.unwrap_or_default())))
    }
}

async fn run(dataset: &Dataset, cfg: PipelineConfig) -> (Vec<(Batch, Progress)>, u64) {
    let engine = FetchEngine::new(dataset.store.clone(), small_fetch());
    let mut p =
        Pipeline::start_with(dataset, engine.clone(), cfg, Tracking::default()).expect("pipeline");
    let mut out = Vec::new();
    while let Some(b) = p.next().await {
        out.push(b.expect("batch"));
    }
    (out, engine.stats.bytes.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stream_continues_byte_for_byte_and_fetches_only_what_is_left() {
    let server = S3Server::start().await;
    server.bucket("data");
    let synth = small_synth(6, false);
    server.write_synth("s3://data/seek/", &synth).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = IndexCache::at(dir.path());
    let dataset = Dataset::open("s3://data/seek/", &server.options()).await.expect("dataset");
    let engine = FetchEngine::new(dataset.store.clone(), small_fetch());
    let (index, _) = ensure_index(&dataset, &engine, &cache, false).await.expect("index");
    let cfg = PipelineConfig {
        order: OrderConfig { seed: 11, shuffle_buffer: 24, ..OrderConfig::default() },
        batch_size: 4,
        track_progress: true,
        index_cache: Some(cache.clone()),
        ..PipelineConfig::default()
    };
    let (full, full_bytes) = run(&dataset, cfg.clone()).await;
    assert!(full.len() > 20, "{} batches", full.len());
    let order = stoker::order::plan_shards(dataset.shards.len(), 0, &cfg.order);
    for share in [0.1, 0.5, 0.9] {
        let k = ((full.len() as f64 * share) as usize).max(1);
        let p = &full[k - 1].1;
        let resume = Resume {
            item: p.item,
            ordinal: p.next_ordinal,
            held: p.leftovers.clone(),
            rest: p.rest,
            rng_word_pos: p.rng_word_pos,
            batches: k as u64,
        };
        assert!(!resume.held.is_empty(), "a shuffle buffer holds samples at {share}");
        let rcfg = PipelineConfig { resume: Some(resume.clone()), ..cfg.clone() };
        let (rest, fetched) = run(&dataset, rcfg).await;
        assert_eq!(rest.len(), full.len() - k, "at {share}");
        for ((a, _), (b, _)) in full[k..].iter().zip(&rest) {
            assert_eq!(a.index, b.index);
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "at {share}");
            assert!(a.buf == b.buf, "batch {} differs at {share}", a.index);
        }
        // What was left: the read item from its sample on, the items after
        // it, and each held sample (from its start to the next sample's).
        let ix = |i: usize| &index[order[i]];
        let (item, at) = (resume.item as usize, resume.ordinal as usize);
        let read_rest = ix(item).size - ix(item).starts.get(at).copied().unwrap_or(ix(item).size);
        let later: u64 = (item + 1..order.len()).map(|i| ix(i).size).sum();
        let held: u64 = resume
            .held
            .iter()
            .map(|&(s, o)| {
                let i = &index[s as usize];
                let end = i.starts.get(o as usize + 1).copied().unwrap_or(i.size);
                end - i.starts[o as usize]
            })
            .sum();
        let left = read_rest + later + held;
        eprintln!("at {share}: fetched {fetched} of a full {full_bytes}, {left} left");
        assert!(fetched as f64 <= 1.05 * left as f64, "at {share}: fetched {fetched}, left {left}");
        assert!(fetched < full_bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_state_naming_samples_a_shard_lacks_is_a_named_error() {
    let server = S3Server::start().await;
    server.bucket("data");
    let synth = small_synth(2, false);
    server.write_synth("s3://data/bad/", &synth).await;
    let dataset = Dataset::open("s3://data/bad/", &server.options()).await.expect("dataset");
    let cfg = PipelineConfig {
        order: OrderConfig { shuffle_buffer: 8, ..OrderConfig::default() },
        resume: Some(Resume {
            held: vec![(0, 1), (1, 100_000)],
            rng_word_pos: Some(0),
            ..Resume::default()
        }),
        ..PipelineConfig::default()
    };
    let engine = FetchEngine::new(dataset.store.clone(), small_fetch());
    let err = run_engine(&dataset, engine, cfg).await.expect_err("a sample that is not there");
    assert!(err.to_string().contains("resume state"), "{err}");
}
