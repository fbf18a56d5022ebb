"""Request and response bodies of the admin JSON API (pydantic models; the OpenAPI schemas)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from exchange.models import TransferStatus
from exchange.notification_models import MailStatus, NotificationChoice
from foundation.jobs import JobStatus
from policy.models import UserStatus
from policy.roles import Role, Scope

Code = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", description="an institution's short code"),
]
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Name = Annotated[str, Field(max_length=256)]
Password = Annotated[str, Field(min_length=12, max_length=1024)]
Timezone = Annotated[str, Field(min_length=1, max_length=64, examples=["Europe/Paris"])]
Roles = Annotated[list[Role], Field(min_length=1, max_length=len(Role))]
Days = Annotated[int, Field(ge=1, le=3650, description="days from now")]
Pk = Annotated[int, Field(ge=1, le=2**31 - 1)]
Clock = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["08:00"])]
Uid = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]


class Input(BaseModel):
    """Strict: `0` is not false and `"1"` is not 1; unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class InstitutionIn(Input):
    code: Code
    name: Annotated[str, Field(min_length=1, max_length=256)]
    timezone: Timezone = "UTC"
    contact: Name = ""
    worklist_restricted: bool = True


class SecurityInstitutionIn(Input):
    """Beneath an institution: its settings are administered from the parent, its studies and
    members are its own; timezone defaults to the parent's."""

    code: Code
    name: Annotated[str, Field(min_length=1, max_length=256)]
    timezone: Timezone | None = None
    contact: Name = ""
    worklist_restricted: bool = True


class InstitutionPatch(Input):
    name: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    timezone: Timezone | None = None
    contact: Name | None = None
    worklist_restricted: bool | None = None


class InstitutionOut(Output):
    pk: int
    code: str
    name: str
    timezone: str
    contact: str
    parent_pk: int | None
    worklist_restricted: bool
    created_at: datetime


class MembershipOut(Output):
    user_pk: int
    institution_pk: int
    institution: str
    email: str
    roles: list[Role]


class UserIn(Input):
    """A system user (`system_admin`), or a member of `institution` with `roles`."""

    email: Email
    name: Name = ""
    password: Password | None = None
    system_admin: bool = False
    institution: Code | None = None
    roles: list[Role] = []


class UserPatch(Input):
    name: Name | None = None
    status: UserStatus | None = None
    system_admin: bool | None = None
    password: Password | None = None


class UserOut(Output):
    pk: int
    email: str
    name: str
    status: UserStatus
    system_admin: bool
    created_at: datetime
    memberships: list[MembershipOut] = Field(
        description="only memberships in institutions the caller administers"
    )


class MembershipIn(Input):
    email: Email
    roles: Roles


class MembershipAnswer(Output):
    """`added` for a person already only in institutions you administer; otherwise `invited`.

    An unknown email answers `invited` too, word for word: the API never tells whether an email
    has an account elsewhere.
    """

    outcome: Literal["added", "invited"]
    message: str
    membership: MembershipOut | None = None


class InvitationAnswerIn(Input):
    """An empty object: accepting or declining needs nothing but who you are."""


class InvitationOut(Output):
    pk: int
    institution: str
    roles: list[Role]
    created_at: datetime


class RolesIn(Input):
    roles: Roles


class RegistrationIn(Input):
    email: Email
    name: Annotated[str, Field(min_length=1, max_length=256)]
    password: Password
    institution: Code


class RegistrationAccepted(Output):
    status: Literal["pending"] = "pending"
    message: str


class RegistrationOut(Output):
    pk: int
    institution_pk: int
    institution: str
    email: str
    name: str
    status: Literal["pending", "approved", "rejected"]
    roles: list[Role]
    requested_at: datetime
    decided_at: datetime | None
    note: str
    confirmation_recorded_at: datetime | None = Field(
        description="when approval recorded that a confirmation email is due"
    )


class RegistrationQuery(Input):
    status: Literal["pending", "approved", "rejected", "all"] = "pending"


class RejectIn(Input):
    note: Annotated[str, Field(max_length=1024)] = ""


class TokenIn(Input):
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(Scope))] = [Scope.READ]
    expires_days: Days | None = None


class ApiClientIn(TokenIn):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    roles: Roles


class ApiTokenOut(Output):
    token_id: str
    scopes: list[Scope]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class ApiClientOut(Output):
    pk: int
    name: str
    institution_pk: int
    roles: list[Role]
    disabled: bool
    created_at: datetime
    tokens: list[ApiTokenOut] = Field(description="never the secrets")


class TokenCreated(Output):
    token: str = Field(description="shown this once: ferry_<token_id>_<secret>")
    token_id: str
    client: ApiClientOut


AeTitle = Annotated[
    str, Field(min_length=1, max_length=16, description="PS3.5 AE: printable, no backslash")
]
Port = Annotated[int, Field(ge=1, le=65535)]
Host = Annotated[str, Field(min_length=1, max_length=256)]
RetrieveMethod = Literal["move", "get"]


class NodeIn(Input):
    """`can_query`/`can_write`: the node may query or store into Ferry, and Ferry may query it
    or deliver to it; `move_destination`: a C-MOVE may name it; `worklist`: a RIS answering
    Modality Worklist queries; `reconcile_with_pk`: that RIS, asked before delivering here."""

    ae_title: AeTitle
    host: Host
    port: Port
    tls: bool = False
    description: Name = ""
    restricted: bool = True
    can_query: bool = False
    can_write: bool = False
    move_destination: bool = False
    retrieve_method: RetrieveMethod = Field(
        default="move", description="how Ferry retrieves from it: C-MOVE back to Ferry, or C-GET"
    )
    worklist: bool = False
    reconcile_with_pk: Pk | None = None
    any_address: bool = Field(
        default=False,
        description="accept associations from any address (behind NAT); by default only from "
        "`host`, resolved",
    )


class NodePatch(Input):
    """Absent or null fields stay as they are, except `reconcile_with_pk`: null stops it."""

    host: Host | None = None
    port: Port | None = None
    tls: bool | None = None
    description: Name | None = None
    restricted: bool | None = None
    can_query: bool | None = None
    can_write: bool | None = None
    move_destination: bool | None = None
    retrieve_method: RetrieveMethod | None = None
    worklist: bool | None = None
    reconcile_with_pk: Pk | None = None
    any_address: bool | None = None


class NodeOut(Output):
    pk: int
    institution_pk: int
    ae_title: str
    host: str
    port: int
    tls: bool
    description: str
    restricted: bool
    can_query: bool
    can_write: bool
    move_destination: bool
    retrieve_method: str
    worklist: bool
    reconcile_with_pk: int | None
    any_address: bool


class NodeEchoIn(Input):
    """An empty object: the node is named in the path."""


class NodeEchoOut(Output):
    """The node answered a C-ECHO (Verification): who, where, and how long it took."""

    ae_title: str
    host: str
    port: int
    status: str  # "0x0000": anything else is a 502 saying what the node answered
    milliseconds: float  # from the association request to the answer


class NodePermissionIn(Input):
    subject_kind: Literal["user", "role", "institution"]
    subject: Annotated[str, Field(min_length=1, max_length=320)]
    can_query: bool = False
    can_write: bool = False


class NodePermissionOut(Output):
    pk: int
    node_pk: int
    subject_kind: str
    subject: str
    can_query: bool
    can_write: bool


class DestinationRuleIn(Input):
    """Who may send to a destination (a node, or the worklist when `node_pk` is null), when."""

    node_pk: Pk | None = None
    sender: Code | None = Field(default=None, description="a sending institution; null: any")
    window: Literal["always", "core", "out-of-hours"] = "always"
    out_of_hours_node_pk: Pk | None = None
    out_of_hours_to_worklist: bool = False
    pseudonymised_only: bool = Field(
        default=False, description="these senders send only pseudonymised copies here"
    )


class DestinationRuleOut(Output):
    pk: int
    institution_pk: int
    node_pk: int | None
    sender_institution_pk: int | None
    window: str
    out_of_hours_node_pk: int | None
    out_of_hours_to_worklist: bool
    pseudonymised_only: bool


class HoursIn(Input):
    weekdays: Annotated[list[Annotated[int, Field(ge=1, le=7)]], Field(max_length=7)]
    start: Clock
    end: Clock


class HoursOut(Output):
    institution_pk: int
    weekdays: list[int]
    start: str
    end: str
    timezone: str


class HolidayIn(Input):
    day: date
    name: Annotated[str, Field(max_length=128)] = ""


class HolidayOut(Output):
    day: date
    name: str


GrantAction = Literal["search", "read-metadata", "read-pixels", "download"]
_ALL_GRANT_ACTIONS: tuple[GrantAction, ...] = ("search", "read-metadata", "read-pixels", "download")


class GrantIn(Input):
    """A grant shares reading, and downloading unless `actions` leaves it out; it never lets
    the holder delete, store into or change the study."""

    study_uid: Uid
    institution: Code
    expires_days: Days | None = None
    reason: Annotated[str, Field(max_length=256)] = ""
    actions: Annotated[list[GrantAction], Field(min_length=1, max_length=4)] = Field(
        default_factory=lambda: list(_ALL_GRANT_ACTIONS)
    )


class GrantOut(Output):
    pk: int
    study_uid: str
    owner_institution_pk: int | None
    institution_pk: int
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    reason: str
    actions: list[str]


class RouteIn(Input):
    """Studies sent to `called_ae_title` go to `destination`'s worklist, or to its node
    `destination_node_pk`, once no instance arrived for `quiet_seconds`."""

    called_ae_title: AeTitle
    destination: Code
    destination_node_pk: Pk | None = None
    quiet_seconds: Annotated[int, Field(ge=1, le=86400)] = 30
    accept_unknown_callers: bool = Field(
        default=False, description="accept calling AE titles that name no node"
    )
    description: Name = ""


class RouteOut(Output):
    pk: int
    called_ae_title: str
    destination_institution_pk: int
    destination: str
    destination_node_pk: int | None
    quiet_seconds: int
    accept_unknown_callers: bool
    description: str


Limit = Annotated[int, Field(ge=1, le=1000, description="newest first, at most this many")]


class _ListQuery(Input):
    """Query strings are text: numbers in them are parsed, not refused."""

    model_config = ConfigDict(extra="forbid", strict=False)


class RouteQuery(_ListQuery):
    institution: Code | None = Field(default=None, description="only the routes into it")


class JobQuery(_ListQuery):
    institution: Code | None = Field(
        default=None, description="only the jobs of this institution's transfers and requests"
    )
    status: JobStatus | None = None
    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.:-]{0,63}$")] | None = None
    limit: Limit = 200


class RetryIn(Input):
    """`{}`; `{"as_sent": true}` delivers without worklist reconciliation (a person checked)."""

    as_sent: bool = False


class JobOut(Output):
    pk: int
    kind: str
    status: JobStatus
    attempts: int
    max_attempts: int
    run_after: datetime
    last_error: str
    result: str
    payload: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TransferQuery(_ListQuery):
    institution: Code | None = Field(default=None, description="as sender or as destination")
    status: TransferStatus | None = None
    limit: Limit = 200


class TransferOut(Output):
    pk: int
    public_id: str = Field(description="the id the transfers API knows it by")
    study_instance_uid: str
    sender_institution_pk: int
    sender: str
    destination_institution_pk: int
    destination: str
    destination_node_pk: int | None
    route_pk: int | None
    calling_ae_title: str
    status: str
    reason: str
    instances: int
    job_pk: int | None
    created_at: datetime
    last_instance_at: datetime
    completed_at: datetime | None


class NotificationsIn(Input):
    """Which emails you get: every transaction of your institutions ("all"), only your own
    ("own", the default), only failures ("failures"), or "none"."""

    choice: NotificationChoice


class NotificationsOut(Output):
    choice: NotificationChoice
    default: bool = Field(description="true while you have not chosen (the default applies)")
    choices: list[NotificationChoice]
    sending: bool = Field(description="false: emails are recorded, not sent (no SMTP server)")


class NotificationQuery(_ListQuery):
    institution: Code | None = None
    status: MailStatus | None = None
    limit: Limit = 200


class NotificationOut(Output):
    """One email of one event to one person; never patient data, only an opaque subject."""

    pk: int
    job_pk: int
    event: str
    institution_pk: int | None
    institution: str
    subject: str
    user_pk: int
    email: str
    status: MailStatus
    created_at: datetime
    sent_at: datetime | None
