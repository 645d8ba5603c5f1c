"""A peer service's gRPC refusal as an HTTP error the browser can show.

The CRM drives the ACD and the gateway over gRPC; their status codes carry the reason
("call c-1 is not bridged"), which the desk shows as is, under the HTTP status that says
whose fault it is: the request's (400, 404, 409, 403), or the platform's (501, 503, 504).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from crm.rest import ApiError

#: what each peer's status means over HTTP; codes not listed are a 502.
GATEWAY_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class PeerError(ApiError):
    """`peer` said no (or could not be reached); carries the HTTP status for the browser."""

    def __init__(
        self,
        peer: str,
        code: grpc.StatusCode,
        detail: str,
        statuses: Mapping[grpc.StatusCode, int],
        timeout_s: float,
    ) -> None:
        status = statuses.get(code, 502)
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"{peer} unavailable: {detail}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"{peer} did not answer within {timeout_s:.0f} s"
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            message = f"{peer} does not offer this yet: {detail}"
        elif status == 502:
            message = f"{peer} error {code.name}: {detail}"
        else:
            message = detail or code.name.lower()
        super().__init__(status, message)
        self.code = code
