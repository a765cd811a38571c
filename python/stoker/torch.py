"""`StokerDataset`: a torch IterableDataset over the stoker daemon.

    ds = StokerDataset("s3://bucket/train/", batch_size=256, shuffle_buffer=10_000)
    loader = torchdata.stateful_dataloader.StatefulDataLoader(ds, batch_size=None, num_workers=0)

Each item is one batch, a dict: "__key__" (list of str), and per field
`field` (uint8 tensor: (n, length) when every sample has the same length,
else the flat values) and `field + ".offsets"` (int64, n + 1). On CPU the
tensors are read-only views of the ring (zero copy; clone before writing);
the slot goes back when they are garbage. Use `batch_size=None` in the
DataLoader: the daemon batches.

Rank and world size come from `torch.distributed` when it is initialised
(else the arguments); DataLoader workers split a rank further
(`get_worker_info`), each worker a session of its own. `state_dict()` /
`load_state_dict()` make torchdata's `StatefulDataLoader` resume exactly.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .client import Batch, Client

_warned_no_cuda = False


def _rank_world(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return (rank or 0), (world_size or 1)


def _tensor(array: np.ndarray) -> torch.Tensor:
    # The ring is mapped read-only; torch warns about non-writable arrays
    # once per call site, which is the documented contract here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def batch_tensors(batch: Batch) -> dict:
    """The batch as a dict of zero-copy CPU tensors (see the module doc)."""
    out: dict = {"__key__": batch.keys}
    for name, col in batch.columns.items():
        try:
            values = col.as_array()
        except ValueError:
            values = col.values
        out[name] = _tensor(values)
        out[name + ".offsets"] = _tensor(col.offsets.view(np.int64))
    return out


class _CudaCopier:
    """Registers each ring with CUDA once (read-only), copies each batch on a
    side stream with non_blocking=True, releases the slot when the copy's
    event completes."""

    # Copies in flight before the oldest is waited for (each holds a slot).
    MAX_PENDING = 2
    # Page-lock the ring (cudaHostRegister). False only to measure what
    # pinning buys (python/benchmarks/bench_gpu.py): pageable copies are
    # staged by the driver and do not overlap.
    REGISTER = True

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device=device)
        # id(ring) -> (ring, pointer): the reference keeps the mapping alive
        # while it is registered.
        self.registered: dict = {}
        self.pending: list = []

    def _register(self, batch: Batch) -> None:
        ring = batch._ring
        if id(ring) in self.registered:
            return
        if not self.REGISTER:
            self.registered[id(ring)] = (ring, None)
            return
        ptr = np.frombuffer(ring.mm, dtype=np.uint8).ctypes.data
        # cudaHostRegisterReadOnly = 0x08: the mapping is PROT_READ.
        err = torch.cuda.cudart().cudaHostRegister(ptr, ring.nbytes, 0x08)
        if int(err) != 0:
            warnings.warn(f"stoker: cudaHostRegister failed ({err}); copies will be pageable", stacklevel=3)
            ptr = None
        self.registered[id(ring)] = (ring, ptr)

    def copy(self, batch: Batch) -> dict:
        self._register(batch)
        host = batch_tensors(batch)
        out: dict = {"__key__": host.pop("__key__")}
        with torch.cuda.stream(self.stream):
            for name, t in host.items():
                out[name] = t.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_stream(self.stream)
        for name, t in out.items():
            if name != "__key__":
                # Allocated on the side stream, used on the consumer's: without
                # this, freeing it lets the next copy reuse the memory before
                # the consumer's queued kernels have read it.
                t.record_stream(consumer)
        self.pending.append((event, batch, host))
        self.reap()
        while len(self.pending) > self.MAX_PENDING:
            self.pending[0][0].synchronize()
            self.reap()
        return out

    def reap(self) -> None:
        still = []
        for event, batch, host in self.pending:
            if event.query():
                batch.release()
            else:
                still.append((event, batch, host))
        self.pending = still

    def close(self) -> None:
        for event, batch, _ in self.pending:
            event.synchronize()
            batch.release()
        self.pending = []
        for _, ptr in self.registered.values():
            if ptr is not None:
                torch.cuda.cudart().cudaHostUnregister(ptr)
        self.registered = {}


class StokerDataset(IterableDataset):
    """Batches of `url` from the stoker daemon; see the module doc."""

    def __init__(
        self,
        url: str,
        batch_size: int = 64,
        *,
        socket: Optional[str] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        seed: int = 0,
        epoch: int = 0,
        shuffle_buffer: int = 0,
        shuffle_shards: bool = True,
        fields: Optional[Sequence[str]] = None,
        drop_last: bool = False,
        device: str = "cpu",
        transform: Optional[Callable[[dict], object]] = None,
        ring_bytes: int = 0,
        slots: int = 0,
        reshard_from: Optional[Sequence[bytes]] = None,
        even: Optional[str] = None,
        device_mode: str = "client",
    ):
        super().__init__()
        if device_mode not in ("client", "daemon"):
            raise ValueError(f"device_mode is 'client' or 'daemon', not {device_mode!r}")
        # With a CUDA `device`: "client" copies in this process (the ring
        # page-locked here, copies on a side stream); "daemon" asks the
        # daemon to copy into device memory and views its copy (no work per
        # byte or tensor here).
        self.device_mode = device_mode
        self.url = url
        self.batch_size = batch_size
        self.socket = socket
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.epoch = epoch
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_shards = shuffle_shards
        self.fields = list(fields or [])
        self.drop_last = drop_last
        self.device = device
        self.transform = transform
        self.ring_bytes = ring_bytes
        self.slots = slots
        self._state: Optional[bytes] = None
        self._resume: Optional[bytes] = None
        self._reshard = list(reshard_from or [])
        self.even = even

    def set_epoch(self, epoch: int) -> None:
        """As DistributedSampler.set_epoch: the next iteration runs `epoch`."""
        self.epoch = epoch
        self._resume = None
        self._reshard = []

    def _device(self) -> Optional[torch.device]:
        global _warned_no_cuda
        if not str(self.device).startswith("cuda"):
            return None
        if torch.cuda.is_available():
            return torch.device(self.device)
        if not _warned_no_cuda:
            warnings.warn("stoker: CUDA is not available; yielding CPU tensors", stacklevel=3)
            _warned_no_cuda = True
        return None

    def __iter__(self) -> Iterator[object]:
        rank, world = _rank_world(self.rank, self.world_size)
        info = get_worker_info()
        if info is not None:
            rank, world = rank * info.num_workers + info.id, world * info.num_workers
        device = self._device()
        loader = Client(self.socket).loader(
            self.url,
            self.batch_size,
            rank=rank,
            world_size=world,
            seed=self.seed,
            epoch=self.epoch,
            shuffle_buffer=self.shuffle_buffer,
            shuffle_shards=self.shuffle_shards,
            fields=self.fields,
            drop_last=self.drop_last,
            state=self._resume,
            reshard_from=None if self._resume else self._reshard,
            ring_bytes=self.ring_bytes,
            slots=self.slots,
            even=self.even,
            cuda_device=None if device is None or self.device_mode != "daemon" else device.index or 0,
        )
        self._resume = None
        daemon_copies = device is not None and self.device_mode == "daemon"
        copier = _CudaCopier(device) if device is not None and not daemon_copies else None
        try:
            for batch in loader:
                if daemon_copies:
                    out = batch.cuda()
                else:
                    out = copier.copy(batch) if copier else batch_tensors(batch)
                self._state = batch.state
                del batch
                yield self.transform(out) if self.transform else out
            self._state = None
        finally:
            if copier is not None:
                copier.close()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "state": self._state, "stoker": True}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self._resume = state.get("state")


def find_states(state_dict) -> list:
    """Every StokerDataset state inside `state_dict` (a StatefulDataLoader's,
    or a list of them gathered from all ranks), for `reshard_from`."""
    found = []

    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("stoker") is True and "state" in obj:
                if obj["state"]:
                    found.append(obj["state"])
                return
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(state_dict)
    return found
