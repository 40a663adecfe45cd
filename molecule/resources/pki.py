"""Throwaway secrets for a scenario's depot, made on the host at test time (dependency step).

Writes OUT (under build/, ignored by git; nothing here is ever committed):
  ca.crt, ca.key           a test CA (EC P-256)
  depot.crt, depot.key     the depot's certificate (its broker, HTTPS server and registry),
                           subjectAltName DNS:NAME (the name trucks connect to and verify) and,
                           with --loopback, localhost and 127.0.0.1 (ports the scenario
                           publishes to the host), signed by the CA
  secrets.json             a random password per MQTT client of the scenarios

Idempotent: kept while the certificates are valid for two more days and name the same hosts,
so repeated `molecule converge` runs stay idempotent; `--force` makes new ones.

    .venv/bin/python molecule/resources/pki.py --out build/mqtt-pki --name mqtt-depot [--force]
    .venv/bin/python molecule/resources/pki.py --out build/pull-pki --name pull-depot --loopback
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

# The certificates are made as the depot-load bench makes its own (one implementation).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.depot_load.pki import ca_certificate, new_key, server_certificate

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
    "capture-upload",
    "metrics-truck",
    "metrics-reader",
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


def _subject_alt_names(name: str, loopback: bool) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    if loopback:
        names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    return names


def _still_valid(out: Path, names: list[x509.GeneralName]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((out / "depot.crt").read_bytes())
        passwords = json.loads((out / "secrets.json").read_text())
        (out / "depot.key").read_bytes()
        (out / "ca.crt").read_bytes()
        named = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return left > dt.timedelta(days=2) and set(CLIENTS) <= set(passwords) and named == names


def make(out: Path, name: str, names: list[x509.GeneralName]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ca_key = new_key()
    ca = ca_certificate(ca_key, f"LinkEdge {name} scenario test CA", VALID_DAYS)
    depot_key = new_key()
    depot = server_certificate(ca, ca_key, depot_key, names, VALID_DAYS)

    _write(out / "ca.key", _key_pem(ca_key))
    _write(out / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    _write(out / "depot.key", _key_pem(depot_key))
    _write(out / "depot.crt", depot.public_bytes(serialization.Encoding.PEM))
    passwords = {name: secrets.token_urlsafe(24) for name in CLIENTS}
    _write(out / "secrets.json", (json.dumps(passwords, indent=1) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="throwaway CA, depot certificate, passwords")
    parser.add_argument("--out", type=Path, required=True, help="directory to write them to")
    parser.add_argument("--name", required=True, help="the depot's host name (certificate SAN)")
    parser.add_argument("--loopback", action="store_true", help="also name localhost and 127.0.0.1")
    parser.add_argument("--force", action="store_true", help="make new ones even if valid")
    args = parser.parse_args(argv)
    names = _subject_alt_names(args.name, args.loopback)
    if not args.force and _still_valid(args.out, names):
        print(f"[pki] {args.out} is up to date", file=sys.stderr)
        return 0
    make(args.out, args.name, names)
    print(f"[pki] wrote a test CA, the {args.name} certificate and passwords to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
