"""Worklist reconciliation before delivery (placeholder until implemented).

Interface used by forwarding: `reconciler_for(context, node)` gives None (deliver as stored) or
a Reconciler whose `coerce(dataset)` returns the edited copy, or raises NoWorklistMatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from dimse.callers import NodeFacts

if TYPE_CHECKING:
    from dimse.context import BridgeContext


class NoWorklistMatch(Exception):
    """The RIS knows no order for this study: a person must decide."""


class Reconciler:
    def coerce(self, dataset: Dataset) -> Dataset:
        return dataset


def reconciler_for(context: BridgeContext, node: NodeFacts, study_uid: str) -> Reconciler | None:
    return None
