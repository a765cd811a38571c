//! Device mode: a session's ring mirrored in GPU memory.
//!
//! ```text
//!  host slot k (collated, leased) ─cuMemcpyHtoDAsync on the ring's stream─▶ device slot k ─record event k─▶ descriptor to the client
//!  client: its stream waits on event k (IPC), reads device slot k, and releases slot k once its own work on it ran
//! ```
//!
//! Host and device slot k share one lease: the writer refills host slot k
//! only after the lease is released, and the copy into device slot k that
//! follows is queued after that. The host ring is page-locked once (the
//! daemon's own mapping), so copies run at the copy engine's rate.
//! `stoker bench --gpu` drives the same type, releasing each lease itself
//! once its copy has run.

use std::sync::Arc;

use crate::gpu::GpuError;
use crate::gpu::driver::{Device, DeviceBuffer, Event, HostRegistration, PinnedBuffer, Stream};
use crate::ring::{Lease, SessionRing};

/// Field order is drop order: the stream, events and device buffer before
/// the device's context; the registration before the ring's mapping.
#[derive(Debug)]
pub struct DeviceRing {
    stream: Stream,
    /// Per slot: recorded after its copy; shareable with the client.
    events: Vec<Event>,
    /// Per slot, when timed: recorded before and after its copy.
    timing: Option<(Vec<Event>, Vec<Event>)>,
    buffer: DeviceBuffer,
    slot_bytes: usize,
    /// Held for its Drop: unregisters the ring before its mapping goes.
    _registration: HostRegistration,
    device: Device,
    ring: Arc<SessionRing>,
}

impl DeviceRing {
    /// A device copy of `ring` on CUDA device `ordinal`; `timed`: each
    /// copy's duration is measured too (`copy_ms`).
    pub fn new(
        ordinal: usize,
        ring: Arc<SessionRing>,
        timed: bool,
    ) -> Result<DeviceRing, GpuError> {
        let device = Device::open(ordinal)?;
        let slots = ring.slots().len();
        let slot_bytes = ring.slot_bytes();
        let seg = ring.segment();
        // SAFETY: the segment's whole mapping, alive as long as `ring`,
        // which this value holds (and drops after the registration).
        #[allow(unsafe_code)]
        let registration = unsafe { HostRegistration::new(seg.as_ptr(), seg.len()) }?;
        let timed_events = || (0..slots).map(|_| Event::timed()).collect::<Result<Vec<_>, _>>();
        Ok(DeviceRing {
            stream: Stream::new()?,
            events: (0..slots).map(|_| Event::interprocess()).collect::<Result<_, _>>()?,
            timing: if timed { Some((timed_events()?, timed_events()?)) } else { None },
            buffer: DeviceBuffer::new(slot_bytes.saturating_mul(slots))?,
            slot_bytes,
            _registration: registration,
            device,
            ring,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the client opens the device ring by.
    pub fn info(&self) -> Result<crate::serve::proto::DeviceRing, GpuError> {
        self.device.bind()?;
        Ok(crate::serve::proto::DeviceRing {
            device: self.device.ordinal as u32,
            slot_bytes: self.slot_bytes as u64,
            memory_handle: self.buffer.ipc_handle()?.as_bytes().to_vec(),
            event_handles: self
                .events
                .iter()
                .map(|e| e.ipc_handle().map(|h| h.as_bytes().to_vec()))
                .collect::<Result<_, _>>()?,
        })
    }

    fn event(&self, slot: usize) -> Result<&Event, GpuError> {
        self.events.get(slot).ok_or_else(|| GpuError::Driver {
            call: "device ring",
            error: format!("slot {slot} of {}", self.events.len()),
        })
    }

    /// Queues the copy of the batch in `lease`'s host slot into the same
    /// device slot, and records that slot's event after it.
    pub fn copy(&self, lease: &Lease) -> Result<(), GpuError> {
        self.device.bind()?;
        let slot = lease.token.slot as usize;
        let event = self.event(slot)?;
        // SAFETY: the lease is live: its holder releases it only after the
        // copy (the client's stream waits on the event recorded below;
        // bench waits for it), so the host bytes stay unchanged until the
        // copy has run; the ring is page-locked.
        #[allow(unsafe_code)]
        let src = unsafe { self.ring.leased(lease) };
        if let Some((starts, _)) = &self.timing {
            starts[slot].record(&self.stream)?;
        }
        // SAFETY: `src` as above; device slot `slot` is free: its last
        // batch was released after the work on it had run.
        #[allow(unsafe_code)]
        unsafe { self.buffer.copy_from_host(slot * self.slot_bytes, src, &self.stream) }?;
        if let Some((_, ends)) = &self.timing {
            ends[slot].record(&self.stream)?;
        }
        event.record(&self.stream)
    }

    /// Whether the last copy into `slot` has run (`block`: waits for it).
    pub fn copied(&self, slot: usize, block: bool) -> Result<bool, GpuError> {
        self.device.bind()?;
        let event = self.event(slot)?;
        if block {
            event.synchronize()?;
            return Ok(true);
        }
        event.is_done()
    }

    /// Milliseconds the last copy into `slot` took, once it has run
    /// (`None` unless timed).
    pub fn copy_ms(&self, slot: usize) -> Result<Option<f32>, GpuError> {
        match &self.timing {
            Some((starts, ends)) if slot < starts.len() => {
                self.device.bind()?;
                Event::elapsed_ms(&starts[slot], &ends[slot]).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// `len` bytes of device slot `slot`, after the copies queued so far.
    pub fn read_slot(&self, slot: usize, len: usize) -> Result<Vec<u8>, GpuError> {
        self.device.bind()?;
        self.stream.synchronize()?;
        self.buffer.read(slot * self.slot_bytes, len.min(self.slot_bytes))
    }

    /// The copy engine's rate with nothing loading: `total` bytes from a
    /// pinned buffer in `piece`-byte copies into this ring's slots on its
    /// stream, once per round (bytes per second of each). Only while no
    /// batch copy is queued or read.
    pub fn pinned_copy_rates(
        &self,
        total: u64,
        piece: usize,
        rounds: usize,
    ) -> Result<Vec<f64>, GpuError> {
        self.device.bind()?;
        let piece = piece.clamp(1, self.slot_bytes);
        let src = PinnedBuffer::new(piece)?;
        let (start, end) = (Event::timed()?, Event::timed()?);
        let slots = self.events.len().max(1);
        let mut rates = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            start.record(&self.stream)?;
            let (mut sent, mut k) = (0u64, 0usize);
            while sent < total {
                let n = piece.min((total - sent) as usize);
                // SAFETY: `src` is pinned and lives until the stream is
                // synchronised below; slot k is in bounds and, by this
                // method's contract, no batch copy or reader uses it.
                #[allow(unsafe_code)]
                unsafe {
                    self.buffer.copy_from_host(k * self.slot_bytes, &src.bytes()[..n], &self.stream)
                }?;
                sent += n as u64;
                k = (k + 1) % slots;
            }
            end.record(&self.stream)?;
            end.synchronize()?;
            let ms = f64::from(Event::elapsed_ms(&start, &end)?);
            rates.push(total as f64 / (ms / 1e3).max(1e-9));
        }
        Ok(rates)
    }
}

impl Drop for DeviceRing {
    fn drop(&mut self) {
        // The fields' objects go next, maybe on another thread: bind the
        // context there, and let queued copies finish first.
        if self.device.bind().is_ok() {
            let _ = self.stream.synchronize();
        }
    }
}
