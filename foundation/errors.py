"""Domain errors, raised by the core and mapped to statuses only at the edges.

FerryError
├── NotFound
│   ├── StudyNotFound
│   ├── SeriesNotFound
│   └── InstanceNotFound
├── InvalidQuery            a query parameter or path value Ferry cannot use
├── NotAcceptable           no representation the client accepts can be produced
├── StoredDataUnreadable    stored bytes that do not read as what they claim (damaged, or
│                           stored before a check that would have refused them)
├── UnsupportedMediaType    a request body of a type Ferry does not take
├── PayloadTooLarge         a request body over the configured maximum
├── BadRequestBody          a request body that cannot be parsed at all
├── AuthenticationFailed    credentials missing, wrong, expired, revoked or of a disabled account
├── Forbidden               a known principal the policy refuses (where refusing leaks nothing)
├── Conflict                the thing is in a state that does not allow this (a downloaded
│                           transfer cannot be cancelled)
├── InsufficientStorage     free space is below FERRY_MIN_FREE_BYTES: new data is refused
├── NodeFailed              a DICOM node Ferry asked on someone's behalf failed the operation
│   │                       (a failure status, a service it lacks): Ferry is well, the node not
│   └── NodeUnavailable     the node could not be reached, went silent or is out of resources:
│                           the same may succeed later (fetch jobs try again)
└── ServiceUnavailable      a passing condition: the same request may succeed later
    ├── StorageFull         a write could not be made durable (the disk or the database is full)
    └── AuditUnavailable    the audit event could not be written, so the access is refused

`is_disk_full(error)` recognises "no space" however it arrives: an OSError (ENOSPC, EDQUOT),
SQLite's SQLITE_FULL, or PostgreSQL's disk_full (SQLSTATE 53100), wrapped or not.
"""

from __future__ import annotations

import errno

_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # https://sqlite.org/rescode.html#full
_POSTGRES_DISK_FULL = "53100"  # PostgreSQL Appendix A, class 53: insufficient resources


class FerryError(Exception):
    """Base of every error Ferry raises on purpose; the message is safe to show a client."""


class NotFound(FerryError):
    pass


class StudyNotFound(NotFound):
    pass


class SeriesNotFound(NotFound):
    pass


class InstanceNotFound(NotFound):
    pass


class InvalidQuery(FerryError):
    pass


class NotAcceptable(FerryError):
    pass


class StoredDataUnreadable(FerryError):
    """Not the request's fault, nor about Accept: the stored instance itself cannot be read."""


class UnsupportedMediaType(FerryError):
    pass


class PayloadTooLarge(FerryError):
    pass


class BadRequestBody(FerryError):
    pass


class AuthenticationFailed(FerryError):
    """The message is deliberately vague: it must not tell an attacker which part was wrong."""


class Forbidden(FerryError):
    pass


class Conflict(FerryError):
    pass


class CannotPseudonymise(Conflict):
    """An instance Ferry will not copy pseudonymised (burned-in annotation in its pixels)."""


class InsufficientStorage(FerryError):
    pass


class NodeFailed(FerryError):
    pass


class NodeUnavailable(NodeFailed):
    pass


class ServiceUnavailable(FerryError):
    """Try again later: `retry_after` seconds is a hint for the client (RFC 9110 10.2.3)."""

    retry_after = 60


class StorageFull(ServiceUnavailable):
    pass


class AuditUnavailable(ServiceUnavailable):
    """No unaudited access: what could not be recorded is not done (fail closed)."""

    retry_after = 30


def is_disk_full(error: BaseException) -> bool:
    """Whether an error, or one it wraps, says the disk (or the database's disk) is full."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        if getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return True
        wrapped = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError
        current = (
            wrapped
            if isinstance(wrapped, BaseException)
            else current.__cause__ or current.__context__
        )
    return False
