"""linkedge_container_cpu_seconds_total and linkedge_container_memory_bytes from the
container's cgroup, v2 and v1 layouts (the files as the kernel writes them)."""

from __future__ import annotations

from pathlib import Path

from inference_image.serving.metrics import ContainerCollector


def samples(root: Path) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in ContainerCollector(root).collect()
        for sample in family.samples
    }


def test_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text(
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n"
    )
    (tmp_path / "memory.current").write_text("123456789\n")
    assert samples(tmp_path) == {
        "linkedge_container_cpu_seconds_total": 2.5,
        "linkedge_container_memory_bytes": 123456789,
    }


def test_cgroup_v1(tmp_path: Path) -> None:
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("31996654\n")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text("1536000\n")
    figures = samples(tmp_path)
    assert abs(figures["linkedge_container_cpu_seconds_total"] - 0.031996654) < 1e-12
    assert figures["linkedge_container_memory_bytes"] == 1536000


def test_no_cgroup_files_no_metrics(tmp_path: Path) -> None:
    assert samples(tmp_path) == {}
