"""Failed gRPC calls as grpc.aio raises them, for unit tests of the code that handles them."""

from __future__ import annotations

import grpc

from common import error_info


def rpc_error(code: grpc.StatusCode, details: str = "", reason: str = "") -> grpc.aio.AioRpcError:
    """A failed call; with `reason`, carrying an ErrorInfo the way the gateway sends it."""
    trailing = error_info.status(code, details, reason).trailing_metadata if reason else ()
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )
