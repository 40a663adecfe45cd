"""The paired gate: the rule, where each side's figures come from, and `compare` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference_image import contenders
from inference_image.contenders import (
    LEGACY_VALUES,
    ContenderError,
    figures_on_plan,
    load_contender,
    params_from_record,
    plan_of,
)
from inference_image.evaluation import CVPlan
from inference_image.gate import Figures, GateError, paired_comparison
from inference_image.training import TrainingParams

from .aps_files import synthetic_aps, write_aps_file

REPO = Path(__file__).resolve().parents[2]
CHAMPION = (0.080, 0.118, 0.108, 0.108, 0.098)


def figures(ratios, digest: str = "plan-a", model: str = "m") -> Figures:
    return Figures(model, tuple(ratios), digest, "test")


def test_a_clearly_worse_challenger_is_refused_with_both_figures():
    worse = np.add(CHAMPION, (0.030, 0.026, 0.034, 0.029, 0.031))
    comparison = paired_comparison(figures(CHAMPION, model="old"), figures(worse, model="new"))
    assert comparison.refused
    assert comparison.mean_difference == pytest.approx(0.030)
    reason = comparison.reason()
    assert "challenger new 0.1324 ± 0.0138" in reason
    assert "champion old 0.1024 ± 0.0144" in reason
    assert "refused" in reason and "\n" not in reason


def test_an_equal_challenger_is_accepted():
    comparison = paired_comparison(figures(CHAMPION), figures(CHAMPION))
    assert not comparison.refused
    assert comparison.mean_difference == 0 and comparison.std_error == 0
    assert comparison.verdict() == "accepted: within the noise"


def test_worse_within_the_noise_is_accepted_and_beyond_it_refused():
    # Paired differences +0.004 on average with SE 0.0024: within 2 x SE, beyond 1 x SE.
    noisy = np.add(CHAMPION, (0.012, -0.004, 0.008, -0.002, 0.006))
    assert not paired_comparison(figures(CHAMPION), figures(noisy)).refused
    assert paired_comparison(figures(CHAMPION), figures(noisy), noise_multiplier=1.0).refused


def test_the_pairing_uses_the_repetitions_not_the_spread_of_each_model():
    # Each model spreads over 0.04, yet the challenger is better in every repetition.
    better = np.subtract(CHAMPION, 0.005)
    comparison = paired_comparison(figures(CHAMPION), figures(better))
    assert comparison.verdict() == "accepted: better beyond the noise"


def test_figures_on_different_fold_plans_cannot_be_paired():
    with pytest.raises(GateError, match="different fold plans"):
        paired_comparison(figures(CHAMPION, "plan-a"), figures(CHAMPION, "plan-b"))
    with pytest.raises(GateError, match="at least 2 paired repetitions"):
        paired_comparison(figures([0.1]), figures([0.1]))


def test_a_card_without_newer_parameters_is_evaluated_as_it_was_trained():
    legacy = {"n_estimators": 300, "max_depth": 4, "seed": 42, "outer_folds": 5, "inner_folds": 3}
    params = params_from_record(legacy)
    for name, value in LEGACY_VALUES.items():
        assert getattr(params, name) == value
    assert params.max_depth == 4
    with pytest.raises(ContenderError, match="unknown to this version"):
        params_from_record({**legacy, "depth_of_the_future": 1})


def test_contender_from_json_parameters(tmp_path):
    contender = load_contender('{"max_depth": 2, "repetitions": 3}')
    assert contender.params.max_depth == 2 and contender.recorded is None
    assert plan_of(contender) == CVPlan(3, 5, 42)
    with pytest.raises(ContenderError, match="neither a bundle"):
        load_contender(str(tmp_path / "absent"))


@pytest.fixture(scope="module")
def data():
    features, labels = synthetic_aps(600, seed=11)
    return features, labels.astype(np.float32)


FAST = TrainingParams(
    n_estimators=10, max_depth=3, nthread=2, repetitions=2, outer_folds=3, inner_folds=2
)


def test_recorded_figures_are_reused_only_on_the_same_fold_plan(data, tmp_path, monkeypatch):
    features, labels = data
    plan = CVPlan(2, 3, 42)
    digest = plan.digest(labels, "d1")
    recorded = {
        "repetitions": 2,
        "outer_folds": 3,
        "seed": 42,
        "fold_plan_sha256": digest,
        "per_repetition": [{"cost_ratio": 0.5}, {"cost_ratio": 0.25}],
    }
    card = tmp_path / "model_card.json"
    card.write_text(json.dumps({"version": "v1", "parameters": {}, "metrics": {}}))
    champion = replace(load_contender(str(card)), recorded=recorded, params=FAST)
    assert plan_of(champion) == plan

    def no_training(*args, **kwargs):
        raise AssertionError("recorded figures must not be recomputed")

    monkeypatch.setattr(contenders, "repeated_nested_cv", no_training)
    reused = figures_on_plan(champion, plan, features, labels, "d1")
    assert reused.ratios == (0.5, 0.25) and reused.source == "recorded in the model card"
    monkeypatch.undo()
    other_data = figures_on_plan(champion, plan, features, labels, "d2")
    assert other_data.source.startswith("evaluated now")
    assert other_data.fold_plan_sha256 == plan.digest(labels, "d2")


def run_compare(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inference_image", "compare", "--data", str(data_dir), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def data_dir(data, tmp_path_factory) -> Path:
    features, labels = data
    directory = tmp_path_factory.mktemp("aps")
    write_aps_file(directory / "aps_failure_training_set.csv", features, labels)
    return directory


def _params(**changes: object) -> str:
    fast = {"n_estimators": 30, "max_depth": 3, "learning_rate": 0.3, "repetitions": 3}
    return json.dumps({**fast, "outer_folds": 3, "inner_folds": 2, **changes})


def test_compare_refuses_a_clearly_worse_configuration(data_dir):
    result = run_compare(
        data_dir,
        "--champion",
        _params(),
        "--challenger",
        _params(n_estimators=1, max_depth=1, colsample_bytree=0.02),  # a stump on noise
    )
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("linkedge-image compare: challenger ")
    assert "refused: worse beyond the noise" in line
    report = json.loads(result.stdout)
    assert report["refused"] and len(report["paired"]["differences"]) == 3
    assert report["champion"]["cost_ratio_mean"] < report["challenger"]["cost_ratio_mean"]


def test_compare_accepts_the_same_configuration(data_dir):
    result = run_compare(data_dir, "--champion", _params(), "--challenger", _params())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["paired"]["differences"] == [0.0, 0.0, 0.0]
    assert report["verdict"] == "accepted: within the noise"


def test_compare_of_unreadable_contenders_is_a_user_error(data_dir, tmp_path):
    result = run_compare(data_dir, "--champion", str(tmp_path / "x"), "--challenger", "{}")
    assert result.returncode == 2
    assert result.stderr.startswith("linkedge-image compare: ") and "neither a bundle" in (
        result.stderr
    )
