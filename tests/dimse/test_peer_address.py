"""A calling AE title is accepted only from its node's host (resolved), unless the node opts out.

Loopback stands in for two machines: the nodes are on 127.0.0.1, the impostor binds 127.0.0.2.
"""

from __future__ import annotations

import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from audit.search import AuditQuery, iter_events
from dimse.peer_address import addresses_of, peer_matches
from tests.conftest import sqlite_only
from tests.dimse.conftest import Dimse

IMPOSTOR = "127.0.0.2"
CALLING_AE_NOT_RECOGNISED = 0x03


def _echo(dimse: Dimse, calling: str, source: str = "127.0.0.1") -> tuple[bool, int | None]:
    """(established, the rejection's diagnostic) for an association from `source`."""
    ae = AE(calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title, bind_address=(source, 0))
    if not assoc.is_established:
        rejection = assoc.acceptor.primitive if assoc.is_rejected else None
        return False, getattr(rejection, "diagnostic", None)
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    return True, None


def _refusals(dimse: Dimse, calling: str) -> list:
    query = AuditQuery(actor=f"ae:{calling}", action="associate", outcome="denied")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = list(iter_events(dimse.archive.engine, query))
        if found:
            return found
        time.sleep(0.02)
    return []


@sqlite_only
def test_a_known_ae_title_from_another_address_is_rejected_and_audited(dimse: Dimse) -> None:
    assert _echo(dimse, "MODALITY") == (True, None)  # its host is 127.0.0.1
    assert _echo(dimse, "MODALITY", IMPOSTOR) == (False, CALLING_AE_NOT_RECOGNISED)
    (refused,) = _refusals(dimse, "MODALITY")
    assert refused.rule == "peer-address"
    assert refused.client_address == IMPOSTOR
    assert IMPOSTOR in refused.reason and "127.0.0.1" in refused.reason


@sqlite_only
def test_a_host_name_is_resolved(dimse: Dimse) -> None:
    dimse.add_node("NAMED", host="localhost")
    assert _echo(dimse, "NAMED") == (True, None)
    assert _echo(dimse, "NAMED", IMPOSTOR)[0] is False
    dimse.add_node("NOWHERE", host="pacs.invalid")  # RFC 6761: never resolves
    assert _echo(dimse, "NOWHERE")[0] is False


@sqlite_only
def test_a_node_behind_nat_opts_out(dimse: Dimse) -> None:
    dimse.add_node("NATTED", host="pacs.invalid", any_address=True)
    assert _echo(dimse, "NATTED", IMPOSTOR) == (True, None)
    assert _echo(dimse, "NATTED") == (True, None)


@pytest.mark.parametrize(
    ("host", "peer", "matches"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "::ffff:127.0.0.1", True),  # an IPv4 peer on a dual-stack socket
        ("127.0.0.1", "127.0.0.2", False),
        ("localhost", "127.0.0.1", True),
        ("::1", "::1", True),
        ("pacs.invalid", "127.0.0.1", False),
        ("127.0.0.1", "not an address", False),
        ("", "127.0.0.1", False),
    ],
)
def test_peer_matching(host: str, peer: str, matches: bool) -> None:
    assert peer_matches(host, peer) is matches


def test_a_name_may_have_several_addresses() -> None:
    assert len(addresses_of("localhost")) >= 1
    assert addresses_of("pacs.invalid") == frozenset()
