"""Throwaway secrets for the mqtt scenario, made on the host at test time (dependency step).

Writes build/mqtt-pki/ (build/ is ignored by git; nothing here is ever committed):
  ca.crt, ca.key           a test CA (EC P-256)
  depot.crt, depot.key     the depot broker's certificate, subjectAltName DNS:mqtt-depot (the
                           name the truck's bridge connects to and verifies), signed by the CA
  secrets.json             a random password per MQTT client of the scenario

Idempotent: kept while the certificates are valid for two more days, so repeated
`molecule converge` runs stay idempotent; `--force` makes new ones.

    .venv/bin/python molecule/mqtt/pki.py [--force]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[2]))
OUT = PROJECT / "build" / "mqtt-pki"
DEPOT_NAME = "mqtt-depot"
VALID_DAYS = 30
CLIENTS = (
    # truck
    "aps-sensor",
    "linkedge-inference",
    "linkedge-status",
    "observer",
    "other-sensor",
    "reload-check",
    "test-sensor",
    # depot
    "bridge",
    "depot-observer",
)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _still_valid() -> bool:
    try:
        cert = x509.load_pem_x509_certificate((OUT / "depot.crt").read_bytes())
        passwords = json.loads((OUT / "secrets.json").read_text())
        (OUT / "depot.key").read_bytes()
        (OUT / "ca.crt").read_bytes()
    except (OSError, ValueError):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return left > dt.timedelta(days=2) and set(CLIENTS) <= set(passwords)


def make() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "LinkEdge mqtt scenario test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    depot_key = ec.generate_private_key(ec.SECP256R1())
    depot = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEPOT_NAME)]))
        .issuer_name(ca_name)
        .public_key(depot_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DEPOT_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    _write(OUT / "ca.key", _key_pem(ca_key))
    _write(OUT / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    _write(OUT / "depot.key", _key_pem(depot_key))
    _write(OUT / "depot.crt", depot.public_bytes(serialization.Encoding.PEM))
    passwords = {name: secrets.token_urlsafe(24) for name in CLIENTS}
    _write(OUT / "secrets.json", (json.dumps(passwords, indent=1) + "\n").encode())


def main() -> int:
    if "--force" not in sys.argv[1:] and _still_valid():
        print(f"[mqtt-pki] {OUT} is up to date", file=sys.stderr)
        return 0
    make()
    print(f"[mqtt-pki] wrote a test CA, the {DEPOT_NAME} certificate and passwords to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
