"""``python -m bench.depot_load``: pull mode at scale, by simulation, and the idle cost of a sync
on a cellular link (docs/pull-at-scale.md).

It starts a real depot on the loopback: Debian's nginx serving a depot directory the real CLI
published into (``linkedge-image channel publish`` / ``promote``), and Debian's docker-registry
holding a v1 and a v2 image that differ only in their model layer. Then thousands of
lightweight asyncio pollers (not trucks) do what a truck's sync does, in compressed time:

- **herd**: every poller's first sync at the same moment (nothing cached yet: two 200s);
- **idle**: each poller on its own timer (the interval plus a uniform random delay, as
  systemd's ``RandomizedDelaySec``), two conditional GETs with ``If-Modified-Since`` on a new
  connection each, as ``ansible.builtin.get_url`` sends them: 304s;
- **update**: the channel is promoted to v2 with the real CLI; on its next poll each poller
  gets the new pointer, fetches ``manifest.json`` and its signature, then does what a Docker
  engine does against the registry for a model-only update (``/v2/``, the manifest by tag, the
  config blob, the one layer it lacks), checked as a truck checks (signatures, digests, image ID).

Then the idle cost of one sync on the truck's link: bytes counted at a TCP proxy for the two
conditional GETs over HTTPS (ECDSA P-256 and RSA-2048 certificates, TLS 1.3 and 1.2, full
handshakes and resumed sessions) and plain HTTP; and a real Mosquitto bridge over TLS through
the same kind of proxy (its keep-alive, one status publish).

Writes ``<out>/<name>.json`` and ``.md`` (default ``bench/results/depot-load.*``). Exit status:
0 when every request was answered as expected and every poller converged, 1 when there were
errors or pollers that did not converge, 2 when it could not run.

The modules, in the order of a run: ``settings`` (constants, Settings, the log), ``images``
and ``depot`` (what is published), ``servers`` (nginx, docker-registry), ``http``, ``fleet``
and ``phases`` (the pollers and the herd, idle and update phases), ``cpu`` and ``limits``,
``depot_logs``, ``stats`` and ``summaries`` (the figures), ``ims_probe``, ``pki``, ``proxy``
and ``tls`` (the idle sync on the wire), ``mqtt`` (the bridge), ``budget`` (per month and per
fleet), ``run`` (the whole run), ``report`` (the markdown) and ``cli`` (the command line).
"""

from __future__ import annotations

from .cli import build_parser, main
from .report import markdown
from .settings import Settings, SetupError

__all__ = ["Settings", "SetupError", "build_parser", "main", "markdown"]
