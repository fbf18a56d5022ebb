"""The tables oversight reads, as SQLAlchemy Core tables (typed columns for SQL expressions)."""

from __future__ import annotations

from sqlalchemy import Table
from sqlmodel import SQLModel

import archive.models
import audit.models
import exchange.models
import exchange.request_models
import policy.models

assert archive.models and audit.models and exchange.models  # registered in the metadata
assert exchange.request_models and policy.models

_TABLES = SQLModel.metadata.tables
TRANSFER: Table = _TABLES["transfer"]
TRANSFER_EVENT: Table = _TABLES["transfer_event"]
TRANSFER_STUDY: Table = _TABLES["transfer_study"]
REQUEST: Table = _TABLES["imaging_request"]
REQUEST_ANSWER: Table = _TABLES["request_answer"]
PATIENT: Table = _TABLES["patient"]
STUDY: Table = _TABLES["study"]
SERIES: Table = _TABLES["series"]
INSTANCE: Table = _TABLES["instance"]
STUDY_GRANT: Table = _TABLES["study_grant"]
AUDIT_EVENT: Table = _TABLES["audit_event"]
AUDIT_EVENT_INSTITUTION: Table = _TABLES["audit_event_institution"]
USER: Table = _TABLES["ferry_user"]
MEMBERSHIP: Table = _TABLES["membership"]
NODE: Table = _TABLES["node"]
