"""Who-is-who tables: institutions, users, memberships, API clients, nodes, destination rules.

Roles and scopes are stored as comma-separated names (`sender,receiver`): a handful per row,
read whole, never queried by part.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class UserStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DISABLED = "disabled"


class Institution(SQLModel, table=True):
    """An institution, or (with a parent) a security institution beneath one."""

    __tablename__ = "institution"

    pk: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=256)
    timezone: str = Field(default="UTC", max_length=64)
    contact: str = Field(default="", max_length=256)
    parent_pk: int | None = Field(default=None, foreign_key="institution.pk")
    worklist_restricted: bool = Field(default=True)
    created_at: datetime = Field(default_factory=_now)


class User(SQLModel, table=True):
    __tablename__ = "ferry_user"

    pk: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    name: str = Field(default="", max_length=256)
    status: UserStatus = Field(default=UserStatus.PENDING, max_length=16)
    password_hash: str = Field(default="", max_length=256)
    system_admin: bool = Field(default=False)
    token_version: int = Field(default=0)
    failed_logins: int = Field(default=0)
    locked_until: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=_now)


class Membership(SQLModel, table=True):
    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("user_pk", "institution_pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    user_pk: int = Field(foreign_key="ferry_user.pk", index=True)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)
    roles: str = Field(default="", max_length=256)


class Invitation(SQLModel, table=True):
    """A membership offered to an account beyond the inviter's institutions; its owner accepts.

    Until accepted it grants nothing: authentication reads memberships, never invitations.
    """

    __tablename__ = "membership_invitation"
    __table_args__ = (UniqueConstraint("user_pk", "institution_pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    user_pk: int = Field(foreign_key="ferry_user.pk", index=True)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)
    roles: str = Field(default="", max_length=256)
    invited_by_pk: int | None = Field(default=None, foreign_key="ferry_user.pk")
    created_at: datetime = Field(default_factory=_now)


class Registration(SQLModel, table=True):
    """A person asking to join an institution; administrators approve or reject."""

    __tablename__ = "registration"

    pk: int | None = Field(default=None, primary_key=True)
    user_pk: int = Field(foreign_key="ferry_user.pk", index=True)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)
    status: str = Field(default="pending", max_length=16)  # pending, approved, rejected
    roles: str = Field(default="", max_length=256)
    requested_at: datetime = Field(default_factory=_now)
    decided_by_pk: int | None = Field(default=None, foreign_key="ferry_user.pk")
    decided_at: datetime | None = Field(default=None)
    note: str = Field(default="", max_length=1024)
    confirmation_recorded_at: datetime | None = Field(default=None)


class ApiClient(SQLModel, table=True):
    """An AI or research tool acting for one institution."""

    __tablename__ = "api_client"

    pk: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)
    roles: str = Field(default="", max_length=256)
    created_at: datetime = Field(default_factory=_now)
    disabled: bool = Field(default=False)


class ApiToken(SQLModel, table=True):
    """Shown once; kept as a hash of its secret, found by its public id."""

    __tablename__ = "api_token"

    pk: int | None = Field(default=None, primary_key=True)
    client_pk: int = Field(foreign_key="api_client.pk", index=True)
    token_id: str = Field(max_length=32, unique=True)
    secret_hash: str = Field(max_length=128)
    scopes: str = Field(default="read", max_length=64)
    expires_at: datetime | None = Field(default=None)
    last_used_at: datetime | None = Field(default=None)
    revoked_at: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=_now)


class RetrieveMethod(StrEnum):
    MOVE = "move"  # C-MOVE to Ferry's own AE title
    GET = "get"  # C-GET on the same association, where C-MOVE cannot reach back


class Node(SQLModel, table=True):
    """A DICOM application entity of an institution: a PACS, a modality, a workstation, a RIS.

    `can_query`/`can_write` are the node's own rights towards Ferry (C-FIND/C-MOVE/C-GET; C-STORE)
    and, the other way, whether Ferry may query it or deliver to it. `move_destination` lets a
    C-MOVE name it; `worklist` marks a RIS answering Modality Worklist C-FIND.
    """

    __tablename__ = "node"

    pk: int | None = Field(default=None, primary_key=True)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)
    ae_title: str = Field(max_length=16, unique=True)
    host: str = Field(max_length=256)
    port: int
    tls: bool = Field(default=False)
    description: str = Field(default="", max_length=256)
    restricted: bool = Field(default=True)
    can_query: bool = Field(default=False)
    can_write: bool = Field(default=False)
    move_destination: bool = Field(default=False)
    retrieve_method: str = Field(default=RetrieveMethod.MOVE.value, max_length=8)
    worklist: bool = Field(default=False)
    # The RIS (a worklist node) to reconcile against before delivering here; None: deliver as is.
    reconcile_with_pk: int | None = Field(default=None, foreign_key="node.pk")
    # Associations are accepted only from `host` (resolved) unless this is set (NAT, pools).
    any_address: bool = Field(default=False)


class Route(SQLModel, table=True):
    """A called AE title that pushes straight through Ferry to another institution.

    Studies a node sends to `called_ae_title` become one transfer each, from the node's
    institution to `destination_institution_pk` (its worklist, or `destination_node_pk`), once no
    instance has arrived for `quiet_seconds`.
    """

    __tablename__ = "dimse_route"

    pk: int | None = Field(default=None, primary_key=True)
    called_ae_title: str = Field(max_length=16, unique=True)
    destination_institution_pk: int = Field(foreign_key="institution.pk", index=True)
    destination_node_pk: int | None = Field(default=None, foreign_key="node.pk")
    quiet_seconds: int = Field(default=30)
    accept_unknown_callers: bool = Field(default=False)
    description: str = Field(default="", max_length=256)


class NodePermission(SQLModel, table=True):
    """Who may query or write a node: a user, a role, or an institution (by subject kind)."""

    __tablename__ = "node_permission"

    pk: int | None = Field(default=None, primary_key=True)
    node_pk: int = Field(foreign_key="node.pk", index=True)
    subject_kind: str = Field(max_length=16)  # user, role, institution
    subject: str = Field(max_length=320)
    can_query: bool = Field(default=False)
    can_write: bool = Field(default=False)


class DestinationRule(SQLModel, table=True):
    """A sending institution may send to a destination (worklist or node) in a time window."""

    __tablename__ = "destination_rule"

    pk: int | None = Field(default=None, primary_key=True)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)  # the destination's
    node_pk: int | None = Field(default=None, foreign_key="node.pk")  # None: the worklist
    sender_institution_pk: int | None = Field(default=None, foreign_key="institution.pk")
    window: str = Field(default="always", max_length=16)  # always, core, out-of-hours
    out_of_hours_node_pk: int | None = Field(default=None, foreign_key="node.pk")
    out_of_hours_to_worklist: bool = Field(default=False)
    # Senders under this rule send only pseudonymised copies (exchange.pseudonymisation).
    pseudonymised_only: bool = Field(default=False)


class CoreHours(SQLModel, table=True):
    __tablename__ = "core_hours"

    pk: int | None = Field(default=None, primary_key=True)
    institution_pk: int = Field(foreign_key="institution.pk", unique=True)
    weekdays: str = Field(default="1,2,3,4,5", max_length=16)  # ISO weekdays
    start: str = Field(default="08:00", max_length=5)
    end: str = Field(default="18:00", max_length=5)


class Holiday(SQLModel, table=True):
    __tablename__ = "holiday"
    __table_args__ = (UniqueConstraint("institution_pk", "day"),)

    pk: int | None = Field(default=None, primary_key=True)
    institution_pk: int = Field(foreign_key="institution.pk", index=True)
    day: date
    name: str = Field(default="", max_length=128)
