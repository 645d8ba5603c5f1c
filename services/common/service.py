"""How a service process starts and stops: logs, tracing, side server, signal handling.

Each service's `__main__` calls `run(name, main, load)`: `load` reads the service's own
settings (e.g. `AcdSettings.from_env`), `main(settings, readiness)` builds its app, starts it,
and returns an async `stop` callable. SIGINT/SIGTERM stop the service cleanly.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from common import logs, tracing
from common.health import Readiness, start_side_server
from common.settings import Settings, SettingsError

log = logging.getLogger(__name__)

Stop = Callable[[], Awaitable[None]]
S = TypeVar("S", bound=Settings)


async def _serve(name: str, main: Callable[[S, Readiness], Awaitable[Stop]], settings: S) -> None:
    readiness = Readiness()
    side = await start_side_server(readiness, settings.bind_host, settings.metrics_ports[name])
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):      # before main: a slow start stops cleanly
        loop.add_signal_handler(sig, done.set)
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
    log.info("%s started; metrics on http://%s:%d/metrics", name, settings.bind_host,
             settings.metrics_ports[name])
    await done.wait()
    log.info("%s stopping", name)
    await stop()
    await side.cleanup()
    log.info("%s stopped", name)


def run(name: str, main: Callable[[S, Readiness], Awaitable[Stop]],
        load: Callable[[], S]) -> None:
    """Entry point used by every service's __main__: `load` reads the service's settings once
    (a bad variable stops the process with the message naming it), `main` starts the service."""
    try:
        settings = load()
    except SettingsError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    logs.setup(name, settings.log_level)
    tracing.setup(name, console=settings.trace_console)
    asyncio.run(_serve(name, main, settings))
