"""The simulated fleet: what the pollers share, and one poller: a truck's sync (pointer,
manifest, the engine's pull) on its timer."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from .depot import signature_verifies
from .http import Exchange, FetchError, Response, engine_request, get_url_request, read_response
from .images import sha256_hex
from .settings import CHANNEL, DEPOT_PREFIX, MANIFEST_ACCEPT, REPOSITORY, Settings


@dataclass
class CachedFile:
    data: bytes
    mtime: float  # when get_url wrote it: the download's end (its If-Modified-Since)


@dataclass
class Fleet:
    """What every poller shares: where the depot is, what to trust, what was recorded."""

    settings: Settings
    depot_port: int
    registry_port: int
    public_key: bytes
    exchanges: list[Exchange] = field(default_factory=list)
    lags: list[tuple[float, float]] = field(default_factory=list)  # (scheduled, late by)
    stopping: bool = False

    @property
    def depot_host(self) -> str:
        return f"127.0.0.1:{self.depot_port}"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"


@dataclass
class SyncCost:
    bytes_nginx: int = 0
    bytes_registry: int = 0
    requests: int = 0


class Poller:
    """One simulated truck's sync (roles/edge_manager/tasks/sync_pointer.yml, sync_release.yml
    with edge_manager_registry set): what it asks, in that order, on new connections."""

    def __init__(self, index: int, fleet: Fleet, version: str, blobs: set[str]):
        self.index, self.fleet = index, fleet
        self.rng = random.Random(fleet.settings.seed * 1_000_003 + index)
        self.cache: dict[str, CachedFile] = {}
        self.version = version  # the version it serves
        self.blobs = set(blobs)  # the engine's blobs (layers and configs)
        self.converged_at: float | None = None
        self.update_cost: SyncCost | None = None
        self.failures: list[str] = []
        self.refetches = 0

    # one request ---------------------------------------------------------------------------

    async def _depot_get(self, kind: str, path: str, force: bool, keep: bool) -> Response:
        cached = self.cache.get(path)
        modified_since = cached.mtime if cached and not force else None
        request = get_url_request(self.fleet.depot_host, path, modified_since, force)
        return await self._exchange(kind, "nginx", request, keep)

    async def _exchange(self, kind: str, engine: str, request: bytes, keep: bool) -> Response:
        settings, started = self.fleet.settings, time.time()
        record = Exchange(self.index, kind, engine, started, started, 0, len(request), 0)
        port = self.fleet.depot_port if engine == "nginx" else self.fleet.registry_port
        try:
            async with asyncio.timeout(settings.fetch_timeout):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(request)
                    response = await read_response(reader, keep)
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            record.ended, record.error = time.time(), f"{type(exc).__name__}: {exc}"[:200]
            self.fleet.exchanges.append(record)
            raise FetchError(f"{kind}: {record.error}") from None
        record.ended, record.status, record.down = time.time(), response.status, response.down
        self.fleet.exchanges.append(record)
        return response

    async def _fetch(self, kind: str, path: str, force: bool = False) -> bytes:
        """get_url with retries (edge_manager_fetch_retries): the file's bytes, from the
        answer (200) or the cache (304)."""
        settings = self.fleet.settings
        for attempt in range(settings.fetch_retries + 1):
            try:
                response = await self._depot_get(kind, path, force, keep=True)
            except FetchError:
                if attempt == settings.fetch_retries:
                    raise
                await asyncio.sleep(settings.fetch_delay)
                continue
            if response.status == 304 and path in self.cache:
                return self.cache[path].data
            if response.status == 200 and response.body is not None:
                cached = self.cache.get(path)
                if cached is None or cached.data != response.body:  # get_url keeps a same copy
                    self.cache[path] = CachedFile(response.body, time.time())
                return response.body
            if attempt == settings.fetch_retries:
                raise FetchError(f"{kind}: HTTP {response.status}")
            await asyncio.sleep(settings.fetch_delay)
        raise FetchError(f"{kind}: no attempt")  # not reached

    # the sync ------------------------------------------------------------------------------

    async def _pair(self, force: bool) -> tuple[bytes, bytes]:
        """The role's requests (sync_pointer.yml): the pointer (If-Modified-Since unless
        forced), then its signature only with a new pointer or when none is cached."""
        prefix = f"{DEPOT_PREFIX}/channels/{CHANNEL}.json"
        suffix = "_refetch" if force else ""
        before = self.cache.get(prefix)
        pointer = await self._fetch(f"pointer{suffix}", prefix, force)
        cached_signature = self.cache.get(prefix + ".sig")
        if not force and cached_signature is not None and self.cache.get(prefix) is before:
            return pointer, cached_signature.data
        await asyncio.sleep(self.fleet.settings.request_gap)  # the next get_url run
        signature = await self._fetch(f"pointer_signature{suffix}", prefix + ".sig", True)
        return pointer, signature

    async def _verified_pointer(self) -> dict[str, Any]:
        pointer, signature = await self._pair(force=False)
        if not signature_verifies(self.fleet.public_key, pointer, signature):
            # channels.md: a poll between the two renames; fetch both again once.
            self.refetches += 1
            await asyncio.sleep(self.fleet.settings.request_gap)
            pointer, signature = await self._pair(force=True)
            if not signature_verifies(self.fleet.public_key, pointer, signature):
                raise FetchError("bad_signature")
        return json.loads(pointer)

    async def sync(self) -> str:
        before = len(self.fleet.exchanges)
        try:
            pointer = await self._verified_pointer()
            if pointer["version"] == self.version:
                outcome = "unchanged"
            else:
                await self._update(pointer)
                self.update_cost = self._cost_since(before)
                outcome = "updated"
        except FetchError as exc:
            self.failures.append(exc.reason)
            outcome = "failed"
        except (ValueError, KeyError, TypeError) as exc:
            self.failures.append(f"malformed: {type(exc).__name__}")
            outcome = "failed"
        return outcome

    def _cost_since(self, first: int) -> SyncCost:
        cost = SyncCost()
        for record in self.fleet.exchanges[first:]:
            if record.poller != self.index:
                continue
            cost.requests += 1
            if record.engine == "nginx":
                cost.bytes_nginx += record.up + record.down
            else:
                cost.bytes_registry += record.up + record.down
        return cost

    async def _update(self, pointer: dict[str, Any]) -> None:
        release = f"{DEPOT_PREFIX}/{pointer['manifest_path'].rsplit('/', 1)[0]}"
        await asyncio.sleep(self.fleet.settings.request_gap)
        manifest = await self._fetch("manifest", f"{release}/manifest.json")
        if sha256_hex(manifest) != pointer["manifest_sha256"]:
            raise FetchError("checksum_mismatch: manifest.json")
        await asyncio.sleep(self.fleet.settings.request_gap)
        signature = await self._fetch("manifest_signature", f"{release}/manifest.json.sig", True)
        if not signature_verifies(self.fleet.public_key, manifest, signature):
            raise FetchError("bad_signature: manifest.json")
        document = json.loads(manifest)
        await asyncio.sleep(self.fleet.settings.request_gap)
        await self._pull(document["version"], document["image_id"])
        self.version = document["version"]
        self.converged_at = time.time()

    async def _pull(self, tag: str, image_id: str) -> None:
        """The engine's pull of a tag over one keep-alive connection: ping, manifest, then
        the config and every layer it lacks, each checked against its digest."""
        host, settings = self.fleet.registry_host, self.fleet.settings
        try:
            async with asyncio.timeout(settings.fetch_timeout * 4):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.fleet.registry_port
                )
                try:
                    await self._on(reader, writer, "registry_ping", engine_request(host, "/v2/"))
                    path = f"/v2/{REPOSITORY}/manifests/{tag}"
                    request = engine_request(host, path, MANIFEST_ACCEPT)
                    answer = await self._on(reader, writer, "registry_manifest", request, True)
                    manifest = json.loads(answer.body or b"{}")
                    if manifest["config"]["digest"] != image_id:
                        raise FetchError("image_id_mismatch")
                    wanted = [("registry_config", manifest["config"])]
                    wanted += [("registry_layer", layer) for layer in manifest["layers"]]
                    for kind, descriptor in wanted:
                        if descriptor["digest"] in self.blobs:
                            continue
                        path = f"/v2/{REPOSITORY}/blobs/{descriptor['digest']}"
                        request = engine_request(host, path)
                        answer = await self._on(reader, writer, kind, request)
                        if "sha256:" + answer.digest != descriptor["digest"]:
                            raise FetchError(f"{kind}: digest mismatch")
                        self.blobs.add(descriptor["digest"])
                finally:
                    writer.close()
        except (OSError, TimeoutError, ValueError, KeyError, asyncio.IncompleteReadError) as exc:
            raise FetchError(f"registry: {type(exc).__name__}: {exc}"[:200]) from None

    async def _on(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        kind: str,
        request: bytes,
        keep: bool = False,
    ) -> Response:
        """One request on the engine's open connection, recorded."""
        started = time.time()
        record = Exchange(self.index, kind, "registry", started, started, 0, len(request), 0)
        writer.write(request)
        try:
            response = await read_response(reader, keep)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            record.ended, record.error = time.time(), f"{type(exc).__name__}: {exc}"[:200]
            self.fleet.exchanges.append(record)
            raise
        record.ended, record.status, record.down = time.time(), response.status, response.down
        self.fleet.exchanges.append(record)
        if response.status != 200:
            raise FetchError(f"{kind}: HTTP {response.status}")
        return response

    # the timer -----------------------------------------------------------------------------

    async def timer(self, first: float, until: float) -> None:
        """linkedge-edge-sync.timer: OnUnitActiveSec=interval, RandomizedDelaySec=delay."""
        settings, due = self.fleet.settings, first
        while due < until and not self.fleet.stopping:
            await asyncio.sleep(max(0.0, due - time.time()))
            if self.fleet.stopping:
                return
            started = time.time()
            self.fleet.lags.append((due, started - due))
            await self.sync()
            due = started + settings.interval + self.rng.uniform(0.0, settings.delay)
