"""The ledger and the delivery engine against a scripted in-memory vendor (no HTTP)."""

from __future__ import annotations

import threading

import pytest

from storesync.core.errors import (
    AuthError,
    PermanentError,
    RetryableError,
    SuppressedError,
    UnknownOutcomeError,
)
from storesync.delivery.engine import DeliveryEngine, RedrivePolicy
from storesync.delivery.ledger import ACCEPTED, DEAD, RETRY, SENDING, SUPPRESSED, UNKNOWN, Ledger, PlannedDelivery


class ScriptedVendor:
    """Answers each entity's requests from a script: a list of exceptions/None, then success."""

    vendor = "fake"
    account = "acct"

    def __init__(self, script=None, lookup=None):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.lookup = lookup or {}
        self.received: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def send(self, delivery):
        with self.lock:
            steps = self.script.get(delivery.entity_id, [])
            step = steps.pop(0) if steps else None
            if isinstance(step, UnknownOutcomeError) and getattr(step, "arrived", True):
                self.received.append((delivery.event_type, delivery.entity_id))
            if step is not None:
                raise step
            self.received.append((delivery.event_type, delivery.entity_id))
        return {"ok": True}

    def resolve_unknown(self, delivery):
        verdict = self.lookup.get(delivery.entity_id, "hold")
        if verdict == "hold":
            return None
        return (delivery.event_type, delivery.entity_id) in self.received


def plan(ledger, *items, run_id="run-1", sync="test"):
    created = ledger.plan(items, sync_name=sync, run_id=run_id)
    ledger.promote(run_id)
    return created


def item(entity, event="order_placed", version="1", seq=0, ordering=None):
    return PlannedDelivery(vendor="fake", account="acct", event_type=event, entity_id=entity, version=version,
                           endpoint="/x", payload={"id": entity, "event": event}, seq=seq,
                           ordering_key=ordering or f"order:{entity}")


@pytest.fixture
def ledger(db_url):
    return Ledger(db_url)


FAST = RedrivePolicy(base_delay_s=0.01, max_delay_s=0.05, max_wait_in_run_s=5)


def test_planning_is_idempotent(ledger):
    assert plan(ledger, item("1"), item("2"), item("2")) == 2
    assert plan(ledger, item("1"), item("2"), item("3"), run_id="run-2") == 1
    assert ledger.counts() == {"planned": 3}


def test_staged_deliveries_wait_for_the_gate_and_are_adopted_by_the_rerun(ledger):
    ledger.plan([item("1"), item("2")], sync_name="s", run_id="failed-gate")
    assert ledger.claim("fake", "acct", 10, owner="me:1") == []
    # The rerun of the window (gate now passing) adopts both and adds one.
    assert ledger.plan([item("1"), item("2"), item("3")], sync_name="s", run_id="rerun") == 3
    assert ledger.promote("rerun") == 3
    assert ledger.promote("failed-gate") == 0
    assert len(ledger.claim("fake", "acct", 10, owner="me:1")) == 3


def test_every_error_class_lands_in_its_state(ledger):
    vendor = ScriptedVendor({
        "ok": [],
        "flaky": [RetryableError("503", http_status=503)],
        "bad": [PermanentError("422 email", http_status=422)],
        "optout": [SuppressedError("opted out", vendor_code=33)],
    })
    plan(ledger, *(item(e) for e in ("ok", "flaky", "bad", "optout")))
    report = DeliveryEngine(ledger, vendor, run_id="r1", policy=FAST).run()
    states = {d.entity_id: s for s in (ACCEPTED, DEAD, SUPPRESSED) for d in ledger.in_state(s)}
    assert states == {"ok": ACCEPTED, "flaky": ACCEPTED, "bad": DEAD, "optout": SUPPRESSED}
    dead = ledger.in_state(DEAD)[0]
    assert dead.attempts == 1
    assert report.requests == 5  # flaky went twice
    assert sorted(e for _, e in vendor.received) == ["flaky", "ok"]


def test_status_changes_go_in_order_and_wait_for_their_predecessor(ledger):
    vendor = ScriptedVendor({"7": [RetryableError("500", http_status=500)] * 2})
    plan(ledger,
         item("7", "order_refunded", seq=3), item("7", "order_placed", seq=1), item("7", "order_fulfilled", seq=2))
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert vendor.received == [("order_placed", "7"), ("order_fulfilled", "7"), ("order_refunded", "7")]


def test_auth_error_stops_the_run_and_keeps_work_pending(ledger):
    vendor = ScriptedVendor({str(i): [AuthError("401", http_status=401)] for i in range(50)})
    plan(ledger, *(item(str(i)) for i in range(50)))
    with pytest.raises(AuthError):
        DeliveryEngine(ledger, vendor, concurrency=2, policy=FAST).run()
    counts = ledger.counts()
    assert counts.get(DEAD, 0) == 0 and counts.get(SENDING, 0) == 0
    assert sum(counts.values()) == 50


def test_unknown_outcome_is_resolved_by_lookup_or_held(ledger):
    vendor = ScriptedVendor(
        {"found": [UnknownOutcomeError("reset")], "held": [UnknownOutcomeError("reset")]},
        lookup={"found": "lookup", "held": "hold"},
    )
    plan(ledger, item("found"), item("held"))
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert [d.entity_id for d in ledger.in_state(ACCEPTED)] == ["found"]
    assert [d.entity_id for d in ledger.in_state(UNKNOWN)] == ["held"]
    assert vendor.received.count(("order_placed", "found")) == 1


def test_lookup_that_finds_nothing_resends_once(ledger):
    lost = UnknownOutcomeError("timeout")
    lost.arrived = False
    vendor = ScriptedVendor({"lost": [lost]}, lookup={"lost": "lookup"})
    plan(ledger, item("lost"))
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert vendor.received == [("order_placed", "lost")]
    assert ledger.counts() == {ACCEPTED: 1}


def test_orphaned_claims_of_a_dead_process_become_unknown(ledger):
    plan(ledger, item("a"), item("b"))
    claimed = ledger.claim("fake", "acct", 10, owner="some-other-host-is-not-us:1")
    assert len(claimed) == 2
    # A claim by a dead process on this host:
    import socket

    with ledger.engine.begin() as conn:
        from sqlalchemy import update

        from storesync.delivery.ledger import deliveries

        conn.execute(update(deliveries).values(claimed_by=f"{socket.gethostname()}:999999999"))
    vendor = ScriptedVendor(lookup={"a": "lookup", "b": "hold"})
    report = DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert report.recovered == 2
    # a: the lookup says the vendor never got it, so it is sent now; b: held for reconciliation.
    assert vendor.received == [("order_placed", "a")]
    assert {d.entity_id for d in ledger.in_state(UNKNOWN)} == {"b"}


def test_retries_exhausted_become_dead_letters(ledger):
    vendor = ScriptedVendor({"x": [RetryableError("500", http_status=500)] * 10})
    plan(ledger, item("x"))
    DeliveryEngine(ledger, vendor, policy=RedrivePolicy(max_attempts=3, base_delay_s=0.01, max_wait_in_run_s=5)).run()
    dead = ledger.in_state(DEAD)
    assert len(dead) == 1 and dead[0].attempts == 3
    # Replay puts it back in line with fresh attempts.
    assert ledger.requeue([dead[0].id]) == 1
    assert ledger.in_state(RETRY)[0].attempts == 0


def test_rerun_after_everything_settled_sends_nothing(ledger):
    vendor = ScriptedVendor()
    plan(ledger, item("1"), item("2"))
    DeliveryEngine(ledger, vendor).run()
    plan(ledger, item("1"), item("2"), run_id="run-2")
    report = DeliveryEngine(ledger, vendor).run()
    assert report.requests == 0 and len(vendor.received) == 2
