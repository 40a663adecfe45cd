"""Drift on /metrics: the served app counts what it is asked about (every endpoint goes through
the one dataplane) and compares it with the bundle's training reference at each scrape."""

from __future__ import annotations

import numpy as np

from inference_image.bundle import ModelBundle, load_bundle
from inference_image.schema import APS_FEATURES
from inference_image.serving.app import create_app
from tests.conftest import build_bundle, synthetic_aps

from .test_app import metric_samples, post_json, v2_body

SHIFTED = APS_FEATURES[7]


def records(rows: np.ndarray) -> list[dict]:
    return [
        {
            name: (None if np.isnan(value) else float(value))
            for name, value in zip(APS_FEATURES, row, strict=True)
        }
        for row in rows
    ]


def drift(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_a_shifted_feature_raises_its_psi_on_metrics(tiny_bundle: ModelBundle) -> None:
    client = create_app(tiny_bundle).test_client()
    before = metric_samples(client)
    assert drift(before, "linkedge_drift_window_rows") == 0
    assert drift(before, "linkedge_drift_reference_positive_rate") is not None
    assert drift(before, "linkedge_drift_psi_max") is None  # nothing seen yet

    rows, _ = synthetic_aps(600, seed=21)  # the training distribution, unseen rows
    rows[:, 7] *= 4  # a sensor reading four times too high
    half = len(rows) // 2
    assert post_json(client, "/predict", {"instances": records(rows[:half])}).status_code == 200
    infer = v2_body(np.nan_to_num(rows[half:], nan=0.0).tolist())  # and over OIP V2
    assert post_json(client, "/v2/models/aps-classifier/infer", infer).status_code == 200

    after = metric_samples(client)
    assert drift(after, "linkedge_drift_window_rows") == len(rows)
    psi = {
        dict(labels)["feature"]: value
        for (name, labels), value in after.items()
        if name == "linkedge_drift_psi"
    }
    over = sorted(feature for feature, value in psi.items() if value > 0.25)
    assert over == [SHIFTED], {feature: psi[feature] for feature in over}
    assert drift(after, "linkedge_drift_psi_max") == max(psi.values())
    # The V2 half sent 0 for missing values: the missing rates went down, by about half of 10 %.
    change = drift(after, "linkedge_drift_missing_rate_change", feature=SHIFTED)
    assert change is not None and -0.08 < change < -0.02
    rate = drift(after, "linkedge_drift_positive_rate")
    assert rate is not None and 0 <= rate <= 1


def test_a_bundle_without_a_reference_serves_without_drift_metrics(tmp_path, tiny_model) -> None:
    path = build_bundle(
        tmp_path / "old",
        tiny_model["model_json"],
        tiny_model["smoke_rows"],
        tiny_model["probabilities"],
    )
    client = create_app(load_bundle(path)).test_client()
    assert (
        post_json(
            client, "/predict", {"instances": records(tiny_model["smoke_rows"][:3])}
        ).status_code
        == 200
    )
    assert not [name for name, _ in metric_samples(client) if name.startswith("linkedge_drift_")]
