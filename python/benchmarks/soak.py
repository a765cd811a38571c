"""A long run of the real daemon under faults (`scripts/soak MINUTES`; not
part of the tests): continuous epochs through the fault-injecting proxy (1%
of range GETs faulted, ten kinds in turn) in front of a local S3 server, the
daemon killed (SIGKILL) every 5 minutes and restarted, and its RSS, open
descriptors and threads sampled every second.

It checks, and prints as one JSON object (plus samples.csv in --out):
- every epoch delivered every sample exactly once, each with its bytes
  (SHA-256 per sample against the shards on disk), across kills;
- max RSS <= 1.10 x (memory budget + ring bytes), and within the sizing
  docs/OPERATIONS.md gives (1.25 x memory budget + rings + 64 MiB);
- RSS growth <= 1 MiB/min over the last 20 minutes (one slope over every
  daemon's samples after its first 30 s: a restarted daemon starts low);
- descriptors and threads bounded the same way.
Exit status 0 when every check holds."""

import argparse
import csv
import hashlib
import json
import shutil
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import stoker

from lab import BIN, FaultProxy, LocalS3

MIB = 1 << 20


def proc_figures(pid: int) -> tuple:
    """RSS, of it anonymous and shared (the rings), descriptors, threads."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem", "Threads"):
                got[key] = int(rest.split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return got["VmRSS"] * 1024, got["RssAnon"] * 1024, got["RssShmem"] * 1024, fds, got["Threads"]


def expected_digests(shard_dir: Path) -> dict:
    out = {}
    for path in sorted(shard_dir.glob("*.tar")):
        fields: dict = {}
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                fields.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for key, by_ext in fields.items():
            h = hashlib.sha256()
            for ext in sorted(by_ext):
                h.update(ext.encode() + b"\0" + by_ext[ext])
            out[key] = h.hexdigest()
    return out


class Daemon:
    def __init__(self, env: dict, args: list, log: Path):
        self.env, self.args, self.log = env, args, open(log, "ab")
        self.proc = None
        self.incarnation = 0
        self.started = 0.0
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            self.proc = subprocess.Popen([str(BIN), "serve", *self.args], env=self.env,
                                         stdout=self.log, stderr=self.log)
            self.incarnation += 1
            self.started = time.monotonic()

    def kill(self) -> None:
        with self.lock:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def slope_mib_per_min(points: list) -> float:
    """Least-squares slope of (seconds, bytes), in MiB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return (sxy / sxx) * 60 / MIB if sxx else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("minutes", type=float)
    ap.add_argument("--kill-every", type=float, default=300, help="seconds between daemon kills")
    ap.add_argument("--fault-every", type=int, default=100, help="fault every n-th range GET (100: 1%%)")
    ap.add_argument("--step-ms", type=float, default=2.0, help="emulated training step per batch")
    ap.add_argument("--memory-budget-mib", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stoker-soak-", dir="/tmp"))
    out = args.out or tmp
    out.mkdir(parents=True, exist_ok=True)
    budget, ring = args.memory_budget_mib * MIB, 64 * MIB
    s3 = LocalS3(tmp / "s3")
    proxy = None
    daemon = None
    try:
        env = {**s3.env, "STOKER_LOG": os.environ.get("STOKER_LOG", "warn")}
        url = "s3://bench/soak/"
        s3.gen(url, "--shards", "16", "--shard-bytes", "8MiB", "--sample-bytes", "64KiB")
        expected = expected_digests(tmp / "s3" / "bench" / "soak")
        proxy = FaultProxy(s3.addr, "--fault-every", str(args.fault_every))
        proxy_addr = proxy.addr
        sock = str(tmp / "d" / "stoker.sock")
        daemon = Daemon({**env, "AWS_ENDPOINT_URL": f"http://{proxy_addr}"},
                        ["--socket", sock, "--memory-budget", f"{budget}", "--ring-memory", f"{ring}"],
                        out / "serve.log")
        daemon.start()
        deadline = time.monotonic() + args.minutes * 60
        t0 = time.monotonic()
        samples: list = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                with daemon.lock:
                    pid, inc, age = daemon.proc.pid, daemon.incarnation, time.monotonic() - daemon.started
                try:
                    figures = proc_figures(pid)
                except (FileNotFoundError, ProcessLookupError, KeyError):
                    continue
                samples.append((time.monotonic() - t0, inc, age, *figures))

        def killer() -> None:
            while not stop.wait(args.kill_every):
                daemon.kill()
                time.sleep(0.5)
                daemon.start()

        threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=killer, daemon=True)]
        for t in threads:
            t.start()
        while not os.path.exists(sock):
            time.sleep(0.05)
        time.sleep(0.5)
        loader = stoker.Client(sock).loader(url, batch_size=32, epochs=10**9, seed=1, shuffle_buffer=64,
                                            ring_bytes=ring, reconnect_timeout=120)
        epochs, lost, dup, corrupt, batches = 0, 0, 0, 0, 0
        seen: set = set()
        current = None
        for batch in loader:
            with batch:
                if current is not None and batch.epoch != current:
                    lost += len(expected) - len(seen)
                    epochs += 1
                    seen = set()
                current = batch.epoch
                names = sorted(batch.columns)
                for i, key in enumerate(batch.keys):
                    if key in seen:
                        dup += 1
                    seen.add(key)
                    h = hashlib.sha256()
                    for ext in names:
                        h.update(ext.encode() + b"\0" + batch[ext][i].tobytes())
                    if expected.get(key) != h.hexdigest():
                        corrupt += 1
                batches += 1
            if args.step_ms:
                time.sleep(args.step_ms / 1000)
            if time.monotonic() >= deadline:
                break
        loader.close()
        stop.set()
        faults = proxy.stop().get("faults", {})
        with open(out / "samples.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "incarnation", "daemon_age_s", "rss_bytes", "anon_bytes", "shmem_bytes", "fds",
                        "threads"])
            w.writerows(samples)
        minutes = (time.monotonic() - t0) / 60
        last20 = [s for s in samples if s[0] >= samples[-1][0] - 20 * 60 and s[2] >= 30]
        by_inc: dict = {}
        for s in last20:
            by_inc.setdefault(s[1], []).append(s)
        rss_slopes = [slope_mib_per_min([(s[0], s[3]) for s in v]) for v in by_inc.values() if len(v) > 60]
        # Growth is judged over the whole last 20 minutes, every daemon's
        # samples together: within one daemon's 5 minutes RSS swings by
        # 150 MiB as freed pages are purged and refilled, and a slope over
        # such a stretch reads ±20 MiB/min with no trend in it.
        rss_growth = slope_mib_per_min([(s[0], s[3]) for s in last20]) if len(last20) > 60 else 0.0
        fd_slopes = [slope_mib_per_min([(s[0], s[6] * MIB) for s in v]) for v in by_inc.values() if len(v) > 60]
        max_rss = max(s[3] for s in samples)
        bound = 1.10 * (budget + ring)
        sizing = 1.25 * budget + ring + 64 * MIB
        report = {
            "minutes": round(minutes, 1),
            "epochs_checked": epochs,
            "batches": batches,
            "samples_per_epoch": len(expected),
            "lost": lost,
            "duplicated": dup,
            "corrupted": corrupt,
            "daemon_kills": daemon.incarnation - 1,
            "client_reconnects": loader.reconnects,
            "faults_injected": sum(faults.values()),
            "faults_by_kind": faults,
            "max_rss_mib": round(max_rss / MIB, 1),
            "rss_bound_mib": round(bound / MIB, 1),
            "rss_sizing_mib": round(sizing / MIB, 1),
            "rss_growth_mib_per_min": round(rss_growth, 3),
            "rss_growth_per_daemon_mib_per_min": [round(x, 3) for x in rss_slopes],
            "fd_growth_per_min": [round(x, 3) for x in fd_slopes],
            "max_anon_mib": round(max(s[4] for s in samples) / MIB, 1),
            "max_shmem_mib": round(max(s[5] for s in samples) / MIB, 1),
            "max_fds": max(s[6] for s in samples),
            "max_threads": max(s[7] for s in samples),
            "out": str(out),
        }
        checks = {
            "exactly once": lost == 0 and dup == 0 and epochs > 0,
            "bytes intact": corrupt == 0,
            "rss <= 1.10 x (budget + rings)": max_rss <= bound,
            "rss within the documented sizing": max_rss <= sizing,
            "rss growth <= 1 MiB/min": rss_growth <= 1.0,
            "faults injected": sum(faults.values()) > 0,
        }
        report["checks"] = checks
        print(json.dumps(report, indent=1))
        return 0 if all(checks.values()) else 1
    finally:
        if daemon and daemon.proc.poll() is None:
            daemon.kill()
        if proxy:
            proxy.stop()
        s3.stop()
        # The shards (128 MiB), and the daemon's directory where --out
        # holds the figures (without it they are in `tmp`).
        shutil.rmtree(tmp if args.out else tmp / "s3", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
