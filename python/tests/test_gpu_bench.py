"""`stoker bench --gpu 0`: the daemon's own CUDA path (cudarc, no torch):
collation into a page-locked ring, copies into device memory on a stream,
host slots back once their copies ran. Needs an NVIDIA GPU: deselected by
default (pyproject addopts), run by `scripts/gpu-test` (pytest -m gpu)."""

import json
import os
import subprocess

import pytest

from conftest import STOKER_BIN

pytestmark = pytest.mark.gpu


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([STOKER_BIN, "bench", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "STOKER_LOG": "warn", **(env or {})})


def test_every_batch_reaches_device_memory_byte_for_byte():
    # --gpu-verify reads each batch back from the device and compares it
    # with the ring's bytes; a mismatch fails the run.
    out = _bench("--gpu", "0", "--gpu-verify", "--json", "--epochs", "2",
                 "--synth-shards", "8", "--synth-shard-bytes", "16MiB", "--batch-size", "16")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    g = r["gpu"]
    assert g["batches"] == r["batches"] > 8
    assert g["verified_batches"] == g["batches"]
    assert g["bytes"] >= r["bytes"]  # slots hold keys and offsets too
    assert g["bound_bytes_per_s"] > 0 and 0 < g["copy_ratio"]
    assert r["unique_samples"] == r["samples"] // 2  # keys read from the ring: every sample once an epoch
    assert r["duplicate_samples"] == 0
    assert r["input_stall"]["fraction"] <= 1.0


def test_no_cuda_forced_on_a_gpu_host_exits_2():
    out = _bench("--gpu", "0", env={"STOKER_NO_CUDA": "1"})
    assert out.returncode == 2, out.stderr
    assert "no CUDA" in out.stderr and "panicked" not in out.stderr


def test_a_device_past_the_last_is_named():
    out = _bench("--gpu", "999")
    assert out.returncode == 2, out.stderr
    assert "no CUDA device 999" in out.stderr
