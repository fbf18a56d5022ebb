"""Ferry as an SCP: one pynetdicom AE on the DICOM port (and the TLS port), serving every
called AE title that is Ferry's own or a route's.

Associations are accepted only from known nodes, from their configured host's addresses (unless
a node allows any address), or, where a called AE allows unknown callers, for C-ECHO only.
Received datasets are written by pynetdicom straight to a file (never held whole in memory),
moved into the archive's spool and stored exactly as received. Store audit events are folded to
one per study and association, written when the association ends.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from archive.outcomes import StoreOutcome
from archive.store import Archive
from audit.trail import record_many
from dimse import (
    _connection,
    _messages,
    _store_requests,
    _supported_contexts,
    commitment,
    query,
    retrieve,
    statuses,
    tls,
    wakeups,
)
from dimse.callers import Caller, identify
from dimse.config import DimseConfig
from dimse.context import BridgeContext
from dimse.peer_address import peer_matches
from dimse.peers import no_delay
from dimse.receiving import status_code, store_received
from dimse.shared_listeners import AcceptTurns, SharedListeners
from dimse.transfer_syntaxes import ACCEPTED_TRANSFER_SYNTAXES, STORAGE_SOP_CLASSES
from exchange import transfers
from foundation.clock import Clock, utc_now
from policy.decision import Decision, PolicySnapshot, Resource
from policy.principal import ANONYMOUS
from policy.roles import Action

log = logging.getLogger(__name__)

# Received C-STORE data sets go to a file as they arrive, not into memory.
_config.STORE_RECV_CHUNKED_DATASET = True
_config.LOG_HANDLER_LEVEL = "none"

# How often a listener's accept loop looks up from waiting (socketserver's `poll_interval`,
# 0.5 s by default): a bridge's stop waits for the loop to see it, once per listener, and the
# loop's turn-taking heartbeat (`SharedPortServer.service_actions`) runs as often.
LISTENER_POLL_SECONDS = 0.05
_CALLER = "ferry_caller"
_STORED = "ferry_stored"
_STORE_DECISION = "ferry_store_decision"
# The archive refused a UID held by another institution's data (the caller is not told whose).
UID_IN_USE = Decision(
    False, "uid-in-use", "a Study or SOP Instance UID is held by another institution's data"
)


def caller_of(event: evt.Event) -> Caller:
    return getattr(event.assoc, _CALLER)  # type: ignore[no-any-return]


class Bridge:
    """The DIMSE edge: `start()` listens, `stop()` closes; handlers run on pynetdicom threads."""

    def __init__(
        self,
        config: DimseConfig,
        archive: Archive,
        *,
        clock: Clock = utc_now,
        shared: SharedListeners | None = None,
    ) -> None:
        """`shared`: the ports `ferry serve` bound for all its bridges; without it, the bridge
        binds its own."""
        self.config = config
        self.context = BridgeContext(config, archive, clock)
        self.shared = shared
        self.servers: list[ThreadedAssociationServer] = []
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def build_ae(self) -> AE:
        config = self.config
        ae = AE(ae_title=config.dicom_ae_title)
        ae.maximum_pdu_size = config.dicom_max_pdu
        ae.maximum_associations = config.dicom_max_associations
        ae.acse_timeout = config.dicom_acse_timeout
        ae.dimse_timeout = config.dicom_dimse_timeout
        ae.network_timeout = config.dicom_network_timeout
        ae.require_called_aet = False  # checked in _on_requested: Ferry's own or a route's
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_SOP_CLASSES:
            # C-GET sends on the requestor's association: Ferry then plays the SCU role.
            ae.add_supported_context(
                sop_class, ACCEPTED_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        for sop_class in (
            PatientRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelMove,
            PatientRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelMove,
            StudyRootQueryRetrieveInformationModelGet,
            StorageCommitmentPushModel,
        ):
            ae.add_supported_context(sop_class)
        return ae

    def handlers(self) -> list[tuple[Any, Any]]:
        context = self.context
        return [
            (evt.EVT_CONN_OPEN, no_delay),
            (evt.EVT_CONN_OPEN, wakeups.wake_on_events),
            (evt.EVT_CONN_CLOSE, wakeups.release_wakeups),
            (evt.EVT_CONN_OPEN, _messages.send_store_responses),
            (evt.EVT_CONN_OPEN, _connection.decode_in_place),
            (evt.EVT_CONN_OPEN, _store_requests.receive_store_requests),
            (
                evt.EVT_CONN_OPEN,
                _connection.guard(self.config.dicom_max_pdu, self.config.dicom_network_timeout),
            ),
            (evt.EVT_ABORTED, _connection.discard_partial_data_set),
            (evt.EVT_CONN_CLOSE, _connection.discard_partial_data_set),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, lambda event: query.handle_find(context, caller_of(event), event)),
            (evt.EVT_C_MOVE, lambda event: retrieve.handle_move(context, caller_of(event), event)),
            (evt.EVT_C_GET, lambda event: retrieve.handle_get(context, caller_of(event), event)),
            (
                evt.EVT_N_ACTION,
                lambda event: commitment.handle_n_action(context, caller_of(event), event),
            ),
            (evt.EVT_RELEASED, self._on_ended),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_ended),
            *([(evt.EVT_CONN_CLOSE, self._on_closed)] if self.shared else []),
        ]

    def start(self) -> None:
        config = self.config
        host = config.dicom_host
        self.config.spool_dir.mkdir(parents=True, exist_ok=True)
        ae = self.build_ae()
        if self.shared is not None:
            self.shared.turns.claim()
        if config.dicom_port:
            self._listen(ae, (host, config.dicom_port), None)
        if config.dicom_tls_port:
            self._listen(ae, (host, config.dicom_tls_port), tls.server_context(config))

    def _listen(self, ae: AE, address: tuple[str, int], ssl_context: Any) -> None:
        """pynetdicom's non-blocking start_server, with a socket other bridge processes share."""
        shared = self.shared
        server = ae.make_server(
            address,
            ssl_context=ssl_context,
            evt_handlers=self.handlers(),
            server_class=SharedPortServer,
            listener=shared.sockets[address[1]] if shared else None,
            turns=shared.turns if shared else None,
        )
        thread = threading.Thread(
            target=server.serve_forever,
            args=(LISTENER_POLL_SECONDS,),
            name=f"ferry-dimse-{address[1]}",
            daemon=True,
        )
        thread.start()
        self.servers.append(server)

    @property
    def port(self) -> int:
        """The plain listener's port (useful when started on port 0 in tests)."""
        return int(self.servers[0].server_address[1])

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers.clear()
        if self.shared is not None:
            self.shared.turns.release()

    # -- association -------------------------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        primitive = event.assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        address = event.assoc.requestor.address
        caller, problem = identify(
            self.context.engine, calling, called, address, self.config.dicom_ae_title
        )
        if caller is None:
            self._reject(
                event, calling, called, address, problem, statuses.DIAG_CALLED_AE_NOT_RECOGNISED
            )
            return
        node = caller.node
        if node is not None and not node.any_address and not peer_matches(node.host, address):
            reason = (
                f"calling AE title {calling!r} is not accepted from {address}: its node's host"
                f" is {node.host!r}"
            )
            self._reject(
                event,
                calling,
                called,
                address,
                reason,
                statuses.DIAG_CALLING_AE_NOT_RECOGNISED,
                rule="peer-address",
            )
            return
        if caller.node is None:
            allowed = (
                caller.route.accept_unknown_callers
                if caller.route
                else self.config.dicom_accept_unknown_callers
            )
            if not allowed:
                reason = f"calling AE title {calling!r} is not a known node"
                self._reject(
                    event, calling, called, address, reason, statuses.DIAG_CALLING_AE_NOT_RECOGNISED
                )
                return
        setattr(event.assoc, _CALLER, caller)
        setattr(event.assoc, _STORED, {})

    def _reject(
        self,
        event: evt.Event,
        calling: str,
        called: str,
        address: str,
        reason: str,
        diagnostic: int,
        *,
        rule: str = "association",
    ) -> None:
        caller = Caller(calling, called, address, None, None, ANONYMOUS)
        try:
            self.context.audit(caller, "associate", Decision(False, rule, reason))
        finally:
            event.assoc.acse.send_reject(
                statuses.REJECTED_PERMANENT, statuses.SOURCE_SERVICE_USER, diagnostic
            )
            # pynetdicom closes the socket once this handler returns, often before its DUL
            # thread has sent the A-ASSOCIATE-RJ; kill() waits for it (as pynetdicom's own
            # rejections do), bounded by the ARTIM timer.
            event.assoc.kill()
        log.info("association from %s (%s) to %s rejected: %s", calling, address, called, reason)

    def _on_closed(self, _event: evt.Event) -> None:
        """The other bridges learn at once that this one holds an association fewer."""
        assert self.shared is not None
        self.shared.turns.refresh()

    def _on_echo(self, _event: evt.Event) -> int:
        return statuses.SUCCESS

    def _on_ended(self, event: evt.Event) -> None:
        """Writes the folded store audit events and tells routes about what arrived."""
        with self._lock:
            stored: dict[str, StoreTally] = getattr(event.assoc, _STORED, {})
            if not stored:
                return
            setattr(event.assoc, _STORED, {})
        caller = caller_of(event)
        try:
            self._settle_stored(caller, stored)
        except Exception:
            log.exception("could not record what %s stored", caller.calling_ae_title)

    def _settle_stored(self, caller: Caller, stored: dict[str, StoreTally]) -> None:
        context = self.context
        decision: Decision = Decision(True, "node-store", "stored over DIMSE")
        records = []
        for study_uid, tally in stored.items():
            access = context.archive.read_study_access(study_uid)
            records.append(
                context.audit_record(
                    caller,
                    Action.STORE,
                    decision,
                    access=access,
                    study_uid=study_uid,
                    outcome="allowed" if tally.stored else "failed",
                    institution_pk=caller.institution_pk,
                    instances=tally.stored,
                    failed=tally.failed,
                    statuses=dict(tally.statuses),
                )
            )
            if tally.conflicts:
                records.append(
                    context.audit_record(
                        caller,
                        Action.STORE,
                        UID_IN_USE,
                        access=None,
                        study_uid=study_uid,
                        institution_pk=caller.institution_pk,
                        instances=tally.conflicts,
                    )
                )
        record_many(context.engine, records)
        if caller.route is not None and caller.node is not None:
            arrived = {uid: tally.stored for uid, tally in stored.items() if tally.stored}
            transfers.note_arrivals(
                context.engine,
                caller.route.pk,
                caller.node.institution_pk,
                caller.calling_ae_title,
                arrived,
                context.clock(),
            )

    # -- storage -------------------------------------------------------------------------------

    def _store_decision(self, event: evt.Event, caller: Caller) -> Decision:
        decision: Decision | None = getattr(event.assoc, _STORE_DECISION, None)
        if decision is None:
            if caller.node is None:
                decision = Decision(False, "unknown-node", "an unknown AE may only C-ECHO")
            else:
                policy = self.context.snapshot()
                decision = self.context.decide(
                    caller,
                    Action.STORE,
                    Resource.institution(caller.node.institution_pk),
                    policy,
                )
                if decision.allowed and caller.route is not None:
                    decision = self._route_decision(caller, policy)
            setattr(event.assoc, _STORE_DECISION, decision)
            if not decision.allowed:  # one refusal event per association, not per instance
                self.context.audit(
                    caller, Action.STORE, decision, institution_pk=caller.institution_pk
                )
        return decision

    def _route_decision(self, caller: Caller, policy: PolicySnapshot) -> Decision:
        """A PACS pushing where its institution may not send now hears so at once (0x0124).

        The transfer is decided again when it is complete (the hours may have turned by then).
        """
        assert caller.route is not None and caller.node is not None
        route = caller.route
        resource = Resource.destination(
            route.destination_institution_pk, route.destination_node_pk, caller.node.institution_pk
        )
        return self.context.decide(caller, Action.TRANSFER, resource, policy)

    def _on_store(self, event: evt.Event) -> Dataset | int:
        caller = caller_of(event)
        received = Path(event.dataset_path)
        decision = self._store_decision(event, caller)
        if not decision.allowed or caller.node is None:
            received.unlink(missing_ok=True)
            return statuses.status_dataset(statuses.NOT_AUTHORIZED, decision.reason)
        outcome = store_received(self.context, event, institution_pk=caller.node.institution_pk)
        self._tally(event, outcome)
        code = status_code(outcome)
        if code == statuses.SUCCESS:
            return code
        return statuses.status_dataset(code, outcome.message or "stored with warnings")

    def _tally(self, event: evt.Event, outcome: StoreOutcome) -> None:
        study = outcome.study_instance_uid
        if not study:
            return
        with self._lock:
            stored: dict[str, StoreTally] = getattr(event.assoc, _STORED)
            tally = stored.setdefault(study, StoreTally())
            if outcome.stored:
                tally.stored += 1
            else:
                tally.failed += 1
                tally.statuses[f"{outcome.failure_reason:04X}"] += 1
                tally.conflicts += outcome.conflict


class SharedPortServer(ThreadedAssociationServer):
    """A listener several bridge processes share.

    Given `listener` (a socket `ferry serve` bound before forking its bridges,
    `dimse.shared_listeners`), it accepts from that socket when `turns` says this bridge is the
    least busy; otherwise it binds its own with SO_REUSEPORT (`ferry dimse serve` processes
    started apart), and the kernel spreads new connections over the sockets.
    """

    request_queue_size = 64

    def __init__(
        self,
        *args: Any,
        listener: socket.socket | None = None,
        turns: AcceptTurns | None = None,
        **kwargs: Any,
    ) -> None:
        self._listener = listener
        self._turns = turns
        super().__init__(*args, **kwargs)

    @property
    def contexts(self) -> list[PresentationContext]:
        """The supported contexts, each deep copied cheaply per association
        (`dimse._supported_contexts`)."""
        return self._contexts

    @contexts.setter
    def contexts(self, contexts: list[PresentationContext]) -> None:
        self._contexts = _supported_contexts.supported_contexts(contexts)

    def server_bind(self) -> None:
        if self._listener is not None:
            self.socket.close()  # the one socketserver made; the shared one is already bound
            self.socket = self._listener
            self.server_address = self._listener.getsockname()
            return
        if hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def server_activate(self) -> None:
        if self._listener is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """The next connection; BlockingIOError (socketserver then waits again) when another
        bridge took it."""
        if self._turns is None:
            return super().get_request()
        self._turns.wait_for_turn(self.socket)
        connection, address = self.socket.accept()
        connection.setblocking(True)
        if self.ssl_context:
            connection = self.ssl_context.wrap_socket(connection, server_side=True)
        self._turns.accepted(connection)
        return connection, address

    def service_actions(self) -> None:
        super().service_actions()
        if self._turns is not None:
            self._turns.refresh()  # associations ended, and a heartbeat for the other bridges

    def server_close(self) -> None:
        if self._listener is None:
            super().server_close()
        else:  # shutdown(2) would stop the other bridges' listening too
            self.socket.close()

    def shutdown(self) -> None:
        """Stops serving and closes the socket (the AE never listed it: made, not started)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class StoreTally:
    __slots__ = ("conflicts", "failed", "statuses", "stored")

    def __init__(self) -> None:
        self.stored = 0
        self.failed = 0
        self.conflicts = 0  # refused: a UID held by another institution's data
        self.statuses: Counter[str] = Counter()
