from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OpenStreamRequest(_message.Message):
    __slots__ = ("url", "batch_size", "rank", "world_size", "seed", "epoch", "shuffle_buffer", "shuffle_shards", "fields", "drop_last", "state", "epochs", "ring_bytes", "slots", "states", "even", "cuda_device")
    URL_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_BUFFER_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_SHARDS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    DROP_LAST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    RING_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    EVEN_FIELD_NUMBER: _ClassVar[int]
    CUDA_DEVICE_FIELD_NUMBER: _ClassVar[int]
    url: str
    batch_size: int
    rank: int
    world_size: int
    seed: int
    epoch: int
    shuffle_buffer: int
    shuffle_shards: bool
    fields: _containers.RepeatedScalarFieldContainer[str]
    drop_last: bool
    state: bytes
    epochs: int
    ring_bytes: int
    slots: int
    states: _containers.RepeatedScalarFieldContainer[bytes]
    even: str
    cuda_device: int
    def __init__(self, url: _Optional[str] = ..., batch_size: _Optional[int] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., seed: _Optional[int] = ..., epoch: _Optional[int] = ..., shuffle_buffer: _Optional[int] = ..., shuffle_shards: _Optional[bool] = ..., fields: _Optional[_Iterable[str]] = ..., drop_last: _Optional[bool] = ..., state: _Optional[bytes] = ..., epochs: _Optional[int] = ..., ring_bytes: _Optional[int] = ..., slots: _Optional[int] = ..., states: _Optional[_Iterable[bytes]] = ..., even: _Optional[str] = ..., cuda_device: _Optional[int] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("ring", "batch", "end")
    RING_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ring: RingInfo
    batch: BatchDescriptor
    end: StreamEnd
    def __init__(self, ring: _Optional[_Union[RingInfo, _Mapping]] = ..., batch: _Optional[_Union[BatchDescriptor, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ...) -> None: ...

class RingInfo(_message.Message):
    __slots__ = ("session", "slots", "slot_bytes", "fd_token", "segment_bytes", "device_ring")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SLOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    FD_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_RING_FIELD_NUMBER: _ClassVar[int]
    session: str
    slots: int
    slot_bytes: int
    fd_token: str
    segment_bytes: int
    device_ring: DeviceRing
    def __init__(self, session: _Optional[str] = ..., slots: _Optional[int] = ..., slot_bytes: _Optional[int] = ..., fd_token: _Optional[str] = ..., segment_bytes: _Optional[int] = ..., device_ring: _Optional[_Union[DeviceRing, _Mapping]] = ...) -> None: ...

class DeviceRing(_message.Message):
    __slots__ = ("device", "slot_bytes", "memory_handle", "event_handles")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SLOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_HANDLE_FIELD_NUMBER: _ClassVar[int]
    EVENT_HANDLES_FIELD_NUMBER: _ClassVar[int]
    device: int
    slot_bytes: int
    memory_handle: bytes
    event_handles: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, device: _Optional[int] = ..., slot_bytes: _Optional[int] = ..., memory_handle: _Optional[bytes] = ..., event_handles: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("name", "offsets_at", "values_at", "values_len")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_AT_FIELD_NUMBER: _ClassVar[int]
    VALUES_AT_FIELD_NUMBER: _ClassVar[int]
    VALUES_LEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    offsets_at: int
    values_at: int
    values_len: int
    def __init__(self, name: _Optional[str] = ..., offsets_at: _Optional[int] = ..., values_at: _Optional[int] = ..., values_len: _Optional[int] = ...) -> None: ...

class BatchDescriptor(_message.Message):
    __slots__ = ("slot", "generation", "offset", "len", "num_samples", "keys", "columns", "epoch", "index", "state")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LEN_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    slot: int
    generation: int
    offset: int
    len: int
    num_samples: int
    keys: Column
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    epoch: int
    index: int
    state: bytes
    def __init__(self, slot: _Optional[int] = ..., generation: _Optional[int] = ..., offset: _Optional[int] = ..., len: _Optional[int] = ..., num_samples: _Optional[int] = ..., keys: _Optional[_Union[Column, _Mapping]] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., epoch: _Optional[int] = ..., index: _Optional[int] = ..., state: _Optional[bytes] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("batches", "samples", "samples_left_out", "samples_repeated")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_LEFT_OUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_REPEATED_FIELD_NUMBER: _ClassVar[int]
    batches: int
    samples: int
    samples_left_out: int
    samples_repeated: int
    def __init__(self, batches: _Optional[int] = ..., samples: _Optional[int] = ..., samples_left_out: _Optional[int] = ..., samples_repeated: _Optional[int] = ...) -> None: ...

class SlotLease(_message.Message):
    __slots__ = ("slot", "generation")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    slot: int
    generation: int
    def __init__(self, slot: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("session", "leases", "waited_us")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    WAITED_US_FIELD_NUMBER: _ClassVar[int]
    session: str
    leases: _containers.RepeatedCompositeFieldContainer[SlotLease]
    waited_us: int
    def __init__(self, session: _Optional[str] = ..., leases: _Optional[_Iterable[_Union[SlotLease, _Mapping]]] = ..., waited_us: _Optional[int] = ...) -> None: ...

class ReleaseReply(_message.Message):
    __slots__ = ("refused",)
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    refused: _containers.RepeatedCompositeFieldContainer[SlotLease]
    def __init__(self, refused: _Optional[_Iterable[_Union[SlotLease, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("batches", "samples", "bytes", "requests", "retries", "throttled", "concurrency", "part_bytes", "slots_leased", "sessions", "ring_bytes", "budget_used_bytes", "shared_bytes", "consumer_wait_us", "session_us", "consumer_wait_fraction", "gpus")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PART_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_LEASED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    RING_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    SESSION_US_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_WAIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    batches: int
    samples: int
    bytes: int
    requests: int
    retries: int
    throttled: int
    concurrency: int
    part_bytes: int
    slots_leased: int
    sessions: int
    ring_bytes: int
    budget_used_bytes: int
    shared_bytes: int
    consumer_wait_us: int
    session_us: int
    consumer_wait_fraction: float
    gpus: _containers.RepeatedCompositeFieldContainer[GpuStats]
    def __init__(self, batches: _Optional[int] = ..., samples: _Optional[int] = ..., bytes: _Optional[int] = ..., requests: _Optional[int] = ..., retries: _Optional[int] = ..., throttled: _Optional[int] = ..., concurrency: _Optional[int] = ..., part_bytes: _Optional[int] = ..., slots_leased: _Optional[int] = ..., sessions: _Optional[int] = ..., ring_bytes: _Optional[int] = ..., budget_used_bytes: _Optional[int] = ..., shared_bytes: _Optional[int] = ..., consumer_wait_us: _Optional[int] = ..., session_us: _Optional[int] = ..., consumer_wait_fraction: _Optional[float] = ..., gpus: _Optional[_Iterable[_Union[GpuStats, _Mapping]]] = ...) -> None: ...

class GpuStats(_message.Message):
    __slots__ = ("index", "name", "utilization", "memory_used_bytes", "memory_total_bytes", "pcie_rx_bytes_per_s")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PCIE_RX_BYTES_PER_S_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int
    pcie_rx_bytes_per_s: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., utilization: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., pcie_rx_bytes_per_s: _Optional[float] = ...) -> None: ...
