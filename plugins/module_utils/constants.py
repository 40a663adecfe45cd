# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Names shared by the builder's images, the modules and the roles."""

from __future__ import annotations

# Written by the image builder (inference_image) on every serving image.
LABEL_MODEL_NAME = "io.linkedge.model.name"
LABEL_MODEL_VERSION = "io.linkedge.model.version"
LABEL_BUNDLE_SHA256 = "io.linkedge.bundle.sha256"
IMAGE_LABELS = (LABEL_MODEL_NAME, LABEL_MODEL_VERSION, LABEL_BUNDLE_SHA256)

# Written by the modules on the containers they create.
LABEL_SERVICE = "io.linkedge.service"
LABEL_ROLE = "io.linkedge.role"
LABEL_CONFIG_SHA256 = "io.linkedge.config.sha256"
ROLE_SERVING = "serving"
ROLE_CANDIDATE = "candidate"
ROLE_PREVIOUS = "previous"  # a demoted container is recognised by its name, see previous_name()

# What the serving image provides.
API_TOKEN_MOUNT = "/run/secrets/linkedge-api-token"
MODEL_NAME = "aps-classifier"
BUNDLE_DIR = "/opt/linkedge/model"
SMOKE_VECTORS_FILE = "smoke_vectors.json"
SCHEMA_FILE = "schema.json"

DEFAULT_SERVICE_NAME = "linkedge-inference"


def previous_name(name: str) -> str:
    return name + "-previous"


def candidate_name(name: str) -> str:
    return name + "-candidate"
