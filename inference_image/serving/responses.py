"""Response bodies of the two prediction endpoints, assembled from precomputed pieces.

The bytes are exactly what ``orjson.dumps`` gives for the same dictionaries (same key order,
float32 values in orjson's shortest form), without building one dictionary per row.
"""

from __future__ import annotations

import numpy as np
import orjson

from . import binary
from .payloads import InferRequest

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_RECORD_HEADS = (b'{"label":"neg","probability":', b'{"label":"pos","probability":')
_LABEL_STRINGS = (b'"neg"', b'"pos"')


def _numbers(probabilities: np.ndarray) -> list[bytes]:
    """Each float32 probability as orjson writes it."""
    return orjson.dumps(probabilities, option=_NUMPY)[1:-1].split(b",")


def probability_texts(probabilities: np.ndarray) -> list[bytes]:
    """Each float32 probability exactly as the answers write it (JSON number text)."""
    return _numbers(probabilities) if len(probabilities) else []


class ResponseEncoder:
    """Bodies for one served model (its name and version are baked into the pieces)."""

    def __init__(self, model_name: str, model_version: str) -> None:
        self._predict_head = (
            b'{"model_version":' + orjson.dumps(model_version) + b',"predictions":['
        )
        self._infer_head = (
            b'{"model_name":'
            + orjson.dumps(model_name)
            + b',"model_version":'
            + orjson.dumps(model_version)
        )

    def predictions(self, probabilities: np.ndarray, positive: np.ndarray) -> bytes:
        """``{"model_version": ..., "predictions": [{"label": ..., "probability": ...}]}``"""
        heads = _RECORD_HEADS
        if len(probabilities) == 1:
            records = heads[bool(positive[0])] + _numbers(probabilities)[0] + b"}"
        else:
            records = b"},".join(
                [
                    heads[flag] + number
                    for flag, number in zip(positive.tolist(), _numbers(probabilities), strict=True)
                ]
            )
            records += b"}"
        return self._predict_head + records + b"]}"

    def inference(
        self, request: InferRequest, probabilities: np.ndarray, positive: np.ndarray
    ) -> tuple[bytes, int | None]:
        """The V2 response and, when some output is binary, the length of its JSON part."""
        n = len(probabilities)
        parts = [self._infer_head]
        if request.id is not None:
            parts += [b',"id":', orjson.dumps(request.id)]
        outputs: list[bytes] = []
        tails: list[bytes] = []
        for name, as_binary in zip(request.outputs, request.binary_outputs, strict=True):
            if name == "probability":
                head = b'{"name":"probability","datatype":"FP32","shape":[%d],' % n
                if as_binary:
                    data = probabilities.astype("<f4", copy=False).tobytes()
                else:
                    data = orjson.dumps(probabilities, option=_NUMPY)
            else:
                head = b'{"name":"label","datatype":"BYTES","shape":[%d],' % n
                if as_binary:
                    data = binary.label_bytes(positive)
                else:
                    labels = _LABEL_STRINGS
                    data = b"[" + b",".join([labels[flag] for flag in positive.tolist()]) + b"]"
            if as_binary:
                outputs.append(head + b'"parameters":{"binary_data_size":%d}}' % len(data))
                tails.append(data)
            else:
                outputs.append(head + b'"data":' + data + b"}")
        parts += [b',"outputs":[', b",".join(outputs), b"]}"]
        header = b"".join(parts)
        if not tails:
            return header, None
        return header + b"".join(tails), len(header)
