"""Summarises `stoker bench --gpu N --json` reports (one JSON per line on
stdin, as scripts/gpu-test writes them): one line per run, then the
medians per step setting.

    stoker bench DIR --gpu 0 --json | tail -1 >> runs.jsonl
    python3 python/benchmarks/bench_gpu_summary.py < runs.jsonl
"""

import json
import statistics
import sys


def line(r: dict) -> str:
    g, s = r["gpu"], r["input_stall"]
    return (f"step={s['step_ms']}: path {g['bytes_per_s'] / 1e9:.1f} GB/s, "
            f"copies {g['copy_bytes_per_s'] / 1e9:.1f} GB/s, bound {g['bound_bytes_per_s'] / 1e9:.1f} GB/s "
            f"(path {g['ratio']:.2f}x, copies {g['copy_ratio']:.2f}x), stall {s['fraction'] * 100:.2f}%, "
            f"first batch {r['time_to_first_batch_s'] * 1e3:.0f} ms, "
            f"process cpu {r['cpu_seconds'] / max(r['batches'], 1) * 1e3:.3f} ms/batch")


def main() -> None:
    runs = [json.loads(x) for x in sys.stdin if x.strip()]
    by_step: dict = {}
    for r in runs:
        print(line(r))
        by_step.setdefault(r["input_stall"]["step_ms"], []).append(r)
    for step, rs in by_step.items():
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        print(f"median of {len(rs)} (step={step}): path {med(lambda r: r['gpu']['bytes_per_s']) / 1e9:.1f} GB/s, "
              f"copies {med(lambda r: r['gpu']['copy_ratio']):.2f}x of the bound "
              f"({med(lambda r: r['gpu']['bound_bytes_per_s']) / 1e9:.1f} GB/s), "
              f"stall {med(lambda r: r['input_stall']['fraction']) * 100:.2f}%, "
              f"first batch {med(lambda r: r['time_to_first_batch_s']) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
