"""Fuzz fixtures: the real app built from the tiny bundle, and the outcome summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from inference_image.bundle import ModelBundle
from inference_image.serving.app import create_app
from inference_image.serving.config import ServingConfig

from .outcomes import OUTCOMES, FuzzOutcomes

FUZZ_MAX_BODY_BYTES = 64 * 1024  # small, so "giant" bodies are cheap to send
FUZZ_MAX_ROWS = 50
TOKEN = b"fuzz-token-0123456789"


def fuzz_config(token: bytes | None = None) -> ServingConfig:
    return ServingConfig(
        max_body_bytes=FUZZ_MAX_BODY_BYTES, max_rows=FUZZ_MAX_ROWS, api_token=token
    )


@pytest.fixture(scope="session")
def fuzz_app(tiny_bundle: ModelBundle) -> Flask:
    return create_app(tiny_bundle, fuzz_config())


@pytest.fixture(scope="session")
def fuzz_app_with_token(tiny_bundle: ModelBundle) -> Flask:
    return create_app(tiny_bundle, fuzz_config(TOKEN))


@pytest.fixture(scope="session")
def outcomes() -> Iterator[FuzzOutcomes]:
    yield OUTCOMES


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if OUTCOMES.statuses:
        path: Path = OUTCOMES.write()
        summary = OUTCOMES.summary()
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"fuzz: {summary['total_cases']} cases, status counts "
                f"{summary['status_counts']}, written to {path}"
            )
