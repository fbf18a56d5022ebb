"""Transfers of studies picked on one of the sender's PACS nodes: search it, fetch into a draft.

The workflow is `exchange.node_transfers`; the search answers with the same candidates as a
request's node search (`portal.request_schemas.CandidateOut`), so a page shows both alike.
"""

from __future__ import annotations

from exchange.node_transfers import add_node_studies, search_node_studies
from portal.openapi import Call, Operation
from portal.request_schemas import CandidateOut, SearchOut
from portal.transfer_schemas import NodeSearchIn, NodeStudiesIn, TransferOut
from portal.transfers_api import _actor, _engine, _institution, _policy, transfer_out


def search_node(call: Call) -> SearchOut:
    body: NodeSearchIn = call.body
    policy = _policy(call)
    institution_pk = _institution(call, policy, body.institution)
    found = search_node_studies(
        _engine(call), call.state.remote_pacs, _actor(call), institution_pk, body.node,
        body.keys, policy,
    )  # fmt: skip
    matches = [CandidateOut.of(candidate) for candidate in found]
    return SearchOut(source=body.node, query=[body.keys], matches=matches)


def add_studies_from_node(call: Call) -> TransferOut:
    body: NodeStudiesIn = call.body
    policy = _policy(call)
    transfer = add_node_studies(
        _engine(call), _actor(call), call.path["transfer_id"], body.node, body.studies, policy,
        send=body.send, max_attempts=call.state.fetch_max_attempts,
    )  # fmt: skip
    return transfer_out(call, transfer, policy, detail=True)


_T = "transfers"
OPERATIONS = [
    Operation("POST", "/transfers/node-search", search_node,
              "search one of your institution's nodes for studies to send (C-FIND)", _T,
              NodeSearchIn, SearchOut, asks_a_node=True),
    Operation("POST", "/transfers/{transfer_id}/node-studies", add_studies_from_node,
              "fetch studies from one of the sending institution's nodes into a draft (a job), "
              "and send it once they are in if asked", _T, NodeStudiesIn, TransferOut, 202),
]  # fmt: skip
