//! `stoker bench --gpu N`: batches collated into a page-locked ring (the
//! daemon's ring type, registered with CUDA once) and copied into a device
//! ring on a stream of their own; a host slot goes back when its copy has
//! run. The bound beside it: plain pinned `cuMemcpyHtoDAsync` of the same
//! bytes in the same batch-sized pieces.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::bench_consumer::Consumer;
use crate::batch::Column;
use crate::fetch::FetchEngine;
use crate::gpu::device_copy::CopyQueue;
use crate::gpu::driver::{Device, DeviceBuffer, Event, HostRegistration, PinnedBuffer, Stream};
use crate::gpu::telemetry::{GpuSummary, Telemetry};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::ring::{Lease, SessionRing};
use crate::serve::ring_writer::{RingBatch, RingWriter};
use crate::source::Dataset;

/// Host ring: 8 slots of 64 MiB (a batch must fit one; lower --batch-size
/// if not), as the daemon's default ring but with room for big batches.
const HOST_SLOTS: u32 = 8;
const SLOT_BYTES: usize = 64 << 20;
/// Device slots: copies in flight on the stream.
const DEVICE_SLOTS: usize = 4;
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
    /// Seconds `cuMemHostRegister` took for the ring (once per run).
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
    let device = Device::open(ordinal)?;
    let telemetry = Telemetry::start(std::time::Duration::from_secs(1))
        .inspect_err(|e| tracing::info!("{e}: no GPU telemetry"))
        .ok();
    let t = Instant::now();
    // SAFETY: the segment's mapping lives as long as `ring`, which the
    // consumer holds (declared after the registration, so dropped after).
    let registration =
        unsafe_register(&ring).context("page-locking the ring (cuMemHostRegister)")?;
    let register_s = t.elapsed().as_secs_f64();
    let slot_bytes = ring.slot_bytes();
    let consumer = GpuConsumer {
        queue: CopyQueue::new(DEVICE_SLOTS),
        starts: (0..DEVICE_SLOTS).map(|_| Event::timed()).collect::<Result<_, _>>()?,
        ends: (0..DEVICE_SLOTS).map(|_| Event::timed()).collect::<Result<_, _>>()?,
        device_ring: DeviceBuffer::new(slot_bytes * DEVICE_SLOTS)?,
        stream: Stream::new()?,
        registration: Some(registration),
        ring: ring.clone(),
        slot_bytes,
        copy_ms: 0.0,
        copied: 0,
        batches: 0,
        register_s,
        verify,
        verified: 0,
        telemetry,
        device,
    };
    Ok((pipeline, consumer))
}

#[allow(unsafe_code)]
fn unsafe_register(ring: &SessionRing) -> Result<HostRegistration, crate::gpu::GpuError> {
    let seg = ring.segment();
    // SAFETY: the whole mapping of the segment, alive as long as `ring`;
    // the caller keeps the registration no longer than the ring.
    unsafe { HostRegistration::new(seg.as_ptr(), seg.len()) }
}

/// Copies each batch into device memory and gives its host slot back once
/// the copy ran. Field order is drop order: CUDA objects before the
/// device's context, the registration before the ring's mapping.
#[derive(Debug)]
pub struct GpuConsumer {
    queue: CopyQueue<Lease>,
    starts: Vec<Event>,
    ends: Vec<Event>,
    device_ring: DeviceBuffer,
    stream: Stream,
    registration: Option<HostRegistration>,
    ring: Arc<SessionRing>,
    slot_bytes: usize,
    copy_ms: f64,
    copied: u64,
    batches: u64,
    register_s: f64,
    /// `--gpu-verify`: read each batch back and compare.
    verify: bool,
    verified: u64,
    telemetry: Option<Telemetry>,
    device: Device,
}

impl GpuConsumer {
    /// Gives back the host slots of copies that ran (`block`: waits for
    /// the oldest first).
    fn retire(&mut self, block: bool) -> anyhow::Result<()> {
        if block && let Some(oldest) = self.queue.oldest() {
            self.ends[oldest.slot].synchronize()?;
        }
        let ends = &self.ends;
        for done in self.queue.retire(|slot| ends[slot].is_done())? {
            self.copy_ms +=
                f64::from(Event::elapsed_ms(&self.starts[done.slot], &self.ends[done.slot])?);
            self.copied += done.bytes;
            self.batches += 1;
            if self.verify {
                // SAFETY: the lease is still held (released just below).
                #[allow(unsafe_code)]
                let host = unsafe { self.ring.leased(&done.lease) };
                let device = self.device_ring.read(done.slot * self.slot_bytes, host.len())?;
                if device != host {
                    anyhow::bail!(
                        "batch {} in device memory differs from the ring's bytes",
                        self.batches - 1
                    );
                }
                self.verified += 1;
            }
            self.ring.release(done.lease.token).context("releasing a ring slot")?;
        }
        Ok(())
    }

    /// A pinned buffer copied to the device in `piece`-byte copies until
    /// `total` bytes: the copy engine's rate with no loading at all.
    fn bound(&self, total: u64, piece: usize) -> anyhow::Result<f64> {
        let src = PinnedBuffer::new(piece)?;
        let (start, end) = (Event::timed()?, Event::timed()?);
        let mut rates = Vec::new();
        for _ in 0..BOUND_ROUNDS {
            start.record(&self.stream)?;
            let (mut sent, mut k) = (0u64, 0usize);
            while sent < total {
                let n = piece.min((total - sent) as usize);
                // SAFETY: `src` is pinned and lives until the stream is
                // synchronised below; device slot k is in bounds and no
                // other copy is queued (the path's copies all retired).
                #[allow(unsafe_code)]
                unsafe {
                    self.device_ring.copy_from_host(
                        k * self.slot_bytes,
                        &src.bytes()[..n],
                        &self.stream,
                    )?
                };
                sent += n as u64;
                k = (k + 1) % DEVICE_SLOTS;
            }
            end.record(&self.stream)?;
            end.synchronize()?;
            let ms = f64::from(Event::elapsed_ms(&start, &end)?);
            rates.push(total as f64 / (ms / 1e3).max(1e-9));
        }
        Ok(super::report::median(rates))
    }
}

impl Drop for GpuConsumer {
    fn drop(&mut self) {
        // The fields' driver objects are destroyed next, perhaps on another
        // thread than the last batch's: with the context current there,
        // and after the stream has run what was queued on it.
        if self.device.bind().is_ok() {
            let _ = self.stream.synchronize();
        }
    }
}

/// The `i`th value of `col` in a collated slot; `None` if the offsets do
/// not fit (never for a batch this process collated).
fn value<'a>(buf: &'a [u8], col: &Column, i: usize) -> Option<&'a [u8]> {
    let word = |j: usize| -> Option<u64> {
        let at = usize::try_from(col.offsets_at).ok()?.checked_add(8 * j)?;
        Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
    };
    let base = usize::try_from(col.values_at).ok()?;
    let (a, b) = (word(i)? as usize, word(i + 1)? as usize);
    buf.get(base.checked_add(a)?..base.checked_add(b)?)
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
        for i in 0..b.num_samples {
            each(value(slot, &b.keys, i).and_then(|k| std::str::from_utf8(k).ok()).unwrap_or(""));
        }
    }

    fn take(&mut self, _pipeline: &Pipeline<RingBatch>, b: RingBatch) -> anyhow::Result<()> {
        // The task may have moved threads since the last batch.
        self.device.bind()?;
        while self.queue.next_slot().is_none() {
            self.retire(true)?;
        }
        let Some(slot) = self.queue.next_slot() else {
            anyhow::bail!("no device slot after retiring the oldest copy");
        };
        // SAFETY: the lease is live until `retire` releases it, after the
        // copy has run (its end event passed); the ring is page-locked.
        #[allow(unsafe_code)]
        let src = unsafe { self.ring.leased(&b.lease) };
        self.starts[slot].record(&self.stream)?;
        // SAFETY: `src` stays leased and unchanged until the copy's end
        // event has passed (`retire`); device slot `slot` is free (its last
        // copy retired) and in bounds.
        #[allow(unsafe_code)]
        unsafe {
            self.device_ring.copy_from_host(slot * self.slot_bytes, src, &self.stream)?
        };
        self.ends[slot].record(&self.stream)?;
        self.queue.push(b.lease, src.len() as u64);
        self.retire(false)
    }

    fn finish(&mut self, seconds: f64) -> anyhow::Result<Option<GpuReport>> {
        self.device.bind()?;
        self.stream.synchronize()?;
        self.retire(false)?;
        let (bytes, batches) = (self.copied, self.batches);
        let piece = bytes.checked_div(batches).map_or(self.slot_bytes, |b| b.max(1) as usize);
        let bound = if bytes == 0 { 0.0 } else { self.bound(bytes, piece.min(self.slot_bytes))? };
        let bytes_per_s = bytes as f64 / seconds.max(1e-9);
        let copy_bytes_per_s = bytes as f64 / (self.copy_ms / 1e3).max(1e-9);
        let ratio = |x: f64| if bound > 0.0 { x / bound } else { 0.0 };
        // Unregister before the ring can go (the pipeline may hold it).
        self.registration.take();
        Ok(Some(GpuReport {
            device: self.device.ordinal,
            name: self.device.name.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::collate;
    use crate::shard::parse_shard_bytes;
    use crate::synth::SynthConfig;

    /// Keys read back from a collated buffer the way the GPU consumer
    /// reads them from its ring: the same as the batch's own.
    #[test]
    fn keys_read_from_slot_bytes_match_the_batch() {
        let cfg = SynthConfig {
            shards: 1,
            shard_bytes: 100_000,
            sample_bytes: 5_000,
            ..SynthConfig::default()
        };
        let shard = bytes::Bytes::from(cfg.shard_bytes_of(0).unwrap());
        let samples = parse_shard_bytes("t", shard, 64 << 10, u64::MAX).unwrap();
        let batch = collate(&samples[..5], 0, 0);
        let read: Vec<&str> = (0..5)
            .map(|i| std::str::from_utf8(value(&batch.buf, &batch.keys, i).unwrap()).unwrap())
            .collect();
        assert_eq!(read, batch.keys().collect::<Vec<_>>());
        assert_eq!(value(&batch.buf[..16], &batch.keys, 4), None, "short buffer: no panic");
    }
}
