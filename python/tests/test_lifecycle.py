"""Dying clients, dying and draining daemons, small /dev/shm."""

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

import stoker
from conftest import SERVING, STOKER_BIN, Daemon, free_port, health_check, make_dataset, wait_for

HERE = Path(__file__).resolve().parent


def rss_shmem(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssShmem")


@pytest.fixture(scope="module")
def big(s3):
    """~1 MiB samples: batches of 16 are ~16 MiB."""
    return make_dataset(s3, "big", "--shards", "3", "--shard-bytes", "24MiB", "--sample-bytes", "1MiB")


def test_a_killed_client_gives_back_its_slots_and_memory(daemon, big):
    client = daemon.client()
    base_shmem = rss_shmem(daemon.proc.pid)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "client_holding.py"), daemon.socket, big.url, "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        session, held_bytes = proc.stdout.readline().split()
        assert int(held_bytes) > 24 << 20
        stats = client.stats(session)
        assert stats["slots_leased"] >= 3 and stats["ring_bytes"] > 0
        # The session's age and its input stall (this client holds its
        # batches and reports no wait); `gpus` is a list (empty without an
        # NVIDIA driver).
        assert stats["session_us"] > 0
        assert stats["consumer_wait_fraction"] == stats["consumer_wait_us"] / stats["session_us"]
        assert 0.0 <= stats["consumer_wait_fraction"] <= 1.0
        assert isinstance(stats["gpus"], list)
        assert rss_shmem(daemon.proc.pid) > base_shmem + (24 << 20), "the daemon wrote the ring"
    finally:
        # Also when a check above fails: no client left holding the ring.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    wait_for(lambda: client.stats()["sessions"] == 0, 10, "the session to end")
    assert client.stats()["ring_bytes"] == 0
    wait_for(lambda: client.stats()["budget_used_bytes"] == 0, 10, "the fetch budget to drain")
    wait_for(lambda: rss_shmem(daemon.proc.pid) <= base_shmem + (1 << 20), 10, "ring memory to go")
    with pytest.raises(stoker.StokerError) as e:
        client.stats(session)
    assert e.value.code == "NOT_FOUND"


def test_a_restarted_daemon_resumes_the_client_with_nothing_lost_or_repeated(daemon, dataset):
    kw = dict(batch_size=8, shuffle_buffer=25, seed=9)
    full = [(b.keys, b["bin"].values.tobytes()) for b in daemon.client().loader(dataset.url, **kw)]
    loader = daemon.client().loader(dataset.url, reconnect_timeout=30, **kw)
    got = []
    for i, batch in enumerate(loader):
        with batch:
            got.append((batch.keys, batch["bin"].values.tobytes()))
        if i == 4:
            daemon.kill()
            # Comes back a moment later, on the same socket.
            threading.Timer(0.5, daemon.start).start()
    assert loader.reconnects > 0
    assert got == full


def test_sigterm_drains_and_exits_within_ten_seconds(s3, dataset):
    d = Daemon(s3.env)
    try:
        loader = d.client().loader(dataset.url, batch_size=4, reconnect_timeout=0.5)
        it = iter(loader)
        first = next(it)
        took = d.terminate()
        assert took < 10, f"drain took {took:.1f} s"
        assert d.proc.returncode == 0, d.logs()
        assert not os.path.exists(d.socket) and not os.path.exists(d.socket + ".ring")
        assert "draining" in d.logs()
        # The client hears about it: the stream ends as UNAVAILABLE once
        # reconnecting gives up (the batch it holds stays readable).
        with pytest.raises(stoker.StokerError) as e:
            for _ in it:
                pass
        assert e.value.code == "UNAVAILABLE"
        assert len(first["bin"][0]) > 0
    finally:
        d.stop()


def test_tcp_serves_health_but_not_sessions(s3, dataset):
    port = free_port()
    d = Daemon(s3.env, "--tcp", f"127.0.0.1:{port}")
    try:
        check = health_check(port)
        channel = check.channel
        assert check() == SERVING
        from stoker._proto import stoker_pb2 as pb
        from stoker._proto import stoker_pb2_grpc as pb_grpc

        # No session calls over TCP at all: not OpenStream, and not Release
        # or Stats, which would let anyone who reaches the port free another
        # session's slot or read its figures.
        stub = pb_grpc.StokerStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            next(stub.OpenStream(pb.OpenStreamRequest(url=dataset.url, batch_size=4)))
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        for call in (lambda: stub.Stats(pb.StatsRequest(), timeout=10),
                     lambda: stub.Release(pb.ReleaseRequest(session="x"), timeout=10)):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # The Unix socket still serves them.
        assert d.client().stats() is not None
        channel.close()
    finally:
        d.stop()


def test_a_second_daemon_on_a_live_socket_is_refused(daemon, s3):
    proc = subprocess.run(
        [STOKER_BIN, "serve", "--socket", daemon.socket],
        env={**os.environ, **s3.env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "another stoker is serving" in proc.stderr


def test_works_under_a_64_mib_dev_shm(s3, big):
    if shutil.which("unshare") is None:
        raise AssertionError("util-linux unshare is needed (scripts/test installs it)")
    script = (
        "mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "
        f"{sys.executable} {HERE / 'shm_probe.py'} {STOKER_BIN} {big.url} {len(big.keys)}"
    )
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env={**os.environ, **s3.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, samples, peak = proc.stdout.split()
    assert int(samples) == len(big.keys)
    assert int(peak) > 64 << 20, "held more than /dev/shm could"


def test_device_mode_without_cuda_is_refused_by_name_and_host_mode_works(daemon, dataset):
    # This machine has no NVIDIA driver: device mode says so (a named
    # error, at once, nothing held), and the same request in host mode runs.
    client = daemon.client()
    before = client.stats()["requests"]
    with pytest.raises(stoker.StokerError) as e:
        for _ in client.loader(dataset.url, batch_size=8, cuda_device=0):
            pass
    assert e.value.code == "FAILED_PRECONDITION", e.value
    assert "no CUDA" in str(e.value) and "host mode" in str(e.value), e.value
    assert client.stats()["requests"] == before, "refused before any listing or fetch"
    wait_for(lambda: client.stats()["ring_bytes"] == 0, 5, "the refused session's ring to go")
    batch = next(iter(client.loader(dataset.url, batch_size=8)))
    with batch:
        with pytest.raises(stoker.StokerError) as e:
            batch.cuda()
        assert e.value.code == "FAILED_PRECONDITION"
