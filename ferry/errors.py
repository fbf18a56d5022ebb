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
└── Forbidden               a known principal the policy refuses (where refusing leaks nothing)
"""

from __future__ import annotations


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
