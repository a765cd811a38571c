"""The CUDA path. Needs an NVIDIA GPU and a CUDA torch: deselected by default
(pyproject addopts), run on the GPU machine with `pytest -m gpu`."""

import pytest
import torch
from torch.utils.data import DataLoader

from stoker.torch import StokerDataset

pytestmark = pytest.mark.gpu


def test_cuda_batches_equal_the_cpu_ones_and_slots_come_back(daemon, dataset):
    assert torch.cuda.is_available(), "run on a machine with a GPU"
    kw = dict(batch_size=8, socket=daemon.socket, shuffle_buffer=20, seed=1, slots=3)
    cpu = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()}
           for b in DataLoader(StokerDataset(dataset.url, **kw), batch_size=None)]
    gpu = list(DataLoader(StokerDataset(dataset.url, device="cuda", **kw), batch_size=None))
    # 3 slots and 20+ batches: only slots released after their copies let
    # the stream finish.
    assert len(gpu) == len(cpu)
    for c, g in zip(cpu, gpu):
        assert c["__key__"] == g["__key__"]
        assert g["bin"].device.type == "cuda"
        assert torch.equal(c["bin"], g["bin"].cpu())
        assert torch.equal(c["bin.offsets"], g["bin.offsets"].cpu())
