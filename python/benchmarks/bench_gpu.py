"""Batches into GPU memory: stoker's CUDA path against the copy engine's
bound and a webdataset-style PyTorch loader, on the same data in one run.

    python3 python/benchmarks/bench_gpu.py                 # 8 GiB synthetic, local files
    python3 python/benchmarks/bench_gpu.py --url s3://bucket/train/

Needs an NVIDIA GPU and CUDA torch. Per round, in this order:

- `h2d pinned` / `h2d pageable`: torch copying one batch-sized host tensor
  to the GPU over and over: what the copy engine allows, no loading at all;
- `stoker cuda`: `StokerDataset(device="cuda")` (ring registered with CUDA,
  copies on a side stream), synchronised at the end;
- `stoker cuda pageable`: the same with registration off, to show what
  pinning the ring buys;
- `stoker device mode`: `StokerDataset(device="cuda", device_mode="daemon")`:
  the daemon copies into device memory and this process views its copy
  through CUDA IPC; `ms/batch` is this (the trainer's) process's CPU per
  batch; with `device mode xK` and `device mode + step` as below;
- `stoker cpu`: the zero-copy CPU tensors, no GPU involved;
- `tarfile loader`: a torch DataLoader over the shards with Python's tarfile
  (`--workers` processes, pin_memory=True), batches `.to("cuda")`: what
  webdataset-style loaders do, written out here so the GPU machine needs no
  extra package (local shards only);
- `stoker bench`: the in-process `stoker bench URL --json` (no daemon, no
  Python), the pipeline's own rate on this machine;
- `stoker cuda xK`: `--sessions` processes at once, each rank i of K on
  the same GPU (as K trainers of one node would share the daemon): the
  aggregate rate, over the first start to the last finish;
- `stoker + step`: stoker cuda with a simulated training step of
  `--step-ms` per batch (a GPU sleep on the current stream). `busy` is the
  time the same sleeps take back to back, with no loading, over the wall
  time with loading: 1.0 means the input never made the GPU wait.

Prints a table to stderr and one JSON object as the last line of stdout.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

import stoker
from stoker import torch as stoker_torch
from stoker.torch import StokerDataset

REPO = Path(__file__).resolve().parents[2]


def nbytes(batch: dict) -> int:
    return sum(t.numel() * t.element_size() for k, t in batch.items() if k != "__key__")


def h2d(batch_bytes: int, pinned: bool, seconds: float = 1.0) -> float:
    src = torch.empty(batch_bytes, dtype=torch.uint8, pin_memory=pinned)
    dst = torch.empty(batch_bytes, dtype=torch.uint8, device="cuda")
    dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(8):
            dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        n += 8
    return n * batch_bytes / (time.perf_counter() - t)


def run_stoker(url: str, socket: str, args, device: str, register: bool = True,
               step_cycles: int = 0, device_mode: str = "client") -> dict:
    stoker_torch._CudaCopier.REGISTER = register
    ds = StokerDataset(url, batch_size=args.batch_size, socket=socket, device=device,
                       slots=args.slots, shuffle_shards=False, device_mode=device_mode)
    samples = total = batches = 0
    first = None
    t, cpu = time.perf_counter(), time.process_time()
    for batch in DataLoader(ds, batch_size=None):
        if first is None:
            first = time.perf_counter() - t
        if step_cycles:
            torch.cuda._sleep(step_cycles)
        samples += len(batch["__key__"])
        total += nbytes(batch)
        batches += 1
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    stoker_torch._CudaCopier.REGISTER = True
    trainer_cpu = time.process_time() - cpu
    return {"samples": samples, "bytes": total, "batches": batches, "seconds": seconds, "first": first,
            "client_cores": trainer_cpu / seconds, "client_ms_per_batch": trainer_cpu / max(batches, 1) * 1e3}


def _session(rank: int, world: int, url: str, socket: str, batch_size: int, slots: int,
             barrier, results, device_mode: str = "client") -> None:
    torch.empty(1, device="cuda")  # the CUDA context before the clock starts
    ds = StokerDataset(url, batch_size=batch_size, socket=socket, device="cuda", slots=slots,
                       shuffle_shards=False, rank=rank, world_size=world, device_mode=device_mode)
    barrier.wait()
    total = samples = 0
    t = time.monotonic()
    for batch in DataLoader(ds, batch_size=None):
        samples += len(batch["__key__"])
        total += nbytes(batch)
    torch.cuda.synchronize()
    results.put((total, samples, t, time.monotonic()))


def run_sessions(url: str, socket: str, args, device_mode: str = "client") -> dict:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(args.sessions), ctx.Queue()
    procs = [ctx.Process(target=_session, args=(i, args.sessions, url, socket, args.batch_size, args.slots,
                                                barrier, results, device_mode)) for i in range(args.sessions)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0, p.exitcode
    start, end = min(g[2] for g in got), max(g[3] for g in got)
    return {"bytes": sum(g[0] for g in got), "samples": sum(g[1] for g in got), "seconds": end - start}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class TarShards(IterableDataset):
    """Python tarfile over local shards, samples grouped by key, batches of
    concatenated fields with offsets (the layout stoker hands out)."""

    def __init__(self, paths: list[str], batch_size: int):
        self.paths, self.batch_size = paths, batch_size

    def __iter__(self):
        info = get_worker_info()
        paths = self.paths if info is None else self.paths[info.id::info.num_workers]
        pending: list[dict] = []
        for path in paths:
            with tarfile.open(path) as tar:
                sample: dict = {}
                key = None
                for m in tar:
                    k, _, ext = m.name.partition(".")
                    if key is not None and k != key:
                        pending.append(sample)
                        sample = {}
                    key = k
                    sample["__key__"] = k
                    sample[ext] = tar.extractfile(m).read()
                    if len(pending) == self.batch_size:
                        yield self.collate(pending)
                        pending = []
                if sample:
                    pending.append(sample)
        if pending:
            yield self.collate(pending)

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        out: dict = {"__key__": [s["__key__"] for s in samples]}
        for field in samples[0]:
            if field == "__key__":
                continue
            parts = [s[field] for s in samples]
            out[field] = torch.from_numpy(np.frombuffer(b"".join(parts), dtype=np.uint8).copy())
            out[field + ".offsets"] = torch.from_numpy(np.cumsum([0] + [len(p) for p in parts]))
        return out


def run_tarfile(paths: list[str], args) -> dict:
    loader = DataLoader(TarShards(paths, args.batch_size), batch_size=None, num_workers=args.workers,
                        pin_memory=True, prefetch_factor=4, persistent_workers=False)
    samples = total = batches = 0
    t = time.perf_counter()
    for batch in loader:
        gpu = {k: (v.to("cuda", non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        samples += len(gpu["__key__"])
        total += nbytes(gpu)
        batches += 1
    torch.cuda.synchronize()
    return {"samples": samples, "bytes": total, "batches": batches, "seconds": time.perf_counter() - t}


def compute_only(batches: int, cycles: int) -> float:
    """Seconds the simulated steps take back to back, nothing loading."""
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(batches):
        torch.cuda._sleep(cycles)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def in_process(bin_: str, url: str, args) -> dict:
    out = subprocess.run([bin_, "bench", url, "--json", "--epochs", "1", "--batch-size", str(args.batch_size)],
                         check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return {"samples": report["samples"], "bytes": report["bytes_per_s"] * report["seconds"],
            "seconds": report["seconds"]}


def sleep_cycles_per_ms() -> float:
    torch.cuda._sleep(1_000_000)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(50_000_000)
    end.record()
    end.synchronize()
    return 50_000_000 / start.elapsed_time(end)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="dataset (default: generate --gib GiB of local shards)")
    p.add_argument("--gib", type=float, default=8.0)
    p.add_argument("--sample-bytes", default="256KiB")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--workers", type=int, default=8, help="tarfile loader processes")
    p.add_argument("--sessions", type=int, default=8, help="processes in the aggregate run")
    p.add_argument("--step-ms", type=float, default=5.0, help="simulated training step per batch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bin", default=os.environ.get("STOKER_BIN", str(REPO / "target/release/stoker")))
    args = p.parse_args()
    assert torch.cuda.is_available(), "bench_gpu needs a CUDA GPU"

    rows: dict[str, list[dict]] = {}

    def add(name: str, r: dict) -> None:
        rows.setdefault(name, []).append(r)
        gbs = r["bytes"] / r["seconds"] / 1e9
        extra = f"  first batch {r['first'] * 1000:5.0f} ms" if r.get("first") is not None else ""
        extra += f"  client {r['client_cores']:4.2f} cores" if "client_cores" in r else ""
        extra += f" ({r['client_ms_per_batch']:.3f} ms/batch)" if "client_ms_per_batch" in r else ""
        extra += f"  daemon {r['daemon_cores']:4.1f} cores" if "daemon_cores" in r else ""
        extra += f"  busy {r['busy']:.3f} (after the first batch {r['busy_steady']:.3f})" if "busy" in r else ""
        print(f"{name:>22}: {gbs:7.2f} GB/s  {r['samples'] / r['seconds']:9.0f} samples/s{extra}",
              file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="stoker-gpu-", dir="/tmp") as tmp:
        url, paths = args.url, []
        if url is None:
            url = tmp + "/data/"
            shards = max(8, int(args.gib * 8))  # 128 MiB shards
            subprocess.run([args.bin, "gen", url, "--shards", str(shards), "--shard-bytes", "128MiB",
                            "--sample-bytes", args.sample_bytes], check=True, stdout=subprocess.DEVNULL)
            paths = sorted(glob.glob(url + "*.tar"))
        socket = tmp + "/stoker.sock"
        daemon = subprocess.Popen([args.bin, "serve", "--socket", socket, "--allow-url", "*"], stderr=subprocess.DEVNULL)
        try:
            for _ in range(400):
                try:
                    stoker.Client(socket).stats()
                    break
                except stoker.StokerError:
                    time.sleep(0.05)
            warm = run_stoker(url, socket, args, "cuda")  # page cache, daemon, CUDA context
            batch_bytes = warm["bytes"] // warm["batches"]
            cycles = sleep_cycles_per_ms() * args.step_ms
            for _ in range(args.rounds):
                for pinned in (True, False):
                    bps = h2d(batch_bytes, pinned)
                    add("h2d " + ("pinned" if pinned else "pageable"), {"bytes": bps, "seconds": 1.0,
                                                                        "samples": 0})
                cpu0 = cpu_seconds(daemon.pid)
                r = run_stoker(url, socket, args, "cuda")
                r["daemon_cores"] = (cpu_seconds(daemon.pid) - cpu0) / r["seconds"]
                add("stoker cuda", r)
                # Device mode: the daemon copies, this process only views.
                cpu0 = cpu_seconds(daemon.pid)
                r = run_stoker(url, socket, args, "cuda", device_mode="daemon")
                r["daemon_cores"] = (cpu_seconds(daemon.pid) - cpu0) / r["seconds"]
                assert r["samples"] == warm["samples"], (r["samples"], warm["samples"])
                add("stoker device mode", r)
                add("stoker cuda pageable", run_stoker(url, socket, args, "cuda", register=False))
                add("stoker cpu", run_stoker(url, socket, args, "cpu"))
                if paths:
                    r = run_tarfile(paths, args)
                    assert r["samples"] == warm["samples"], (r["samples"], warm["samples"])
                    add("tarfile loader", r)
                add("stoker bench", in_process(args.bin, url, args))
                if args.sessions > 1:
                    cpu0 = cpu_seconds(daemon.pid)
                    r = run_sessions(url, socket, args)
                    r["daemon_cores"] = (cpu_seconds(daemon.pid) - cpu0) / r["seconds"]
                    assert r["samples"] == warm["samples"], (r["samples"], warm["samples"])
                    add(f"stoker cuda x{args.sessions}", r)
                    r = run_sessions(url, socket, args, device_mode="daemon")
                    assert r["samples"] == warm["samples"], (r["samples"], warm["samples"])
                    add(f"device mode x{args.sessions}", r)
                r = run_stoker(url, socket, args, "cuda", step_cycles=int(cycles))
                compute = compute_only(r["batches"], int(cycles))
                r["busy"] = compute / r["seconds"]
                r["busy_steady"] = compute * (r["batches"] - 1) / r["batches"] / (r["seconds"] - r["first"])
                add("stoker + step", r)
                r = run_stoker(url, socket, args, "cuda", step_cycles=int(cycles), device_mode="daemon")
                compute = compute_only(r["batches"], int(cycles))
                r["busy"] = compute / r["seconds"]
                r["busy_steady"] = compute * (r["batches"] - 1) / r["batches"] / (r["seconds"] - r["first"])
                add("device mode + step", r)
        finally:
            daemon.terminate()
            daemon.wait(15)

    def median(name: str, key) -> float:
        return statistics.median(key(r) for r in rows[name])

    gbs = {name: round(median(name, lambda r: r["bytes"] / r["seconds"] / 1e9), 2) for name in rows}
    ratios = {}
    for i in range(args.rounds):
        def at(name):
            return rows[name][i]["bytes"] / rows[name][i]["seconds"]
        ratios.setdefault("cuda_over_pinned_h2d", []).append(at("stoker cuda") / at("h2d pinned"))
        ratios.setdefault("device_mode_over_pinned_h2d", []).append(at("stoker device mode") / at("h2d pinned"))
        ratios.setdefault("device_mode_over_cuda", []).append(at("stoker device mode") / at("stoker cuda"))
        ratios.setdefault("cuda_over_pageable_cuda", []).append(at("stoker cuda") / at("stoker cuda pageable"))
        ratios.setdefault("cuda_over_cpu", []).append(at("stoker cuda") / at("stoker cpu"))
        ratios.setdefault("cpu_over_in_process", []).append(at("stoker cpu") / at("stoker bench"))
        if args.sessions > 1:
            ratios.setdefault(f"cuda_x{args.sessions}_over_cuda", []).append(
                at(f"stoker cuda x{args.sessions}") / at("stoker cuda"))
        if paths:
            ratios.setdefault("cuda_over_tarfile_loader", []).append(at("stoker cuda") / at("tarfile loader"))
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "url": args.url or f"synthetic {args.gib} GiB ({args.sample_bytes} samples, local files)",
        "samples": warm["samples"],
        "batch_size": args.batch_size,
        "batch_bytes": batch_bytes,
        "median_gb_per_s": gbs,
        "median_ratios": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
        "step_ms": args.step_ms,
        "median_busy_with_step": round(median("stoker + step", lambda r: r["busy"]), 3),
        "median_busy_after_first_batch": round(median("stoker + step", lambda r: r["busy_steady"]), 3),
        "median_first_batch_ms": round(median("stoker cuda", lambda r: r["first"]) * 1000, 1),
        "device_mode": {
            "median_first_batch_ms": round(median("stoker device mode", lambda r: r["first"]) * 1000, 1),
            "median_trainer_ms_per_batch": round(median("stoker device mode", lambda r: r["client_ms_per_batch"]), 4),
            "median_daemon_cores": round(median("stoker device mode", lambda r: r["daemon_cores"]), 2),
            "median_busy_with_step": round(median("device mode + step", lambda r: r["busy"]), 3),
            "median_busy_after_first_batch": round(median("device mode + step", lambda r: r["busy_steady"]), 3),
        },
        "median_daemon_cores": round(median("stoker cuda", lambda r: r["daemon_cores"]), 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
