"""Micro-benchmark of the per-RPC cost of Hotline's gRPC server guard (mTLS caller check
against the method's CALLERS table) and tracing (server span, latency histogram), against the
same server without them.

Run: .venv/bin/python bench/bench_rpc.py [N]

Both servers are mutual-TLS on loopback in this process, serving the IVR's ListFlows (a
tiny unary method); a client with the CRM's certificate calls each N times, 8 calls in
flight. Prints calls/second for each and the ratio guarded / bare.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import grpc

from common import certs, tracing
from common.rpc import Tls, channel, server
from hotline.v1 import ivr_pb2, ivr_pb2_grpc
from ivr.servicer import IvrService

CONCURRENCY = 8


def bare_server(tls: Tls) -> tuple[grpc.aio.Server, int]:
    srv = grpc.aio.server()
    creds = grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=True
    )
    return srv, srv.add_secure_port("127.0.0.1:0", creds)


async def rate(port: int, client: Tls, n: int) -> float:
    async with channel(f"127.0.0.1:{port}", client, "ivr") as ch:
        stub = ivr_pb2_grpc.IvrStub(ch)
        await stub.ListFlows(ivr_pb2.ListFlowsRequest(), timeout=5)  # connect, warm up

        async def worker(calls: int) -> None:
            for _ in range(calls):
                await stub.ListFlows(ivr_pb2.ListFlowsRequest(), timeout=5)

        start = time.perf_counter()
        await asyncio.gather(*(worker(n // CONCURRENCY) for _ in range(CONCURRENCY)))
        return (n // CONCURRENCY * CONCURRENCY) / (time.perf_counter() - start)


async def main(n: int) -> None:
    tracing.setup("bench")  # recording spans, as every service has (no exporter)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        certs.ensure(d, ("ivr", "crm"))
        ivr = Tls.load(d / "ca.crt", d / "ivr.crt", d / "ivr.key")
        crm = Tls.load(d / "ca.crt", d / "crm.crt", d / "crm.key")
        guarded, guarded_port = server("127.0.0.1", 0, ivr, IvrService.CALLERS)
        bare, bare_port = bare_server(ivr)
        for srv in (guarded, bare):
            ivr_pb2_grpc.add_IvrServicer_to_server(IvrService({}), srv)
            await srv.start()
        try:
            best = {"bare": 0.0, "guarded": 0.0}
            for _ in range(3):  # interleaved rounds: a busy host hits both alike
                best["bare"] = max(best["bare"], await rate(bare_port, crm, n))
                best["guarded"] = max(best["guarded"], await rate(guarded_port, crm, n))
        finally:
            await guarded.stop(None)
            await bare.stop(None)
    print(f"unary gRPC over mTLS on loopback, N={n}, {CONCURRENCY} in flight")
    for name, value in best.items():
        print(f"  {name:8s} {value:>10,.0f} calls/s")
    print(f"  ratio guarded / bare = {best['guarded'] / best['bare']:.2f}x")
    per_call_us = (1 / best["guarded"] - 1 / best["bare"]) * 1e6
    print(f"  guard + tracing cost per call ~ {per_call_us:.0f} us")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000))
