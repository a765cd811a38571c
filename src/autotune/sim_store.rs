//! A simulated object store and clients, in simulated time, for testing the
//! controller across store behaviours no test machine has.
//!
//! The store: each request waits a time to first byte (with jitter), then
//! transfers at `min(per-connection cap, link / transfers)` — a fluid model
//! in which every transfer progresses at the same rate, so the next
//! completion is simply the one with the least left. A request-rate cap
//! (token bucket, 100 ms of burst) answers 503 after the time to first byte.
//! The model can change at given times (a cap lifted, a link halved).
//!
//! Clients run the real [`ConcurrencyController`] (or a fixed concurrency)
//! and, optionally, share one real [`RateLimiter`], as sessions of one
//! process do. Event-driven: cost grows with requests, not with time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    ConcurrencyController, ControllerConfig, RateLimiter, RateLimiterConfig, WindowObservation,
};

/// How the simulated store behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreModel {
    /// Bytes per second one connection can carry.
    pub per_conn_bps: f64,
    pub ttfb_secs: f64,
    /// Uniform jitter, as a fraction of the TTFB (0.2 → ±20%).
    pub ttfb_jitter: f64,
    /// Bytes per second of the whole link.
    pub link_bps: f64,
    /// Requests per second the store accepts before answering 503.
    pub rate_cap: Option<f64>,
}

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub model: StoreModel,
    /// Model changes: (time, new model).
    pub changes: Vec<(f64, StoreModel)>,
    pub duration_secs: f64,
    /// One controller configuration per client.
    pub clients: Vec<ControllerConfig>,
    /// Request-rate limiters, or none.
    pub limiter: Option<RateLimiterConfig>,
    /// One limiter per client (independent daemons on many nodes) instead
    /// of one shared by all (the sessions of one process).
    pub limiter_per_client: bool,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct SimTrace {
    /// Aggregate goodput per 100 ms bucket, bytes per second.
    pub goodput_bps: Vec<f64>,
    /// Per client, bytes completed per 1 s bucket.
    pub client_bytes: Vec<Vec<f64>>,
    /// Successful and throttled requests per 1 s bucket.
    pub ok_per_sec: Vec<f64>,
    pub throttled_per_sec: Vec<f64>,
    /// Client 0's settings after each window: (time, concurrency, part bytes, phase).
    pub settings: Vec<(f64, usize, u64, super::Phase)>,
    /// Mean concurrency limit of client 0 over the last half of the run.
    pub late_concurrency: f64,
    /// Per client, requests answered (not throttled) per 1 s bucket.
    pub client_ok: Vec<Vec<f64>>,
    /// Per client, its part size at the end.
    pub final_part_bytes: Vec<u64>,
    /// Each client's concurrency at the end.
    pub final_concurrency: Vec<usize>,
    /// Each limiter's rate at the end (`None`: unlimited).
    pub final_rate_limits: Vec<Option<f64>>,
}

impl SimTrace {
    /// Mean aggregate goodput over `[from, to)` seconds.
    pub fn goodput_between(&self, from: f64, to: f64) -> f64 {
        let (a, b) = ((from * 10.0) as usize, ((to * 10.0) as usize).min(self.goodput_bps.len()));
        if b <= a {
            return 0.0;
        }
        self.goodput_bps[a..b].iter().sum::<f64>() / (b - a) as f64
    }

    fn per_sec_between(v: &[f64], from: f64, to: f64) -> f64 {
        let (a, b) = (from as usize, (to as usize).min(v.len()));
        if b <= a { 0.0 } else { v[a..b].iter().sum::<f64>() / (b - a) as f64 }
    }

    /// Successful requests per second over `[from, to)`.
    pub fn ok_rate_between(&self, from: f64, to: f64) -> f64 {
        Self::per_sec_between(&self.ok_per_sec, from, to)
    }

    /// Fraction of replies that were 503s over `[from, to)`.
    pub fn throttled_fraction_between(&self, from: f64, to: f64) -> f64 {
        let ok = Self::per_sec_between(&self.ok_per_sec, from, to);
        let bad = Self::per_sec_between(&self.throttled_per_sec, from, to);
        if ok + bad == 0.0 { 0.0 } else { bad / (ok + bad) }
    }

    /// Jain's fairness index of per-client bytes over `[from, to)`.
    pub fn fairness_between(&self, from: f64, to: f64) -> f64 {
        Self::jain(&self.client_bytes, from, to)
    }

    /// Jain's fairness index of per-client answered requests over `[from, to)`.
    pub fn request_fairness_between(&self, from: f64, to: f64) -> f64 {
        Self::jain(&self.client_ok, from, to)
    }

    fn jain(per_client: &[Vec<f64>], from: f64, to: f64) -> f64 {
        let x: Vec<f64> = per_client.iter().map(|v| Self::per_sec_between(v, from, to)).collect();
        let (sum, sq): (f64, f64) = (x.iter().sum(), x.iter().map(|v| v * v).sum());
        if sq == 0.0 { 1.0 } else { sum * sum / (x.len() as f64 * sq) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Key(f64);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

struct Request {
    client: usize,
    bytes: u64,
    start: f64,
    ttfb_end: f64,
    throttled: bool,
}

#[derive(Default)]
struct Window {
    start: f64,
    bytes: u64,
    /// Bytes carried by transfers, complete or not (fluid).
    arrived: f64,
    first_bytes: u64,
    first_byte_secs: f64,
    completions: u64,
    ttfb: f64,
    transfer: f64,
    throttled: u64,
    limited: f64,
    inflight_area: f64,
}

struct Client {
    ctl: ConcurrencyController,
    inflight: usize,
    /// Requests of this client transferring now, and the fluid position at
    /// which its byte count was last settled.
    transfers: usize,
    v_mark: f64,
    queued: bool,
    blocked_since: Option<(f64, usize)>,
    /// When this client's own limiter lets it send again.
    wake: Option<f64>,
    window: Window,
    last_change: f64,
}

/// Credits `c` with the bytes its transfers carried since its last settle.
/// Goodput is accounted as the bytes flow, not when requests complete:
/// requests that start together finish together, and counting them at
/// completion would turn a steady flow into waves.
fn settle(c: &mut Client, v: f64, bucket: &mut f64) {
    let carried = (v - c.v_mark) * c.transfers as f64;
    *bucket += carried;
    c.window.arrived += carried;
    c.v_mark = v;
}

/// Runs one simulation.
pub fn simulate(cfg: &SimConfig) -> SimTrace {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut model = cfg.model;
    let mut changes: VecDeque<(f64, StoreModel)> = cfg.changes.iter().copied().collect();
    let n = cfg.clients.len();
    // The limiters, and which one each client asks.
    let mut limiters: Vec<RateLimiter> = match &cfg.limiter {
        Some(l) => (0..if cfg.limiter_per_client { n } else { 1 })
            .map(|_| RateLimiter::new(l.clone()))
            .collect(),
        None => Vec::new(),
    };
    let limiter_of = |ci: usize| if cfg.limiter_per_client { ci } else { 0 };
    let mut clients: Vec<Client> = cfg
        .clients
        .iter()
        .map(|c| Client {
            ctl: ConcurrencyController::new(c.clone()),
            inflight: 0,
            transfers: 0,
            v_mark: 0.0,
            queued: false,
            blocked_since: None,
            wake: None,
            window: Window::default(),
            last_change: 0.0,
        })
        .collect();
    let secs = cfg.duration_secs.ceil() as usize + 1;
    let mut trace = SimTrace {
        goodput_bps: vec![0.0; secs * 10],
        client_bytes: vec![vec![0.0; secs]; n],
        client_ok: vec![vec![0.0; secs]; n],
        ok_per_sec: vec![0.0; secs],
        throttled_per_sec: vec![0.0; secs],
        ..SimTrace::default()
    };
    let mut requests: Vec<Request> = Vec::new();
    let mut free_ids: Vec<usize> = Vec::new();
    let mut ttfb_heap: BinaryHeap<Reverse<(Key, usize)>> = BinaryHeap::new();
    let mut finish_heap: BinaryHeap<Reverse<(Key, usize)>> = BinaryHeap::new();
    let mut window_heap: BinaryHeap<Reverse<(Key, usize)>> = BinaryHeap::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (i, c) in clients.iter_mut().enumerate() {
        window_heap.push(Reverse((Key(c.ctl.window_secs()), i)));
        c.queued = true;
        queue.push_back(i);
    }
    let (mut t, mut v, mut transfers) = (0.0f64, 0.0f64, 0usize);
    let mut store_tokens = 1.0f64;
    let mut limiter_wake: Option<f64> = None;
    let mut late = (0.0, 0.0);
    const EPS: f64 = 1e-9;

    while t < cfg.duration_secs {
        // Issue what the limits allow, round-robin over clients. A shared
        // limiter that refuses blocks every queued client until it wakes;
        // a client's own limiter blocks only that client.
        if cfg.limiter_per_client || limiter_wake.is_none_or(|w| w <= t + EPS) {
            limiter_wake = None;
            let mut deferred: Vec<usize> = Vec::new();
            while let Some(ci) = queue.pop_front() {
                let c = &mut clients[ci];
                c.queued = false;
                if c.inflight >= c.ctl.concurrency() {
                    continue;
                }
                if let Some(w) = c.wake.filter(|w| *w > t + EPS) {
                    limiter_wake = Some(limiter_wake.map_or(w, |x: f64| x.min(w)));
                    c.queued = true;
                    deferred.push(ci);
                    continue;
                }
                c.wake = None;
                if let Some(l) = limiters.get_mut(limiter_of(ci))
                    && let Err(when) = l.try_acquire(t)
                {
                    let when = when.max(t + 1e-6);
                    if cfg.limiter_per_client {
                        let c = &mut clients[ci];
                        c.wake = Some(when);
                        c.queued = true;
                        if c.blocked_since.is_none() {
                            c.blocked_since =
                                Some((t, c.ctl.concurrency().saturating_sub(c.inflight)));
                        }
                        deferred.push(ci);
                        limiter_wake = Some(limiter_wake.map_or(when, |x: f64| x.min(when)));
                        continue;
                    }
                    c.queued = true;
                    queue.push_front(ci);
                    for &qi in &queue {
                        let q = &mut clients[qi];
                        if q.blocked_since.is_none() {
                            q.blocked_since =
                                Some((t, q.ctl.concurrency().saturating_sub(q.inflight)));
                        }
                    }
                    limiter_wake = Some(when);
                    break;
                }
                let c = &mut clients[ci];
                if let Some((since, slots)) = c.blocked_since.take() {
                    c.window.limited += (t - since) * slots as f64;
                }
                let jitter = 1.0 + model.ttfb_jitter * rng.random_range(-1.0..=1.0);
                let req = Request {
                    client: ci,
                    bytes: c.ctl.part_bytes(),
                    start: t,
                    ttfb_end: t + model.ttfb_secs * jitter,
                    throttled: false,
                };
                let id = match free_ids.pop() {
                    Some(id) => {
                        requests[id] = req;
                        id
                    }
                    None => {
                        requests.push(req);
                        requests.len() - 1
                    }
                };
                ttfb_heap.push(Reverse((Key(requests[id].ttfb_end), id)));
                c.inflight += 1;
                if c.inflight < c.ctl.concurrency() {
                    c.queued = true;
                    queue.push_back(ci);
                }
            }
            queue.extend(deferred);
        }

        // The next event.
        let rate_each = if transfers > 0 {
            model.per_conn_bps.min(model.link_bps / transfers as f64)
        } else {
            0.0
        };
        let mut next = cfg.duration_secs;
        if let Some(Reverse((Key(at), _))) = ttfb_heap.peek() {
            next = next.min(*at);
        }
        if let Some(Reverse((Key(mark), _))) = finish_heap.peek()
            && rate_each > 0.0
        {
            next = next.min(t + ((mark - v) / rate_each).max(0.0));
        }
        if let Some(Reverse((Key(at), _))) = window_heap.peek() {
            next = next.min(*at);
        }
        if let Some((at, _)) = changes.front() {
            next = next.min(*at);
        }
        if let Some(w) = limiter_wake {
            next = next.min(w);
        }
        let next_second = t.floor() + 1.0;
        next = next.min(next_second);
        let dt = (next - t).max(0.0);
        // Aggregate goodput, spread over the 100 ms buckets [t, next) covers.
        let flow = rate_each * transfers as f64;
        let mut from = t;
        while flow > 0.0 && from < next {
            let bucket = (from * 10.0).floor();
            let to = next.min((bucket + 1.0) / 10.0);
            let at = (bucket as usize).min(secs * 10 - 1);
            trace.goodput_bps[at] += flow * (to - from) * 10.0;
            from = to;
        }
        v += rate_each * dt;
        if let Some(cap) = model.rate_cap {
            store_tokens = (store_tokens + cap * dt).min((cap * 0.1).max(1.0));
        }
        for c in clients.iter_mut() {
            c.window.inflight_area += c.inflight as f64 * dt;
        }
        if t >= cfg.duration_secs / 2.0 {
            late.0 += clients[0].ctl.concurrency() as f64 * dt;
            late.1 += dt;
        }
        let crossed_second = next >= next_second - EPS;
        t = next;
        if crossed_second {
            // Settle every client into the second that just ended.
            let sec = ((t - 0.5) as usize).min(secs - 1);
            for (ci, c) in clients.iter_mut().enumerate() {
                settle(c, v, &mut trace.client_bytes[ci][sec]);
            }
        }

        while changes.front().is_some_and(|(at, _)| *at <= t + EPS) {
            if let Some((_, m)) = changes.pop_front() {
                model = m;
            }
        }
        while let Some(Reverse((Key(at), id))) = ttfb_heap.peek().copied() {
            if at > t + EPS {
                break;
            }
            ttfb_heap.pop();
            // The store judges a request's rate where it answers, in the
            // order requests reach it (the jittered wait to the first byte
            // stands for the path's own jitter): judging at issue, in the
            // simulator's round-robin order, refused nodes of a fleet that
            // wake on a timer 30-50% of the time and busy nodes 1-3%.
            if model.rate_cap.is_some() {
                if store_tokens >= 1.0 {
                    store_tokens -= 1.0;
                } else {
                    requests[id].throttled = true;
                }
            }
            let r = &requests[id];
            let ci = r.client;
            let sec = (t as usize).min(secs - 1);
            if r.throttled {
                trace.throttled_per_sec[sec] += 1.0;
                let c = &mut clients[ci];
                c.inflight -= 1;
                c.window.throttled += 1;
                if let Some(l) = limiters.get_mut(limiter_of(ci)) {
                    l.on_throttle(t);
                }
                free_ids.push(id);
                if !c.queued {
                    c.queued = true;
                    queue.push_back(ci);
                }
            } else {
                transfers += 1;
                let c = &mut clients[ci];
                settle(c, v, &mut trace.client_bytes[ci][sec]);
                c.transfers += 1;
                c.window.first_bytes += 1;
                c.window.first_byte_secs += r.ttfb_end - r.start;
                finish_heap.push(Reverse((Key(v + r.bytes as f64), id)));
            }
        }
        while let Some(Reverse((Key(mark), id))) = finish_heap.peek().copied() {
            if mark > v + 1e-3 {
                break;
            }
            finish_heap.pop();
            transfers -= 1;
            let r = &requests[id];
            let ci = r.client;
            let c = &mut clients[ci];
            let sec = (t as usize).min(secs - 1);
            settle(c, v, &mut trace.client_bytes[ci][sec]);
            c.transfers -= 1;
            c.inflight -= 1;
            c.window.bytes += r.bytes;
            c.window.completions += 1;
            c.window.ttfb += r.ttfb_end - r.start;
            c.window.transfer += t - r.ttfb_end;
            trace.ok_per_sec[sec] += 1.0;
            trace.client_ok[ci][sec] += 1.0;
            if let Some(l) = limiters.get_mut(limiter_of(ci)) {
                l.on_success(t);
            }
            free_ids.push(id);
            if !c.queued {
                c.queued = true;
                queue.push_back(ci);
            }
        }
        while let Some(Reverse((Key(at), ci))) = window_heap.peek().copied() {
            if at > t + EPS {
                break;
            }
            window_heap.pop();
            let c = &mut clients[ci];
            let sec = (t as usize).min(secs - 1);
            settle(c, v, &mut trace.client_bytes[ci][sec]);
            let w = std::mem::take(&mut c.window);
            let window_secs = (t - w.start).max(1e-9);
            let mut limited = w.limited;
            if let Some((since, slots)) = c.blocked_since {
                limited += (t - since) * slots as f64;
                c.blocked_since = Some((t, slots));
            }
            let obs = WindowObservation {
                now_secs: t,
                window_secs,
                bytes: w.bytes,
                completions: w.completions,
                arrived_bytes: w.arrived as u64,
                first_bytes: w.first_bytes,
                first_byte_secs_sum: w.first_byte_secs,
                ttfb_secs_sum: w.ttfb,
                transfer_secs_sum: w.transfer,
                throttled: w.throttled,
                timeouts: 0,
                rate_limited_secs: limited,
                contested_rate_rps: limiters.get(limiter_of(ci)).and_then(|l| l.contested_rate(t)),
                inflight_mean: w.inflight_area / window_secs,
                ready_fill: None,
                consumer_wait_secs: 0.0,
                batched_bytes: 0,
                // The simulated client has CPU to spare.
                timer_lag_secs: 0.0,
            };
            let d = c.ctl.on_window(&obs);
            c.window.start = t;
            c.last_change = t;
            if ci == 0 {
                trace.settings.push((t, d.concurrency, d.part_bytes, d.phase));
            }
            window_heap.push(Reverse((Key(t + d.window_secs), ci)));
            if !c.queued && c.inflight < d.concurrency {
                c.queued = true;
                queue.push_back(ci);
            }
        }
    }
    trace.late_concurrency = if late.1 > 0.0 { late.0 / late.1 } else { 0.0 };
    trace.final_part_bytes = clients.iter().map(|c| c.ctl.part_bytes()).collect();
    trace.final_concurrency = clients.iter().map(|c| c.ctl.concurrency()).collect();
    trace.final_rate_limits = limiters.iter().map(RateLimiter::rate).collect();
    trace
}

/// Fixed-concurrency client settings (a static baseline).
pub fn static_client(concurrency: usize, base: &ControllerConfig) -> ControllerConfig {
    ControllerConfig {
        fixed_concurrency: Some(concurrency),
        fixed_part_bytes: Some(base.initial_part_bytes),
        ..base.clone()
    }
}
