"""Each association starts from a copy of the bridge's contexts equal to pynetdicom's own copy."""

from __future__ import annotations

import copy

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import CTImageStorage, Verification

from dimse import _supported_contexts
from tests.dimse.conftest import Dimse


def test_a_copy_is_pynetdicoms_deep_copy(dimse: Dimse) -> None:
    contexts = dimse.bridge.build_ae().supported_contexts
    held = dimse.bridge.servers[0].contexts  # what each accepted association is copied from
    ours, theirs = copy.deepcopy(held), copy.deepcopy(contexts)
    assert len(ours) == len(theirs) > 100
    for mine, expected, original in zip(ours, theirs, held, strict=True):
        assert type(mine) is PresentationContext
        assert vars(mine) == vars(expected)
        assert [type(uid) for uid in mine.transfer_syntax] == [
            type(uid) for uid in expected.transfer_syntax
        ]
        assert mine._transfer_syntax is not original._transfer_syntax


def test_an_association_changing_its_copy_leaves_the_servers_alone(dimse: Dimse) -> None:
    held = dimse.bridge.servers[0].contexts
    before = [vars(context).copy() for context in held]
    before_syntaxes = [list(context.transfer_syntax) for context in held]
    mine = copy.deepcopy(held)
    for context in mine:
        context.context_id = 1
        context._transfer_syntax.append(ImplicitVRLittleEndian)
        context.result = 0
    assert [vars(context) for context in held] == before
    assert [list(context.transfer_syntax) for context in held] == before_syntaxes


def test_a_context_holding_something_else_is_deep_copied_as_before() -> None:
    odd = PresentationContext()
    odd.abstract_syntax = CTImageStorage
    odd.transfer_syntax = [ExplicitVRLittleEndian]
    odd.extra = {"kept": ["apart"]}  # type: ignore[attr-defined]
    (held,) = _supported_contexts.supported_contexts([odd])
    assert held is odd
    assert copy.deepcopy(held).extra is not odd.extra  # type: ignore[attr-defined]


def test_associations_in_turn_negotiate_the_same_contexts(dimse: Dimse) -> None:
    dimse.add_node("PYNETDICOM")
    accepted = []
    for _ in range(3):
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(Verification)
        ae.add_requested_context(CTImageStorage, [JPEG2000Lossless, ExplicitVRLittleEndian])
        ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", dimse.port, ae_title=dimse.ae_title)
        assert assoc.is_established
        accepted.append(
            sorted((cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts)
        )
        assoc.release()
    assert accepted[0] == accepted[1] == accepted[2]
    assert (CTImageStorage, ExplicitVRLittleEndian) in accepted[0]
    assert (CTImageStorage, ImplicitVRLittleEndian) in accepted[0]
