"""gRPC bootstrap: mutually authenticated servers and channels, per-method authorization of
the calling service, and the trace context in metadata.

Every channel between services is mutual TLS (`Tls`: a CA, the service's certificate and key,
docs/security.md). A server knows its caller from the peer certificate's identity URI,
`spiffe://<trust domain>/<service>`, and one interceptor (`_ServerInterceptor`) lets
through only the services the method's table names (`Callers`, declared next to each servicer),
refusing others with PERMISSION_DENIED naming the caller and the method. Plain-text gRPC is
only possible with the development switch (`HOTLINE_GRPC_INSECURE`), where nobody is
authenticated and every method is open.

Wrapping every handler also gives each one a server span parented on the caller's span, and
every client call injects `traceparent`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from common import tracing

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    #: The servicer context every handler receives (grpc-stubs makes it generic).
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
else:
    Context = grpc.aio.ServicerContext


def _metadata_carrier(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    return {k: v if isinstance(v, str) else v.decode() for k, v in (metadata or ())}


HANDLING = Histogram(
    "hotline_grpc_server_handling_seconds",
    "Time to handle a gRPC call, by method (long-running commands such as Play included)",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HANDLED = Counter("hotline_grpc_server_handled_total", "gRPC calls handled", ["method", "code"])


def _with_trace(details: Any) -> Any:
    """`details` with the current trace context added to its metadata."""
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


# Two classes, not one with both bases: grpc.aio's channel files an interceptor under the first
# kind it is an instance of (an if/elif chain), so a dual one never saw client-streaming calls
# (the recorder's Ingest ran in a trace of its own).
class _TracingUnaryClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds the current trace context to a unary call's metadata."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_trace(details), request)


class _TracingStreamClientInterceptor(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    """Adds the current trace context to a client-streaming call's metadata."""

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_with_trace(details), request_iterator)


class TlsError(RuntimeError):
    """The service's CA, certificate or key cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Tls:
    """What a service needs for mutual TLS: the CA it trusts, its own certificate chain and
    key (PEM), and the trust domain of the identity URIs it accepts."""

    ca: bytes
    cert: bytes
    key: bytes
    trust_domain: str = "hotline"

    @classmethod
    def load(cls, ca: Path, cert: Path, key: Path, trust_domain: str = "hotline") -> Tls:
        """Read the three PEM files; TlsError naming the file that is missing or not PEM."""
        pems: list[bytes] = []
        for what, path, marker in (
            ("CA", ca, b"-----BEGIN CERTIFICATE-----"),
            ("certificate", cert, b"-----BEGIN CERTIFICATE-----"),
            ("key", key, b"PRIVATE KEY-----"),
        ):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise TlsError(
                    f"gRPC TLS {what} {path}: {exc.strerror or exc}; make them with "
                    "`make certs` (locally) or mount them (docs/security.md)"
                ) from None
            if marker not in data:
                raise TlsError(f"gRPC TLS {what} {path} is not a PEM {what}")
            pems.append(data)
        return cls(pems[0], pems[1], pems[2], trust_domain)

    def identity_prefix(self) -> str:
        return f"spiffe://{self.trust_domain}/"


#: method path (`/hotline.v1.Acd/SetState`) -> the services allowed to call it.
Callers = Mapping[str, frozenset[str]]


def callers(service: str, table: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """A servicer's table keyed by full method path: `callers("hotline.v1.Acd",
    {"SetState": {"crm"}})` -> `{"/hotline.v1.Acd/SetState": frozenset({"crm"})}`."""
    return {f"/{service}/{method}": frozenset(who) for method, who in table.items()}


#: the service whose call is being handled (set by the server's guard; None in plain text)
_CALLER: ContextVar[str | None] = ContextVar("hotline_grpc_caller", default=None)


def calling_service() -> str | None:
    """The service whose gRPC call the current task handles, as its certificate names it
    (None outside a call, or with the plain-text development switch)."""
    return _CALLER.get()


def peer_service(ctx: Context, trust_domain: str) -> str | None:
    """The calling service named by the peer certificate's identity URI, or None."""
    prefix = f"spiffe://{trust_domain}/"
    auth = ctx.auth_context() or {}
    for raw in (*auth.get("peer_spiffe_id", ()), *auth.get("peer_uri", ())):
        uri = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if uri.startswith(prefix) and "/" not in uri[len(prefix) :] and uri[len(prefix) :]:
            return uri[len(prefix) :]
    return None


class _ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Lets a call through only when the caller's certificate names a service the method's
    table allows (a method no table lists is refused: fail closed), then handles it in a
    server span parented on the caller's trace context, timed and counted by method.

    One interceptor, and each method's wrapped handler is built once and kept: per call only
    the caller check, the span and the metrics remain (bench/bench_rpc.py measures them).
    """

    def __init__(self, table: Callers, trust_domain: str | None) -> None:
        self.table, self.trust_domain = table, trust_domain
        self._tracer = trace.get_tracer("hotline.rpc")
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (handler, wrapped handler)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        allowed = self.table.get(method)
        trust_domain, tracer = self.trust_domain, self._tracer
        handling = HANDLING.labels(method)
        handled: dict[str, Any] = {}  # code -> its counter child

        async def check(ctx: Context) -> None:
            if trust_domain is None:  # development switch: plain text, nobody known
                return
            caller = peer_service(ctx, trust_domain)
            if caller is None:
                log.warning("refused %s: the caller's certificate names no service", method)
                await ctx.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{method}: the client certificate names no service of trust domain "
                    f"{trust_domain} (spiffe://{trust_domain}/<service>)",
                )
            if allowed is None or caller not in allowed:
                who = ", ".join(sorted(allowed)) if allowed else "no service"
                log.warning("refused %s to %s (allowed: %s)", method, caller, who)
                await ctx.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"service {caller} may not call {method} (allowed: {who})",
                )
            _CALLER.set(caller)  # each call runs in a task of its own: this stays with it

        def count(code: str) -> None:
            counter = handled.get(code)
            if counter is None:
                counter = handled[code] = HANDLED.labels(method, code)
            counter.inc()

        def traced(fn: Callable[..., Any]) -> Callable[..., Any]:
            async def call(request_or_iterator: Any, ctx: Context) -> Any:
                await check(ctx)
                parent = tracing.extract(_metadata_carrier(ctx.invocation_metadata()))
                token = otel_context.attach(parent)
                started, code = time.perf_counter(), "OK"
                try:
                    with tracer.start_as_current_span(method, kind=trace.SpanKind.SERVER):
                        return await fn(request_or_iterator, ctx)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception:
                    status = ctx.code()  # set by context.abort(); otherwise the handler failed
                    code = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
                    raise
                finally:
                    otel_context.detach(token)
                    handling.observe(time.perf_counter() - started)
                    count(code)

            return call

        def checked_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
            async def call(request_or_iterator: Any, ctx: Context) -> Any:
                await check(ctx)
                async for item in fn(request_or_iterator, ctx):
                    yield item

            return call

        ser, de = handler.response_serializer, handler.request_deserializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(traced(handler.unary_unary), de, ser)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(traced(handler.stream_unary), de, ser)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                checked_stream(handler.unary_stream), de, ser
            )
        return grpc.stream_stream_rpc_method_handler(checked_stream(handler.stream_stream), de, ser)


def server(host: str, port: int, tls: Tls | None, table: Callers) -> tuple[grpc.aio.Server, int]:
    """A gRPC server bound to host:port (0: any free port) requiring client certificates from
    `tls.ca` and authorizing each call by `table`, and the port it is bound to; with `tls` None
    (the development switch only), plain text with every method open. Add servicers, then
    `await start()`."""
    srv = grpc.aio.server(
        interceptors=[_ServerInterceptor(table, tls.trust_domain if tls else None)]
    )
    if tls is None:
        bound = srv.add_insecure_port(f"{host}:{port}")
    else:
        creds = grpc.ssl_server_credentials(
            [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
        )
        bound = srv.add_secure_port(f"{host}:{port}", creds)
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {host}:{port}")
    return srv, bound


#: how a channel whose peer went away tries again: gRPC's default back-off grows to 120 s
#: (1 s, 1.6 s, 2.6 s, ... between attempts), so a caller waiting for a restarted ACD (the IVR,
#: `wait_for_ready`) would wait for the next attempt seconds after the ACD was back; peers here
#: are a few services on one site, so every 2 s at most costs nothing
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]


def channel(target: str, tls: Tls | None, peer: str) -> grpc.aio.Channel:
    """A client channel to the service `peer` at `target`, presenting our certificate and
    accepting only a server certificate from our CA that names `peer` (its DNS SAN), whatever
    address `target` is; calls carry the trace context. With `tls` None (the development
    switch only), plain text."""
    interceptors: Any = [_TracingUnaryClientInterceptor(), _TracingStreamClientInterceptor()]
    if tls is None:
        return grpc.aio.insecure_channel(target, RECONNECT, interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert
    )
    options = [("grpc.ssl_target_name_override", peer), *RECONNECT]
    return grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
