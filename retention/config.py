"""Retention configuration: what the sweeper reads, built from Settings by the composition root."""

from __future__ import annotations

from dataclasses import dataclass, field

from exchange.retention_defaults import RetentionDefaults

AUDIT_RETENTION_DAYS = 7 * 365 + 2  # seven years, leap days included


@dataclass(frozen=True)
class RetentionConfig:
    """Periods and ceiling (`defaults`), batch size and the pause between batches (throttle),
    how often the job worker sweeps, and how long audit events are kept."""

    defaults: RetentionDefaults = field(default_factory=RetentionDefaults)
    batch_size: int = 100
    pause_seconds: float = 1.0
    interval_seconds: float = 3600.0
    audit_days: int = AUDIT_RETENTION_DAYS
