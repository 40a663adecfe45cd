"""InferenceSwitch (plugins/module_utils/inference_switch.py) without a Docker engine.

The switch gets a fake Docker client (tests/unit/fakes_docker.py); a container the switch
starts serves a fake inference API: a real HTTP server on 127.0.0.1, on the port its
environment names (LINKEDGE_CHECK_PORT, or LINKEDGE_PORT for a candidate), answering readiness,
the V2 model metadata, /predict and V2 infer from the "model" its image holds. An image's
smoke vectors are read by the switch itself, from the image's files through the fake client
(containers.create + get_archive), so whether a candidate reproduces them is decided by the
switch's own code.

The Docker tests (tests/ansible_modules/test_inference_container.py) run the same scenarios
with real images; these run in a second and need neither Docker nor a network.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .fakes_docker import (
    ContainerExited,
    FakeContainer,
    FakeDockerClient,
    FakeImage,
    module_utils,
)

contract = module_utils("contract")
inference_switch = module_utils("inference_switch")

NAME = "linkedge-inference"
PREVIOUS = contract.previous_name(NAME)
CANDIDATE = contract.candidate_name(NAME)
FEATURES = ["aa_000", "ab_000", "ac_000"]
ROWS = [[1.5, None, 3.0], [250.0, 7.0, None], [None, None, None]]
# What each version's model answers for ROWS; a bundle's smoke vectors are its model's answers.
MODEL_V1 = [(0.0123, "neg"), (0.91, "pos"), (0.2, "neg")]
MODEL_V2 = [(0.0456, "neg"), (0.87, "pos"), (0.3125, "neg")]
MODEL_V2_ONE_LABEL_WRONG = [(0.0456, "neg"), (0.87, "pos"), (0.3125, "pos")]

PARAMS = {
    "name": NAME,
    "published_port": 18080,  # never bound: the switch checks each container on its own port
    "bind_address": "127.0.0.1",
    "api_token_file": None,
    "env": {},
    "memory": "512m",
    "cpus": 2.0,
    "pids_limit": 256,
    "restart_policy": "unless-stopped",
    "tmpfs_size": "64m",
    "ready_timeout": 10,
    "stop_timeout": 1,
    "smoke_check": True,
    "keep_previous": True,
    "fail_on_rollback": True,
}


# --- outcome: the only place the tests spell the switch's outcome names and flags ------------
# (the RETURN of plugins/modules/inference_container.py today)
OUTCOMES = {
    "updated": {"outcome": "updated", "rolled_back": False},
    "unchanged": {"outcome": "unchanged", "rolled_back": False},
    "rolled_back": {"outcome": "rolled_back", "rolled_back": True},
}


def assert_outcome(result: dict, expected: str, changed: bool) -> None:
    got = {key: result.get(key) for key in OUTCOMES[expected]}
    assert got == OUTCOMES[expected], result
    assert result["changed"] is changed, result


# --- the fake inference API -------------------------------------------------------------------
class FakeModelServer(ThreadingHTTPServer):
    """The API of one container: ready at once, answering with `answers` ({row: (p, label)})."""

    daemon_threads = True

    def __init__(self, port: int, version: str, answers: dict, token: str | None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.version = version
        self.answers = answers
        self.token = token
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def answer(self, row: list) -> tuple[float, str]:
        return self.answers.get(tuple(row), (0.0, "neg"))

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    server: FakeModelServer

    def log_message(self, *_args: Any) -> None:
        pass

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Authorization")))
        if self.path in (contract.READY_PATH, contract.LIVE_PATH):
            self._reply(200, {"ready": True} if self.path == contract.READY_PATH else {})
        elif self.path == contract.METADATA_PATH:
            self._reply(200, {"name": contract.MODEL_NAME, "versions": [self.server.version]})
        else:
            self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        authorization = self.headers.get("Authorization")
        self.server.requests.append((self.path, authorization))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        token = self.server.token
        if token is not None and authorization != f"Bearer {token}":
            self._reply(401, {"error": "missing or wrong bearer token"})
        elif self.path == contract.PREDICT_PATH:
            records = body.get("instances", [body])
            answers = [self.server.answer([r.get(name) for name in FEATURES]) for r in records]
            predictions = [{"label": label, "probability": p} for p, label in answers]
            self._reply(200, {"model_version": self.server.version, "predictions": predictions})
        elif self.path == contract.INFER_PATH:
            tensor = body["inputs"][0]
            n, width = tensor["shape"]
            data = tensor["data"]
            answers = [self.server.answer(data[i * width : (i + 1) * width]) for i in range(n)]
            outputs = [
                {"name": "probability", "datatype": "FP32", "shape": [n], "data": []},
                {"name": "label", "datatype": "BYTES", "shape": [n], "data": []},
            ]
            for p, label in answers:
                outputs[0]["data"].append(p)
                outputs[1]["data"].append(label)
            self._reply(200, {"model_name": contract.MODEL_NAME, "outputs": outputs})
        else:
            self._reply(404, {"error": f"no route {self.path}"})


# --- a truck: the fake engine, its images and what their containers serve --------------------
class Truck:
    def __init__(self) -> None:
        self.client = FakeDockerClient()
        self.servers: list[tuple[str, FakeModelServer]] = []  # (container name at start, API)

    def image(
        self,
        tag: str,
        version: str,
        bundle: list,
        serves: list | None = None,
        served_version: str | None = None,
        exits: bool = False,
    ) -> FakeImage:
        """An image whose bundle's smoke vectors are `bundle`'s answers for ROWS, whose server
        answers as `serves` (default: the same) and reports `served_version`."""
        smoke_vectors = [
            {"inputs": row, "probability": p, "label": label}
            for row, (p, label) in zip(ROWS, bundle, strict=True)
        ]
        answers = {tuple(row): answer for row, answer in zip(ROWS, serves or bundle, strict=True)}

        def entrypoint(container: FakeContainer) -> FakeModelServer:
            if exits:
                raise ContainerExited(3, "loading the bundle\nBundleError: model.json is broken")
            env = container.environment
            port = int(env.get(contract.ENV_CHECK_PORT) or env[contract.ENV_PORT])
            try:
                server = FakeModelServer(
                    port, served_version or version, answers, token_of(container)
                )
            except OSError as exc:  # as the real server: it exits when it cannot bind
                raise ContainerExited(1, f"cannot listen on 127.0.0.1:{port}: {exc}") from exc
            self.servers.append((container.name, server))
            return server

        files = {
            contract.SMOKE_VECTORS_FILE: json.dumps(smoke_vectors).encode(),
            contract.SCHEMA_FILE: json.dumps({"features": FEATURES}).encode(),
        }
        return self.client.images.add(
            FakeImage(
                tag,
                labels={
                    contract.LABEL_MODEL_NAME: contract.MODEL_NAME,
                    contract.LABEL_MODEL_VERSION: version,
                    contract.LABEL_BUNDLE_SHA256: f"{version}-bundle".ljust(64, "0"),
                },
                files={contract.BUNDLE_DIR: files},
                entrypoint=entrypoint,
            )
        )

    def deploy(self, image: FakeImage, check_mode: bool = False, **params: Any) -> dict:
        switch = inference_switch.InferenceSwitch(
            self.client, dict(PARAMS, image=image.tag, **params)
        )
        return switch.run(image, check_mode)

    def container(self, name: str) -> FakeContainer:
        return self.client.containers.get(name)

    def paths_served_by(self, name: str) -> list[str]:
        """Every request path answered by containers started under `name`."""
        return [
            path for started, server in self.servers if started == name for path in server.paths()
        ]

    def close(self) -> None:
        self.client.close()


def token_of(container: FakeContainer) -> str | None:
    """The token the server reads from its mounted token file, as the real server does."""
    mount = container.environment.get(contract.ENV_TOKEN_FILE)
    if mount is None:
        return None
    host_path = next(host for host, bind in container.volumes.items() if bind["bind"] == mount)
    return contract.read_token_file(host_path)


@pytest.fixture
def truck() -> Iterator[Truck]:
    truck = Truck()
    yield truck
    truck.close()


@pytest.fixture
def v1(truck: Truck) -> FakeImage:
    return truck.image("linkedge/aps-classifier:v1", "v1", MODEL_V1)


@pytest.fixture
def v2(truck: Truck) -> FakeImage:
    return truck.image("linkedge/aps-classifier:v2", "v2", MODEL_V2)


@pytest.fixture
def impostor(truck: Truck) -> FakeImage:
    """Ready, says it is v2, but its server answers with v1's model."""
    return truck.image("linkedge/aps-classifier:impostor", "v2", MODEL_V2, serves=MODEL_V1)


SMOKE_CALLS = (contract.PREDICT_PATH, contract.INFER_PATH)


# --- a first deploy -------------------------------------------------------------------------
def test_first_deploy_checks_the_smoke_vectors_and_serves(truck: Truck, v1: FakeImage) -> None:
    result = truck.deploy(v1)
    assert_outcome(result, "updated", changed=True)
    serving = truck.container(NAME)
    assert result["container_id"] == serving.id and result["reason"] is None
    assert (result["image_id"], result["model_version"]) == (v1.id, "v1")
    assert result["previous_image_id"] is None and result["previous_model_version"] is None
    assert result["serving_gap_seconds"] is None  # nothing was serving
    assert result["cold_start_seconds"] is not None and result["smoke_vectors_checked"] == 3
    assert serving.status == "running" and serving.attrs["Image"] == v1.id
    assert serving.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert truck.client.names() == {NAME: "running"}  # no candidate, no file reader left
    assert truck.client.calls_on(CANDIDATE) == []  # nothing was serving: no candidate needed
    paths = truck.paths_served_by(NAME)
    assert contract.METADATA_PATH in paths and set(SMOKE_CALLS) <= set(paths)


def test_first_deploy_of_a_bad_version_leaves_nothing(truck: Truck, impostor: FakeImage) -> None:
    result = truck.deploy(impostor)
    assert_outcome(result, "rolled_back", changed=True)
    assert result["container_id"] is None and result["serving_gap_seconds"] is None
    assert "from the new image failed" in result["reason"]
    assert "answers its smoke vectors wrongly" in result["reason"], result["reason"]
    assert truck.client.names() == {}


# --- a bad candidate never replaces the serving container --------------------------------------
@pytest.mark.parametrize(
    ("kind", "expected_reason"),
    [
        # ready, right version, but it answers with another model than its bundle's
        ("impostor", f"answers its smoke vectors wrongly: {contract.PREDICT_PATH} vector 0"),
        # the probabilities are right, one label is not
        ("one_label", f"{contract.PREDICT_PATH} vector 2: expected 0.3125 neg, got 0.3125 pos"),
        # it serves another version than its image's label
        ("version", "serves model v1, its image says v2"),
        ("exits", "exited with code 3; last log lines: loading the bundle"),
    ],
)
def test_a_bad_candidate_is_not_switched_in(
    truck: Truck, v1: FakeImage, kind: str, expected_reason: str
) -> None:
    bad = {
        "impostor": lambda: truck.image("aps:impostor", "v2", MODEL_V2, serves=MODEL_V1),
        "one_label": lambda: truck.image("aps:label", "v2", MODEL_V2, MODEL_V2_ONE_LABEL_WRONG),
        "version": lambda: truck.image("aps:version", "v2", MODEL_V2, served_version="v1"),
        "exits": lambda: truck.image("aps:exits", "v2", MODEL_V2, exits=True),
    }[kind]()
    first = truck.deploy(v1)
    serving_id = first["container_id"]
    before = len(truck.client.calls)

    result = truck.deploy(bad)

    assert_outcome(result, "rolled_back", changed=False)
    assert expected_reason in result["reason"], result["reason"]
    assert f"candidate {CANDIDATE} failed, {NAME} was not touched" in result["reason"]
    assert result["container_id"] == serving_id
    assert (result["image_id"], result["model_version"]) == (bad.id, "v2")
    assert (result["previous_image_id"], result["previous_model_version"]) == (v1.id, "v1")
    # The serving container was not renamed, stopped, updated or removed; the candidate is gone.
    assert [call for call in truck.client.calls[before:] if call[1] == NAME] == []
    assert truck.client.names() == {NAME: "running"}
    serving = truck.container(NAME)
    assert serving.id == serving_id and serving.attrs["Image"] == v1.id
    if kind != "exits":  # the candidate was checked over HTTP, on its own port
        paths = truck.paths_served_by(CANDIDATE)
        assert contract.READY_PATH in paths
        if kind != "version":
            assert contract.PREDICT_PATH in paths


def test_the_candidate_listens_only_on_localhost(
    truck: Truck, v1: FakeImage, v2: FakeImage
) -> None:
    truck.deploy(v1)
    truck.deploy(v2)
    (create,) = [call for call in truck.client.calls if call[:2] == ("create", CANDIDATE)]
    kwargs = create[2]
    assert kwargs["environment"][contract.ENV_HOST] == "127.0.0.1"
    assert contract.ENV_CHECK_PORT not in kwargs["environment"]
    assert kwargs["labels"][contract.LABEL_ROLE] == contract.ROLE_CANDIDATE
    assert kwargs["restart_policy"] == {"Name": "no"}


# --- a good candidate is switched in -----------------------------------------------------------
def test_a_good_candidate_is_switched_in(truck: Truck, v1: FakeImage, v2: FakeImage) -> None:
    old_id = truck.deploy(v1)["container_id"]

    result = truck.deploy(v2)

    assert_outcome(result, "updated", changed=True)
    assert result["reason"] is None
    assert (result["image_id"], result["model_version"]) == (v2.id, "v2")
    assert (result["previous_image_id"], result["previous_model_version"]) == (v1.id, "v1")
    assert result["serving_gap_seconds"] == 0.0  # the old one served until the new one passed
    assert result["smoke_vectors_checked"] == 3
    for timing in ("cold_start_seconds", "candidate_cold_start_seconds", "handover_seconds"):
        assert result[timing] is not None and result[timing] >= 0, timing
    serving, previous = truck.container(NAME), truck.container(PREVIOUS)
    assert result["container_id"] == serving.id != old_id
    assert serving.attrs["Image"] == v2.id and serving.status == "running"
    assert serving.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert previous.id == old_id and previous.attrs["Image"] == v1.id
    assert previous.status == "exited"  # retired: stopped, and never restarted
    assert previous.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert truck.client.names() == {NAME: "running", PREVIOUS: "exited"}
    # Both the candidate and the new container were checked against the smoke vectors.
    assert set(SMOKE_CALLS) <= set(truck.paths_served_by(CANDIDATE))
    assert truck.paths_served_by(NAME).count(contract.PREDICT_PATH) == 2  # v1, then v2

    # A third version replaces the older previous; keep_previous=false removes it.
    third = truck.deploy(v1, keep_previous=False)
    assert_outcome(third, "updated", changed=True)
    assert third["previous_image_id"] == v2.id
    assert truck.client.names() == {NAME: "running"}
    assert truck.container(NAME).attrs["Image"] == v1.id


def test_the_same_image_and_settings_again_is_unchanged(truck: Truck, v1: FakeImage) -> None:
    first = truck.deploy(v1)
    before = len(truck.client.calls)

    again = truck.deploy(v1)

    assert_outcome(again, "unchanged", changed=False)
    assert again["container_id"] == first["container_id"]
    assert again["previous_image_id"] is None
    assert truck.client.calls[before:] == []  # nothing created, started, stopped or renamed

    other_settings = truck.deploy(v1, env={"LINKEDGE_WORKERS": "1"})
    assert_outcome(other_settings, "updated", changed=True)
    assert other_settings["container_id"] != first["container_id"]


def test_smoke_check_false_only_waits_for_ready(
    truck: Truck, v1: FakeImage, impostor: FakeImage
) -> None:
    truck.deploy(v1)
    started, before = len(truck.servers), len(truck.client.calls)

    result = truck.deploy(impostor, smoke_check=False)

    assert_outcome(result, "updated", changed=True)
    assert result["smoke_vectors_checked"] == 0
    assert truck.container(NAME).attrs["Image"] == impostor.id
    new_servers = truck.servers[started:]
    assert [name for name, _ in new_servers] == [CANDIDATE, NAME]
    for _, server in new_servers:
        assert server.paths() and set(server.paths()) == {contract.READY_PATH}
    # The smoke vectors were not even read out of the image.
    created = [call[1] for call in truck.client.calls[before:] if call[0] == "create"]
    assert created == [CANDIDATE, NAME]


def test_with_smoke_check_the_smoke_vectors_are_read_from_the_image(
    truck: Truck, v1: FakeImage
) -> None:
    truck.deploy(v1)
    readers = [call[1] for call in truck.client.calls if call[0] == "create" and call[1] != NAME]
    assert len(readers) == 1  # one created, never started container to read the bundle
    assert ("start", readers[0]) not in truck.client.calls
    assert ("remove", readers[0]) in truck.client.calls


def test_the_api_token_is_sent_to_the_checks(
    truck: Truck, v1: FakeImage, v2: FakeImage, tmp_path: Path
) -> None:
    token_file = tmp_path / "api-token"
    token_file.write_text("s3cret-token\n")
    truck.deploy(v1, api_token_file=str(token_file))
    result = truck.deploy(v2, api_token_file=str(token_file))
    assert_outcome(result, "updated", changed=True)
    posts = [
        auth for _, server in truck.servers for path, auth in server.requests if path in SMOKE_CALLS
    ]
    assert posts and set(posts) == {"Bearer s3cret-token"}


def test_check_mode_changes_nothing(truck: Truck, v1: FakeImage, v2: FakeImage) -> None:
    truck.deploy(v1)
    before = list(truck.client.calls)
    result = truck.deploy(v2, check_mode=True)
    assert_outcome(result, "updated", changed=True)
    assert result["container_id"] is None and result["previous_image_id"] == v1.id
    assert truck.client.calls == before


# --- an interrupted switch is repaired ---------------------------------------------------------
def test_a_lone_running_previous_gets_its_name_back(truck: Truck, v1: FakeImage) -> None:
    serving_id = truck.deploy(v1)["container_id"]
    truck.container(NAME).rename(PREVIOUS)  # power cut right after the demotion

    result = truck.deploy(v1)

    assert_outcome(result, "unchanged", changed=True)
    assert result["container_id"] == serving_id
    assert truck.client.names() == {NAME: "running"}


def test_a_previous_left_running_beside_the_current_is_retired(
    truck: Truck, v1: FakeImage, v2: FakeImage
) -> None:
    truck.deploy(v1)
    truck.deploy(v2)
    truck.container(PREVIOUS).start()  # killed before it was retired

    result = truck.deploy(v2)

    assert_outcome(result, "unchanged", changed=True)
    assert result["previous_image_id"] == v1.id
    assert "retired" in result["reason"]
    assert truck.client.names() == {NAME: "running", PREVIOUS: "exited"}
