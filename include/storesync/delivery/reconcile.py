"""Reconciliation: a person settles deliveries held with an unknown outcome (``storesync reconcile``).

Two ways, both recorded in the ledger with why:
- from an export of what the vendor holds (``--found-file``): a line per delivery it has,
  ``event_type<TAB>entity_id<TAB>version`` (the version may be left out when only one version of
  that entity is unknown: with several, which one arrived is exactly what must be said); those
  are ``accepted``. ``--resend-missing`` requeues the held rows the export does not show;
- by hand, after checking in the vendor's UI: ``--arrived --ids ...`` / ``--resend --ids ...``.

Never requeued, whatever is asked: a row still waiting for its own lookup (a Sailthru purchase,
cart, content or profile the next run looks up, or a Sendlane checkout or customer noted
``awaiting_read`` that the next run's rules and contact read settle, for a day at most): that
settles it without a person, and a resend beside it could count it twice. Rows the next
run resends anyway (Sendlane order events, products, contacts) are left to it. Marking a row
arrived is always allowed: it sends nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from storesync.delivery.ledger import UNKNOWN, Delivery, Ledger
from storesync.delivery.remedies import AWAITING_LOOKUP, HELD, classify_unknown


@dataclass
class ReconcileResult:
    arrived: int = 0  # marked accepted
    requeued: int = 0  # put back in line: the next run sends them
    still_held: int = 0
    awaiting_lookup: int = 0  # left to the next run's lookup
    awaiting_resend: int = 0  # left to the next run's resend (the contract makes it safe)
    refused: list[str] = field(default_factory=list)  # why asked-for rows were not touched

    def text(self) -> str:
        parts = [f"reconciled: {self.arrived} arrived (accepted)", f"{self.requeued} requeued to send",
                 f"{self.still_held} still held"]
        if self.awaiting_lookup:
            parts.append(f"{self.awaiting_lookup} left to their own lookup in the next run")
        if self.awaiting_resend:
            parts.append(f"{self.awaiting_resend} left to the next run's resend")
        return ", ".join(parts) + "".join(f"\n  not touched: {why}" for why in self.refused)


class Reconciler:
    def __init__(self, ledger: Ledger, *, sendlane_unknown_outcome: str = "resend",
                 sailthru_unknown_outcome: str = "lookup") -> None:
        self.ledger = ledger
        self.policy = {"sendlane_unknown_outcome": sendlane_unknown_outcome,
                       "sailthru_unknown_outcome": sailthru_unknown_outcome}

    @classmethod
    def from_settings(cls, ledger: Ledger, settings) -> Reconciler:
        return cls(ledger, sendlane_unknown_outcome=settings.sendlane.unknown_outcome,
                   sailthru_unknown_outcome=settings.sailthru.unknown_outcome)

    def unknown(self, vendor: str | None = None, event_type: str | None = None) -> list[tuple[Delivery, str]]:
        """Every ``unknown`` row (of ``vendor``, ``event_type``) with its kind (``remedies``)."""
        rows = [d for d in self.ledger.in_state(UNKNOWN, vendor=vendor)
                if not event_type or d.event_type == event_type]
        return [(d, classify_unknown(d, **self.policy)) for d in rows]

    def from_export(self, found: Sequence[tuple[str, str, str | None]], *, vendor: str | None = None,
                    event_type: str | None = None, resend_missing: bool = False,
                    source: str = "") -> ReconcileResult:
        rows = self.unknown(vendor, event_type)
        present = match_export(found, [d for d, _ in rows])
        result = ReconcileResult()
        reason = f"reconciled from vendor export {source}".strip()
        result.arrived = self.ledger.mark_accepted(sorted(present), reason=reason)
        missing = [(d, kind) for d, kind in rows if d.id not in present]
        requeue = [d.id for d, kind in missing if kind == HELD] if resend_missing else []
        result.requeued = self.ledger.requeue(requeue, reset_attempts=False)
        self._count_left(result, [(d, kind) for d, kind in missing if d.id not in set(requeue)])
        return result

    def by_hand(self, ids: Sequence[int], *, arrived: bool, vendor: str | None = None) -> ReconcileResult:
        """``arrived``: the person found them at the vendor; else: found them missing (resend)."""
        rows = {d.id: (d, kind) for d, kind in self.unknown(vendor)}
        result = ReconcileResult()
        unknown_ids = [i for i in ids if i not in rows]
        if unknown_ids:
            of_vendor = f" of {vendor}" if vendor else ""
            result.refused.append(f"{len(unknown_ids)} id(s) are not deliveries held with an unknown outcome"
                                  f"{of_vendor}: {_ids(unknown_ids)}")
        chosen = [rows[i] for i in ids if i in rows]
        if arrived:
            result.arrived = self.ledger.mark_accepted([d.id for d, _ in chosen],
                                                       reason="reconciled by hand: arrived")
            return result
        waiting = [d.id for d, kind in chosen if kind == AWAITING_LOOKUP]
        if waiting:
            result.refused.append(f"{len(waiting)} row(s) wait for their own lookup, which the next run "
                                  f"makes (a resend beside it could count twice): {_ids(waiting)}")
            result.awaiting_lookup = len(waiting)
        result.requeued = self.ledger.requeue([d.id for d, kind in chosen if kind != AWAITING_LOOKUP],
                                              reset_attempts=False)
        return result

    @staticmethod
    def _count_left(result: ReconcileResult, left: list[tuple[Delivery, str]]) -> None:
        for _, kind in left:
            if kind == HELD:
                result.still_held += 1
            elif kind == AWAITING_LOOKUP:
                result.awaiting_lookup += 1
            else:
                result.awaiting_resend += 1


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")


def match_export(found: Sequence[tuple[str, str, str | None]], rows: Sequence[Delivery]) -> set[int]:
    """The ids of ``rows`` the export's lines name: by ``(event_type, entity_id, version)``, or by
    ``(event_type, entity_id)`` when one version only is unknown. A line that names several
    unknown versions without saying which raises ValueError (nothing is marked)."""
    by_entity: dict[tuple[str, str], list[Delivery]] = {}
    for d in rows:
        by_entity.setdefault((d.event_type, d.entity_id), []).append(d)
    present: set[int] = set()
    ambiguous = []
    for event_type, entity_id, version in found:
        candidates = by_entity.get((event_type, entity_id), [])
        if version is not None:
            present.update(d.id for d in candidates if d.version == version)
        elif len(candidates) == 1:
            present.add(candidates[0].id)
        elif candidates:
            versions = ", ".join(sorted(d.version for d in candidates))
            ambiguous.append(f"{event_type} {entity_id} (versions {versions})")
    if ambiguous:
        raise ValueError("the export does not say which version arrived for: "
                         + "; ".join(ambiguous[:10]) + ". Give lines 'event_type<TAB>entity_id<TAB>version' (`storesync reconcile --list` "
                         "shows the versions)")
    return present


def read_export(path: str, event_type: str | None = None) -> list[tuple[str, str, str | None]]:
    """The lines of a vendor export: ``event_type<TAB>entity_id[<TAB>version]``, or a bare
    ``entity_id`` when ``event_type`` names the one event type the export covers."""
    found = []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t")
            if not any(fields):
                continue
            if len(fields) == 3:
                found.append((fields[0], fields[1], fields[2] or None))
            elif len(fields) == 2:
                found.append((fields[0], fields[1], None))
            elif event_type:
                found.append((event_type, fields[0], None))
            else:
                raise ValueError(f"{path}:{number}: '{fields[0]}' has no event type; write "
                                 "'event_type<TAB>entity_id<TAB>version' or pass --event-type")
    return found


__all__ = ["ReconcileResult", "Reconciler", "match_export", "read_export"]
