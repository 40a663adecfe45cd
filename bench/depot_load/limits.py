"""Client limits: open files for thousands of connections, the kernel's port range and
backlog, and the sockets left in TIME_WAIT."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path
from typing import Any


def raise_open_files(needed: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft if soft >= needed else min(hard, max(needed, soft))
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    backlog = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    return {
        "open_files_before": soft,
        "open_files_after": wanted,
        "open_files_hard": hard,
        "open_files_needed": needed,
        "local_port_range": [int(ports[0]), int(ports[1])],
        "somaxconn": int(backlog),
    }


def time_wait_sockets() -> int:
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as table:
            count += sum(1 for line in table if line.split()[3:4] == ["06"])
    return count
