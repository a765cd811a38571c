"""Prometheus metrics of the real daemon and of `stoker bench`, scraped over
HTTP during and after real runs against the S3 test server: every family
docs/METRICS.md lists is there, with values that match the run."""

import json
import os
import re
import subprocess
import urllib.error
import urllib.request

import pytest

import stoker

from conftest import NOT_SERVING, REPO, SERVING, STOKER_BIN, Daemon, free_port, health_check, wait_for

DOCUMENTED = re.findall(r"^\| `(stoker_[a-z_]+)`", (REPO / "docs" / "METRICS.md").read_text(), re.M)
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def parse(text: str) -> tuple:
    """(family names from # TYPE lines, {series: value})."""
    families = set()
    series = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            series[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return families, series


def scrape(port: int) -> tuple:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(r.read().decode())


def test_the_docs_list_families():
    assert len(DOCUMENTED) >= 30, DOCUMENTED


def test_daemon_metrics_match_a_real_run(s3, dataset):
    port = free_port()
    d = Daemon(s3.env, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        loader = d.client().loader(dataset.url, batch_size=8, seed=3)
        batches = samples = 0
        mid = None
        for batch in loader:
            with batch:
                batches += 1
                samples += len(batch.keys)
            if batches == 3:
                # Mid-run: one session, its ring, its endpoint's engine.
                mid = scrape(port)
        families, series = mid
        # The GPU gauges need NVML (an NVIDIA driver): none here.
        missing = [f for f in DOCUMENTED if f not in families and not f.startswith("stoker_gpu_")]
        assert not missing, f"documented but not exported mid-run: {missing}"
        assert not [f for f in families if f.startswith("stoker_gpu_")], "no driver, no GPU series"
        assert series["stoker_sessions"] == 1
        assert series["stoker_ready"] == 1
        slots = sum(v for k, v in series.items() if k.startswith("stoker_ring_slots{"))
        assert slots == loader._slots
        assert any(k.startswith("stoker_fetch_concurrency{endpoint=\"s3://stoker-test\"") for k in series)
        assert series["process_resident_memory_bytes"] > 0
        # The allocator's own figures (jemalloc, in the binary): live heap
        # within what it holds, which is within the process's RSS.
        allocated, resident = series["stoker_allocator_allocated_bytes"], series["stoker_allocator_resident_bytes"]
        assert 0 < allocated <= resident <= series["process_resident_memory_bytes"], (allocated, resident)

        # After the session: the totals are the run's.
        client = d.client()
        wait_for(lambda: client.stats()["sessions"] == 0, 30, "the session to close")
        stats = client.stats()
        _, after = scrape(port)
        assert after["stoker_sessions"] == 0
        assert after["stoker_sessions_opened_total"] == 1
        assert after["stoker_sessions_failed_total"] == 0
        assert after["stoker_delivered_batches_total"] == batches
        assert after["stoker_delivered_samples_total"] == samples == len(dataset.keys)
        assert after["stoker_store_requests_total"] == stats["requests"]
        assert after["stoker_store_bytes_total"] == stats["bytes"]
        assert after["stoker_store_retries_total"] == stats["retries"]
        assert after["stoker_store_parts_total"] >= len(dataset.samples) // 100 + 1
        assert after["stoker_store_first_byte_seconds_count"] == after["stoker_store_parts_total"]
        # Every byte of the shards fetched at least once; nothing failed.
        shard_bytes = sum(
            o["Size"] for o in s3.client().list_objects_v2(Bucket="stoker-test", Prefix="small/")["Contents"]
        )
        assert after["stoker_store_bytes_total"] >= shard_bytes
        assert sum(v for k, v in after.items() if k.startswith("stoker_store_request_failures_total")) == 0
        # The input stall the client measured reaches the daemon (less the
        # waits after its last release), and never exceeds the session's life.
        waited = after["stoker_consumer_wait_seconds_total"]
        assert 0 < waited <= loader.waited_seconds + 1e-3, (waited, loader.waited_seconds)
        assert waited <= after["stoker_session_seconds_total"]
        assert abs(stats["consumer_wait_us"] * 1e-6 - waited) < 1e-5
    finally:
        d.stop()


def test_refused_sessions_and_readiness_endpoints(s3, dataset):
    port = free_port()
    d = Daemon(s3.env, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        with pytest.raises(stoker.StokerError) as e:
            next(iter(d.client().loader("s3://stoker-test/nothing-here/", batch_size=4)))
        assert e.value.code == "NOT_FOUND", e.value
        _, series = scrape(port)
        assert series["stoker_sessions_refused_total"] == 1
        for path, code in (("/healthz", 200), ("/readyz", 200)):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                assert r.status == code
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
            raise AssertionError("a 404 expected")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        d.stop()


def test_not_ready_until_the_ready_url_lists(s3, dataset):
    """--ready-url: gRPC health and /readyz say NOT_SERVING until the store
    answers for it; liveness answers SERVING all along."""
    port, tcp = free_port(), free_port()
    bucket = "stoker-late"
    d = Daemon(
        s3.env,
        "--metrics-addr", f"127.0.0.1:{port}",
        "--tcp", f"127.0.0.1:{tcp}",
        "--ready-url", f"s3://{bucket}/",
    )
    try:
        check = health_check(tcp)
        assert check("liveness") == SERVING
        assert check() == NOT_SERVING, "readiness"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
            raise AssertionError("503 expected")
        except urllib.error.HTTPError as e:
            assert e.code == 503
        # The bucket appears, with a shard: ready within the 5 s recheck.
        s3.client().create_bucket(Bucket=bucket)
        body = open(REPO / "python" / "tests" / "conftest.py", "rb").read()
        s3.client().put_object(Bucket=bucket, Key="x.tar", Body=body)
        wait_for(lambda: check() == SERVING, 20, "readiness")
        _, series = scrape(port)
        assert series["stoker_ready"] == 1
        check.channel.close()
    finally:
        d.stop()


def test_bench_json_and_metrics_agree(s3, dataset, tmp_path):
    out = tmp_path / "bench.prom"
    env = {**os.environ, **s3.env, "STOKER_TUNING_CACHE": str(tmp_path / "tuning.json")}
    done = subprocess.run(
        [STOKER_BIN, "bench", dataset.url, "--json", "--metrics-out", str(out), "--batch-size", "8"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    families, series = parse(out.read_text())
    assert series["stoker_delivered_batches_total"] == report["batches"]
    assert series["stoker_delivered_samples_total"] == report["samples"] == len(dataset.keys)
    assert series["stoker_delivered_bytes_total"] == report["bytes"]
    assert series["stoker_store_requests_total"] == report["requests"]
    assert series["stoker_store_retries_total"] == report["retries"]
    assert series["stoker_store_bytes_total"] == report["fetched_bytes"]
    failures = sum(v for k, v in series.items() if k.startswith("stoker_store_request_failures_total"))
    assert failures == report["errors"]
    assert series['stoker_store_request_failures_total{class="throttled"}'] == report["throttled"]
    concurrency = [v for k, v in series.items() if k.startswith("stoker_fetch_concurrency{")]
    assert concurrency == [report["concurrency"]["limit"]["value"]]
    # bench has no daemon: no session families.
    assert "stoker_sessions" not in families
    # Served live too.
    port = free_port()
    proc = subprocess.Popen(
        [STOKER_BIN, "bench", dataset.url, "--metrics-addr", f"127.0.0.1:{port}", "--epochs", "200",
         "--duration", "20"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def delivered():
            try:
                return scrape(port)[1].get("stoker_delivered_batches_total", 0) > 0
            except OSError:
                return False
        wait_for(delivered, 30, "bench's live metrics")
    finally:
        proc.kill()
        proc.wait(10)
