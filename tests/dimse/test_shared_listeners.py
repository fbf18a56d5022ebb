"""The DIMSE ports `ferry serve` binds once for all its bridges (`dimse.shared_listeners`).

The two-bridge case as `ferry serve` runs it (associations spread two and two) is in
tests/e2e/test_serve_dimse.py; here, what must hold when a bridge is not like the others.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from dimse.server import Bridge
from dimse.shared_listeners import AcceptTurns, SharedListeners, bind_shared
from tests.conftest import free_port, sqlite_only
from tests.dimse.conftest import Dimse

pytestmark = sqlite_only  # the database plays no part

MOST_ASSOCIATIONS = 40  # the kernel has handed some to each socket long before this


def _associate(port: int) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="FERRY")
    assert assoc.is_established
    return assoc


def _held(bridge: Bridge) -> int:
    return len(bridge.servers[0].ae.active_associations)


@pytest.fixture
def shared_bridge(dimse: Dimse) -> Iterator[tuple[Bridge, SharedListeners]]:
    """A bridge on listeners bound as `ferry serve` binds them, for two bridges."""
    config = replace(dimse.bridge.config, dicom_port=free_port())
    shared = bind_shared(config, 2)
    bridge = Bridge(config, dimse.archive, clock=dimse.clock, shared=shared)
    yield bridge, shared
    bridge.stop()


def test_a_separately_started_bridge_joins_the_shared_port(
    dimse: Dimse, shared_bridge: tuple[Bridge, SharedListeners]
) -> None:
    """`ferry dimse serve` started apart binds its own socket on the same port (SO_REUSEPORT):
    the kernel hands associations to both."""
    bridge, _ = shared_bridge
    bridge.start()
    apart = Bridge(bridge.config, dimse.archive, clock=dimse.clock)
    apart.start()
    held: list[Association] = []
    try:
        assert apart.port == bridge.port
        while min(_held(bridge), _held(apart)) == 0 and len(held) < MOST_ASSOCIATIONS:
            held.append(_associate(bridge.port))
        assert _held(bridge) >= 1 and _held(apart) >= 1
        assert held[-1].send_c_echo().Status == 0x0000
    finally:
        for assoc in held:
            assoc.release()
        apart.stop()


def _hung_bridge(turns: AcceptTurns, claimed: multiprocessing.synchronize.Event) -> None:
    """A bridge that says it holds nothing and never accepts (hung, or about to die)."""
    turns.claim()
    claimed.set()
    time.sleep(120)


def test_a_hung_bridge_delays_associations_but_never_refuses_them(
    shared_bridge: tuple[Bridge, SharedListeners],
) -> None:
    bridge, shared = shared_bridge
    forking = multiprocessing.get_context("fork")
    claimed = forking.Event()
    hung = forking.Process(target=_hung_bridge, args=(shared.turns, claimed), daemon=True)
    hung.start()
    held: list[Association] = []
    try:
        assert claimed.wait(30)
        bridge.start()
        # Holding one association, this bridge is busier than the hung one, whose turn it is.
        for _ in range(3):
            held.append(_associate(bridge.port))
            assert held[-1].send_c_echo().Status == 0x0000
        assert _held(bridge) == 3
    finally:
        for assoc in held:
            assoc.release()
        hung.kill()
        hung.join()
