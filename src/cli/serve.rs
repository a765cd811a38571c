//! `stoker serve`: the node daemon's flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::fetch_args::FetchArgs;
use super::size_arg::parse_bytes;
use crate::serve::{ServeConfig, SessionDefaults};
use crate::source::StoreOptions;

/// Flags of `stoker serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of settings: any flag below by its long name
    /// (`ring-memory = "16GiB"`). Flags win over STOKER_<FLAG> environment
    /// variables, which win over the file. See `stoker config show`.
    #[arg(long, value_name = "FILE", env = "STOKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Unix socket clients connect to (mode 0660); the ring socket is this
    /// path plus ".ring".
    #[arg(long, env = "STOKER_SOCKET", default_value = "/run/stoker/stoker.sock")]
    pub socket: PathBuf,
    /// Also serve gRPC health (only: sessions, Release and Stats need the
    /// Unix socket's peer check) on this TCP address, e.g. 0.0.0.0:7070 for
    /// kubelet gRPC probes.
    #[arg(long, value_name = "ADDR")]
    pub tcp: Option<SocketAddr>,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Ring of a session that asks for no size (a batch must fit one slot:
    /// ring / slots).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub ring_bytes: u64,
    /// Slots a session's ring is cut into.
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// Cap on all sessions' rings together; a session past it is refused
    /// (RESOURCE_EXHAUSTED). Ring pages are only resident once written.
    #[arg(long, default_value = "8GiB", value_parser = parse_bytes)]
    pub ring_memory: u64,
    /// Sessions one user (the client's UID) may hold at once.
    #[arg(long, default_value_t = 256)]
    pub max_sessions_per_user: usize,
    /// Cap on one user's rings together (default: --ring-memory). Set it
    /// below --ring-memory where several users share a node.
    #[arg(long, value_parser = parse_bytes)]
    pub ring_memory_per_user: Option<u64>,
    /// Dataset URLs clients may name: a pattern ending in '*' allows every
    /// URL it prefixes (s3://bucket/train/*, file:///data/*, '*'); others
    /// must match whole. Repeatable. Without it: object stores and http(s),
    /// no local files, and never link-local or metadata addresses unless a
    /// pattern names them.
    #[arg(long = "allow-url", value_name = "PATTERN")]
    pub allow_urls: Vec<String>,
    /// CUDA devices sessions may ask for device mode on: `all`, `none`, or
    /// ordinals (`0,1`). Without CUDA on the node, device mode is refused
    /// whatever this says (FAILED_PRECONDITION) and host mode works.
    #[arg(long, default_value = "all", value_parser = crate::gpu::parse_gpus)]
    pub gpus: crate::gpu::GpuSelection,
    /// Batches built ahead of the client per session.
    #[arg(long, default_value_t = 2)]
    pub prefetch: usize,
    /// object_store option KEY=VALUE for every session; repeatable.
    #[arg(long = "store-opt", value_parser = super::parse_store_opt)]
    pub store_opts: Vec<(String, String)>,
    /// Seconds a SIGTERM waits for sessions to end before exiting.
    #[arg(long, default_value_t = 8.0)]
    pub drain_secs: f64,
    /// Serve Prometheus metrics at http://ADDR/metrics (and /healthz,
    /// /readyz), e.g. 0.0.0.0:9464. See docs/METRICS.md.
    #[arg(long, value_name = "ADDR", env = "STOKER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Report ready (gRPC health, /readyz) only once this dataset URL lists:
    /// the store is reachable with the daemon's credentials. Retried every 5 s.
    #[arg(long, value_name = "URL")]
    pub ready_url: Option<String>,
    /// Where shard indexes (sample counts and offsets) are kept, for
    /// sessions that split epochs by samples (`even`, or more ranks than
    /// shards) [default: $XDG_CACHE_HOME/stoker/index, or
    /// STOKER_INDEX_CACHE; else a directory under /tmp].
    #[arg(long, value_name = "DIR")]
    pub index_cache: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.slots < 2 {
        anyhow::bail!("--slots must be at least 2 (one filling, one with the client)");
    }
    let cfg = ServeConfig {
        socket: args.socket,
        tcp: args.tcp,
        fetch: args.fetch.config(),
        store: StoreOptions { options: args.store_opts },
        defaults: SessionDefaults {
            ring_bytes: args.ring_bytes,
            ring_memory: args.ring_memory,
            max_sessions_per_user: args.max_sessions_per_user.max(1),
            ring_memory_per_user: args.ring_memory_per_user.unwrap_or(args.ring_memory),
            urls: crate::serve::UrlPolicy::new(args.allow_urls).map_err(anyhow::Error::msg)?,
            slots: args.slots,
            gpus: args.gpus,
            prefetch_batches: args.prefetch.max(1),
            shuffle_bytes: crate::pipeline::PipelineConfig::default().shuffle_bytes,
            index_cache: match args.index_cache {
                Some(dir) => crate::index::IndexCache::at(dir),
                None => crate::index::IndexCache::default_location().unwrap_or_else(|| {
                    crate::index::IndexCache::at(std::env::temp_dir().join("stoker-index"))
                }),
            },
        },
        drain_timeout: Duration::from_secs_f64(args.drain_secs.clamp(0.0, 3600.0)),
        metrics: args.metrics_addr,
        ready_url: args.ready_url,
    };
    crate::serve::run(cfg).await
}
