//! Every Prometheus metric stoker exports, declared here and nowhere else
//! (documented, family by family, in `docs/METRICS.md`).
//!
//! ```text
//!  scrape ─▶ Figures (read from the engines' and sessions' own counters) ─▶ families ─▶ text format
//!  part done ─▶ STORE histograms (first byte, transfer): process-wide, observed as parts complete
//! ```
//!
//! Counters are not kept twice: a scrape reads the same atomics `stoker
//! bench --json` and the `Stats` RPC report, so the three agree on a run.
//! Labels are bounded: `endpoint` (scheme and bucket, which `--allow-url`
//! bounds), `source`, `class`, `state`; never shard keys or session ids.

pub mod http;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};

use crate::fetch::{FetchEngine, FetchSnapshot, Provenance};

/// Time to a reply's first byte, in seconds: 1 ms (a LAN) to 10 s (an
/// overloaded store).
const FIRST_BYTE_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// A part's transfer after its first byte: 8 MiB takes ~5 ms on loopback
/// and ~30 s on a 2 Mbit/s connection.
const TRANSFER_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Histograms observed as parts complete, for the whole process.
#[derive(Debug)]
pub struct StoreHistograms {
    pub first_byte: Histogram,
    pub transfer: Histogram,
}

/// The process's part-time histograms.
pub fn store() -> &'static StoreHistograms {
    static STORE: LazyLock<StoreHistograms> = LazyLock::new(|| {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            // Constant names and sorted buckets: tested by `render`'s tests.
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid histogram options")
        };
        StoreHistograms {
            first_byte: histogram(
                "stoker_store_first_byte_seconds",
                "Time from sending a part's request to its reply's first byte.",
                FIRST_BYTE_BUCKETS,
            ),
            transfer: histogram(
                "stoker_store_part_transfer_seconds",
                "Time from a part's first byte to its last.",
                TRANSFER_BUCKETS,
            ),
        }
    });
    &STORE
}

/// What one fetch engine (one endpoint) reports.
#[derive(Debug, Clone)]
pub struct EngineFigures {
    pub endpoint: String,
    pub fetch: FetchSnapshot,
    pub concurrency: usize,
    pub part_bytes: u64,
    /// Where concurrency and part size came from.
    pub concurrency_source: Provenance,
    pub part_bytes_source: Provenance,
    pub in_flight: usize,
    /// Requests per second the limiter allows now (None: no limit yet).
    pub rate_limit: Option<f64>,
    pub pauses: u64,
    pub shared_bytes: u64,
}

impl EngineFigures {
    pub fn of(endpoint: &str, engine: &FetchEngine) -> EngineFigures {
        let c = &engine.config;
        let tuned = if c.warm_start.is_some() { Provenance::Cached } else { Provenance::Autotuned };
        EngineFigures {
            endpoint: crate::echo::redacted_url(endpoint),
            fetch: engine.stats.snapshot(),
            concurrency: engine.limit.limit(),
            part_bytes: engine.part_bytes(),
            concurrency_source: if c.auto_concurrency { tuned } else { Provenance::User },
            part_bytes_source: if c.auto_part_bytes { tuned } else { Provenance::User },
            in_flight: engine.limit.in_flight(),
            rate_limit: engine.gate.as_ref().and_then(|g| g.rate()),
            pauses: engine.gate.as_ref().map_or(0, |g| g.pauses()),
            shared_bytes: engine.sharing.shared_bytes.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Counts batches as they are handed out, and the waits a consumer
/// reports; one per session, one for the daemon, one for `bench`.
#[derive(Debug, Default)]
pub struct Delivery {
    pub batches: AtomicU64,
    pub samples: AtomicU64,
    pub bytes: AtomicU64,
    /// Microseconds the consumer waited for batches.
    pub wait_us: AtomicU64,
}

impl Delivery {
    pub fn add_batch(&self, samples: u64, bytes: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.samples.fetch_add(samples, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn delivered(&self) -> Delivered {
        Delivered {
            batches: self.batches.load(Ordering::Relaxed),
            samples: self.samples.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Batches handed out (to a daemon's clients, or to `bench`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Delivered {
    pub batches: u64,
    pub samples: u64,
    pub bytes: u64,
}

/// What only the daemon has: sessions and their rings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DaemonFigures {
    pub ready: bool,
    pub sessions: u64,
    pub sessions_opened: u64,
    pub sessions_failed: u64,
    pub sessions_refused: u64,
    pub ring_bytes: u64,
    pub ring_memory_bytes: u64,
    pub slots_free: u64,
    pub slots_filling: u64,
    pub slots_leased: u64,
    /// Seconds sessions have existed, summed over sessions (ended ones too).
    pub session_seconds: f64,
    /// Seconds clients waited for their next batch, as they report it.
    pub consumer_wait_seconds: f64,
    /// The largest wait / age among live sessions.
    pub consumer_wait_fraction_max: f64,
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub engines: Vec<EngineFigures>,
    pub memory_used_bytes: u64,
    pub memory_budget_bytes: u64,
    pub delivered: Delivered,
    pub daemon: Option<DaemonFigures>,
    /// The node's GPUs as NVML last sampled them (empty without a driver).
    pub gpus: Vec<crate::gpu::telemetry::GpuSample>,
}

fn source(p: Provenance) -> &'static str {
    match p {
        Provenance::Default => "default",
        Provenance::User => "static",
        Provenance::Autotuned => "auto",
        Provenance::Cached => "cached",
    }
}

/// Families built for one scrape.
#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    /// A labelled family with no series yet (no endpoint before the first
    /// session) is left out: the encoder refuses empty families.
    fn add(&mut self, c: &dyn Collector) {
        self.0.extend(c.collect().into_iter().filter(|f| !f.get_metric().is_empty()));
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) -> prometheus::Result<()> {
        let c = IntCounter::with_opts(Opts::new(name, help))?;
        c.inc_by(v);
        self.add(&c);
        Ok(())
    }

    fn seconds(&mut self, name: &str, help: &str, v: f64) -> prometheus::Result<()> {
        let c = Counter::with_opts(Opts::new(name, help))?;
        c.inc_by(v.max(0.0));
        self.add(&c);
        Ok(())
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) -> prometheus::Result<()> {
        let g = Gauge::with_opts(Opts::new(name, help))?;
        g.set(v);
        self.add(&g);
        Ok(())
    }

    fn int_gauge(&mut self, name: &str, help: &str, v: u64) -> prometheus::Result<()> {
        let g = IntGauge::with_opts(Opts::new(name, help))?;
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        self.add(&g);
        Ok(())
    }

    fn counter_by(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        rows: &[(&str, u64)],
    ) -> prometheus::Result<()> {
        let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
        for (value, n) in rows {
            c.with_label_values(&[*value]).inc_by(*n);
        }
        self.add(&c);
        Ok(())
    }

    fn int_gauge_by(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        rows: &[(Vec<&str>, u64)],
    ) -> prometheus::Result<()> {
        let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
        for (values, n) in rows {
            g.with_label_values(values).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.add(&g);
        Ok(())
    }
}

/// The text exposition of `figures`, the store histograms and the
/// process's own figures (memory, CPU, descriptors, threads).
pub fn render(figures: &Figures) -> prometheus::Result<String> {
    let mut f = Families::default();
    let build = IntGaugeVec::new(
        Opts::new("stoker_build_info", "Always 1; the labels say which stoker this is."),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    f.add(&build);

    let sum = |get: fn(&FetchSnapshot) -> u64| -> u64 {
        figures.engines.iter().map(|e| get(&e.fetch)).sum()
    };
    f.counter(
        "stoker_store_requests_total",
        "Requests sent to object stores (HEAD and GET; first tries and retries).",
        sum(|s| s.requests),
    )?;
    let (throttled, timeouts, stalls, errors) =
        (sum(|s| s.throttled), sum(|s| s.timeouts), sum(|s| s.stalls), sum(|s| s.errors));
    f.counter_by(
        "stoker_store_request_failures_total",
        "Failed attempts by class: throttled (503/429), timeout, stalled (bytes stopped \
         arriving), other (resets, 5xx, truncation, …).",
        "class",
        &[
            ("throttled", throttled),
            ("timeout", timeouts),
            ("stalled", stalls),
            ("other", errors.saturating_sub(throttled + timeouts + stalls)),
        ],
    )?;
    f.counter(
        "stoker_store_retries_total",
        "Requests repeated after a transient failure.",
        sum(|s| s.retries),
    )?;
    f.counter("stoker_store_bytes_total", "Payload bytes of completed parts.", sum(|s| s.bytes))?;
    f.counter(
        "stoker_store_received_bytes_total",
        "Payload bytes as they arrived, parts completed or not.",
        sum(|s| s.arrived_bytes),
    )?;
    f.counter("stoker_store_parts_total", "Parts (range GETs) completed.", sum(|s| s.parts))?;
    f.seconds(
        "stoker_store_rate_limited_seconds_total",
        "Time requests waited on the request-rate limiter, summed over requests.",
        sum(|s| s.rate_limited_us) as f64 * 1e-6,
    )?;
    f.counter(
        "stoker_store_throttle_pauses_total",
        "Times a storm of Retry-After replies paused every request to an endpoint.",
        figures.engines.iter().map(|e| e.pauses).sum(),
    )?;
    f.add(&store().first_byte);
    f.add(&store().transfer);

    let rate = GaugeVec::new(
        Opts::new(
            "stoker_store_request_rate_limit",
            "Requests per second the limiter allows an endpoint now (+Inf: no limit).",
        ),
        &["endpoint"],
    )?;
    for e in &figures.engines {
        rate.with_label_values(&[e.endpoint.as_str()]).set(e.rate_limit.unwrap_or(f64::INFINITY));
    }
    f.add(&rate);
    let per_engine = |pick: fn(&EngineFigures) -> (u64, Provenance)| -> Vec<(Vec<&str>, u64)> {
        figures
            .engines
            .iter()
            .map(|e| {
                let (v, p) = pick(e);
                (vec![e.endpoint.as_str(), source(p)], v)
            })
            .collect()
    };
    f.int_gauge_by(
        "stoker_fetch_concurrency",
        "Requests an endpoint may have in flight; source: auto, cached (started from the \
         tuning cache), static.",
        &["endpoint", "source"],
        &per_engine(|e| (e.concurrency as u64, e.concurrency_source)),
    )?;
    f.int_gauge_by(
        "stoker_fetch_part_size_bytes",
        "Bytes per range GET for shards planned from now on.",
        &["endpoint", "source"],
        &per_engine(|e| (e.part_bytes, e.part_bytes_source)),
    )?;
    let in_flight: Vec<(Vec<&str>, u64)> =
        figures.engines.iter().map(|e| (vec![e.endpoint.as_str()], e.in_flight as u64)).collect();
    f.int_gauge_by(
        "stoker_fetch_in_flight_requests",
        "Requests an endpoint has in flight now.",
        &["endpoint"],
        &in_flight,
    )?;
    f.int_gauge(
        "stoker_fetch_memory_used_bytes",
        "Bytes of fetched parts held (in flight or waiting to be parsed).",
        figures.memory_used_bytes,
    )?;
    f.int_gauge(
        "stoker_fetch_memory_budget_bytes",
        "The cap on fetched parts held at once (--memory-budget).",
        figures.memory_budget_bytes,
    )?;
    f.counter(
        "stoker_fetch_shared_bytes_total",
        "Part bytes one session took from another's fetch instead of the store.",
        figures.engines.iter().map(|e| e.shared_bytes).sum(),
    )?;

    if let Some(a) = crate::alloc_trim::figures() {
        f.int_gauge(
            "stoker_allocator_allocated_bytes",
            "Bytes in live heap allocations (parts, batches, buffers).",
            a.allocated,
        )?;
        f.int_gauge(
            "stoker_allocator_resident_bytes",
            "Heap memory the allocator holds: live, freed but kept for reuse, metadata.",
            a.resident,
        )?;
        f.counter(
            "stoker_allocator_purges_total",
            "Times freed heap memory was returned to the kernel to stay near the budget.",
            a.purges,
        )?;
    }

    let d = figures.delivered;
    f.counter("stoker_delivered_batches_total", "Batches handed out.", d.batches)?;
    f.counter("stoker_delivered_samples_total", "Samples handed out.", d.samples)?;
    f.counter("stoker_delivered_bytes_total", "Payload bytes of samples handed out.", d.bytes)?;

    if let Some(s) = figures.daemon {
        daemon_families(&mut f, &s)?;
    }
    gpu_families(&mut f, &figures.gpus)?;
    #[cfg(target_os = "linux")]
    f.add(&prometheus::process_collector::ProcessCollector::for_self());
    let text = prometheus::TextEncoder::new().encode_to_string(&f.0)?;
    // The encoder writes Rust's "inf"; the exposition format spells it +Inf.
    Ok(text.replace(" inf\n", " +Inf\n"))
}

/// Per-GPU gauges labelled by ordinal and model (none without NVML).
fn gpu_families(
    f: &mut Families,
    gpus: &[crate::gpu::telemetry::GpuSample],
) -> prometheus::Result<()> {
    type Get = fn(&crate::gpu::telemetry::GpuSample) -> f64;
    let families: [(&str, &str, Get); 4] = [
        (
            "stoker_gpu_utilization_ratio",
            "Share of the last NVML sample period a kernel ran on the GPU (0-1).",
            |g| g.utilization,
        ),
        ("stoker_gpu_memory_used_bytes", "GPU memory in use (NVML).", |g| {
            g.memory_used_bytes as f64
        }),
        ("stoker_gpu_memory_total_bytes", "GPU memory installed (NVML).", |g| {
            g.memory_total_bytes as f64
        }),
        (
            "stoker_gpu_pcie_rx_bytes_per_second",
            "Host-to-device PCIe throughput as NVML last sampled it.",
            |g| g.pcie_rx_bytes_per_s,
        ),
    ];
    for (name, help, get) in families {
        let v = prometheus::GaugeVec::new(Opts::new(name, help), &["gpu", "name"])?;
        for g in gpus {
            v.with_label_values(&[g.index.to_string().as_str(), g.name.as_str()]).set(get(g));
        }
        f.add(&v);
    }
    Ok(())
}

fn daemon_families(f: &mut Families, s: &DaemonFigures) -> prometheus::Result<()> {
    f.int_gauge(
        "stoker_ready",
        "1 when the daemon takes sessions (readiness), 0 while starting or draining.",
        u64::from(s.ready),
    )?;
    f.int_gauge("stoker_sessions", "Sessions open now.", s.sessions)?;
    f.counter("stoker_sessions_opened_total", "Sessions opened.", s.sessions_opened)?;
    f.counter(
        "stoker_sessions_failed_total",
        "Sessions that ended with an error (store, data or ring).",
        s.sessions_failed,
    )?;
    f.counter(
        "stoker_sessions_refused_total",
        "Session requests refused before they opened (bad request, caps, policy, draining).",
        s.sessions_refused,
    )?;
    f.int_gauge("stoker_ring_bytes", "Bytes of session rings reserved now.", s.ring_bytes)?;
    f.int_gauge(
        "stoker_ring_memory_bytes",
        "The cap on all sessions' rings together (--ring-memory).",
        s.ring_memory_bytes,
    )?;
    f.int_gauge_by(
        "stoker_ring_slots",
        "Ring slots of live sessions by state: free, filling (the daemon writes a batch), \
         leased (a batch the client holds or has not read yet).",
        &["state"],
        &[
            (vec!["free"], s.slots_free),
            (vec!["filling"], s.slots_filling),
            (vec!["leased"], s.slots_leased),
        ],
    )?;
    f.seconds(
        "stoker_session_seconds_total",
        "Seconds sessions have been open, summed over sessions.",
        s.session_seconds,
    )?;
    f.seconds(
        "stoker_consumer_wait_seconds_total",
        "Seconds clients waited for their next batch (input stall), summed over sessions; \
         divide its rate by stoker_session_seconds_total's for the stalled fraction.",
        s.consumer_wait_seconds,
    )?;
    f.gauge(
        "stoker_consumer_wait_fraction_max",
        "The largest share of its lifetime any live session waited for input.",
        s.consumer_wait_fraction_max,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_family() -> Figures {
        Figures {
            engines: vec![EngineFigures {
                endpoint: "s3://bucket".into(),
                fetch: FetchSnapshot { requests: 7, errors: 3, throttled: 1, ..Default::default() },
                concurrency: 8,
                part_bytes: 8 << 20,
                concurrency_source: Provenance::Autotuned,
                part_bytes_source: Provenance::User,
                in_flight: 2,
                rate_limit: None,
                pauses: 0,
                shared_bytes: 0,
            }],
            daemon: Some(DaemonFigures::default()),
            gpus: vec![crate::gpu::telemetry::GpuSample {
                index: 0,
                name: "NVIDIA H200".into(),
                utilization: 0.5,
                memory_used_bytes: 1 << 30,
                memory_total_bytes: 141 << 30,
                pcie_rx_bytes_per_s: 2.5e10,
            }],
            ..Default::default()
        }
    }

    fn family_names(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn renders_counters_with_their_values() {
        let text = render(&every_family()).expect("valid families");
        assert!(text.contains("stoker_store_requests_total 7"), "{text}");
        assert!(
            text.contains("stoker_gpu_utilization_ratio{gpu=\"0\",name=\"NVIDIA H200\"} 0.5"),
            "{text}"
        );
        assert!(text.contains("stoker_store_request_failures_total{class=\"other\"} 2"), "{text}");
        assert!(
            text.contains("stoker_fetch_concurrency{endpoint=\"s3://bucket\",source=\"auto\"} 8"),
            "{text}"
        );
        assert!(
            text.contains("stoker_store_request_rate_limit{endpoint=\"s3://bucket\"} +Inf"),
            "{text}"
        );
    }

    /// Each family rendered is documented in docs/METRICS.md and each
    /// documented family is rendered: the doc is the contract.
    #[test]
    fn docs_list_exactly_the_families() {
        let text = render(&every_family()).expect("valid families");
        let rendered: Vec<String> =
            family_names(&text).into_iter().filter(|n| n.starts_with("stoker_")).collect();
        let doc = include_str!("../docs/METRICS.md");
        let documented: Vec<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|n| n.starts_with("stoker_"))
            .map(str::to_string)
            .collect();
        for name in &rendered {
            assert!(documented.contains(name), "{name} is exported but not in docs/METRICS.md");
        }
        for name in &documented {
            assert!(rendered.contains(name), "{name} is documented but not exported");
        }
        let mut unique = rendered.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), rendered.len(), "a family exported twice");
    }
}
