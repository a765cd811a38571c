//! `stoker bench --gpu N`: the daemon's device mode without the daemon.
//! Batches are collated into a page-locked ring and copied into its mirror
//! in device memory (`serve::device_ring::DeviceRing`, the type device-mode
//! sessions use), each copy timed; the bench gives a host slot back once
//! its copy has run. The bound beside it: plain pinned `cuMemcpyHtoDAsync`
//! of the same bytes in the same batch-sized pieces, on the same stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::bench_consumer::Consumer;
use crate::batch::layout::key_in;
use crate::fetch::FetchEngine;
use crate::gpu::telemetry::{GpuSummary, Telemetry};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::ring::{Lease, SessionRing};
use crate::serve::device_ring::DeviceRing;
use crate::serve::ring_writer::{RingBatch, RingWriter};
use crate::source::Dataset;

/// Host ring: 8 slots of 64 MiB (a batch must fit one; lower --batch-size
/// if not), as the daemon's default ring but with room for big batches.
const HOST_SLOTS: u32 = 8;
const SLOT_BYTES: usize = 64 << 20;
/// Copies in flight before the bench waits for the oldest: the other half
/// of the ring stays free for the pipeline to collate into.
const IN_FLIGHT: usize = HOST_SLOTS as usize / 2;
/// Rounds of the bound; the median is reported.
const BOUND_ROUNDS: usize = 3;

/// What `--gpu` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuReport {
    pub device: usize,
    pub name: String,
    /// Batch bytes copied into device memory (whole slots as used: keys,
    /// offsets and values).
    pub bytes: u64,
    pub batches: u64,
    /// The whole path: bytes into device memory over the run's seconds.
    pub bytes_per_s: f64,
    /// The copies alone: bytes over the time the stream spent copying.
    pub copy_bytes_per_s: f64,
    /// A plain pinned host-to-device copy of the same bytes, in the same
    /// pieces (median of 3).
    pub bound_bytes_per_s: f64,
    /// `bytes_per_s / bound_bytes_per_s`.
    pub ratio: f64,
    /// `copy_bytes_per_s / bound_bytes_per_s`.
    pub copy_ratio: f64,
    /// Seconds opening the device and page-locking the ring took (once
    /// per run, while the pipeline already fetched).
    pub register_s: f64,
    /// Batches read back from device memory and found equal to the ring's
    /// bytes (`--gpu-verify`; 0 without it).
    pub verified_batches: u64,
    /// NVML per GPU over the run, when NVML is there.
    pub telemetry: Vec<GpuSummary>,
}

/// The pipeline collating into a registered ring, and its consumer.
pub fn start(
    dataset: &Dataset,
    engine: Arc<FetchEngine>,
    cfg: PipelineConfig,
    ordinal: usize,
    verify: bool,
) -> anyhow::Result<(Pipeline<RingBatch>, GpuConsumer)> {
    let ring = Arc::new(
        SessionRing::new("stoker-bench-gpu", HOST_SLOTS, SLOT_BYTES)
            .context("creating the ring")?,
    );
    // The pipeline fetches while the device is opened and the ring
    // page-locked (tens of ms): the first batch need not wait for them.
    let pipeline = Pipeline::start_with(dataset, engine, cfg, RingWriter::new(ring.clone()))?;
    let t = Instant::now();
    let device = DeviceRing::new(ordinal, ring.clone(), true)
        .context("the device ring (cuMemHostRegister, cuMemAlloc)")?;
    let register_s = t.elapsed().as_secs_f64();
    let telemetry = Telemetry::start(std::time::Duration::from_secs(1))
        .inspect_err(|e| tracing::info!("{e}: no GPU telemetry"))
        .ok();
    let consumer = GpuConsumer {
        pending: VecDeque::with_capacity(IN_FLIGHT),
        device,
        ring,
        copy_ms: 0.0,
        copied: 0,
        batches: 0,
        register_s,
        verify,
        verified: 0,
        telemetry,
    };
    Ok((pipeline, consumer))
}

/// Copies each batch into device memory and gives its host slot back once
/// the copy ran.
#[derive(Debug)]
pub struct GpuConsumer {
    /// Leases whose copies are queued, oldest first (one stream: they
    /// complete in this order).
    pending: VecDeque<Lease>,
    device: DeviceRing,
    ring: Arc<SessionRing>,
    copy_ms: f64,
    copied: u64,
    batches: u64,
    register_s: f64,
    /// `--gpu-verify`: read each batch back and compare.
    verify: bool,
    verified: u64,
    telemetry: Option<Telemetry>,
}

impl GpuConsumer {
    /// Gives back the host slots of copies that ran, oldest first
    /// (`block`: waits for the oldest).
    fn retire(&mut self, mut block: bool) -> anyhow::Result<()> {
        while let Some(&lease) = self.pending.front() {
            let slot = lease.token.slot as usize;
            if !self.device.copied(slot, block)? {
                break;
            }
            block = false;
            self.pending.pop_front();
            self.copy_ms += f64::from(self.device.copy_ms(slot)?.unwrap_or(0.0));
            self.copied += lease.len;
            self.batches += 1;
            if self.verify {
                // SAFETY: the lease is still held (released just below).
                #[allow(unsafe_code)]
                let host = unsafe { self.ring.leased(&lease) };
                if self.device.read_slot(slot, host.len())? != host {
                    anyhow::bail!(
                        "batch {} in device memory differs from the ring's bytes",
                        self.batches - 1
                    );
                }
                self.verified += 1;
            }
            self.ring.release(lease.token).context("releasing a ring slot")?;
        }
        Ok(())
    }
}

impl Consumer for GpuConsumer {
    type Batch = RingBatch;

    fn epoch(b: &RingBatch) -> u64 {
        b.epoch
    }

    fn num_samples(b: &RingBatch) -> usize {
        b.num_samples
    }

    fn payload_bytes(b: &RingBatch) -> u64 {
        b.payload_bytes
    }

    fn keys(&self, b: &RingBatch, each: &mut dyn FnMut(&str)) {
        // SAFETY: the batch's lease is live (it has not been taken yet).
        #[allow(unsafe_code)]
        let slot = unsafe { self.ring.leased(&b.lease) };
        (0..b.num_samples).for_each(|i| each(key_in(slot, &b.keys, i)));
    }

    fn take(&mut self, _pipeline: &Pipeline<RingBatch>, b: RingBatch) -> anyhow::Result<()> {
        while self.pending.len() >= IN_FLIGHT {
            self.retire(true)?;
        }
        // The lease stays held until `retire` sees its copy has run.
        self.device.copy(&b.lease)?;
        self.pending.push_back(b.lease);
        self.retire(false)
    }

    fn finish(&mut self, seconds: f64) -> anyhow::Result<Option<GpuReport>> {
        while !self.pending.is_empty() {
            self.retire(true)?;
        }
        let (bytes, batches) = (self.copied, self.batches);
        let piece = bytes.checked_div(batches).map_or(SLOT_BYTES, |b| b.max(1) as usize);
        let bound = if bytes == 0 {
            0.0
        } else {
            super::report::median(self.device.pinned_copy_rates(bytes, piece, BOUND_ROUNDS)?)
        };
        let bytes_per_s = bytes as f64 / seconds.max(1e-9);
        let copy_bytes_per_s = bytes as f64 / (self.copy_ms / 1e3).max(1e-9);
        let ratio = |x: f64| if bound > 0.0 { x / bound } else { 0.0 };
        let device = self.device.device();
        Ok(Some(GpuReport {
            device: device.ordinal,
            name: device.name.clone(),
            bytes,
            batches,
            bytes_per_s,
            copy_bytes_per_s,
            bound_bytes_per_s: bound,
            ratio: ratio(bytes_per_s),
            copy_ratio: ratio(copy_bytes_per_s),
            register_s: self.register_s,
            verified_batches: self.verified,
            telemetry: self.telemetry.as_ref().map(Telemetry::summary).unwrap_or_default(),
        }))
    }
}
