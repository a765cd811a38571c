//! `stoker bench [URL]`: run the whole data path and report what it delivers.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::report::{BenchReport, Chosen, ConcurrencyReport, Percentiles};
use super::size_arg::{human_bytes, parse_bytes};
use crate::fetch::{FetchConfig, FetchEngine, Provenance};
use crate::order::OrderConfig;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::source::{Dataset, StoreOptions};
use crate::synth::{SynthConfig, write_dataset};

/// Flags of `stoker bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Dataset: s3://bucket/train/shard-{000000..000511}.tar, s3://bucket/train/ (every
    /// .tar/.tar.zst below), gs://, az://, https://, file:// or a local path. Omit it to
    /// benchmark a generated 1 GiB synthetic dataset in a temporary directory.
    pub url: Option<String>,
    /// Range-GET requests in flight (process-wide) [default: 16].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Size of each range GET [default: 8MiB, the AWS CRT default].
    #[arg(long, value_parser = parse_bytes)]
    pub part_bytes: Option<u64>,
    /// Memory for fetched bytes not yet batched [default: 1GiB].
    #[arg(long, value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,
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
}

fn chosen<T: Copy>(user: Option<T>, default: T) -> Chosen<T> {
    match user {
        Some(value) => Chosen {
            value,
            source: Provenance::User,
        },
        None => Chosen {
            value: default,
            source: Provenance::Default,
        },
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = bench(&args).await?;
    if args.json {
        eprintln!("{}", report.table());
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.table());
    }
    Ok(())
}

/// Runs the benchmark and returns its report.
pub async fn bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let opts = StoreOptions {
        options: args.store_opts.clone(),
    };
    let defaults = FetchConfig::default();
    let concurrency = chosen(args.concurrency, defaults.concurrency);
    let part_bytes = chosen(args.part_bytes, defaults.part_bytes);
    let budget = chosen(args.memory_budget, defaults.memory_budget_bytes);
    let fetch = FetchConfig {
        concurrency: concurrency.value,
        part_bytes: part_bytes.value,
        memory_budget_bytes: budget.value,
        ..defaults
    };
    fetch.validate()?;
    let cfg = PipelineConfig {
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
    };
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

    let dataset = Dataset::open(&url, &opts).await?;
    let engine = FetchEngine::new(dataset.store.clone(), fetch);
    let cpu_start = cpu_seconds();
    let started = Instant::now();
    let mut pipeline = Pipeline::start(&dataset, engine.clone(), cfg)?;
    let sampler = ConcurrencySampler::spawn(engine.clone());
    let progress = progress_bar();
    let deadline = args
        .duration
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mut keys_out = match &args.keys_out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };

    let (mut bytes, mut samples, mut batches) = (0u64, 0u64, 0u64);
    let mut first_batch = None;
    let mut waits = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut duplicates = 0u64;
    let mut epochs_completed = 0u64;
    let mut current_epoch = None;
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
        first_batch.get_or_insert_with(|| started.elapsed().as_secs_f64());
        if current_epoch.is_some_and(|e| e != batch.epoch) {
            epochs_completed += 1;
            seen.clear();
        }
        current_epoch = Some(batch.epoch);
        for key in batch.keys() {
            if !seen.insert(key.to_string()) {
                duplicates += 1;
            }
            if let Some(out) = &mut keys_out {
                writeln!(out, "{key}")?;
            }
        }
        bytes += batch.payload_bytes();
        samples += batch.num_samples as u64;
        batches += 1;
        progress.set_position(bytes);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let samples_dropped = pipeline
        .stats
        .samples_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(pipeline);
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
    Ok(BenchReport {
        url: dataset.url.to_url(),
        synthetic: args.url.is_none(),
        shards: dataset.shards.len(),
        rank: args.rank,
        world_size: args.world_size,
        seed: args.seed,
        bytes,
        samples,
        batches,
        seconds,
        bytes_per_s: bytes as f64 / seconds.max(1e-9),
        samples_per_s: samples as f64 / seconds.max(1e-9),
        fetched_bytes: stats.bytes,
        requests: stats.requests,
        retries: stats.retries,
        errors: stats.errors,
        throttled: stats.throttled,
        time_to_first_batch_s: first_batch.unwrap_or(seconds),
        batch_latency_s: Percentiles::of(&mut waits),
        concurrency: ConcurrencyReport {
            mean,
            max,
            limit: concurrency,
        },
        part_bytes,
        memory_budget_bytes: budget,
        batch_size: args.batch_size,
        cpu_seconds: cpu,
        epochs_completed,
        unique_samples: full.then_some(seen.len() as u64),
        duplicate_samples: full.then_some(duplicates),
        samples_dropped,
    })
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
