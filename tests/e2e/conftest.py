"""End-to-end fixtures: one server for a whole module's walk (the pydicom corpus)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from ferry.app import build_archive, configure_libraries
from tests.conftest import RunningServer, make_settings, migrated_database, run_server


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def corpus_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server for the module's walk, on SQLite or on a PostgreSQL schema of its own, each
    already migrated (copied from the test process's migrated one, as tests.conftest does)."""
    tmp_path = tmp_path_factory.mktemp("corpus")
    with contextlib.ExitStack() as stack:
        url = migrated_database(request, tmp_path, stack)
        overrides = getattr(request.module, "SETTINGS", {})
        overrides = overrides() if callable(overrides) else overrides
        settings = make_settings(tmp_path, url, **overrides)
        configure_libraries(settings)
        archive = build_archive(settings)
        stack.callback(archive.engine.dispose)
        yield from run_server(settings, archive)
