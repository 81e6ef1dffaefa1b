"""The person-scoped wait (ledger ``_waits_for_person``): a person's deliveries wait while a
``customer_added`` of theirs is earlier in line, in flight, or unknown awaiting its contact read,
for ``PERSON_WAIT_S`` at most; never another person's, never a row without an email. On SQLite and
PostgreSQL (the claim's subquery reads a partial index)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from storesync.delivery.ledger import (
    AWAITING_READ,
    PERSON_WAIT_S,
    SENDING,
    UNKNOWN,
    Ledger,
    PlannedDelivery,
    deliveries,
    person_of,
    utcnow,
)
from storesync.pipeline.targets import person_key


@pytest.fixture
def ledger(db_url):
    return Ledger(db_url)


def planned(event_type, entity_id, payload, run="r1"):
    return PlannedDelivery(vendor="sendlane", account="acct", event_type=event_type, entity_id=str(entity_id),
                           version="1", endpoint="/tracking/x", payload=payload,
                           ordering_key=f"{event_type}:{entity_id}", versioning="content")


def plan(ledger, *items, run="r1"):
    ledger.plan(items, sync_name="t", run_id=run)
    ledger.promote(run)


def set_row(ledger, entity_id, **values):
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.entity_id == entity_id).values(**values))


def names(ledger) -> set[str]:
    ids = [c.id for c in ledger.next_claimable("sendlane", "acct", 100)]
    with ledger.engine.connect() as conn:
        rows = conn.execute(deliveries.select().where(deliveries.c.id.in_(ids))).mappings().all()
    return {f"{r['event_type']}:{r['entity_id']}" for r in rows}


def test_the_person_is_a_hash_of_the_email_the_same_as_the_planners(ledger):
    assert person_of({"email": " Ann@Example.com "}) == person_key("ann@example.com")
    assert person_of({"contacts": [{"email": "ann@example.com"}]}) == person_key("ann@example.com")
    assert person_of({"contacts": [{"email": "a@x.io"}, {"email": "b@x.io"}]}) is None
    assert person_of({"order_id": 1}) is None


def test_a_persons_deliveries_wait_behind_their_customer_added_and_no_one_elses(ledger):
    plan(ledger, planned("customer_added", 1, {"customer_id": 1, "email": "ann@example.com"}))
    plan(ledger, planned("order_placed", 10, {"order_id": 10, "email": "ann@example.com"}),
         planned("order_placed", 11, {"order_id": 11, "email": "bob@example.com"}),
         planned("product_added", 12, {"product_id": 12}), run="r2")
    # Earlier in line: Ann's order waits for her customer_added to go first.
    assert names(ledger) == {"customer_added:1", "order_placed:11", "product_added:12"}
    set_row(ledger, "1", state=SENDING)
    assert names(ledger) == {"order_placed:11", "product_added:12"}
    set_row(ledger, "1", state=UNKNOWN, vendor_code=AWAITING_READ)
    assert names(ledger) == {"order_placed:11", "product_added:12"}
    # Read and settled (or noted held by the read): the wait is over.
    set_row(ledger, "1", vendor_code="contact_found")
    assert names(ledger) == {"order_placed:10", "order_placed:11", "product_added:12"}


def test_a_customer_added_waiting_out_a_retry_delay_holds_no_one_back(ledger):
    plan(ledger, planned("customer_added", 1, {"customer_id": 1, "email": "ann@example.com"}),
         planned("order_placed", 10, {"order_id": 10, "email": "ann@example.com"}))
    set_row(ledger, "1", state="retry", next_attempt_at=utcnow() + timedelta(minutes=5))
    assert names(ledger) == {"order_placed:10"}
    set_row(ledger, "1", next_attempt_at=utcnow() - timedelta(seconds=1))  # due again: first in line
    assert names(ledger) == {"customer_added:1"}


def test_the_wait_is_bounded(ledger):
    plan(ledger, planned("customer_added", 1, {"customer_id": 1, "email": "ann@example.com"}),
         planned("order_placed", 10, {"order_id": 10, "email": "ann@example.com"}))
    set_row(ledger, "1", state=UNKNOWN, vendor_code=AWAITING_READ,
            updated_at=utcnow() - timedelta(seconds=PERSON_WAIT_S - 60))
    assert names(ledger) == set()
    set_row(ledger, "1", updated_at=utcnow() - timedelta(seconds=PERSON_WAIT_S + 60))
    assert names(ledger) == {"order_placed:10"}


def test_a_later_customer_added_does_not_hold_back_earlier_rows(ledger):
    plan(ledger, planned("order_placed", 10, {"order_id": 10, "email": "ann@example.com"}))
    plan(ledger, planned("customer_added", 1, {"customer_id": 1, "email": "ann@example.com"}), run="r2")
    assert names(ledger) == {"order_placed:10", "customer_added:1"}
    # Two customers sharing an email: the later one waits behind the earlier, never the reverse.
    plan(ledger, planned("customer_added", 2, {"customer_id": 2, "email": "ann@example.com"}), run="r3")
    assert "customer_added:2" not in names(ledger) and "customer_added:1" in names(ledger)
