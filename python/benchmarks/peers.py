"""stoker next to what a user would pick instead, on the same server and shards.

    python3 -m venv .venv-peers
    .venv-peers/bin/pip install -r python/benchmarks/requirements-peers.txt
    export AWS_ENDPOINT_URL=http://10.77.0.2:9300 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=us-east-1
    .venv-peers/bin/python python/benchmarks/peers.py s3://bench/synth/ --rounds 3

One pass over every .tar below the prefix per client and round, the clients in
a rotated order each round, and one table of medians (MB/s, samples/s, CPU-s,
first batch) plus each round's ratio of stoker to the fastest peer:

- `stoker`: `stoker bench URL --json` with an empty tuning cache (fetch,
  parse, batch; the autotuner from a cold start), and `stoker warm`: the
  same run again from the tuning cache the cold run left (a second job);
- `crt`: s3torchconnector's client (`s3torchconnectorclient`, the AWS CRT
  that s3torchconnector's datasets read through), `--readers` objects at a
  time (as DataLoader workers would), raw bytes, no parsing;
- `raw`: the fastest plain client we know on one core: aiohttp (asyncio)
  range GETs of `--raw-part` bytes, `--raw-inflight` at once, over presigned
  URLs of every object; raw bytes, no parsing (`--raw-inflight 16`,
  8 MiB: the shape stoker's fetch engine takes);
- `webdataset`: `wds.WebDataset` over `pipe:curl` of presigned URLs, in
  `--readers` processes (DataLoader-style workers, without torch), samples
  parsed from the tar stream but not decoded.

Benchmark, not a test: torch-free, and the peers come from PyPI. CPU-s is
the client processes' user + system time (curl included); the server and the
network path are not counted. The last stdout line is one JSON object.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def split_url(url: str):
    if not url.startswith("s3://"):
        sys.exit("peers.py compares S3 clients: give an s3:// URL")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix


def list_shards(bucket: str, prefix: str):
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [(o["Key"], o["Size"]) for o in page.get("Contents", []) if o["Key"].endswith(".tar")]
    return s3, sorted(keys)


def run_stoker(bin_: str, url: str, cache: str, extra=()) -> dict:
    """One `stoker bench` with the tuning cache `cache`: the cold run finds
    none and leaves what it settled on for the warm run after it."""
    env = dict(os.environ, STOKER_TUNING_CACHE=cache, STOKER_LOG="warn")
    cpu0, t0 = children_cpu(), time.perf_counter()
    out = subprocess.run([bin_, "bench", url, "--json", *extra], check=True, capture_output=True,
                         text=True, env=env).stdout
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    r = json.loads(out.strip().splitlines()[-1])
    return {"bytes": r["bytes"], "samples": r["samples"], "seconds": r["seconds"], "wall": wall,
            "cpu": cpu, "first_batch": r["time_to_first_batch_s"]}


def run_crt(bucket: str, keys, readers: int, samples: int) -> dict:
    from s3torchconnectorclient._mountpoint_s3_client import MountpointS3Client

    kwargs = {"endpoint": os.environ["AWS_ENDPOINT_URL"]} if os.environ.get("AWS_ENDPOINT_URL") else {}
    client = MountpointS3Client(os.environ.get("AWS_REGION", "us-east-1"), **kwargs)
    t0, cpu0 = time.perf_counter(), self_cpu()
    first = []

    def read(key: str) -> int:
        n = 0
        for chunk in client.get_object(bucket, key):
            n += len(chunk)
            if not first and n >= 8 << 20:
                first.append(time.perf_counter() - t0)
        return n

    with ThreadPoolExecutor(readers) as pool:
        total = sum(pool.map(read, [k for k, _ in keys]))
    wall = time.perf_counter() - t0
    return {"bytes": total, "samples": samples, "seconds": wall, "wall": wall,
            "cpu": self_cpu() - cpu0, "first_batch": first[0] if first else wall}


def run_raw(s3, bucket: str, keys, inflight: int, part: int, samples: int) -> dict:
    import asyncio

    import aiohttp

    urls = {k: s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": k}, ExpiresIn=3600)
            for k, _ in keys}
    ranges = [(k, at, min(at + part, size) - 1) for k, size in keys for at in range(0, size, part)]
    t0, cpu0 = time.perf_counter(), self_cpu()
    first = []

    async def main() -> int:
        queue = iter(ranges)
        conn = aiohttp.TCPConnector(limit=inflight)
        async with aiohttp.ClientSession(connector=conn) as http:
            async def worker() -> int:
                n = 0
                for key, a, b in queue:
                    async with http.get(urls[key], headers={"Range": f"bytes={a}-{b}"}) as r:
                        r.raise_for_status()
                        async for chunk in r.content.iter_chunked(1 << 20):
                            n += len(chunk)
                    if not first:
                        first.append(time.perf_counter() - t0)
                return n
            return sum(await asyncio.gather(*(worker() for _ in range(inflight))))

    total = asyncio.run(main())
    wall = time.perf_counter() - t0
    return {"bytes": total, "samples": samples, "seconds": wall, "wall": wall,
            "cpu": self_cpu() - cpu0, "first_batch": first[0] if first else wall}


def wds_worker(urls, t0, out):
    import webdataset as wds

    n = b = 0
    first = None
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        n += 1
        b += sum(len(v) for k, v in sample.items() if not k.startswith("__"))
        if n == 64 and first is None:
            first = time.time() - t0
    out.put((n, b, first))


def run_wds(s3, bucket: str, keys, readers: int) -> dict:
    urls = [
        "pipe:curl -s --fail '%s'" % s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": k}, ExpiresIn=3600)
        for k, _ in keys
    ]
    ctx = get_context("fork")
    out = ctx.Queue()
    cpu0, t0, wall0 = children_cpu(), time.time(), time.perf_counter()
    procs = [ctx.Process(target=wds_worker, args=(urls[i::readers], t0, out)) for i in range(readers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - wall0
    firsts = [f for _, _, f in results if f is not None]
    return {"bytes": sum(b for _, b, _ in results), "samples": sum(n for n, _, _ in results),
            "seconds": wall, "wall": wall, "cpu": children_cpu() - cpu0,
            "first_batch": min(firsts) if firsts else wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--readers", type=int, default=8, help="objects read at once by crt and webdataset")
    ap.add_argument("--stoker", default=str(REPO / "target" / "release" / "stoker"))
    ap.add_argument("--clients", default="stoker,stoker warm,crt,raw,webdataset",
                    help="also: 'stoker cN' (stoker at a static concurrency N, no tuning cache) "
                         "and 'stoker base' (a cold run of the --stoker-base binary: before/after)")
    ap.add_argument("--stoker-base", help="another stoker binary, for the 'stoker base' client")
    ap.add_argument("--raw-inflight", type=int, default=16, help="range GETs in flight for raw")
    ap.add_argument("--raw-part", type=int, default=8 << 20, help="bytes per range GET for raw")
    args = ap.parse_args()
    clients = [c.strip() for c in args.clients.split(",")]
    known = {"stoker", "stoker warm", "stoker base", "crt", "raw", "webdataset"}
    unknown = [c for c in clients if c not in known and not (c.startswith("stoker c") and c[8:].isdigit())]
    if unknown:
        sys.exit(f"unknown client(s) {', '.join(unknown)}: use {', '.join(sorted(known))} or 'stoker cN'")
    if "stoker base" in clients and not (args.stoker_base and os.access(args.stoker_base, os.X_OK)):
        sys.exit("the 'stoker base' client needs --stoker-base PATH, an executable stoker binary")
    bucket, prefix = split_url(args.url)
    s3, keys = list_shards(bucket, prefix)
    if not keys:
        sys.exit(f"no .tar objects below {args.url}")
    runs = {c: [] for c in clients}
    samples = None
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            order = clients[rnd % len(clients):] + clients[:rnd % len(clients)]
            if "stoker warm" in order and "stoker" in order:
                # The warm run follows its cold one.
                order.remove("stoker warm")
                order.insert(order.index("stoker") + 1, "stoker warm")
            cache = os.path.join(tmp, f"tuning-{rnd}.json")
            for c in order:
                if c == "stoker":
                    if os.path.exists(cache):
                        os.remove(cache)
                    r = run_stoker(args.stoker, args.url, cache)
                    samples = r["samples"]
                elif c == "stoker warm":
                    r = run_stoker(args.stoker, args.url, cache)
                elif c == "stoker base":
                    r = run_stoker(args.stoker_base, args.url, os.path.join(tmp, "none.json"),
                                   ["--no-tuning-cache"])
                elif c.startswith("stoker c") and c[8:].isdigit():
                    r = run_stoker(args.stoker, args.url, os.path.join(tmp, "none.json"),
                                   ["--no-tuning-cache", "--concurrency", c[8:]])
                elif c == "crt":
                    r = run_crt(bucket, keys, args.readers, samples or 0)
                elif c == "raw":
                    r = run_raw(s3, bucket, keys, args.raw_inflight, args.raw_part, samples or 0)
                elif c == "webdataset":
                    r = run_wds(s3, bucket, keys, args.readers)
                else:
                    sys.exit(f"unknown client {c}")
                r["mb_s"] = r["bytes"] / r["seconds"] / 1e6
                runs[c].append(r)
                print(f"round {rnd + 1}: {c}: {r['mb_s']:.0f} MB/s, {r['cpu']:.2f} CPU-s", file=sys.stderr)
    table = {}
    for c, rs in runs.items():
        table[c] = {k: statistics.median(r[k] for r in rs) for k in ("mb_s", "cpu", "first_batch")}
        table[c]["samples_per_s"] = statistics.median(r["samples"] / r["seconds"] for r in rs)
    peers = [c for c in clients if not c.startswith("stoker")]
    ratios = {}
    for c in [c for c in clients if c.startswith("stoker")]:
        per_round = [runs[c][i]["mb_s"] / max(runs[p][i]["mb_s"] for p in peers)
                     for i in range(args.rounds)] if peers else []
        ratios[c] = per_round
    print(f"{'client':<12} {'MB/s':>7} {'samples/s':>10} {'CPU-s':>7} {'first batch s':>14}")
    for c, t in table.items():
        print(f"{c:<12} {t['mb_s']:>7.0f} {t['samples_per_s']:>10.0f} {t['cpu']:>7.2f} {t['first_batch']:>14.2f}")
    for c, rs in ratios.items():
        if rs:
            print(f"{c} / fastest peer, per round: {', '.join(f'{x:.2f}' for x in rs)}; "
                  f"median {statistics.median(rs):.2f}")
    statics = [c for c in clients if c.startswith("stoker c") and c[8:].isdigit()]
    for c in [c for c in clients if c in ("stoker", "stoker warm", "stoker base")] if statics else []:
        rs = [runs[c][i]["mb_s"] / max(runs[s][i]["mb_s"] for s in statics) for i in range(args.rounds)]
        ratios[f"{c} / best static"] = rs
        print(f"{c} / best static, per round: {', '.join(f'{x:.2f}' for x in rs)}; "
              f"median {statistics.median(rs):.2f}")
    print(json.dumps({"url": args.url, "rounds": args.rounds, "readers": args.readers,
                      "median": table, "ratio_to_fastest_peer": ratios}))


if __name__ == "__main__":
    main()
