//! Device mode: a session's ring mirrored in GPU memory.
//!
//! ```text
//!  host slot k (collated, leased) ─cuMemcpyHtoDAsync on the session's stream─▶ device slot k ─record event k─▶ descriptor to the client
//!  client: its stream waits on event k (IPC), reads device slot k, and releases slot k once its own work on it ran
//! ```
//!
//! Host and device slot k share one lease: the writer refills host slot k
//! only after the client released it, and the copy into device slot k that
//! follows is queued after that. The host ring is page-locked once (the
//! daemon's own mapping), so copies run at the copy engine's rate.

use std::sync::Arc;

use crate::gpu::GpuError;
use crate::gpu::driver::{Device, DeviceBuffer, Event, HostRegistration, Stream};
use crate::ring::{Lease, SessionRing};

/// Field order is drop order: the stream, events and device buffer before
/// the device's context; the registration before the ring's mapping.
#[derive(Debug)]
pub struct DeviceRing {
    stream: Stream,
    events: Vec<Event>,
    buffer: DeviceBuffer,
    slot_bytes: usize,
    /// Held for its Drop: unregisters the ring before its mapping goes.
    _registration: HostRegistration,
    device: Device,
    ring: Arc<SessionRing>,
}

impl DeviceRing {
    /// A device copy of `ring` on CUDA device `ordinal`.
    pub fn new(ordinal: usize, ring: Arc<SessionRing>) -> Result<DeviceRing, GpuError> {
        let device = Device::open(ordinal)?;
        let slots = ring.slots().len();
        let slot_bytes = ring.slot_bytes();
        let seg = ring.segment();
        // SAFETY: the segment's whole mapping, alive as long as `ring`,
        // which this value holds (and drops after the registration).
        #[allow(unsafe_code)]
        let registration = unsafe { HostRegistration::new(seg.as_ptr(), seg.len()) }?;
        Ok(DeviceRing {
            stream: Stream::new()?,
            events: (0..slots).map(|_| Event::interprocess()).collect::<Result<_, _>>()?,
            buffer: DeviceBuffer::new(slot_bytes.saturating_mul(slots))?,
            slot_bytes,
            _registration: registration,
            device,
            ring,
        })
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

    /// Queues the copy of the batch in `lease`'s host slot into the same
    /// device slot, and records that slot's event after it.
    pub fn copy(&self, lease: &Lease) -> Result<(), GpuError> {
        self.device.bind()?;
        let slot = lease.token.slot as usize;
        let Some(event) = self.events.get(slot) else {
            return Err(GpuError::Driver {
                call: "device ring",
                error: format!("slot {slot} of {}", self.events.len()),
            });
        };
        // SAFETY: the lease is live: the session holds it until the client
        // releases it, and the client releases only after the copy (its
        // stream waits on the event recorded below), so the host bytes stay
        // unchanged until the copy has run; the ring is page-locked.
        #[allow(unsafe_code)]
        let src = unsafe { self.ring.leased(lease) };
        // SAFETY: `src` as above; device slot `slot` is free: its last
        // batch was released by the client after its work on it had run.
        #[allow(unsafe_code)]
        unsafe { self.buffer.copy_from_host(slot * self.slot_bytes, src, &self.stream) }?;
        event.record(&self.stream)
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
