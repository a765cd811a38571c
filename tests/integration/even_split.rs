//! Epochs split by samples against a real S3-protocol server: every rank
//! the same number of samples (so of batches) at world sizes 2, 3, 7 and
//! more ranks than shards; each sample exactly once, or exactly the
//! declared drops and repeats; the index recorded as a by-product, checked
//! against each shard's version and rebuilt when it is not right.

use crate::support;

use std::collections::HashMap;
use stoker::fetch::FetchEngine;
use stoker::index::{IndexCache, ensure_index};
use stoker::order::{Even, OrderConfig, even_tally};
use stoker::pipeline::{PipelineConfig, SampleSplit};
use stoker::source::Dataset;
use support::*;

async fn indexed(server: &S3Server, url: &str, cache: &IndexCache) -> (Dataset, SampleSplit) {
    let dataset = Dataset::open(url, &server.options()).await.expect("dataset");
    let engine = FetchEngine::new(dataset.store.clone(), small_fetch());
    let (index, report) = ensure_index(&dataset, &engine, cache, false).await.expect("index");
    assert_eq!(report.shards, dataset.shards.len());
    (dataset, SampleSplit { index: index.into(), even: Even::None })
}

/// Runs every rank of `world` with `even`; checks the counts and returns
/// how often each key was delivered and the bytes fetched over all ranks.
async fn run_ranks(
    dataset: &Dataset,
    split: &SampleSplit,
    cfg: &stoker::synth::SynthConfig,
    world: usize,
    even: Even,
    shuffle_buffer: usize,
) -> (HashMap<String, u32>, u64) {
    let mut fetched = 0;
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut batches_per_rank = Vec::new();
    let split = SampleSplit { even, ..split.clone() };
    for rank in 0..world {
        let order = OrderConfig {
            seed: 5,
            rank,
            world_size: world,
            shuffle_buffer,
            ..OrderConfig::default()
        };
        let tally = even_tally(&split.counts(), &order, even);
        let pcfg = PipelineConfig {
            order,
            batch_size: 4,
            split: Some(split.clone()),
            ..PipelineConfig::default()
        };
        let engine = FetchEngine::new(dataset.store.clone(), small_fetch());
        let batches = run_engine(dataset, engine.clone(), pcfg).await.expect("pipeline");
        fetched += engine.stats.bytes.load(std::sync::atomic::Ordering::Relaxed);
        let keys = check_against_synth(&batches, cfg);
        assert_eq!(keys.len() as u64, tally.samples, "world {world} rank {rank} {even:?}");
        batches_per_rank.push(batches.len());
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
    }
    if even != Even::None {
        let first = batches_per_rank[0];
        assert!(
            batches_per_rank.iter().all(|&b| b == first),
            "world {world} {even:?}: batches per rank {batches_per_rank:?}"
        );
    }
    (seen, fetched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rank_the_same_steps_at_world_sizes_2_3_7_and_above_the_shard_count() {
    let server = S3Server::start().await;
    server.bucket("data");
    // 5 shards of unequal sample counts (sample sizes vary ±50%).
    let cfg = small_synth(5, false);
    server.write_synth("s3://data/even/", &cfg).await;
    let dir = tempfile::tempdir().expect("test setup");
    let cache = IndexCache::at(dir.path());
    let (dataset, split) = indexed(&server, "s3://data/even/", &cache).await;
    let all = all_keys(&cfg);
    let total = all.len() as u64;
    let counts: Vec<usize> = (0..cfg.shards).map(|s| cfg.samples_in_shard(s)).collect();
    assert!(counts.iter().any(|&c| c != counts[0]), "shards differ in samples: {counts:?}");
    assert_eq!(split.counts().iter().map(|&c| c as usize).collect::<Vec<_>>(), counts);
    // 12 ranks (e.g. 3 ranks × 4 workers) over 5 shards.
    for world in [2usize, 3, 7, 12] {
        for (even, shuffle) in [(Even::Drop, 0), (Even::Pad, 8), (Even::None, 0)] {
            let (seen, fetched) = run_ranks(&dataset, &split, &cfg, world, even, shuffle).await;
            let w = world as u64;
            // A rank reads its range's bytes only (the index's offsets):
            // split at samples, the shards' bytes are fetched once in all.
            let bytes: u64 = split.index.iter().map(|i| i.size).sum();
            match even {
                Even::None => assert_eq!(fetched, bytes, "world {world}: each byte once"),
                Even::Drop => assert!(fetched <= bytes, "world {world}: {fetched} > {bytes}"),
                Even::Pad => assert!(fetched < 2 * bytes, "world {world}: {fetched}"),
            }
            match even {
                Even::Drop => {
                    assert!(seen.values().all(|&n| n == 1), "drop: never twice");
                    assert_eq!(seen.len() as u64, w * (total / w), "drop: all but the remainder");
                }
                Even::Pad => {
                    assert_eq!(seen.len() as u64, total, "pad: every sample");
                    let repeats: u64 = seen.values().map(|&n| u64::from(n) - 1).sum();
                    assert_eq!(repeats, w * total.div_ceil(w) - total, "pad: exactly the padding");
                }
                Even::None => {
                    assert!(seen.values().all(|&n| n == 1));
                    assert_eq!(seen.len() as u64, total, "none: every sample once");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_dataset_splits_by_samples_too() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(3, true);
    server.write_synth("s3://data/zst/", &cfg).await;
    let dir = tempfile::tempdir().expect("test setup");
    let cache = IndexCache::at(dir.path());
    let (dataset, split) = indexed(&server, "s3://data/zst/", &cache).await;
    assert!(split.index.iter().all(|i| !i.seekable()));
    let (seen, _) = run_ranks(&dataset, &split, &cfg, 4, Even::Drop, 0).await;
    let total = all_keys(&cfg).len() as u64;
    assert_eq!(seen.len() as u64, 4 * (total / 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_records_the_index_and_a_changed_or_damaged_one_is_rebuilt() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(3, false);
    server.write_synth("s3://data/rec/", &cfg).await;
    let dir = tempfile::tempdir().expect("test setup");
    let cache = IndexCache::at(dir.path());
    // An ordinary run (no split) indexes every shard it reads whole.
    let pcfg = PipelineConfig { index_cache: Some(cache.clone()), ..PipelineConfig::default() };
    run_pipeline("s3://data/rec/", &server.options(), small_fetch(), pcfg).await.expect("run");
    let dataset = Dataset::open("s3://data/rec/", &server.options()).await.expect("test setup");
    let engine = FetchEngine::new(dataset.store.clone(), small_fetch());
    let fresh = IndexCache::at(dir.path());
    let (index, report) = ensure_index(&dataset, &engine, &fresh, false).await.expect("test setup");
    assert_eq!((report.cached, report.built), (3, 0), "{report:?}");
    for (s, i) in index.iter().enumerate() {
        assert_eq!(i.count() as usize, cfg.samples_in_shard(s));
    }
    let requests = engine.stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    // Shard 1 replaced by other content (another seed): its ETag changes.
    let other = stoker::synth::SynthConfig { seed: 7, ..cfg.clone() };
    server.write_synth("s3://data/other/", &other).await;
    let url1 = dataset.shards[1].url.clone();
    let other_url = url1.replace("/rec/", "/other/");
    let bytes = read_object(&server, &other_url).await;
    server.put(&url1, bytes).await;
    // Shard 2's index file damaged.
    std::fs::write(fresh.file_of(&dataset.shards[2].url), b"{\"v\":1,\"url\":")
        .expect("test setup");
    let dataset = Dataset::open("s3://data/rec/", &server.options()).await.expect("test setup");
    let again = IndexCache::at(dir.path());
    let (index, report) = ensure_index(&dataset, &engine, &again, false).await.expect("test setup");
    assert_eq!((report.cached, report.built, report.refused), (1, 2, 2), "{report:?}");
    assert_eq!(index[1].count() as usize, other.samples_in_shard(1));
    assert!(engine.stats.requests.load(std::sync::atomic::Ordering::Relaxed) > requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_changed_after_planning_is_a_named_error() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(2, false);
    server.write_synth("s3://data/late/", &cfg).await;
    let dir = tempfile::tempdir().expect("test setup");
    let cache = IndexCache::at(dir.path());
    // A pattern, not a listing: each shard's version comes from a HEAD as
    // it is read, and is checked against the index the plan came from.
    let url = "s3://data/late/shard-{000000..000001}.tar";
    let (dataset, split) = indexed(&server, url, &cache).await;
    // Both shards replaced after the plan was made from the index.
    let other = stoker::synth::SynthConfig { seed: 99, ..cfg.clone() };
    server.write_synth("s3://data/late/", &other).await;
    let pcfg = PipelineConfig {
        order: OrderConfig { world_size: 2, ..OrderConfig::default() },
        split: Some(SampleSplit { even: Even::Drop, ..split }),
        ..PipelineConfig::default()
    };
    let err = run_dataset(&dataset, small_fetch(), pcfg).await.expect_err("a changed shard");
    let text = err.to_string();
    assert_eq!(err.kind(), stoker::ErrorKind::CorruptInput, "{text}");
    assert!(matches!(err, stoker::Error::IndexMismatch { .. }), "{text}");
    assert!(text.contains("changed after"), "{text}");
}

async fn read_object(server: &S3Server, url: &str) -> Vec<u8> {
    let u = stoker::source::DatasetUrl::parse(url).expect("test setup");
    let store = stoker::source::open_store(&u, &server.options()).expect("test setup");
    let path = object_store::path::Path::from(u.key.as_str());
    use object_store::ObjectStoreExt;
    store.get(&path).await.expect("test setup").bytes().await.expect("test setup").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexing_a_pattern_of_missing_shards_stops_at_the_first() {
    let server = S3Server::start().await;
    server.bucket("data");
    let url = "s3://data/none/shard-{000000..099999}.tar";
    let dataset = Dataset::open(url, &server.options()).await.expect("a pattern opens");
    let engine = FetchEngine::new(dataset.store.clone(), small_fetch());
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ensure_index(&dataset, &engine, &IndexCache::at(dir.path()), false)
        .await
        .expect_err("no such shards");
    assert_eq!(err.kind(), stoker::ErrorKind::NotFound, "{err}");
    let requests = engine.stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(requests < 500, "{requests} requests for 100,000 missing shards");
}
