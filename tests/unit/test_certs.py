"""`common.certs` (`make certs`): one CA and one certificate per service whose SANs carry the
service's identity URI and the names peers check, kept while valid, keys private."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from common import certs
from common.settings import SERVICES


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        set(ext.get_values_for_type(x509.UniformResourceIdentifier))
        | set(ext.get_values_for_type(x509.DNSName))
        | {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    )


def test_one_ca_and_a_certificate_per_service(tmp_path: Path) -> None:
    written = certs.ensure(tmp_path, trust_domain="site-a", dns=["acd.example"])
    assert [Path(w).name for w in written] == ["ca.crt", *(f"{s}.crt" for s in SERVICES)]
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    for service in SERVICES:
        crt = tmp_path / f"{service}.crt"
        x509.load_pem_x509_certificate(crt.read_bytes()).verify_directly_issued_by(ca)
        assert sans(crt) == {
            f"spiffe://site-a/{service}",
            service,
            "localhost",
            "acd.example",
            "127.0.0.1",
            "::1",
        }
        assert stat.S_IMODE((tmp_path / f"{service}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_valid_files_are_kept_and_a_missing_or_changed_one_is_remade(tmp_path: Path) -> None:
    certs.ensure(tmp_path)
    before = (tmp_path / "crm.crt").read_bytes()
    assert certs.ensure(tmp_path) == []
    (tmp_path / "ivr.crt").unlink()
    assert certs.ensure(tmp_path) == [str(tmp_path / "ivr.crt")]
    # a new trust domain means new identities
    assert len(certs.ensure(tmp_path, trust_domain="other")) == len(SERVICES)
    assert (tmp_path / "crm.crt").read_bytes() != before


def test_a_new_ca_reissues_every_service(tmp_path: Path) -> None:
    certs.ensure(tmp_path)
    (tmp_path / "ca.crt").unlink()
    assert len(certs.ensure(tmp_path)) == 1 + len(SERVICES)


def test_the_command_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert certs.main(["--out", str(tmp_path), "--service", "gateway", "--ip", "10.0.0.7"]) == 0
    assert "gateway.crt" in capsys.readouterr().out
    assert "10.0.0.7" in sans(tmp_path / "gateway.crt")
