"""A throwaway PKI for the TLS measurements: a CA and a server certificate for the depot's
host name (ECDSA P-256 or RSA-2048)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .settings import DEPOT_HOST


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_key(kind: str = "ecdsa") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """ecdsa: P-256; rsa: 2048 bits."""
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(
    subject: str, issuer: x509.Name | None, public_key: Any, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def ca_certificate(key: Any, common_name: str, days: int) -> x509.Certificate:
    """A self-signed CA that signs certificates only (path length 0)."""
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        _certificate(common_name, None, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def server_certificate(
    ca: x509.Certificate, ca_key: Any, key: Any, names: list[x509.GeneralName], days: int
) -> x509.Certificate:
    """A TLS server certificate for `names` (the first one's value is its common name)."""
    return (
        _certificate(str(names[0].value), ca.subject, key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def make_pki(directory: Path, kind: str) -> tuple[Path, Path, Path, int]:
    """A throwaway CA and a server certificate for DEPOT_HOST (and 127.0.0.1), both of KIND
    (ecdsa: P-256, rsa: 2048 bits); (ca, certificate, key, certificate DER bytes)."""
    ca_key, key = new_key(kind), new_key(kind)
    ca = ca_certificate(ca_key, f"LinkEdge depot CA ({kind})", 3650)
    names = [x509.DNSName(DEPOT_HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = server_certificate(ca, ca_key, key, names, 397)
    paths = directory / f"{kind}-ca.pem", directory / f"{kind}.pem", directory / f"{kind}.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, private, none))
    paths[2].chmod(0o600)
    return *paths, len(certificate.public_bytes(serialization.Encoding.DER))
