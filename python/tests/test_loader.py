"""The client against the real daemon and a real S3-protocol server."""

import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stoker
from conftest import Daemon, wait_for
from stoker._proto import stoker_pb2 as pb
import socket


def read_all(loader):
    got = {}
    for batch in loader:
        with batch:
            for i, key in enumerate(batch.keys):
                assert key not in got, f"{key} delivered twice"
                got[key] = {name: col[i].tobytes() for name, col in batch.columns.items()}
    return got


def test_generated_stubs_match_the_proto():
    script = Path(__file__).resolve().parents[1] / "scripts" / "gen_proto.py"
    subprocess.run([sys.executable, str(script), "--check"], check=True)


def test_one_rank_gets_every_sample_once_byte_for_byte(daemon, dataset):
    got = read_all(daemon.client().loader(dataset.url, batch_size=16, shuffle_buffer=40, seed=3))
    assert got == dataset.samples


def test_ranks_split_the_samples_and_fields_filter_columns(daemon, dataset):
    client = daemon.client()
    parts = [
        read_all(client.loader(dataset.url, batch_size=7, rank=r, world_size=3, fields=["cls"]))
        for r in range(3)
    ]
    keys = [set(p) for p in parts]
    assert all(keys), "every rank gets some shards"
    assert sum(len(k) for k in keys) == len(dataset.keys)
    assert set().union(*keys) == dataset.keys
    for part in parts:
        for key, fields in part.items():
            assert fields == {"cls": dataset.samples[key]["cls"]}


def test_columns_are_read_only_views_and_release_returns_the_slot(daemon, dataset):
    client = daemon.client()
    loader = client.loader(dataset.url, batch_size=8, slots=2)
    it = iter(loader)
    held = [next(it), next(it)]
    assert client.stats(loader.session)["slots_leased"] == 2
    col = held[0]["bin"]
    assert not col.values.flags.writeable
    with pytest.raises(ValueError):
        col.values[0] = 1
    assert col[0].tobytes() == dataset.samples[held[0].keys[0]]["bin"]
    assert len(held[0]["cls"].lengths()) == len(held[0])
    # Both slots are held (and still referenced): only explicit releases
    # let the daemon go on to the end of the stream.
    for b in held:
        b.release()
        assert b.released
    rest = 0
    for b in it:
        with b:
            rest += len(b)
    assert rest + sum(len(b) for b in held) == len(dataset.keys)


def test_a_batch_nobody_holds_goes_back_by_itself(daemon, dataset):
    # 2 slots and 20+ batches: the stream only finishes if dropped batches
    # come back without release().
    n = sum(len(b) for b in daemon.client().loader(dataset.url, batch_size=8, slots=2))
    assert n == len(dataset.keys)


def test_the_client_cannot_write_or_resize_the_ring(daemon, dataset):
    client = daemon.client()
    call = client._stub.OpenStream(pb.OpenStreamRequest(url=dataset.url, batch_size=8))
    info = next(call).ring
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(daemon.socket + ".ring")
        s.sendall(f"{info.session} {info.fd_token}\n".encode())
        _, fds, _, _ = socket.recv_fds(s, 4096, 1)
    (fd,) = fds
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(fd, info.segment_bytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 4096)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, info.segment_bytes * 2)
        ro = mmap.mmap(fd, info.segment_bytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        assert len(ro) == info.segment_bytes
        ro.close()
        # A wrong token gets no descriptor.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(daemon.socket + ".ring")
            s.sendall(f"{info.session} wrong\n".encode())
            msg, fds, _, _ = socket.recv_fds(s, 4096, 1)
        assert not fds and b"not your session" in msg
    finally:
        os.close(fd)
        call.cancel()


def test_errors_are_named(daemon, dataset):
    client = daemon.client()
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url.replace("small", "missing"), batch_size=8))
    assert e.value.code == "NOT_FOUND"
    assert "missing" in e.value.message
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url, batch_size=8, state=b"not a token"))
    assert e.value.code == "INVALID_ARGUMENT" and "resume state" in e.value.message
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url, batch_size=0))
    assert e.value.code == "INVALID_ARGUMENT"
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url, batch_size=8, rank=2, world_size=2))
    assert e.value.code == "INVALID_ARGUMENT" and "rank" in e.value.message
    # A batch larger than a ring slot: named, with the hint.
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url, batch_size=64, ring_bytes=64 << 10, slots=2))
    assert e.value.code == "RESOURCE_EXHAUSTED" and "ring slot" in e.value.message
    # A resume state from other settings.
    loader = client.loader(dataset.url, batch_size=8, seed=1)
    state = next(iter(loader)).state
    loader.close()
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url, batch_size=8, seed=2, state=state))
    assert e.value.code == "INVALID_ARGUMENT" and "other settings" in e.value.message


def test_a_resume_state_continues_exactly(daemon, dataset):
    client = daemon.client()
    kw = dict(batch_size=8, shuffle_buffer=30, seed=11)
    full = [(b.keys, b["bin"].values.tobytes()) for b in client.loader(dataset.url, **kw)]
    loader = client.loader(dataset.url, **kw)
    it = iter(loader)
    head = [next(it) for _ in range(4)]
    state = head[-1].state
    loader.close()
    rest = [(b.keys, b["bin"].values.tobytes()) for b in client.loader(dataset.url, state=state, **kw)]
    assert [h.keys for h in head] == [k for k, _ in full[:4]]
    assert rest == full[4:]


@pytest.mark.parametrize("old_world,new_world,shuffle", [(2, 3, 30), (3, 1, 0), (2, 2, 12)])
def test_resharding_delivers_the_rest_of_the_epoch_once(daemon, dataset, old_world, new_world, shuffle):
    client = daemon.client()
    kw = dict(batch_size=6, shuffle_buffer=shuffle, seed=4, epoch=1)
    delivered, states = [], []
    for rank in range(old_world):
        loader = client.loader(dataset.url, rank=rank, world_size=old_world, **kw)
        it = iter(loader)
        for _ in range(2 + rank):  # ranks stop at different points
            batch = next(it)
            delivered += batch.keys
        states.append(batch.state)
        loader.close()
    rest = []
    for rank in range(new_world):
        for batch in client.loader(dataset.url, rank=rank, world_size=new_world, reshard_from=states, **kw):
            with batch:
                rest += batch.keys
                for i, key in enumerate(batch.keys):
                    assert batch["bin"][i].tobytes() == dataset.samples[key]["bin"]
    everything = delivered + rest
    assert len(everything) == len(set(everything)), "a sample twice"
    assert set(everything) == dataset.keys, "a sample missing"


def test_a_resharded_stream_resumes_exactly_and_states_must_be_complete(daemon, dataset):
    client = daemon.client()
    kw = dict(batch_size=5, shuffle_buffer=20, seed=8)
    states = []
    for rank in range(2):
        loader = client.loader(dataset.url, rank=rank, world_size=2, **kw)
        states.append(next(iter(loader)).state)
        loader.close()
    with pytest.raises(stoker.StokerError) as e:
        list(client.loader(dataset.url, world_size=3, reshard_from=states[:1], **kw))
    assert e.value.code == "INVALID_ARGUMENT" and "every rank" in e.value.message
    full = [(b.keys, b["bin"].values.tobytes()) for b in client.loader(dataset.url, world_size=3, reshard_from=states, **kw)]
    loader = client.loader(dataset.url, world_size=3, reshard_from=states, **kw)
    it = iter(loader)
    head = [next(it) for _ in range(3)]
    loader.close()
    rest = [(b.keys, b["bin"].values.tobytes()) for b in client.loader(dataset.url, world_size=3, state=head[-1].state, **kw)]
    assert rest == full[3:]


def test_two_jobs_on_one_dataset_fetch_it_about_once(s3, dataset):

    d = Daemon(s3.env)
    try:
        client = d.client()
        kw = dict(batch_size=8, seed=6)
        alone = read_all(client.loader(dataset.url, **kw))
        one = client.stats()
        # Two jobs side by side, batch for batch.
        a, b = client.loader(dataset.url, **kw), client.loader(dataset.url, **kw)
        got_a, got_b = {}, {}
        for ba, bb in zip(a, b):
            with ba, bb:
                got_a.update(zip(ba.keys, ba["bin"].to_list()))
                got_b.update(zip(bb.keys, bb["bin"].to_list()))
        both = client.stats()
        assert got_a == got_b == {k: v["bin"] for k, v in alone.items()}
        extra_requests = both["requests"] - one["requests"]
        assert both["shared_bytes"] > 0
        assert extra_requests < 1.5 * one["requests"], (extra_requests, one["requests"])
    finally:
        d.stop()


def test_many_sessions_at_once_share_the_daemon_and_all_finish(daemon, dataset):
    import threading

    client = daemon.client()
    world = 6
    results = [None] * world

    def run(rank):
        results[rank] = read_all(
            client.loader(dataset.url, batch_size=4, rank=rank, world_size=world,
                          shuffle_buffer=10, slots=2)
        )

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results), "every session finished"
    merged = {}
    for part in results:
        assert not set(part) & set(merged), "a sample in two ranks"
        merged.update(part)
    assert merged == dataset.samples
    wait_for(lambda: client.stats()["sessions"] == 0, 10, "sessions to close")
    wait_for(lambda: client.stats()["budget_used_bytes"] == 0, 10, "the budget to drain")
