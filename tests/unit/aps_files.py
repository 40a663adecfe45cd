"""Write small APS files in the official format (preamble, header, CRLF, na) for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference_image.schema import APS_FEATURES

PREAMBLE = (
    ["This file is part of APS Failure and Operational Data for Scania Trucks.", ""]
    + [f"licence line {number}" for number in range(17)]
    + ["-" * 72]
)


def format_value(value: float) -> str:
    return "na" if np.isnan(value) else repr(float(value)).removesuffix(".0")


def write_aps_file(
    path: Path,
    features: np.ndarray,
    labels: np.ndarray | None,
    preamble: bool = True,
    newline: str = "\r\n",
) -> Path:
    lines = list(PREAMBLE) if preamble else []
    header = (["class"] if labels is not None else []) + list(APS_FEATURES)
    lines.append(",".join(header))
    for index, row in enumerate(features):
        values = [format_value(value) for value in row]
        if labels is not None:
            values.insert(0, "pos" if labels[index] else "neg")
        lines.append(",".join(values))
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def synthetic_aps(rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer-valued features with ~8% missing; positives depend on two features."""
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 10_000, size=(rows, len(APS_FEATURES))).astype(np.float32)
    labels = ((features[:, 0] > 8_000) & (features[:, 5] > 3_000)).astype(np.int8)
    features[rng.random(features.shape) < 0.08] = np.nan
    return features, labels
