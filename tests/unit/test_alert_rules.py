"""The fleet's alert rules (roles/monitoring/files): checked and unit-tested by Debian's promtool,
and every LinkEdge metric they read is one the served model really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from inference_image.bundle import ModelBundle
from inference_image.serving.app import create_app
from inference_image.serving.capture import CaptureSettings
from inference_image.serving.config import ServingConfig
from tests.conftest import synthetic_aps

from .fakes_docker import module_utils
from .test_app import metric_samples, post_json
from .test_drift_metrics import records

outcome = module_utils("outcome")
RULES_DIR = Path(__file__).resolve().parents[2] / "roles" / "monitoring" / "files"
RULES = RULES_DIR / "linkedge-rules.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is missing: apt-get install prometheus (make test-tools)")
    return binary


def test_promtool_checks_the_rules_and_passes_their_tests(promtool: str) -> None:
    check = subprocess.run([promtool, "check", "rules", RULES], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout
    test = subprocess.run(
        [promtool, "test", "rules", RULES_DIR / "linkedge-rules.test.yml"],
        capture_output=True,
        text=True,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_linkedge_metric_the_rules_read_is_served(
    tiny_bundle: ModelBundle, tmp_path: Path
) -> None:
    read = set(re.findall(r"\b(linkedge_[a-z_]+)\b", RULES.read_text()))
    assert {"linkedge_drift_psi_max", "linkedge_capture_spool_bytes"} <= read
    read -= {"linkedge_capture_dir"}  # LINKEDGE_CAPTURE_DIR, in a description
    config = ServingConfig(capture=CaptureSettings(tmp_path, budget_bytes=1 << 22))
    client = create_app(tiny_bundle, config).test_client()
    rows, _ = synthetic_aps(200, seed=5)
    assert post_json(client, "/predict", {"instances": records(rows)}).status_code == 200
    served = {name for name, _ in metric_samples(client)}
    # linkedge_truck_*: the outcome record's textfile, for the node exporter.
    record = {"serving_version": "v2", "new_version": "v3", "outcome": "failed", "finished_at": 1.0}
    record["sequence"] = 3
    textfile = outcome.prometheus_text(record)
    served |= set(re.findall(r"^(linkedge_truck_[a-z_]+)", textfile, re.MULTILINE))
    assert read <= served, sorted(read - served)


def test_a_run_that_learned_no_version_writes_no_wanted_version() -> None:
    """A deferred sync (or the depot down) knows no wanted version: no linkedge_truck_wanted_info
    series, so LinkEdgeVersionDiffersFromChannel stays quiet (its promtool case truck-13)."""
    deferred = outcome.prometheus_text({"serving_version": "v2", "outcome": "deferred"})
    assert "linkedge_truck_serving_info" in deferred
    assert "linkedge_truck_wanted_info" not in deferred
    wanted = outcome.prometheus_text({"serving_version": "v2", "new_version": "v3"})
    assert 'linkedge_truck_wanted_info{version="v3",channel=""} 1' in wanted
