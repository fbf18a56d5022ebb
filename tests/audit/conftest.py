"""Audit fixtures: a migrated engine on each database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from ferry.database import create_database_engine, migrate
from ferry.settings import Settings


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    built = create_database_engine(settings)
    migrate(built)
    yield built
    built.dispose()
