"""What throttling costs, measured with the real binary through the
fault-injecting proxy (examples/fault_proxy) in front of a local S3 server:

1. scattered Retry-After: `stoker bench` one pass over the data, and
   --epochs passes, fault-free and with every 50th request (2%) refused
   `503 SlowDown` + `Retry-After: 1`, alternating, --rounds times; the ratio
   of the medians;
2. a storm: every request refused for --storm seconds, 10 s into a run;
   delivered bytes scraped from the bench's /metrics every second: requests
   that reached the store during the storm, and how long after it the rate
   was back to >= 0.9x the rate before.

Prints one JSON object. Lab figures, not a test:
    ./scripts/store-faults [--rounds 3] [--storm 60] [--epochs 4]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from lab import BIN, FaultProxy, LocalS3, free_port


def bench(env: dict, proxy: str, url: str, *extra: str) -> dict:
    done = subprocess.run([str(BIN), "bench", url, "--json", "--no-tuning-cache", *extra],
                          env={**env, "AWS_ENDPOINT_URL": f"http://{proxy}"},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def scrape(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("stoker_delivered_bytes_total "):
                return float(line.split()[1])
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--storm", type=float, default=60.0, help="seconds of 100%% 503 (0: skip)")
    ap.add_argument("--part-bytes", default="2MiB")
    ap.add_argument("--epochs", type=int, default=4, help="passes for the run-rate figure")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stoker-store-faults-", dir="/tmp"))
    s3 = LocalS3(tmp / "s3")
    try:
        upstream, env = s3.addr, s3.env
        url = "s3://bench/faults/"
        s3.gen(url, "--shards", "32", "--shard-bytes", "32MiB")
        report: dict = {"part_bytes": args.part_bytes, "dataset": "32 shards x 32 MiB"}

        # One pass (1 GiB, ~2 s fault-free: a refused part near the end
        # adds its whole 1 s Retry-After as a tail) and --epochs passes (the
        # rate of a run, where that tail is one in many seconds).
        faults_seen = {"requests": 0, "refused": 0}
        for label, epochs in (("one_pass", 1), (f"{args.epochs}_epochs", args.epochs)):
            clean, refused = [], []
            for _ in range(args.rounds):
                for kind in ("clean", "retry_after"):
                    flags = ("--refuse-every", "50", "--retry-after", "1") if kind == "retry_after" else ()
                    p = FaultProxy(upstream, *flags)
                    r = bench(env, p.addr, url, "--part-bytes", args.part_bytes, "--epochs", str(epochs))
                    seen = p.stop()
                    (clean if kind == "clean" else refused).append(r["bytes_per_s"])
                    if kind == "retry_after":
                        faults_seen["requests"] += seen.get("requests", 0)
                        faults_seen["refused"] += seen.get("refused", 0)
            report[f"scattered_retry_after_{label}"] = {
                "clean_mb_s": [round(x / 1e6) for x in clean],
                "two_percent_mb_s": [round(x / 1e6) for x in refused],
                "ratio_of_medians": round(statistics.median(refused) / statistics.median(clean), 3),
            }
        report["refused_share"] = round(faults_seen["refused"] / max(1, faults_seen["requests"]), 4)

        if args.storm > 0:
            start, end = 10.0, 10.0 + args.storm
            p = FaultProxy(upstream, "--storm", str(start), str(end))
            t_proxy = time.monotonic()
            mport = free_port()
            run = subprocess.Popen([str(BIN), "bench", url, "--epochs", "1000", "--duration", str(end + 25),
                                    "--no-tuning-cache", "--part-bytes", args.part_bytes,
                                    "--metrics-addr", f"127.0.0.1:{mport}"],
                                   env={**env, "AWS_ENDPOINT_URL": f"http://{p.addr}"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            series = []
            while run.poll() is None:
                try:
                    series.append((time.monotonic() - t_proxy, scrape(mport)))
                except OSError:
                    pass
                time.sleep(1.0)
            seen = p.stop()
            rates = [(t1, (b1 - b0) / (t1 - t0)) for (t0, b0), (t1, b1) in zip(series, series[1:])]
            before = statistics.median([r for t, r in rates if 4 <= t <= start]) if rates else 0
            back = next((t - end for t, r in rates if t > end and r >= 0.9 * before), None)
            report["storm"] = {
                "seconds": args.storm,
                "requests_during_storm": seen.get("refused", 0),
                "rate_before_mb_s": round(before / 1e6),
                "back_to_0_9x_after_s": None if back is None else round(back, 1),
                "exit_code": run.returncode,
            }
        print(json.dumps(report, indent=1))
        return 0
    finally:
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
