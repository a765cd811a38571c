"""Fixtures: a real S3-protocol server (moto, as its own process), a synthetic
dataset written to it by `stoker gen`, and the real daemon binary. The
`local_*` fixtures need neither moto nor boto3 (the GPU machine has neither):
the same daemon reading a directory of shards."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import stoker

REPO = Path(__file__).resolve().parents[2]
STOKER_BIN = os.environ.get("STOKER_BIN") or str(REPO / "target" / "release" / "stoker")
BUCKET = "stoker-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"


def health_check(port: int):
    """A call of gRPC health's Check on 127.0.0.1:`port`: `check(service)`
    returns the reply's bytes (compare with SERVING, NOT_SERVING)."""
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )

    def check(service: str = "") -> bytes:
        name = service.encode()
        request = bytes([0x0A, len(name)]) + name if name else b""
        return call(request, timeout=10)

    check.channel = channel
    return check


@dataclass
class S3:
    env: dict
    endpoint: str
    proc: subprocess.Popen

    def client(self):
        import boto3  # only the S3 fixtures need it

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )


@pytest.fixture(scope="session")
def s3():
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 30, "moto_server")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    server = S3(env=env, endpoint=endpoint, proc=proc)
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    proc.terminate()
    proc.wait(10)


@dataclass
class Dataset:
    url: str
    # key -> {field: bytes}, read back from the store with tarfile.
    samples: dict = field(default_factory=dict)

    @property
    def keys(self) -> set:
        return set(self.samples)


def make_dataset(s3: S3, prefix: str, *args: str) -> Dataset:
    url = f"s3://{BUCKET}/{prefix}/"
    subprocess.run(
        [STOKER_BIN, "gen", url, *args],
        env={**os.environ, **s3.env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    ds = Dataset(url)
    client = s3.client()
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")["Contents"]:
        body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                ds.samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return ds


@pytest.fixture(scope="session")
def dataset(s3) -> Dataset:
    """8 shards, ~40 samples each, fields bin/cls/json."""
    return make_dataset(s3, "small", "--shards", "8", "--shard-bytes", "320KiB", "--sample-bytes", "8KiB")


class Daemon:
    """The real `stoker serve` on a Unix socket in a fresh directory."""

    def __init__(self, env: dict, *extra: str):
        # AF_UNIX paths are short (108 bytes): not under pytest's tmp_path.
        self.dir = tempfile.mkdtemp(prefix="stoker-", dir="/tmp")
        self.socket = os.path.join(self.dir, "stoker.sock")
        # Shard indexes in the daemon's own directory: no test sees another's.
        index = os.path.join(self.dir, "index")
        self.env = {**os.environ, "STOKER_INDEX_CACHE": index, **env, "STOKER_LOG": "info"}
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.log = open(os.path.join(self.dir, "serve.log"), "ab")
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [STOKER_BIN, "serve", "--socket", self.socket, *self.extra],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"stoker serve exited with {self.proc.returncode}: {self.logs()}")
            try:
                return stoker.Client(self.socket).stats() is not None
            except stoker.StokerError:
                return False

        wait_for(ready, 30, "the daemon")

    def logs(self) -> str:
        with open(os.path.join(self.dir, "serve.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> float:
        """SIGTERM; returns the seconds until exit."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        return time.monotonic() - t

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def client(self) -> stoker.Client:
        return stoker.Client(self.socket)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        # Each test's daemon directory (socket, log, index) went nowhere:
        # a run left ~60 in /tmp. STOKER_KEEP_TEST_DIRS=1 keeps them.
        if not os.environ.get("STOKER_KEEP_TEST_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def daemon(s3):
    d = Daemon(s3.env)
    yield d
    d.stop()


@pytest.fixture(scope="session")
def local_dataset(tmp_path_factory) -> Dataset:
    """As `dataset`, in a local directory (no S3 server); `samples` stays empty."""
    url = str(tmp_path_factory.mktemp("local") / "small") + "/"
    subprocess.run(
        [STOKER_BIN, "gen", url, "--shards", "8", "--shard-bytes", "320KiB", "--sample-bytes", "8KiB"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return Dataset(url)


@pytest.fixture
def local_daemon():
    # Local files are off unless the operator allows them.
    d = Daemon({}, "--allow-url", "file:///tmp/*")
    yield d
    d.stop()
