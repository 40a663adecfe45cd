"""Role docker_engine: the distribution's Docker, configured, enabled and running."""

import json


def test_docker_is_active_and_enabled(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_packages_from_the_distribution(host):
    assert host.package("docker.io").is_installed
    assert host.package("python3-docker").is_installed


def test_daemon_json_is_applied(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["live-restore"] is True
    assert config["log-driver"] == "json-file"
    assert config["log-opts"] == {"max-size": "10m", "max-file": "3"}
    # dockerd runs with it (a changed daemon.json is applied by the handler's restart)
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"
    assert info["Driver"] == "overlay2"


def test_no_archive_left_on_the_truck(host):
    assert not host.file("/var/tmp/linkedge").exists
