"""The system administrator's retention settings: default period, ceiling, default warning.

A value object of its own, free of the database, so that the settings (read by every `ferry`
command) need nothing more to hold it; `exchange.retention_terms` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DAYS = 15
DEFAULT_WARN_DAYS = 2
DEFAULT_MAX_DAYS = 3650


@dataclass(frozen=True)
class RetentionDefaults:
    """The system administrator's word: default period, ceiling, default warning."""

    days: int = DEFAULT_DAYS
    max_days: int = DEFAULT_MAX_DAYS
    warn_days: int = DEFAULT_WARN_DAYS
