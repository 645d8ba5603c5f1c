"""SIP over TCP within limits (issue 11): slow and idle connections are cut, connections are
capped in total and per source, the 64 KB message cap holds however the bytes arrive, and
running out of file descriptors neither crashes the listener nor floods the log. Real sockets
on loopback; the other source addresses are 127.0.0.x."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

import pytest

from gateway.media.endpoint import NoFreePort, PortAllocator
from gateway.sip import transport as transport_mod
from gateway.sip.transport import TcpLimits, TcpServer, TcpTransport

OPTIONS = (
    b"OPTIONS sip:hotline@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:hotline@127.0.0.1>\r\n"
    b"Call-ID: limits-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class Listener:
    def __init__(self) -> None:
        self.messages: list[object] = []
        self.errors: list[str] = []
        self.server: TcpServer | None = None

    async def start(self, **limits: float) -> TcpServer:
        self.server = await TcpTransport.listen(
            "127.0.0.1",
            0,
            lambda msg, tr, addr: self.messages.append(msg),
            lambda data, addr, exc: self.errors.append(str(exc)),
            TcpLimits(**limits),  # type: ignore[arg-type]
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.local_addr[1]


@pytest.fixture
async def listener():  # noqa: ANN201
    made = Listener()
    yield made
    if made.server is not None:
        await made.server.close()


async def connect(port: int, source: str = "127.0.0.1"):  # noqa: ANN201
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within `seconds`."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), seconds)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except asyncio.TimeoutError:
        return False


async def test_a_drip_fed_message_is_cut_after_the_read_timeout(listener: Listener) -> None:
    await listener.start(read_timeout_s=0.3, idle_timeout_s=60)
    reader, writer = await connect(listener.port)
    start = asyncio.get_running_loop().time()
    cut = False
    for byte in OPTIONS[:-4]:  # a byte every 50 ms: never idle, never complete in time
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            cut = True
            break
        if reader.at_eof() or await closed_within(reader, 0.05):
            cut = True
            break
    elapsed = asyncio.get_running_loop().time() - start
    assert cut and 0.3 <= elapsed < 1.5, elapsed
    assert listener.messages == []
    writer.close()


async def test_a_body_shorter_than_its_content_length_is_not_waited_for(
    listener: Listener,
) -> None:
    await listener.start(read_timeout_s=0.3, idle_timeout_s=60)
    reader, writer = await connect(listener.port)
    writer.write(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 500") + b"v=0\r\n")
    await writer.drain()
    assert await closed_within(reader, 2.0)
    assert listener.messages == []
    writer.close()


async def test_an_idle_connection_is_closed_and_keepalives_keep_one_open(
    listener: Listener,
) -> None:
    await listener.start(read_timeout_s=5, idle_timeout_s=0.4)
    idle_reader, idle_writer = await connect(listener.port)
    live_reader, live_writer = await connect(listener.port)
    for _ in range(6):  # CRLF keepalives every 0.15 s (RFC 5626)
        live_writer.write(b"\r\n\r\n")
        await live_writer.drain()
        await asyncio.sleep(0.15)
    assert idle_reader.at_eof() or await closed_within(idle_reader, 0.5)
    assert not live_reader.at_eof()
    live_writer.write(OPTIONS)
    await live_writer.drain()
    await asyncio.sleep(0.1)
    assert len(listener.messages) == 1
    for w in (idle_writer, live_writer):
        w.close()


async def test_a_connection_is_closed_at_the_end_of_its_lifetime(listener: Listener) -> None:
    await listener.start(idle_timeout_s=60, max_lifetime_s=0.5)
    reader, writer = await connect(listener.port)
    for _ in range(4):
        writer.write(OPTIONS)
        await writer.drain()
        await asyncio.sleep(0.1)
    assert await closed_within(reader, 1.0)
    assert len(listener.messages) == 4
    writer.close()


async def test_connections_are_capped_per_source_and_in_total(listener: Listener) -> None:
    server = await listener.start(max_connections=6, max_per_source=3, idle_timeout_s=60)
    flood = [await connect(listener.port, "127.0.0.2") for _ in range(5)]
    await asyncio.sleep(0.1)
    assert len(server.connections) == 3  # the flooding source got its three
    refused = [r for r, _ in flood[3:]]
    assert all([await closed_within(r, 1.0) for r in refused])
    others = [await connect(listener.port, f"127.0.0.{3 + i}") for i in range(4)]
    await asyncio.sleep(0.1)
    assert len(server.connections) == 6  # 3 + 3 others: the total is reached
    assert await closed_within(others[3][0], 1.0)
    # a connection that was let in works as usual
    others[0][1].write(OPTIONS)
    await others[0][1].drain()
    await asyncio.sleep(0.1)
    assert len(listener.messages) == 1
    # when one goes, a new one may come
    flood[0][1].close()
    await asyncio.sleep(0.1)
    late = await connect(listener.port, "127.0.0.9")
    await asyncio.sleep(0.1)
    assert not await closed_within(late[0], 0.2) and len(server.connections) == 6
    for _, w in flood + others + [late]:
        w.close()


async def test_a_70kb_header_in_one_read_is_refused(listener: Listener) -> None:
    await listener.start()
    reader, writer = await connect(listener.port)
    big = OPTIONS.replace(b"Max-Forwards: 70\r\n", b"X-Pad: " + b"a" * 70_000 + b"\r\n")
    writer.write(big)  # the end of the header section arrives with the rest
    await writer.drain()
    assert await closed_within(reader, 2.0)
    assert listener.messages == [] and any("over 65536 bytes" in e for e in listener.errors)
    writer.close()


async def test_a_body_over_the_cap_is_refused(listener: Listener) -> None:
    await listener.start()
    reader, writer = await connect(listener.port)
    writer.write(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 70000"))
    await writer.drain()
    assert await closed_within(reader, 2.0)
    assert any("exceeds limit 65536" in e for e in listener.errors)
    writer.close()


async def test_out_of_file_descriptors_is_logged_once_and_accepting_recovers(
    listener: Listener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(transport_mod, "ACCEPT_RETRY_S", 0.01)
    loop = asyncio.get_running_loop()
    real_accept = loop.sock_accept
    failures = {"left": 50}

    async def sock_accept(sock: socket.socket):  # noqa: ANN202
        if failures["left"] > 0:
            failures["left"] -= 1
            await asyncio.sleep(0)
            raise OSError(errno.EMFILE, "Too many open files")
        return await real_accept(sock)

    monkeypatch.setattr(loop, "sock_accept", sock_accept)
    with caplog.at_level(logging.WARNING, logger="gateway.sip.transport"):
        server = await listener.start()
        reader, writer = await connect(listener.port)
        writer.write(OPTIONS)
        await writer.drain()
        for _ in range(100):
            if listener.messages:
                break
            await asyncio.sleep(0.02)
    assert len(listener.messages) == 1, "accepting recovered once descriptors were back"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # not one line per failed attempt (there were 50)
    assert "cannot accept connections: Too many open files" in lines[0]
    assert "accepting again" in lines[1] and "50 connections refused meanwhile" in lines[1]
    assert server.refused == 50
    writer.close()


def test_out_of_file_descriptors_for_media_is_no_free_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new call that cannot open its RTP socket is refused like one with no port (503 from
    the SIP channel), not an unhandled error (500)."""
    from gateway.media import endpoint

    def no_fd(*args: object, **kw: object) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    allocator = PortAllocator(40000, 40010)
    monkeypatch.setattr(endpoint.socket, "socket", no_fd)
    with pytest.raises(NoFreePort, match="Too many open files"):
        allocator.allocate_socket("127.0.0.1")
    assert not allocator._in_use
