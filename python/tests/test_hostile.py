"""Hostile requests against the real daemon: each is refused or bounded, the
daemon stays up, its memory stays bounded, and a normal client keeps working."""

import socket
import threading

import pytest

import stoker


def take(loader, n):
    out = []
    for batch in loader:
        out.append(batch.num_samples)
        batch.release()
        if len(out) == n:
            break
    loader.close()
    return out


def test_extreme_requests_are_refused_or_bounded(daemon, dataset):
    client = daemon.client()
    base = daemon.rss_bytes()
    # A batch of 2^31 samples: a named error, not an abort allocating it.
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url, batch_size=2**31))
    assert e.value.code == "INVALID_ARGUMENT" and "batch_size" in e.value.message
    # "Forever" (2^64 - 1 epochs), also from the last epoch number: the
    # plan is drawn lazily, so the stream starts at once and costs one epoch.
    assert take(client.loader(dataset.url, batch_size=8, epochs=2**64 - 1), 3) == [8, 8, 8]
    assert take(client.loader(dataset.url, batch_size=8, epoch=2**64 - 1, epochs=2), 2) == [8, 8]
    assert daemon.rss_bytes() < base + (256 << 20), (base, daemon.rss_bytes())
    # The daemon still serves a normal client.
    assert sum(take(client.loader(dataset.url, batch_size=8), 2)) == 16


def test_ring_socket_peers_sending_endless_bytes_cost_bounded_memory(daemon, dataset):
    base = daemon.rss_bytes()
    sent = []

    def flood():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(daemon.socket + ".ring")
            zeros = bytes(1 << 20)
            n = 0
            try:
                for _ in range(256):  # up to 256 MiB, no newline
                    s.sendall(zeros)
                    n += len(zeros)
            except OSError:
                pass  # the daemon hung up: what we want
            sent.append(n)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(not t.is_alive() for t in threads)
    # Each peer was cut off long before its 256 MiB went through.
    assert max(sent) < 64 << 20, sent
    assert daemon.rss_bytes() < base + (64 << 20), (base, daemon.rss_bytes())
    assert sum(take(daemon.client().loader(dataset.url, batch_size=8), 2)) == 16


def test_one_user_cannot_hold_every_session_and_a_failed_one_frees_its_ring(s3, dataset):
    from conftest import Daemon, wait_for

    d = Daemon(s3.env, "--max-sessions-per-user", "2")
    try:
        client = d.client()
        held = [iter(client.loader(dataset.url, batch_size=8, slots=2)) for _ in range(2)]
        first = [next(it) for it in held]
        # A third session of the same user is refused by name, before any
        # listing or ring is made for it.
        with pytest.raises(stoker.StokerError) as e:
            next(iter(client.loader(dataset.url, batch_size=8)))
        assert e.value.code == "RESOURCE_EXHAUSTED", e.value
        assert "max-sessions-per-user" in e.value.message, e.value.message
        for b in first:
            b.release()
        for it in held:
            it.close()
        wait_for(lambda: client.stats()["sessions"] == 0, 10, "the sessions to end")
        # A session whose shards are missing fails after its ring was made:
        # the ring's memory comes back at once, not after a grace period.
        bucket = dataset.url.split("/")[2]
        missing = f"s3://{bucket}/nothing-here-{{0..3}}.tar"
        with pytest.raises(stoker.StokerError) as e:
            list(client.loader(missing, batch_size=8))
        assert e.value.code == "NOT_FOUND", e.value
        wait_for(lambda: client.stats()["ring_bytes"] == 0, 5, "the failed session's ring to go")
        assert sum(take(client.loader(dataset.url, batch_size=8), 2)) == 16
    finally:
        d.stop()


def test_local_files_and_metadata_addresses_are_refused_by_default(daemon, dataset, tmp_path):
    client = daemon.client()
    for url in [str(tmp_path) + "/", "file:///etc/x.tar", "http://169.254.169.254/latest/x.tar"]:
        with pytest.raises(stoker.StokerError) as e:
            next(iter(client.loader(url, batch_size=8)))
        assert e.value.code == "PERMISSION_DENIED", (url, e.value)
    # The store the operator configured still reads.
    assert sum(take(client.loader(dataset.url, batch_size=8), 2)) == 16


def _extreme_u32(rng):
    return rng.choice([0, 1, 2, 3, 7, 64, 1024, 2**20, 2**20 + 1, 2**31, 2**32 - 1, rng.randrange(2**32)])


def _extreme_u64(rng):
    return rng.choice([0, 1, 2, 2**32, 2**63, 2**64 - 2, 2**64 - 1, rng.randrange(2**64)])


def _hostile_request(rng, good_url):
    """One generated OpenStreamRequest: every field drawn from edge values,
    garbage and (sometimes) sane ones."""
    from stoker._proto import stoker_pb2 as pb

    junk = lambda n: bytes(rng.randrange(256) for _ in range(n))  # noqa: E731
    url = rng.choice([
        good_url,
        good_url + "{0..9999999}.tar",
        good_url + "{0..999999}.tar",
        good_url[:-1] + "{" * 50,
        "s3://" + "b" * rng.choice([1, 64, 10_000]) + "/x/",
        "s3://bucket/" + "k/" * rng.choice([10, 600, 5000]),
        "http://169.254.169.254/latest/x.tar",
        "http://user:secret@127.0.0.1:1/x.tar",
        "file:///etc/passwd",
        "/proc/self/mem",
        "",
        "\x00\x01",
        "s3://bucket/" + "é" * 3000,
        junk(rng.randrange(1, 200)).decode("latin-1"),
    ])
    return pb.OpenStreamRequest(
        url=url,
        batch_size=_extreme_u32(rng),
        rank=_extreme_u32(rng),
        world_size=_extreme_u32(rng),
        seed=_extreme_u64(rng),
        epoch=_extreme_u64(rng),
        shuffle_buffer=_extreme_u32(rng),
        shuffle_shards=rng.random() < 0.5,
        fields=[junk(rng.randrange(0, 40)).decode("latin-1") for _ in range(rng.choice([0, 1, 3, 200]))],
        drop_last=rng.random() < 0.5,
        state=rng.choice([b"", junk(rng.randrange(1, 64)), b"{" * 1000, junk(5000)]),
        epochs=_extreme_u64(rng),
        ring_bytes=_extreme_u64(rng),
        slots=_extreme_u32(rng),
        states=[junk(rng.randrange(0, 100)) for _ in range(rng.choice([0, 2, 1000]))],
    )


def test_a_thousand_generated_hostile_requests_leave_the_daemon_serving(daemon, dataset):
    """Seeded, so a failure replays. Each request gets a named gRPC status
    (or a stream) at once; error messages stay under 4 KB; the daemon stays
    up, its RSS bounded, and a normal client works alongside."""
    import random
    import time

    import grpc

    rng = random.Random(20261201)
    client = daemon.client()
    base = daemon.rss_bytes()
    codes = {}
    for i in range(1000):
        req = _hostile_request(rng, dataset.url)
        t0 = time.monotonic()
        call = client._stub.OpenStream(req, timeout=20)
        try:
            first = next(call)
            codes["ok"] = codes.get("ok", 0) + 1
            assert first.WhichOneof("event") == "ring"
        except grpc.RpcError as e:
            code = e.code().name
            assert code not in ("UNKNOWN", "DEADLINE_EXCEEDED"), (i, req.url[:80], code, e.details())
            assert len(e.details() or "") <= 4096, (i, len(e.details()))
            codes[code] = codes.get(code, 0) + 1
        finally:
            call.cancel()
        # At once: a `{0..9999999}` pattern once took 15 s (and 1.5 GB).
        assert time.monotonic() - t0 < 5, (i, req.url[:80], time.monotonic() - t0)
        if i % 100 == 99:
            assert daemon.proc.poll() is None, f"the daemon died after request {i}"
            # A normal client alongside.
            assert sum(take(client.loader(dataset.url, batch_size=8), 1)) == 8
    print("codes:", codes)
    assert codes.get("INVALID_ARGUMENT", 0) > 100, codes
    assert codes.get("RESOURCE_EXHAUSTED", 0) > 100, codes
    assert daemon.rss_bytes() < base + (512 << 20), (base, daemon.rss_bytes())


def test_reconnects_back_off_exponentially_to_five_seconds():
    """A node's ranks that lost the daemon together must not reconnect in
    step every 0.1 s (each reconnect may cost a listing): the longest wait
    doubles from 0.1 s to 5 s, and the wait is drawn below it (jitter)."""
    from stoker.client import _reconnect_delay

    longest = [_reconnect_delay(n) for n in range(1, 40)]
    assert longest[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert longest == sorted(longest) and max(longest) == 5.0
