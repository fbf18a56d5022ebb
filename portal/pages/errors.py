"""What a page shows when the core refuses: the one status table of the portal's pages.

The same domain errors the JSON API maps (`foundation.errors`), shown as a page with the
reason in words; something a person may not see is a 404 exactly like something missing.
"""

from __future__ import annotations

from foundation import errors
from policy.store import DuplicateRecord

PAGE_STATUS: dict[type[Exception], int] = {
    errors.NotFound: 404,
    errors.InvalidQuery: 400,
    errors.BadRequestBody: 400,
    errors.NotAcceptable: 406,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.Forbidden: 403,
    errors.Conflict: 409,
    DuplicateRecord: 409,
    errors.StoredDataUnreadable: 422,
    errors.InsufficientStorage: 507,
    errors.NodeFailed: 502,
    errors.ServiceUnavailable: 503,
}

TITLES = {
    400: "That cannot be done",
    403: "Not allowed",
    404: "Not found",
    409: "Not in this state",
    413: "Too large",
    502: "Trouble with the node",
    503: "Try again shortly",
}


def page_status(error: Exception) -> int:
    for kind in type(error).__mro__:
        if kind in PAGE_STATUS:
            return PAGE_STATUS[kind]
    return 500
