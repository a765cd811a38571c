"""The client: sessions over gRPC, batches as numpy views of the ring.

    client = stoker.Client()                       # $STOKER_SOCKET or /run/stoker/stoker.sock
    for batch in client.loader("s3://bucket/train/", batch_size=64, rank=0, world_size=8):
        with batch:                                # the slot goes back on exit
            images = batch["jpg"]                  # Column: values + offsets, zero copy
            keys = batch.keys                      # list[str]
            state = batch.state                    # resume token after this batch
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
import weakref
from typing import Iterator, Optional, Sequence

import grpc
import numpy as np

from ._proto import stoker_pb2 as pb
from ._proto import stoker_pb2_grpc as pb_grpc
from .errors import StokerError
from .ring import Ring

DEFAULT_SOCKET = "/run/stoker/stoker.sock"

# Codes after which the same state resumes on a (restarted) daemon.
_RECONNECTABLE = {grpc.StatusCode.UNAVAILABLE}


class Column:
    """One field of a batch: `values` (uint8) and `offsets` (n + 1, uint64),
    both read-only views of the ring. `column[i]` is sample i's bytes."""

    __slots__ = ("name", "values", "offsets")

    def __init__(self, name: str, values: np.ndarray, offsets: np.ndarray):
        self.name = name
        self.values = values
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} of a column of {n}")
        return self.values[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_list(self) -> list:
        """Each sample's bytes, copied."""
        return [self[i].tobytes() for i in range(len(self))]

    def as_array(self) -> np.ndarray:
        """An (n, length) view when every sample has the same length."""
        lengths = self.lengths()
        if len(lengths) == 0:
            return self.values[:0].reshape(0, 0)
        if not np.all(lengths == lengths[0]):
            raise ValueError(f"field {self.name!r} has samples of different lengths")
        return self.values.reshape(len(self), int(lengths[0]))


class Batch:
    """A batch in a leased ring slot. Views stay valid until `release()`
    (also on leaving a `with` block); without either, the slot goes back
    once the batch and every view of it are garbage."""

    def __init__(self, loader: "Loader", ring: Ring, session: str, desc: pb.BatchDescriptor):
        # Every view below is a slice of `slot`, so `slot` (and the
        # finalizer that releases the lease) lives as long as any view.
        slot = np.frombuffer(ring.mm, dtype=np.uint8, count=desc.len, offset=desc.offset)
        self._slot = slot
        self._ring = ring
        self._device_ring = loader._device_ring
        # Device mode: the slot goes back once the consumer's stream has
        # passed the point where the batch was let go.
        release = loader._release_device if self._device_ring is not None else loader._release
        self._release = weakref.finalize(slot, release, session, desc.slot, desc.generation)
        self._descs = {c.name: c for c in desc.columns}
        self.num_samples = desc.num_samples
        self.epoch = desc.epoch
        self.index = desc.index
        self.state: bytes = desc.state
        self.slot = desc.slot
        self.columns = {c.name: self._column(c) for c in desc.columns}
        self.nbytes = sum(c.values_len for c in desc.columns)
        self._keys_desc = desc.keys
        self._keys: Optional[list] = None

    @property
    def keys(self) -> list:
        """The sample keys as `str` (decoded on first use)."""
        if self._keys is None:
            col = self._column(self._keys_desc)
            values, offsets = col.values.tobytes(), col.offsets.tolist()
            self._keys = [values[a:b].decode() for a, b in zip(offsets, offsets[1:])]
        return self._keys

    def _column(self, c: pb.Column) -> Column:
        n = self.num_samples
        offsets = self._slot[c.offsets_at : c.offsets_at + 8 * (n + 1)].view("<u8")
        values = self._slot[c.values_at : c.values_at + c.values_len]
        return Column(c.name, values, offsets)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, field: str) -> Column:
        try:
            return self.columns[field]
        except KeyError:
            raise KeyError(f"no field {field!r}; the batch has {sorted(self.columns)}") from None

    def cuda(self) -> dict:
        """Device mode (`loader(..., cuda_device=N)`): the batch as CUDA
        tensors that view the daemon's copy in device memory — per field
        `name` (uint8 values) and `name.offsets` (int64, n + 1), plus
        `__key__` — with no copy and no per-byte work here. The current
        stream waits for the daemon's copy first. The slot goes back once
        every view is gone (or `release()`) and the current stream has
        passed that point."""
        ring = self._device_ring
        if ring is None:
            raise StokerError(
                "FAILED_PRECONDITION", "not a device-mode batch: open the loader with cuda_device=N"
            )
        import torch

        device = torch.device("cuda", ring.device)
        ring.wait(self.slot, torch.cuda.current_stream(device).cuda_stream)
        n = self.num_samples
        out: dict = {"__key__": self.keys}
        for name, c in self._descs.items():
            # Each view keeps the host slot alive, and so the lease.
            values = ring.array(self.slot, c.values_at, c.values_len, "|u1", self._slot)
            offsets = ring.array(self.slot, c.offsets_at, n + 1, "<i8", self._slot)
            out[name] = torch.as_tensor(values, device=device)
            out[name + ".offsets"] = torch.as_tensor(offsets, device=device)
        return out

    def release(self) -> None:
        """Gives the slot back now; the views must not be used after."""
        self._release()

    @property
    def released(self) -> bool:
        return not self._release.alive

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"Batch(epoch={self.epoch}, index={self.index}, samples={self.num_samples}, "
            f"fields={sorted(self.columns)}, nbytes={self.nbytes})"
        )


def _reconnect_delay(failures: int) -> float:
    """The longest wait before reconnect number `failures` (1, 2, ...):
    0.1 s doubling, at most 5 s."""
    return min(5.0, 0.1 * 2 ** min(failures - 1, 16))


class Loader:
    """One stream of batches for one rank; iterate it once. `state` is the
    resume token after the last batch handed out (give it to a new
    loader to continue exactly there). If the daemon goes away mid-stream,
    the loader reconnects (for up to `reconnect_timeout` seconds) and
    resumes from `state`, so nothing is lost or repeated."""

    def __init__(self, client: "Client", request: pb.OpenStreamRequest, reconnect_timeout: float):
        self._client = client
        self._request = request
        self._reconnect_timeout = reconnect_timeout
        self.state: Optional[bytes] = request.state or None
        self.session: Optional[str] = None
        self.reconnects = 0
        self.samples_left_out = 0
        self.samples_repeated = 0
        self._call = None
        self._slots = 0
        # Batches handed out and not yet released; releases not yet sent.
        self._held = 0
        self._pending: list = []
        self._waiting = False
        # Seconds spent waiting for batches (input stall): in all, and not
        # yet told to the daemon (it goes with the next release).
        self.waited_seconds = 0.0
        self._unreported_wait_us = 0
        self._in_flight: set = set()
        self._lock = threading.RLock()
        # Device mode: the session's device ring, and released device slots
        # whose consumer-stream events have not passed yet.
        self._device_ring = None
        self._device_pending: list = []

    # Releases are sent in small groups (one RPC per batch costs the
    # consumer ~20% of its time): a group goes out when it has
    # `_flush_every` leases, when few slots would be left to the daemon, or
    # at once while the loader waits for a batch (a release from another
    # thread must not wait for a batch that needs its slot).
    @property
    def _flush_every(self) -> int:
        return max(1, self._slots // 4)

    def _release(self, session: str, slot: int, generation: int) -> None:
        with self._lock:
            self._held -= 1
            self._pending.append((session, pb.SlotLease(slot=slot, generation=generation)))
            leases = self._take_pending() if self._waiting else None
        self._send(leases)

    def _release_device(self, session: str, slot: int, generation: int) -> None:
        """A device-mode batch was let go: its slot goes back once the
        work queued on the current stream so far (which may read it) has
        run."""
        import torch

        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self._device_ring.device))
        with self._lock:
            self._device_pending.append((event, session, slot, generation))
        self._reap_device(block=False)

    def _reap_device(self, block: bool) -> None:
        """Releases the device slots whose events have passed (`block`:
        waits for the oldest first)."""
        with self._lock:
            pending, self._device_pending = self._device_pending, []
        if block and pending:
            pending[0][0].synchronize()
        keep = []
        for i, (event, session, slot, generation) in enumerate(pending):
            # Events pass in stream order: stop at the first still queued.
            if keep or not event.query():
                keep.append(pending[i])
                continue
            self._release(session, slot, generation)
        with self._lock:
            self._device_pending = keep + self._device_pending

    def _take_pending(self) -> list:
        leases, self._pending = self._pending, []
        return leases

    def _send(self, leases: Optional[list]) -> None:
        if not leases:
            return
        by_session: dict = {}
        for session, lease in leases:
            by_session.setdefault(session, []).append(lease)
        with self._lock:
            waited_us, self._unreported_wait_us = self._unreported_wait_us, 0
        for session, group in by_session.items():
            try:
                # Asynchronous; the daemon refuses stale leases, and a
                # session that is gone has nothing to free. grpcio cancels
                # a call whose future is garbage-collected before it is
                # done, so the future is kept until then: a lost release
                # would leave the daemon waiting for the slot for good.
                future = self._client._stub.Release.future(
                    pb.ReleaseRequest(session=session, leases=group, waited_us=waited_us),
                    timeout=10,
                )
                waited_us = 0
                with self._lock:
                    self._in_flight.add(future)
                future.add_done_callback(self._release_done)
            except Exception:  # noqa: BLE001 - interpreter shutdown, closed channel
                pass

    def _release_done(self, future) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def _before_wait(self) -> None:
        if self._device_pending:
            # Every slot held or waiting on the GPU: the next batch needs one.
            with self._lock:
                full = self._held + len(self._pending) >= self._slots - 1
            self._reap_device(block=full)
        with self._lock:
            due = len(self._pending) >= self._flush_every or (
                self._held + len(self._pending) >= self._slots - 1
            )
            leases = self._take_pending() if due else None
            self._waiting = True
        self._send(leases)

    def _after_wait(self) -> None:
        with self._lock:
            self._waiting = False

    def _add_wait(self, seconds: float) -> None:
        with self._lock:
            self.waited_seconds += seconds
            self._unreported_wait_us += int(seconds * 1e6)

    def _open(self):
        req = pb.OpenStreamRequest()
        req.CopyFrom(self._request)
        if self.state:
            # A resharded stream's tokens carry its plan: resume from them.
            req.state = self.state
            del req.states[:]
        call = self._client._stub.OpenStream(req)
        self._call = call
        first = next(call)
        if first.WhichOneof("event") != "ring":
            raise StokerError("INTERNAL", f"expected the ring first, got {first.WhichOneof('event')}")
        info = first.ring
        ring = Ring(self._client.socket, info.session, info.fd_token, info.segment_bytes)
        self.session = info.session
        self._slots = info.slots
        if info.HasField("device_ring"):
            from .cuda_ipc import DeviceRing

            self._device_ring = DeviceRing(info.device_ring)
        return call, ring, info.session

    def _check_room(self) -> None:
        """Asking for a batch while every slot is held would wait forever:
        the daemon has nowhere to put it. Say so instead."""
        if self._held < self._slots:
            return
        gc.collect()  # batches in reference cycles
        if self._held >= self._slots:
            raise StokerError(
                "RESOURCE_EXHAUSTED",
                f"all {self._slots} ring slots hold batches you still reference, so no next batch "
                "can arrive: release() them or use `with batch:`, copy what you keep (e.g. "
                "tensor.clone()), or ask for more slots (loader(..., slots=N))",
            )

    def __iter__(self) -> Iterator[Batch]:
        deadline = None
        failures = 0
        try:
            while True:
                try:
                    call, ring, session = self._open()
                    while True:
                        self._before_wait()
                        asked = time.monotonic()
                        try:
                            event = next(call, None)
                        finally:
                            self._after_wait()
                            self._add_wait(time.monotonic() - asked)
                        if event is None:
                            break
                        kind = event.WhichOneof("event")
                        if kind == "batch":
                            deadline, failures = None, 0
                            with self._lock:
                                self._held += 1
                            batch = Batch(self, ring, session, event.batch)
                            self.state = batch.state
                            yield batch
                            del batch
                            self._check_room()
                        elif kind == "end":
                            # What `even` cost this stream (0 without it).
                            self.samples_left_out = event.end.samples_left_out
                            self.samples_repeated = event.end.samples_repeated
                            return
                    raise StokerError("UNAVAILABLE", "the stream ended without its end marker")
                except grpc.RpcError as e:
                    if e.code() not in _RECONNECTABLE:
                        raise StokerError.from_rpc(e) from None
                    err = StokerError.from_rpc(e)
                except StokerError as e:
                    if e.code != "UNAVAILABLE":
                        raise
                    err = e
                # The daemon went away: retry until it is back, then resume.
                now = time.monotonic()
                deadline = deadline or now + self._reconnect_timeout
                if now >= deadline:
                    raise err
                self.reconnects += 1
                failures += 1
                # Capped exponential backoff, full jitter: a node's ranks
                # that lost the daemon together must not come back in step
                # (each reconnect may cost the daemon a listing).
                time.sleep(random.uniform(0, _reconnect_delay(failures)))
        finally:
            if self._device_pending:
                # The stream is over: what the GPU still reads goes back
                # once it has run.
                import torch

                torch.cuda.synchronize(self._device_ring.device)
                self._reap_device(block=False)
            with self._lock:
                leases = self._take_pending()
            self._send(leases)
            if self._device_ring is not None and self._held == 0 and not self._device_pending:
                # No view of it left: unmap the daemon's buffer here.
                self._device_ring.close()
                self._device_ring = None
            if self._call is not None:
                self._call.cancel()

    def close(self) -> None:
        """Ends the session (slots still leased are reclaimed by the daemon)."""
        if self._call is not None:
            self._call.cancel()


class Client:
    """A connection to the daemon's Unix socket."""

    def __init__(self, socket: Optional[str] = None):
        self.socket = socket or os.environ.get("STOKER_SOCKET") or DEFAULT_SOCKET
        # grpcio over a Unix socket needs an authority it can put in :authority.
        self._channel = grpc.insecure_channel(
            f"unix:{self.socket}",
            options=[
                ("grpc.default_authority", "localhost"),
                ("grpc.max_receive_message_length", 64 << 20),
            ],
        )
        self._stub = pb_grpc.StokerStub(self._channel)

    def loader(
        self,
        url: str,
        batch_size: int = 64,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        epochs: int = 1,
        shuffle_buffer: int = 0,
        shuffle_shards: bool = True,
        fields: Optional[Sequence[str]] = None,
        drop_last: bool = False,
        state: Optional[bytes] = None,
        reshard_from: Optional[Sequence[bytes]] = None,
        ring_bytes: int = 0,
        slots: int = 0,
        reconnect_timeout: float = 30.0,
        even: Optional[str] = None,
        cuda_device: Optional[int] = None,
    ) -> Loader:
        """A stream of batches of `url` (brace pattern, prefix or shard) for
        `rank` of `world_size`; `state` resumes after the batch it came from.

        `even`: "drop", "pad" or "none" splits each epoch among ranks by
        samples, so every rank takes the same number of steps (what DDP
        needs): "drop" leaves the remainder out, "pad" repeats the epoch's
        first samples; the loader's `samples_left_out` / `samples_repeated`
        say how many once the stream ends. None: by whole shards.

        `cuda_device`: device mode. The daemon also copies each batch into
        that GPU's memory and `batch.cuda()` returns CUDA tensors viewing
        it (no copy, no per-byte work in this process). Refused
        (FAILED_PRECONDITION) where the daemon has no CUDA or may not use
        the device (`serve --gpus`); host mode is the default.

        `reshard_from`: the last `state` of every rank (DataLoader workers
        count as ranks) of a run with another world size, all in one epoch;
        this rank gets its share of the samples they had not delivered."""
        req = pb.OpenStreamRequest(
            url=url,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
            epoch=epoch,
            epochs=epochs,
            shuffle_buffer=shuffle_buffer,
            shuffle_shards=shuffle_shards,
            fields=list(fields or []),
            drop_last=drop_last,
            state=state or b"",
            states=list(reshard_from or []),
            ring_bytes=ring_bytes,
            slots=slots,
            even=even or "",
        )
        if cuda_device is not None:
            req.cuda_device = int(cuda_device)
        return Loader(self, req, reconnect_timeout)

    def stats(self, session: str = "") -> dict:
        """Counters of a session, or of the daemon when `session` is empty."""
        try:
            reply = self._stub.Stats(pb.StatsRequest(session=session), timeout=10)
        except grpc.RpcError as e:
            raise StokerError.from_rpc(e) from None
        out = {f.name: getattr(reply, f.name) for f in reply.DESCRIPTOR.fields}
        # `gpus`: one dict per GPU (NVML's last sample), empty without a driver.
        out["gpus"] = [{f.name: getattr(g, f.name) for f in g.DESCRIPTOR.fields} for g in reply.gpus]
        return out

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
