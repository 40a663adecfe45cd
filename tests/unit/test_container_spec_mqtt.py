"""The serving container's MQTT settings (plugins/module_utils/container_spec.py): what the
inference_container module's ``mqtt`` option turns into, for a serving container and a
candidate, and what it refuses."""

from __future__ import annotations

import pytest

from .fakes_docker import FakeImage, module_utils

contract = module_utils("contract")
container_spec = module_utils("container_spec")

PARAMS = {
    "memory": "512m",
    "tmpfs_size": "64m",
    "cpus": 2.0,
    "bind_address": "127.0.0.1",
    "published_port": 18080,
    "env": {},
    "api_token_file": None,
    "pids_limit": 256,
    "restart_policy": "unless-stopped",
}
MQTT = {
    "truck": "truck-042",
    "host": "127.0.0.1",
    "port": 1883,
    "username": "linkedge-inference",
    "password_file": "/etc/linkedge/mqtt-inference.password",
    "state_dir": "/var/lib/linkedge/mqtt",
}
IMAGE = FakeImage("linkedge/aps-classifier:1.0.0")


def spec(mqtt: dict | None = None) -> dict:
    return container_spec.desired_spec({**PARAMS, "mqtt": mqtt}, IMAGE)


def create(spec_: dict, candidate: bool = False) -> dict:
    return container_spec.create_kwargs(
        spec_, IMAGE, IMAGE.tag, "linkedge-inference", "linkedge-inference", candidate
    )


def test_without_mqtt_the_fingerprint_is_what_it_was():
    assert "mqtt" not in spec(None)
    assert container_spec.config_hash(spec(None)) == container_spec.config_hash(spec({}))
    env = create(spec(None))["environment"]
    assert not [name for name in env if name.startswith("LINKEDGE_MQTT_")]


def test_a_serving_container_gets_the_bus_its_secret_and_its_state_dir():
    kwargs = create(spec(MQTT))
    env = kwargs["environment"]
    assert env[contract.ENV_MQTT_HOST] == "127.0.0.1"
    assert env[contract.ENV_MQTT_PORT] == "1883"
    assert env[contract.ENV_MQTT_TRUCK] == "truck-042"
    assert env[contract.ENV_MQTT_USERNAME] == "linkedge-inference"
    assert env[contract.ENV_MQTT_PASSWORD_FILE] == contract.MQTT_PASSWORD_MOUNT
    assert env[contract.ENV_MQTT_STATE_DIR] == contract.MQTT_STATE_MOUNT
    assert env[contract.ENV_MQTT_CLIENT_ID].startswith("linkedge-inference-")
    assert kwargs["volumes"][MQTT["password_file"]] == {
        "bind": contract.MQTT_PASSWORD_MOUNT,
        "mode": "ro",
    }
    assert kwargs["volumes"][MQTT["state_dir"]]["mode"] == "rw"


def test_each_container_has_its_own_client_id_outside_the_fingerprint():
    first, second = create(spec(MQTT)), create(spec(MQTT))
    ids = {kwargs["environment"][contract.ENV_MQTT_CLIENT_ID] for kwargs in (first, second)}
    assert len(ids) == 2
    label = contract.LABEL_CONFIG_SHA256
    assert first["labels"][label] == second["labels"][label]
    assert first["labels"][label] != create(spec(None))["labels"][label]


def test_the_candidate_never_joins_the_bus():
    kwargs = create(spec(MQTT), candidate=True)
    assert not [name for name in kwargs["environment"] if name.startswith("LINKEDGE_MQTT_")]
    assert contract.MQTT_PASSWORD_MOUNT not in [v["bind"] for v in kwargs["volumes"].values()]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"truck": "a/b"}, "is not a truck id"),
        ({"truck": "#"}, "is not a truck id"),
        ({"port": 70000}, "is not a TCP port"),
        ({"password_file": None}, "go together"),
    ],
)
def test_bad_mqtt_settings_are_refused_with_what_to_fix(change, message):
    with pytest.raises(container_spec.SpecError, match=message):
        spec({**MQTT, **change})


def test_env_may_not_set_the_mqtt_variables():
    with pytest.raises(container_spec.SpecError, match="LINKEDGE_MQTT_TRUCK"):
        container_spec.desired_spec(
            {**PARAMS, "env": {contract.ENV_MQTT_TRUCK: "other"}, "mqtt": None}, IMAGE
        )
