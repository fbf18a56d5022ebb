"""Transfers (placeholder until implemented)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Engine


def note_arrivals(
    engine: Engine,
    route_pk: int,
    sender_institution_pk: int,
    calling_ae_title: str,
    arrived: Mapping[str, int],
    now: datetime,
) -> None:
    """Studies that arrived on a route: start or extend their collecting transfers."""


def mark_delivery(
    engine: Engine, transfer_pk: int, status: str, reason: str, now: datetime
) -> None:
    """A forwarding job reports how the delivery of a transfer went (a TransferStatus value)."""
