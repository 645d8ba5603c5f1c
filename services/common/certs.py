"""Local service certificates: one CA and one certificate per service, for mutual TLS on gRPC.

`make setup` and `make run` call `python -m common.certs` (idempotent: existing, still valid
files are kept), which writes under `$HOTLINE_VAR_DIR/tls/`:

- `ca.crt` / `ca.key`: a self-signed CA (EC P-256, 10 years) that only signs our services;
- `<service>.crt` / `<service>.key` for each of the five services (1 year), whose subject
  alternative names carry the service's identity, `spiffe://<trust domain>/<service>` (the
  URI the servers authorize callers by, `common.authz`), plus the DNS names and addresses
  peers dial it by (`localhost`, `127.0.0.1`, `::1` and any `--dns`/`--ip` given).

In Kubernetes the same layout comes from a Secret or from cert-manager (docs/security.md);
`--out DIR --dns NAME` makes files for a Secret by hand. Keys are written mode 0600.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.settings import SERVICES, Settings

__all__ = ["ensure", "identity_uri", "issue_ca", "issue_service_cert", "main"]

CA_DAYS, CERT_DAYS = 3650, 365
#: a certificate this close to its end is renewed by `ensure`.
RENEW_BEFORE = datetime.timedelta(days=30)
LOCAL_DNS = ("localhost",)
LOCAL_IPS = ("127.0.0.1", "::1")


def identity_uri(trust_domain: str, service: str) -> str:
    """The URI SAN naming `service` within `trust_domain` (SPIFFE ID form)."""
    return f"spiffe://{trust_domain}/{service}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_ca(name: str = "Hotline local CA") -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a new self-signed CA."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue_service_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    service: str,
    *,
    trust_domain: str = "hotline",
    dns: Iterable[str] = LOCAL_DNS,
    ips: Iterable[str] = LOCAL_IPS,
    days: int = CERT_DAYS,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `service`, signed by the CA, usable as TLS server and
    client; its SANs: the identity URI, `service` and `dns` as DNS names, `ips` as addresses."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key made by common.certs")
    key = _key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity_uri(trust_domain, service))
    ]
    names += [x509.DNSName(d) for d in dict.fromkeys([service, *dns])]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _fresh(cert_path: Path, ca_pem: bytes | None, sans: set[str] | None = None) -> bool:
    """The certificate exists, is valid for a while yet, was signed by this CA, and carries
    at least the wanted SANs."""
    if not cert_path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return False
    if ca_pem is not None:
        ca = x509.load_pem_x509_certificate(ca_pem)
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
    if sans:
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        have = {str(v) for v in ext.get_values_for_type(x509.DNSName)}
        have |= {str(v) for v in ext.get_values_for_type(x509.IPAddress)}
        have |= set(ext.get_values_for_type(x509.UniformResourceIdentifier))
        if not sans <= have:
            return False
    return True


def ensure(
    out: Path,
    services: Sequence[str] = SERVICES,
    *,
    trust_domain: str = "hotline",
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
) -> list[str]:
    """Make the CA and each service's certificate under `out` unless present and valid;
    returns what was written."""
    dns, ips = [*LOCAL_DNS, *dns], [*LOCAL_IPS, *ips]
    written: list[str] = []
    ca_crt, ca_key = out / "ca.crt", out / "ca.key"
    if not (_fresh(ca_crt, None) and ca_key.exists()):
        cert_pem, key_pem = issue_ca()
        _write(ca_key, key_pem, private=True)
        _write(ca_crt, cert_pem, private=False)
        written.append(str(ca_crt))
    ca_pem, ca_key_pem = ca_crt.read_bytes(), ca_key.read_bytes()
    for service in services:
        crt, key = out / f"{service}.crt", out / f"{service}.key"
        wanted = {identity_uri(trust_domain, service), service, *dns, *ips}
        wanted = {str(ipaddress.ip_address(x)) if _is_ip(x) else x for x in wanted}
        if _fresh(crt, ca_pem, wanted) and key.exists():
            continue
        cert_pem, key_pem = issue_service_cert(
            ca_pem, ca_key_pem, service, trust_domain=trust_domain, dns=dns, ips=ips
        )
        _write(key, key_pem, private=True)
        _write(crt, cert_pem, private=False)
        written.append(str(crt))
    return written


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m common.certs",
        description="Make the local CA and the services' gRPC certificates (kept when valid).",
    )
    parser.add_argument("--out", type=Path, default=settings.tls_dir, help="default: %(default)s")
    parser.add_argument("--trust-domain", default=settings.tls_trust_domain)
    parser.add_argument("--dns", action="append", default=[], help="extra DNS name (repeatable)")
    parser.add_argument("--ip", action="append", default=[], help="extra IP address (repeatable)")
    parser.add_argument("--service", action="append", choices=SERVICES, help="default: all")
    args = parser.parse_args(argv)
    for ip in args.ip:
        if not _is_ip(ip):
            parser.error(f"--ip {ip!r} is not an IP address")
    written = ensure(
        args.out,
        args.service or SERVICES,
        trust_domain=args.trust_domain,
        dns=args.dns,
        ips=args.ip,
    )
    what = ", ".join(Path(w).name for w in written) if written else "all present and valid"
    print(f"certificates in {args.out}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
