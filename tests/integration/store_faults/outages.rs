//! A store that refuses: scattered 503s with `Retry-After`, SlowDown storms
//! and outages, through a proxy in front of the test S3 server. Nothing is
//! lost or repeated; a refused request waits what the store asked; an
//! outage costs a bounded number of requests and is ridden out up to the
//! outage tolerance, then ends in a named error.

use std::time::{Duration, Instant};

use crate::support::proxy::{Arrival, Proxy, ProxyConfig};
use crate::support::*;
use stoker::fetch::{FetchConfig, FetchEngine, FetchStats, RateGate};
use stoker::pipeline::PipelineConfig;
use stoker::source::{Dataset, SourceError, StoreOptions};

fn proxied_options(server: &S3Server, proxy: &Proxy) -> StoreOptions {
    let mut opts = server.options();
    opts.options[0].1 = format!("http://{}", proxy.addr);
    opts
}

/// 8 shards of 256 KiB in 16 KB parts: ~130 requests.
fn many_parts() -> FetchConfig {
    FetchConfig { part_bytes: 16_000, backoff_base: Duration::from_millis(5), ..small_fetch() }
}

/// What one read through the proxy showed.
struct Run {
    arrivals: Vec<Arrival>,
    proxy_started: Instant,
    ended: Instant,
    gate: std::sync::Arc<RateGate>,
    stats: std::sync::Arc<FetchStats>,
    /// Replies the proxy stalled, and slowed to a trickle.
    stalled: u64,
    slowed: u64,
}

/// Reads an 8-shard dataset through a proxy that refuses as `throttle`
/// says; checks every sample came once.
async fn read_through(bucket: &str, throttle: ProxyConfig, fetch: FetchConfig) -> Run {
    let server = S3Server::start().await;
    // Its own bucket: the rate gate is per endpoint and process-wide.
    server.bucket(bucket);
    let cfg = small_synth(8, false);
    let url = format!("s3://{bucket}/d/");
    server.write_synth(&url, &cfg).await;
    let proxy = Proxy::start(server.addr, throttle).await;
    let opts = proxied_options(&server, &proxy);
    let dataset = Dataset::open_with(&url, &opts, &fetch).await.expect("dataset");
    // As bench and serve build it: on the endpoint's process-wide gate.
    let engine = FetchEngine::for_endpoint(dataset.store.clone(), fetch, &dataset.url.endpoint());
    let gate = engine.gate.clone().expect("rate limiting is on");
    let stats = engine.stats.clone();
    let batches = run_engine(&dataset, engine, PipelineConfig::default())
        .await
        .expect("refusals are transient");
    let ended = Instant::now();
    assert_every_sample_once(&batches, &cfg, "through the refusing proxy");
    let arrivals = proxy.arrivals.lock().expect("arrivals").clone();
    let stalled = proxy.stalled.load(std::sync::atomic::Ordering::Relaxed);
    let slowed = proxy.slowed.load(std::sync::atomic::Ordering::Relaxed);
    Run { arrivals, proxy_started: proxy.started, ended, gate, stats, stalled, slowed }
}

/// A few 503s with `Retry-After: 1` among many answers (B2 does this):
/// the refused request's retry waits the second; nobody else does
/// (object_store drops the header; `source/retry_after.rs` reads it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scattered_retry_after_delays_only_its_own_request() {
    let throttle =
        ProxyConfig { retry_after: Some(1), refuse_every: Some(25), ..ProxyConfig::fast() };
    let run = read_through("scattered", throttle, many_parts()).await;
    let refusals: Vec<_> = run.arrivals.iter().filter(|a| a.1).collect();
    assert!(refusals.len() >= 3, "refused {} of {}", refusals.len(), run.arrivals.len());
    assert_eq!(run.gate.pauses(), 0, "scattered refusals paused the endpoint");
    // Nor limited its rate: they are the store's own, not a cap.
    assert_eq!(run.gate.rate(), None, "scattered refusals cut the endpoint's request rate");
    let mut others_soon = 0;
    for (at, _, name) in &refusals {
        let retry = run
            .arrivals
            .iter()
            .find(|(t, _, n)| n == name && t > at)
            .unwrap_or_else(|| panic!("{name} refused and never retried"));
        let waited = retry.0.duration_since(*at).as_secs_f64();
        assert!(waited >= 0.95, "{name} retried after {waited:.2} s, not its Retry-After: 1");
        others_soon += run
            .arrivals
            .iter()
            .filter(|(t, _, n)| {
                n != name && t.checked_duration_since(*at).is_some_and(|d| d.as_secs_f64() < 0.9)
            })
            .count();
    }
    assert!(others_soon > 0, "nothing else went within a second of a refusal");
}

/// Requests that arrived at the proxy between `from` and `to` after it
/// started.
fn arrived_within(run: &Run, from: Duration, to: Duration) -> usize {
    run.arrivals
        .iter()
        .filter(|(t, _, _)| {
            let since = t.duration_since(run.proxy_started);
            since >= from && since < to
        })
        .count()
}

/// A storm of 503s with `Retry-After: 1`: the refusals come in a row, and
/// every request to the store waits. Without the header nobody pauses
/// (the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_retry_after_pauses_every_request() {
    let storm = (Duration::from_millis(100), Duration::from_millis(1600));
    // Slow replies, so the run is still going when the storm starts.
    let slow = ProxyConfig { bytes_per_s: 1e6, storm: Some(storm), ..ProxyConfig::fast() };
    let run =
        read_through("storm", ProxyConfig { retry_after: Some(1), ..slow }, many_parts()).await;
    let during = arrived_within(&run, storm.0, storm.1);
    println!("storm with Retry-After: {during} requests in 1.5 s, {} pauses", run.gate.pauses());
    assert!(run.gate.pauses() > 0, "no pause in a storm");
    let bare = read_through("storm-bare", slow, many_parts()).await;
    let bare_during = arrived_within(&bare, storm.0, storm.1);
    println!("storm without: {bare_during} requests in 1.5 s");
    assert_eq!(bare.gate.pauses(), 0, "a pause with no Retry-After");
}

/// Five seconds of every request refused (no `Retry-After`), with a
/// short backoff cap: the endpoint's retry budget bounds what goes into
/// the outage, the run rides it out, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_a_bounded_number_of_requests_and_loses_nothing() {
    let outage = (Duration::from_millis(200), Duration::from_millis(5200));
    let throttle = ProxyConfig { bytes_per_s: 1e6, storm: Some(outage), ..ProxyConfig::fast() };
    // 200 ms backoff cap: without a budget, 8 requests in flight would
    // retry ~200 times in 5 s.
    let fetch = FetchConfig { backoff_cap: Duration::from_millis(200), ..many_parts() };
    let run = read_through("outage", throttle, fetch).await;
    let during = arrived_within(&run, outage.0, outage.1);
    let (spent, waited) = run.gate.retries();
    let recovered = run.ended.duration_since(run.proxy_started + outage.1);
    println!(
        "outage: {during} requests in 5 s; {spent} retries, {waited} waited for the budget; \
         done {:.1} s after it ended",
        recovered.as_secs_f64()
    );
    // The budget's 10, one every two seconds, the first attempts of the 8
    // requests in flight, two tokens for each part that was still being
    // answered as the outage began, and a little slack.
    assert!(during <= 10 + 3 + 8 + 2 * 8 + 3, "{during} requests into a 5 s outage");
    assert!(waited > 0, "the budget never held a retry back");
    assert!(recovered < Duration::from_secs(10), "{recovered:?} to finish after the outage");
}

/// One reply in 20 stops after 600 bytes and the connection goes quiet: the
/// part resumes on another connection after about a part time (at least
/// 2 s), not after the 60 s request timeout; nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_costs_a_part_time_not_a_timeout() {
    let throttle = ProxyConfig { stall_every: Some(20), ..ProxyConfig::fast() };
    let (run, took, stalls) = read_abandoning("stalls", throttle, unhedged()).await;
    println!(
        "{} stalled replies, {stalls} stalls detected, {:.1} s",
        run.stalled,
        took.as_secs_f64()
    );
    assert!(run.stalled >= 3, "the proxy stalled {} replies", run.stalled);
    assert_eq!(stalls, run.stalled, "every stall detected, nothing else called one");
    assert!(took < Duration::from_secs(30), "{took:?}: a stall cost the request timeout");
}

/// One reply in 20 slows to a trickle after 600 bytes (1 KB/s, never quiet
/// for long enough to be a stall): the part resumes on another connection
/// after four mean part times (at least 4 s), not after the 60 s request
/// timeout (a 16 KB part at 1 KB/s would take ~16 s and hold its shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_connection_costs_a_few_part_times_not_its_whole_reply() {
    let throttle = ProxyConfig { slow_every: Some(20), ..ProxyConfig::fast() };
    let (run, took, abandoned) = read_abandoning("slow", throttle, unhedged()).await;
    println!("{} slowed replies, {abandoned} abandoned, {:.1} s", run.slowed, took.as_secs_f64());
    assert!(run.slowed >= 3, "the proxy slowed {} replies", run.slowed);
    // A slowed connection stays slow: a reply that waited for it may be
    // slow too, so at least one abandon for each slowed reply.
    assert!(abandoned >= run.slowed, "{abandoned} of {} slow replies abandoned", run.slowed);
    // 6.5 s here; 33 s when slow replies ran their course.
    assert!(took < Duration::from_secs(20), "{took:?}: slow replies ran their course");
}

/// Parts are not raced (the two tests above are about abandoning).
fn unhedged() -> FetchConfig {
    FetchConfig { hedge: false, ..many_parts() }
}

/// One reply in 20 slows to a trickle: once it holds up the line (here:
/// every other part is fetched, so the scheduler watches the last ones) a
/// second request races it, wins, and the part's bytes are the hedge's
/// after the first reply's (every sample once, with its bytes); a reply
/// that keeps up is never raced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reply_holding_up_the_line_is_raced() {
    let throttle = ProxyConfig { slow_every: Some(20), ..ProxyConfig::fast() };
    let (run, took, abandoned) = read_abandoning("raced", throttle, many_parts()).await;
    let hedges = run.stats.hedges.load(std::sync::atomic::Ordering::Relaxed);
    let wins = run.stats.hedge_wins.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{} slowed replies, {hedges} raced, {wins} won by the race, {abandoned} abandoned, {:.1} s",
        run.slowed,
        took.as_secs_f64()
    );
    assert!(run.slowed >= 3, "the proxy slowed {} replies", run.slowed);
    // A race's own request may be slowed too (one in 20): it then loses,
    // and counts among the slowed replies. Every other slowed reply was
    // raced, and the race won.
    let lost = hedges - wins;
    assert!(hedges + lost >= run.slowed, "{hedges} races for {} slowed replies", run.slowed);
    assert!(wins >= run.slowed - 2 * lost, "{wins} races won for {} slowed", run.slowed);
    assert!(hedges <= 2 * run.slowed, "{hedges} races for {} slowed replies", run.slowed);

    let fast = read_through("unraced", ProxyConfig::fast(), many_parts()).await;
    let hedges = fast.stats.hedges.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(hedges, 0, "a part raced where no reply was slow");
}

/// Reads through `throttle` in many parts: the run, how long it took, and
/// how many attempts were abandoned (stalled or slow).
async fn read_abandoning(
    bucket: &str,
    throttle: ProxyConfig,
    fetch: FetchConfig,
) -> (Run, Duration, u64) {
    let started = Instant::now();
    let run = read_through(bucket, throttle, fetch).await;
    let took = started.elapsed();
    let abandoned = run.stats.stalls.load(std::sync::atomic::Ordering::Relaxed);
    (run, took, abandoned)
}

/// A listing refused for a second is retried, not the end of the job; one
/// refused for longer than the outage tolerance is a named error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_is_retried_up_to_the_outage_tolerance() {
    let server = S3Server::start().await;
    server.bucket("listing");
    let cfg = small_synth(2, false);
    server.write_synth("s3://listing/d/", &cfg).await;
    let brief = (Duration::ZERO, Duration::from_secs(1));
    let proxy =
        Proxy::start(server.addr, ProxyConfig { storm: Some(brief), ..ProxyConfig::fast() }).await;
    let fetch = many_parts();
    let dataset = Dataset::open_with("s3://listing/d/", &proxied_options(&server, &proxy), &fetch)
        .await
        .expect("a listing retried past a 1 s outage");
    assert_eq!(dataset.shards.len(), 2);
    assert!(proxy.throttled.load(std::sync::atomic::Ordering::Relaxed) > 0, "it was refused");

    let forever = (Duration::ZERO, Duration::from_secs(3600));
    let proxy =
        Proxy::start(server.addr, ProxyConfig { storm: Some(forever), ..ProxyConfig::fast() })
            .await;
    let fetch = FetchConfig { outage_tolerance: Duration::from_secs(2), ..many_parts() };
    let started = Instant::now();
    let err = Dataset::open_with("s3://listing/d/", &proxied_options(&server, &proxy), &fetch)
        .await
        .expect_err("an outage past the tolerance");
    let took = started.elapsed();
    assert!(matches!(err, SourceError::ListUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("outage tolerance"), "{err}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(6), "{took:?}");
}
