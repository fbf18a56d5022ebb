"""The portal's way to a PACS: study-level C-FIND, C-MOVE/C-GET and C-ECHO (`dimse.remote`).

Implements `exchange.request_search.RemotePacs` for the composition root to hand over.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from dimse.callers import get_node
from dimse.context import BridgeContext
from dimse.remote import echo_node, find_on_node, retrieve_from_node
from foundation.errors import InvalidQuery
from policy.decision import NodeFacts

RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDate",
    "StudyDescription",
    "ModalitiesInStudy",
)


class BridgePacs:
    def __init__(self, context: BridgeContext) -> None:
        self.context = context

    def _node(self, node_pk: int) -> NodeFacts:
        node = get_node(self.context.engine, node_pk)
        if node is None:
            raise InvalidQuery("no such node")
        return node

    def find_studies(
        self, node_pk: int, keys: Mapping[str, str], *, requested_by: str, institution_pk: int
    ) -> list[dict[str, str]]:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        for keyword in RETURN_KEYS:
            setattr(identifier, keyword, "")
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        answers = find_on_node(
            self.context, self._node(node_pk), identifier, "study",
            requested_by=requested_by, institution_pk=institution_pk,
        )  # fmt: skip
        return [_keywords(answer) for answer in answers]

    def retrieve_study(
        self, node_pk: int, study_uid: str, *, requested_by: str, institution_pk: int
    ) -> None:
        retrieve_from_node(
            self.context, self._node(node_pk), study_uid,
            institution_pk=institution_pk, requested_by=requested_by,
        )  # fmt: skip

    def echo(self, node_pk: int) -> float:
        return echo_node(self.context, self._node(node_pk))


def _keywords(answer: Dataset) -> dict[str, str]:
    found = {}
    for keyword in RETURN_KEYS:
        value = answer.get(keyword)
        if value is None:
            continue
        if keyword == "ModalitiesInStudy" and not isinstance(value, str):
            found[keyword] = "\\".join(str(v) for v in value)
        else:
            found[keyword] = str(value)
    return found
