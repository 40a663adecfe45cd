"""Which loads the bench runs: each case names its body per server kind and its concurrency."""

from __future__ import annotations

from dataclasses import dataclass

from .bodies import Body, BodyFactory


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    rows: int
    connections: int
    bodies: dict[str, Body]  # server kind -> body; a kind without a body sits the case out
    compare_with: str | None = None  # for a LinkEdge-only case: the MLServer case it is set against


def full_cases(factory: BodyFactory) -> list[Case]:
    predict1 = factory.predict(1)
    json1 = factory.v2_json(1)
    binary1 = factory.v2_binary(1)
    json100, binary100 = factory.v2_json(100), factory.v2_binary(100)
    json1000, binary1000 = factory.v2_json(1000), factory.v2_binary(1000)
    cases = [
        Case(
            "single-predict",
            "1 record, /predict JSON (MLServer: V2 JSON)",
            1,
            16,
            {"linkedge": predict1, "mlserver": json1},
        ),
    ]
    for connections in (1, 4, 16, 64):
        cases.append(
            Case(
                f"single-v2-c{connections}",
                "1 record, V2 JSON",
                1,
                connections,
                {"linkedge": json1, "mlserver": json1},
            )
        )
    cases += [
        Case(
            "single-v2-binary",
            "1 record, V2 binary",
            1,
            16,
            {"linkedge": binary1},
            compare_with="single-v2-c16",
        ),
        Case(
            "batch-100-json",
            "100 rows, V2 JSON",
            100,
            4,
            {"linkedge": json100, "mlserver": json100},
        ),
        Case(
            "batch-100-binary",
            "100 rows, V2 binary",
            100,
            4,
            {"linkedge": binary100},
            compare_with="batch-100-json",
        ),
        Case(
            "batch-1000-json",
            "1,000 rows, V2 JSON",
            1000,
            4,
            {"linkedge": json1000, "mlserver": json1000},
        ),
        Case(
            "batch-1000-binary",
            "1,000 rows, V2 binary",
            1000,
            4,
            {"linkedge": binary1000},
            compare_with="batch-1000-json",
        ),
    ]
    return cases


def smoke_cases(factory: BodyFactory) -> list[Case]:
    """A few seconds: one case per API, tiny concurrency."""
    json1 = factory.v2_json(1)
    return [
        Case(
            "single-predict",
            "1 record, /predict JSON (MLServer: V2 JSON)",
            1,
            2,
            {"linkedge": factory.predict(1), "mlserver": json1},
        ),
        Case("single-v2-c2", "1 record, V2 JSON", 1, 2, {"linkedge": json1, "mlserver": json1}),
        Case(
            "batch-100-binary",
            "100 rows, V2 binary",
            100,
            2,
            {"linkedge": factory.v2_binary(100)},
        ),
    ]
