"""The filter linkedge.edge.alert_for: chosen `for:` durations on LinkEdge's rule file, checked
by promtool, and clear errors for a name or duration that is wrong."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from . import fakes_docker  # noqa: F401  (puts the collection on sys.path)

RULES = (
    Path(__file__).resolve().parents[2] / "roles" / "monitoring" / "files" / "linkedge-rules.yml"
)


def alert_for():
    from ansible_collections.linkedge.edge.plugins.filter.alerting import alert_for

    return alert_for


def rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def durations(document: dict) -> dict[str, str]:
    return {
        rule["alert"]: rule.get("for")
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_only_the_named_rules_change_and_promtool_accepts_the_result(tmp_path: Path) -> None:
    shipped = rules()
    changed = alert_for()(shipped, {"LinkEdgeDriftAboveThreshold": "30s"})
    assert durations(changed) == durations(shipped) | {"LinkEdgeDriftAboveThreshold": "30s"}
    assert durations(shipped)["LinkEdgeDriftAboveThreshold"] == "10m"  # input untouched
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing: apt-get install prometheus (make test-tools)")
    written = tmp_path / "rules.yml"
    written.write_text(yaml.safe_dump(changed, sort_keys=False))
    check = subprocess.run([promtool, "check", "rules", written], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"LinkEdgeNoSuchAlert": "1m"}, "no alert rule named LinkEdgeNoSuchAlert; the rules are"),
        ({"LinkEdgeTruckStale": "ten minutes"}, "'ten minutes' is not a Prometheus duration"),
        (["LinkEdgeTruckStale"], "give the durations as a mapping"),
    ],
)
def test_a_wrong_name_or_duration_is_named(overrides, message: str) -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=message):
        alert_for()(rules(), overrides)
