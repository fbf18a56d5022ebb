"""Worklist reconciliation before delivery (PS3.4 Annex K; Original Attributes, PS3.3 C.12.1).

A destination node may name a worklist node: its RIS, a Modality Worklist SCP. Before a foreign
study is delivered there, Ferry asks the RIS for the order once per study, by Accession Number,
else by Patient's Name and Birth Date (and Sex). Exactly one order must answer. Its local values
replace the sender's by the tag map (`FERRY_RECONCILE_MAP`); the sender's values are kept in
Original Attributes Sequence, and the coercion is audited once per study. No single order is
`NoWorklistMatch`, a state a person resolves; a RIS that cannot be asked is `WorklistUnavailable`,
which forwarding retries.

Interface used by forwarding: `reconciler_for(context, node, study_uid)` gives None (deliver as
stored) or a Reconciler whose `coerce(dataset)` returns the edited copy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind
from sqlmodel import Session

from audit.trail import AuditRecord, record
from dimse.callers import get_node
from dimse.peers import PeerUnreachable, open_association
from dimse.remote import RemoteFailed, end_association, iter_find_responses
from foundation.errors import FerryError
from policy.decision import NodeFacts
from policy.models import Institution

if TYPE_CHECKING:
    from dimse.context import BridgeContext

MODIFYING_SYSTEM = "FERRY"
REASON_COERCE = "COERCE"  # PS3.3 C.12.1.1.9.2, Reason for the Attribute Modification
AUDITED_IDS = ("PatientID", "IssuerOfPatientID", "AccessionNumber")
# Asked of the RIS whatever the map says: the matching keys, and what identifies an order.
RETURN_KEYS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
)
ORIGINAL_ATTRIBUTES = 0x04000561  # Original Attributes Sequence
SPECIFIC_CHARACTER_SET = 0x00080005
_WILDCARDS = frozenset("*?\\")
_ASCII = ("ISO_IR 6", "")


class NoWorklistMatch(FerryError):
    """The RIS knows no single order for this study: a person must decide."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WorklistUnavailable(PeerUnreachable):
    """The RIS could not be asked (unreachable, silent or failing): try again later."""


@dataclass(frozen=True)
class TagMapping:
    """One map entry: the delivered attribute `target` takes the order's `source` value."""

    target: str
    source: tuple[str, ...]  # a keyword, or a sequence keyword then an item keyword

    def element_in(self, order: Dataset) -> DataElement | None:
        """The order's source element (the first item's for a sequence path), if answered."""
        current: Dataset = order
        for keyword in self.source[:-1]:
            items = current.get(keyword)
            if not items:
                return None
            current = items[0]
        keyword = self.source[-1]
        if keyword not in current:
            return None
        return current[keyword]


def parse_tag_map(entries: Iterable[str]) -> tuple[TagMapping, ...]:
    """`Target=Source` or `Keyword` entries, as validated by the settings."""
    mappings = []
    for entry in entries:
        target, _, source = entry.partition("=")
        path = tuple(part.strip() for part in (source or target).split("."))
        mappings.append(TagMapping(target.strip(), path))
    return tuple(mappings)


@dataclass(frozen=True)
class Order:
    """The RIS's answer for this study, and which keys found it."""

    answer: Dataset
    matched_by: str  # "accession" or "demographics"


class Reconciler:
    """Reconciles one study: one worklist query, one audit event, any number of instances."""

    def __init__(
        self,
        context: BridgeContext,
        node: NodeFacts,
        worklist: NodeFacts | None,
        study_uid: str,
        mappings: Sequence[TagMapping],
        problem: str = "",
    ) -> None:
        self.context = context
        self.node = node
        self.worklist = worklist
        self.study_uid = study_uid
        self.mappings = tuple(mappings)
        self.problem = problem
        self._lock = threading.Lock()
        self._order: Order | NoWorklistMatch | None = None
        self._sender: str | None = None
        self._audited = False

    def coerce(self, dataset: Dataset) -> Dataset:
        """A copy with the order's local values; raises NoWorklistMatch (or WorklistUnavailable)."""
        order = self.order_for(dataset)
        coerced = coerce_dataset(
            dataset,
            order.answer,
            self.mappings,
            source=self._sender_name(),
            now=self.context.clock(),
        )
        with self._lock:
            first, self._audited = not self._audited, True
        if first:
            self._audit_coercion(dataset, coerced, order)
        return coerced

    def order_for(self, dataset: Dataset) -> Order:
        """The study's order, asked of the RIS on the first call (keys from this dataset)."""
        with self._lock:
            if self._order is None:
                try:
                    self._order = self._look_up(dataset)
                except NoWorklistMatch as refusal:
                    self._order = refusal
                    self._audit_refusal(dataset, refusal)
            found = self._order
        if isinstance(found, NoWorklistMatch):
            raise NoWorklistMatch(found.reason)
        return found

    # -- the query ---------------------------------------------------------------------------

    def _look_up(self, dataset: Dataset) -> Order:
        if self.problem or self.worklist is None:
            raise NoWorklistMatch(self.problem or "no worklist node to reconcile with")
        accession = _text(dataset, "AccessionNumber")
        if _usable(accession):
            orders = self._distinct(self._find(dataset, {"AccessionNumber": accession}))
            if len(orders) == 1:
                _same_patient(dataset, orders[0], accession)
                return Order(orders[0], "accession")
            if len(orders) > 1:
                raise NoWorklistMatch(
                    f"{len(orders)} different worklist orders have accession number {accession}"
                )
        name, birth_date = _text(dataset, "PatientName"), _text(dataset, "PatientBirthDate")
        first = (
            f"no worklist order has accession number {accession!r}"
            if accession
            else "the study has no accession number"
        )
        if not _usable(name) or not _usable(birth_date):
            raise NoWorklistMatch(f"{first}, and no patient name and birth date to search by")
        keys = {"PatientName": name, "PatientBirthDate": birth_date}
        sex = _text(dataset, "PatientSex")
        if sex in ("M", "F", "O"):
            keys["PatientSex"] = sex
        orders = self._distinct(self._find(dataset, keys))
        who = f"patient {name} born {birth_date}" + (f" ({sex})" if "PatientSex" in keys else "")
        if not orders:
            raise NoWorklistMatch(f"{first}, and no order is for {who}")
        if len(orders) > 1:
            raise NoWorklistMatch(f"{len(orders)} different worklist orders match {who}")
        return Order(orders[0], "demographics")

    def _find(self, dataset: Dataset, keys: dict[str, str]) -> list[Dataset]:
        worklist = self.worklist
        assert worklist is not None
        query = worklist_query(keys, self.mappings, dataset.get("SpecificCharacterSet"))
        sop_class = ModalityWorklistInformationFind
        try:
            assoc = open_association(self.context.config, worklist, [build_context(sop_class)])
        except PeerUnreachable as error:
            raise WorklistUnavailable(f"the worklist could not be asked: {error}") from error
        finished = False
        try:
            answers = list(iter_find_responses(assoc, worklist, query, sop_class))
            finished = True
        except RemoteFailed as error:
            raise WorklistUnavailable(f"the worklist query failed: {error}") from error
        finally:
            end_association(assoc, finished)
        return answers

    def _distinct(self, answers: list[Dataset]) -> list[Dataset]:
        """Orders that would coerce differently (one order may have several procedure steps)."""
        seen: dict[tuple[str, ...], Dataset] = {}
        for answer in answers:
            values = []
            for mapping in self.mappings:
                element = mapping.element_in(answer)
                values.append("" if element is None else str(element.value))
            seen.setdefault(tuple(values), answer)
        return list(seen.values())

    # -- audit ---------------------------------------------------------------------------------

    def _sender_name(self) -> str:
        """The owning (sending) institution's name: Source of Previous Values."""
        if self._sender is None:
            access = self.context.archive.read_study_access(self.study_uid)
            institution = None
            if access is not None and access.institution_pk is not None:
                with Session(self.context.engine) as session:
                    institution = session.get(Institution, access.institution_pk)
            self._sender = institution.name[:64] if institution else ""
        return self._sender

    def _audit_coercion(self, before: Dataset, after: Dataset, order: Order) -> None:
        changed = [
            m.target for m in self.mappings if _text(before, m.target) != _text(after, m.target)
        ]
        self._audit(
            before,
            "allowed",
            "worklist-match",
            f"matched by {order.matched_by}",
            matched_by=order.matched_by,
            before={k: _text(before, k) for k in AUDITED_IDS},
            after={k: _text(after, k) for k in AUDITED_IDS},
            coerced=changed,
            requested_procedure_id=_text(order.answer, "RequestedProcedureID"),
        )

    def _audit_refusal(self, dataset: Dataset, refusal: NoWorklistMatch) -> None:
        self._audit(dataset, "failed", "no-worklist-match", refusal.reason)

    def _audit(self, dataset: Dataset, outcome: str, rule: str, reason: str, **detail: Any) -> None:
        record(
            self.context.engine,
            AuditRecord(
                action="reconcile",
                outcome=outcome,
                actor="ferry",
                actor_kind="system",
                institution_pk=self.node.institution_pk,
                rule=rule,
                reason=reason,
                study_uid=self.study_uid,
                patient_id=_text(dataset, "PatientID"),
                accession_number=_text(dataset, "AccessionNumber"),
                detail={
                    "protocol": "dimse",
                    "node": self.node.ae_title,
                    "worklist": self.worklist.ae_title if self.worklist else "",
                    **detail,
                },
            ),
        )


def reconciler_for(context: BridgeContext, node: NodeFacts, study_uid: str) -> Reconciler | None:
    """None when the node takes studies as they are; else the study's Reconciler."""
    if node.reconcile_with_pk is None:
        return None
    worklist = get_node(context.engine, node.reconcile_with_pk)
    problem = ""
    if worklist is None:
        problem = f"the worklist node (pk {node.reconcile_with_pk}) of {node.ae_title} is gone"
    elif not worklist.worklist:
        problem = f"node {worklist.ae_title} is not marked as a worklist (RIS) node"
    mappings = parse_tag_map(context.config.reconcile_map)
    return Reconciler(context, node, worklist, study_uid, mappings, problem)


# -- the dataset -------------------------------------------------------------------------------


def worklist_query(
    keys: dict[str, str], mappings: Sequence[TagMapping], character_set: Any = None
) -> Dataset:
    """An MWL identifier: the matching keys, and every attribute the map reads as return keys."""
    query = Dataset()
    if character_set:
        query.SpecificCharacterSet = character_set
    nested: dict[str, set[str]] = {"ScheduledProcedureStepSequence": set()}
    top = set(RETURN_KEYS)
    for mapping in mappings:
        if len(mapping.source) == 1:
            top.add(mapping.source[0])
        else:
            nested.setdefault(mapping.source[0], set()).add(mapping.source[-1])
    for keyword in sorted(top - set(nested)):
        query.add_new(tag_for_keyword(keyword), dictionary_VR(keyword), keys.get(keyword))
    for sequence, keywords in nested.items():
        item = Dataset()
        for keyword in sorted(keywords):
            item.add_new(tag_for_keyword(keyword), dictionary_VR(keyword), None)
        setattr(query, sequence, [item])
    return query


def coerce_dataset(
    dataset: Dataset,
    order: Dataset,
    mappings: Sequence[TagMapping],
    *,
    source: str,
    now: datetime,
) -> Dataset:
    """A copy with the order's values; replaced values go to Original Attributes Sequence.

    The copy shares the sender's elements and only ever replaces them (never assigns to one),
    so the dataset it came from is left as it was.
    """
    coerced = _copy(dataset)
    originals = Dataset()
    changes: list[DataElement] = []
    for mapping in mappings:
        element = mapping.element_in(order)
        if element is None:  # the RIS did not answer this attribute: keep the sender's
            continue
        tag, vr = tag_for_keyword(mapping.target), dictionary_VR(mapping.target)
        value, old = _plain(element.value), _plain(dataset[tag].value if tag in dataset else None)
        if old == value:
            continue
        # An attribute the sender did not have is recorded with an empty value.
        originals.add(DataElement(tag, vr, old or None))
        changes.append(DataElement(tag, vr, value or None))
    if not changes:
        return coerced
    _fit_character_set(coerced, [text for change in changes for text in _texts(change.value)])
    for change in changes:
        coerced.add(change)
    item = Dataset()
    item.ModifiedAttributesSequence = [originals]
    item.AttributeModificationDateTime = now.astimezone(UTC).strftime("%Y%m%d%H%M%S.%f+0000")
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.SourceOfPreviousValues = source
    item.ReasonForTheAttributeModification = REASON_COERCE
    earlier = list(dataset.get("OriginalAttributesSequence") or [])
    coerced.add(DataElement(ORIGINAL_ATTRIBUTES, "SQ", DicomSequence([*earlier, item])))
    return coerced


def _copy(dataset: Dataset) -> Dataset:
    """A new dataset holding the same elements (not copies of the pixel bytes)."""
    copy = Dataset()
    for element in dataset:
        copy.add(element)
    if hasattr(dataset, "file_meta"):
        copy.file_meta = deepcopy(dataset.file_meta)
    return copy


def _fit_character_set(dataset: Dataset, texts: list[str]) -> None:
    """Declare UTF-8 when the local values need characters the sender's set lacks.

    Runs before the new values go in: decoding in place is harmless to the shared elements
    (already decoded with the same set), and the new values are plain text.
    """
    if all(text.isascii() for text in texts):
        return
    declared = dataset.get("SpecificCharacterSet") or ""
    terms = [declared] if isinstance(declared, str) else list(declared)
    if any(term not in _ASCII for term in terms):
        for codec in convert_encodings(terms):
            try:
                for text in texts:
                    text.encode(codec)
                return
            except UnicodeEncodeError:
                continue
    dataset.decode()
    dataset.add(DataElement(SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192"))


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _plain(value: Any) -> Any:
    """Text for comparing and copying: PN and multi-values as plain strings."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        return [str(item) for item in value]
    return str(value)


def _same_patient(dataset: Dataset, order: Dataset, accession: str) -> None:
    """An accession number can collide across institutions: the birth dates must agree."""
    theirs, ours = _text(dataset, "PatientBirthDate"), _text(order, "PatientBirthDate")
    if theirs and ours and theirs != ours:
        raise NoWorklistMatch(
            f"the worklist order with accession number {accession} is for a patient born"
            f" {ours}, the study's patient was born {theirs}"
        )


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _usable(value: str) -> bool:
    """Empty would match everything, wildcards too much: neither is a key to reconcile by."""
    return bool(value) and not (set(value) & _WILDCARDS)
