//! Starting, running and draining the daemon.
//!
//! ```text
//!  bind <socket> (0660) + <socket>.ring (0660) [+ TCP] ─▶ serve ─SIGTERM/SIGINT─▶ draining:
//!    health NOT_SERVING, no new sessions, streams end with UNAVAILABLE after their batch in flight
//!    ─▶ sessions gone (or drain timeout) ─▶ servers stop ─▶ socket files removed ─▶ exit
//! ```

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;

use super::engines::Engines;
use super::proto::stoker_server::StokerServer;
use super::ring_socket;
use super::service::{DaemonState, SessionDefaults, StokerService};
use crate::fetch::FetchConfig;
use crate::source::StoreOptions;

/// Settings of `stoker serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    pub fetch: FetchConfig,
    pub store: StoreOptions,
    pub defaults: SessionDefaults,
    /// How long a drain waits for sessions to end before exiting anyway.
    pub drain_timeout: Duration,
    /// Prometheus metrics, /healthz and /readyz over HTTP.
    pub metrics: Option<SocketAddr>,
    /// Readiness waits until this dataset URL lists (the store is
    /// reachable with the daemon's credentials).
    pub ready_url: Option<String>,
}

/// The ring socket's path for a gRPC socket path.
pub fn ring_socket_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".ring");
    PathBuf::from(name)
}

/// Binds a Unix socket with mode 0660, replacing a stale socket file but
/// never a live daemon's or a file that is not a socket.
fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; remove it or pick another --socket",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another stoker is serving on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Serves until SIGTERM or SIGINT, then drains and returns.
pub async fn run(cfg: ServeConfig) -> anyhow::Result<()> {
    cfg.fetch.validate()?;
    // `--gpus` naming a device the node lacks is a typo, said at start;
    // without CUDA at all the daemon serves host mode whatever it names.
    if let Ok(count) = crate::gpu::probe() {
        cfg.defaults
            .gpus
            .resolve(count)
            .map_err(|e| crate::Error::Config(format!("--gpus: {e} (see nvidia-smi -L)")))?;
    }
    let ring_path = ring_socket_path(&cfg.socket);
    // TCP first: a failure there leaves no socket files behind.
    let tcp = bind_tcp(cfg.tcp).await?;
    let metrics = bind_tcp(cfg.metrics).await?;
    let listener = bind_unix(&cfg.socket)?;
    let ring_listener = match bind_unix(&ring_path) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&cfg.socket);
            return Err(e);
        }
    };
    let state = Arc::new(DaemonState {
        engines: Engines::new(cfg.fetch.clone()),
        store: cfg.store.clone(),
        defaults: cfg.defaults.clone(),
        sessions: Default::default(),
        quotas: super::UserQuotas::new(super::UserLimits {
            sessions: cfg.defaults.max_sessions_per_user,
            ring_bytes: cfg.defaults.ring_memory_per_user,
        }),
        opening: tokio::sync::Semaphore::new(4),
        datasets: Default::default(),
        ring_bytes: Default::default(),
        draining: watch::channel(false).0,
        counters: Default::default(),
        gpus: gpu_telemetry(),
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    // Liveness answers at once; readiness ("" and the service) once the
    // checks below pass.
    health.set_service_status(LIVENESS, tonic_health::ServingStatus::Serving).await;
    health.set_not_serving::<StokerServer<StokerService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    check_memory_limit(&cfg);
    // Freed parts kept by the allocator count too: trim them to the budget.
    crate::alloc_trim::keep_resident_under(cfg.fetch.memory_budget_bytes);
    let readiness = tokio::spawn(become_ready(cfg.clone(), state.clone(), health.clone()));
    let service = StokerServer::new(StokerService { state: state.clone() });
    let (stop, stopped) = watch::channel(false);
    let stop_signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut servers = tokio::task::JoinSet::new();
    let unix = Server::builder()
        .add_service(health_service.clone())
        .add_service(service.clone())
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            stop_signal(stopped.clone()),
        );
    servers.spawn(async move { unix.await.context("serving the Unix socket") });
    let mut listening = format!("unix:{} (ring: {})", cfg.socket.display(), ring_path.display());
    if let Some(tcp) = tcp {
        listening.push_str(&format!(", tcp:{}", tcp.local_addr()?));
        // Health only: sessions (open, release, stats) belong on the Unix
        // socket, where the peer's UID is checked. Over TCP, anyone who
        // could reach the port could release another session's slot (its
        // batch then overwritten while held) or read its stats.
        let server = Server::builder()
            .add_service(health_service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(tcp), stop_signal(stopped));
        servers.spawn(async move { server.await.context("serving TCP") });
    }
    let ring_task = tokio::spawn(ring_socket::serve(ring_listener, state.clone()));
    let metrics_task = match metrics {
        Some(listener) => {
            listening.push_str(&format!(", metrics: http://{}/metrics", listener.local_addr()?));
            let source = Arc::new(super::daemon_metrics::DaemonMetrics(state.clone()));
            Some(tokio::spawn(crate::metrics::http::serve(listener, source)))
        }
        None => None,
    };
    tracing::info!("serving on {listening}");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let failed = tokio::select! {
        _ = term.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        Some(result) = servers.join_next() => Some(result),
    };
    if let Some(result) = failed {
        let _ = std::fs::remove_file(&cfg.socket);
        let _ = std::fs::remove_file(&ring_path);
        return result.context("a server task panicked")?;
    }

    // Drain: refuse new sessions, end the streams, wait for them to go.
    tracing::info!("draining ({} sessions)", state.session_count());
    readiness.abort();
    let started = Instant::now();
    state.draining.send_replace(true);
    health.set_not_serving::<StokerServer<StokerService>>().await;
    // "" is what kubelet's gRPC probe asks about by default.
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    while state.session_count() > 0 && started.elapsed() < cfg.drain_timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send_replace(true);
    let left = cfg.drain_timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(500));
    let _ =
        tokio::time::timeout(left, async { while servers.join_next().await.is_some() {} }).await;
    ring_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    let _ = std::fs::remove_file(&cfg.socket);
    let _ = std::fs::remove_file(&ring_path);
    tracing::info!("stopped after draining for {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The gRPC health service name kubelet's liveness probe asks about: it
/// answers SERVING while the process runs, ready or not (the default
/// name, "", is readiness).
pub const LIVENESS: &str = "liveness";

async fn bind_tcp(addr: Option<SocketAddr>) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?,
        )),
        None => Ok(None),
    }
}

/// Marks the daemon ready once `--ready-url` lists (retried every 5 s
/// until it does; the store may come up after the daemon).
async fn become_ready(
    cfg: ServeConfig,
    state: Arc<DaemonState>,
    health: tonic_health::server::HealthReporter,
) {
    if let Some(url) = &cfg.ready_url {
        let shown = crate::echo::redacted_url(url);
        loop {
            match crate::source::Dataset::open_with(url, &cfg.store, &cfg.fetch).await {
                Ok(d) => {
                    tracing::info!(url = %shown, shards = d.shards.len(), "store reachable");
                    break;
                }
                Err(e) => {
                    let error = crate::echo::bounded(&e.to_string(), 512);
                    tracing::warn!(url = %shown, %error, "not ready: the store is not reachable");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
    state.counters.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    health.set_serving::<StokerServer<StokerService>>().await;
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    tracing::info!("ready");
}

/// Ring pages and fetched parts count against the daemon's memory (its
/// container's limit, on Kubernetes): say so at start if the caps cannot
/// fit, rather than meet the OOM killer under load.
fn check_memory_limit(cfg: &ServeConfig) {
    let Some(limit) = cgroup_memory_limit() else { return };
    // Sized with room: the heap is trimmed and compacted to the budget
    // (`alloc_trim`; scripts/soak: RSS at most 1.17× budget + rings), but
    // that is reached from above, and a burst can overshoot for a moment.
    let budget = cfg.fetch.memory_budget_bytes;
    let caps = cfg.defaults.ring_memory.saturating_add(budget.saturating_add(budget / 4));
    if caps > limit {
        tracing::warn!(
            ring_memory = cfg.defaults.ring_memory,
            memory_budget = budget,
            memory_limit = limit,
            "--ring-memory plus 1.25 x --memory-budget exceed this container's memory \
             limit: busy sessions would be OOM-killed; lower them or raise the limit \
             (docs/OPERATIONS.md, sizing)"
        );
    }
}

/// The memory limit of this process's cgroup (v2, then v1), if it has one.
fn cgroup_memory_limit() -> Option<u64> {
    ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse::<u64>().ok())
        // cgroup v1 says "no limit" with a huge number.
        .find(|&n| n < 1 << 60)
}

/// The node's GPUs, sampled once a second for Stats and metrics (NVML,
/// where it loads; CUDA was probed at start).
fn gpu_telemetry() -> Option<crate::gpu::telemetry::Telemetry> {
    crate::gpu::telemetry::Telemetry::start(std::time::Duration::from_secs(1))
        .inspect_err(|e| tracing::info!("{e}: no GPU telemetry"))
        .ok()
}
