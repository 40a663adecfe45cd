"""The bearer token: read from its file, required by the endpoints that run the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from inference_image.bundle import ModelBundle
from inference_image.serving.app import create_app
from inference_image.serving.auth import BearerAuth, read_token_file
from inference_image.serving.config import ServingConfig

TOKEN = b"tok-3f9a8e"
INFER = "/v2/models/aps-classifier/infer"


@pytest.fixture(scope="module")
def app(tiny_bundle: ModelBundle) -> Flask:
    return create_app(tiny_bundle, ServingConfig(api_token=TOKEN))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bodies(bundle: ModelBundle) -> dict[str, dict[str, Any]]:
    inputs = bundle.smoke_vectors[0]["inputs"]
    return {
        "/predict": dict(zip(bundle.feature_names, inputs, strict=True)),
        INFER: {"inputs": [{"name": "i", "shape": [170], "datatype": "FP32", "data": inputs}]},
        f"/v2/models/aps-classifier/versions/{bundle.version}/infer": {
            "inputs": [{"name": "i", "shape": [170], "datatype": "FP32", "data": inputs}]
        },
    }


@pytest.mark.parametrize("via_flask", [False, True], ids=["fastpath", "flask"])
@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing bearer token: send the header Authorization: Bearer <token>"),
        ("", "missing bearer token: send the header Authorization: Bearer <token>"),
        ("Bearer tok-3f9a8", "invalid bearer token"),
        ("Bearer tok-3f9a8e2", "invalid bearer token"),
        ("Bearer", "invalid bearer token"),
        ("Bearer \u00e9", "invalid bearer token"),
        ("Basic dG9rLTNmOWE4ZQ==", "Authorization must use the Bearer scheme, got 'Basic'"),
        ("tok-3f9a8e", "Authorization must use the Bearer scheme, got 'tok-3f9a8e'"),
    ],
)
def test_without_the_token_predictions_are_401(
    app: Flask,
    tiny_bundle: ModelBundle,
    via_flask: bool,
    authorization: str | None,
    message: str,
) -> None:
    if via_flask:  # the Flask views behind the fast path
        app = Flask("flask-only")
        app.wsgi_app = create_app(tiny_bundle, ServingConfig(api_token=TOKEN)).wsgi_app.app  # type: ignore[method-assign]
    client = app.test_client()
    headers = {} if authorization is None else {"Authorization": authorization}
    for path, body in bodies(tiny_bundle).items():
        response = client.post(
            path, data=orjson.dumps(body), headers=headers, content_type="application/json"
        )
        assert response.status_code == 401, response.data
        assert response.get_json() == {"error": message}
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="linkedge"')


def test_with_the_token_predictions_answer(client: FlaskClient, tiny_bundle: ModelBundle) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        for path, body in bodies(tiny_bundle).items():
            response = client.post(
                path, json=body, headers={"Authorization": f"{scheme} tok-3f9a8e"}
            )
            assert response.status_code == 200, response.data


def test_health_metadata_and_metrics_stay_open(client: FlaskClient, tiny_bundle: ModelBundle):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/aps-classifier",
        "/v2/models/aps-classifier/ready",
        f"/v2/models/aps-classifier/versions/{tiny_bundle.version}",
        f"/v2/models/aps-classifier/versions/{tiny_bundle.version}/ready",
        "/metrics",
        "/openapi.json",
    ):
        assert client.get(path).status_code == 200, path
    client.post("/predict", json={})
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'endpoint="/predict",method="POST",status="401"' in metrics


def test_the_document_declares_the_scheme(client: FlaskClient, tiny_bundle: ModelBundle) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, operation in document["paths"].items():
        for method, spec in operation.items():
            guarded = method == "post"
            assert ("security" in spec) is guarded, (path, method)
            assert ("401" in spec["responses"]) is guarded, (path, method)
    open_document = create_app(tiny_bundle).test_client().get("/openapi.json").get_json()
    assert "bearerAuth" in open_document["components"]["securitySchemes"]
    assert not any(
        "security" in spec for op in open_document["paths"].values() for spec in op.values()
    )


def test_read_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"  abc.DEF-123_~+/=\n")
    assert read_token_file(token_file) == b"abc.DEF-123_~+/="
    for content, fragment in (
        (b"", "is empty"),
        (b" \n\t", "is empty"),
        (b"two words", "printable ASCII characters without spaces"),
        ("t\u00f6ken".encode(), "printable ASCII characters without spaces"),
        (b"x" * 5000, "larger than 4096 bytes"),
    ):
        token_file.write_bytes(content)
        with pytest.raises(ValueError, match=fragment) as info:
            read_token_file(token_file)
        assert str(info.value).startswith(f"LINKEDGE_API_TOKEN_FILE ({token_file})")
    with pytest.raises(ValueError, match="cannot be read: No such file or directory"):
        read_token_file(tmp_path / "absent")


def test_config_reads_the_token_file_and_hides_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    config = ServingConfig.from_env({"LINKEDGE_API_TOKEN_FILE": str(token_file)})
    assert config.api_token == b"abc123"
    assert "abc123" not in repr(config)
    assert "abc123" not in repr(BearerAuth(b"abc123"))
    assert ServingConfig.from_env({}).api_token is None
    with pytest.raises(ValueError, match="LINKEDGE_API_TOKEN_FILE is set but empty"):
        ServingConfig.from_env({"LINKEDGE_API_TOKEN_FILE": " "})
    with pytest.raises(ValueError, match="must not be empty"):
        ServingConfig(api_token=b"")
