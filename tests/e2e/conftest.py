"""End-to-end fixtures: one server for a whole module's walk (the pydicom corpus)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.app import build_archive, configure_libraries
from tests.conftest import RunningServer, make_settings, run_server


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def corpus_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server for the module's walk, on SQLite or on a PostgreSQL schema of its own."""
    tmp_path = tmp_path_factory.mktemp("corpus")
    with _database(request, tmp_path) as url:
        overrides = getattr(request.module, "SETTINGS", {})
        overrides = overrides() if callable(overrides) else overrides
        settings = make_settings(tmp_path, url, **overrides)
        configure_libraries(settings)
        archive = build_archive(settings)
        try:
            yield from run_server(settings, archive)
        finally:
            archive.engine.dispose()


class _database:
    """A SQLite file, or a PostgreSQL schema dropped afterwards (as tests.conftest does)."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request, self.tmp_path, self.schema = request, tmp_path, ""

    def __enter__(self) -> str:
        if self.request.param == "sqlite":
            return f"sqlite:///{self.tmp_path / 'index.db'}"
        import psycopg
        from sqlalchemy.engine import make_url

        base = make_url(self.request.getfixturevalue("postgres_url"))
        self.plain = base.set(drivername="postgresql").render_as_string(hide_password=False)
        self.schema = f"ferry_test_{secrets.token_hex(6)}"
        with psycopg.connect(self.plain, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {self.schema}")
        url = base.set(drivername="postgresql+psycopg")
        url = url.update_query_dict({"options": f"-csearch_path={self.schema}"})
        return url.render_as_string(hide_password=False)

    def __exit__(self, *_: object) -> None:
        if self.schema:
            import psycopg

            with psycopg.connect(self.plain, autocommit=True) as connection:
                connection.execute(f"DROP SCHEMA {self.schema} CASCADE")
