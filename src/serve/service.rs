//! The gRPC service (`stoker.v1.Stoker`): opens sessions, streams batch
//! descriptors, takes slots back.
//!
//! ```text
//!  OpenStream ─▶ resolve dataset ─▶ ring (memfd) ─▶ RingInfo ─▶ driver task: pipeline ─▶ BatchDescriptor … StreamEnd
//!  Release    ─▶ slot table (stale leases refused, not fatal)
//!  client gone (stream dropped) ─▶ driver stops ─▶ session dropped: leases reclaimed, pipeline stopped, memfd closed
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::daemon_metrics::DaemonCounters;
use super::engines::Engines;
use super::proto::{self, stream_event::Event};
use super::resume_plan::{self, TokenMaker};
use super::resume_token::OrderSettings;
use super::ring_writer::{RingBatch, RingWriter};
use super::session::{RingReservation, Session, SessionStats};
use crate::batch::Column;
use crate::order::OrderConfig;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::ring::{SessionRing, SlotToken};
use crate::source::{Dataset, StoreOptions};
use crate::{Error, ErrorKind};

/// Daemon-wide settings a session draws on.
#[derive(Debug, Clone)]
pub struct SessionDefaults {
    /// Ring bytes of a session that asks for none.
    pub ring_bytes: u64,
    /// Cap on the rings of all sessions together.
    pub ring_memory: u64,
    /// Caps on what one user (peer UID) may hold at once.
    pub max_sessions_per_user: usize,
    pub ring_memory_per_user: u64,
    /// Which dataset URLs clients may name (`--allow-url`).
    pub urls: super::UrlPolicy,
    pub slots: u32,
    pub prefetch_batches: usize,
    pub shuffle_bytes: u64,
    /// Shard indexes: read for sessions that split by samples, and
    /// recorded by every session as it reads shards whole.
    pub index_cache: Arc<crate::index::IndexCache>,
    /// CUDA devices sessions may ask for device mode on (`--gpus`).
    pub gpus: crate::gpu::GpuSelection,
}

/// What every request handler shares.
#[derive(Debug)]
pub struct DaemonState {
    pub engines: Engines,
    pub store: StoreOptions,
    pub defaults: SessionDefaults,
    pub sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Per-user caps on sessions and ring bytes.
    pub quotas: super::UserQuotas,
    /// Datasets being opened at once (listings, pattern expansion): each
    /// may hold a million-shard list while it is built.
    pub opening: tokio::sync::Semaphore,
    /// One shard list per dataset for the sessions that read it.
    pub datasets: super::dataset_cache::DatasetCache,
    pub ring_bytes: Arc<AtomicU64>,
    /// True once SIGTERM arrived: no new sessions, streams end.
    pub draining: watch::Sender<bool>,
    /// Totals for metrics, ended sessions included; readiness.
    pub counters: super::daemon_metrics::DaemonCounters,
    /// NVML samples of the node's GPUs; `None` without a driver.
    pub gpus: Option<crate::gpu::telemetry::Telemetry>,
}

impl DaemonState {
    /// The node's GPUs as last sampled (empty without NVML).
    pub fn gpu_samples(&self) -> Vec<crate::gpu::telemetry::GpuSample> {
        self.gpus.as_ref().map(|t| t.latest()).unwrap_or_default()
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn remove(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The tonic service over the shared state.
#[derive(Debug, Clone)]
pub struct StokerService {
    pub state: Arc<DaemonState>,
}

/// A named error as a gRPC status: the kind picks the code, the message
/// keeps the context (shard URL, offset, hint).
pub fn status_of(e: &Error) -> Status {
    // Bounded: an error that echoes a huge request must still fit gRPC's
    // trailer, or the client sees a transport error instead of this one.
    let message = crate::echo::bounded(&e.to_string(), crate::echo::MAX_MESSAGE_BYTES);
    match e.kind() {
        ErrorKind::InvalidArgument => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::PermissionDenied => Status::permission_denied(message),
        ErrorKind::CorruptInput => Status::data_loss(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::ResourceExhausted => Status::resource_exhausted(message),
        ErrorKind::Cancelled => Status::cancelled(message),
        ErrorKind::Internal => Status::internal(message),
    }
}

fn column(c: &Column) -> proto::Column {
    proto::Column {
        name: c.name.clone(),
        offsets_at: c.offsets_at,
        values_at: c.values_at,
        values_len: c.values_len,
    }
}

/// The peer's UID: every session call comes over the Unix socket (the
/// daemon's TCP port serves health only), where the kernel vouches for it.
fn peer_uid<T>(request: &Request<T>) -> Result<u32, Status> {
    request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
        .ok_or_else(|| {
            Status::failed_precondition(
                "session calls go over the Unix socket (the ring's descriptor travels over it, \
                 and the peer's user is checked there); TCP serves health only",
            )
        })
}

fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A checked request: the pipeline settings and where to start.
struct Plan {
    dataset: Dataset,
    pipeline: PipelineConfig,
    tokens: TokenMaker,
    /// Samples left out and repeated over the stream's epochs (`even`).
    evened: (u64, u64),
    /// A split by samples whose index is still to be made: made in the
    /// session's task, after the ring is handed out (reading shards whole
    /// can take as long as the store takes; the open must not wait on it).
    deferred: Option<Option<crate::order::Even>>,
}

impl StokerService {
    async fn plan(&self, r: &proto::OpenStreamRequest) -> Result<Plan, Status> {
        crate::pipeline::check_batch_size(u64::from(r.batch_size)).map_err(|e| status_of(&e))?;
        let world_size = r.world_size.max(1);
        let order = OrderConfig {
            seed: r.seed,
            epoch: r.epoch,
            rank: r.rank as usize,
            world_size: world_size as usize,
            shuffle_shards: r.shuffle_shards,
            shuffle_buffer: r.shuffle_buffer as usize,
        };
        order.validate().map_err(|e| status_of(&e))?;
        let url = crate::source::DatasetUrl::parse(&r.url).map_err(|e| status_of(&e.into()))?;
        self.state.defaults.urls.check(&url).map_err(|why| {
            Status::permission_denied(crate::echo::bounded(&why, crate::echo::MAX_MESSAGE_BYTES))
        })?;
        let opening = self
            .state
            .opening
            .acquire()
            .await
            .map_err(|_| Status::unavailable("stoker is shutting down"))?;
        let dataset = (self.state.datasets)
            .open(&r.url, &self.state.store, self.state.engines.config())
            .await
            .map_err(|e| status_of(&e.into()))?;
        drop(opening);
        let even = match r.even.as_str() {
            "" => None,
            text => Some(text.parse::<crate::order::Even>().map_err(|why| {
                Status::invalid_argument(crate::echo::bounded(&why, crate::echo::MAX_MESSAGE_BYTES))
            })?),
        };
        let split_by_samples = crate::index::needs_split(even, &order, dataset.shards.len());
        // Split by samples: every shard's sample count first (shards not
        // indexed yet are read whole now, on the endpoint's engine, so the
        // sessions of one job share those reads).
        // Only a reshard needs the counts to plan its start; other streams
        // index in their own task.
        // (States that are not tokens fail below without an index.)
        let resharding = !r.states.is_empty()
            && r.states.iter().all(|b| super::resume_token::ResumeToken::parse(b).is_ok());
        let deferred = (split_by_samples && !resharding).then_some(even);
        let split = if split_by_samples && deferred.is_none() {
            let engine = self.state.engines.for_dataset(&dataset);
            let cache = &self.state.defaults.index_cache;
            crate::index::sample_split(&dataset, &engine, cache, &order, even)
                .await
                .map_err(|e| status_of(&e))?
        } else {
            None
        };
        let counts = split.as_ref().map(|(split, _)| split.counts());
        let mut fields = r.fields.clone();
        fields.sort();
        fields.dedup();
        let settings = OrderSettings {
            shards: &dataset.shards,
            seed: r.seed,
            shuffle_shards: r.shuffle_shards,
            shuffle_buffer: r.shuffle_buffer,
            batch_size: r.batch_size,
            drop_last: r.drop_last,
            fields: &fields,
            rank: r.rank,
            world_size,
            split: if split_by_samples { even.unwrap_or_default().as_str() } else { "" },
            counts: counts.as_deref(),
        };
        let epochs = r.epochs.max(1);
        // `u64::MAX` epochs means "until I stop": the range saturates
        // (the run's plan is drawn lazily, one epoch at a time).
        let end_epoch = r.epoch.saturating_add(epochs);
        if !r.state.is_empty() && !r.states.is_empty() {
            return Err(Status::invalid_argument("give either state (resume) or states (reshard)"));
        }
        let (start, tokens) = resume_plan::start(
            &r.state,
            &r.states,
            &settings,
            r.epoch..end_epoch,
        )
        .map_err(|e| {
            let why = e.to_string();
            Status::invalid_argument(crate::echo::bounded(&why, crate::echo::MAX_MESSAGE_BYTES))
        })?;
        let mut pipeline = PipelineConfig {
            order,
            epochs,
            batch_size: r.batch_size as usize,
            drop_last: r.drop_last,
            prefetch_batches: self.state.defaults.prefetch_batches,
            shuffle_bytes: self.state.defaults.shuffle_bytes,
            fields,
            skip_batches: 0,
            plan: None,
            track_progress: true,
            split: None,
            index_cache: Some(self.state.defaults.index_cache.clone()),
            resume: None,
        };
        let mut first_tally = None;
        if let Some(start) = start {
            pipeline.order.epoch = start.epoch;
            pipeline.epochs = end_epoch - start.epoch;
            pipeline.skip_batches = start.skip_batches;
            pipeline.resume = start.seek;
            pipeline.plan = start.items.map(|(items, _)| items);
            first_tally = start.tally;
        }
        // What evening costs over the stream's epochs: a resharded first
        // epoch has its own figures, the others the epoch's.
        let mut evened = (0, 0);
        if let Some((split, report)) = split {
            let e = report.per_epoch;
            let (first, later) = match first_tally {
                Some(t) => ((t.dropped, t.padded), pipeline.epochs.saturating_sub(1)),
                None => ((0, 0), pipeline.epochs),
            };
            evened = (
                first.0.saturating_add(e.dropped.saturating_mul(later)),
                first.1.saturating_add(e.padded.saturating_mul(later)),
            );
            pipeline.split = Some(split);
        }
        Ok(Plan { dataset, pipeline, tokens, evened, deferred })
    }

    /// The ring a request asks for: slots, bytes per slot, bytes in all.
    fn ring_size(&self, r: &proto::OpenStreamRequest) -> (u32, u64, u64) {
        let d = &self.state.defaults;
        let slots = if r.slots == 0 { d.slots } else { r.slots.clamp(2, 1024) };
        let asked = if r.ring_bytes == 0 { d.ring_bytes } else { r.ring_bytes };
        // Saturating: a request for 2^64 bytes is refused by the caps, not
        // wrapped into a small ring.
        let slot_bytes = (asked / u64::from(slots)).div_ceil(4096).saturating_mul(4096);
        (slots, slot_bytes, slot_bytes.saturating_mul(u64::from(slots)))
    }

    fn ring_for(
        &self,
        (slots, slot_bytes, bytes): (u32, u64, u64),
    ) -> Result<(Arc<SessionRing>, RingReservation), Status> {
        let d = &self.state.defaults;
        let reservation = RingReservation::take(&self.state.ring_bytes, bytes, d.ring_memory)
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "a ring of {bytes} bytes would take the daemon past its ring memory of {} \
                     bytes ({} in use): ask for a smaller ring_bytes or raise --ring-memory",
                    d.ring_memory,
                    self.state.ring_bytes.load(Ordering::Relaxed)
                ))
            })?;
        let slot_bytes = usize::try_from(slot_bytes)
            .map_err(|_| Status::resource_exhausted("a ring slot larger than memory"))?;
        let ring = SessionRing::new("stoker-ring", slots, slot_bytes)
            .map_err(|e| Status::resource_exhausted(format!("creating the session's ring: {e}")))?;
        Ok((Arc::new(ring), reservation))
    }

    /// Device mode on CUDA device `ordinal`: refused where the daemon has
    /// no CUDA or may not use that device (before anything is fetched).
    fn check_device(&self, ordinal: u32) -> Result<usize, Status> {
        let ordinal = ordinal as usize;
        let count = crate::gpu::probe().map_err(|e| {
            Status::failed_precondition(format!(
                "{e}: open the stream without a device (host mode)"
            ))
        })?;
        if ordinal >= count {
            return Err(Status::failed_precondition(format!(
                "no CUDA device {ordinal}: this node has {count}"
            )));
        }
        // `--gpus` was checked against the node when the daemon started.
        let allowed = self.state.defaults.gpus.resolve(count).unwrap_or_default();
        if !allowed.contains(&ordinal) {
            return Err(Status::failed_precondition(format!(
                "device mode on CUDA device {ordinal} is not allowed here (serve --gpus; \
                 this node has {count}): open the stream without a device (host mode)"
            )));
        }
        Ok(ordinal)
    }

    /// The device copy of `ring` on device `ordinal` (checked).
    async fn device_ring(
        &self,
        ordinal: usize,
        ring: Arc<SessionRing>,
    ) -> Result<super::device_ring::DeviceRing, Status> {
        // Page-locking the ring takes tens of milliseconds: off the runtime.
        tokio::task::spawn_blocking(move || {
            super::device_ring::DeviceRing::new(ordinal, ring, false)
        })
        .await
        .map_err(|e| Status::internal(format!("device ring: {e}")))?
        .map_err(|e| Status::failed_precondition(format!("device mode: {e}")))
    }

    /// Opens a session: checks, plans and starts it, and spawns its driver.
    async fn open(
        &self,
        request: Request<proto::OpenStreamRequest>,
    ) -> Result<Response<ReceiverStream<Result<proto::StreamEvent, Status>>>, Status> {
        if *self.state.draining.borrow() {
            return Err(Status::unavailable("stoker is shutting down; retry with your last state"));
        }
        // The ring's descriptor can only travel over the Unix socket, to
        // the same user.
        let uid = peer_uid(&request)?;
        let r = request.into_inner();
        // The user's share first: a runaway client is refused before any
        // listing or ring is made for it.
        let size = self.ring_size(&r);
        let quota = self.state.quotas.take(uid, size.2).map_err(Status::resource_exhausted)?;
        // Device mode's preconditions before any listing or ring.
        let cuda_device = r.cuda_device.map(|d| self.check_device(d)).transpose()?;
        let plan = self.plan(&r).await?;
        let (ring, ring_bytes) = self.ring_for(size)?;
        let engine = self.state.engines.for_dataset(&plan.dataset);
        let pipeline = match plan.deferred {
            Some(_) => None,
            None => Some(
                Pipeline::start_with(
                    &plan.dataset,
                    engine.clone(),
                    plan.pipeline.clone(),
                    RingWriter::new(ring.clone()),
                )
                .map_err(|e| status_of(&e))?,
            ),
        };
        // Device mode: the ring is page-locked while the pipeline already
        // fetches its first parts (registration takes tens of ms; the
        // first copy waits for it, the first bytes need not).
        let device = match cuda_device {
            Some(d) => Some(self.device_ring(d, ring.clone()).await?),
            None => None,
        };
        let session = Arc::new(Session {
            id: random_id(),
            fd_token: random_id(),
            uid,
            ring,
            engine,
            stats: SessionStats::default(),
            ring_bytes,
            quota,
            fd_sent: watch::channel(false).0,
            opened_at: std::time::Instant::now(),
            evened: std::sync::Mutex::new(plan.evened),
            device,
        });
        let device_ring = match &session.device {
            Some(d) => Some(d.info().map_err(|e| Status::internal(format!("device ring: {e}")))?),
            None => None,
        };
        let info = proto::RingInfo {
            session: session.id.clone(),
            slots: session.ring.slots().len() as u32,
            slot_bytes: session.ring.slot_bytes() as u64,
            fd_token: session.fd_token.clone(),
            segment_bytes: session.ring.segment().len() as u64,
            device_ring,
        };
        self.state
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.id.clone(), session.clone());
        // Session ids are capabilities (with the peer check): debug only.
        let url = crate::echo::redacted_url(&r.url);
        tracing::info!(uid, %url, rank = r.rank, world = r.world_size, "session opened");
        tracing::debug!(session = %session.id, "session id");
        let (tx, rx) = mpsc::channel(4);
        let event = proto::StreamEvent { event: Some(Event::Ring(info)) };
        tx.send(Ok(event)).await.map_err(|_| Status::cancelled("the client left"))?;
        let state = self.state.clone();
        tokio::spawn(async move {
            let pipeline = match pipeline {
                Some(p) => Ok(p),
                None => start_split(&state, &session, &plan).await,
            };
            let client_there = match pipeline {
                Ok(pipeline) => drive(&state, &session, pipeline, plan.tokens, tx).await,
                Err(status) => {
                    tracing::warn!(uid = session.uid, error = %status.message(), "session failed");
                    DaemonCounters::count(&state.counters.failed);
                    let _ = tx.send(Err(status)).await;
                    false
                }
            };
            if client_there {
                // A stream shorter than the ring can end before the client
                // fetched the descriptor: keep the session findable a while.
                let mut sent = session.fd_sent.subscribe();
                let _ = tokio::time::timeout(FD_GRACE, sent.wait_for(|s| *s)).await;
            }
            // Ours goes first, so the map's is the last: once the session
            // is gone from Stats, its ring memory is given back too.
            let (id, uid) = (session.id.clone(), session.uid);
            let age = session.opened_at.elapsed().as_micros() as u64;
            state.counters.ended_session_us.fetch_add(age, Ordering::Relaxed);
            drop(session);
            state.remove(&id);
            if state.session_count() == 0 {
                state.engines.trim();
            }
            tracing::info!(uid, "session closed");
            tracing::debug!(session = %id, "session closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl proto::stoker_server::Stoker for StokerService {
    type OpenStreamStream = ReceiverStream<Result<proto::StreamEvent, Status>>;

    async fn open_stream(
        &self,
        request: Request<proto::OpenStreamRequest>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        let opened = self.open(request).await;
        let counters = &self.state.counters;
        DaemonCounters::count(if opened.is_ok() { &counters.opened } else { &counters.refused });
        opened
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseReply>, Status> {
        let uid = peer_uid(&request)?;
        let r = request.into_inner();
        let Some(session) = self.state.session(&r.session) else {
            // The stream ended (its ring is gone with it): nothing to free.
            return Ok(Response::new(proto::ReleaseReply { refused: r.leases }));
        };
        // Only the session's own user frees its slots: another user's
        // release would let the daemon overwrite a batch still being read.
        if session.uid != uid && uid != 0 {
            return Err(Status::permission_denied("not your session"));
        }
        let waited = session.add_wait(r.waited_us);
        self.state.counters.delivered.wait_us.fetch_add(waited, Ordering::Relaxed);
        let refused = r
            .leases
            .into_iter()
            .filter(|l| {
                let token = SlotToken { slot: l.slot, generation: l.generation };
                session.ring.release(token).is_err()
            })
            .collect();
        Ok(Response::new(proto::ReleaseReply { refused }))
    }

    async fn stats(
        &self,
        request: Request<proto::StatsRequest>,
    ) -> Result<Response<proto::StatsReply>, Status> {
        let uid = peer_uid(&request)?;
        let r = request.into_inner();
        let state = &self.state;
        let mut reply = proto::StatsReply {
            sessions: state.session_count() as u32,
            ring_bytes: state.ring_bytes.load(Ordering::Relaxed),
            budget_used_bytes: state.engines.budget.used_bytes(),
            gpus: state
                .gpu_samples()
                .into_iter()
                .map(|g| proto::GpuStats {
                    index: g.index,
                    name: g.name,
                    utilization: g.utilization,
                    memory_used_bytes: g.memory_used_bytes,
                    memory_total_bytes: g.memory_total_bytes,
                    pcie_rx_bytes_per_s: g.pcie_rx_bytes_per_s,
                })
                .collect(),
            ..Default::default()
        };
        for engine in state.engines.all() {
            let fetch = engine.stats.snapshot();
            reply.requests += fetch.requests;
            reply.retries += fetch.retries;
            reply.throttled += fetch.throttled;
            reply.bytes += fetch.bytes;
            reply.shared_bytes += engine.sharing.shared_bytes.load(Ordering::Relaxed);
        }
        if !r.session.is_empty() {
            let s = state
                .session(&r.session)
                .filter(|s| s.uid == uid || uid == 0)
                .ok_or_else(|| Status::not_found("no such session of yours"))?;
            let fetch = s.engine.stats.snapshot();
            let table = s.ring.slots();
            reply.batches = s.stats.batches.load(Ordering::Relaxed);
            reply.samples = s.stats.samples.load(Ordering::Relaxed);
            reply.bytes = s.stats.bytes.load(Ordering::Relaxed);
            reply.requests = fetch.requests;
            reply.retries = fetch.retries;
            reply.throttled = fetch.throttled;
            reply.concurrency = s.engine.limit.limit() as u32;
            reply.part_bytes = s.engine.part_bytes();
            reply.slots_leased = (table.len() - table.free_count()) as u32;
            reply.shared_bytes = s.engine.sharing.shared_bytes.load(Ordering::Relaxed);
            reply.ring_bytes = s.ring_bytes.bytes();
            reply.consumer_wait_us = s.stats.wait_us.load(Ordering::Relaxed);
            reply.session_us = s.opened_at.elapsed().as_micros() as u64;
            reply.consumer_wait_fraction =
                reply.consumer_wait_us as f64 / reply.session_us.max(1) as f64;
        } else {
            reply.consumer_wait_us = state.counters.delivered.wait_us.load(Ordering::Relaxed);
        }
        Ok(Response::new(reply))
    }
}

/// A session's split by samples, made in its own task (shards without a
/// fresh index are read whole first), and its pipeline started on it.
async fn start_split(
    state: &DaemonState,
    session: &Session,
    plan: &Plan,
) -> Result<Pipeline<super::ring_writer::RingBatch>, Status> {
    let even = plan.deferred.flatten();
    let mut cfg = plan.pipeline.clone();
    let cache = &state.defaults.index_cache;
    let split = crate::index::sample_split(&plan.dataset, &session.engine, cache, &cfg.order, even)
        .await
        .map_err(|e| status_of(&e))?;
    if let Some((split, report)) = split {
        let e = report.per_epoch;
        let epochs = cfg.epochs;
        if let Ok(mut evened) = session.evened.lock() {
            *evened = (e.dropped.saturating_mul(epochs), e.padded.saturating_mul(epochs));
        }
        cfg.split = Some(split);
    }
    let writer = RingWriter::new(session.ring.clone());
    Pipeline::start_with(&plan.dataset, session.engine.clone(), cfg, writer)
        .map_err(|e| status_of(&e))
}

/// How long a finished session waits for its client to fetch the ring.
const FD_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one session's stream until it ends, fails, the client leaves, or
/// the daemon drains. True when it ended with every batch sent and the
/// client still connected (it may not have fetched the ring yet).
async fn drive(
    state: &DaemonState,
    session: &Session,
    mut pipeline: Pipeline<RingBatch>,
    tokens: TokenMaker,
    tx: mpsc::Sender<Result<proto::StreamEvent, Status>>,
) -> bool {
    let mut draining = state.draining.subscribe();
    loop {
        let next = tokio::select! {
            biased;
            _ = tx.closed() => return false,
            // (The guard `wait_for` returns must not live across an await.)
            _ = async { drop(draining.wait_for(|d| *d).await) } => {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "stoker is shutting down; reconnect and resume with the last batch's state",
                    )))
                    .await;
                return false;
            }
            next = pipeline.next() => next,
        };
        let event = match next {
            Some(Ok(b)) => {
                if let Some(device) = &session.device
                    && let Err(e) = device.copy(&b.lease)
                {
                    tracing::warn!(uid = session.uid, error = %e, "session failed");
                    DaemonCounters::count(&state.counters.failed);
                    let _ = tx
                        .send(Err(Status::internal(format!("copying a batch to the GPU: {e}"))))
                        .await;
                    return false;
                }
                session.stats.add_batch(b.num_samples as u64, b.payload_bytes);
                state.counters.delivered.add_batch(b.num_samples as u64, b.payload_bytes);
                let state = tokens.token(b.epoch, b.index + 1, &b.progress);
                Event::Batch(proto::BatchDescriptor {
                    slot: b.lease.token.slot,
                    generation: b.lease.token.generation,
                    offset: b.lease.offset,
                    len: b.lease.len,
                    num_samples: b.num_samples as u32,
                    keys: Some(column(&b.keys)),
                    columns: b.columns.iter().map(column).collect(),
                    epoch: b.epoch,
                    index: b.index,
                    state,
                })
            }
            Some(Err(e)) => {
                let status = status_of(&e);
                tracing::warn!(uid = session.uid, error = %status.message(), "session failed");
                DaemonCounters::count(&state.counters.failed);
                // No grace period for a failed stream: its ring memory goes
                // back now, not after 30 s (32 failing sessions once held
                // every byte of it, and every new session failed meanwhile).
                let _ = tx.send(Err(status)).await;
                return false;
            }
            None => Event::End(proto::StreamEnd {
                batches: session.stats.batches.load(Ordering::Relaxed),
                samples: session.stats.samples.load(Ordering::Relaxed),
                samples_left_out: session.evened.lock().map_or(0, |e| e.0),
                samples_repeated: session.evened.lock().map_or(0, |e| e.1),
            }),
        };
        let end = matches!(event, Event::End(_));
        if tx.send(Ok(proto::StreamEvent { event: Some(event) })).await.is_err() {
            return false;
        }
        if end {
            return true;
        }
    }
}
