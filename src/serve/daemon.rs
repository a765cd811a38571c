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
    let ring_path = ring_socket_path(&cfg.socket);
    // TCP first: a failure there leaves no socket files behind.
    let tcp = match cfg.tcp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
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
        ring_bytes: Default::default(),
        draining: watch::channel(false).0,
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<StokerServer<StokerService>>().await;
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
    eprintln!("stoker: serving on {listening}");

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
    eprintln!("stoker: draining ({} sessions)", state.session_count());
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
    let _ = std::fs::remove_file(&cfg.socket);
    let _ = std::fs::remove_file(&ring_path);
    eprintln!("stoker: stopped after draining for {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
