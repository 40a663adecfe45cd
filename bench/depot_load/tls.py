"""TLS: the idle sync's bytes on the wire, per variant (HTTP; ECDSA or RSA certificates; TLS
1.3 or 1.2; full handshakes or resumed sessions), and nginx's CPU per idle request."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .http import get_url_request
from .pki import make_pki
from .proxy import CountingProxy, negotiated_tls
from .servers import Nginx, TlsSite, free_port
from .settings import (
    CHANNEL,
    DEPOT_HOST,
    DEPOT_PREFIX,
    IPV4_TCP_HEADER,
    IPV6_TCP_HEADER,
    MSS,
    Settings,
    log,
)


@dataclass(frozen=True)
class TlsVariant:
    name: str
    scheme: str  # http | https
    certificate: str = ""  # ecdsa | rsa
    version: str = ""  # 1.3 | 1.2
    requests: int = 2
    resume: str = "none"  # none | within (2nd request resumes the 1st) | across (persisted)
    tickets: bool = True


def tls_variants() -> list[TlsVariant]:
    variants = [
        TlsVariant("http, 2 requests", "http"),
        TlsVariant("http, 1 request", "http", requests=1),
    ]
    for certificate in ("ecdsa", "rsa"):
        for version in ("1.3", "1.2"):
            label = f"{certificate.upper()} TLS {version}"
            base = {"scheme": "https", "certificate": certificate, "version": version}
            variants += [
                TlsVariant(f"{label}, 2 requests, full handshakes", **base),
                TlsVariant(f"{label}, 1 request, full handshake", **base, requests=1),
                TlsVariant(f"{label}, 2 requests, 2nd resumes 1st", **base, resume="within"),
                TlsVariant(f"{label}, 2 requests, both resumed", **base, resume="across"),
                TlsVariant(f"{label}, 1 request, resumed", **base, requests=1, resume="across"),
            ]
    for requests in (2, 1):
        variants.append(
            TlsVariant(
                f"ECDSA TLS 1.3, {requests} request{'s' if requests > 1 else ''}, full, "
                "server sends no tickets",
                "https",
                "ecdsa",
                "1.3",
                requests,
                "none",
                tickets=False,
            )
        )
    return variants


class IdleSync:
    """One idle sync's requests as the truck makes them: each a new connection (urllib), the
    exact get_url request with If-Modified-Since, read until the server closes."""

    def __init__(self, proxy_port: int, paths: list[str], modified_since: float, cafile: Path):
        self.proxy_port, self.paths, self.modified_since = proxy_port, paths, modified_since
        self.cafile = cafile

    def context(self, version: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cafile))
        pinned = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
        context.minimum_version = context.maximum_version = pinned
        return context

    def request(
        self, path: str, context: ssl.SSLContext | None, session: ssl.SSLSession | None
    ) -> tuple[int, ssl.SSLSession | None, bool]:
        """(status, the session to resume with next, whether this one was resumed)."""
        raw = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=10)
        sock: socket.socket = raw
        if context is not None:
            sock = context.wrap_socket(raw, server_hostname=DEPOT_HOST, session=session)
        with sock:
            sock.sendall(get_url_request(DEPOT_HOST, path, self.modified_since, False))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            status = int(answer.split(b" ", 2)[1]) if answer else 0
            if isinstance(sock, ssl.SSLSocket):
                return status, sock.session, sock.session_reused
            return status, None, False

    def run(self, variant: TlsVariant, context: ssl.SSLContext | None, saved: list) -> dict:
        """One sync; SAVED holds the session persisted across syncs (variant `across`)."""
        session = saved[0] if variant.resume == "across" and saved else None
        statuses, resumed = [], []
        for path in self.paths[: variant.requests]:
            status, new_session, reused = self.request(path, context, session)
            statuses.append(status)
            resumed.append(reused)
            if variant.resume in ("within", "across"):
                session = new_session
        if variant.resume == "across":
            saved[:] = [session]
        return {"statuses": statuses, "resumed": resumed}


def measure_variant(
    variant: TlsVariant, ports: dict[str, int], paths: list[str], cafiles: dict, repeats: int
) -> dict[str, Any]:
    key = variant.scheme if variant.scheme == "http" else f"{variant.certificate}"
    key += "" if variant.tickets else "-notickets"
    proxy = CountingProxy(ports[key])
    try:
        sync = IdleSync(
            proxy.port, paths, time.time() + 5, cafiles.get(variant.certificate, Path())
        )
        context = sync.context(variant.version) if variant.scheme == "https" else None
        saved: list = []
        if variant.resume == "across":
            sync.run(variant, context, saved)  # an earlier sync left a session behind
            proxy.take()
        runs = []
        for _ in range(repeats):
            outcome = sync.run(variant, context, saved)
            flows = proxy.take()
            runs.append((outcome, flows))
    finally:
        proxy.close()
    return _variant_figures(variant, runs)


def _variant_figures(variant: TlsVariant, runs: list) -> dict[str, Any]:
    totals = [
        (sum(f.bytes("up") + f.bytes("down") for f in flows), outcome, flows)
        for outcome, flows in runs
    ]
    totals.sort(key=lambda item: item[0])
    total, outcome, flows = totals[len(totals) // 2]  # the median sync
    packets = sum(flow.segments for flow in flows)
    return {
        "variant": variant.name,
        "scheme": variant.scheme,
        "certificate": variant.certificate or None,
        "tls": variant.version or None,
        "requests": variant.requests,
        "resume": variant.resume,
        "server_tickets": variant.tickets,
        "statuses": outcome["statuses"],
        "resumed": outcome["resumed"],
        "negotiated": sorted({str(negotiated_tls(flow)) for flow in flows}),
        "bytes_up": sum(flow.bytes("up") for flow in flows),
        "bytes_down": sum(flow.bytes("down") for flow in flows),
        "bytes_above_tcp": total,
        "packets": packets,
        "bytes_on_wire_ipv4": total + packets * IPV4_TCP_HEADER,
        "bytes_on_wire_ipv6": total + packets * IPV6_TCP_HEADER,
        "per_connection_above_tcp": [f.bytes("up") + f.bytes("down") for f in flows],
        "spread_above_tcp": [totals[0][0], totals[-1][0]],
    }


def on_cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes' threads, in nanoseconds' precision (schedstat), where the
    clock-tick counters of /proc/<pid>/stat are too coarse for a few hundred requests."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def nginx_cpu_per_request(
    nginx: Nginx, port: int, count: int, cafile: Path | None = None, version: str = ""
) -> float:
    """nginx CPU microseconds per idle request (a new connection each, straight to nginx;
    with CAFILE a full TLS handshake each), COUNT in a row."""
    path = f"{DEPOT_PREFIX}/channels/{CHANNEL}.json"
    sync = IdleSync(port, [path], time.time() + 5, cafile or Path())
    context = sync.context(version) if cafile else None
    before = on_cpu_seconds(nginx.pids())
    for _ in range(count):
        sync.request(path, context, None)
    used = on_cpu_seconds(nginx.pids()) - before
    return round(used / count * 1e6, 1)


def measure_tls(settings: Settings, depot: Path, work: Path) -> dict[str, Any]:
    """Every variant's idle sync through a counting proxy, against one nginx (HTTP and an
    HTTPS server per certificate kind), and nginx's CPU per full-handshake request."""
    pki = work / "pki"
    pki.mkdir(parents=True)
    certificates, cafiles, sites = {}, {}, []
    for kind in ("ecdsa", "rsa"):
        ca, certificate, key, der = make_pki(pki, kind)
        certificates[kind], cafiles[kind] = der, ca
        sites.append(TlsSite(kind, free_port(), certificate, key))
        if kind == "ecdsa":
            sites.append(TlsSite("ecdsa-notickets", free_port(), certificate, key, tickets=False))
    log("the idle sync on the wire: HTTP and HTTPS variants")
    nginx = Nginx(work / "nginx-tls", depot, 1, sites)
    nginx.start()
    try:
        ports = {"http": nginx.port, **{site.name: site.port for site in sites}}
        paths = [f"{DEPOT_PREFIX}/channels/{CHANNEL}.json{suffix}" for suffix in ("", ".sig")]
        variants = [
            measure_variant(variant, ports, paths, cafiles, settings.tls_repeats)
            for variant in tls_variants()
        ]
        count = settings.tls_cpu_requests
        cpu = {"http": nginx_cpu_per_request(nginx, nginx.port, count)}
        for kind in ("ecdsa", "rsa"):
            for version in ("1.3", "1.2"):
                cpu[f"{kind}_tls{version}"] = nginx_cpu_per_request(
                    nginx, ports[kind], count, cafiles[kind], version
                )
    finally:
        nginx.stop()
    return {
        "server_certificate_der_bytes": certificates,
        "variants": variants,
        "nginx_cpu_us_per_idle_request": cpu,
        "cpu_requests_each": settings.tls_cpu_requests,
        "note": (
            "bytes above TCP (TLS records and HTTP) are counted at the proxy; packets are the "
            f"TCP segments of the truck's side of it (TCP_INFO; MSS {MSS}, as on a 1500-byte "
            f"MTU), each with {IPV4_TCP_HEADER} bytes of IPv4 + TCP headers ({IPV6_TCP_HEADER} "
            "with IPv6); SYNs carry a few bytes more of options"
        ),
    }
