# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""The contract between the image builder (inference_image) and the collection (linkedge.edge).

Standard library only, and the one place each shared name is declared: the builder imports
this very file as ``inference_image.contract`` (a link in the builder's package), the modules
as ``ansible_collections.linkedge.edge.plugins.module_utils.contract``. It holds what both
sides must agree on: image labels, paths inside the image, the API's paths, the hardened run
settings, the smoke-vector check and the API token file's format.
"""

from __future__ import annotations

import hashlib

# --- labels -------------------------------------------------------------------------------
# Written by the image builder on every serving image.
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

# --- the serving image ----------------------------------------------------------------------
MODEL_NAME = "aps-classifier"
IMAGE_REPOSITORY = "linkedge/" + MODEL_NAME
BUNDLE_DIR = "/opt/linkedge/model"
SMOKE_VECTORS_FILE = "smoke_vectors.json"
SCHEMA_FILE = "schema.json"
MODEL_CARD_FILE = "model_card.json"
SUMS_FILE = "SHA256SUMS"  # the bundle's checksums of its other files
RUN_UID = 10001  # the image's USER; owner of the API token file on a truck
API_TOKEN_MOUNT = "/run/secrets/linkedge-api-token"
DEFAULT_PORT = 8080
# The Open Inference Protocol's gRPC endpoint (KServe's and MLServer's default port): on in
# the image, chosen by the module on a truck; an empty LINKEDGE_GRPC_PORT turns it off.
DEFAULT_GRPC_PORT = 8081
DEFAULT_SERVICE_NAME = "linkedge-inference"

# Environment the server reads (set by the modules on a truck, by the builder's smoke step).
ENV_BUNDLE = "LINKEDGE_BUNDLE"
ENV_HOST = "LINKEDGE_HOST"
ENV_PORT = "LINKEDGE_PORT"
ENV_CHECK_PORT = "LINKEDGE_CHECK_PORT"
ENV_REUSE_PORT = "LINKEDGE_REUSE_PORT"
ENV_TOKEN_FILE = "LINKEDGE_API_TOKEN_FILE"
ENV_GRPC_PORT = "LINKEDGE_GRPC_PORT"

# How a serving container runs, wherever it runs (truck, CI smoke step, bench): Docker SDK
# keyword arguments. Limits, network and labels are the caller's.
HARDENED_RUN = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}
TMPFS_OPTIONS = "rw,noexec,nosuid,nodev"


def hardened_run_flags(tmpfs_size: str = "64m") -> list:
    """HARDENED_RUN and a /tmp tmpfs as `docker run` flags (for tools that use the CLI)."""
    return [
        "--read-only",
        *(f"--cap-drop={cap}" for cap in HARDENED_RUN["cap_drop"]),
        *(f"--security-opt={opt}" for opt in HARDENED_RUN["security_opt"]),
        f"--tmpfs=/tmp:{TMPFS_OPTIONS},size={tmpfs_size}",
    ]


# --- the API ----------------------------------------------------------------------------------
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"
PREDICT_PATH = "/predict"
METADATA_PATH = "/v2/models/" + MODEL_NAME
INFER_PATH = METADATA_PATH + "/infer"

# --- MQTT: the truck's local bus ------------------------------------------------------------------
# Topics per truck: sensors publish features; the serving containers answer on predictions
# (QoS 1; MQTT 5 response topic and correlation data honoured) or errors, and repeat every
# "pos" row on alerts, which the truck's bridge forwards to the depot with its retained status.
MQTT_ROOT = "linkedge"
MQTT_APS_LEAVES = ("features", "predictions", "errors", "alerts")
MQTT_STATUS_LEAF = "status"
# Every serving container of a truck subscribes to the features through this shared group, so
# during a handover the old and the new container split the messages and none is lost.
MQTT_SHARE_GROUP = "linkedge-aps"
MQTT_DEFAULT_PORT = 1883
MQTT_TRUCK_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # no "/", "+", "#": one topic level
MQTT_PASSWORD_MOUNT = "/run/secrets/linkedge-mqtt-password"
MQTT_STATE_MOUNT = "/var/lib/linkedge/mqtt"  # answered message ids (survive a power cut)

# A shadow model (inference_image/serving/shadow.py): a candidate's bundle, mounted read-only.
SHADOW_MOUNT = "/opt/linkedge/shadow"
ENV_SHADOW_BUNDLE = "LINKEDGE_SHADOW_BUNDLE"

# Data capture (inference_image/serving/capture.py): a spool on a host directory.
CAPTURE_MOUNT = "/var/lib/linkedge/capture"
ENV_CAPTURE_DIR = "LINKEDGE_CAPTURE_DIR"  # unset: no capture
ENV_CAPTURE_RATE = "LINKEDGE_CAPTURE_RATE"
ENV_CAPTURE_BUDGET = "LINKEDGE_CAPTURE_BUDGET_BYTES"
ENV_CAPTURE_SEGMENT = "LINKEDGE_CAPTURE_SEGMENT_BYTES"
ENV_CAPTURE_SEGMENT_SECONDS = "LINKEDGE_CAPTURE_SEGMENT_SECONDS"
# The spool's layout (inference_image/capture_spool.py writes it, capture_segments collects it).
CAPTURE_OPEN_DIR, CAPTURE_SEALED_DIR = "open", "sealed"
CAPTURE_DROPPED_FILE = "dropped.json"
CAPTURE_SEGMENT_SUFFIX = ".jsonl"
CAPTURE_ENV = (
    ENV_CAPTURE_DIR,
    ENV_CAPTURE_RATE,
    ENV_CAPTURE_BUDGET,
    ENV_CAPTURE_SEGMENT,
    ENV_CAPTURE_SEGMENT_SECONDS,
)

ENV_MQTT_HOST = "LINKEDGE_MQTT_HOST"  # unset: no MQTT adapter
ENV_MQTT_PORT = "LINKEDGE_MQTT_PORT"
ENV_MQTT_TRUCK = "LINKEDGE_MQTT_TRUCK"
ENV_MQTT_USERNAME = "LINKEDGE_MQTT_USERNAME"
ENV_MQTT_PASSWORD_FILE = "LINKEDGE_MQTT_PASSWORD_FILE"
ENV_MQTT_CLIENT_ID = "LINKEDGE_MQTT_CLIENT_ID"
ENV_MQTT_STATE_DIR = "LINKEDGE_MQTT_STATE_DIR"


def mqtt_topic(truck: str, leaf: str) -> str:
    """``linkedge/<truck>/aps/<leaf>`` for the APS leaves, ``linkedge/<truck>/status``."""
    if leaf == MQTT_STATUS_LEAF:
        return f"{MQTT_ROOT}/{truck}/{leaf}"
    if leaf not in MQTT_APS_LEAVES:
        raise ValueError(f"unknown MQTT topic leaf {leaf!r}")
    return f"{MQTT_ROOT}/{truck}/aps/{leaf}"


def mqtt_shared_features(truck: str) -> str:
    return f"$share/{MQTT_SHARE_GROUP}/{mqtt_topic(truck, 'features')}"


# --- the release ------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"
SIGNATURE_SUFFIX = ".sig"
# Fields of the signed manifest every truck-side step relies on.
MANIFEST_REQUIRED = (
    "version",
    "image_id",
    "archive",
    "archive_sha256",
    "archive_bytes",
    "bundle_sha256",
)

# --- architectures: one release, an image per architecture ---------------------------------------
# A release and an image config name an architecture as Debian and Docker do (arm64); the kernel
# (uname -m, ansible_architecture, the Docker engine's info) as its machine (aarch64).
ARCHITECTURE_MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
DEFAULT_ARCHITECTURE = "amd64"  # the top-level image of a release, and of one made before arm64
# The signed manifest's image per architecture: {"arm64": {field: value for IMAGE_FIELDS}};
# its top-level IMAGE_FIELDS are the DEFAULT_ARCHITECTURE image's (what earlier trucks read),
# or the first image's in a release without one (an arm64-only fleet's).
MANIFEST_ARCHITECTURES = "architectures"
IMAGE_FIELDS = ("image", "image_id", "archive", "archive_sha256", "archive_bytes")


def architecture_named(name) -> str:
    """The release's name (amd64, arm64) for any name of an architecture (linux/arm64, arm64,
    aarch64, x86_64); ValueError naming the known ones."""
    wanted = str(name).strip().lower()
    wanted = wanted[len("linux/") :] if wanted.startswith("linux/") else wanted
    for architecture, machine in ARCHITECTURE_MACHINES.items():
        if wanted in (architecture, machine):
            return architecture
    known = ", ".join(f"{arch} ({machine})" for arch, machine in ARCHITECTURE_MACHINES.items())
    raise ValueError(f"unknown architecture {name!r}: LinkEdge releases carry images for {known}")


def release_images(manifest: dict) -> dict:
    """{architecture: its image's IMAGE_FIELDS} of a release manifest; a manifest without
    MANIFEST_ARCHITECTURES (made before arm64) has one image, DEFAULT_ARCHITECTURE's."""
    images = manifest.get(MANIFEST_ARCHITECTURES)
    if isinstance(images, dict) and images:
        return images
    return {DEFAULT_ARCHITECTURE: {field: manifest.get(field) for field in IMAGE_FIELDS}}


def manifest_for_architecture(manifest: dict, architecture: str):
    """MANIFEST with its top-level IMAGE_FIELDS those of ARCHITECTURE's image (any name of it),
    plus ``architecture``: what every later step of a truck of that architecture reads. None
    when the release has no image for it."""
    wanted = architecture_named(architecture)
    image = release_images(manifest).get(wanted)
    if not isinstance(image, dict):
        return None
    chosen = {field: image.get(field) for field in IMAGE_FIELDS}
    return {**manifest, **chosen, "architecture": wanted}


def no_image_message(manifest: dict, architecture: str) -> str:
    """Why a release cannot go onto a truck of ARCHITECTURE, and what to do."""
    wanted = architecture_named(architecture)
    return (
        f"release {manifest.get('version')} has no image for {wanted} (it has "
        f"{', '.join(sorted(release_images(manifest)))}): build one from the same bundle "
        f"(`linkedge-image build --platform linux/{wanted}`) and publish every architecture's "
        "image as one release (`publish --image ... --image ...`), or give this truck another "
        "release. Nothing was sent or loaded."
    )


def sha256_file(path, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 (hex) of a file, read in chunks (archives are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def previous_name(name: str) -> str:
    return name + "-previous"


def candidate_name(name: str) -> str:
    return name + "-candidate"


# --- the API token file -----------------------------------------------------------------------
MAX_TOKEN_BYTES = 4096


class TokenFileError(ValueError):
    """The API token file cannot be read or holds no valid token; the message names it."""


def read_token_file(path, allow_empty: bool = False, setting: str = "api_token_file") -> str:
    """The bearer token in `path`, surrounding whitespace (a final newline) dropped.

    TokenFileError starting with "<setting> (<path>)" when the file cannot be read, is larger
    than MAX_TOKEN_BYTES, is empty (unless `allow_empty`), or holds anything but one word of
    printable ASCII (what an HTTP header can carry)."""
    where = f"{setting} ({path})"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise TokenFileError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenFileError(f"{where} is larger than {MAX_TOKEN_BYTES} bytes; expected one token")
    token = raw.strip()
    if not token and not allow_empty:
        raise TokenFileError(f"{where} is empty; expected the API token")
    if not all(0x21 <= byte <= 0x7E for byte in token):
        raise TokenFileError(
            f"{where} must hold one token of printable ASCII characters without spaces"
        )
    return token.decode("ascii")


# --- smoke vectors ----------------------------------------------------------------------------
# A bundle's smoke_vectors.json: [{"inputs": [float | None, ...], "probability": p,
# "label": "pos" | "neg"}]. A model, in process or behind the API, must give each vector's
# label exactly and its probability within SMOKE_TOLERANCE.
SMOKE_TOLERANCE = 1e-6
MAX_MISMATCHES_PER_API = 10


def smoke_mismatch(where: str, index: int, vector: dict, probability, label) -> str | None:
    """Why (`probability`, `label`) is not vector `index`'s expected answer, or None."""
    try:
        close = abs(float(probability) - float(vector["probability"])) <= SMOKE_TOLERANCE
    except (TypeError, ValueError, KeyError):
        close = False
    if close and label == vector.get("label"):
        return None
    return (
        f"{where} vector {index}: expected {vector.get('probability')!r} "
        f"{vector.get('label')}, got {probability!r} {label}"
    )


def smoke_predict_request(vectors: list, features: list) -> dict:
    records = [
        {name: vector["inputs"][column] for column, name in enumerate(features)}
        for vector in vectors
    ]
    return {"instances": records}


def smoke_infer_request(vectors: list, features: list) -> dict:
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(vectors), len(features)],
                "datatype": "FP32",
                "data": [value for vector in vectors for value in vector["inputs"]],
            }
        ]
    }


def _capped(mismatches: list, where: str) -> list:
    if len(mismatches) <= MAX_MISMATCHES_PER_API:
        return mismatches
    rest = len(mismatches) - MAX_MISMATCHES_PER_API
    return [*mismatches[:MAX_MISMATCHES_PER_API], f"{where}: ... and {rest} more"]


def _predict_mismatches(post, vectors: list, features: list) -> list:
    status, body = post(PREDICT_PATH, smoke_predict_request(vectors, features))
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if status != 200 or not isinstance(predictions, list) or len(predictions) != len(vectors):
        return [f"{PREDICT_PATH} answered {status}: {str(body)[:300]}"]
    mismatches = []
    for index, vector in enumerate(vectors):
        got = predictions[index] if isinstance(predictions[index], dict) else {}
        problem = smoke_mismatch(
            PREDICT_PATH, index, vector, got.get("probability"), got.get("label")
        )
        if problem:
            mismatches.append(problem)
    return _capped(mismatches, PREDICT_PATH)


def _infer_mismatches(post, vectors: list, features: list) -> list:
    status, body = post(INFER_PATH, smoke_infer_request(vectors, features))
    try:
        outputs = {output["name"]: output["data"] for output in body["outputs"]}
        probabilities, labels = outputs["probability"], outputs["label"]
        if status != 200 or len(probabilities) != len(vectors) or len(labels) != len(vectors):
            raise ValueError("wrong status or length")
    except (KeyError, TypeError, ValueError):
        return [f"{INFER_PATH} answered {status}: {str(body)[:300]}"]
    mismatches = []
    for index, vector in enumerate(vectors):
        problem = smoke_mismatch(INFER_PATH, index, vector, probabilities[index], labels[index])
        if problem:
            mismatches.append(problem)
    return _capped(mismatches, INFER_PATH)


def check_smoke_vectors_over_http(post, vectors: list, features: list) -> list:
    """Every smoke vector through /predict and through V2 infer; the mismatches (at most
    MAX_MISMATCHES_PER_API listed per API, plus a count of the rest), empty when both APIs give
    exactly the expected answers.

    `post(path, payload)` sends one JSON request to the service and returns (HTTP status,
    decoded body): the caller owns the HTTP client, the address and the token."""
    if not isinstance(vectors, list) or not vectors:
        return ["the bundle has no smoke vectors to check the model with"]
    return _predict_mismatches(post, vectors, features) + _infer_mismatches(post, vectors, features)


# --- Channels -----------------------------------------------------------------------------------
# A channel pointer (docs/channels.md) names the release a channel (stable, canary, ...) points
# at. CI writes it (inference_image/channels.py) into the depot at <depot>/channels/<name>.json
# with a detached signature <name>.json.sig (the release signature format) and keeps the
# channel's history at <depot>/channels/history/<name>.json; the truck checks it
# (module_utils/channel_pointer.py, module channel_verify). `sequence` grows by one with every
# pointer a channel gets, rollbacks included: a truck refuses a lower one (a replay).
CHANNELS_DIR = "channels"
CHANNEL_HISTORY_DIR = "history"
CHANNEL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"  # a file name and a topic level
POINTER_FORMAT = 1
POINTER_SUFFIX = ".json"
# Fields every pointer has (the truck refuses a pointer without them).
POINTER_REQUIRED = (
    "format",
    "channel",
    "sequence",
    "version",
    "manifest_sha256",
    "manifest_path",
    "published_at",
)
# Fields copied from the release's signed manifest's top level (the amd64 image of a release
# with several architectures), for readers of the channel; a truck fetches the manifest and
# takes its own architecture's image from it (the manifest stays the record it verifies and
# uses).
POINTER_FROM_MANIFEST = (
    "image",
    "image_id",
    "archive",
    "archive_sha256",
    "archive_bytes",
    "bundle_sha256",
)
# What made a pointer: `publish` (a release), `promote` (another channel's release),
# `rollback` (the channel's previous release, with a new, higher sequence).
POINTER_ACTIONS = ("publish", "promote", "rollback")


def channel_pointer_path(channel: str) -> str:
    """``channels/<channel>.json``, relative to the depot's root."""
    return f"{CHANNELS_DIR}/{channel}{POINTER_SUFFIX}"


def registry_repository(image: str) -> str:
    """A release's image name without its tag (``linkedge/aps-classifier:v2`` ->
    ``linkedge/aps-classifier``): its repository in a registry. A registry's port is kept."""
    head, colon, tail = (image or IMAGE_REPOSITORY).rpartition(":")
    return head if colon and "/" not in tail else image or IMAGE_REPOSITORY


def registry_reference(
    registry: str, image: str, version: str, architecture: str = DEFAULT_ARCHITECTURE
) -> str:
    """``<registry>/<repository>:<version>`` (``:<version>-<architecture>`` for another
    architecture than the default: ``-arm64``): where CI pushes a release's image and where a
    truck's engine pulls it from (one name for both, so they cannot disagree)."""
    tag = image_tag(version, architecture)
    return f"{registry.rstrip('/')}/{registry_repository(image)}:{tag}"


def image_tag(version: str, architecture: str = DEFAULT_ARCHITECTURE) -> str:
    """A release image's tag: its version, with ``-<architecture>`` for any architecture but
    the default (``v1``, ``v1-arm64``): the builder's tags and the registry's agree."""
    architecture = architecture_named(architecture)
    return version if architecture == DEFAULT_ARCHITECTURE else f"{version}-{architecture}"


# Where `linkedge-image publish --releases <depot>/releases` puts a release in a depot (a truck
# pinned to a version fetches it from there, without a pointer).
DEPOT_RELEASES_DIR = "releases"


def release_manifest_path(version: str) -> str:
    """``releases/<version>/manifest.json``, relative to the depot's root."""
    return f"{DEPOT_RELEASES_DIR}/{version}/{MANIFEST_FILE}"
