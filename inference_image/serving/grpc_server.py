"""The gRPC server of one gunicorn worker (LINKEDGE_GRPC_PORT), beside its HTTP event loop.

Every worker runs its own ``grpc.server`` on the same address with ``SO_REUSEPORT`` (as the
HTTP socket on a truck), so the kernel spreads new gRPC connections over the workers, and a
new container binds the port beside the old one for a handover. An HTTP/2 connection stays
with the worker that accepted it, so one client channel is served by one worker.

Stopping without failing an RPC: grpcio's ``stop()`` cancels every RPC that reached the
server but was not yet taken by a handler thread (CANCELLED at the client), and a kept-open
client channel keeps sending to the old server until it reads the GOAWAY. So on SIGTERM the
worker first stops listening (the kernel moves connections still queued on its socket to the
other server with ``net.ipv4.tcp_migrate_req``), keeps serving while every connection it has
reaches its maximum age (``MAX_CONNECTION_AGE_MS``: grpcio then sends a graceful GOAWAY and
finishes the RPCs on it, and the client reconnects, to the new server), and only then stops.
Connections are recycled at that age all the time; a client channel reconnects without
failing an RPC.

grpcio is imported here only, in the worker after the fork: gRPC's threads must not exist in
the gunicorn master that forks the workers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# The RPCs of a worker run one at a time, as its HTTP requests do: a prediction is CPU-bound
# and the worker has one XGBoost thread.
GRPC_THREADS = 1
# Waiting RPCs beyond this get RESOURCE_EXHAUSTED at once instead of queueing without bound.
MAX_QUEUED_RPCS = 256
WORKER_BOOT_ERROR = 3  # gunicorn's arbiter halts (no restart loop) when a worker exits with it
# Every connection gets a graceful GOAWAY at this age (+-10 % jitter) and this long to finish
# its RPCs; a stopping worker serves for DRAIN_SECONDS before it stops.
MAX_CONNECTION_AGE_MS = 2000
MAX_CONNECTION_AGE_GRACE_MS = 5000
DRAIN_SECONDS = MAX_CONNECTION_AGE_MS * 1.1 / 1000 + 0.5


def stop_listening(port: int) -> int:
    """Shut down this process's listening TCP sockets on ``port`` (found among its open
    files): no new connection comes to them, and those queued move to another socket of the
    port. The descriptors stay open for grpcio to close. The number of sockets shut."""
    shut = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            duplicate = os.dup(int(name))
        except OSError:
            continue
        try:
            candidate = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            continue
        with candidate:
            try:
                listening = candidate.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                bound = candidate.getsockname()
            except OSError:
                continue
            if listening and isinstance(bound, tuple) and bound[1] == port:
                candidate.shutdown(socket.SHUT_RDWR)
                shut += 1
    return shut


@dataclass
class GrpcServer:
    server: Any
    address: str
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def request_stop(self, grace_seconds: float) -> threading.Event:
        """Stop without failing an RPC (see the module docstring), in a thread of its own:
        stop listening, serve for DRAIN_SECONDS, then stop; RPCs still running then get what
        is left of ``grace_seconds``. Returns an event set when the server has stopped."""
        stop_listening(self.port)
        drain = min(DRAIN_SECONDS, max(0.0, grace_seconds - 0.5))

        def drain_then_stop() -> None:
            time.sleep(drain)
            self.server.stop(max(0.5, grace_seconds - drain)).wait()
            self.stopped.set()

        threading.Thread(target=drain_then_stop, name="linkedge-grpc-stop", daemon=True).start()
        return self.stopped


def check_address(address: str) -> None:
    """ValueError naming LINKEDGE_GRPC_PORT unless ``address`` can be bound as the workers will
    bind it (with SO_REUSEPORT: a LinkEdge server handing over may hold it too). The master
    checks before it starts workers, without importing grpcio."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise ValueError(
                f"LINKEDGE_GRPC_PORT: cannot listen on {address}: {exc.strerror}; choose a free "
                "port, or set it empty to serve without gRPC"
            ) from None


def start_grpc(wsgi_app: Any, logger: Any) -> GrpcServer | None:
    """Start the worker's gRPC server when the app's config has a gRPC address; else None.
    A port that cannot be bound exits the worker with gunicorn's boot error (the server stops
    instead of restarting workers in a loop), after one line in the log saying why."""
    linkedge = wsgi_app.extensions["linkedge"]
    config = linkedge["config"]
    if config.grpc_address is None:
        return None
    import grpc

    from . import grpc_schema
    from .grpc_endpoints import GrpcEndpoints

    rpcs = GrpcEndpoints(linkedge["bundle"], linkedge["endpoints"], linkedge["metrics"], config)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=GRPC_THREADS, thread_name_prefix="linkedge-grpc"),
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
            ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ],
        maximum_concurrent_rpcs=MAX_QUEUED_RPCS,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(grpc_schema.SERVICE, rpcs.handlers()),)
    )
    try:
        server.add_insecure_port(config.grpc_address)
    except RuntimeError as exc:
        logger.error("gRPC: cannot listen on %s (%s); stopping", config.grpc_address, exc)
        raise SystemExit(WORKER_BOOT_ERROR) from None
    server.start()
    logger.info("gRPC: listening on %s", config.grpc_address)
    return GrpcServer(server, config.grpc_address)
