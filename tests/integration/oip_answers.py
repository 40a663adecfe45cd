"""What /predict answers for rows with missing values (sent as null): the reference the
tritonclient tests (HTTP JSON, binary, gRPC) compare with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import requests


def predict_with_null(
    base_url: str, feature_names: Sequence[str], rows: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """/predict's float32 probabilities and labels for ``rows`` (NaN sent as null)."""
    records = [
        {
            name: None if np.isnan(value) else float(value)
            for name, value in zip(feature_names, row.tolist(), strict=True)
        }
        for row in rows
    ]
    response = requests.post(f"{base_url}/predict", json={"instances": records}, timeout=10)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    probabilities = np.array([p["probability"] for p in predictions], dtype=np.float32)
    return probabilities, [p["label"] for p in predictions]
