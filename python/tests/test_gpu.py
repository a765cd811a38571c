"""The CUDA path. Needs an NVIDIA GPU and a CUDA torch: deselected by default
(pyproject addopts), run on the GPU machine with `pytest -m gpu tests/test_gpu.py`
(naming the file: test_torch.py needs torchdata, which that machine lacks). The data is
a local directory (the `local_*` fixtures): that machine has no moto or boto3
and reaches no network."""

import pytest
import torch
from torch.utils.data import DataLoader

from stoker.torch import StokerDataset

pytestmark = pytest.mark.gpu


def _kw(daemon) -> dict:
    return dict(batch_size=8, socket=daemon.socket, shuffle_buffer=20, seed=1, slots=3)


# "client": this process copies (ring page-locked here, a side stream);
# "daemon": device mode, the daemon copies and this process views its copy
# through CUDA IPC (a second process opening the daemon's device buffer).
MODES = pytest.mark.parametrize("device_mode", ["client", "daemon"])


@MODES
def test_cuda_batches_equal_the_cpu_ones_and_slots_come_back(local_daemon, local_dataset, recwarn, device_mode):
    assert torch.cuda.is_available(), "run on a machine with a GPU"
    kw = _kw(local_daemon)
    cpu = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()}
           for b in DataLoader(StokerDataset(local_dataset.url, **kw), batch_size=None)]
    # Cloned: a device-mode view must not outlive its loader.
    gpu = [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()}
           for b in DataLoader(StokerDataset(local_dataset.url, device="cuda", device_mode=device_mode, **kw),
                               batch_size=None)]
    # 3 slots and 20+ batches: only slots released after their copies let
    # the stream finish.
    assert len(cpu) > 3 * kw["slots"]
    assert len(gpu) == len(cpu)
    for c, g in zip(cpu, gpu):
        assert c["__key__"] == g["__key__"]
        assert g["bin"].device.type == "cuda"
        assert torch.equal(c["bin"], g["bin"].cpu())
        assert torch.equal(c["bin.offsets"], g["bin.offsets"].cpu())
    # The ring was registered (pinned): a failed registration warns and
    # falls back to pageable copies, which would pass the checks above.
    assert not [w for w in recwarn if "stoker:" in str(w.message)], [str(w.message) for w in recwarn]


@MODES
def test_a_batch_dropped_early_is_not_overwritten_before_the_consumer_reads_it(
        local_daemon, local_dataset, device_mode):
    # The copies run on a side stream and the consumer's kernels on the
    # current one: a tensor freed by the consumer while its kernel is still
    # queued must not be handed to the next copy (record_stream).
    kw = _kw(local_daemon)
    want = [int(b["bin"].to(torch.int64).sum())
            for b in DataLoader(StokerDataset(local_dataset.url, **kw), batch_size=None)]
    got = []
    for g in DataLoader(StokerDataset(local_dataset.url, device="cuda", device_mode=device_mode, **kw),
                        batch_size=None):
        torch.cuda._sleep(5_000_000)  # a few ms of queued work before the read
        got.append(g["bin"].to(torch.int64).sum())
        del g
    assert [int(s) for s in got] == want

