"""Check that a server answers a body with the right probabilities and labels.

A fast wrong answer is a failure: the bench checks every body once before its load and the
bundle's smoke vectors on every server before and after all the load.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from inference_image.contract import SMOKE_TOLERANCE

from .bodies import BINARY_HEADER, Body, BodyFactory

TOLERANCE = SMOKE_TOLERANCE  # the contract's: what every smoke check allows


class WrongAnswer(AssertionError):
    """A server answered a request wrongly (status, shape, probability or label)."""


def post(base_url: str, body: Body, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        base_url + body.path,
        data=body.data,
        method="POST",
        headers={"Content-Type": body.content_type, **body.headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def _binary_outputs(headers: dict[str, str], data: bytes) -> dict[str, Any]:
    length = int(headers[BINARY_HEADER])
    document = json.loads(data[:length])
    offset, outputs = length, {}
    for output in document["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            outputs[output["name"]] = output["data"]
            continue
        chunk = data[offset : offset + size]
        offset += size
        if output["datatype"] == "FP32":
            outputs[output["name"]] = np.frombuffer(chunk, dtype="<f4").tolist()
        else:  # BYTES: 4-byte little-endian length, then the bytes
            values, position = [], 0
            while position < len(chunk):
                n = int.from_bytes(chunk[position : position + 4], "little")
                values.append(chunk[position + 4 : position + 4 + n].decode())
                position += 4 + n
            outputs[output["name"]] = values
    if offset != len(data):
        raise WrongAnswer(f"{len(data) - offset} unexplained bytes after the binary outputs")
    return outputs


def answers(server: str, body: Body, headers: dict[str, str], data: bytes):
    """(probabilities, labels or None) from a response of ``server`` ("linkedge"/"mlserver")."""
    if server == "mlserver":
        (output,) = json.loads(data)["outputs"]
        return np.array(output["data"], dtype=np.float64).ravel(), None
    if body.kind == "predict":
        predictions = json.loads(data)["predictions"]
        return (
            np.array([p["probability"] for p in predictions], dtype=np.float64),
            [p["label"] for p in predictions],
        )
    if BINARY_HEADER in headers:
        outputs = _binary_outputs(headers, data)
    else:
        outputs = {o["name"]: o["data"] for o in json.loads(data)["outputs"]}
    return np.array(outputs["probability"], dtype=np.float64), outputs["label"]


def check(server: str, base_url: str, body: Body) -> None:
    """Send ``body`` once; WrongAnswer unless every row's probability and label are right."""
    status, headers, data = post(base_url, body)
    where = f"{server} {body.key}"
    if status != 200:
        raise WrongAnswer(f"{where}: HTTP {status}: {data[:300]!r}")
    try:
        probabilities, labels = answers(server, body, headers, data)
    except (KeyError, ValueError, TypeError) as exc:
        raise WrongAnswer(f"{where}: malformed answer ({exc!r}): {data[:300]!r}") from None
    check_answers(where, probabilities, labels, body)


def check_answers(
    where: str, probabilities: np.ndarray, labels: list[str] | None, body: Body
) -> None:
    """WrongAnswer unless every row's probability (within TOLERANCE) and label (when the
    server sends labels) are ``body``'s expected ones."""
    if probabilities.shape != body.probabilities.shape:
        raise WrongAnswer(
            f"{where}: {probabilities.size} probabilities for {body.probabilities.size} rows"
        )
    errors = np.abs(probabilities - body.probabilities.astype(np.float64))
    if (errors > TOLERANCE).any():
        row = int(np.argmax(errors))
        raise WrongAnswer(
            f"{where}: row {row} expected probability {float(body.probabilities[row])!r}, "
            f"got {float(probabilities[row])!r}"
        )
    if labels is not None and labels != body.labels:
        row = next(i for i, (a, b) in enumerate(zip(labels, body.labels, strict=True)) if a != b)
        raise WrongAnswer(
            f"{where}: row {row} expected label {body.labels[row]!r}, got {labels[row]!r}"
        )


def smoke_bodies(factory: BodyFactory, server: str) -> list[Body]:
    """Every smoke vector, through each API the server has."""
    n = len(factory.bundle.smoke_vectors)
    if server == "mlserver":
        return [factory.v2_json(n, key="smoke-v2-json")]
    return [factory.predict(n), factory.v2_json(n, key="smoke-v2-json"), factory.v2_binary(n)]


def check_smoke(factory: BodyFactory, server: str, base_url: str) -> None:
    for body in smoke_bodies(factory, server):
        check(server, base_url, body)
