"""The session's ring: fetching its memfd over the ring socket and mapping it
read-only (see docs/RING.md)."""

import json
import mmap
import os
import socket

from .errors import StokerError


def ring_socket_path(grpc_socket: str) -> str:
    """The ring socket sits next to the gRPC socket."""
    return grpc_socket + ".ring"


class Ring:
    """A read-only mapping of one session's segment."""

    def __init__(self, grpc_socket: str, session: str, fd_token: str, segment_bytes: int):
        path = ring_socket_path(grpc_socket)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            try:
                s.connect(path)
                s.sendall(f"{session} {fd_token}\n".encode())
                msg, fds, _flags, _addr = socket.recv_fds(s, 4096, 1)
            except OSError as e:
                raise StokerError("UNAVAILABLE", f"fetching the ring from {path}: {e}") from e
        if not fds:
            raise StokerError("PERMISSION_DENIED", f"{path}: {msg.decode(errors='replace').strip()}")
        fd = fds[0]
        try:
            info = json.loads(msg)
            if info.get("segment_bytes") != segment_bytes:
                raise StokerError("INTERNAL", f"ring of {info} does not match {segment_bytes} bytes")
            # Sealed with F_SEAL_FUTURE_WRITE: only a read-only mapping is allowed.
            self.mm = mmap.mmap(fd, segment_bytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.nbytes = segment_bytes
