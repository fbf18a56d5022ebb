"""Verifying the audit hash chain: edited, deleted, reordered and truncated events.

The walk goes in pk order, recomputing each event's hash and comparing it with the stored hash
(an edited row), the stored prev_hash with the previous row's hash, and the pk with the previous
pk + 1 (deleted or moved rows). Deleting events from the end leaves a shorter chain that is
valid in itself: the chain-head row catches it unless it was rewritten too, and only an anchor
kept outside the database (`ferry audit head`, e.g. printed daily into a ticket or a WORM log)
catches an attacker who rewrites both. Verify against the anchor with `ferry audit verify
--anchor PK:HASH`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from audit.models import GENESIS_HASH, HEAD_PK, AuditChainHead, AuditEvent
from audit.trail import ChainHead, event_hash

BATCH = 1000
MAX_FINDINGS = 100


@dataclass(frozen=True)
class Finding:
    pk: int
    problem: str  # edited, missing, broken-link, head-mismatch, anchor-mismatch, anchor-missing
    message: str


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    broken: int  # rows with findings; `findings` keeps the first MAX_FINDINGS
    findings: tuple[Finding, ...]
    last: ChainHead  # the last event actually found

    @property
    def intact(self) -> bool:
        return self.broken == 0

    @property
    def first_broken_pk(self) -> int | None:
        return self.findings[0].pk if self.findings else None

    def describe(self) -> str:
        if self.intact:
            return f"audit chain intact: {self.checked} events, head {self.last}"
        lines = [
            f"AUDIT CHAIN BROKEN: {self.broken} of {self.checked} events fail, "
            f"first at pk {self.first_broken_pk}"
        ]
        lines += [f"  pk {item.pk}: {item.problem}: {item.message}" for item in self.findings]
        return "\n".join(lines)


def verify_chain(engine: Engine, anchor: ChainHead | None = None) -> VerifyReport:
    """Walk the whole chain; `anchor` is a head recorded earlier that must still be in it."""
    findings: list[Finding] = []
    checked, previous = 0, _start(engine)  # after the pruned events, if any (`audit.prune`)
    anchor_seen = anchor is None or anchor.pk == 0
    if anchor is not None and 0 < anchor.pk <= previous.pk:  # pruned since it was taken
        anchor_seen = anchor.pk < previous.pk or anchor.hash == previous.hash
    for row in _iter_rows(engine):
        checked += 1
        findings.extend(_check_row(row, previous))
        if anchor is not None and row["pk"] == anchor.pk:
            anchor_seen = True
            if row["hash"] != anchor.hash:
                message = f"the anchor says {anchor.hash}, the row's hash is {row['hash']}"
                findings.append(Finding(anchor.pk, "anchor-mismatch", message))
        previous = ChainHead(int(row["pk"]), str(row["hash"]))
    if anchor is not None and not anchor_seen:
        message = f"the anchored event is gone; the trail ends at pk {previous.pk} (truncated)"
        findings.append(Finding(anchor.pk, "anchor-missing", message))
    findings.extend(_check_head(engine, previous))
    findings.sort(key=lambda item: item.pk)
    broken = len({finding.pk for finding in findings})
    return VerifyReport(checked, broken, tuple(findings[:MAX_FINDINGS]), previous)


def _start(engine: Engine) -> ChainHead:
    with engine.connect() as connection:
        row = connection.execute(
            select(AuditChainHead.pruned_pk, AuditChainHead.pruned_hash).where(
                AuditChainHead.pk == HEAD_PK  # type: ignore[arg-type]
            )
        ).first()
    return ChainHead(int(row[0]), str(row[1])) if row else ChainHead(0, GENESIS_HASH)


def _check_row(row: Mapping[str, Any], previous: ChainHead) -> list[Finding]:
    pk, found = int(row["pk"]), []
    if pk != previous.pk + 1:  # pk order is unique: only a gap is possible here
        message = f"events {previous.pk + 1}..{pk - 1} are missing (deleted)"
        found.append(Finding(pk, "missing", message))
    elif row["prev_hash"] != previous.hash:
        message = f"prev_hash does not match the hash of event {previous.pk} (rewritten chain)"
        found.append(Finding(pk, "broken-link", message))
    if event_hash(row) != row["hash"]:
        found.append(Finding(pk, "edited", "the row's content does not match its hash"))
    return found


def _check_head(engine: Engine, last: ChainHead) -> list[Finding]:
    with engine.connect() as connection:
        head = connection.execute(
            select(AuditChainHead.last_pk, AuditChainHead.last_hash).where(
                AuditChainHead.pk == HEAD_PK  # type: ignore[arg-type]
            )
        ).first()
    if head is None:
        return [] if last.pk == 0 else [Finding(last.pk, "head-mismatch", "the head is gone")]
    if (int(head[0]), str(head[1])) == (last.pk, last.hash):
        return []
    if int(head[0]) > last.pk:
        message = f"the head names event {head[0]}; events after {last.pk} were deleted"
        return [Finding(last.pk + 1, "head-mismatch", message)]
    message = f"the head names event {head[0]} {head[1]}, the last row is {last.pk} {last.hash}"
    return [Finding(min(int(head[0]), last.pk) or 1, "head-mismatch", message)]


def _iter_rows(engine: Engine) -> Iterator[Mapping[str, Any]]:
    """Keyset pages in pk order: constant memory however long the trail."""
    table = AuditEvent.__table__
    after = -1
    while True:
        with engine.connect() as connection:
            query = select(table).where(table.c.pk > after).order_by(table.c.pk).limit(BATCH)
            rows = connection.execute(query).mappings().all()
        yield from rows
        if len(rows) < BATCH:
            return
        after = int(rows[-1]["pk"])
