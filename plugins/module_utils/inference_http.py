# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""JSON over HTTP to the serving container (standard library only, through open_url):
readiness, model metadata, and the smoke vector check on both APIs."""

from __future__ import annotations

import http.client
import json
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    METADATA_PATH,
    READY_PATH,
    check_smoke_vectors_over_http,
)

NOT_READY_GRACE = 3.0  # a 503 with a reason that lasts this long is the server's final word


class HttpFailure(Exception):
    """No HTTP answer at all: refused, reset, timed out."""


class NotReady(Exception):
    """The service did not become ready; the message says why."""


def base_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _decode(body: bytes) -> object:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode("utf-8", "replace")


def auth_headers(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def http_json(url: str, payload=None, timeout: float = 5.0, token: str | None = None) -> tuple:
    """(status, decoded body) for GET, or POST when `payload` is given. No proxy, no netrc.
    With `token`, sent as a bearer token."""
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    headers.update(auth_headers(token))
    try:
        response = open_url(
            url,
            data=data,
            headers=headers,
            method="GET" if data is None else "POST",
            timeout=timeout,
            use_proxy=False,
            use_netrc=False,
            follow_redirects="none",
        )
        return response.getcode(), _decode(response.read())
    except HTTPError as exc:
        return exc.code, _decode(exc.read())
    except (URLError, OSError, http.client.HTTPException, UrlsConnectionError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise HttpFailure(f"{url}: {reason}") from exc


def check_ready(url: str, timeout: float = 5.0) -> tuple:
    """(ready, why not) from one GET of the readiness endpoint."""
    try:
        status, body = http_json(url + READY_PATH, timeout=timeout)
    except HttpFailure as exc:
        return False, str(exc)
    if status == 200:
        return True, None
    reason = body.get("reason") if isinstance(body, dict) else body
    return False, f"{READY_PATH} answered {status}: {reason}"


def wait_ready(url: str, timeout: float, gone=None, request_timeout: float = 2.0) -> float:
    """Seconds until the service is ready, else NotReady.

    `gone` is an optional callable returning why the service can no longer become ready (for
    example its container exited), or None. A 503 that carries a reason for NOT_READY_GRACE
    seconds is final: the server loaded the model and it does not reproduce its smoke vectors.
    """
    started = time.monotonic()
    refused_since = None
    last = "no answer yet"
    while True:
        remaining = started + timeout - time.monotonic()
        try:
            status, body = http_json(
                url + READY_PATH, timeout=max(0.2, min(request_timeout, remaining))
            )
        except HttpFailure as exc:
            last, refused_since = str(exc), None
        else:
            if status == 200:
                return time.monotonic() - started
            reason = body.get("reason") if isinstance(body, dict) else None
            last = f"{READY_PATH} answered {status}: {reason or body}"
            if reason:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since >= NOT_READY_GRACE:
                    raise NotReady(f"the service refuses to be ready: {reason}")
        problem = gone() if gone is not None else None
        if problem:
            raise NotReady(problem)
        if time.monotonic() - started >= timeout:
            raise NotReady(f"not ready within {timeout:g} s (last: {last})")
        time.sleep(0.1)


def served_model_version(url: str, timeout: float = 5.0) -> str | None:
    """The version the service reports in its V2 model metadata, or None."""
    try:
        status, body = http_json(url + METADATA_PATH, timeout=timeout)
    except HttpFailure:
        return None
    if status != 200 or not isinstance(body, dict):
        return None
    versions = body.get("versions") or [None]
    return versions[0]


def check_smoke_vectors(
    url: str, vectors: list, features: list, timeout: float = 10.0, token: str | None = None
) -> list:
    """Every smoke vector through /predict and V2 infer of the service at `url`
    (contract.check_smoke_vectors_over_http); the mismatches, empty when both APIs give exactly
    the expected answers. `token`: the API's bearer token, if it requires one."""

    def post(path: str, payload: dict) -> tuple:
        return http_json(url + path, payload, timeout=timeout, token=token)

    try:
        return check_smoke_vectors_over_http(post, vectors, features)
    except HttpFailure as exc:
        return [f"no answer while checking the smoke vectors: {exc}"]
