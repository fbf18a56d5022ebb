"""Targets judged on one run's figures: issue 3's for viewing (frames, rendered, thumbnail) here,
other benchmarks' passed in."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from _report import Report, format_number


@dataclass(frozen=True)
class ViewingTarget:
    """`key`'s figure for the judged server, compared with `limit` (or another server's, times
    `factor`: 0.6 for "at least 60 % of storescp's")."""

    name: str
    key: str
    unit: str
    relation: str  # "<", "<=" or ">="
    limit: float | None = None
    against: str | None = None  # the server whose figure is the limit
    factor: float = 1.0  # the share of `against`'s figure that is the limit


TARGETS = (
    ViewingTarget("single native frame p50, at or below Orthanc's", "frames.native.p50", "ms",
                  "<=", against="orthanc"),
    ViewingTarget("all frames in one request, share of the series retrieve MB/s",
                  "frames.multi.fraction", "%", ">=", 80.0),
    ViewingTarget("rendered JPEG of a CT slice p50", "rendered.p50", "ms", "<", 30.0),
    ViewingTarget("series thumbnail p50, from cache", "thumbnail.p50", "ms", "<", 5.0),
)  # fmt: skip
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
}


def judge(
    report: Report, server: str = "ferry", targets: Sequence[ViewingTarget] = TARGETS
) -> list[dict[str, Any]]:
    """Each target with the figure, the limit and `met`: None when either was not measured."""
    judged = []
    for target in targets:
        row = report.rows.get(target.key)
        value = row.values.get(server) if row else None
        limit = target.limit
        if target.against:
            against = row.values.get(target.against) if row else None
            limit = None if against is None else against * target.factor
        met = None if value is None or limit is None else _COMPARE[target.relation](value, limit)
        judged.append(
            {**asdict(target), "server": server, "value": value, "limit": limit, "met": met}
        )
    return judged


def render_targets(
    judged: list[dict[str, Any]], title: str, heading: str = "Targets (issue 3)"
) -> str:
    lines = [f"{heading}, {title}:"]
    for target in judged:
        value, limit, unit = target["value"], target["limit"], target["unit"]
        shown = "n/a" if value is None else f"{format_number(value)} {unit}"
        bound = "n/a" if limit is None else f"{format_number(limit)} {unit}"
        verdict = {True: "met", False: "MISSED", None: "not judged"}[target["met"]]
        lines.append(f"  {target['name']}: {shown} ({target['relation']} {bound}): {verdict}")
    return "\n".join(lines)
