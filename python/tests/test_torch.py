"""StokerDataset with DataLoader workers, ranks and StatefulDataLoader."""

import warnings

import pytest
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

import stoker.torch as st
from stoker.torch import StokerDataset


def keys_and_bytes(loader):
    return [(b["__key__"], b["bin"].clone(), b["bin.offsets"].clone()) for b in loader]


def test_two_ranks_two_workers_deliver_every_sample_once(daemon, dataset):
    seen = []
    for rank in range(2):
        ds = StokerDataset(
            dataset.url, batch_size=8, socket=daemon.socket, rank=rank, world_size=2, shuffle_buffer=20
        )
        for batch in DataLoader(ds, batch_size=None, num_workers=2):
            assert isinstance(batch["bin"], torch.Tensor) and batch["bin"].dtype == torch.uint8
            offsets = batch["bin.offsets"]
            assert offsets.dtype == torch.int64 and len(offsets) == len(batch["__key__"]) + 1
            for i, key in enumerate(batch["__key__"]):
                value = batch["bin"][offsets[i] : offsets[i + 1]].numpy().tobytes()
                assert value == dataset.samples[key]["bin"]
                seen.append(key)
    assert len(seen) == len(dataset.keys), "no sample twice"
    assert set(seen) == dataset.keys, "no sample missing"


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_exactly(daemon, dataset, workers):
    def make():
        ds = StokerDataset(dataset.url, batch_size=8, socket=daemon.socket, shuffle_buffer=30, seed=5)
        return StatefulDataLoader(ds, batch_size=None, num_workers=workers)

    full = keys_and_bytes(make())
    loader = make()
    it = iter(loader)
    k = 5
    head = [next(it) for _ in range(k)]
    state = loader.state_dict()
    del it, loader, head
    resumed = make()
    resumed.load_state_dict(state)
    rest = keys_and_bytes(resumed)
    assert len(rest) == len(full) - k
    for (ka, va, oa), (kb, vb, ob) in zip(full[k:], rest):
        assert ka == kb
        assert torch.equal(va, vb) and torch.equal(oa, ob)


def test_rank_and_world_size_come_from_torch_distributed(daemon, dataset, tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1
    )
    try:
        # The explicit rank 1 of 2 is overridden by the process group (0 of 1).
        ds = StokerDataset(dataset.url, batch_size=8, socket=daemon.socket, rank=1, world_size=2)
        keys = [k for b in DataLoader(ds, batch_size=None) for k in b["__key__"]]
    finally:
        torch.distributed.destroy_process_group()
    assert set(keys) == dataset.keys


@pytest.mark.parametrize("batch_size", [1, 4])
def test_fields_are_2d_when_lengths_agree_and_flat_otherwise(daemon, dataset, batch_size):
    # Batch size 1 always agrees; json's lengths vary between samples.
    ds = StokerDataset(dataset.url, batch_size=batch_size, socket=daemon.socket, fields=["json"])
    shapes = set()
    for batch in DataLoader(ds, batch_size=None):
        assert set(batch) == {"__key__", "json", "json.offsets"}
        want = [dataset.samples[k]["json"] for k in batch["__key__"]]
        values = batch["json"]
        if len({len(w) for w in want}) == 1:
            assert values.shape == (len(want), len(want[0]))
        else:
            assert values.dim() == 1
        assert values.numpy().tobytes() == b"".join(want)
        shapes.add(values.dim())
    if batch_size == 1:
        assert shapes == {2}
    else:
        assert 1 in shapes, "json indices 0..39 give batches of mixed lengths"



def test_device_cuda_without_cuda_warns_once_and_yields_cpu_tensors(daemon, dataset, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the GPU test covers it")  # never counted: see test_gpu.py
    monkeypatch.setattr(st, "_warned_no_cuda", False)
    ds = StokerDataset(dataset.url, batch_size=8, socket=daemon.socket, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [{k: v.clone() for k, v in b.items() if k != "__key__"} for b in DataLoader(ds, batch_size=None)]
        for _ in DataLoader(ds, batch_size=None):
            pass
    mine = [w for w in caught if "CUDA is not available" in str(w.message)]
    assert len(mine) == 1
    assert all(b["bin"].device.type == "cpu" for b in batches)


def test_holding_every_slot_is_a_named_error_not_a_hang(daemon, dataset):
    ds = StokerDataset(dataset.url, batch_size=8, socket=daemon.socket, slots=3)
    with pytest.raises(Exception) as e:
        list(DataLoader(ds, batch_size=None))
    assert "ring slots hold batches you still reference" in str(e.value)


def test_a_stateful_dataloader_state_reshards_to_another_world_size(daemon, dataset):
    # Old run: one rank, two DataLoader workers (two streams of world 2).
    ds = StokerDataset(dataset.url, batch_size=6, socket=daemon.socket, shuffle_buffer=25, seed=2)
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=2)
    it = iter(loader)
    delivered = [k for _ in range(5) for k in next(it)["__key__"]]
    states = st.find_states(loader.state_dict())
    del it, loader
    assert len(states) == 2
    # New run: three ranks, no workers.
    rest = []
    for rank in range(3):
        ds = StokerDataset(dataset.url, batch_size=6, socket=daemon.socket, shuffle_buffer=25, seed=2,
                           rank=rank, world_size=3, reshard_from=states)
        rest += [k for b in DataLoader(ds, batch_size=None) for k in b["__key__"]]
    everything = delivered + rest
    assert len(everything) == len(set(everything)) and set(everything) == dataset.keys
