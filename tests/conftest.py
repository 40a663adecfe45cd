"""Shared fixtures: a tiny but real XGBoost bundle with the APS feature layout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# libgomp spin-waits by default: with nthread=2 on a busy 2-core machine, training the tiny
# model took 5 s instead of 0.1 s. Must be set before libxgboost (and libgomp) is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

try:
    import inference_image  # noqa: F401
except ImportError:  # plain `pytest` without the project root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference_image.bundle import ModelBundle, load_bundle, write_bundle
from inference_image.predictor import NativePredictor
from inference_image.schema import APS_FEATURES

N_SMOKE = 20
TINY_VERSION = "tiny-test-1"
TINY_THRESHOLD = 0.35


def synthetic_aps(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with APS-like scales, ~10% missing values, and a learnable positive class."""
    width = len(APS_FEATURES)
    scales = 10.0 ** np.random.default_rng(0).integers(0, 6, size=width)  # same for every seed
    rng = np.random.default_rng(seed)
    features = rng.gamma(2.0, 1.0, size=(n_rows, width)) * scales
    signal = features[:, 0] / scales[0] + 0.5 * features[:, 7] / scales[7]
    labels = (signal + rng.normal(0, 0.8, n_rows) > 4.5).astype(np.float32)
    features[rng.random((n_rows, width)) < 0.1] = np.nan
    return features.astype(np.float32), labels


def build_bundle(
    out_dir: Path,
    model_json: bytes,
    smoke_rows: np.ndarray,
    probabilities: np.ndarray,
    threshold: float = TINY_THRESHOLD,
    version: str = TINY_VERSION,
) -> Path:
    smoke_vectors = [
        {
            "inputs": [None if np.isnan(value) else float(value) for value in row],
            "probability": float(probability),
            "label": "pos" if float(probability) >= threshold else "neg",
        }
        for row, probability in zip(smoke_rows, probabilities, strict=True)
    ]
    card = {
        "version": version,
        "threshold": threshold,
        "created_by": "tests/conftest.py",
        "params": {"n_estimators": 30, "max_depth": 3, "seed": 7, "nthread": 2},
        "data": {"kind": "synthetic", "rows": 600},
        "metrics": {},
    }
    return write_bundle(out_dir, model_json, list(APS_FEATURES), card, smoke_vectors)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 30-tree model trained with the xgboost package, plus smoke rows and predictions."""
    import xgboost as xgb

    features, labels = synthetic_aps(600, seed=7)
    matrix = xgb.DMatrix(features, label=labels, missing=np.nan, feature_names=list(APS_FEATURES))
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": 3,
        "eta": 0.3,
        "seed": 7,
        "nthread": 2,
    }
    booster = xgb.train(params, matrix, num_boost_round=30)
    model_json = bytes(booster.save_raw(raw_format="json"))

    pool, pool_labels = synthetic_aps(400, seed=11)  # unseen rows, both classes
    positives = np.flatnonzero(pool_labels == 1)[: N_SMOKE // 2]
    negatives = np.flatnonzero(pool_labels == 0)[: N_SMOKE - positives.size]
    smoke_rows = pool[np.concatenate([negatives, positives])]
    smoke_rows[0, :] = np.nan  # an all-missing row
    smoke_rows[1, ::2] = np.nan
    model_path = tmp_path_factory.mktemp("model") / "model.json"
    model_path.write_bytes(model_json)
    predictor = NativePredictor(model_path, nthread=1)
    probabilities = predictor.predict_proba(smoke_rows)
    predictor.close()
    assert {"pos", "neg"} <= {
        "pos" if p >= TINY_THRESHOLD else "neg" for p in probabilities.tolist()
    }, "the smoke vectors should cover both labels"
    return {"model_json": model_json, "smoke_rows": smoke_rows, "probabilities": probabilities}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict) -> ModelBundle:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    build_bundle(
        out, tiny_model["model_json"], tiny_model["smoke_rows"], tiny_model["probabilities"]
    )
    return load_bundle(out)


@pytest.fixture(scope="session")
def broken_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict) -> ModelBundle:
    """Same model, but smoke vector 3 expects a probability the model does not give."""
    probabilities = np.array(tiny_model["probabilities"], dtype=np.float32)
    shift = -0.01 if probabilities[3] > 0.5 else 0.01
    probabilities[3] = np.float32(probabilities[3] + shift)
    out = tmp_path_factory.mktemp("bundles") / "broken"
    build_bundle(out, tiny_model["model_json"], tiny_model["smoke_rows"], probabilities)
    return load_bundle(out)


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture(scope="session")
def migrate_queued_connections():
    """net.ipv4.tcp_migrate_req=1 for the test session, as the inference_service role sets it on
    trucks: connections queued on a stopping SO_REUSEPORT listener move to the other one.
    Restored afterwards. Fails (does not skip) where it cannot be set: the handover tests need it.
    """
    try:
        before = MIGRATE_REQ.read_text().strip()
        if before != "1":
            MIGRATE_REQ.write_text("1")
    except OSError as exc:
        pytest.fail(
            f"cannot set net.ipv4.tcp_migrate_req=1 ({exc}): run the tests as root on Linux >= 5.14"
        )
    yield
    if before != "1":
        MIGRATE_REQ.write_text(before)
