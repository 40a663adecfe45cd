"""A shadow model answers every observed request beside the model: its answers are never
returned, its agreement, probability differences and latency are on /metrics; a shadow that
cannot serve, or an observer that fails, never costs the model an answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inference_image.bundle import ModelBundle, load_bundle
from inference_image.serving.app import create_app
from inference_image.serving.capture import CaptureSettings
from inference_image.serving.config import ServingConfig
from tests.conftest import TINY_THRESHOLD, build_bundle, synthetic_aps

from .test_app import metric_samples, post_json
from .test_drift_metrics import records

HIGH_THRESHOLD = 0.99


@pytest.fixture(scope="module")
def strict_shadow(tmp_path_factory, tiny_model) -> ModelBundle:
    """The same trees with a stricter threshold: it says pos less often than the model."""
    probabilities = tiny_model["probabilities"]
    path = build_bundle(
        tmp_path_factory.mktemp("shadow") / "strict",
        tiny_model["model_json"],
        tiny_model["smoke_rows"],
        probabilities,
        threshold=HIGH_THRESHOLD,
        version="tiny-strict",
    )
    return load_bundle(path)


def rows_by(samples: dict, model: str, shadow: str) -> float:
    return samples.get(("linkedge_shadow_rows_total", (("model", model), ("shadow", shadow))), 0)


def test_the_shadow_is_compared_never_returned(tiny_bundle, strict_shadow) -> None:
    rows, _ = synthetic_aps(300, seed=13)
    body = {"instances": records(rows)}
    plain = create_app(tiny_bundle).test_client()
    shadowed = create_app(tiny_bundle, ServingConfig(shadow_bundle=strict_shadow.path))
    client = shadowed.test_client()
    expected = post_json(plain, "/predict", body).get_json()
    answer = post_json(client, "/predict", body).get_json()
    assert answer == expected  # the model's answers, untouched
    probabilities = np.array([p["probability"] for p in answer["predictions"]])
    model_pos = probabilities >= TINY_THRESHOLD
    shadow_pos = probabilities >= HIGH_THRESHOLD
    samples = metric_samples(client)
    assert samples[("linkedge_shadow_ready", (("version", "tiny-strict"),))] == 1
    assert rows_by(samples, "pos", "neg") == int((model_pos & ~shadow_pos).sum()) > 0
    assert rows_by(samples, "pos", "pos") == int((model_pos & shadow_pos).sum())
    assert rows_by(samples, "neg", "neg") == int((~model_pos).sum())
    assert rows_by(samples, "neg", "pos") == 0
    assert samples[("linkedge_shadow_probability_difference_count", ())] == 300
    assert samples[("linkedge_shadow_probability_difference_sum", ())] == 0  # the same trees
    assert samples[("linkedge_shadow_duration_seconds_count", ())] == 1  # one request


def test_a_shadow_that_cannot_serve_is_reported_and_the_model_serves(
    tiny_bundle, broken_bundle
) -> None:
    client = create_app(tiny_bundle, ServingConfig(shadow_bundle=broken_bundle.path)).test_client()
    rows, _ = synthetic_aps(20, seed=14)
    assert post_json(client, "/predict", {"instances": records(rows)}).status_code == 200
    samples = metric_samples(client)
    assert samples[("linkedge_shadow_ready", (("version", broken_bundle.version),))] == 0
    counted = [
        value for (name, _), value in samples.items() if name == "linkedge_shadow_rows_total"
    ]
    assert sum(counted) == 0
    missing = ServingConfig(shadow_bundle=Path("/nonexistent/bundle"))
    assert (
        post_json(
            create_app(tiny_bundle, missing).test_client(), "/predict", {"instances": records(rows)}
        ).status_code
        == 200
    )


def test_a_spool_that_went_away_loses_rows_counted_and_the_answers_stand(
    tiny_bundle, tmp_path, caplog
) -> None:
    spool = tmp_path / "spool"
    settings = CaptureSettings(spool, rate=1.0, budget_bytes=1 << 20, segment_bytes=1 << 16)
    client = create_app(tiny_bundle, ServingConfig(capture=settings)).test_client()
    shutil.rmtree(spool)  # the volume went away under the service
    rows, _ = synthetic_aps(5, seed=15)
    capture = client.application.extensions["linkedge"]["endpoints"].observers["capture"]
    with caplog.at_level("ERROR", logger="linkedge.serving"):
        for _request in range(3):
            answer = post_json(client, "/predict", {"instances": records(rows)})
            assert answer.status_code == 200
            assert capture.writer().flush()
    samples = metric_samples(client)
    lost = ("linkedge_capture_lost_records_total", (("reason", "write_failed"),))
    assert samples[lost] == 15
    assert samples[("linkedge_drift_window_rows", ())] == 15  # the others still observed
    logged = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback


class BrokenObserver:
    def observe(self, rows, probabilities, positive) -> None:
        raise OSError(5, "Input/output error")


def test_a_failing_observer_is_counted_and_the_answer_stands(tiny_bundle, caplog) -> None:
    client = create_app(tiny_bundle, ServingConfig()).test_client()
    client.application.extensions["linkedge"]["endpoints"].observers["broken"] = BrokenObserver()
    rows, _ = synthetic_aps(5, seed=15)
    with caplog.at_level("ERROR", logger="linkedge.serving"):
        for _request in range(3):
            answer = post_json(client, "/predict", {"instances": records(rows)})
            assert answer.status_code == 200
    samples = metric_samples(client)
    assert samples[("linkedge_observer_errors_total", (("observer", "broken"),))] == 3
    assert samples[("linkedge_drift_window_rows", ())] == 15  # the others still observed
    logged = [r for r in caplog.records if "could not take the rows" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once, with its traceback


def test_the_shadow_bundle_comes_from_the_environment(tmp_path) -> None:
    config = ServingConfig.from_env({"LINKEDGE_SHADOW_BUNDLE": str(tmp_path)})
    assert config.shadow_bundle == tmp_path
    assert ServingConfig.from_env({"LINKEDGE_SHADOW_BUNDLE": " "}).shadow_bundle is None
