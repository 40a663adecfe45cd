"""Champion and challenger of the paired gate: where their figures on a fold plan come from.

A contender is a bundle directory, a ``model_card.json`` or a JSON object of training
parameters (as ``train --params``). Its figures on the plan are the ones its card recorded
when that card's fold-plan digest matches (same data, repetitions, folds, seed and fold
assignments: nothing is retrained), otherwise its configuration is evaluated now by repeated
nested CV on the plan. A card written before a parameter existed is evaluated with the value
that reproduces how it was trained (``LEGACY_VALUES``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import CARD_FILE, load_bundle
from .evaluation import CVPlan, repeated_nested_cv
from .gate import Figures
from .training import TrainingParams

# Parameters added after the first model cards, with the value that reproduces the models of
# cards that lack them.
LEGACY_VALUES: dict[str, object] = {
    "max_bin": 256,
    "bags": 1,
    "derived_features": "",
    "threshold_repeats": 1,
    "threshold_smoothing": 0.0,
    "repetitions": 1,
}


class ContenderError(ValueError):
    """A champion or challenger that cannot be read or evaluated."""


@dataclass(frozen=True)
class Contender:
    model: str  # version and where it came from, or the parameters
    params: TrainingParams
    recorded: dict[str, Any] | None  # the card's metrics.repeated_cv


def params_from_record(record: dict[str, Any]) -> TrainingParams:
    """TrainingParams from a card's ``parameters``: absent newer fields take legacy values."""
    known = {spec.name for spec in fields(TrainingParams)}
    unknown = sorted(set(record) - known)
    if unknown:
        raise ContenderError(
            f"parameters {', '.join(unknown)} are unknown to this version: evaluate the "
            "contender with the version of linkedge-image that trained it"
        )
    values = {name: value for name, value in LEGACY_VALUES.items() if name not in record}
    return replace(TrainingParams(), **{**values, **record})


def _card_contender(card: dict[str, Any], where: str) -> Contender:
    try:
        params = params_from_record(card["parameters"])
    except (KeyError, TypeError) as exc:
        raise ContenderError(f"{where} has no usable parameters: {exc!r}") from None
    recorded = (card.get("metrics") or {}).get("repeated_cv")
    return Contender(f"{card.get('version', '?')} ({where})", params, recorded)


def load_contender(spec: str, defaults: TrainingParams | None = None) -> Contender:
    """A bundle directory, a model card file, or a JSON object of parameter overrides
    (applied to ``defaults``, else to TrainingParams())."""
    path = Path(spec)
    if spec.lstrip().startswith("{"):
        try:
            overrides = json.loads(spec)
            params = replace(defaults or TrainingParams(), **overrides)
        except (ValueError, TypeError) as exc:
            raise ContenderError(f"{spec!r} is not a JSON object of parameters: {exc}") from None
        return Contender(f"parameters {json.dumps(overrides, sort_keys=True)}", params, None)
    if path.is_dir():
        return _card_contender(load_bundle(path).card, str(path))
    if path.is_file():
        try:
            card = json.loads(path.read_text())
        except ValueError as exc:
            raise ContenderError(f"{path} is not JSON: {exc}") from None
        return _card_contender(card, str(path))
    raise ContenderError(
        f"{spec} is neither a bundle directory, a {CARD_FILE} nor a JSON object of parameters"
    )


def plan_of(contender: Contender) -> CVPlan:
    """The plan a contender's card recorded, else the one its parameters name."""
    recorded = contender.recorded
    if recorded:
        return CVPlan(recorded["repetitions"], recorded["outer_folds"], recorded["seed"])
    return CVPlan.of(contender.params)


def figures_on_plan(
    contender: Contender,
    plan: CVPlan,
    features: np.ndarray,
    labels: np.ndarray,
    data_id: str,
) -> Figures:
    """The contender's cost ratio per repetition of ``plan``: recorded, or evaluated now."""
    digest = plan.digest(labels, data_id)
    recorded = contender.recorded
    if recorded and recorded.get("fold_plan_sha256") == digest:
        ratios = tuple(float(rep["cost_ratio"]) for rep in recorded["per_repetition"])
        return Figures(contender.model, ratios, digest, "recorded in the model card")
    params = replace(
        contender.params,
        repetitions=plan.repetitions,
        outer_folds=plan.outer_folds,
        seed=plan.seed,
    )
    estimate = repeated_nested_cv(features, labels, params, data_id)
    ratios = tuple(float(ratio) for ratio in estimate.ratios)
    return Figures(contender.model, ratios, digest, f"evaluated now ({estimate.seconds} s)")
