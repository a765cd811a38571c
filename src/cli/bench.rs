//! `stoker bench [URL]`: run the whole data path and report what it delivers.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::bench_consumer::{Consumer, HostConsumer};
use super::fetch_args::{ConcurrencyArg, FetchArgs};
use super::report::TuningCacheReport;
use super::report::{
    BenchReport, Chosen, ConcurrencyReport, Percentiles, SweepReport, SweepRow, Verdict, median,
};
use super::size_arg::{human_bytes, parse_bytes};
use super::tuning_cache::{TuningCache, cache_key};
use crate::autotune::WarmStart;
use crate::fetch::{FetchConfig, FetchEngine, Provenance, TunePoint};
use crate::index::IndexCache;
use crate::metrics::http::MetricsSource;
use crate::order::{Even, OrderConfig};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::source::{Dataset, EmulatedStore, RemoteProfile, StoreOptions, s3_endpoint};
use crate::synth::{SynthConfig, write_dataset};

/// Flags of `stoker bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Dataset: s3://bucket/train/shard-{000000..000511}.tar, s3://bucket/train/ (every
    /// .tar/.tar.zst below), gs://, az://, https://, file:// or a local path. Omit it to
    /// benchmark a generated 1 GiB synthetic dataset in a temporary directory.
    pub url: Option<String>,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Samples per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Drop each epoch's last batch when it is short.
    #[arg(long)]
    pub drop_last: bool,
    /// Epochs to run.
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Stop after this many seconds, even mid-epoch.
    #[arg(long)]
    pub duration: Option<f64>,
    /// This process's rank (0-based).
    #[arg(long, default_value_t = 0)]
    pub rank: usize,
    /// Number of ranks the shards are split across.
    #[arg(long, default_value_t = 1)]
    pub world_size: usize,
    /// Seed of the shard and sample shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The first epoch (the shuffle differs per epoch).
    #[arg(long, default_value_t = 0)]
    pub epoch: u64,
    /// Samples in the shuffle buffer; 0 reads samples in shard order.
    #[arg(long, default_value_t = 0)]
    pub shuffle_buffer: usize,
    /// Read shards in listed order instead of a seeded shuffle.
    #[arg(long)]
    pub no_shard_shuffle: bool,
    /// Split each epoch among ranks by samples so every rank gets the same
    /// number: `drop` leaves out the remainder, `pad` repeats the epoch's
    /// first samples to fill it, `none` splits within one sample. Needs
    /// every shard's sample count: shards not indexed yet are read once
    /// first (`stoker index`). More ranks than shards split by samples too.
    #[arg(long, value_name = "POLICY", value_parser = crate::index::parse_even)]
    pub even: Option<Even>,
    /// Neither use nor keep shard indexes (the cache:
    /// $XDG_CACHE_HOME/stoker/index/, or STOKER_INDEX_CACHE).
    #[arg(long)]
    pub no_index_cache: bool,
    /// Print one JSON object as the last line of stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write the delivered sample keys, one per line, to FILE.
    #[arg(long, value_name = "FILE")]
    pub keys_out: Option<std::path::PathBuf>,
    /// For the embedded default: shards to generate.
    #[arg(long, default_value_t = 32)]
    pub synth_shards: usize,
    /// For the embedded default: bytes per generated shard.
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes)]
    pub synth_shard_bytes: u64,
    /// For the embedded default: write .tar.zst shards.
    #[arg(long)]
    pub synth_zstd: bool,
    /// object_store option KEY=VALUE (e.g. aws_endpoint=http://127.0.0.1:9000); repeatable.
    #[arg(long = "store-opt", value_parser = super::parse_store_opt)]
    pub store_opts: Vec<(String, String)>,
    /// Samples per second one GPU consumes, for the verdict [default: 2500,
    /// about an H100 training ResNet-50 in mixed precision].
    #[arg(long, default_value_t = 2500.0)]
    pub gpu_samples_per_s: f64,
    /// Run static concurrencies 1, 2, 4, … (up to what the memory budget
    /// allows) and auto on the same data, and compare them.
    #[arg(long)]
    pub sweep: bool,
    /// With --sweep: repeat the whole sweep N times (auto first in every
    /// other round) and report medians, so one noisy run does not decide.
    #[arg(long, default_value_t = 1, requires = "sweep", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Make the store behave like a remote one: `remote` adds 20 ms to the
    /// first byte of each request and caps each at 50 MB/s (labelled emulated).
    #[arg(long, value_name = "PROFILE", value_parser = ["remote"])]
    pub emulate: Option<String>,
    /// Draw goodput, concurrency and part size over time into FILE (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics while the run lasts.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Write the metrics as they stand at the end of the run to FILE
    /// (Prometheus text format: e.g. for node_exporter's textfile collector).
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<std::path::PathBuf>,
    /// Start the autotuner cold (from one request, or 8 on a far store)
    /// instead of where the last run
    /// against this endpoint and bucket settled, and save nothing (the
    /// cache: $XDG_CACHE_HOME/stoker/tuning.json, or STOKER_TUNING_CACHE).
    #[arg(long)]
    pub no_tuning_cache: bool,
    /// Deliver into the memory of CUDA device N (the whole path: collation
    /// into a page-locked ring, copies on a stream), and measure a plain
    /// pinned host-to-device copy of the same bytes as the bound. Without
    /// CUDA: exits 2.
    #[arg(long, value_name = "N", conflicts_with = "sweep")]
    pub gpu: Option<usize>,
    /// Emulate a training step of X ms after each batch and report the
    /// input stall: the share of time, after the first batch, spent waiting
    /// for the next one.
    #[arg(long, value_name = "X", value_parser = parse_step_ms)]
    pub consumer_step_ms: Option<f64>,
    /// With --gpu: read every batch back from device memory and compare it
    /// with the ring's bytes (a test of the path; slow).
    #[arg(long, requires = "gpu", hide = true)]
    pub gpu_verify: bool,
}

fn parse_step_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=60_000.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}` is not a step in ms between 0 and 60000")),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let server = match args.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-addr {addr}"))?;
            eprintln!("Metrics: http://{}/metrics", listener.local_addr()?);
            Some(tokio::spawn(crate::metrics::http::serve(listener, live_metrics())))
        }
        None => None,
    };
    let report = bench(&args).await;
    if let Some(server) = server {
        server.abort();
    }
    let report = report?;
    if let Some(path) = &args.metrics_out {
        let text = crate::metrics::render(&live_metrics().figures())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        eprintln!("{}", report.table());
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}

/// Runs the benchmark (or the sweep) and returns the report of the run
/// with the settings asked for (auto by default).
pub async fn bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    if let Some(ordinal) = args.gpu {
        // Before any data is generated or listed: no CUDA, no run.
        let count = crate::gpu::probe()?;
        if ordinal >= count {
            return Err(crate::gpu::GpuError::NoSuchDevice { ordinal, count }.into());
        }
    }
    let opts = StoreOptions { options: args.store_opts.clone() };
    let fetch = fetch_config(args, args.fetch.concurrency);
    fetch.validate()?;
    if let Some(path) = &args.plot
        && !matches!(path.extension().and_then(|e| e.to_str()), Some("svg" | "png"))
    {
        anyhow::bail!(crate::Error::Config(format!(
            "--plot writes SVG or PNG: name the file *.svg or *.png, not {}",
            path.display()
        )));
    }
    let cfg = pipeline_config(args);
    cfg.validate()?;
    // The temporary directory lives until the end of the run.
    let mut _tmp = None;
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("stoker-bench-")
                .tempdir()
                .context("creating a temporary directory")?;
            let cfg = SynthConfig {
                shards: args.synth_shards,
                shard_bytes: args.synth_shard_bytes,
                zstd: args.synth_zstd,
                ..SynthConfig::default()
            };
            let url = format!("{}/", dir.path().display());
            eprintln!(
                "No URL given: generating a synthetic dataset ({} shards × {}) in {url}",
                cfg.shards,
                human_bytes(cfg.shard_bytes as f64)
            );
            write_dataset(&url, &opts, &cfg).await?;
            _tmp = Some(dir);
            url
        }
    };
    let mut dataset = Dataset::open_with(&url, &opts, &fetch).await?;
    let emulated = args.emulate.is_some();
    if emulated {
        dataset.store = Arc::new(EmulatedStore::new(dataset.store.clone(), RemoteProfile::REMOTE));
        eprintln!("Emulating a remote store: +20 ms to first byte, 50 MB/s per request.");
    }
    let (cfg, split) = split_config(args, &dataset, &fetch, cfg).await?;
    if args.sweep {
        // Every auto round starts cold: the sweep measures the tuner.
        return sweep(args, &dataset, emulated, cfg).await;
    }
    let cache = (fetch.auto_concurrency && !args.no_tuning_cache)
        .then(TuningCache::default_location)
        .flatten()
        .map(|cache| {
            let key = cache_key(
                &dataset.url.endpoint(),
                s3_endpoint(&dataset.url, &opts).as_deref(),
                args.emulate.as_deref(),
            );
            (cache, key)
        });
    let mut fetch = fetch;
    let mut cached_age = None;
    if let Some((cache, key)) = &cache
        && let Some(found) = cache.load(key)
    {
        fetch.warm_start = Some(found.warm);
        cached_age = Some(found.age_secs);
        eprintln!(
            "Starting from the tuning cache: concurrency {}, part size {} (settled {} s ago; --no-tuning-cache to start cold).",
            found.warm.concurrency,
            human_bytes(found.warm.part_bytes as f64),
            found.age_secs
        );
    }
    let (mut report, settled) = run_once(Run {
        args,
        dataset: &dataset,
        fetch,
        cfg,
        emulated,
        show_progress: true,
        duration: args.duration,
    })
    .await?;
    report.split = split;
    if cached_age.is_some() {
        report.concurrency.limit.source = Provenance::Cached;
        if report.part_bytes.source == Provenance::Autotuned {
            report.part_bytes.source = Provenance::Cached;
        }
    }
    if let Some((cache, key)) = cache {
        let saved = match settled {
            Some(warm) => cache
                .save(&key, warm)
                .inspect_err(|e| {
                    tracing::warn!(path = %cache.path().display(), error = %e, "Tuning cache not saved.");
                })
                .is_ok(),
            None => false,
        };
        report.tuning_cache = Some(TuningCacheReport {
            path: cache.path().display().to_string(),
            key,
            warm_start_age_s: cached_age,
            saved,
        });
    }
    Ok(report)
}

/// The run's pipeline settings with its split by samples, if it has one
/// (indexing first what is not indexed: on an engine of its own, so the
/// run's autotuner starts as it would).
async fn split_config(
    args: &BenchArgs,
    dataset: &Dataset,
    fetch: &FetchConfig,
    mut cfg: PipelineConfig,
) -> anyhow::Result<(PipelineConfig, Option<crate::index::SplitReport>)> {
    let cache = if args.no_index_cache { None } else { IndexCache::default_location() };
    cfg.index_cache = cache.clone();
    if !crate::index::needs_split(args.even, &cfg.order, dataset.shards.len()) {
        return Ok((cfg, None));
    }
    // Without a cache the index lives for this run only.
    let scratch;
    let cache = match &cache {
        Some(cache) => cache.clone(),
        None => {
            scratch = tempfile::tempdir().context("creating a temporary directory")?;
            IndexCache::at(scratch.path())
        }
    };
    let engine = FetchEngine::for_endpoint(dataset.store.clone(), fetch.clone(), "index");
    let split = crate::index::sample_split(dataset, &engine, &cache, &cfg.order, args.even).await?;
    let report = split.map(|(split, report)| {
        cfg.split = Some(split);
        report
    });
    Ok((cfg, report))
}

fn fetch_config(args: &BenchArgs, concurrency: ConcurrencyArg) -> FetchConfig {
    FetchArgs { concurrency, ..args.fetch.clone() }.config()
}

fn pipeline_config(args: &BenchArgs) -> PipelineConfig {
    PipelineConfig {
        order: OrderConfig {
            seed: args.seed,
            epoch: args.epoch,
            rank: args.rank,
            world_size: args.world_size,
            shuffle_shards: !args.no_shard_shuffle,
            shuffle_buffer: args.shuffle_buffer,
        },
        epochs: args.epochs,
        batch_size: args.batch_size,
        drop_last: args.drop_last,
        ..PipelineConfig::default()
    }
}

/// Static concurrencies 1, 2, 4, … up to what the memory budget allows, and
/// auto, each on the same data, `--rounds` times (auto last, then first,
/// against drift); prints each setting's median round and the median of
/// the rounds' auto / best-static ratios, and returns auto's median round.
async fn sweep(
    args: &BenchArgs,
    dataset: &Dataset,
    emulated: bool,
    cfg: PipelineConfig,
) -> anyhow::Result<BenchReport> {
    // Each setting runs long enough for the autotuner to settle: 10 s (or
    // --duration), looping over the data.
    let duration = Some(args.duration.unwrap_or(10.0));
    let cfg = PipelineConfig { epochs: 1_000_000, ..cfg };
    let base = fetch_config(args, ConcurrencyArg::Fixed(1));
    let max = ((base.memory_budget_bytes / 2) / base.part_bytes.max(1)).clamp(1, 1024) as usize;
    let statics: Vec<usize> =
        std::iter::successors(Some(1), |c| Some(c * 2)).take_while(|c| *c <= max).collect();
    // Per setting (statics, then auto), one report per round.
    let mut runs: Vec<Vec<BenchReport>> = vec![Vec::new(); statics.len() + 1];
    let mut round_ratios = Vec::new();
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..=statics.len()).collect();
        if round % 2 == 1 {
            order.rotate_right(1);
        }
        for i in order {
            let (label, concurrency) = match statics.get(i) {
                Some(c) => (format!("concurrency {c:>4}"), ConcurrencyArg::Fixed(*c)),
                None => ("auto            ".to_string(), ConcurrencyArg::Auto),
            };
            let (r, _) = run_once(Run {
                args,
                dataset,
                fetch: fetch_config(args, concurrency),
                cfg: cfg.clone(),
                emulated,
                show_progress: false,
                duration,
            })
            .await?;
            eprintln!("sweep round {}: {label}: {}/s", round + 1, human_bytes(r.bytes_per_s));
            if r.batches == 0 {
                tracing::warn!(
                    "sweep round {}: {} delivered no batch in {:.1} s; raise --duration",
                    round + 1,
                    label.trim(),
                    r.seconds
                );
            }
            runs[i].push(r);
        }
        let best = runs[..statics.len()]
            .iter()
            .filter_map(|r| r.last())
            .map(|r| r.bytes_per_s)
            .fold(0.0, f64::max);
        let auto = runs[statics.len()].last().map_or(0.0, |r| r.bytes_per_s);
        round_ratios.push(auto / best.max(1e-9));
    }
    // Each row is one setting's median round (by goodput), so its
    // requests/s, 503s and CPU come from the same run as its goodput.
    let auto_runs = runs.pop().unwrap_or_default();
    let Some(auto) = median_round(&auto_runs).cloned() else {
        anyhow::bail!("the sweep ran no auto round");
    };
    let rows: Vec<(String, BenchReport)> = statics
        .iter()
        .zip(&runs)
        .filter_map(|(c, rs)| median_round(rs).map(|r| (c.to_string(), r.clone())))
        .collect();
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.set_header(["concurrency", "goodput", "requests/s", "503s", "CPU s"]);
    let mut sweep = Vec::new();
    for (label, r) in rows
        .iter()
        .chain(std::iter::once(&(format!("auto ({:.0})", auto.concurrency.settled), auto.clone())))
    {
        table.add_row([
            label.clone(),
            format!("{}/s", human_bytes(r.bytes_per_s)),
            format!("{:.0}", r.requests as f64 / r.seconds.max(1e-9)),
            r.throttled.to_string(),
            format!("{:.2}", r.cpu_seconds),
        ]);
        sweep.push(SweepRow {
            concurrency: label.clone(),
            bytes_per_s: r.bytes_per_s,
            requests_per_s: r.requests as f64 / r.seconds.max(1e-9),
            throttled: r.throttled,
            cpu_seconds: r.cpu_seconds,
        });
    }
    let ratio = median(round_ratios.clone());
    let rounds = if round_ratios.len() > 1 {
        let each: Vec<String> = round_ratios.iter().map(|r| format!("{r:.2}")).collect();
        // Each round's ratio pairs settings measured minutes apart, not
        // the rows' medians, which may come from different rounds.
        format!(
            " (median of {} rounds' ratios: {}; the rows are each setting's median round)",
            each.len(),
            each.join(", ")
        )
    } else {
        String::new()
    };
    eprintln!(
        "{table}
auto / best static = {ratio:.2}{rounds}"
    );
    let mut report = auto;
    report.sweep = Some(SweepReport { rows: sweep, auto_over_best_static: ratio, round_ratios });
    Ok(report)
}

/// The run with the median goodput (the lower middle for an even count).
fn median_round(rs: &[BenchReport]) -> Option<&BenchReport> {
    let mut sorted: Vec<&BenchReport> = rs.iter().collect();
    sorted.sort_by(|a, b| a.bytes_per_s.total_cmp(&b.bytes_per_s));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// This process's runs, as its metrics show them: the engine of the run
/// going on, and the figures earlier runs ended with (counters sum over
/// them all: a sweep's runs add up; the engines themselves are let go).
#[derive(Debug, Default)]
pub struct BenchMetrics {
    runs: std::sync::Mutex<BenchRuns>,
    delivered: crate::metrics::Delivery,
}

#[derive(Debug, Default)]
struct BenchRuns {
    ended: Vec<crate::metrics::EngineFigures>,
    current: Option<(String, Arc<FetchEngine>)>,
}

impl BenchMetrics {
    /// A run starts on `engine`: the one before it ends.
    fn start_run(&self, endpoint: String, engine: Arc<FetchEngine>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((endpoint, e)) = runs.current.take() {
            runs.ended.push(crate::metrics::EngineFigures::of(&endpoint, &e));
        }
        runs.current = Some((endpoint, engine));
    }
}

/// The one `BenchMetrics` of this process.
pub fn live_metrics() -> Arc<BenchMetrics> {
    static LIVE: std::sync::LazyLock<Arc<BenchMetrics>> = std::sync::LazyLock::new(Arc::default);
    LIVE.clone()
}

impl MetricsSource for BenchMetrics {
    fn figures(&self) -> crate::metrics::Figures {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        // The current run last: its gauges are the ones shown.
        let mut engines = runs.ended.clone();
        let budget = runs.current.as_ref().map(|(endpoint, e)| {
            engines.push(crate::metrics::EngineFigures::of(endpoint, e));
            e.budget.clone()
        });
        crate::metrics::Figures {
            engines,
            memory_used_bytes: budget.as_ref().map_or(0, |b| b.used_bytes()),
            memory_budget_bytes: budget.as_ref().map_or(0, |b| b.total_bytes()),
            delivered: self.delivered.delivered(),
            daemon: None,
            gpus: Vec::new(),
        }
    }
}

/// One run of the pipeline over `dataset` with `fetch` settings.
struct Run<'a> {
    args: &'a BenchArgs,
    dataset: &'a Dataset,
    fetch: FetchConfig,
    cfg: PipelineConfig,
    emulated: bool,
    show_progress: bool,
    duration: Option<f64>,
}

/// Runs `run`, returning its report and what the autotuner settled on (for
/// the tuning cache).
async fn run_once(run: Run<'_>) -> anyhow::Result<(BenchReport, Option<WarmStart>)> {
    let dataset = run.dataset;
    match run.args.gpu {
        None => {
            let start = |engine, cfg| Ok((Pipeline::start(dataset, engine, cfg)?, HostConsumer));
            run_with(run, start).await
        }
        Some(ordinal) => {
            let verify = run.args.gpu_verify;
            let start =
                move |engine, cfg| super::bench_gpu::start(dataset, engine, cfg, ordinal, verify);
            run_with(run, start).await
        }
    }
}

/// [`run_once`] with batches handed to `C` (host memory or a GPU).
async fn run_with<C: Consumer>(
    run: Run<'_>,
    start: impl FnOnce(Arc<FetchEngine>, PipelineConfig) -> anyhow::Result<(Pipeline<C::Batch>, C)>,
) -> anyhow::Result<(BenchReport, Option<WarmStart>)> {
    let Run { args, dataset, fetch, cfg, emulated, show_progress, duration } = run;
    let endpoint = dataset.url.endpoint();
    let engine = FetchEngine::for_endpoint(dataset.store.clone(), fetch.clone(), &endpoint);
    let metrics = live_metrics();
    metrics.start_run(endpoint, engine.clone());
    let cpu_start = cpu_seconds();
    let started = Instant::now();
    let (mut pipeline, mut consumer) = start(engine.clone(), cfg)?;
    let step = args.consumer_step_ms.map(|ms| Duration::from_secs_f64(ms / 1e3));
    let mut stall = crate::gpu::stall::StallClock::default();
    let sampler = ConcurrencySampler::spawn(engine.clone());
    let progress = if show_progress { progress_bar() } else { ProgressBar::hidden() };
    let deadline = duration.map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mut keys_out = match (&args.keys_out, show_progress) {
        (Some(path), true) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        _ => None,
    };

    let (mut bytes, mut samples, mut batches) = (0u64, 0u64, 0u64);
    let mut first_batch = None;
    let mut first_second_bytes = 0u64;
    let mut waits = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut duplicates = 0u64;
    let mut epochs_completed = 0u64;
    let mut current_epoch = None;
    let mut delivery = super::epoch_boundary::DeliveryLog::default();
    let mut finished = false;
    loop {
        let asked = Instant::now();
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), pipeline.next()).await {
                Ok(n) => n,
                Err(_) => break,
            },
            None => pipeline.next().await,
        };
        let Some(batch) = next else {
            finished = true;
            break;
        };
        let batch = batch?;
        waits.push(asked.elapsed().as_secs_f64());
        stall.batch(asked.elapsed());
        first_batch.get_or_insert_with(|| started.elapsed().as_secs_f64());
        let (epoch, num_samples, payload) =
            (C::epoch(&batch), C::num_samples(&batch), C::payload_bytes(&batch));
        if current_epoch.is_some_and(|e| e != epoch) {
            epochs_completed += 1;
            seen.clear();
        }
        current_epoch = Some(epoch);
        let mut write_err = None;
        consumer.keys(&batch, &mut |key| {
            if !seen.insert(key.to_string()) {
                duplicates += 1;
            }
            if let Some(out) = &mut keys_out
                && let Err(e) = writeln!(out, "{key}")
            {
                write_err.get_or_insert(e);
            }
        });
        if let Some(e) = write_err {
            return Err(e.into());
        }
        if first_batch.is_some_and(|f| started.elapsed().as_secs_f64() < f + 1.0) {
            first_second_bytes += payload;
        }
        delivery.push(started.elapsed().as_secs_f64(), payload, epoch);
        bytes += payload;
        samples += num_samples as u64;
        batches += 1;
        metrics.delivered.add_batch(num_samples as u64, payload);
        consumer.take(&pipeline, batch)?;
        progress.set_position(bytes);
        if let Some(step) = step {
            // The training step the batch feeds: the next one is asked for
            // after it (a stall is time waited beyond it).
            tokio::time::sleep(step).await;
        }
    }
    let wall = started.elapsed();
    let gpu = consumer.finish(wall.as_secs_f64())?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let samples_dropped = pipeline.stats.samples_dropped.load(std::sync::atomic::Ordering::Relaxed);
    drop(pipeline);
    let input_stall = (args.consumer_step_ms.is_some() || args.gpu.is_some())
        .then(|| stall.stall(wall, args.consumer_step_ms));
    progress.finish_and_clear();
    if let Some(out) = &mut keys_out {
        out.flush()?;
    }
    let (mean, max) = sampler.finish();
    let stats = engine.stats.snapshot();
    // A run cut short by --duration has no meaningful unique count.
    let full = finished && current_epoch.is_some();
    if full {
        epochs_completed += 1;
    }
    let tuning = engine.tuning.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let settled_state = *engine.settled.lock().unwrap_or_else(|p| p.into_inner());
    // The main run is plotted; in a sweep, the auto run (statics have no
    // tuning to show).
    if let (Some(path), true) = (&args.plot, show_progress || fetch.auto_concurrency) {
        let title = format!(
            "stoker bench {}{}",
            dataset.url.to_url(),
            if emulated { " (emulated remote)" } else { "" }
        );
        super::plot::plot_tuning(path, &tuning, &title)?;
        eprintln!("Plot written to {}", path.display());
    }
    let auto = |on: bool| {
        if on { Provenance::Autotuned } else { Provenance::User }
    };
    let (settled, part) = settled_settings(&tuning, fetch.concurrency, fetch.part_bytes);
    let concurrency = Chosen { value: engine.limit.limit(), source: auto(fetch.auto_concurrency) };
    let part_source = match (fetch.auto_part_bytes, args.fetch.part_bytes) {
        (true, _) => Provenance::Autotuned,
        (false, Some(_)) => Provenance::User,
        (false, None) => Provenance::Default,
    };
    let part_bytes = Chosen { value: part, source: part_source };
    let budget = Chosen {
        value: fetch.memory_budget_bytes,
        source: if args.fetch.memory_budget.is_some() {
            Provenance::User
        } else {
            Provenance::Default
        },
    };
    let samples_per_s = samples as f64 / seconds.max(1e-9);
    let bytes_per_s = bytes as f64 / seconds.max(1e-9);
    let verdict = Verdict::new(samples_per_s, bytes_per_s, args.gpu_samples_per_s, settled, part);
    // Over the first second of delivery, or what there was of it.
    let first_second = first_batch.map_or(0.0, |f| (seconds - f).clamp(1e-3, 1.0));
    let report = BenchReport {
        url: dataset.url.to_url(),
        synthetic: args.url.is_none(),
        emulated,
        shards: dataset.shards.len(),
        rank: args.rank,
        world_size: args.world_size,
        seed: args.seed,
        bytes,
        samples,
        batches,
        seconds,
        bytes_per_s,
        samples_per_s,
        fetched_bytes: stats.bytes,
        requests: stats.requests,
        retries: stats.retries,
        errors: stats.errors,
        throttled: stats.throttled,
        hedges: stats.hedges,
        hedge_wins: stats.hedge_wins,
        time_to_first_batch_s: first_batch.unwrap_or(seconds),
        batch_latency_s: Percentiles::of(&mut waits),
        concurrency: ConcurrencyReport { mean, max, limit: concurrency, settled },
        part_bytes,
        memory_budget_bytes: budget,
        batch_size: args.batch_size,
        cpu_seconds: cpu,
        epochs_completed,
        unique_samples: full.then_some(seen.len() as u64),
        duplicate_samples: full.then_some(duplicates),
        samples_dropped,
        verdict,
        sweep: None,
        first_second_bytes_per_s: first_second_bytes as f64 / first_second,
        tuning_cache: None,
        epoch_boundaries: delivery.boundaries(),
        split: None,
        input_stall,
        gpu,
    };
    Ok((report, settled_state))
}

/// What the run settled on: the median concurrency limit over the second
/// half of the tuning windows, and the last part size.
fn settled_settings(tuning: &[TunePoint], fixed_concurrency: usize, fixed_part: u64) -> (f64, u64) {
    if tuning.is_empty() {
        return (fixed_concurrency as f64, fixed_part);
    }
    let mut late: Vec<usize> = tuning[tuning.len() / 2..].iter().map(|p| p.concurrency).collect();
    late.sort_unstable();
    let part = tuning.last().map_or(fixed_part, |p| p.part_bytes);
    (late[late.len() / 2] as f64, part)
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {bytes} delivered ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Process CPU time, user + system.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
            secs(u.user_time()) + secs(u.system_time())
        }
        Err(_) => 0.0,
    }
}

/// Samples requests in flight every 10 ms for the mean and max.
struct ConcurrencySampler {
    task: tokio::task::JoinHandle<(f64, usize)>,
    stop: Arc<tokio::sync::Notify>,
}

impl ConcurrencySampler {
    fn spawn(engine: Arc<FetchEngine>) -> ConcurrencySampler {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut sum, mut n, mut max) = (0usize, 0usize, 0usize);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let now = engine.limit.in_flight();
                        sum += now;
                        n += 1;
                        max = max.max(now);
                    }
                    () = stopped.notified() => break,
                }
            }
            (sum as f64 / n.max(1) as f64, max)
        });
        ConcurrencySampler { task, stop }
    }

    fn finish(self) -> (f64, usize) {
        self.stop.notify_one();
        futures::executor::block_on(self.task).unwrap_or((0.0, 0))
    }
}
