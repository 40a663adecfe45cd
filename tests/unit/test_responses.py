"""The precomputed response pieces give exactly the bytes orjson gives for the dictionaries."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from inference_image.serving.payloads import InferRequest
from inference_image.serving.responses import ResponseEncoder

NUMPY = orjson.OPT_SERIALIZE_NUMPY
VALUES = [
    [0.5],
    [1e-7, 0.99999994, 0.0, 1.0, 0.30000001192092896],
    np.random.default_rng(3).random(1000).tolist(),
]


@pytest.mark.parametrize("values", VALUES, ids=["one", "edges", "thousand"])
def test_bodies_equal_orjson_of_the_dictionaries(values: list[float]) -> None:
    probabilities = np.array(values, dtype=np.float32)
    positive = probabilities.astype(np.float64) >= 0.3
    labels = ["pos" if flag else "neg" for flag in positive.tolist()]
    encoder = ResponseEncoder("aps-classifier", 'v"1')

    predictions = [
        {"label": label, "probability": p} for label, p in zip(labels, probabilities, strict=True)
    ]
    assert encoder.predictions(probabilities, positive) == orjson.dumps(
        {"model_version": 'v"1', "predictions": predictions}, option=NUMPY
    )

    for outputs, request_id in (
        (("probability", "label"), None),
        (("label",), "id-\u2603"),
        (("label", "probability"), ""),
    ):
        request = InferRequest(np.empty((0, 170)), outputs, request_id, (False,) * len(outputs))
        body, json_length = encoder.inference(request, probabilities, positive)
        data = {"probability": probabilities, "label": labels}
        document = {"model_name": "aps-classifier", "model_version": 'v"1'}
        if request_id is not None:
            document["id"] = request_id
        document["outputs"] = [
            {
                "name": name,
                "datatype": "FP32" if name == "probability" else "BYTES",
                "shape": [len(values)],
                "data": data[name],
            }
            for name in outputs
        ]
        assert json_length is None
        assert body == orjson.dumps(document, option=NUMPY)
