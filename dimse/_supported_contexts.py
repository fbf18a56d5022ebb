"""The presentation contexts each accepted association starts from, copied without pydicom
(pynetdicom 3.0.4, PS3.8 9.3.2.2).

For every association it accepts, pynetdicom gives the acceptor its own copy of the server's
supported contexts: `copy.deepcopy(server.contexts)` (`RequestHandler._create_association`).
The bridge supports every storage SOP class with every accepted transfer syntax, about 200
contexts and 6,600 transfer syntax UIDs, and deep copying a pydicom `UID` rebuilds it through
`UID.__new__`, which validates it again against the UID pattern: about 60 ms of CPU per
association on this machine, before a single PDU is read. Four associations of 125 instances
each spend 0.4 ms an instance on it.

A `UID` is an immutable `str`: nothing needs copying but each context itself and its list of
transfer syntaxes, which negotiation may change. The server's contexts are held as
`CheapContext`s, whose deep copy is a plain `PresentationContext` with the same attributes and
a new list of the same UIDs: what pynetdicom's deep copy gives, bar the
identity of the UID objects (a context holding anything else is deep copied as before).
`SharedPortServer.contexts` holds them; `tests/dimse/test_supported_contexts.py` compares the
two copies. Drop it when pynetdicom stops deep copying the contexts per association.
"""

from __future__ import annotations

import copy
from typing import Any

from pynetdicom.presentation import PresentationContext


class CheapContext(PresentationContext):
    """A supported context whose deep copy shares its (immutable) UIDs."""

    def __deepcopy__(self, memo: dict[int, Any]) -> PresentationContext:
        plain = PresentationContext.__new__(PresentationContext)
        plain.__dict__.update(
            {
                name: list(value) if type(value) is list else value
                for name, value in vars(self).items()
            }
        )
        return plain


_IMMUTABLE = (type(None), bool, int, str)  # a UID is a str


def _cheap(context: PresentationContext) -> PresentationContext:
    """The context as a `CheapContext` when each of its attributes is immutable or a list of
    immutable items (its transfer syntaxes); otherwise itself, deep copied as before."""
    for value in vars(context).values():
        items = value if type(value) is list else (value,)
        if not all(isinstance(item, _IMMUTABLE) for item in items):
            return context
    cheap = CheapContext.__new__(CheapContext)
    cheap.__dict__.update(copy.deepcopy(vars(context)))
    return cheap


def supported_contexts(contexts: list[PresentationContext]) -> list[PresentationContext]:
    """The server's contexts, each copied cheaply into every association it accepts."""
    return [_cheap(context) for context in contexts]
