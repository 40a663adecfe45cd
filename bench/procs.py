"""CPU time and memory of a server's process tree, read from /proc.

Container processes are host processes too, so the same code measures the LinkEdge
container (its root process and the gunicorn workers) and MLServer (its frontend and
inference workers). Memory is PSS from smaps_rollup: pages shared by a preloading master and
its forked workers count once in total, which RSS would count once per process.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return sorted(tree)


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process still alive."""
    times = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two samples (a process born in between counts from zero)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def system_busy_seconds() -> float:
    """CPU seconds all processes of the machine used so far (all cores, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(value) for value in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS


@dataclass(frozen=True)
class Memory:
    pss_kib: int
    rss_kib: int
    processes: list[dict[str, int | str]]
    # PSS by kind of page. File pages (libraries, the model file) are dropped and read back
    # as the kernel reclaims them; anonymous and shmem pages (the heap, the metric files)
    # are what a leak would grow.
    pss_anon_kib: int = 0
    pss_file_kib: int = 0
    pss_shmem_kib: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "pss_mib": round(self.pss_kib / 1024, 1),
            "rss_sum_mib": round(self.rss_kib / 1024, 1),
            "pss_anon_mib": round(self.pss_anon_kib / 1024, 1),
            "pss_file_mib": round(self.pss_file_kib / 1024, 1),
            "pss_shmem_mib": round(self.pss_shmem_kib / 1024, 1),
            "processes": self.processes,
        }


def memory(pids: list[int]) -> Memory:
    pss = rss = anon = file = shmem = 0
    processes: list[dict[str, int | str]] = []
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        values = {}
        for line in rollup.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                values[parts[0].rstrip(":")] = int(parts[1])
        pss += values.get("Pss", 0)
        rss += values.get("Rss", 0)
        anon += values.get("Pss_Anon", 0)
        file += values.get("Pss_File", 0)
        shmem += values.get("Pss_Shmem", 0)
        processes.append(
            {
                "pid": pid,
                "name": name,
                "pss_kib": values.get("Pss", 0),
                "rss_kib": values.get("Rss", 0),
                "pss_anon_kib": values.get("Pss_Anon", 0),
            }
        )
    return Memory(pss, rss, processes, anon, file, shmem)


def stop_process(process: subprocess.Popen, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after ``timeout`` s; whether it stopped on SIGTERM (or had
    already stopped)."""
    if process.poll() is not None:
        return True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
