"""LINKEDGE_MQTT_*: the settings the MQTT adapter reads, and the server refusing bad ones
(one line naming the variable, exit status 2, before gunicorn starts)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from inference_image import contract
from inference_image.serving.config import ServingConfig
from inference_image.serving.mqtt_config import MqttSettings


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "mqtt.password"
    path.write_text("s3cret-Pass\n")
    return path


def test_unset_or_empty_host_means_no_adapter():
    assert MqttSettings.from_env({}) is None
    assert MqttSettings.from_env({contract.ENV_MQTT_HOST: "  "}) is None
    assert ServingConfig.from_env({}).mqtt is None


def test_every_setting(password_file: Path, tmp_path: Path):
    env = {
        contract.ENV_MQTT_HOST: "broker.local",
        contract.ENV_MQTT_PORT: "8883",
        contract.ENV_MQTT_TRUCK: "truck-42",
        contract.ENV_MQTT_USERNAME: "linkedge-inference",
        contract.ENV_MQTT_PASSWORD_FILE: str(password_file),
        contract.ENV_MQTT_CLIENT_ID: "linkedge-inference-ab12cd34",
        contract.ENV_MQTT_STATE_DIR: str(tmp_path),
    }
    settings = MqttSettings.from_env(env)
    assert settings is not None
    assert (settings.host, settings.port, settings.truck) == ("broker.local", 8883, "truck-42")
    assert (settings.username, settings.password) == ("linkedge-inference", "s3cret-Pass")
    assert settings.state_dir == tmp_path
    assert settings.worker_client_id(1) == "linkedge-inference-ab12cd34-1"
    assert settings.features_filter == "$share/linkedge-aps/linkedge/truck-42/aps/features"
    assert settings.predictions_topic == "linkedge/truck-42/aps/predictions"
    assert settings.errors_topic == "linkedge/truck-42/aps/errors"
    assert settings.alerts_topic == "linkedge/truck-42/aps/alerts"
    assert "s3cret" not in repr(settings)
    assert ServingConfig.from_env(env).mqtt == settings


def test_defaults():
    settings = MqttSettings.from_env(
        {contract.ENV_MQTT_HOST: "127.0.0.1", "LINKEDGE_MQTT_TRUCK": "t1"}
    )
    assert settings is not None
    assert settings.port == contract.MQTT_DEFAULT_PORT == 1883
    assert settings.username is None and settings.password is None and settings.state_dir is None
    assert settings.client_id == f"linkedge-t1-{socket.gethostname()}"


BAD = {
    # variable: (value, text of the message); the others are good
    contract.ENV_MQTT_PORT: ("mqtt", "must be a positive integer"),
    contract.ENV_MQTT_TRUCK: ("a/b", "must match"),
    contract.ENV_MQTT_CLIENT_ID: ("has space", "must match"),
    contract.ENV_MQTT_PASSWORD_FILE: ("/nonexistent/password", "cannot be read"),
    contract.ENV_MQTT_STATE_DIR: ("/nonexistent/state", "is not a directory"),
    contract.ENV_MQTT_HOST: ("two words", "must be a host name"),
}


def good_env(password_file: Path) -> dict[str, str]:
    return {
        contract.ENV_MQTT_HOST: "127.0.0.1",
        contract.ENV_MQTT_TRUCK: "truck-1",
        contract.ENV_MQTT_USERNAME: "linkedge-inference",
        contract.ENV_MQTT_PASSWORD_FILE: str(password_file),
    }


@pytest.mark.parametrize("variable", list(BAD))
def test_a_bad_value_names_its_variable(variable: str, password_file: Path):
    value, text = BAD[variable]
    with pytest.raises(ValueError) as info:
        MqttSettings.from_env({**good_env(password_file), variable: value})
    assert variable in str(info.value) and text in str(info.value)


def test_missing_truck_empty_password_and_password_without_user(password_file: Path, tmp_path):
    env = good_env(password_file)
    with pytest.raises(ValueError, match=f"{contract.ENV_MQTT_TRUCK} must be set"):
        MqttSettings.from_env({k: v for k, v in env.items() if k != contract.ENV_MQTT_TRUCK})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty; expected the MQTT password"):
        MqttSettings.from_env({**env, contract.ENV_MQTT_PASSWORD_FILE: str(empty)})
    with pytest.raises(ValueError, match="set but empty"):
        MqttSettings.from_env({**env, contract.ENV_MQTT_PASSWORD_FILE: " "})
    with pytest.raises(ValueError, match=f"needs {contract.ENV_MQTT_USERNAME}"):
        MqttSettings.from_env({k: v for k, v in env.items() if k != contract.ENV_MQTT_USERNAME})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (contract.ENV_MQTT_TRUCK, ""),
        (contract.ENV_MQTT_TRUCK, "truck/1"),
        (contract.ENV_MQTT_PORT, "70000"),
        (contract.ENV_MQTT_PASSWORD_FILE, "/nonexistent/password"),
        (contract.ENV_MQTT_STATE_DIR, "/nonexistent/state"),
        ("LINKEDGE_WORKER_CLASS", "sync"),
    ],
)
def test_the_server_exits_2_naming_the_variable(
    tiny_bundle, password_file, capsys, monkeypatch, variable: str, value: str
):
    from inference_image.serving import server

    def must_not_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("gunicorn was started despite a bad setting")

    monkeypatch.setattr(server, "_LinkEdgeApplication", must_not_start)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    env = {"LINKEDGE_BUNDLE": str(tiny_bundle.path), **good_env(password_file), variable: value}
    with pytest.raises(SystemExit) as info:
        server.run_from_env(env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("linkedge-serve: error: ")
    wanted = contract.ENV_MQTT_HOST if variable == "LINKEDGE_WORKER_CLASS" else variable
    assert wanted in err
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
