"""Which thing a gRPC error is about, as a `google.rpc.ErrorInfo` in the status details.

A status code alone can be ambiguous: the gateway answers NOT_FOUND both for a call that has
ended and for a prompt it does not have, and the IVR must tell them apart (a caller who hung
up ends the flow quietly; a missing prompt is the operator's mistake, logged and skipped).
The reason travels the standard way (AIP-193, `grpc-status-details-bin`), so the code and the
human-readable message stay as every other client knows them.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "hotline.v1"
#: the trailing metadata key of a status's details (grpc_status.rpc_status uses the same)
DETAILS_KEY = "grpc-status-details-bin"

#: the call named does not exist or has ended (NOT_FOUND)
CALL_NOT_FOUND = "CALL_NOT_FOUND"
#: the prompt named is not in the gateway's prompt directory, or is unusable (NOT_FOUND)
PROMPT_NOT_FOUND = "PROMPT_NOT_FOUND"
#: an IVR flow's command for a call that is no longer that flow's: another IVR adopted it, or
#: the ACD took it (FAILED_PRECONDITION)
FLOW_TAKEN_OVER = "FLOW_TAKEN_OVER"


def status(code: grpc.StatusCode, message: str, reason: str, **metadata: str) -> grpc.Status:
    """A status carrying `reason` (and `metadata`), for `abort(context, ...)`."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    value: int = code.value[0]
    return rpc_status.to_status(status_pb2.Status(code=value, message=message, details=[detail]))


def reason_of(exc: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason a failed call carries, or "" when it carries none."""
    trailing: Any = exc.trailing_metadata() or ()
    for key, value in trailing:
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == DOMAIN:
                return str(info.reason)
    return ""


async def abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> None:
    """Ends the RPC with `status` (code, message and details); always raises."""
    await context.abort(status.code, status.details, status.trailing_metadata)
