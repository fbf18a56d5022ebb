"""Benchmark figures per server, and their rendering as a side-by-side table and as JSON."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HIGHER = "higher"
LOWER = "lower"
SERVER_TITLES = {"ferry": "Ferry", "orthanc": "Orthanc"}
MISSING = "–"
FAILED = "ERR"
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class Figure:
    """One measured number for one server; `group` is the unit of work that produced it."""

    group: str
    key: str
    label: str
    unit: str
    better: str
    value: float | None  # None: not applicable to this server (memory of a server given by URL)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    group: str
    key: str
    label: str
    unit: str
    better: str
    values: dict[str, float | None] = field(default_factory=dict)
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)


class Report:
    """Figures from every server, in the order the measures ran; failures kept beside them.

    `compare` names two columns whose ratio (first / second) gets a column of its own, or a list
    of such pairs, each with its own ratio column.
    """

    def __init__(
        self,
        servers: Sequence[str],
        titles: Mapping[str, str] = SERVER_TITLES,
        compare: tuple[str, str] | Sequence[tuple[str, str]] | None = ("ferry", "orthanc"),
    ) -> None:
        self.servers = list(servers)
        self.titles = dict(titles)
        pairs = [compare] if compare and isinstance(compare[0], str) else list(compare or [])
        self.comparisons: list[tuple[str, str]] = [
            (first, second)
            for first, second in pairs  # type: ignore[misc]
            if {first, second} <= set(self.servers)
        ]
        self.compare = self.comparisons[0] if self.comparisons else None
        self.rows: dict[str, Row] = {}
        self.failures: dict[str, dict[str, str]] = {}
        self.failure_labels: dict[str, str] = {}

    def add(self, server: str, figures: Iterable[Figure]) -> None:
        for figure in figures:
            row = self.rows.setdefault(
                figure.key,
                Row(figure.group, figure.key, figure.label, figure.unit, figure.better),
            )
            row.values[server] = figure.value
            row.raw[server] = figure.raw

    def fail(self, server: str, group: str, label: str, error: str) -> None:
        self.failures.setdefault(group, {})[server] = error
        self.failure_labels.setdefault(group, label)
        if not any(row.group == group for row in self.rows.values()):
            self.rows[group] = Row(group, group, label, "", "")

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def visible_rows(self) -> list[Row]:
        """Placeholder rows of failed groups give way to real figures of the same group."""
        real = {row.group for row in self.rows.values() if row.key != row.group}
        return [row for row in self.rows.values() if row.key != row.group or row.group not in real]

    def cell(self, row: Row, server: str) -> str:
        if server in row.values:
            value = row.values[server]
            return NOT_APPLICABLE if value is None else format_number(value)
        return FAILED if server in self.failures.get(row.group, {}) else MISSING

    def title(self, server: str) -> str:
        return self.titles.get(server, server)

    def render_table(self, title: str, note: str | None = None) -> str:
        """`note` replaces the lines explaining the ratio columns under the table."""
        comparisons = self.comparisons
        header = ["measure", "unit", *(self.title(s) for s in self.servers)]
        header += [f"{self.title(first)}/{self.title(second)}" for first, second in comparisons]
        if comparisons:
            header.append("better")
        lines = [header]
        for row in self.visible_rows():
            line = [row.label, row.unit, *(self.cell(row, s) for s in self.servers)]
            line += [_ratio(row, *pair) for pair in comparisons]
            if comparisons:
                line.append(row.better)
            lines.append(line)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = [title, ""]
        for number, line in enumerate(lines):
            cells = [
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            text.append("  ".join(cells).rstrip())
            if number == 0:
                text.append("  ".join("-" * w for w in widths))
        if comparisons and note is not None:
            text += ["", note]
        elif comparisons:
            text += ["", *_ratio_note([(self.title(a), self.title(b)) for a, b in comparisons])]
        text += [
            f"{FAILED} {self.title(server)} {self.failure_labels[group]}: {error}"
            for group, errors in self.failures.items()
            for server, error in errors.items()
        ]
        return "\n".join(text)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "group": row.group,
                "key": row.key,
                "label": row.label,
                "unit": row.unit,
                "better": row.better,
                "values": {server: row.values.get(server) for server in self.servers},
                "errors": self.failures.get(row.group, {}),
                "raw": row.raw,
            }
            for row in self.visible_rows()
        ]


def latency_figures(
    group: str, key: str, label: str, seconds: Sequence[float], **raw: Any
) -> list[Figure]:
    """p50 and p95 in milliseconds, each carrying every sample."""
    ms = np.asarray(seconds) * 1000.0
    detail = {**raw, "n": len(ms), "samples_ms": [round(float(v), 3) for v in ms]}
    return [
        Figure(
            group, f"{key}.p{q}", f"{label} p{q}", "ms", LOWER, float(np.percentile(ms, q)), detail
        )
        for q in (50, 95)
    ]


def format_number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio_note(pairs: list[tuple[str, str]]) -> list[str]:
    first = pairs[0][0]
    if len(pairs) == 1:
        second = pairs[0][1]
        return [
            f"{first}/{second} is {first}'s figure divided by {second}'s; 'better' is the",
            f"direction that favours {first} (higher: a ratio above 1 is better; lower: below"
            " 1 is better).",
        ]
    return [
        *(f"{a}/{b} is {a}'s figure divided by {b}'s." for a, b in pairs),
        f"'better' is the direction that favours {first} (higher: a ratio above 1 is better;"
        " lower: below 1 is better).",
    ]


def _ratio(row: Row, first: str, second: str) -> str:
    numerator, denominator = row.values.get(first), row.values.get(second)
    if numerator is None or denominator is None or denominator == 0:
        return MISSING
    return f"{numerator / denominator:.2f}×"


def emit(table: str, data: bytes, *, as_json: bool, output: str | None, default: Path) -> None:
    """The table on standard output and the JSON to a file (or JSON on stdout, table on stderr)."""
    from _progress import log

    if as_json:
        print(table, file=sys.stderr)
        sys.stdout.buffer.write(data + b"\n")
        return
    print(table)
    path = Path(output) if output else default
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data + b"\n")
    log(f"raw figures written to {path}")
