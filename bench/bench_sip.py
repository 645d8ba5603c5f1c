"""Micro-benchmark of the SIP parser/serializer against stdlib baselines.

Run: .venv/bin/python bench/bench_sip.py [N]

Prints messages/second for Hotline's parse_message (and parse + to_bytes,
and parse + the header views a UA touches per request), next to two
baselines on the same bytes: the stdlib email parser (the closest generic
RFC 822 header parser) and a bare bytes.split, which is the floor any
pure-Python parser can reach.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from email import policy
from email.parser import BytesParser

from gateway.sip.message import parse_message

SDP = (
    b"v=0\r\n"
    b"o=- 3912345678 3912345678 IN IP4 192.0.2.10\r\n"
    b"s=phone\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+15551230000@gw.hotline.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK4b43c2ff8.1;received=198.51.100.7\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:198.51.100.7;lr>\r\n"
    b'From: "Alice Caller" <sip:+15559870000@carrier.example.net>;tag=1928301774\r\n'
    b"To: <sip:+15551230000@gw.hotline.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.carrier.example.net\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:+15559870000@192.0.2.10:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY\r\n"
    b"Supported: timer, replaces\r\n"
    b"Session-Expires: 1800\r\n"
    b"User-Agent: ExamplePhone/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def rates(fns: dict[str, Callable[[], object]], n: int, rounds: int = 7) -> dict[str, float]:
    """Best-of-``rounds`` messages/second per function.

    Rounds interleave the candidates so that load from other processes hits
    all of them alike and the printed ratios stay meaningful on a busy host.
    """
    best = dict.fromkeys(fns, float("inf"))
    batch = max(1, n // rounds)
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: batch / t for name, t in best.items()}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 70000
    data = INVITE
    email_parser = BytesParser(policy=policy.compat32)

    def hotline_parse() -> object:
        return parse_message(data)

    def hotline_round_trip() -> object:
        return parse_message(data).to_bytes()

    def hotline_routing() -> object:
        msg = parse_message(data)
        return msg.top_via.branch, msg.cseq, msg.from_.tag, msg.to.tag, msg.call_id

    def email_baseline() -> object:
        return email_parser.parsebytes(data)

    def split_baseline() -> object:
        head, _, body = data.partition(b"\r\n\r\n")
        return [line.partition(b":") for line in head.split(b"\r\n")], body

    assert (
        parse_message(parse_message(data).to_bytes()).to_bytes() == parse_message(data).to_bytes()
    )
    results = rates(
        {
            "hotline parse_message": hotline_parse,
            "hotline parse + to_bytes": hotline_round_trip,
            "hotline parse + via/cseq/from/to": hotline_routing,
            "baseline email.parser (compat32)": email_baseline,
            "baseline bare bytes.split": split_baseline,
        },
        n,
    )
    print(f"INVITE with SDP, {len(data)} bytes, N={n}, Python {sys.version.split()[0]}")
    for name, r in results.items():
        print(f"  {name:36s} {r:>12,.0f} msg/s")
    parse = results["hotline parse_message"]
    email_rate = results["baseline email.parser (compat32)"]
    split_rate = results["baseline bare bytes.split"]
    print(f"  ratio parse_message / email.parser  = {parse / email_rate:.2f}x")
    print(f"  ratio parse_message / bare split    = {parse / split_rate:.2f}x")


if __name__ == "__main__":
    main()
