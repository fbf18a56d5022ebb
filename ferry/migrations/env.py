"""Alembic environment: runs on the connection Ferry hands it, never on a URL of its own."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import archive.models  # noqa: F401  (registers the tables on SQLModel.metadata)
import audit.models  # noqa: F401
import dimse.models  # noqa: F401
import exchange.models
import exchange.notification_models
import exchange.request_models  # noqa: F401
import ferry.jobs  # noqa: F401
import policy.models
import policy.refresh_tokens  # noqa: F401

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
