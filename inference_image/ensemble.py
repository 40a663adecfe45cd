"""A seed-bagged ensemble served as ONE XGBoost model: the boosters' trees, concatenated.

The merged model's margin is the mean of the members' margins (their shared base score plus
every member's trees with leaf values scaled by 1/B), so its probability is the sigmoid of
the mean log-odds, not the mean of the members' probabilities. Training evaluates the merged
model itself, never the members, so the estimate is of exactly what is served.
"""

from __future__ import annotations

import json
from typing import Any

import xgboost as xgb


class EnsembleError(ValueError):
    """The boosters cannot be merged into one model."""


def _gbtree(model: dict[str, Any]) -> dict[str, Any]:
    return model["learner"]["gradient_booster"]["model"]


def _scaled_tree(tree: dict[str, Any], scale: float, new_id: int) -> dict[str, Any]:
    tree = dict(tree)
    leaves = [index for index, left in enumerate(tree["left_children"]) if left == -1]
    conditions = list(tree["split_conditions"])
    weights = list(tree["base_weights"])
    for index in leaves:  # a leaf's value is its split_condition (base_weight: the same value)
        conditions[index] *= scale
        weights[index] *= scale
    tree["split_conditions"] = conditions
    tree["base_weights"] = weights
    tree["id"] = new_id
    return tree


def merge_boosters(boosters: list[xgb.Booster]) -> xgb.Booster:
    """One booster whose margin is the mean of the given boosters' margins."""
    if not boosters:
        raise EnsembleError("no boosters to merge")
    if len(boosters) == 1:
        return boosters[0]
    models = [json.loads(bytes(booster.save_raw(raw_format="json"))) for booster in boosters]
    first = models[0]
    for model in models[1:]:
        if model["learner"]["learner_model_param"] != first["learner"]["learner_model_param"]:
            raise EnsembleError("the boosters differ in base score, objective or feature count")
        if _gbtree(model)["gbtree_model_param"]["num_parallel_tree"] != "1":
            raise EnsembleError("only boosters with one tree per round can be merged")
    scale = 1.0 / len(models)
    trees = [tree for model in models for tree in _gbtree(model)["trees"]]
    merged_trees = [_scaled_tree(tree, scale, index) for index, tree in enumerate(trees)]
    gbtree = _gbtree(first)
    gbtree["trees"] = merged_trees
    gbtree["tree_info"] = [0] * len(merged_trees)
    gbtree["iteration_indptr"] = list(range(len(merged_trees) + 1))
    gbtree["gbtree_model_param"] = {"num_parallel_tree": "1", "num_trees": str(len(merged_trees))}
    merged = xgb.Booster()
    merged.load_model(bytearray(json.dumps(first).encode()))
    return merged
