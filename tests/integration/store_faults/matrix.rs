//! The fault matrix: ten kinds of faults injected by a proxy of our own in
//! front of the S3 test server (5xx, 429, SlowDown with and without
//! `Retry-After`, replies cut inside their headers or their body, stalled
//! connections, a `200` carrying an XML error, a `206` for the wrong range),
//! over a thousand of them in one run: every sample arrives once, byte for
//! byte; and at 1% faults the retries cost at most 5% more requests.

use std::time::Duration;

use crate::support::proxy::{Fault, Proxy, ProxyConfig};
use crate::support::*;
use stoker::fetch::{FetchConfig, FetchEngine, FetchSnapshot};
use stoker::pipeline::PipelineConfig;
use stoker::source::Dataset;

/// Reads 16 shards of 256 KiB in 1,000-byte parts (~4,200 range GETs)
/// through a proxy that faults every `every`-th range GET; checks every
/// sample, byte for byte; returns the faults injected and the engine's
/// counters.
async fn read_with_faults(
    bucket: &str,
    every: u64,
    rate_limit: bool,
) -> (std::collections::HashMap<Fault, u64>, FetchSnapshot) {
    let server = S3Server::start().await;
    server.bucket(bucket);
    let cfg = small_synth(16, false);
    let url = format!("s3://{bucket}/m/");
    server.write_synth(&url, &cfg).await;
    let proxy = Proxy::start(
        server.addr,
        ProxyConfig { ttfb: Duration::ZERO, fault_every: Some(every), ..ProxyConfig::fast() },
    )
    .await;
    let mut opts = server.options();
    opts.options[0].1 = format!("http://{}", proxy.addr);
    let fetch = FetchConfig {
        part_bytes: 1000,
        concurrency: 16,
        auto_concurrency: false,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(50),
        // Loopback parts take a millisecond: a stall is called after 100 ms.
        stall_floor: Duration::from_millis(100),
        rate_limit,
        ..small_fetch()
    };
    let dataset = Dataset::open_with(&url, &opts, &fetch).await.expect("dataset");
    let engine = FetchEngine::for_endpoint(dataset.store.clone(), fetch, &dataset.url.endpoint());
    let stats = engine.stats.clone();
    let batches = run_engine(&dataset, engine, PipelineConfig::default())
        .await
        .expect("every injected fault is transient");
    assert_every_sample_once(&batches, &cfg, &format!("with a fault every {every} range GETs"));
    let faults = proxy.faults.lock().expect("faults").clone();
    (faults, stats.snapshot())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_faults_of_ten_kinds_lose_nothing() {
    let started = std::time::Instant::now();
    // Without the request-rate limiter: a quarter of all replies faulted,
    // 7.5% of them throttling, would (rightly) slow it to a crawl; the
    // limiter has its own tests (`autotune_loopback`, `store_faults`).
    let (faults, stats) = read_with_faults("matrix", 4, false).await;
    let total: u64 = faults.values().sum();
    println!(
        "{total} faults {faults:?}; {} requests, {} retries, {} stalls, {:.1} s",
        stats.requests,
        stats.retries,
        stats.stalls,
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 1000, "{total} faults injected");
    for kind in Fault::ALL {
        assert!(faults.get(&kind).copied().unwrap_or(0) >= 50, "{kind:?}: {faults:?}");
    }
    assert!(stats.stalls >= 50, "stalls detected: {}", stats.stalls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_faults_cost_at_most_five_percent_more_requests() {
    let (faults, stats) = read_with_faults("amplification", 100, true).await;
    let total: u64 = faults.values().sum();
    // A fault-free run sends one GET per part and one listing.
    let needed = stats.parts + 1;
    let amplification = stats.requests as f64 / needed as f64;
    println!("{total} faults; {} requests for {needed}: ×{amplification:.3}", stats.requests);
    assert!(total >= 40, "{total} faults injected");
    assert!(amplification <= 1.05, "×{amplification:.3}");
}
