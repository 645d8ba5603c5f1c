"""`hotline_sip_responses_total{code,direction}`: every response a real UDP socket sends or
receives is counted by its status code, requests are not."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.transport import Addr, Transport, UdpTransport

RESPONSE = (
    b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1\r\n"
    b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)
REQUEST = (
    b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-2\r\n"
    b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c2\r\nCSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def count(code: str, direction: str) -> float:
    value = REGISTRY.get_sample_value(
        "hotline_sip_responses_total", {"code": code, "direction": direction}
    )
    return value or 0.0


async def test_responses_are_counted_by_code_and_direction() -> None:
    got: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()

    def on_message(msg: SipRequest | SipResponse, transport: Transport, addr: Addr) -> None:
        got.put_nowait(msg)

    a = await UdpTransport.listen("127.0.0.1", 0, on_message)
    b = await UdpTransport.listen("127.0.0.1", 0, on_message)
    sent, received = count("486", "sent"), count("486", "received")
    try:
        a.send(RESPONSE, b.local_addr)
        a.send(REQUEST, b.local_addr)
        first = await asyncio.wait_for(got.get(), 5)
        second = await asyncio.wait_for(got.get(), 5)
    finally:
        a.close()
        b.close()
    assert isinstance(first, SipResponse) and isinstance(second, SipRequest)
    assert count("486", "sent") == sent + 1
    assert count("486", "received") == received + 1
    assert (
        REGISTRY.get_sample_value(
            "hotline_sip_responses_total", {"code": "OPT", "direction": "sent"}
        )
        is None
    )
