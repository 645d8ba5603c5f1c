"""How a service process starts and stops: logs, tracing, side server, signal handling, and
`Wiring`, the one place the start/stop sequence of a service's parts is written.

Each service's `__main__` calls `run(name, main, load)`: `load` reads the service's own
settings (e.g. `AcdSettings.from_env`), `main(settings, readiness)` builds its app, starts it,
and returns an async `stop` callable. SIGINT/SIGTERM stop the service cleanly.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

import grpc
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

from common import gcpause, logs, rpc, tracing
from common.events import BatchHandler, EventConsumer, EventPublisher, Handler
from common.health import Readiness, ReadinessCollector, start_side_server
from common.settings import Settings, SettingsError

log = logging.getLogger(__name__)

Drain = Callable[[float], Awaitable[object]]


class StartupError(RuntimeError):
    """The machine refuses what the settings ask for (a message naming the setting): the
    service stops with it, as with a bad variable."""


class Stop(Protocol):
    """What a service's `main` returns: stop it, after draining for up to `drain_s` seconds."""

    def __call__(self, drain_s: float = 0.0) -> Awaitable[None]: ...


S = TypeVar("S", bound=Settings)
T = TypeVar("T")


async def _serve(
    name: str, main: Callable[[S, Readiness], Coroutine[Any, Any, Stop]], settings: S
) -> None:
    readiness = Readiness()
    REGISTRY.register(ReadinessCollector(readiness, settings.site))
    side = await start_side_server(
        readiness, settings.bind_host, settings.metrics_ports[name], settings.metrics_token
    )
    done = asyncio.Event()
    drain = False
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:  # drain (a second SIGTERM while draining changes nothing)
        nonlocal drain
        drain = True
        done.set()

    # before main: a slow start stops cleanly
    loop.add_signal_handler(signal.SIGINT, done.set)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    starting = asyncio.create_task(main(settings, readiness), name=f"{name}-start")
    stopped = asyncio.create_task(done.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.info("%s stopping before it finished starting", name)
        starting.cancel()
        await side.cleanup()
        return
    stopped.cancel()
    stop = starting.result()
    frozen = gcpause.freeze_startup()
    log.info(
        "%s started; metrics on http://%s:%d/metrics (%d objects of its start frozen for the "
        "garbage collector)",
        name,
        settings.bind_host,
        settings.metrics_ports[name],
        frozen,
    )
    await done.wait()
    # SIGINT during a drain stops at once: the drain is cancelled by the second signal.
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    drain_s = settings.drain_s if drain else 0.0
    log.info("%s stopping%s", name, f" (draining up to {drain_s:.0f}s)" if drain_s else "")
    stopping: asyncio.Future[None] = asyncio.ensure_future(stop(drain_s))
    interrupt = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupt.set)
    interrupted: asyncio.Future[Any] = asyncio.ensure_future(interrupt.wait())
    await asyncio.wait([stopping, interrupted], return_when=asyncio.FIRST_COMPLETED)
    if not stopping.done():
        log.warning("%s: interrupted while draining; stopping now", name)
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        await stop(0.0)
    interrupted.cancel()
    await side.cleanup()
    log.info("%s stopped", name)


def run(
    name: str, main: Callable[[S, Readiness], Coroutine[Any, Any, Stop]], load: Callable[[], S]
) -> None:
    """Entry point used by every service's __main__: `load` reads the service's settings once
    (a bad variable stops the process with the message naming it), `main` starts the service."""
    try:
        settings = load()
    except SettingsError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    logs.setup(name, settings.log_level)
    gcpause.watch_pauses()
    tracing.setup(name, console=settings.trace_console, otlp_endpoint=settings.otlp_endpoint)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.event_loop)) as runner:
            runner.run(_serve(name, main, settings))
    except (rpc.TlsError, StartupError) as exc:
        raise SystemExit(f"{name}: {exc}") from None


def _loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a service runs on (HOTLINE_EVENT_LOOP): uvloop when asked for, or with
    `auto` when it is installed; None is asyncio's own."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # `auto` without uvloop (settings refuse an explicit uvloop then)
        return None

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def grpc_tls(name: str, settings: Settings) -> rpc.Tls | None:
    """The service's mutual-TLS material, or None under the development switch
    HOTLINE_GRPC_INSECURE (logged loudly); TlsError naming an unusable file."""
    if settings.grpc_insecure:
        log.warning(
            "%s: HOTLINE_GRPC_INSECURE is set: gRPC is plain text and every caller is trusted; "
            "development only",
            name,
        )
        return None
    return rpc.Tls.load(*settings.tls_files(name), trust_domain=settings.tls_trust_domain)


#: what `Wiring.on_stop` takes: a function or coroutine function of no arguments.
StopStep = Callable[[], Awaitable[object] | object]


class Wiring:
    """The parts of one service, started in one sequence and stopped by one `stop`.

    A service's `app.py` builds its domain objects and declares its parts here, in the order
    they depend on each other: `publisher()`, `channel(peer)`, `collector(...)`, `task(...)`,
    `on_stop(...)` for anything else it started, then the `consumer(...)`s and `servicer(...)`s.
    `start()` starts the consumers, then the gRPC server with every servicer, and returns the
    `stop` that undoes everything in reverse:

    1. the gRPC server (finishing calls in flight for `grace_s`), so no command comes in;
    2. the consumers, so no event comes in;
    3. every other part, in reverse order of declaration: what was declared last (the
       domain objects that use the publisher and channels) stops first, the publisher and
       channels declared before them stop after them.

    A step that fails is logged and the others still run. A failed `start()` stops what was
    declared before re-raising.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        readiness: Readiness,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name, self.settings, self.readiness, self.registry = (
            name,
            settings,
            readiness,
            registry,
        )
        self._steps: list[tuple[str, StopStep]] = []
        self._consumers: list[EventConsumer] = []
        self._servicers: list[tuple[Callable[[Any, grpc.aio.Server], None], object]] = []
        self._callers: dict[str, frozenset[str]] = {}
        self.tls = grpc_tls(name, settings)
        self._server: grpc.aio.Server | None = None
        self._grace_s = 2.0
        self._ready_check: str | None = None
        self._drains: list[tuple[str, Drain]] = []
        self._stopped = False

    # ---- declarations --------------------------------------------------------------------
    def publisher(self, keep: int = 0) -> EventPublisher:
        """The service's event publisher, connecting now (source = the service's name); with
        `keep`, it restores that many of its last events when the broker loses them
        (`EventPublisher`)."""
        publisher = EventPublisher(self.settings, self.name, self.readiness, keep=keep)
        publisher.start()
        self.on_stop(publisher.stop, "event publisher")
        return publisher

    def channel(self, peer: str) -> grpc.aio.Channel:
        """A gRPC channel to another service, closed at stop."""
        channel = rpc.channel(self.settings.grpc_target(peer), self.tls, peer)
        self.on_stop(lambda: channel.close(None), f"channel to {peer}")
        return channel

    def collector(self, collector: Collector) -> Collector:
        """A Prometheus collector, registered now and unregistered at stop."""
        self.registry.register(collector)
        self.on_stop(lambda: self.registry.unregister(collector), type(collector).__name__)
        return collector

    def task(self, coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[object]:
        """A background task running now, cancelled (and awaited) at stop."""
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)

        async def cancel() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.on_stop(cancel, name)
        return task

    def on_stop(self, step: StopStep, what: str = "") -> None:
        """Run `step` (sync or async) at stop, before everything declared earlier."""
        self._steps.append((what or getattr(step, "__qualname__", repr(step)), step))

    def on_drain(self, step: Drain, what: str = "") -> None:
        """Run `step(budget_s)` when the service is asked to drain (SIGTERM), before it stops:
        e.g. refuse new calls and wait for the live ones, for at most `budget_s`."""
        self._drains.append((what or getattr(step, "__qualname__", repr(step)), step))

    def consumer(
        self,
        topics: Iterable[str],
        handler: Handler,
        group: str | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        fetch_wait_ms: int | None = None,
        kinds: Collection[str] | None = None,
    ) -> EventConsumer:
        """A consumer of `topics` in consumer group `group` (default: the service's name);
        started by `start()`, stopped right after the gRPC server. With `batch_handler`, each
        fetch's new events go to it at once (`handler` takes them one by one if it fails).
        `fetch_wait_ms`: this consumer's fetch wait at the broker, instead of the service-wide
        HOTLINE_KAFKA_FETCH_WAIT_MS. `kinds`: the only payloads the handlers are given (the
        others are counted and passed over, EventConsumer)."""
        consumer = EventConsumer(
            self.settings,
            group or self.name,
            topics,
            handler,
            self.readiness,
            batch_handler=batch_handler,
            fetch_wait_ms=fetch_wait_ms,
            kinds=kinds,
        )
        self._consumers.append(consumer)
        return consumer

    def servicer(self, add: Callable[[T, grpc.aio.Server], None], servicer: T) -> T:
        """A gRPC servicer and its generated `add_<Service>Servicer_to_server` function; served
        by `start()` on the service's gRPC port. The servicer's class declares `CALLERS`, the
        services allowed on each of its methods (`rpc.callers`); a servicer without one is
        refused here, and a method missing from it is refused to every caller."""
        table = getattr(servicer, "CALLERS", None)
        if not isinstance(table, dict) or not table:
            raise TypeError(
                f"{type(servicer).__name__} declares no CALLERS table (rpc.callers): "
                "every gRPC method must name the services allowed to call it"
            )
        self._callers.update(table)
        self._servicers.append((add, servicer))
        return servicer

    # ---- start and stop ------------------------------------------------------------------
    async def start(self, *, grace_s: float = 2.0, readiness_check: str | None = None) -> Stop:
        """Start the consumers, then the gRPC server (if any servicer was declared); returns
        `stop`. With `readiness_check`, that check is green while the server serves."""
        self._grace_s, self._ready_check = grace_s, readiness_check
        try:
            for consumer in self._consumers:
                consumer.start()
            if self._servicers:
                port = self.settings.grpc_ports[self.name]
                server, _ = rpc.server(self.settings.bind_host, port, self.tls, self._callers)
                for add, servicer in self._servicers:
                    add(servicer, server)
                self._server = server
                await server.start()
                if readiness_check:
                    self.readiness.set(readiness_check, True, f"{self.settings.bind_host}:{port}")
        except Exception:
            await self.stop()
            raise
        return self.stop

    def _sequence(self) -> list[tuple[str, StopStep]]:
        steps: list[tuple[str, StopStep]] = []
        if self._server is not None:
            server, grace = self._server, self._grace_s
            steps.append(("gRPC server", lambda: server.stop(grace)))
        steps += [(f"consumer {c.group}", c.stop) for c in reversed(self._consumers)]
        steps += list(reversed(self._steps))
        return steps

    async def drain(self, budget_s: float) -> None:
        """Readiness turns red ("draining"), then every drain step runs for at most `budget_s`."""
        if not self._drains or budget_s <= 0:
            return
        self.readiness.set("draining", False, f"draining: up to {budget_s:.0f}s for live work")
        steps = [asyncio.ensure_future(step(budget_s)) for _, step in self._drains]
        done, pending = await asyncio.wait(steps, timeout=budget_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*steps, return_exceptions=True)
        for (what, _), task in zip(self._drains, steps, strict=True):
            if task in pending:
                log.warning("%s: drain of %s not finished after %.0fs", self.name, what, budget_s)
            elif not task.cancelled() and task.exception() is not None:
                log.error("%s: drain of %s failed", self.name, what, exc_info=task.exception())

    async def stop(self, drain_s: float = 0.0) -> None:
        """Drain for up to `drain_s` (SIGTERM), then stop everything in the order described on
        the class (once; later calls return)."""
        if self._stopped:
            return
        await self.drain(drain_s)
        self._stopped = True
        if self._ready_check:
            self.readiness.set(self._ready_check, False, "stopping")
        for what, step in self._sequence():
            try:
                result = step()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("%s: stopping %s failed; stopping the rest", self.name, what)
