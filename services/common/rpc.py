"""gRPC bootstrap: servers and channels that carry the trace context in metadata.

Commands between services are gRPC calls; wrapping every handler here gives each one a
server span parented on the caller's span, and every client call injects `traceparent`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from common import tracing

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    #: The servicer context every handler receives (grpc-stubs makes it generic).
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext


def _metadata_carrier(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v.decode() for k, v in (metadata or ())}


class _TracingServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Starts a server span per RPC, parented on the context found in the metadata."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        parent = tracing.extract(_metadata_carrier(details.invocation_metadata))
        tracer = trace.get_tracer("hotline.rpc")

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            async def traced(request_or_iterator: Any, ctx: Context) -> Any:
                token = otel_context.attach(parent)
                try:
                    with tracer.start_as_current_span(method, kind=trace.SpanKind.SERVER):
                        return await fn(request_or_iterator, ctx)
                finally:
                    otel_context.detach(token)

            return traced

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap(handler.unary_unary), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap(handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler


class _TracingClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.aio.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
):
    """Adds the current trace context to the outgoing metadata."""

    @staticmethod
    def _details(details: Any) -> Any:
        metadata: Any = list(details.metadata or ()) + list(tracing.inject().items())
        return (
            details._replace(metadata=metadata)
            if hasattr(details, "_replace")
            else grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            )
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(details), request_iterator)


def server(host: str, port: int) -> grpc.aio.Server:
    """A gRPC server bound to host:port with tracing; add servicers, then `await start()`."""
    srv = grpc.aio.server(interceptors=[_TracingServerInterceptor()])
    bound = srv.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {host}:{port}")
    return srv


def channel(target: str) -> grpc.aio.Channel:
    """A client channel to another service; calls carry the trace context."""
    interceptors: Any = [_TracingClientInterceptor()]
    return grpc.aio.insecure_channel(target, interceptors=interceptors)
