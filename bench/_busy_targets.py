"""Issue 14's table: Ferry against Orthanc where a busy exchange spends its day, each row's
ratio judged against its target, and the figures already won kept beside them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _report import Report, format_number

REFERENCE = "reference"  # the physical reference's column: the same bytes from a bare server


@dataclass(frozen=True)
class BusyTarget:
    """`keys`' Ferry/Orthanc ratio (the largest, for several) compared with `limit`; with
    `absolute`, Ferry's own figure (the largest of `keys`) is compared instead."""

    name: str
    keys: tuple[str, ...]
    unit: str
    relation: str  # ">=" or "<="
    limit: float | None  # None: shown, not judged
    absolute: bool = False


def busy_targets(clients: int, qido_sizes: Sequence[int]) -> list[BusyTarget]:
    small, large = min(qido_sizes), max(qido_sizes)
    qido_mix = ("patient_id", "patient_name", "study_date", "accession", "modalities",
                "study_list", "study_series", "series_instances", "sop_instance")  # fmt: skip
    return [
        BusyTarget("STOW-RS 512×512 CT, 1 client", ("stow.c1.rate",), "inst/s", ">=", 1.3),
        BusyTarget(f"STOW-RS, {clients} clients", (f"stow.c{clients}.rate",), "inst/s", ">=",
                   1.5),
        BusyTarget("WADO-RS series retrieve, curl, 1 client", ("wado.series.throughput",),
                   "MB/s", ">=", 1.2),
        BusyTarget(f"WADO-RS series retrieve, curl, {clients} clients",
                   (f"wado.series.c{clients}.throughput",), "MB/s", ">=", 1.2),
        BusyTarget("p50 instance /metadata", ("metadata.instance.p50",), "ms", "<=", 1.0),
        BusyTarget("p50 /frames/1 (512×512 native)", ("frames.native.p50",), "ms", "<=", 1.0),
        BusyTarget(f"p50 QIDO by AccessionNumber ({small:,})", (f"qido.{small}.accession.p50",),
                   "ms", "<=", 1.0),
        BusyTarget("p50 no-op authenticated request", ("floor.p50",), "ms", "<=", None),
        BusyTarget("kept: ingest peak PSS of the tree (Ferry, MiB)",
                   ("stow.c1.peak_pss", f"stow.c{clients}.peak_pss"), "MiB", "<=", 300.0,
                   absolute=True),
        BusyTarget("  (the same, VmHWM summed over processes)",
                   ("stow.c1.peak_rss", f"stow.c{clients}.peak_rss"), "MiB", "<=", None,
                   absolute=True),
        BusyTarget("kept: study metadata p50", ("metadata.study.p50",), "ms", "<=", 0.1),
        BusyTarget("kept: frame N of the multi-frame p50", ("frames.nth.p50",), "ms", "<=",
                   0.05),
        BusyTarget(f"kept: QIDO at {large:,}, worst p50 of the mix",
                   tuple(f"qido.{large}.{key}.p50" for key in qido_mix), "ms", "<=", 0.5),
    ]  # fmt: skip


def judge_busy(report: Report, targets: Sequence[BusyTarget]) -> list[dict[str, Any]]:
    """Each target with the figures of its deciding key: the worst ratio of several (or, for an
    absolute target, Ferry's largest figure), and `met` (None when not measured or no limit)."""
    judged = []
    for target in targets:
        pairs = [(f, o) for f, o in (_pair(report, key) for key in target.keys) if f is not None]
        if target.absolute:
            chosen = max(pairs, default=(None, None), key=lambda pair: pair[0] or 0.0)
        else:
            compared = [pair for pair in pairs if pair[1]]
            furthest = max if target.relation == "<=" else min
            chosen = furthest(compared, default=(None, None), key=lambda p: p[0] / p[1])
        ferry, orthanc = chosen
        ratio = ferry / orthanc if ferry is not None and orthanc else None
        value = ferry if target.absolute else ratio
        met = None
        if value is not None and target.limit is not None:
            met = value >= target.limit if target.relation == ">=" else value <= target.limit
        judged.append({
            "name": target.name, "keys": list(target.keys), "unit": target.unit,
            "ferry": ferry, "orthanc": orthanc, "ratio": ratio, "relation": target.relation,
            "limit": target.limit, "absolute": target.absolute, "met": met,
        })  # fmt: skip
    return judged


def render_busy(judged: Sequence[dict[str, Any]]) -> str:
    header = ["Issue 14", "unit", "Ferry", "Orthanc", "ratio", "target", "met"]
    lines = [header]
    for row in judged:
        limit = row["limit"]
        suffix = "" if row["absolute"] else "×"
        target = "–" if limit is None else f"{row['relation']} {format_number(limit)}{suffix}"
        lines.append([
            row["name"], row["unit"], _number(row["ferry"]), _number(row["orthanc"]),
            "–" if row["ratio"] is None else f"{row['ratio']:.2f}×", target,
            {True: "met", False: "MISSED", None: "–"}[row["met"]],
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for number, line in enumerate(lines):
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        text.append("  ".join(cells).rstrip())
        if number == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def _pair(report: Report, key: str) -> tuple[float | None, float | None]:
    row = report.rows.get(key)
    if row is None:
        return None, None
    return row.values.get("ferry"), row.values.get("orthanc")


def _number(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else format_number(value)


def reference_shares(report: Report, clients: int) -> list[dict[str, Any]]:
    """Each series retrieve's physical reference (`REFERENCE`'s figure) and what share of it
    Ferry and Orthanc reached in the same run."""
    shares = []
    for name, key in (("1 client", "wado.series.throughput"),
                      (f"{clients} clients", f"wado.series.c{clients}.throughput")):  # fmt: skip
        row = report.rows.get(key)
        values = row.values if row else {}
        reference = values.get(REFERENCE)
        shares.append({
            "name": f"WADO-RS series retrieve, curl, {name}", "key": key, "unit": "MB/s",
            "reference": reference,
            **{server: values.get(server) for server in ("ferry", "orthanc")},
            **{f"{server}_share": values[server] / reference
               for server in ("ferry", "orthanc")
               if reference and values.get(server) is not None},
        })  # fmt: skip
    return shares


def render_references(shares: Sequence[dict[str, Any]]) -> str:
    """The physical reference under issue 14's table: its MB/s and each server's share of it."""
    lines = ["Physical reference, same run: curl reading the same answer from a bare loopback "
             "server (each series' body made once into a file, sent by one sendfile)"]  # fmt: skip
    for row in shares:
        reached = ", ".join(
            f"{title} {_number(row.get(server))} ({row[f'{server}_share']:.0%})"
            for server, title in (("ferry", "Ferry"), ("orthanc", "Orthanc"))
            if f"{server}_share" in row
        )
        lines.append(f"  {row['name']}: {_number(row['reference'])} {row['unit']}"
                     + (f"; {reached}" if reached else ""))  # fmt: skip
    return "\n".join(lines)
