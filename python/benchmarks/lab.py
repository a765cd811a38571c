"""What the lab scripts (soak.py, store_faults.py) share: the binaries, a
local S3 server (examples/local_s3) and the fault proxy (examples/fault_proxy)."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STOKER_BIN") or REPO / "target" / "release" / "stoker")
EXAMPLES = BIN.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class LocalS3:
    """examples/local_s3 on a free port, serving `root`; `env` reaches it."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(EXAMPLES / "local_s3"), str(root), self.addr],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": "stoker", "AWS_SECRET_ACCESS_KEY": "stoker-secret",
                    "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_ENDPOINT_URL": f"http://{self.addr}"}

    def gen(self, url: str, *args: str) -> None:
        subprocess.run([str(BIN), "gen", url, *args], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class FaultProxy:
    """examples/fault_proxy in front of `upstream`; `stop()` returns what it
    injected ({"faults": {kind: n}, "requests": n, "refused": n})."""

    def __init__(self, upstream: str, *flags: str):
        self.proc = subprocess.Popen([str(EXAMPLES / "fault_proxy"), upstream, *flags],
                                     stdout=subprocess.PIPE, text=True)
        self.addr = self.proc.stdout.readline().split()[-1]

    def stop(self) -> dict:
        if self.proc.poll() is not None:
            return {}
        self.proc.terminate()
        line = self.proc.stdout.readline()
        self.proc.wait(10)
        return json.loads(line or "{}")
