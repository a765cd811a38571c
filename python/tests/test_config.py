"""The daemon's configuration: flags over STOKER_* environment over a TOML
file over defaults, shown by `stoker config show`, and a daemon started
from a file alone."""

import os
import subprocess

from conftest import STOKER_BIN, Daemon, free_port


def show(*args, env=None):
    done = subprocess.run(
        [STOKER_BIN, "config", "show", *args],
        env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=30,
    )
    rows = {}
    for line in done.stdout.splitlines()[1:]:
        words = line.split()
        if words:
            rows[words[0]] = (" ".join(words[1:-1]), words[-1])
    return done, rows


def test_precedence_and_sources(tmp_path):
    config = tmp_path / "stoker.toml"
    config.write_text(
        'socket = "/from/file.sock"\nslots = 4\nprefetch = 5\nring-memory = "16GiB"\n'
        '[store]\naws_secret_access_key = "hunter2"\n'
    )
    done, rows = show("--slots", "9", env={"STOKER_CONFIG": str(config), "STOKER_SOCKET": "/from/env.sock",
                                          "STOKER_PREFETCH": "7"})
    assert done.returncode == 0, done.stderr
    assert rows["slots"] == ("9", "flag")
    assert rows["socket"] == ("/from/env.sock", "env")
    assert rows["prefetch"] == ("7", "env")
    assert rows["ring-memory"] == ("16GiB", "file")
    assert rows["drain-secs"] == ("8", "default")
    assert "hunter2" not in done.stdout


def test_a_bad_file_is_refused_with_its_name(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("ring_memroy = '8GiB'\n")
    done = subprocess.run([STOKER_BIN, "serve", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "bad.toml" in done.stderr and "unknown setting 'ring_memroy'" in done.stderr
    assert "ring-memory" in done.stderr, "the message lists the settings there are"


def test_a_daemon_runs_from_its_file(s3, dataset, tmp_path):
    port = free_port()
    config = tmp_path / "stoker.toml"
    config.write_text(f'metrics-addr = "127.0.0.1:{port}"\nslots = 3\nallow-url = ["s3://stoker-test/*"]\n')
    d = Daemon({**s3.env, "STOKER_CONFIG": str(config)})
    try:
        loader = d.client().loader(dataset.url, batch_size=8)
        assert sum(len(b.keys) for b in loader) == len(dataset.keys)
        assert loader._slots == 3
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert b"stoker_sessions_opened_total 1" in r.read()
        # A URL outside the file's allow-url is refused.
        import pytest
        import stoker

        with pytest.raises(stoker.StokerError) as e:
            next(iter(d.client().loader("s3://elsewhere/x/", batch_size=4)))
        assert e.value.code == "PERMISSION_DENIED"
    finally:
        d.stop()
