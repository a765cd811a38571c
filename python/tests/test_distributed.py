"""Distributed training semantics through the real daemon: with `even`,
every rank takes the same number of steps per epoch, so a DDP job over
shards of unequal sizes never waits at a collective for a rank that ran
out; what is left out or repeated is told, never silent."""

import collections
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import make_dataset


@pytest.fixture(scope="module")
def uneven(s3):
    # 5 shards whose sample counts differ (sample sizes vary ±50%): split by
    # whole shards, 3 ranks get 2, 2 and 1 shards.
    return make_dataset(s3, "uneven", "--shards", "5", "--shard-bytes", "160KiB", "--sample-bytes", "8KiB")


def run_rank(daemon, ds, rank, world, **kw):
    args = {"batch_size": 4, "seed": 3, **kw}
    loader = daemon.client().loader(ds.url, rank=rank, world_size=world, **args)
    batches, keys = 0, []
    for batch in loader:
        with batch:
            batches += 1
            for i, key in enumerate(batch.keys):
                assert batch.columns["bin"][i].tobytes() == ds.samples[key]["bin"]
                keys.append(key)
    return batches, keys, loader


def test_by_shards_the_ranks_would_take_different_steps(daemon, uneven):
    # The premise of the tests below: without `even`, 3 ranks differ.
    steps = [run_rank(daemon, uneven, r, 3)[0] for r in range(3)]
    assert len(set(steps)) > 1, steps


@pytest.mark.parametrize("world", [2, 3, 7, 12])
@pytest.mark.parametrize("even", ["drop", "pad"])
def test_even_gives_every_rank_the_same_steps(daemon, uneven, world, even):
    total = len(uneven.keys)
    runs = [run_rank(daemon, uneven, r, world, even=even, shuffle_buffer=6) for r in range(world)]
    steps = {b for b, _, _ in runs}
    assert len(steps) == 1, [b for b, _, _ in runs]
    counts = collections.Counter(k for _, keys, _ in runs for k in keys)
    left_out = sum(l.samples_left_out for _, _, l in runs) // world  # each rank tells the epoch's
    repeated = sum(l.samples_repeated for _, _, l in runs)
    if even == "drop":
        assert max(counts.values()) == 1
        assert left_out == total % world
        assert len(counts) == total - left_out
        assert repeated == 0
    else:
        assert set(counts) == uneven.keys
        assert sum(counts.values()) - total == repeated == world * -(-total // world) - total
        assert left_out == 0


def test_an_unknown_even_policy_is_a_named_error(daemon, uneven):
    import stoker

    with pytest.raises(stoker.StokerError) as e:
        run_rank(daemon, uneven, 0, 2, even="evenly")
    assert e.value.code == "INVALID_ARGUMENT" and "--even" in str(e.value)


DDP = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch.utils.data import DataLoader
    from stoker.torch import StokerDataset

    rank, world, pg, url, socket, workers = sys.argv[1:7]
    dist.init_process_group("gloo", init_method=f"file://{pg}", rank=int(rank), world_size=int(world))
    ds = StokerDataset(url, batch_size=4, socket=socket, even="drop", shuffle_buffer=8, seed=1)
    steps = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        n = 0
        for batch in DataLoader(ds, batch_size=None, num_workers=int(workers)):
            t = torch.tensor([len(batch["__key__"])])
            dist.all_reduce(t)  # a rank that ran out would leave the others here
            n += 1
        steps.append(n)
    dist.barrier()
    print("steps", *steps, flush=True)
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_gloo_ddp_job_runs_two_epochs_on_three_ranks_without_a_hang(daemon, uneven, tmp_path, workers):
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), "3", str(tmp_path / "pg"), uneven.url, daemon.socket, str(workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for r in range(3)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for p in procs:
            p.kill()
    steps = [line.split()[1:] for out in outs for line in out.splitlines() if line.startswith("steps")]
    assert len(steps) == 3 and all(s == steps[0] for s in steps), steps
    assert int(steps[0][0]) > 0


def tar_bytes(ds, key):
    """A sample's bytes in its shard: a 512-byte header and padded data per field."""
    return sum(512 + -(-len(v) // 512) * 512 for v in ds.samples[key].values())


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("even", [None, "drop"])
def test_a_resume_seeks_instead_of_fetching_the_epoch_again(daemon, dataset, share, even):
    kw = dict(batch_size=4, shuffle_buffer=16, seed=21, rank=1, world_size=2, even=even)
    # The first run indexes the shards (a by-product of reading them).
    full, states, keys = [], [], []
    for batch in daemon.client().loader(dataset.url, **kw):
        with batch:
            full.append((batch.keys, batch["bin"].values.tobytes()))
            states.append(batch.state)
    k = max(1, int(len(full) * share))
    # A restarted daemon (its engines cold, its counters at 0, its index kept).
    daemon.kill()
    daemon.start()
    loader = daemon.client().loader(dataset.url, state=states[k - 1], **kw)
    rest = [(b.keys, b["bin"].values.tobytes()) for b in loader]
    assert rest == full[k:], "the same batches, byte for byte"
    fetched = daemon.client().stats()["bytes"]
    left = sum(tar_bytes(dataset, key) for keys, _ in full[k:] for key in keys)
    # The samples left, plus each shard's end marker and the few samples a
    # rank's range ends beside: not the epoch up to batch k again.
    shards = len({key.split("-")[0] for keys, _ in full[k:] for key in keys})
    print(f"resume at {share} ({even}): fetched {fetched}, left {left}, full epoch {sum(tar_bytes(dataset, key) for keys, _ in full for key in keys)}")
    assert fetched <= 1.05 * left + 2048 * shards, (fetched, left)


@pytest.mark.parametrize("old_world,new_world", [(2, 3), (3, 2), (2, 7)])
def test_a_split_run_reshards_to_another_world_size_with_equal_steps(daemon, uneven, old_world, new_world):
    client = daemon.client()
    kw = dict(batch_size=4, shuffle_buffer=6, seed=9, even="drop")
    delivered, states = [], []
    for rank in range(old_world):
        loader = client.loader(uneven.url, rank=rank, world_size=old_world, **kw)
        it = iter(loader)
        for _ in range(1 + rank):  # ranks stop at different points
            batch = next(it)
            delivered += batch.keys
        states.append(batch.state)
        loader.close()
    runs = [
        run_rank(daemon, uneven, rank, new_world, reshard_from=states, **kw) for rank in range(new_world)
    ]
    assert len({b for b, _, _ in runs}) == 1, [b for b, _, _ in runs]
    rest = [k for _, keys, _ in runs for k in keys]
    both = delivered + rest
    assert len(set(both)) == len(both), "no sample twice"
    total = len(uneven.keys)
    old_left_out = total % old_world  # the old epoch's split left these out
    new_left_out = runs[0][2].samples_left_out
    assert all(l.samples_left_out == new_left_out for _, _, l in runs)
    assert len(both) == total - old_left_out - new_left_out
