"""What the server says about itself and its model, for every protocol (HTTP V2 and gRPC)."""

from __future__ import annotations

from typing import Any

from inference_image.bundle import ModelBundle

from .config import ServingConfig

SERVER_NAME = "linkedge"
INPUT_NAME = "input-0"
PLATFORM = "xgboost"


def server_version() -> str:
    """The package's own version: the image runs it from source, not as an installed dist."""
    from inference_image import __version__

    return __version__


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": []}


def model_metadata(bundle: ModelBundle, config: ServingConfig) -> dict[str, Any]:
    """The V2 model metadata: one FP32 input of [-1, features], two outputs of [-1]."""
    return {
        "name": config.model_name,
        "versions": [bundle.version],
        "platform": PLATFORM,
        "inputs": [
            {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, len(bundle.feature_names)]}
        ],
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {
            "threshold": bundle.threshold,
            "bundle_sha256": bundle.sha256,
            "features": list(bundle.feature_names),
        },
    }
