"""A short hypothesis fuzz against a real gunicorn server: no 5xx, and no worker ever dies
(the worker PIDs are the same before and after)."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest

from inference_image.bundle import ModelBundle
from tests.integration.test_gunicorn_server import Server

from .checks import assert_clear_answer
from .conftest import FUZZ_MAX_BODY_BYTES, FUZZ_MAX_ROWS
from .hostile import HostileRequest, hostile_requests
from .http_client import exchange, request_bytes
from .outcomes import OUTCOMES

MAX_EXAMPLES = 300
REQUEST_TIMEOUT = 3


@pytest.fixture(scope="module")
def fuzz_server(
    tiny_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    running = Server(
        tiny_bundle.path,
        tmp_path_factory.mktemp("fuzz-server"),
        nthread=1,
        via_env=True,
        extra_env={
            "LINKEDGE_MAX_BODY_BYTES": str(FUZZ_MAX_BODY_BYTES),
            "LINKEDGE_MAX_ROWS": str(FUZZ_MAX_ROWS),
            "LINKEDGE_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        },
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_hostile_requests_never_kill_a_gunicorn_worker(
    fuzz_server: Server, tiny_bundle: ModelBundle
) -> None:
    workers = fuzz_server.wait_workers(2)
    paths = [
        "/predict",
        "/v2/models/aps-classifier/infer",
        f"/v2/models/aps-classifier/versions/{tiny_bundle.version}/infer",
    ]

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(request=hostile_requests(paths))
    def run(request: HostileRequest) -> None:
        announced = request.content_length
        if (
            announced
            and announced.isdigit()
            and len(announced) < 10
            and int(announced) > len(request.body)
        ):
            # A body shorter than announced waits for the request time limit: 408
            # after REQUEST_TIMEOUT s (tests/integration covers it, once).
            request.content_length = None
        status, headers, body = exchange(fuzz_server.port, request_bytes(request))
        target = request.path.replace(tiny_bundle.version, "{version}")
        OUTCOMES.record(f"gunicorn:{target}", status)
        assert status != 0, f"no answer to {request!r}"
        if status >= 400 and "json" not in headers.get("Content-Type", ""):
            # gunicorn itself refuses malformed HTTP framing (a Content-Length that is not
            # a number) before the app sees it: a 400 with its own text body.
            assert status == 400 and b"Bad Request" in body, (status, headers, body[:200])
            return
        assert_clear_answer(status, headers, body, request)

    run()
    assert fuzz_server.worker_pids() == workers, fuzz_server.log()[-3000:]
    log = fuzz_server.log()
    for sign_of_trouble in ("Traceback", "WORKER TIMEOUT", "internal error", "Booting worker"):
        assert log.count(sign_of_trouble) == (2 if sign_of_trouble == "Booting worker" else 0), log
