"""Device mode: the daemon's copy of a session's ring in GPU memory, opened
through CUDA IPC (the driver API via ctypes: no torch internals, no
per-byte work in this process).

The daemon copies each batch into device slot k on its own stream and
records event k before it sends the descriptor; `Batch.cuda()` makes the
caller's stream wait on that event and returns tensors that view the
device slot. A device slot is released only once the consumer's stream has
passed the point where the batch was let go (an event recorded then)."""

from __future__ import annotations

import ctypes
from typing import Optional

from .errors import StokerError


class _Handle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * 64)]


_lib: Optional[ctypes.CDLL] = None


def _cuda() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise StokerError("FAILED_PRECONDITION", f"no CUDA driver in this process: {e}") from None
        lib.cuIpcOpenMemHandle_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), _Handle, ctypes.c_uint]
        lib.cuIpcCloseMemHandle.argtypes = [ctypes.c_uint64]
        lib.cuIpcOpenEventHandle.argtypes = [ctypes.POINTER(ctypes.c_void_p), _Handle]
        lib.cuEventDestroy_v2.argtypes = [ctypes.c_void_p]
        lib.cuStreamWaitEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
        lib.cuDeviceGet.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.cuDevicePrimaryCtxRetain.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        lib.cuDevicePrimaryCtxRelease_v2.argtypes = [ctypes.c_int]
        lib.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise StokerError("INTERNAL", f"{what} failed: CUDA error {rc}")


class _CudaArray:
    """A device range as `__cuda_array_interface__` (torch.as_tensor views
    it without a copy and keeps this object, and so `owner`, alive)."""

    def __init__(self, ptr: int, n: int, typestr: str, owner: object):
        self.__cuda_array_interface__ = {
            "shape": (n,), "typestr": typestr, "data": (ptr, False), "version": 3, "stream": None,
        }
        self._owner = owner


class DeviceRing:
    """One session's device ring, opened in this process."""

    def __init__(self, info) -> None:
        import torch

        self.device = int(info.device)
        self.slot_bytes = int(info.slot_bytes)
        torch.cuda.init()
        lib = _cuda()
        # The device's primary context (the one torch uses), made current
        # explicitly before each call: the runtime binds it lazily, per
        # thread.
        dev = ctypes.c_int()
        _check(lib.cuDeviceGet(ctypes.byref(dev), self.device), "cuDeviceGet")
        self._dev = dev.value
        ctx = ctypes.c_void_p()
        _check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), self._dev), "cuDevicePrimaryCtxRetain")
        self._ctx = ctx
        self._bind()
        ptr = ctypes.c_uint64()
        # 1: cudaIpcMemLazyEnablePeerAccess.
        _check(lib.cuIpcOpenMemHandle_v2(ctypes.byref(ptr), _Handle.from_buffer_copy(info.memory_handle), 1),
               "cuIpcOpenMemHandle")
        self.base = ptr.value
        self.events = []
        for h in info.event_handles:
            ev = ctypes.c_void_p()
            _check(lib.cuIpcOpenEventHandle(ctypes.byref(ev), _Handle.from_buffer_copy(h)), "cuIpcOpenEventHandle")
            self.events.append(ev)

    def _bind(self) -> None:
        _check(_cuda().cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")

    def wait(self, slot: int, stream_ptr: int) -> None:
        """`stream_ptr` runs nothing more until the daemon's copy into
        `slot` has run."""
        self._bind()
        _check(_cuda().cuStreamWaitEvent(ctypes.c_void_p(stream_ptr), self.events[slot], 0), "cuStreamWaitEvent")

    def array(self, slot: int, at: int, n: int, typestr: str, owner: object) -> _CudaArray:
        """`n` items of `typestr` (`|u1`, `<i8`: the last digit is the item
        size) at byte `at` of device slot `slot`; `owner` lives as long as
        any tensor over it."""
        if at + n * int(typestr[-1]) > self.slot_bytes:
            raise StokerError("INTERNAL", f"a column past the end of device slot {slot}")
        return _CudaArray(self.base + slot * self.slot_bytes + at, n, typestr, owner)

    def close(self) -> None:
        lib = _cuda()
        self._bind()
        for ev in self.events:
            lib.cuEventDestroy_v2(ev)
        self.events = []
        if self.base:
            lib.cuIpcCloseMemHandle(self.base)
            self.base = 0
        if self._ctx:
            lib.cuDevicePrimaryCtxRelease_v2(self._dev)
            self._ctx = None
