"""Fixtures of the SIP conformance suite: the gateway's SIP side in this process, and
independent peers (PJSUA2, baresip, kamailio, SIPp) as subprocesses on loopback ports.
Every wait is bounded; every peer is killed at the end of its test."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.e2e.sip.gateway import GatewayUnderTest, start_gateway

PEERS = Path(__file__).parent / "peers"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    gw = await start_gateway(tmp_path)
    yield gw
    await gw.stop()


class Peer:
    """A peer process whose stdout lines are events; ``expect`` waits for one (bounded)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log
        self.lines: list[str] = []
        self._new = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("w") as out:
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace").rstrip()
                out.write(text + "\n")
                out.flush()
                self.lines.append(text)
                self._new.set()

    async def expect(self, prefix: str, timeout_s: float = 15.0) -> str:
        async def wait() -> str:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if line.startswith(prefix):
                        return line
                seen = len(self.lines)
                self._new.clear()
                if self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(f"{self.name} exited before {prefix!r}: {self.tail()}")
                await self._new.wait()

        try:
            return await asyncio.wait_for(wait(), timeout_s)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{self.name}: no {prefix!r} within {timeout_s}s; last lines: {self.tail()}"
            ) from None

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.lines[-n:])

    async def wait(self, timeout_s: float = 30.0) -> int:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except asyncio.TimeoutError:
            self.kill()
            await self.proc.wait()
        await asyncio.wait_for(self._reader, 5)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the peer's process group (it runs in a session of its own, so a proxy's
        worker processes go too)."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


Spawn = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[Spawn]:
    started: list[Peer] = []

    async def spawn(name: str, argv: list[str], cwd: Path | None = None) -> Peer:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(cwd or tmp_path),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        peer = Peer(name, proc, tmp_path / f"{name}.log")
        started.append(peer)
        return peer

    yield spawn
    for peer in started:
        peer.kill(signal.SIGTERM)
        try:
            await asyncio.wait_for(peer.proc.wait(), 5)
        except asyncio.TimeoutError:
            pass
        peer.kill()
        try:
            await asyncio.wait_for(peer.proc.wait(), 5)
        except asyncio.TimeoutError:
            pass
        peer._reader.cancel()


def pjsua_argv(**options: object) -> list[str]:
    """The PJSUA2 phone script with ``--name value`` options (True: a bare flag)."""
    argv = [sys.executable, str(PEERS / "pjsua_phone.py")]
    for key, value in options.items():
        if value is None or value is False:
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(str(value))
    return argv


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make setup` (make apt)")
    return path


SCENARIOS = Path(__file__).parent / "scenarios"


async def sipp(
    spawn: Spawn,
    tmp_path: Path,
    scenario: str,
    *,
    local_port: int,
    target: str | None = None,
    media_port: int | None = None,
    transport: str = "udp",
    keys: dict[str, str] | None = None,
    extra: list[str] | None = None,
    timeout_s: int = 30,
) -> Peer:
    """SIPp running ``scenario`` once (as UAC towards ``target``, else as UAS), rendered with
    ``keys`` filled in (SIPp substitutes -key values in messages only, not in attributes)."""
    text = (SCENARIOS / scenario).read_text()
    for key, value in (keys or {}).items():
        text = text.replace(f"[{key}]", value)
    name = f"{scenario.removesuffix('.xml')}-{local_port}"
    rendered = tmp_path / f"{name}.xml"
    rendered.write_text(text)
    argv = [need("sipp")]
    if target is not None:
        argv.append(target)
    argv += [
        "-sf",
        str(rendered),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-t",
        "t1" if transport == "tcp" else "u1",
        "-nostdin",
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(tmp_path / f"{name}.err"),
        "-trace_msg",
        "-message_file",
        str(tmp_path / f"{name}.msg"),
    ]
    if media_port is not None:
        argv += ["-mp", str(media_port)]
    argv += extra or []
    return await spawn(name, argv)


def sipp_failure(peer: Peer, tmp_path: Path) -> str:
    """What SIPp said, its error file and the end of its message trace, for an assertion."""
    name = peer.name
    err = tmp_path / f"{name}.err"
    msg = tmp_path / f"{name}.msg"
    return (
        f"sipp {name} rc={peer.proc.returncode}\n{peer.tail(20)}\n"
        + (err.read_text(errors="replace")[-3000:] if err.exists() else "")
        + "\n--- messages ---\n"
        + (msg.read_text(errors="replace")[-6000:] if msg.exists() else "")
    )


async def kamailio(spawn: Spawn, tmp_path: Path, *, port: int, gateway: str) -> Peer:
    """kamailio (Debian's) as a record-routing proxy on ``port`` relaying to ``gateway``."""
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text((PEERS / "kamailio.cfg").read_text().replace("PROXY_PORT", str(port)))
    run = tmp_path / "kamailio"
    run.mkdir(exist_ok=True)
    argv = [
        need("kamailio"),
        "-f",
        str(cfg),
        "-A",
        f'GATEWAY="{gateway}"',
        "-DD",
        "-E",
        "-w",
        str(run),
        "-Y",
        str(run),
        "-P",
        str(run / "kamailio.pid"),
        "-m",
        "32",
        "-M",
        "4",
    ]
    peer = await spawn("kamailio", argv)
    await peer.expect(" 0(", timeout_s=10)
    for _ in range(100):  # bounded: until it listens
        if any("probe_max_receive_buffer" in line for line in peer.lines):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return peer


async def baresip(
    spawn: Spawn,
    tmp_path: Path,
    *,
    name: str,
    account: str,
    sip_port: int,
    rtp_ports: str,
    tone: Path,
    quit_after_s: int = 40,
) -> tuple[Peer, Path]:
    """baresip (Debian's) as a phone: ``account`` as in its accounts file, the WAV ``tone``
    as its microphone, the sndfile module dumping what it hears into the returned folder.
    Bound to the loopback interface only; it quits by itself after ``quit_after_s``."""
    home = tmp_path / name
    home.mkdir()
    (home / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                "net_interface 127.0.0.1",
                f"sip_listen 127.0.0.1:{sip_port}",
                "audio_player alsa,null",
                "audio_alert alsa,null",
                f"audio_source aufile,{tone}",
                f"rtp_ports {rtp_ports}",
                "module_path /usr/lib/baresip/modules",
                "module g711.so",
                "module aufile.so",
                "module alsa.so",
                "module sndfile.so",
                "module_app account.so",
                "module_app menu.so",
                f"snd_path {home}",
                "",
            ]
        )
    )
    (home / "accounts").write_text(account + "\n")
    argv = [need("baresip"), "-f", str(home), "-t", str(quit_after_s)]
    return await spawn(name, argv), home
