"""After the side effect (site.yml again with release v2): v2 serves, v1 is kept as previous."""

import json

import pytest
from conftest import SERVICE, inspect


@pytest.fixture(autouse=True)
def _only_after_the_switch(previous):
    if previous is None:
        pytest.skip("the truck has not been switched to v2 yet (side effect)")


def test_both_images_are_on_the_truck(host, releases):
    for release in releases.values():
        image = inspect(host, release.image_id)
        assert image["Config"]["Labels"]["io.linkedge.model.version"] == release.model_version


def test_previous_container_keeps_v1(host, previous):
    container = inspect(host, f"{SERVICE}-previous")
    assert container["Image"] == previous.image_id
    # Docker cannot relabel a container: the demoted one is recognised by its name and keeps
    # the labels it was created with.
    assert container["Config"]["Labels"]["io.linkedge.model.version"] == previous.model_version
    assert container["State"]["Running"] is False


def test_edge_facts_record_serving_and_previous(host, expected, previous):
    result = host.ansible("linkedge.edge.edge_facts", f"name={SERVICE}", check=False)
    facts = result["ansible_facts"]["linkedge"]
    assert facts["serving"]["model_version"] == expected.model_version
    assert facts["serving"]["image_id"] == expected.image_id
    assert facts["previous"]["model_version"] == previous.model_version
    assert facts["previous"]["image_id"] == previous.image_id
    assert facts["previous"]["available"] is True
    versions = {image["model_version"] for image in facts["images"]}
    assert {expected.model_version, previous.model_version} <= versions, json.dumps(facts)
