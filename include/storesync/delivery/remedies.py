"""What a person does about deliveries held with an unknown outcome: one text, said the same way
by the CLI (``storesync sync``, ``storesync reconcile --list``) and by the task failure and alert.

A row is *held* when no rule of the vendor's contract can settle it (see
``storesync.pipeline.senders``): Sendlane events it neither de-duplicates nor lets anyone read
(carts, views, custom events; checkouts and customers no rule settled: ``storesync.delivery.settle``),
Sailthru returns (no read of them), and rows whose lookups failed for a day or whose lookup path
is not proven. A row *awaiting its lookup* is not held: the next scheduled run settles it (a
Sailthru lookup; a Sendlane checkout or customer noted ``awaiting_read``, for a day at most), and
nobody should touch it (a resend could duplicate it).

``held_remedy(vendor, held_by_event)`` is the sentence to show; ``classify_unknown`` tells the
two kinds apart from a ledger row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from storesync.delivery.contracts import SAILTHRU_LOOKUPS, lookup_request, sendlane_resend_is_safe
from storesync.delivery.engine import AWAITING_READ, LOOKUP_GIVE_UP_S
from storesync.delivery.ledger import Delivery, utcnow
from storesync.delivery.settle import SETTLEABLE_EVENTS

HELD, AWAITING_LOOKUP, AWAITING_RESEND = "held", "awaiting_lookup", "awaiting_resend"


def classify_unknown(delivery: Delivery, *, sendlane_unknown_outcome: str = "resend",
                     sailthru_unknown_outcome: str = "lookup", now: datetime | None = None) -> str:
    """``HELD`` (a person decides), ``AWAITING_LOOKUP`` (the next run looks it up) or
    ``AWAITING_RESEND`` (the next run sends it again: the vendor's contract makes a repeat
    harmless) for an ``unknown`` ledger row."""
    if delivery.vendor == "sendlane":
        safe = sendlane_resend_is_safe(delivery.event_type, delivery.endpoint)
        if sendlane_unknown_outcome == "resend" and safe:
            return AWAITING_RESEND
        if delivery.vendor_code == AWAITING_READ and _within_a_day(delivery, now):
            return AWAITING_LOOKUP  # the next run's rules and contact read settle it
        return HELD
    if (delivery.vendor == "sailthru" and sailthru_unknown_outcome == "lookup"
            and delivery.endpoint in SAILTHRU_LOOKUPS
            and lookup_request(delivery.endpoint, delivery.payload) is not None):
        if _within_a_day(delivery, now):
            return AWAITING_LOOKUP
    return HELD


def _within_a_day(delivery: Delivery, now: datetime | None) -> bool:
    since = delivery.unknown_since
    return since is None or ((now or utcnow()) - since).total_seconds() < LOOKUP_GIVE_UP_S


def _why(vendor: str, event_type: str) -> str:
    if vendor == "sendlane":
        if event_type in SETTLEABLE_EVENTS:
            return ("Sendlane neither de-duplicates it nor publishes a read or export of it, and no rule "
                    "settled it (no newer version of it, no order of the contact since a checkout, and the "
                    "contact read could not tell)")
        return "Sendlane neither de-duplicates it nor publishes a read or export of it"
    if event_type == "return":
        return "Sailthru has no read of returns, and a second return counts twice"
    return "its lookups failed for a day, or the lookup path could not be proven to find what Sailthru holds"


def _where_to_look(vendor: str, held: Mapping[str, int]) -> str:
    if vendor == "sailthru" and set(held) == {"return"}:
        return "the user's profile: Sailthru saves returns on it"
    return "the contact's activity, the order, the return"


def held_remedy(vendor: str, held_by_event: Mapping[str, int]) -> str:
    """What to tell a person about ``vendor``'s held rows (``{event_type: count}``): what they
    are, why nothing automatic settles them, and the exact commands that do. Empty when none."""
    held = {event: n for event, n in sorted(held_by_event.items()) if n}
    if not held:
        return ""
    total = sum(held.values())
    listed = ", ".join(f"{event} {n}" for event, n in held.items())
    reasons = sorted({_why(vendor, event) for event in held})
    lines = [
        f"{total} {vendor} deliveries are held with an unknown outcome ({listed}): the request left and no "
        f"answer came back, and {'; '.join(reasons)}. Nothing was resent (that could count it twice).",
        f"  1. list them: storesync reconcile --list --vendor {vendor}",
        f"  2. check each in {vendor.capitalize()} ({_where_to_look(vendor, held)}), then",
        f"     storesync reconcile --vendor {vendor} --arrived --ids ID ...   "
        f"# for those {vendor.capitalize()} has",
        f"     storesync reconcile --vendor {vendor} --resend --ids ID ...    "
        "# for those it does not (sent by the next run)",
    ]
    if vendor == "sailthru":
        lines.append("     or, from an export of what Sailthru holds: storesync reconcile --vendor sailthru "
                     "--found-file FILE [--resend-missing]")
    return "\n".join(lines)


def held_counts(rows: Iterable[Delivery], **policy) -> dict[str, dict[str, int]]:
    """``{vendor: {event_type: n}}`` of the rows among ``rows`` that are ``HELD``."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        if classify_unknown(row, **policy) == HELD:
            per_vendor = counts.setdefault(row.vendor, {})
            per_vendor[row.event_type] = per_vendor.get(row.event_type, 0) + 1
    return counts


__all__ = ["AWAITING_LOOKUP", "AWAITING_RESEND", "HELD", "classify_unknown", "held_counts", "held_remedy"]
