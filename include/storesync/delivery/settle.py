"""What the ledger knows that settles a held Sendlane event without a person.

Sendlane neither de-duplicates ``checkout_started`` / ``customer_added`` nor publishes a read of
them, so an unknown outcome of one cannot be resent blindly (a second one can fire a flow twice).
Two facts in the ledger make the question moot instead (``supersede_held = "newer_or_order"``):

- **a newer version of the same entity** is owed and on its way (planned, sent or accepted: not
  staged, not superseded): content versions mean the entity's *latest* content is what Sendlane
  must hold, and the newer request carries it whether or not the held one arrived. Only once the
  held request is ``unknown_grace_s`` old, so it cannot be processed after the newer one;
- **the contact placed an order after the checkout began** (``checkout_started`` only): an
  ``order_placed`` with the checkout's email, for an order placed at or after the checkout's
  version, that Sendlane accepted. Sendlane's checkout data is for re-targeting contacts who
  begin checkout but "do not place an order" (the integration guide): once the contact ordered,
  the abandoned-checkout flow ends whether or not the held event arrived, and resending it would
  start one for a contact who already bought. A checkout that itself became an order is the
  common case (storesync sends nothing for a completed checkout; the order clears it).

And what a contact read (``GET /contacts/search``) needs from the ledger: evidence that the read
path finds what Sendlane accepted (emails of accepted events), and whether any *other* storesync
delivery with the same email could have made the contact (``could_have_made_contact``).

Emails live only in payloads (ledger keys never hold one), so the email queries are ``LIKE``
scans of one account's rows, narrowed by time where they can be: they run for held rows only,
a handful per run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine

from storesync.delivery.ledger import (
    ACCEPTED, STAGED, SUPERSEDED, Delivery, deliveries, utcnow,
)

# Held Sendlane events a rule may settle: those with an email (the contact) and content versions.
SETTLEABLE_EVENTS = ("checkout_started", "customer_added")
# Accepted events whose email proves the contact read path (each makes or updates the contact).
EVIDENCE_EVENTS = ("customer_added", "order_placed", "checkout_started")
# Clocks differ (ours, Sendlane's): a contact created this close after another delivery was sent
# may have been made by it.
CLOCK_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class Newer:
    id: int
    version: str
    state: str


def email_of(delivery: Delivery) -> str | None:
    email = delivery.payload.get("email") if isinstance(delivery.payload, dict) else None
    return email.strip() if isinstance(email, str) and "@" in email else None


def _email_pattern(email: str) -> str:
    """A LIKE pattern for ``"email":"<email>"`` in a payload as ``ledger.dumps`` writes it, with
    LIKE's wildcards escaped (``_`` is common in addresses and would match any character)."""
    needle = '"email":' + json.dumps(email)
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class HeldRules:
    """Ledger reads for one Sendlane account's held rows."""

    def __init__(self, engine: Engine, vendor: str, account: str) -> None:
        self.engine = engine
        self.vendor = vendor
        self.account = account

    def newer_version(self, delivery: Delivery) -> Newer | None:
        """The newest later version of this delivery's entity that is owed (neither staged nor
        superseded), or None; later by ``(seq, id)``, the ledger's order of versions. (Read
        through ``ix_deliveries_entity``.)"""
        query = (select(deliveries.c.id, deliveries.c.version, deliveries.c.state)
                 .where(deliveries.c.vendor == self.vendor, deliveries.c.event_type == delivery.event_type,
                        deliveries.c.entity_id == delivery.entity_id, deliveries.c.account == self.account,
                        or_(deliveries.c.seq > delivery.seq,
                            and_(deliveries.c.seq == delivery.seq, deliveries.c.id > delivery.id)),
                        deliveries.c.state.notin_((STAGED, SUPERSEDED)))
                 .order_by(deliveries.c.seq.desc(), deliveries.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return Newer(row.id, row.version, row.state) if row else None

    def order_since(self, delivery: Delivery) -> tuple[int, str] | None:
        """``(delivery id, order id)`` of an accepted ``order_placed`` with this checkout's email,
        for an order placed at or after the checkout's version, or None. Read through
        ``ix_deliveries_updated``: only rows updated since the checkout was planned (an order
        accepted earlier was placed before the checkout was seen open)."""
        email = email_of(delivery)
        if email is None:
            return None
        occurred, planned, _claimed = self._times(delivery.id)
        if occurred is None:
            return None  # without the checkout's time, "after it began" cannot be told
        query = (select(deliveries.c.id, deliveries.c.entity_id)
                 .where(deliveries.c.updated_at >= planned, deliveries.c.vendor == self.vendor,
                        deliveries.c.account == self.account, deliveries.c.state == ACCEPTED,
                        deliveries.c.event_type == "order_placed", deliveries.c.occurred_at >= occurred,
                        deliveries.c.payload.ilike(_email_pattern(email), escape="\\"))
                 .order_by(deliveries.c.id).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row.id, row.entity_id) if row else None

    def could_have_made_contact(self, delivery: Delivery, created_at: datetime | None) -> list[int]:
        """Other deliveries of this account with the held row's email that may have reached
        Sendlane before the contact was created: claimed at least once, whatever their state now
        (a retry may follow a request that arrived), and, when Sendlane says when the contact was
        created, sent by then (``CLOCK_MARGIN`` for clocks that differ): a row claimed once was
        sent at ``claimed_at``; a row claimed more often may have been sent any time since it was
        planned. Any of them may have made the contact."""
        email = email_of(delivery)
        if email is None:
            return []
        query = (select(deliveries.c.id)
                 .where(deliveries.c.vendor == self.vendor, deliveries.c.account == self.account,
                        deliveries.c.id != delivery.id, deliveries.c.attempts > 0,
                        deliveries.c.payload.ilike(_email_pattern(email), escape="\\"))
                 .limit(20))
        if created_at is not None:
            by = created_at + CLOCK_MARGIN
            query = query.where(or_(and_(deliveries.c.attempts == 1, deliveries.c.claimed_at <= by),
                                    and_(deliveries.c.attempts > 1, deliveries.c.planned_at <= by)))
        with self.engine.connect() as conn:
            return [row.id for row in conn.execute(query)]

    def made_by(self, delivery: Delivery, created_at: datetime | None, grace_s: float) -> bool:
        """Did this held event make the contact Sendlane holds, created at ``created_at``? Yes when
        the contact was created while the event could have made it (not before it was planned, not
        after Sendlane must have processed its last request: ``grace_s`` after it was sent, with
        ``CLOCK_MARGIN`` either side) and no other storesync delivery with its email could have
        (``could_have_made_contact``; the ledger makes the person's deliveries wait behind an
        unknown ``customer_added`` until its read, ``ledger.PERSON_WAIT_EVENTS``). Without a
        ``created_at``: only when no other delivery with the email was ever sent. What it cannot
        rule out: a contact made outside storesync (a form, the site's snippet) in that window."""
        if created_at is None:
            return not self.could_have_made_contact(delivery, None)
        _occurred, planned, claimed = self._times(delivery.id)
        if planned is None or claimed is None:
            return False
        if created_at < planned - CLOCK_MARGIN:
            return False  # the contact existed before this event could have been sent
        if created_at > claimed + timedelta(seconds=grace_s) + CLOCK_MARGIN:
            return False  # made after Sendlane had processed this event: by something else
        return not self.could_have_made_contact(delivery, created_at)

    def _times(self, delivery_id: int) -> tuple[datetime | None, datetime | None, datetime | None]:
        query = (select(deliveries.c.occurred_at, deliveries.c.planned_at, deliveries.c.claimed_at)
                 .where(deliveries.c.id == delivery_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row.occurred_at, row.planned_at, row.claimed_at) if row else (None, None, None)

    def evidence_emails(self, min_age_s: float, limit: int = 3) -> list[str]:
        """Emails of the newest events Sendlane accepted with its own answer (not by a lookup or
        a reconciliation), at least ``min_age_s`` ago: contacts that must exist by now."""
        cutoff = utcnow() - timedelta(seconds=min_age_s)
        query = (select(deliveries.c.payload)
                 .where(deliveries.c.vendor == self.vendor, deliveries.c.account == self.account,
                        deliveries.c.state == ACCEPTED, deliveries.c.event_type.in_(EVIDENCE_EVENTS),
                        deliveries.c.vendor_error.is_(None), deliveries.c.accepted_at <= cutoff)
                 .order_by(deliveries.c.id.desc()).limit(limit * 4))
        emails: list[str] = []
        with self.engine.connect() as conn:
            for (payload,) in conn.execute(query):
                email = json.loads(payload).get("email")
                if isinstance(email, str) and "@" in email and email.lower() not in emails:
                    emails.append(email.lower())
        return emails[:limit]


__all__ = ["CLOCK_MARGIN", "EVIDENCE_EVENTS", "SETTLEABLE_EVENTS", "HeldRules", "Newer", "email_of"]
