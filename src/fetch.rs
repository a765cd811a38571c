//! `fetch`: objects become ordered streams of parts, read as parallel
//! range-GETs under one process-wide concurrency limit and one memory budget.
//!
//! ```text
//!            ┌───────────── FetchEngine (one per process) ─────────────┐
//!  shards ──▶│ scheduler: HEAD ▸ plan parts ▸ reserve ▸ permit ▸ spawn │──▶ PartEvent (in order)
//!            │ ConcurrencyLimit (resizable)   MemoryBudget (bytes)     │
//!            └──────────────────────────────────────────────────────────┘
//! ```
//!
//! Each part is a range GET streamed into a buffer of its exact size (no
//! collect-then-copy: see DESIGN.md, measured facts), pinned to the object's
//! ETag, and retried with decorrelated-jitter backoff when the failure is
//! transient (5xx, 429, timeouts, resets, short bodies). Retries are ours, not
//! object_store's, so every one is counted and paced.

mod autotune_task;
mod backoff;
mod concurrency_limit;
mod demand_gauge;
mod fetch_stats;
mod hedge;
mod memory_budget;
mod open_pace;
mod part_data;
mod part_plan;
mod part_pool;
mod part_reader;
mod part_sharing;
mod rate_gate;
mod retry_budget;
mod retry_loop;
mod shard_stream;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::ObjectStore;

pub use backoff::Backoff;
pub use concurrency_limit::{ConcurrencyLimit, ConnPermit, RequestSlot};
pub use demand_gauge::{DemandGauge, DemandSnapshot};
pub use fetch_stats::{FetchSnapshot, FetchStats};
pub use hedge::{HedgeSignal, Race};
pub use memory_budget::{MAX_RESERVATION, MemoryBudget, PinCharge, Reservation};
pub use part_data::{PartData, WeakPart};
pub use part_plan::PartPlan;
pub use part_pool::{PartPool, pooled_bytes};
pub use part_reader::{fetch_part, fetch_part_chunks, head_shard};
pub use part_sharing::{Claim, PartKey, PartSharing};
pub use rate_gate::RateGate;
pub use retry_budget::{RetryBudget, RetryBudgetConfig};
pub use retry_loop::{GiveUp, RetryLoop};
pub use shard_stream::{PartEvent, ShardRead, spawn_shard_stream};

use crate::ErrorKind;
use crate::source::{ShardRef, chain, classify};

/// Where a configured value came from; shown next to it in `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    Default,
    User,
    Autotuned,
    /// Started where the last run against the endpoint settled (the
    /// tuning cache), then autotuned.
    Cached,
}

/// Fetch settings.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// 8 MiB: the AWS CRT default part size; large enough that transfer time
    /// dominates time to first byte on S3 (≈85 MB/s per connection).
    pub part_bytes: u64,
    /// 16: the knee of the loopback measurements in DESIGN.md (16–32 in
    /// flight saturate a local server). Used as is when `auto_concurrency`
    /// is off; `stoker bench` turns the autotuner on by default.
    pub concurrency: usize,
    /// 1 GiB: room for 128 parts of 8 MiB, far more than 16 in flight need,
    /// so the parser can run ahead while the consumer is slow.
    pub memory_budget_bytes: u64,
    /// Unbounded by default: the outage tolerance ends a request's retries
    /// (a count ended them after ~7 s once, and a 30 s SlowDown storm
    /// killed a benchmark). Tests set a few.
    pub max_attempts: u32,
    /// 2 minutes: how long a request may go without progress (every
    /// attempt failing) before it fails with a named error. Store outages
    /// and SlowDown storms of a minute are common; a job should ride them.
    pub outage_tolerance: Duration,
    /// 50 ms first backoff, capped at 5 s: a throttled store recovers in
    /// seconds, and longer sleeps only stall the pipeline.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Per attempt; see [`part_reader::default_request_timeout`].
    pub request_timeout: Duration,
    /// The shortest silence that counts as a stalled connection (2 s: a
    /// lossy path's retransmission timeouts back off to seconds); see
    /// [`FetchStats::stall_after`].
    pub stall_floor: Duration,
    /// 16 shards' HEAD requests ahead of the scheduler, so a shard's size is
    /// known before its first part is due.
    pub head_lookahead: usize,
    /// Let the autotuner choose concurrency (`--concurrency auto`, the
    /// default) and part size; `concurrency` and `part_bytes` are then only
    /// the starting points (or caps).
    pub auto_concurrency: bool,
    pub auto_part_bytes: bool,
    /// Pace requests with the process-wide AIMD rate limiter of the endpoint.
    pub rate_limit: bool,
    /// Race the part that holds up the line with a second request
    /// (`hedge`); on by default.
    pub hedge: bool,
    /// Where the autotuner starts instead of one request: what an earlier
    /// run against the endpoint settled on (`stoker bench`'s tuning cache).
    pub warm_start: Option<crate::autotune::WarmStart>,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            part_bytes: 8 << 20,
            concurrency: 16,
            memory_budget_bytes: 1 << 30,
            max_attempts: u32::MAX,
            outage_tolerance: Duration::from_secs(120),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(5),
            request_timeout: part_reader::default_request_timeout(),
            stall_floor: Duration::from_secs(2),
            head_lookahead: 16,
            auto_concurrency: false,
            auto_part_bytes: false,
            rate_limit: true,
            hedge: true,
            warm_start: None,
        }
    }
}

impl FetchConfig {
    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let err = |m: String| Err(crate::Error::Config(m));
        if self.concurrency == 0 {
            return err("--concurrency must be at least 1".into());
        }
        if self.part_bytes == 0 || self.part_bytes > MAX_RESERVATION {
            return err(format!("--part-bytes must be between 1 and {MAX_RESERVATION}"));
        }
        // Two parts must fit: one being parsed while the next is fetched.
        if self.part_bytes.saturating_mul(2) > self.memory_budget_bytes {
            return err(format!(
                "--part-bytes {} is more than half of --memory-budget {}",
                self.part_bytes, self.memory_budget_bytes
            ));
        }
        if self.max_attempts == 0 {
            return err("at least one attempt per request is needed".into());
        }
        Ok(())
    }
}

/// Errors while fetching shard bytes.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("shard {shard} not found: {detail}")]
    NotFound { shard: String, detail: String },
    #[error("access to shard {shard} denied (check credentials): {detail}")]
    AccessDenied { shard: String, detail: String },
    #[error(
        "shard {shard} changed while being read (at offset {offset}: ETag {expected} became {found})"
    )]
    ShardChanged { shard: String, offset: u64, expected: String, found: String },
    #[error("fetching shard {shard} bytes {}..{} failed after {attempts} attempt(s): {detail}", range.start, range.end)]
    Failed { shard: String, range: Range<u64>, attempts: u32, detail: String },
    #[error("looking up shard {shard} (HEAD) failed after {attempts} attempt(s): {detail}")]
    LookupFailed { shard: String, attempts: u32, detail: String },
    #[error("internal fetch error: {0}")]
    Internal(String),
    #[error("request for shard {shard} rejected: {detail}")]
    Rejected { shard: String, detail: String },
}

impl FetchError {
    /// Maps a permanent (or last) store error for `shard`.
    pub fn from_store(
        shard: &ShardRef,
        range: Option<Range<u64>>,
        attempts: u32,
        e: object_store::Error,
    ) -> FetchError {
        let class = classify(&e);
        let (shard, detail) = (shard.url.clone(), chain(&e));
        match class.kind {
            ErrorKind::NotFound => FetchError::NotFound { shard, detail },
            ErrorKind::PermissionDenied => FetchError::AccessDenied { shard, detail },
            ErrorKind::CorruptInput => FetchError::ShardChanged {
                shard,
                offset: range.map_or(0, |r| r.start),
                expected: "pinned".into(),
                found: detail,
            },
            _ if class.transient => {
                FetchError::Failed { shard, range: range.unwrap_or(0..0), attempts, detail }
            }
            _ => FetchError::Rejected { shard, detail },
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::NotFound { .. } => ErrorKind::NotFound,
            FetchError::AccessDenied { .. } => ErrorKind::PermissionDenied,
            FetchError::ShardChanged { .. } => ErrorKind::CorruptInput,
            FetchError::Failed { .. } | FetchError::LookupFailed { .. } => ErrorKind::Unavailable,
            FetchError::Rejected { .. } => ErrorKind::InvalidArgument,
            FetchError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The process-wide fetch engine: one store, one limit, one budget.
#[derive(Debug)]
pub struct FetchEngine {
    pub store: Arc<dyn ObjectStore>,
    pub config: FetchConfig,
    pub limit: Arc<ConcurrencyLimit>,
    pub budget: Arc<MemoryBudget>,
    pub pool: Arc<PartPool>,
    pub stats: Arc<FetchStats>,
    /// The consumer's side: ready-queue fill and waits.
    pub demand: Arc<DemandGauge>,
    /// The endpoint's request-rate limiter, when pacing is on.
    pub gate: Option<Arc<RateGate>>,
    /// What the autotuner chose, window by window (empty when pinned).
    pub tuning: Arc<std::sync::Mutex<Vec<TunePoint>>>,
    /// What the autotuner has settled on so far (for the tuning cache).
    pub settled: Arc<std::sync::Mutex<Option<crate::autotune::WarmStart>>>,
    /// Parts in flight or held, for other sessions on the same shards.
    pub sharing: Arc<PartSharing>,
    part_bytes: AtomicU64,
}

/// One autotuner window, for reports and plots.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TunePoint {
    pub t_secs: f64,
    pub goodput_bps: f64,
    pub concurrency: usize,
    pub part_bytes: u64,
    pub inflight: f64,
    pub phase: crate::autotune::Phase,
    /// How late the engine's timer fired in the window (saturated cores).
    pub timer_lag_secs: f64,
}

impl FetchEngine {
    /// An engine for `store`; `endpoint` (e.g. `s3://bucket`) names its
    /// process-wide rate limiter. With autotuning on and a tokio runtime
    /// current, the controller task starts here and stops with the engine.
    pub fn new(store: Arc<dyn ObjectStore>, config: FetchConfig) -> Arc<FetchEngine> {
        Self::for_endpoint(store, config, "")
    }

    pub fn for_endpoint(
        store: Arc<dyn ObjectStore>,
        config: FetchConfig,
        endpoint: &str,
    ) -> Arc<FetchEngine> {
        let budget = MemoryBudget::new(config.memory_budget_bytes);
        // Up to a quarter of the budget kept for reuse.
        let pool = PartPool::new(config.memory_budget_bytes / 4);
        Self::sharing(store, config, endpoint, budget, pool)
    }

    /// As [`FetchEngine::for_endpoint`], drawing on a memory budget and
    /// buffer pool shared with other engines (the daemon: one budget for
    /// every endpoint and session).
    pub fn sharing(
        store: Arc<dyn ObjectStore>,
        config: FetchConfig,
        endpoint: &str,
        budget: Arc<MemoryBudget>,
        pool: Arc<PartPool>,
    ) -> Arc<FetchEngine> {
        let controller = autotune_task::controller_for(&config);
        let start = controller.as_ref().map_or(config.concurrency, |c| c.concurrency());
        let (limit, paced) = open_pace::limit_for(start);
        let engine = Arc::new(FetchEngine {
            store,
            gate: config.rate_limit.then(|| {
                if endpoint.is_empty() { RateGate::new() } else { RateGate::for_endpoint(endpoint) }
            }),
            tuning: Default::default(),
            settled: Default::default(),
            demand: Default::default(),
            sharing: Default::default(),
            limit,
            budget,
            pool,
            stats: Arc::new(FetchStats::default()),
            part_bytes: AtomicU64::new(config.part_bytes.clamp(1, MAX_RESERVATION)),
            config,
        });
        if let Some(controller) = controller {
            autotune_task::spawn(&engine, controller);
        }
        if paced {
            open_pace::spawn(&engine);
        }
        engine
    }

    /// The part size for parts planned from now on.
    pub fn part_bytes(&self) -> u64 {
        self.part_bytes.load(Ordering::Relaxed)
    }

    /// Changes the part size for shards planned from now on.
    pub fn set_part_bytes(&self, bytes: u64) {
        self.part_bytes.store(bytes.clamp(1, MAX_RESERVATION), Ordering::Relaxed);
    }
}
