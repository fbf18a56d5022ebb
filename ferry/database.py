"""The database as the application assembles it: every package's tables, one engine, migrated.

The engine and the migration runner live in `foundation.database`; this module only knows
which packages own tables, which nothing below the composition root may know.
"""

from __future__ import annotations

from sqlalchemy import Engine, MetaData
from sqlmodel import SQLModel

import archive.models  # noqa: F401  (registers the tables on SQLModel.metadata)
import audit.models  # noqa: F401
import dimse.models  # noqa: F401
import exchange.models
import exchange.notification_models
import exchange.request_models
import exchange.retention_models  # noqa: F401
import foundation.jobs  # noqa: F401
import policy.auth_epoch
import policy.models
import policy.oidc_sign_ins
import policy.refresh_tokens
import policy.sessions  # noqa: F401
from ferry.settings import Settings
from foundation import database
from foundation.database import check_database, check_database_writable

__all__ = [
    "check_database",
    "check_database_writable",
    "create_database_engine",
    "metadata",
    "migrate",
]


def metadata() -> MetaData:
    return SQLModel.metadata


def create_database_engine(settings: Settings) -> Engine:
    return database.create_database_engine(settings.database_url)


def migrate(engine: Engine) -> None:
    database.migrate(engine, metadata())
