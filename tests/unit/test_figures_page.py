"""scripts/figures.py turns the runs' figures files into docs/figures.md: the page names no path
of the machine it was made on, even when a figure recorded one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "figures.py"


def load_figures_script():
    spec = importlib.util.spec_from_file_location("figures_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_recorded_absolute_path_is_written_relative_to_the_repository(tmp_path) -> None:
    figures = tmp_path / "build" / "figures"
    figures.mkdir(parents=True)
    bundle = tmp_path / "build" / "mqtt-retrain" / "bundle"
    (figures / "arm64-image.json").write_text(json.dumps({"bundle": f"{bundle} accepted"}))
    page = load_figures_script().render(tmp_path)
    assert str(tmp_path) not in page
    assert "build/mqtt-retrain/bundle accepted" in page
    assert "`make test-arm64`" not in page  # `make test` writes it now
