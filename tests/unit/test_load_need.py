"""The space a `docker load` needs, credited by chain ID (disk_space.load_need, used by
image_load on the truck and image_delta on the controller): a layer's bytes the engine holds on
other layers below (the shared model layer of an amd64 and an arm64 image) are written again."""

from __future__ import annotations

from .fakes_docker import module_utils

disk_space = module_utils("disk_space")
image_archive = module_utils("image_archive")

BASE_AMD64, BASE_ARM64, MODEL = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
SIZES = {"manifest.json": 100, "config.json": 900, "base/layer.tar": 50_000, "model/layer.tar": 600}
LAYERS = ["base/layer.tar", "model/layer.tar"]


def test_nothing_held_needs_the_archive_unpacked_and_every_layer():
    need = disk_space.load_need(SIZES, LAYERS, [BASE_AMD64, MODEL], set())
    assert need == sum(SIZES.values()) + 50_000 + 600


def test_the_same_image_held_needs_only_the_archive_unpacked():
    held = image_archive.held_chains([[BASE_AMD64, MODEL]])
    assert disk_space.load_need(SIZES, LAYERS, [BASE_AMD64, MODEL], held) == sum(SIZES.values())


def test_the_model_layer_held_on_another_base_is_not_credited():
    """The arm64 engine holds the model layer's diff ID on the arm64 base; an amd64 archive's
    model layer sits on the amd64 base: both its layers are written."""
    held = image_archive.held_chains([[BASE_ARM64, MODEL]])
    need = disk_space.load_need(SIZES, LAYERS, [BASE_AMD64, MODEL], held)
    assert need == sum(SIZES.values()) + 50_000 + 600


def test_the_base_held_credits_the_base_alone():
    held = image_archive.held_chains([[BASE_AMD64]])
    need = disk_space.load_need(SIZES, LAYERS, [BASE_AMD64, MODEL], held)
    assert need == sum(SIZES.values()) + 600
