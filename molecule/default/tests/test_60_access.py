"""The API token configured through the role: predictions need it, monitoring does not, and
it lives only in a root-written file on the truck that the container reads, never in the
container's configuration or the image."""

from conftest import SERVICE, TOKEN, inspect, truck_http

TOKEN_FILE = "/etc/linkedge/api-token"


def test_predictions_require_the_token(truck, expected):
    record = dict(zip(expected.features, expected.smoke_vectors[0]["inputs"], strict=True))
    status, body = truck_http(truck, "POST", "/predict", record, token=None)
    assert status == 401, body
    assert "token" in body["error"].lower()
    status, body = truck_http(truck, "POST", "/predict", record, token="not-the-token")
    assert status == 401, body
    status, body = truck_http(truck, "POST", "/predict", record)
    assert status == 200, body
    assert body["predictions"][0]["label"] == expected.smoke_vectors[0]["label"]


def test_health_metadata_and_metrics_stay_open(truck, expected):
    for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/aps-classifier", "/metrics"):
        status, _ = truck_http(truck, "GET", path, token=None)
        assert status == 200, path


def test_the_token_is_a_file_only_the_service_user_reads(host):
    token_file = host.file(TOKEN_FILE)
    assert token_file.exists and token_file.mode == 0o400
    assert token_file.uid == 10001 and token_file.gid == 10001
    assert token_file.content_string.strip() == TOKEN


def test_the_token_is_not_in_the_container_or_image_configuration(host):
    container = inspect(host, SERVICE)
    assert TOKEN not in host.check_output(f"docker inspect {SERVICE}")
    assert TOKEN not in host.check_output(f"docker image inspect {container['Image']}")
    mounts = {m["Destination"]: m for m in container["Mounts"]}
    assert mounts["/run/secrets/linkedge-api-token"]["Source"] == TOKEN_FILE
    assert mounts["/run/secrets/linkedge-api-token"]["RW"] is False
