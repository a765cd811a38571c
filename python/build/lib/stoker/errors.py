"""Errors the client raises."""

import grpc


class StokerError(RuntimeError):
    """A failed stoker call: `code` is the gRPC status name (e.g. 'NOT_FOUND'),
    the message carries the daemon's context (shard URL, offset, hint)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> "StokerError":
        code = err.code().name if hasattr(err, "code") and err.code() else "UNKNOWN"
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code, details or str(err))
