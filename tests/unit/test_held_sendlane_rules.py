"""Held Sendlane events settled without a person (storesync.delivery.settle, SendlaneSender):
superseded by a newer version or by the contact's order, or proven by a contact read; against the
emulator over HTTP, the ledger in SQLite. What no rule settles stays held, named for a person."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from storesync.core.config import SendlaneSettings
from storesync.delivery.engine import AWAITING_READ, DeliveryEngine, RedrivePolicy
from storesync.delivery.ledger import (
    ACCEPTED,
    SUPERSEDED,
    UNKNOWN,
    Ledger,
    PlannedDelivery,
    deliveries,
    record_log,
)
from storesync.emulator.state import DEFAULT_SENDLANE_LIST_ID
from storesync.delivery.remedies import AWAITING_LOOKUP, HELD, classify_unknown
from storesync.pipeline.senders import CONTACT_FOUND, SendlaneSender

ONE_PASS = RedrivePolicy(base_delay_s=60.0, max_delay_s=60.0, max_wait_in_run_s=0)
T0 = datetime(2026, 11, 17, 12, 0)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def sender_for(emu, ledger, **overrides) -> SendlaneSender:
    overrides.setdefault("unknown_grace_s", 0)
    settings = SendlaneSettings(base_url=emu.sendlane_url, api_token=emu.sendlane_api_token,
                                integration_token=emu.sendlane_integration_token, budget_per_minute=0,
                                **overrides)
    return SendlaneSender(settings, "acct", limiter_engine=ledger.engine)


def plan(ledger, event_type, entity_id, payload, *, version="1", occurred_at=T0, seq=0, run="r1"):
    endpoint = "/tracking/" + event_type.replace("_", "-")
    item = PlannedDelivery(vendor="sendlane", account="acct", event_type=event_type, entity_id=str(entity_id),
                           version=version, endpoint=endpoint, payload=payload,
                           ordering_key=f"{event_type}:{entity_id}", seq=seq, occurred_at=occurred_at,
                           versioning="content" if event_type != "order_placed" else "change")
    ledger.plan([item], sync_name="t", run_id=run)
    ledger.promote(run)


def run(ledger, sender):
    return DeliveryEngine(ledger, sender, policy=ONE_PASS, concurrency=1).run()


def row(ledger, event_type, version="1"):
    (delivery,) = [d for state in (UNKNOWN, ACCEPTED, SUPERSEDED, "retry") for d in ledger.in_state(state)
                   if d.event_type == event_type and d.version == version]
    return delivery


def reasons(ledger, delivery_id) -> list[str]:
    with ledger.engine.connect() as conn:
        query = select(record_log.c.error).where(record_log.c.delivery_id == delivery_id)
        return [e for (e,) in conn.execute(query) if e]


def checkout(email="c@example.com", total=2.0):
    return {"checkout_id": 31, "email": email, "total": total}


def test_a_newer_version_supersedes_a_held_one_and_is_sent(emulator, ledger):
    plan(ledger, "checkout_started", 31, checkout(), version="1")
    emulator.set_faults(drop_after_rate=1.0, vendors=["sendlane"])
    run(ledger, sender_for(emulator, ledger, unknown_grace_s=600, contact_read="absence"))
    emulator.clear_faults()
    first = run(ledger, sender_for(emulator, ledger, contact_read="absence"))
    held = row(ledger, "checkout_started")
    # It arrived (the contact exists), but with "absence" a found contact proves nothing: held, noted.
    assert held.state == UNKNOWN and held.vendor_code == CONTACT_FOUND and first.held_unknown == 1
    assert classify_unknown(held) == HELD
    plan(ledger, "checkout_started", 31, checkout(total=3.0), version="2", seq=1, run="r2")
    second = run(ledger, sender_for(emulator, ledger, contact_read="absence"))
    old, new = row(ledger, "checkout_started", "1"), row(ledger, "checkout_started", "2")
    assert (old.state, new.state) == (SUPERSEDED, ACCEPTED)
    assert second.settled == {"superseded:newer_version": 1} and second.held_unknown == 0
    assert any(r.startswith("superseded: version 2 of this checkout_started")
               for r in reasons(ledger, old.id))
    sent = emulator.requests(vendor="sendlane", endpoint="/tracking/checkout-started")
    totals = [r["body"]["total"] for r in sent]
    assert totals == [2.0, 3.0] and emulator.duplicates() == {}


def test_a_held_checkout_is_superseded_by_an_order_the_contact_placed_after_it(emulator, ledger):
    plan(ledger, "checkout_started", 31, checkout(), occurred_at=T0)
    emulator.set_faults(drop_before_rate=1.0, vendors=["sendlane"])  # lost before Sendlane had it
    run(ledger, sender_for(emulator, ledger, contact_read="off"))
    emulator.clear_faults()
    assert row(ledger, "checkout_started").state == UNKNOWN
    # An order of another contact, and one of this contact placed *before* the checkout: not enough.
    plan(ledger, "order_placed", 7, {"order_id": 7, "email": "other@example.com", "total": 1.0},
         occurred_at=T0 + timedelta(hours=1), run="r2")
    plan(ledger, "order_placed", 8, {"order_id": 8, "email": "c@example.com", "total": 1.0},
         occurred_at=T0 - timedelta(hours=1), run="r3")
    report = run(ledger, sender_for(emulator, ledger, contact_read="off"))
    assert row(ledger, "checkout_started").state == UNKNOWN and report.held_unknown == 1
    plan(ledger, "order_placed", 9, {"order_id": 9, "email": "c@example.com", "total": 2.0},
         occurred_at=T0 + timedelta(minutes=5), run="r4")
    run(ledger, sender_for(emulator, ledger, contact_read="off"))  # sends the order
    report = run(ledger, sender_for(emulator, ledger, contact_read="off"))  # the next run settles
    settled = row(ledger, "checkout_started")
    assert settled.state == SUPERSEDED and report.settled == {"superseded:contact_ordered": 1}
    assert any("placed order 9 after this checkout began" in r for r in reasons(ledger, settled.id))
    # Never sent again: no abandoned-checkout flow for a contact who bought.
    assert emulator.requests(vendor="sendlane", endpoint="/tracking/checkout-started") == []


def test_an_email_with_like_wildcards_matches_only_itself(emulator, ledger):
    plan(ledger, "checkout_started", 31, checkout(email="a_b@example.com"), occurred_at=T0)
    emulator.set_faults(drop_before_rate=1.0, vendors=["sendlane"])
    run(ledger, sender_for(emulator, ledger, contact_read="off"))
    emulator.clear_faults()
    plan(ledger, "order_placed", 9, {"order_id": 9, "email": "axb@example.com", "total": 2.0},
         occurred_at=T0 + timedelta(minutes=5), run="r2")  # "_" must not match "x"
    run(ledger, sender_for(emulator, ledger, contact_read="off"))
    run(ledger, sender_for(emulator, ledger, contact_read="off"))
    assert row(ledger, "checkout_started").state == UNKNOWN


def prove_the_read_path(ledger, emulator):
    """An event Sendlane accepted with its own answer: its contact must be found."""
    plan(ledger, "order_placed", 5, {"order_id": 5, "email": "known@example.com", "total": 1.0}, run="r0")
    run(ledger, sender_for(emulator, ledger))


def test_a_contact_not_found_on_a_proven_path_means_the_event_did_not_arrive(emulator, ledger):
    prove_the_read_path(ledger, emulator)
    plan(ledger, "customer_added", 41, {"customer_id": 41, "email": "new@example.com"})
    emulator.set_faults(drop_before_rate=1.0, vendors=["sendlane"])
    run(ledger, sender_for(emulator, ledger, unknown_grace_s=600))  # too soon to read
    emulator.clear_faults()
    held = row(ledger, "customer_added")
    assert held.vendor_code == AWAITING_READ and classify_unknown(held) == AWAITING_LOOKUP
    assert emulator.requests(vendor="sendlane", endpoint="/contacts/search") == []
    report = run(ledger, sender_for(emulator, ledger))  # the grace over: read, resent, accepted
    assert report.settled == {"retry:contact_read": 1} and row(ledger, "customer_added").state == ACCEPTED
    assert len(emulator.requests(vendor="sendlane", endpoint="/tracking/customer-added")) == 1
    assert emulator.duplicates() == {}


@pytest.mark.parametrize("answer", ["json_404", "html_404", "not_found_422"])
def test_a_not_found_from_an_unproven_read_path_is_not_trusted(emulator, ledger, answer):
    prove_the_read_path(ledger, emulator)
    for n in (41, 42, 43):
        plan(ledger, "customer_added", n, {"customer_id": n, "email": f"new{n}@example.com"}, run=f"r{n}")
    emulator.set_faults(drop_before_rate=1.0, vendors=["sendlane"])
    run(ledger, sender_for(emulator, ledger, unknown_grace_s=600))
    emulator.clear_faults()
    emulator.configure(sendlane_unrouted_gets=["contacts/search"], sendlane_unrouted_answer=answer)
    report = run(ledger, sender_for(emulator, ledger))
    held = ledger.in_state(UNKNOWN)
    assert len(held) == 3 and report.held_unknown == 3 and {classify_unknown(d) for d in held} == {HELD}
    assert emulator.requests(vendor="sendlane", endpoint="/tracking/customer-added") == []  # never resent
    # Once the path is found not to work, the run reads no more (each answer may count toward a lock-out).
    searches = emulator.summary()["vendors"]["sendlane"]["endpoints"]["GET /contacts/search"]["rejected"]
    assert sum(searches.values()) == (2 if answer == "not_found_422" else 1)


def test_no_evidence_yet_waits_instead_of_trusting_the_not_found(emulator, ledger):
    plan(ledger, "customer_added", 41, {"customer_id": 41, "email": "new@example.com"})
    emulator.set_faults(drop_before_rate=1.0, vendors=["sendlane"])
    run(ledger, sender_for(emulator, ledger, unknown_grace_s=600))
    emulator.clear_faults()
    report = run(ledger, sender_for(emulator, ledger))
    assert report.awaiting_lookup == 1 and classify_unknown(row(ledger, "customer_added")) == AWAITING_LOOKUP
    assert emulator.requests(vendor="sendlane", endpoint="/tracking/customer-added") == []


def test_presence_takes_a_found_contact_as_arrival_only_when_nothing_else_made_it(emulator, ledger):
    """The person's order waits behind their unknown customer_added until its read, so the contact
    found was made by the customer_added: arrived, and the order goes next. A contact an order of
    the person made *before* the customer_added was sent proves nothing: held."""
    plan(ledger, "order_placed", 8, {"order_id": 8, "email": "known@example.com", "total": 1.0}, run="r0")
    run(ledger, sender_for(emulator, ledger))  # the contact exists before its customer_added
    plan(ledger, "customer_added", 40, {"customer_id": 40, "email": "known@example.com"}, run="r1")
    plan(ledger, "customer_added", 41, {"customer_id": 41, "email": "solo@example.com"}, run="r1")
    plan(ledger, "customer_added", 42, {"customer_id": 42, "email": "shared@example.com"}, run="r1")
    plan(ledger, "order_placed", 9, {"order_id": 9, "email": "shared@example.com", "total": 2.0}, run="r2")
    plan(ledger, "order_placed", 10, {"order_id": 10, "email": "other@example.com", "total": 2.0}, run="r2")
    emulator.set_faults(drop_after_rate=1.0, vendors=["sendlane"])
    first = run(ledger, sender_for(emulator, ledger, unknown_grace_s=600))
    emulator.clear_faults()
    placed = emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed")
    # Order 9 waited for its person's customer_added; another person's order 10 did not.
    assert sorted(r["body"]["order_id"] for r in placed) == [8, 10] and first.awaiting_lookup == 3
    report = run(ledger, sender_for(emulator, ledger))
    arrived = {d.entity_id for d in ledger.in_state(ACCEPTED) if d.event_type == "customer_added"}
    assert arrived == {"41", "42"} and report.settled == {"accepted:contact_read": 2}
    assert all(any(r.startswith("arrived: Sendlane holds the contact") for r in reasons(ledger, d.id))
               for d in ledger.in_state(ACCEPTED) if d.event_type == "customer_added")
    (known,) = ledger.in_state(UNKNOWN)
    assert known.entity_id == "40" and known.vendor_code == CONTACT_FOUND and classify_unknown(known) == HELD
    # The wait is over: order 9 went out after the read, once.
    placed = emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed")
    assert sorted(r["body"]["order_id"] for r in placed) == [8, 9, 10]
    reads = len(emulator.requests(vendor="sendlane", endpoint="/contacts/search"))
    run(ledger, sender_for(emulator, ledger))  # a found contact is not read again
    assert len(emulator.requests(vendor="sendlane", endpoint="/contacts/search")) == reads
    assert emulator.duplicates() == {}


def test_absence_takes_a_found_contact_as_proving_nothing(emulator, ledger):
    plan(ledger, "customer_added", 41, {"customer_id": 41, "email": "solo@example.com"})
    emulator.set_faults(drop_after_rate=1.0, vendors=["sendlane"])
    run(ledger, sender_for(emulator, ledger, unknown_grace_s=600, contact_read="absence"))
    emulator.clear_faults()
    report = run(ledger, sender_for(emulator, ledger, contact_read="absence"))
    (held,) = ledger.in_state(UNKNOWN)
    assert held.vendor_code == CONTACT_FOUND and report.held_unknown == 1 and classify_unknown(held) == HELD


def test_a_contact_created_after_sendlane_had_processed_the_event_proves_nothing(emulator, ledger):
    """Created later than the grace after the held request was sent: something else made it."""
    plan(ledger, "customer_added", 41, {"customer_id": 41, "email": "late@example.com"})
    emulator.set_faults(drop_before_rate=1.0, vendors=["sendlane"])  # never reached Sendlane
    run(ledger, sender_for(emulator, ledger, unknown_grace_s=600))
    emulator.clear_faults()
    with ledger.engine.begin() as conn:  # sent two hours ago, the grace 600 s
        two_hours_ago = datetime.utcnow() - timedelta(hours=2)
        conn.execute(deliveries.update().values(claimed_at=two_hours_ago, updated_at=two_hours_ago,
                                                planned_at=two_hours_ago - timedelta(hours=1)))
    # A sign-up form makes the contact now, outside storesync (a list upsert nobody planned).
    form = sender_for(emulator, ledger)
    form.client.add_contacts(DEFAULT_SENDLANE_LIST_ID, [{"email": "late@example.com"}])
    report = run(ledger, sender_for(emulator, ledger, unknown_grace_s=600))
    (held,) = ledger.in_state(UNKNOWN)
    assert held.vendor_code == CONTACT_FOUND and report.settled == {} and classify_unknown(held) == HELD


def test_settle_unknown_touches_only_unknown_rows_and_noting_keeps_unknown_since(ledger):
    plan(ledger, "customer_added", 41, {"customer_id": 41, "email": "a@example.com"})
    (delivery,) = ledger.in_state("planned")
    assert ledger.settle_unknown([(delivery.id, SUPERSEDED, "x")], run_id="r") == 0  # not unknown
    with ledger.engine.begin() as conn:
        conn.execute(deliveries.update().values(state=UNKNOWN, updated_at=T0))
    ledger.mark_unknown_code([delivery.id], AWAITING_READ)
    (noted,) = ledger.in_state(UNKNOWN)
    assert noted.vendor_code == AWAITING_READ and noted.unknown_since == T0
    assert ledger.settle_unknown([(delivery.id, SUPERSEDED, "superseded: why")], run_id="r") == 1
    assert ledger.counts() == {SUPERSEDED: 1} and reasons(ledger, delivery.id) == ["superseded: why"]


def test_a_newer_version_planned_while_the_old_one_was_in_flight_settles_it_at_once(emulator, ledger):
    """Settled in the sending thread itself (grace 0): the held row is recorded superseded, and the
    newer version that waited behind it goes out in the same run."""
    plan(ledger, "checkout_started", 31, checkout(), version="1")

    def plan_newer_while_sending(point, delivery):
        if point == "after_claim" and delivery.version == "1":
            plan(ledger, "checkout_started", 31, checkout(total=3.0), version="2", seq=1, run="r2")

    emulator.set_faults(drop_after_rate=1.0, vendors=["sendlane"])
    engine = DeliveryEngine(ledger, sender_for(emulator, ledger, contact_read="off"), policy=ONE_PASS,
                            concurrency=1, fault_point=plan_newer_while_sending)
    first = engine.run()
    emulator.clear_faults()
    assert row(ledger, "checkout_started", "1").state == SUPERSEDED
    assert first.settled == {"superseded:newer_version": 1}
    # Version 2 went out in the same run; its answer was lost too (every answer dropped), and with
    # no read and nothing newer, it is the one held.
    newer = row(ledger, "checkout_started", "2")
    assert first.held_unknown == 1
    assert newer.state == UNKNOWN and classify_unknown(newer) == HELD
    assert len(emulator.requests(vendor="sendlane", endpoint="/tracking/checkout-started")) == 2
