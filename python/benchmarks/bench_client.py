"""Python consumer throughput through the daemon vs the in-process bench.

    .venv/bin/python python/benchmarks/bench_client.py            # 1 GiB synthetic, local files
    .venv/bin/python python/benchmarks/bench_client.py --url s3://bucket/train/ --epochs 1

Alternates in-process (`stoker bench --json`) and daemon (`stoker serve` +
`stoker.Client` iterating and releasing every batch) runs on the same data,
`--rounds` times each, and reports each pair's ratio and the median: on a
shared machine a ratio from one run is worth more than absolute numbers.
The last line of stdout is one JSON object.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import stoker

REPO = Path(__file__).resolve().parents[2]


def in_process(bin_: str, url: str, args) -> dict:
    out = subprocess.run(
        [bin_, "bench", url, "--json", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return {"samples_per_s": report["samples_per_s"], "bytes_per_s": report["bytes_per_s"],
            "samples": report["samples"], "seconds": report["seconds"]}


def via_daemon(socket: str, url: str, args) -> dict:
    client = stoker.Client(socket)
    samples = nbytes = 0
    t = time.perf_counter()
    for batch in client.loader(url, batch_size=args.batch_size, epochs=args.epochs, slots=8):
        with batch:
            samples += len(batch)
            nbytes += batch.nbytes
    seconds = time.perf_counter() - t
    client.close()
    return {"samples_per_s": samples / seconds, "bytes_per_s": nbytes / seconds,
            "samples": samples, "seconds": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="dataset (default: generate 1 GiB, 32 shards, in a temp dir)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bin", default=os.environ.get("STOKER_BIN", str(REPO / "target/release/stoker")))
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="stoker-bench-", dir="/tmp") as tmp:
        url = args.url
        if url is None:
            url = tmp + "/data/"
            subprocess.run([args.bin, "gen", url, "--shards", "32", "--shard-bytes", "32MiB"],
                           check=True, stdout=subprocess.DEVNULL)
        socket = tmp + "/stoker.sock"
        daemon = subprocess.Popen([args.bin, "serve", "--socket", socket, "--allow-url", "*"], stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    stoker.Client(socket).stats()
                    break
                except stoker.StokerError:
                    time.sleep(0.05)
            via_daemon(socket, url, args)  # warm the page cache and the daemon
            rows = []
            for _ in range(args.rounds):
                a = in_process(args.bin, url, args)
                b = via_daemon(socket, url, args)
                assert a["samples"] == b["samples"], (a, b)
                rows.append((a, b, b["samples_per_s"] / a["samples_per_s"]))
        finally:
            daemon.terminate()
            daemon.wait(15)

    print(f"{'in-process samples/s':>22} {'via daemon samples/s':>22} {'ratio':>7}", file=sys.stderr)
    for a, b, r in rows:
        print(f"{a['samples_per_s']:>22.0f} {b['samples_per_s']:>22.0f} {r:>7.3f}", file=sys.stderr)
    ratios = [r for _, _, r in rows]
    result = {
        "url": url if args.url else "synthetic 1 GiB (32 × 32 MiB shards, local files)",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "samples": rows[0][0]["samples"],
        "in_process_samples_per_s": [round(a["samples_per_s"]) for a, _, _ in rows],
        "via_daemon_samples_per_s": [round(b["samples_per_s"]) for _, b, _ in rows],
        "via_daemon_bytes_per_s": [round(b["bytes_per_s"]) for _, b, _ in rows],
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
