"""A probability exactly equal to the threshold is "pos", everywhere the decision is made.

The bundle's threshold is set to the very float32 probability the tiny model gives one smoke
row, so `p > t` and `p >= t` give different answers for that row: in ``bundle.label_for``,
in ``ServedModel.predict`` and through the HTTP app (/predict and V2 infer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from inference_image.bundle import ModelBundle, load_bundle
from inference_image.serving.app import create_app
from inference_image.serving.config import ServingConfig
from inference_image.serving.model import ServedModel
from tests.conftest import build_bundle

INFER = "/v2/models/aps-classifier/infer"


@pytest.fixture(scope="module")
def boundary(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict) -> tuple:
    """(bundle whose threshold is exactly smoke row `index`'s probability, index)."""
    probabilities = np.asarray(tiny_model["probabilities"], dtype=np.float32)
    distinct = np.unique(probabilities)
    assert distinct.size >= 3, "the tiny model should give varied probabilities"
    threshold = float(distinct[distinct.size // 2])  # rows both above and below it
    index = int(np.flatnonzero(probabilities == np.float32(threshold))[0])
    out = Path(tmp_path_factory.mktemp("boundary")) / "bundle"
    build_bundle(
        out,
        tiny_model["model_json"],
        tiny_model["smoke_rows"],
        probabilities,
        threshold=threshold,
        version="boundary-1",
    )
    bundle = load_bundle(out)
    assert bundle.threshold == threshold  # survives the model card's JSON exactly
    assert bundle.smoke_vectors[index]["label"] == "pos"
    return bundle, index


def test_label_for_at_the_threshold_is_pos(boundary: tuple) -> None:
    bundle, index = boundary
    t = bundle.threshold
    assert bundle.label_for(t) == "pos"
    assert bundle.label_for(float(np.nextafter(t, 0.0))) == "neg"
    assert bundle.label_for(float(np.nextafter(t, 1.0))) == "pos"
    # As the server gives it: the float32 probability of the row.
    assert bundle.label_for(float(np.float32(bundle.smoke_vectors[index]["probability"]))) == "pos"


def test_served_model_predicts_pos_at_the_threshold(boundary: tuple, tiny_model: dict) -> None:
    bundle, index = boundary
    model = ServedModel(bundle, ServingConfig())
    try:
        # The smoke check (which uses label_for) accepts the vector that sits on the threshold.
        assert model.ready, model.not_ready_reason
        probabilities, positive = model.predict(tiny_model["smoke_rows"])
    finally:
        model.predictor.close()
    assert float(probabilities[index]) == bundle.threshold
    assert bool(positive[index]) is True
    expected = [vector["label"] == "pos" for vector in bundle.smoke_vectors]
    assert positive.tolist() == expected
    assert not all(expected) and any(expected)


def _record(bundle: ModelBundle, index: int) -> dict:
    inputs = bundle.smoke_vectors[index]["inputs"]
    return dict(zip(bundle.feature_names, inputs, strict=True))


def test_http_predict_and_infer_answer_pos_at_the_threshold(boundary: tuple) -> None:
    bundle, index = boundary
    client = create_app(bundle).test_client()
    assert client.get("/v2/health/ready").status_code == 200

    single = client.post(
        "/predict", data=orjson.dumps(_record(bundle, index)), content_type="application/json"
    )
    assert single.status_code == 200, single.data
    (prediction,) = single.get_json()["predictions"]
    assert np.float32(prediction["probability"]) == np.float32(bundle.threshold)
    assert prediction["label"] == "pos"

    records = [_record(bundle, i) for i in range(len(bundle.smoke_vectors))]
    batch = client.post(
        "/predict", data=orjson.dumps({"instances": records}), content_type="application/json"
    )
    assert batch.status_code == 200, batch.data
    labels = [p["label"] for p in batch.get_json()["predictions"]]
    assert labels == [vector["label"] for vector in bundle.smoke_vectors]

    rows = [bundle.smoke_vectors[index]["inputs"]]
    body = {"inputs": [{"name": "input-0", "shape": [1, 170], "datatype": "FP32", "data": rows}]}
    infer = client.post(INFER, data=orjson.dumps(body), content_type="application/json")
    assert infer.status_code == 200, infer.data
    outputs = {output["name"]: output["data"] for output in infer.get_json()["outputs"]}
    assert outputs["label"] == ["pos"]
