"""One registry reference for the builder's push and a truck's pull (contract module)."""

from __future__ import annotations

import pytest

from inference_image.contract import IMAGE_REPOSITORY, registry_reference, registry_repository


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("linkedge/aps-classifier:20261201-abc", "linkedge/aps-classifier"),
        ("linkedge/aps-classifier", "linkedge/aps-classifier"),
        (
            "mirror.example.net:5000/linkedge/aps-classifier",
            "mirror.example.net:5000/linkedge/aps-classifier",
        ),
        ("mirror.example.net:5000/fleet/aps:v2", "mirror.example.net:5000/fleet/aps"),
        ("", IMAGE_REPOSITORY),
    ],
)
def test_the_repository_is_the_image_name_without_its_tag(image: str, repository: str) -> None:
    assert registry_repository(image) == repository


def test_the_reference_is_registry_repository_and_version() -> None:
    reference = registry_reference("depot.example.net:5000/", "linkedge/aps-classifier:v1", "v2")
    assert reference == "depot.example.net:5000/linkedge/aps-classifier:v2"
