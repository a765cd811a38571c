//! What the daemon counts beyond its sessions' own counters (which go when
//! the session does), and the daemon's figures for a metrics scrape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::service::DaemonState;
use super::session::SessionStats;
use crate::metrics::{DaemonFigures, EngineFigures, Figures, http::MetricsSource};

/// Daemon-wide totals, ended sessions included.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    /// Every session's deliveries and reported waits.
    pub delivered: SessionStats,
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    /// Lifetimes of ended sessions, in microseconds.
    pub ended_session_us: AtomicU64,
    /// Readiness: the daemon takes sessions.
    pub ready: AtomicBool,
}

impl DaemonCounters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The daemon, as the metrics endpoint sees it.
#[derive(Debug)]
pub struct DaemonMetrics(pub Arc<DaemonState>);

impl MetricsSource for DaemonMetrics {
    fn figures(&self) -> Figures {
        let state = &self.0;
        let c = &state.counters;
        let sessions: Vec<_> =
            state.sessions.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut daemon = DaemonFigures {
            ready: self.ready(),
            sessions: sessions.len() as u64,
            sessions_opened: c.opened.load(Ordering::Relaxed),
            sessions_failed: c.failed.load(Ordering::Relaxed),
            sessions_refused: c.refused.load(Ordering::Relaxed),
            ring_bytes: state.ring_bytes.load(Ordering::Relaxed),
            ring_memory_bytes: state.defaults.ring_memory,
            consumer_wait_seconds: c.delivered.wait_us.load(Ordering::Relaxed) as f64 * 1e-6,
            ..Default::default()
        };
        let mut session_us = c.ended_session_us.load(Ordering::Relaxed);
        for s in &sessions {
            let slots = s.ring.slots().counts();
            daemon.slots_free += slots.free;
            daemon.slots_filling += slots.filling;
            daemon.slots_leased += slots.leased;
            let age = s.opened_at.elapsed().as_micros() as u64;
            session_us += age;
            let waited = s.stats.wait_us.load(Ordering::Relaxed);
            let fraction = waited as f64 / age.max(1) as f64;
            daemon.consumer_wait_fraction_max = daemon.consumer_wait_fraction_max.max(fraction);
        }
        daemon.session_seconds = session_us as f64 * 1e-6;
        Figures {
            engines: state
                .engines
                .all_named()
                .iter()
                .map(|(endpoint, e)| EngineFigures::of(endpoint, e))
                .collect(),
            memory_used_bytes: state.engines.budget.used_bytes(),
            memory_budget_bytes: state.engines.budget.total_bytes(),
            delivered: c.delivered.delivered(),
            daemon: Some(daemon),
            gpus: state.gpu_samples(),
        }
    }

    fn ready(&self) -> bool {
        self.0.counters.ready.load(Ordering::Relaxed) && !*self.0.draining.borrow()
    }
}
