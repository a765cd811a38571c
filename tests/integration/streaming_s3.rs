//! The streaming core against a real S3-protocol server on loopback: every
//! generated sample delivered exactly once across ranks, byte-identical.

use crate::support;

use std::collections::HashMap;

use stoker::order::OrderConfig;
use stoker::pipeline::PipelineConfig;
use support::*;

async fn exactly_once(
    url: &str,
    server: &S3Server,
    cfg: &stoker::synth::SynthConfig,
    shuffle_buffer: usize,
) {
    let expected = all_keys(cfg);
    for world_size in [1, 2, 3] {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut per_rank = Vec::new();
        for rank in 0..world_size {
            let pcfg = PipelineConfig {
                order: OrderConfig {
                    seed: 9,
                    rank,
                    world_size,
                    shuffle_buffer,
                    ..OrderConfig::default()
                },
                batch_size: 7,
                ..PipelineConfig::default()
            };
            let batches =
                run_pipeline(url, &server.options(), small_fetch(), pcfg).await.expect("pipeline");
            let keys = check_against_synth(&batches, cfg);
            per_rank.push(keys.len());
            for k in keys {
                *seen.entry(k).or_default() += 1;
            }
        }
        let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dupes.is_empty(), "world size {world_size}: duplicates {dupes:?}");
        let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
        assert!(missing.is_empty(), "world size {world_size}: missing {missing:?}");
        assert_eq!(seen.len(), expected.len());
        if world_size > 1 {
            assert!(per_rank.iter().all(|&n| n > 0), "every rank got samples: {per_rank:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_prefix_listing_exactly_once_at_world_sizes_1_2_3() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(7, false);
    server.write_synth("s3://data/plain/", &cfg).await;
    exactly_once("s3://data/plain/", &server, &cfg, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_zst_brace_pattern_exactly_once_at_world_sizes_1_2_3() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(5, true);
    server.write_synth("s3://data/zst/", &cfg).await;
    exactly_once("s3://data/zst/shard-{000000..000004}.tar.zst", &server, &cfg, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_shuffle_keeps_exactly_once() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(4, false);
    server.write_synth("s3://data/shuf/", &cfg).await;
    exactly_once("s3://data/shuf/", &server, &cfg, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_order_across_part_sizes_and_concurrency() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(5, false);
    server.write_synth("s3://data/det/", &cfg).await;
    let order = |part_bytes: u64, concurrency: usize, seed: u64| {
        let opts = server.options();
        async move {
            let pcfg = PipelineConfig {
                order: OrderConfig { seed, shuffle_buffer: 30, ..OrderConfig::default() },
                batch_size: 16,
                ..PipelineConfig::default()
            };
            let fetch = stoker::fetch::FetchConfig { part_bytes, concurrency, ..small_fetch() };
            let batches =
                run_pipeline("s3://data/det/", &opts, fetch, pcfg).await.expect("pipeline");
            batches
                .iter()
                .flat_map(|b| b.keys().map(str::to_string).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        }
    };
    let a = order(40_000, 8, 1).await;
    let b = order(7_777, 1, 1).await;
    let c = order(40_000, 8, 2).await;
    assert_eq!(a, b, "order must not depend on part size or timing");
    assert_ne!(a, c, "another seed gives another order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_and_drop_last() {
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = small_synth(3, false);
    server.write_synth("s3://data/ep/", &cfg).await;
    let total = cfg.total_samples();
    let batch_size = 10;
    for drop_last in [false, true] {
        let pcfg = PipelineConfig {
            order: OrderConfig { seed: 3, ..OrderConfig::default() },
            epochs: 2,
            batch_size,
            drop_last,
            ..PipelineConfig::default()
        };
        let batches = run_pipeline("s3://data/ep/", &server.options(), small_fetch(), pcfg)
            .await
            .expect("pipeline");
        for epoch in 0..2 {
            let b: Vec<_> = batches.iter().filter(|b| b.epoch == epoch).collect();
            let n: usize = b.iter().map(|b| b.num_samples).sum();
            let want = if drop_last { total / batch_size * batch_size } else { total };
            assert_eq!(n, want, "epoch {epoch}, drop_last {drop_last}");
            assert!(b.iter().enumerate().all(|(i, b)| b.index == i as u64));
            if drop_last {
                assert!(b.iter().all(|b| b.num_samples == batch_size));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycled_batch_buffers_deliver_every_sample_byte_identical() {
    // Batches of ~3 MiB: past the size collation copies in parallel, into
    // buffers that hold the previous batches' bytes.
    let server = S3Server::start().await;
    server.bucket("data");
    let cfg = stoker::synth::SynthConfig {
        shards: 4,
        shard_bytes: 4 << 20,
        sample_bytes: 64 << 10,
        ..small_synth(4, false)
    };
    server.write_synth("s3://data/recycle/", &cfg).await;
    let dataset =
        stoker::source::Dataset::open("s3://data/recycle/", &server.options()).await.expect("open");
    let pcfg = PipelineConfig {
        order: OrderConfig { seed: 5, shuffle_buffer: 100, ..OrderConfig::default() },
        epochs: 2,
        batch_size: 48,
        ..PipelineConfig::default()
    };
    let engine = stoker::fetch::FetchEngine::new(dataset.store.clone(), small_fetch());
    let mut pipeline = stoker::pipeline::Pipeline::start(&dataset, engine, pcfg).expect("start");
    let (mut keys, mut batches) = (Vec::new(), 0u64);
    while let Some(batch) = pipeline.next().await {
        batches += 1;
        let batch = batch.expect("batch");
        assert!(batch.payload_bytes() > 2 << 20 || batch.num_samples < 48);
        keys.extend(check_against_synth(std::slice::from_ref(&batch), &cfg));
        pipeline.recycle(batch);
    }
    // The first few batches are written before any buffer comes back.
    let reused = pipeline.recycled_reuses();
    assert!(reused * 2 >= batches, "{reused} of {batches} batches in recycled buffers");
    keys.sort();
    let mut want: Vec<String> = all_keys(&cfg).into_iter().flat_map(|k| [k.clone(), k]).collect();
    want.sort();
    assert_eq!(keys, want, "every sample once per epoch");
}
