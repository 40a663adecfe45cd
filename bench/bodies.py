"""The request bodies the load generator sends, and the answers they must get.

Rows are the bundle's smoke vectors (real APS rows, with missing values, plus edge cases),
repeated to the batch size. The expected probabilities come from the bundle's model run
locally through libxgboost, so every body's answer is checked, not only the smoke vectors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference_image.bundle import ModelBundle
from inference_image.contract import INFER_PATH
from inference_image.predictor import NativePredictor
from inference_image.serving.model import check_smoke_vectors

BINARY_HEADER = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Body:
    """One request as wrk sends it, with the probabilities and labels it must get back."""

    key: str
    kind: str  # "predict", "v2-json" or "v2-binary"
    path: str
    content_type: str
    data: bytes
    rows: int
    probabilities: np.ndarray
    labels: list[str]
    headers: dict[str, str] = field(default_factory=dict)

    def write(self, directory: Path) -> Path:
        path = directory / f"{self.key}.body"
        path.write_bytes(self.data)
        return path

    def header_args(self) -> list[str]:
        return [f"{name}: {value}" for name, value in self.headers.items()]


def rows_of(bundle: ModelBundle, n_rows: int) -> np.ndarray:
    vectors = np.array(
        [vector["inputs"] for vector in bundle.smoke_vectors], dtype=np.float64
    ).astype(np.float32)
    repeats = -(-n_rows // len(vectors))
    return np.ascontiguousarray(np.tile(vectors, (repeats, 1))[:n_rows])


def _json_values(rows: np.ndarray) -> list[float | None]:
    return [None if np.isnan(value) else float(value) for value in rows.ravel().tolist()]


def v2_request(rows: np.ndarray, outputs: list[str] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": _json_values(rows),
            }
        ]
    }
    if outputs:
        request["outputs"] = [{"name": name} for name in outputs]
    return request


def binary_request(rows: np.ndarray) -> tuple[bytes, int]:
    """The body and JSON length ``tritonclient.http`` produces for ``InferInput.
    set_data_from_numpy(rows)`` with both outputs requested as binary."""
    raw = rows.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [
            {"name": "probability", "parameters": {"binary_data": True}},
            {"name": "label", "parameters": {"binary_data": True}},
        ],
    }
    text = json.dumps(header).encode()
    return text + raw, len(text)


class BodyFactory:
    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.feature_names = list(bundle.feature_names)
        self._predictor = NativePredictor(bundle.model_path, nthread=1)
        problem = check_smoke_vectors(bundle, self._predictor)
        if problem:  # the expectations themselves would be wrong
            raise ValueError(f"{bundle.path}: the local libxgboost disagrees: {problem}")

    def expected(self, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        probabilities = self._predictor.predict_proba(rows)
        return probabilities, [self.bundle.label_for(float(p)) for p in probabilities.tolist()]

    def predict(self, n_rows: int, rows: np.ndarray | None = None, key: str = "") -> Body:
        """N_ROWS of the smoke vectors (or the ROWS given) as a /predict body."""
        rows = rows_of(self.bundle, n_rows) if rows is None else rows[:n_rows]
        records = [
            dict(zip(self.feature_names, row, strict=True))
            for row in np.array(_json_values(rows), dtype=object).reshape(rows.shape).tolist()
        ]
        document = records[0] if n_rows == 1 else {"instances": records}
        return Body(
            key or f"predict-{n_rows}",
            "predict",
            "/predict",
            "application/json",
            json.dumps(document).encode(),
            n_rows,
            *self.expected(rows),
        )

    def v2_json(
        self,
        n_rows: int,
        outputs: list[str] | None = None,
        key: str = "",
        rows: np.ndarray | None = None,
    ) -> Body:
        rows = rows_of(self.bundle, n_rows) if rows is None else rows[:n_rows]
        return Body(
            key or f"v2-json-{n_rows}",
            "v2-json",
            INFER_PATH,
            "application/json",
            json.dumps(v2_request(rows, outputs)).encode(),
            n_rows,
            *self.expected(rows),
        )

    def v2_binary(self, n_rows: int) -> Body:
        rows = rows_of(self.bundle, n_rows)
        data, json_length = binary_request(rows)
        return Body(
            f"v2-binary-{n_rows}",
            "v2-binary",
            INFER_PATH,
            "application/octet-stream",
            data,
            n_rows,
            *self.expected(rows),
            headers={BINARY_HEADER: str(json_length)},
        )
