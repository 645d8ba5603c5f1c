"""Test certificates: one CA and the five services' certificates, made once per test process
by `common.certs` (as `make certs` does), and gRPC servers and channels that use them."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import grpc

from common import certs, rpc

TRUST_DOMAIN = "hotline"


@cache
def cert_dir() -> Path:
    out = Path(tempfile.mkdtemp(prefix="hotline-test-tls-"))
    atexit.register(shutil.rmtree, out, True)
    certs.ensure(out, trust_domain=TRUST_DOMAIN)
    return out


def tls(service: str) -> rpc.Tls:
    """The mutual-TLS material of `service`."""
    d = cert_dir()
    return rpc.Tls.load(
        d / "ca.crt", d / f"{service}.crt", d / f"{service}.key", trust_domain=TRUST_DOMAIN
    )


def server(service: str, add: Any, servicer: Any, callers: rpc.Callers | None = None):  # noqa: ANN201
    """A loopback gRPC server of `service` (mTLS, authorized by the servicer's CALLERS unless
    `callers` is given) with `servicer` added; returns (server, port), not started."""
    srv, port = rpc.server("127.0.0.1", 0, tls(service), callers or servicer.CALLERS)
    add(servicer, srv)
    return srv, port


def channel(caller: str, peer: str, port: int) -> grpc.aio.Channel:
    """A channel from service `caller` to service `peer` on loopback `port`."""
    return rpc.channel(f"127.0.0.1:{port}", tls(caller), peer)
