//! An engine that starts above 32 requests (`--concurrency 64`, a warm
//! start) opens them in cohorts, through a proxy that holds every reply's
//! first byte: 32 at once, more only after first bytes came, then all of
//! them; nothing lost or repeated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::proxy::{Proxy, ProxyConfig};
use crate::support::*;
use stoker::fetch::{FetchConfig, FetchEngine};
use stoker::pipeline::PipelineConfig;
use stoker::source::Dataset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_requests_open_in_cohorts() {
    let server = S3Server::start().await;
    server.bucket("cohorts");
    let cfg = small_synth(16, false);
    server.write_synth("s3://cohorts/d/", &cfg).await;
    let ttfb = Duration::from_millis(80);
    let proxy = Proxy::start(server.addr, ProxyConfig { ttfb, ..ProxyConfig::fast() }).await;
    let mut opts = server.options();
    opts.options[0].1 = format!("http://{}", proxy.addr);
    // 16 shards of 256 KiB in 16 KB parts: ~260 range GETs, 64 at a time.
    let fetch = FetchConfig {
        part_bytes: 16_000,
        concurrency: 64,
        memory_budget_bytes: 64 << 20,
        rate_limit: false,
        ..small_fetch()
    };
    let dataset = Dataset::open_with("s3://cohorts/d/", &opts, &fetch).await.expect("dataset");
    let engine = FetchEngine::new(dataset.store.clone(), fetch);
    assert_eq!(engine.limit.limit(), 64, "the limit is what was asked for");

    // The most requests in flight, sampled every millisecond.
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, done, engine) = (most.clone(), done.clone(), engine.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(engine.limit.in_flight(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let batches = run_engine(&dataset, engine.clone(), PipelineConfig::default())
        .await
        .expect("a paced start loses nothing");
    done.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    assert_every_sample_once(&batches, &cfg, "opened in cohorts");

    let arrivals = proxy.arrivals.lock().expect("arrivals").clone();
    let gets: Vec<Instant> =
        arrivals.iter().filter(|a| a.2.contains("range:")).map(|a| a.0).collect();
    let first = *gets.first().expect("range GETs");
    // No reply's first byte can come before `ttfb`: until then only the
    // first cohort is open.
    let before_any_reply = gets.iter().filter(|&&t| t < first + ttfb).count();
    assert!(
        (8..=32).contains(&before_any_reply),
        "{before_any_reply} range GETs before any reply could have come (32 at most)"
    );
    let most = most.load(Ordering::Relaxed);
    assert!(most > 32, "the next cohorts opened too: at most {most} in flight");
    assert!(most <= 64, "{most} in flight under a limit of 64");
    assert_eq!(engine.limit.ceiling(), usize::MAX, "the pacing ended");
}
