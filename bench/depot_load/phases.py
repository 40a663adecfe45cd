"""The run's phases: the herd (every first sync at once), idle (each poller on its timer),
the update (a promote with the real CLI, then every poller on v2), and a new truck's full
pull."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from .cpu import CpuWatch
from .depot import Published, promote
from .fleet import Fleet, Poller
from .images import Image
from .limits import time_wait_sockets
from .servers import Nginx, Registry
from .settings import CHANNEL, SOURCE_CHANNEL, Settings, log


@dataclass
class Timeline:
    herd: tuple[float, float] = (0.0, 0.0)
    idle: tuple[float, float] = (0.0, 0.0)
    update: tuple[float, float] = (0.0, 0.0)
    promoted_at: float = 0.0  # the new pointer's mtime: when trucks could see it
    promote_seconds: float = 0.0
    signature_at: float = 0.0


async def run_fleet(
    settings: Settings, nginx: Nginx, registry: Registry, published: Published, images: dict
) -> tuple[list[Poller], Fleet, Timeline, CpuWatch, dict[str, int]]:
    fleet = Fleet(settings, nginx.port, registry.port, published.public_key)
    v1 = images["v1"]
    held = {v1.config.digest, *(layer.digest for layer in v1.layers)}
    pollers = [Poller(i, fleet, v1.version, held) for i in range(settings.pollers)]
    watch, timeline, time_wait = CpuWatch(nginx, registry), Timeline(), {"max": 0}
    sampler = asyncio.create_task(watch.run())
    counter = asyncio.create_task(_count_time_wait(time_wait))
    try:
        await _herd(pollers, timeline, watch)
        await _idle_and_update(settings, fleet, pollers, published, timeline, watch)
    finally:
        fleet.stopping = True
        sampler.cancel()
        counter.cancel()
        watch.mark()
    return pollers, fleet, timeline, watch, time_wait


async def _count_time_wait(into: dict[str, int]) -> None:
    while True:
        into["max"] = max(into["max"], await asyncio.to_thread(time_wait_sockets))
        await asyncio.sleep(2.0)


async def _herd(pollers: list[Poller], timeline: Timeline, watch: CpuWatch) -> None:
    log(f"herd: {len(pollers)} first syncs at once")
    watch.mark()
    started = time.time()
    await asyncio.gather(*(poller.sync() for poller in pollers))
    watch.mark()
    timeline.herd = (started, time.time())


async def _idle_and_update(
    settings: Settings,
    fleet: Fleet,
    pollers: list[Poller],
    published: Published,
    timeline: Timeline,
    watch: CpuWatch,
) -> None:
    await asyncio.sleep(1.0)
    idle_start = time.time()
    idle_end = idle_start + settings.idle_cycles * settings.mean_period
    deadline = idle_end + settings.max_period * 1.15 + 10 * settings.request_gap + 10
    rng = random.Random(settings.seed)
    tasks = [
        asyncio.create_task(
            poller.timer(idle_start + rng.uniform(0, settings.mean_period), deadline)
        )
        for poller in pollers
    ]
    log(f"idle: {settings.idle_cycles:g} cycle(s) of {settings.mean_period:.1f} s")
    await asyncio.sleep(max(0.0, idle_end - time.time()))
    watch.mark()
    timeline.idle = (idle_start, time.time())
    log(f"update: promote {SOURCE_CHANNEL} -> {CHANNEL} (the real CLI)")
    await asyncio.to_thread(promote, published)
    pointer = published.root / "channels" / f"{CHANNEL}.json"
    timeline.promoted_at = pointer.stat().st_mtime
    timeline.signature_at = pointer.with_name(pointer.name + ".sig").stat().st_mtime
    timeline.promote_seconds = round(time.time() - timeline.idle[1], 2)
    while time.time() < deadline and any(p.converged_at is None for p in pollers):
        await asyncio.sleep(0.2)
    watch.mark()
    timeline.update = (timeline.idle[1], time.time())
    fleet.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def full_pull(settings: Settings, fleet: Fleet, image: Image) -> dict[str, Any]:
    """A new truck (an engine holding nothing): the whole image from the registry."""
    newcomer = Poller(settings.pollers, fleet, "", set())
    first, started = len(fleet.exchanges), time.time()
    asyncio.run(newcomer._pull(image.version, image.image_id))
    records = fleet.exchanges[first:]
    del fleet.exchanges[first:]
    return {
        "requests": len(records),
        "bytes": sum(record.up + record.down for record in records),
        "blob_bytes": len(image.config.data) + sum(len(layer.data) for layer in image.layers),
        "seconds_on_loopback": round(time.time() - started, 2),
    }
