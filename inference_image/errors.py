"""The errors a user can cause and fix: the CLI prints them without a traceback."""

from __future__ import annotations

import importlib


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message tells the user what to do (only those importable here)."""
    found: list[type[BaseException]] = [FileNotFoundError, PermissionError]
    for module, name in (
        ("inference_image.cli", "UsageError"),
        ("inference_image.bundle", "BundleError"),
        ("inference_image.data", "DataFormatError"),
        ("inference_image.download", "DownloadError"),
        ("inference_image.predictor", "PredictorError"),
        ("inference_image.image.wheelhouse", "WheelhouseError"),
        ("inference_image.image.base_image", "BaseImageError"),
        ("inference_image.image.build", "ImageBuildError"),
        ("inference_image.image.export", "ExportError"),
        ("inference_image.image.smoke", "SmokeTestError"),
        ("inference_image.release", "ReleaseError"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:  # e.g. no Docker SDK inside the serving image
            continue
    return tuple(found)
