//! Small owners of CUDA driver objects; each frees its object on drop and
//! never panics doing so. Every call needs the device's context current on
//! the calling thread: [`Device::bind`] first, on each thread that uses it.
//!
//! Only reached after [`super::probe`] found a driver (cudarc would panic
//! without one).

#![allow(unsafe_code)]

use std::ffi::c_void;

use cudarc::driver::{result, sys};

use super::GpuError;

type R<T> = Result<T, GpuError>;

/// One GPU and its primary context (shared with every other user of the
/// device in this process, torch included).
#[derive(Debug)]
pub struct Device {
    pub ordinal: usize,
    pub name: String,
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
}

// SAFETY: a CUdevice is an ordinal and a primary context may be made
// current on any thread; the driver API is thread-safe.
unsafe impl Send for Device {}
// SAFETY: as above; `&Device` only binds the context or reads fields.
unsafe impl Sync for Device {}

impl Device {
    /// Retains device `ordinal`'s primary context and binds it to this
    /// thread.
    pub fn open(ordinal: usize) -> R<Device> {
        let count = super::probe()?;
        if ordinal >= count {
            return Err(GpuError::NoSuchDevice { ordinal, count });
        }
        let dev =
            result::device::get(ordinal as i32).map_err(|e| GpuError::driver("cuDeviceGet", e))?;
        let name = result::device::get_name(dev).unwrap_or_else(|_| format!("GPU {ordinal}"));
        // SAFETY: `dev` is a valid device handle from cuDeviceGet.
        let ctx = unsafe { result::primary_ctx::retain(dev) }
            .map_err(|e| GpuError::driver("cuDevicePrimaryCtxRetain", e))?;
        let device = Device { ordinal, name, dev, ctx };
        device.bind()?;
        Ok(device)
    }

    /// Makes this device's context current on the calling thread.
    pub fn bind(&self) -> R<()> {
        // SAFETY: `ctx` is retained for as long as `self` lives.
        unsafe { result::ctx::set_current(self.ctx) }
            .map_err(|e| GpuError::driver("cuCtxSetCurrent", e))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: balances the retain in `open`; the handles below this
        // (streams, buffers) must be dropped first, which their borrows of
        // nothing do not enforce: owners drop them before the device.
        let _ = unsafe { result::primary_ctx::release(self.dev) };
    }
}

/// A non-blocking stream (does not wait on the legacy default stream).
#[derive(Debug)]
pub struct Stream(sys::CUstream);

// SAFETY: streams may be used from any thread with the context bound.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

impl Stream {
    pub fn new() -> R<Stream> {
        result::stream::create(result::stream::StreamKind::NonBlocking)
            .map(Stream)
            .map_err(|e| GpuError::driver("cuStreamCreate", e))
    }

    pub fn raw(&self) -> sys::CUstream {
        self.0
    }

    /// Waits until everything queued on the stream has run.
    pub fn synchronize(&self) -> R<()> {
        // SAFETY: a live stream owned by `self`.
        unsafe { result::stream::synchronize(self.0) }
            .map_err(|e| GpuError::driver("cuStreamSynchronize", e))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once; queued work still runs.
        let _ = unsafe { result::stream::destroy(self.0) };
    }
}

/// An event: timed (for measuring copies) or shareable with another
/// process (interprocess events cannot be timed).
#[derive(Debug)]
pub struct Event(sys::CUevent);

// SAFETY: events may be recorded and queried from any thread.
unsafe impl Send for Event {}
// SAFETY: as above.
unsafe impl Sync for Event {}

impl Event {
    pub fn timed() -> R<Event> {
        result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map(Event)
            .map_err(|e| GpuError::driver("cuEventCreate", e))
    }

    /// An event another process can open (`cuIpcOpenEventHandle`) and wait
    /// on: no timing (the driver requires it for IPC).
    pub fn interprocess() -> R<Event> {
        let flags = sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32
            | sys::CUevent_flags::CU_EVENT_INTERPROCESS as u32;
        let mut event = std::mem::MaybeUninit::uninit();
        // SAFETY: a valid out-pointer and valid flag bits (the enum cannot
        // hold their OR, so the raw call takes them as a c_uint).
        unsafe { sys::cuEventCreate(event.as_mut_ptr(), flags) }
            .result()
            .map_err(|e| GpuError::driver("cuEventCreate", e))?;
        // SAFETY: cuEventCreate succeeded, so it wrote the handle.
        Ok(Event(unsafe { event.assume_init() }))
    }

    pub fn record(&self, stream: &Stream) -> R<()> {
        // SAFETY: both live, owned by their values.
        unsafe { result::event::record(self.0, stream.0) }
            .map_err(|e| GpuError::driver("cuEventRecord", e))
    }

    /// Whether the work before the event's last record has run.
    pub fn is_done(&self) -> R<bool> {
        // SAFETY: a live event.
        match unsafe { result::event::query(self.0) } {
            Ok(()) => Ok(true),
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            Err(e) => Err(GpuError::driver("cuEventQuery", e)),
        }
    }

    pub fn synchronize(&self) -> R<()> {
        // SAFETY: a live event.
        unsafe { result::event::synchronize(self.0) }
            .map_err(|e| GpuError::driver("cuEventSynchronize", e))
    }

    /// Milliseconds between two recorded, completed timed events.
    pub fn elapsed_ms(start: &Event, end: &Event) -> R<f32> {
        // SAFETY: both live; the driver checks they are timed and done.
        unsafe { result::event::elapsed(start.0, end.0) }
            .map_err(|e| GpuError::driver("cuEventElapsedTime", e))
    }

    /// The handle another process opens this event by.
    pub fn ipc_handle(&self) -> R<super::ipc_handle::IpcHandle> {
        let mut h = sys::CUipcEventHandle { reserved: [0; 64] };
        // SAFETY: `h` is a valid out-pointer; the event is interprocess
        // (the driver refuses others with an error, not UB).
        unsafe { sys::cuIpcGetEventHandle(&mut h, self.0) }
            .result()
            .map_err(|e| GpuError::driver("cuIpcGetEventHandle", e))?;
        Ok(super::ipc_handle::IpcHandle::from_raw(h.reserved))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by this value, destroyed once.
        let _ = unsafe { result::event::destroy(self.0) };
    }
}

/// Device memory from `cuMemAlloc` (the kind CUDA IPC can share).
#[derive(Debug)]
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    len: usize,
}

// SAFETY: a device address; usable from any thread with the context bound.
unsafe impl Send for DeviceBuffer {}
// SAFETY: as above.
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    pub fn new(len: usize) -> R<DeviceBuffer> {
        // SAFETY: plain allocation; freed in Drop.
        let ptr = unsafe { result::malloc_sync(len.max(1)) }
            .map_err(|e| GpuError::driver("cuMemAlloc", e))?;
        Ok(DeviceBuffer { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ptr(&self) -> sys::CUdeviceptr {
        self.ptr
    }

    /// Queues a copy of `src` to `offset` on `stream`.
    ///
    /// # Safety
    ///
    /// `src` must stay valid and unchanged until the copy has run (an event
    /// recorded after it completes), and be page-locked or the copy is
    /// synchronous. No other copy may write the same range meanwhile.
    pub unsafe fn copy_from_host(&self, offset: usize, src: &[u8], stream: &Stream) -> R<()> {
        if offset.checked_add(src.len()).is_none_or(|end| end > self.len) {
            return Err(GpuError::Driver {
                call: "cuMemcpyHtoDAsync",
                error: format!(
                    "{} bytes at {offset} overrun a {}-byte buffer",
                    src.len(),
                    self.len
                ),
            });
        }
        // SAFETY: the range is inside the allocation (checked); the
        // caller keeps `src` alive and unchanged until the copy has run.
        unsafe { result::memcpy_htod_async(self.ptr + offset as u64, src, stream.0) }
            .map_err(|e| GpuError::driver("cuMemcpyHtoDAsync", e))
    }

    /// Copies `len` bytes at `offset` back to the host (tests, checks).
    pub fn read(&self, offset: usize, len: usize) -> R<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(GpuError::Driver { call: "cuMemcpyDtoH", error: "out of bounds".into() });
        }
        let mut out = vec![0u8; len];
        // SAFETY: in bounds (checked); `out` is a fresh host buffer.
        unsafe { result::memcpy_dtoh_sync(&mut out, self.ptr + offset as u64) }
            .map_err(|e| GpuError::driver("cuMemcpyDtoH", e))?;
        Ok(out)
    }

    /// The handle another process maps this buffer by.
    pub fn ipc_handle(&self) -> R<super::ipc_handle::IpcHandle> {
        let mut h = sys::CUipcMemHandle { reserved: [0; 64] };
        // SAFETY: valid out-pointer; `ptr` is the base of a cuMemAlloc.
        unsafe { sys::cuIpcGetMemHandle(&mut h, self.ptr) }
            .result()
            .map_err(|e| GpuError::driver("cuIpcGetMemHandle", e))?;
        Ok(super::ipc_handle::IpcHandle::from_raw(h.reserved))
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by `new`, freed once. Pending copies into it
        // are the owner's to finish first (it synchronises its stream).
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}

/// Host memory page-locked for DMA (`cuMemHostRegister`), unregistered on
/// drop. Registering is slow (about 0.1 s per GiB): once per mapping.
#[derive(Debug)]
pub struct HostRegistration {
    ptr: *mut c_void,
    len: usize,
}

// SAFETY: the registration is a property of the address range; any thread
// may drop it.
unsafe impl Send for HostRegistration {}
// SAFETY: as above; `&HostRegistration` exposes nothing mutable.
unsafe impl Sync for HostRegistration {}

impl HostRegistration {
    /// # Safety
    ///
    /// `[ptr, ptr + len)` must be a live mapping that outlives this value.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> R<HostRegistration> {
        // SAFETY: the caller's contract; PORTABLE: pinned for every context.
        unsafe { sys::cuMemHostRegister_v2(ptr.cast(), len, sys::CU_MEMHOSTREGISTER_PORTABLE) }
            .result()
            .map_err(|e| GpuError::driver("cuMemHostRegister", e))?;
        Ok(HostRegistration { ptr: ptr.cast(), len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        // SAFETY: registered by `new`, unregistered once, range still mapped
        // (the caller's contract).
        let _ = unsafe { sys::cuMemHostUnregister(self.ptr) };
    }
}

/// Page-locked host memory from the driver (`cuMemHostAlloc`): the bound's
/// source buffer.
#[derive(Debug)]
pub struct PinnedBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain memory owned by this value.
unsafe impl Send for PinnedBuffer {}

impl PinnedBuffer {
    pub fn new(len: usize) -> R<PinnedBuffer> {
        // SAFETY: plain allocation, freed in Drop.
        let ptr = unsafe { result::malloc_host(len.max(1), sys::CU_MEMHOSTALLOC_PORTABLE) }
            .map_err(|e| GpuError::driver("cuMemHostAlloc", e))?;
        // SAFETY: a fresh allocation of `len` bytes; zeroed so it is
        // initialised before any slice of it exists.
        unsafe { std::ptr::write_bytes(ptr.cast::<u8>(), 0, len) };
        Ok(PinnedBuffer { ptr: ptr.cast(), len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        // SAFETY: from cuMemHostAlloc in `new`, freed once.
        let _ = unsafe { result::free_host(self.ptr.cast()) };
    }
}
