//! Driving the [`ConcurrencyController`] from the engine's counters: every
//! 10 ms sample requests in flight, every 50 ms hand the controller a window
//! and apply what it decides. The controller itself decides when it has seen
//! enough to judge (see `autotune`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{DemandSnapshot, FetchConfig, FetchEngine, FetchSnapshot, TunePoint};
use crate::autotune::{ConcurrencyController, ControllerConfig, WindowObservation};

/// A controller for `config`, or `None` when nothing is left to tune. With
/// both settings pinned it still runs, changing nothing, while its windows
/// are traced (`STOKER_LOG=stoker::fetch::autotune_task=trace`): a static
/// run is then traced as an autotuned one is, for comparing them.
pub fn controller_for(config: &FetchConfig) -> Option<ConcurrencyController> {
    if !config.auto_concurrency
        && !config.auto_part_bytes
        && !tracing::enabled!(tracing::Level::TRACE)
    {
        return None;
    }
    let cfg = ControllerConfig {
        // Half the budget in flight: the other half holds parsed parts
        // waiting for the consumer.
        max_inflight_bytes: (config.memory_budget_bytes / 2).max(1),
        initial_part_bytes: config.part_bytes,
        max_concurrency: 1024,
        fixed_concurrency: (!config.auto_concurrency).then_some(config.concurrency),
        fixed_part_bytes: (!config.auto_part_bytes).then_some(config.part_bytes),
        ..ControllerConfig::default()
    };
    Some(match &config.warm_start {
        Some(warm) => ConcurrencyController::warm(cfg, warm),
        None => ConcurrencyController::new(cfg),
    })
}

/// Starts the controller task on the current runtime, if there is one.
pub fn spawn(engine: &Arc<FetchEngine>, controller: ConcurrencyController) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    engine.set_part_bytes(controller.part_bytes());
    tokio::spawn(run(Arc::downgrade(engine), controller));
}

async fn run(engine: Weak<FetchEngine>, mut controller: ConcurrencyController) {
    const SAMPLE: Duration = Duration::from_millis(10);
    const SAMPLES_PER_WINDOW: u32 = 5;
    let origin = Instant::now();
    // The baseline is taken now, not after a first window: the first
    // request's first byte (the path's time to first byte, which sizes
    // the first start-up round) must not fall into an uncounted window.
    let mut last: Option<(Instant, FetchSnapshot, DemandSnapshot)> =
        engine.upgrade().map(|e| (origin, e.stats.snapshot(), e.demand.snapshot()));
    let (mut inflight_sum, mut samples) = (0.0, 0u32);
    let mut lag = Duration::ZERO;
    loop {
        let asleep = Instant::now();
        tokio::time::sleep(SAMPLE).await;
        // Tokio's timer wheel has 1 ms slots: a sleep ends up to 1 ms late
        // on an idle runtime; beyond that, no worker was free to wake it.
        lag += asleep.elapsed().saturating_sub(SAMPLE + Duration::from_millis(1));
        let Some(engine) = engine.upgrade() else {
            return;
        };
        inflight_sum += engine.limit.in_flight() as f64;
        samples += 1;
        if samples < SAMPLES_PER_WINDOW {
            continue;
        }
        let now = Instant::now();
        let snap = engine.stats.snapshot();
        let demand = engine.demand.snapshot();
        let Some((then, prev, prev_demand)) = last.replace((now, snap, demand)) else {
            (inflight_sum, samples, lag) = (0.0, 0, Duration::ZERO);
            continue;
        };
        let window_secs = now.duration_since(then).as_secs_f64();
        let obs = WindowObservation {
            now_secs: now.duration_since(origin).as_secs_f64(),
            window_secs,
            bytes: snap.bytes - prev.bytes,
            completions: snap.parts - prev.parts,
            arrived_bytes: snap.arrived_bytes - prev.arrived_bytes,
            first_bytes: snap.first_bytes - prev.first_bytes,
            first_byte_secs_sum: (snap.first_byte_us - prev.first_byte_us) as f64 * 1e-6,
            ttfb_secs_sum: (snap.ttfb_us - prev.ttfb_us) as f64 * 1e-6,
            transfer_secs_sum: (snap.transfer_us - prev.transfer_us) as f64 * 1e-6,
            throttled: snap.throttled - prev.throttled,
            timeouts: snap.timeouts - prev.timeouts,
            rate_limited_secs: (snap.rate_limited_us - prev.rate_limited_us) as f64 * 1e-6,
            contested_rate_rps: engine.gate.as_ref().and_then(|g| g.contested_rate()),
            inflight_mean: inflight_sum / f64::from(samples),
            // No batch taken in the window: no consumer, or a stalled one;
            // either way the queue says nothing.
            ready_fill: (demand.takes > prev_demand.takes).then(|| {
                (demand.fill_permille_sum - prev_demand.fill_permille_sum) as f64
                    / 1000.0
                    / (demand.takes - prev_demand.takes) as f64
            }),
            consumer_wait_secs: (demand.wait_us - prev_demand.wait_us) as f64 * 1e-6,
            batched_bytes: demand.batched_bytes - prev_demand.batched_bytes,
            timer_lag_secs: lag.as_secs_f64(),
        };
        // STOKER_LOG=stoker::fetch::autotune_task=trace: every window.
        tracing::trace!(
            t = format_args!("{:.2}", obs.now_secs),
            arrived_mb_s = format_args!("{:.0}", obs.arrived_bytes as f64 / window_secs / 1e6),
            batched_mb_s = format_args!("{:.0}", obs.batched_bytes as f64 / window_secs / 1e6),
            inflight = format_args!("{:.1}", obs.inflight_mean),
            first_bytes = obs.first_bytes,
            first_byte_ms = format_args!(
                "{:.0}",
                obs.first_byte_secs_sum / obs.first_bytes.max(1) as f64 * 1e3
            ),
            completions = obs.completions,
            lag_ms = format_args!("{:.0}", obs.timer_lag_secs * 1e3),
            budget_mib = engine.budget.used_bytes() >> 20,
            "Autotune window."
        );
        let before = (controller.concurrency(), controller.part_bytes(), controller.phase());
        let decision = controller.on_window(&obs);
        if before != (decision.concurrency, decision.part_bytes, decision.phase) {
            // STOKER_LOG=stoker=debug shows the controller converge.
            tracing::debug!(
                t = format_args!("{:.2}", obs.now_secs),
                concurrency = decision.concurrency,
                part_bytes = decision.part_bytes,
                phase = ?decision.phase,
                goodput_mib_s = format_args!("{:.1}", controller.goodput_bps() / 1048576.0),
                latency_ms = format_args!("{:.0}", obs.mean_latency_secs().unwrap_or(0.0) * 1e3),
                "Autotune step."
            );
        }
        engine.limit.set_limit(decision.concurrency);
        engine.set_part_bytes(decision.part_bytes);
        let point = TunePoint {
            t_secs: obs.now_secs,
            goodput_bps: obs.goodput_bps(),
            concurrency: decision.concurrency,
            part_bytes: decision.part_bytes,
            inflight: obs.inflight_mean,
            phase: decision.phase,
            timer_lag_secs: obs.timer_lag_secs,
        };
        engine.tuning.lock().unwrap_or_else(|p| p.into_inner()).push(point);
        if let Some(warm) = controller.warm_start() {
            *engine.settled.lock().unwrap_or_else(|p| p.into_inner()) = Some(warm);
        }
        (inflight_sum, samples, lag) = (0.0, 0, Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchConfig;
    use object_store::memory::InMemory;

    /// The lag the controller is told about is the runtime's: a task that
    /// holds the only worker thread for 200 ms makes the sampler's timer
    /// fire that late, and the window says so.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_shows_as_timer_lag() {
        let config = FetchConfig { auto_concurrency: true, ..FetchConfig::default() };
        let engine = FetchEngine::new(Arc::new(InMemory::new()), config);
        let lag = |engine: &FetchEngine| -> Vec<f64> {
            let points = engine.tuning.lock().unwrap_or_else(|p| p.into_inner());
            points.iter().map(|p| p.timer_lag_secs).collect()
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = lag(&engine).len();
        assert!(before > 0, "the task reports windows");
        // Blocks the runtime's one thread, as a saturated core would.
        std::thread::sleep(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = lag(&engine);
        let late = after[before..].iter().cloned().fold(0.0, f64::max);
        assert!(late >= 0.15, "after a 200 ms block: {:?}", &after[before..]);
    }
}
