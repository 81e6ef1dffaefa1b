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


# ---------------------------------------------------------------------------- content versions
def content(entity, version, event="content", seq=0):
    return PlannedDelivery(vendor="fake", account="acct", event_type=event, entity_id=entity, version=version,
                           endpoint="/x", payload={"id": entity, "v": version}, seq=seq, versioning="content")


class PayloadVendor(ScriptedVendor):
    """Also remembers which version of each entity arrived, in order."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.versions: list[tuple[str, str]] = []

    def send(self, delivery):
        answer = super().send(delivery)
        self.versions.append((delivery.entity_id, delivery.payload.get("v")))
        return answer


def states_of(ledger, entity):
    from sqlalchemy import select

    from storesync.delivery.ledger import deliveries

    with ledger.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(deliveries.c.version, deliveries.c.state).where(deliveries.c.entity_id == entity)
            .order_by(deliveries.c.id))]


def test_content_revert_is_sent_again_and_unchanged_content_is_not(ledger):
    vendor = PayloadVendor()
    for n, version in enumerate(["A", "A", "B", "B", "A", "A"]):
        plan(ledger, content("p", version), run_id=f"run-{n}")
        DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert vendor.versions == [("p", "A"), ("p", "B"), ("p", "A")]
    assert states_of(ledger, "p") == [("A", ACCEPTED), ("B", ACCEPTED), ("A", ACCEPTED)]
    assert ledger.known_versions("fake", "acct", "content", ["p", "other"]) == {"p": "A"}


def test_a_forced_resend_is_not_followed_by_another_of_the_same_content(ledger):
    vendor = PayloadVendor()
    plan(ledger, content("p", "A"), run_id="r1")
    plan(ledger, content("p", "A~salt1"), run_id="forced")  # a forced full resend of the same content
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert plan(ledger, content("p", "A"), run_id="r2") == 0
    assert plan(ledger, content("p", "A~salt2"), run_id="forced-again") == 1


def test_a_newer_version_supersedes_older_ones_not_yet_in_flight(ledger):
    from sqlalchemy import select

    from storesync.delivery.ledger import SUPERSEDED, Outcome, record_log

    plan(ledger, content("p", "A"), content("q", "A"), run_id="r1")
    # q's first version failed once and waits for its retry.
    claimed = ledger.claim("fake", "acct", 10, owner="me:1")
    ledger.record([(d, Outcome(RETRY)) for d in claimed if d.entity_id == "q"], run_id="r1", owner="me:1")
    ledger.release([d for d in claimed if d.entity_id == "p"])  # p's never left: plainly pending
    ledger.plan([content("p", "B"), content("q", "B")], sync_name="test", run_id="r2")
    # Staged (gate not passed yet): nothing is superseded by it.
    assert [s for _, s in states_of(ledger, "p")] == [RETRY, "staged"]
    ledger.promote("r2")
    assert states_of(ledger, "p") == [("A", SUPERSEDED), ("B", "planned")]
    assert states_of(ledger, "q") == [("A", SUPERSEDED), ("B", "planned")]
    with ledger.engine.connect() as conn:
        logged = conn.execute(select(record_log.c.entity_id, record_log.c.status, record_log.c.run_id)
                              .where(record_log.c.status == SUPERSEDED)).all()
    assert sorted(logged) == [("p", SUPERSEDED, "r2"), ("q", SUPERSEDED, "r2")]
    vendor = PayloadVendor()
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert sorted(vendor.versions) == [("p", "B"), ("q", "B")]
    assert ledger.counts(states=[SUPERSEDED, ACCEPTED]) == {SUPERSEDED: 2, ACCEPTED: 2}


def test_in_flight_versions_are_never_superseded_and_the_newer_one_waits(ledger):
    from storesync.delivery.ledger import Outcome

    plan(ledger, content("p", "A"), content("u", "A"), run_id="r1")
    claimed = {d.entity_id: d for d in ledger.claim("fake", "acct", 10, owner="me:1")}
    ledger.record([(claimed["u"], Outcome(UNKNOWN))], run_id="r1", owner="me:1")  # u: outcome unknown
    plan(ledger, content("p", "B"), content("u", "B"), run_id="r2")
    assert states_of(ledger, "p") == [("A", SENDING), ("B", "planned")]
    assert states_of(ledger, "u") == [("A", UNKNOWN), ("B", "planned")]
    # Neither B goes while its A may still be arriving.
    assert ledger.claim("fake", "acct", 10, owner="me:2") == []
    ledger.record([(claimed["p"], Outcome(ACCEPTED))], run_id="r1", owner="me:1")
    assert [(d.entity_id, d.payload["v"]) for d in ledger.claim("fake", "acct", 10, owner="me:2")] == [("p", "B")]


def test_a_dead_older_version_does_not_block_a_newer_one(ledger):
    vendor = PayloadVendor({"p": [PermanentError("422 bad title", http_status=422)]})
    plan(ledger, content("p", "A"), run_id="r1")
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    plan(ledger, content("p", "B"), run_id="r2")
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert states_of(ledger, "p") == [("A", DEAD), ("B", ACCEPTED)]


def test_a_resend_found_necessary_after_a_newer_version_was_planned_is_superseded(ledger):
    from storesync.delivery.ledger import SUPERSEDED, Outcome

    plan(ledger, content("p", "A"), run_id="r1")
    claimed = ledger.claim("fake", "acct", 10, owner="me:1")
    ledger.record([(claimed[0], Outcome(UNKNOWN))], run_id="r1", owner="me:1")
    plan(ledger, content("p", "B"), run_id="r2")
    vendor = PayloadVendor(lookup={"p": "lookup"})  # the lookup: A never arrived
    report = DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert vendor.versions == [("p", "B")]
    assert states_of(ledger, "p") == [("A", SUPERSEDED), ("B", ACCEPTED)]
    assert report.superseded == 1


# ---------------------------------------------------------------------------- held and pending unknowns
def test_rows_recovered_into_a_held_state_fail_the_deliver_task(ledger):
    import socket

    from sqlalchemy import update

    from storesync.delivery.ledger import deliveries
    from storesync.provider.tasks import raise_if_held

    plan(ledger, item("held"), item("fine"))
    ledger.claim("fake", "acct", 1, owner=f"{socket.gethostname()}:999999999:dead")  # a dead process's claim
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.state == SENDING)
                     .values(claimed_by=f"{socket.gethostname()}:999999999:dead"))
    vendor = ScriptedVendor(lookup={"held": "hold"})
    report = DeliveryEngine(ledger, vendor, policy=FAST).run().as_dict()
    assert vendor.received == [("order_placed", "fine")]  # everything else was still sent
    assert report["held_unknown"] == 1 and report["held_from_earlier"] == 1 and report["unknown"] == 0
    with pytest.raises(RuntimeError, match=r"1 fake deliveries .* held \(0 from this run, 1 recovered"):
        raise_if_held("fake", report)
    # A later run still fails while it is held.
    again = DeliveryEngine(ledger, vendor, policy=FAST).run().as_dict()
    with pytest.raises(RuntimeError):
        raise_if_held("fake", again)


class FakeSailthruClient:
    """POST /purchase: the gateway answers 502 the first time (the purchase did not arrive);
    GET /purchase by extid: whatever arrived."""

    def __init__(self):
        self.posts: list[dict] = []
        self.failures = 1

    def post(self, endpoint, payload):
        if self.failures:
            self.failures -= 1
            raise UnknownOutcomeError("gateway error (HTTP 502)", http_status=502)
        self.posts.append(payload)
        return {"ok": True}

    def lookup_purchase(self, extid):
        return next(({"extid": extid} for p in self.posts if p["purchase_keys"]["extid"] == extid), None)

    def lookup(self, endpoint, data):
        assert endpoint == "purchase" and data["purchase_key"] == "extid"
        return self.lookup_purchase(data["purchase_id"])


def proven_path(client):
    """Lookup proofs with one purchase the vendor accepted (o0): the lookup path can be proven."""
    from storesync.delivery.lookup_proofs import LookupProofs

    client.posts.append({"purchase_keys": {"extid": "o0"}})
    proofs = LookupProofs("fake", "acct")
    proofs.note_accepted("/purchase", {"purchase_keys": {"extid": "o0"}})
    return proofs


def test_sailthru_negative_lookup_is_trusted_only_after_the_grace_period(ledger):
    from datetime import timedelta

    from sqlalchemy import update

    from storesync.core.config import SailthruSettings
    from storesync.delivery.ledger import deliveries, utcnow
    from storesync.pipeline.senders import SailthruSender

    client = FakeSailthruClient()
    sender = SailthruSender(SailthruSettings(unknown_grace_s=120), "acct", client_factory=lambda _s: client,
                            proofs=proven_path(client))
    sender.vendor = "fake"
    purchase = PlannedDelivery(vendor="fake", account="acct", event_type="purchase", entity_id="o1", version="1",
                               endpoint="/purchase", payload={"purchase_keys": {"extid": "o1"}, "items": []})
    plan(ledger, purchase)
    first = DeliveryEngine(ledger, sender, policy=FAST).run()
    # Not found right after the 502 proves nothing: no resend, not held for a person either.
    assert len(client.posts) == 1 and first.awaiting_lookup == 1 and first.held_unknown == 0
    assert ledger.counts() == {UNKNOWN: 1}
    second = DeliveryEngine(ledger, sender, policy=FAST).run()  # a later run, still within the grace
    assert len(client.posts) == 1 and second.awaiting_lookup == 1 and ledger.counts() == {UNKNOWN: 1}
    with ledger.engine.begin() as conn:  # the grace period passes
        conn.execute(update(deliveries).values(updated_at=utcnow() - timedelta(seconds=121)))
    DeliveryEngine(ledger, sender, policy=FAST).run()
    assert len(client.posts) == 2 and ledger.counts() == {ACCEPTED: 1}


def test_sailthru_positive_lookup_is_trusted_at_once():
    from storesync.core.config import SailthruSettings
    from storesync.delivery.engine import LOOKUP_PENDING
    from storesync.delivery.ledger import Delivery
    from storesync.pipeline.senders import SailthruSender

    client = FakeSailthruClient()
    client.posts.append({"purchase_keys": {"extid": "o2"}})
    sender = SailthruSender(SailthruSettings(), "acct", client_factory=lambda _s: client)

    def delivery(extid):
        return Delivery(id=1, delivery_key="k", vendor="sailthru", account="acct", event_type="purchase",
                        entity_id=extid, version="1", ordering_key="o", seq=1, method="POST", endpoint="/purchase",
                        payload={"purchase_keys": {"extid": extid}}, state=UNKNOWN, attempts=1)

    assert sender.resolve_unknown(delivery("o2")) is True
    assert sender.resolve_unknown(delivery("o3")) == LOOKUP_PENDING
    assert SailthruSender(SailthruSettings(unknown_grace_s=0), "acct",
                          client_factory=lambda _s: client).resolve_unknown(delivery("o3")) == LOOKUP_PENDING
    # Not found is trusted once the lookup path found a purchase the vendor accepted (o0).
    assert SailthruSender(SailthruSettings(unknown_grace_s=0), "acct", client_factory=lambda _s: client,
                          proofs=proven_path(client)).resolve_unknown(delivery("o3")) is False


# ---------------------------------------------------------------------------- waiting for retries
def test_waiting_for_retries_does_not_spin_on_blocked_work(ledger):
    from datetime import timedelta

    from sqlalchemy import update

    from storesync.delivery.ledger import deliveries, utcnow

    plan(ledger, item("9", "order_placed", seq=1), item("9", "order_fulfilled", seq=2))
    with ledger.engine.begin() as conn:  # placed: held unknown; fulfilled: a retry due, but behind it
        conn.execute(update(deliveries).where(deliveries.c.seq == 1).values(state=UNKNOWN))
        conn.execute(update(deliveries).where(deliveries.c.seq == 2)
                     .values(state=RETRY, next_attempt_at=utcnow() - timedelta(seconds=1)))
    looks = []  # each time the engine looked for work to claim
    original = ledger.next_claimable

    def counting_look(*args, **kwargs):
        looks.append(1)
        return original(*args, **kwargs)

    ledger.next_claimable = counting_look
    sleeps = []
    DeliveryEngine(ledger, ScriptedVendor(lookup={"9": "hold"}), sleep=sleeps.append,
                   policy=RedrivePolicy(base_delay_s=0.01, max_wait_in_run_s=3)).run()
    assert 1 <= len(looks) <= 2
    assert sleeps == []  # and never waited for budget: nothing was claimable


def test_waiting_for_a_retry_sleeps_until_it_is_due(ledger, monkeypatch):
    from datetime import timedelta

    from sqlalchemy import update

    import storesync.delivery.engine as engine_module
    import storesync.delivery.ledger as ledger_module
    from storesync.delivery.ledger import deliveries

    # The ledger's and the engine's clock, moved only by the engine's sleep: what is asserted is
    # the engine's arithmetic, not how fast a loaded machine got to the sleep.
    now = [ledger_module.utcnow()]
    monkeypatch.setattr(ledger_module, "utcnow", lambda: now[0])
    monkeypatch.setattr(engine_module, "utcnow", lambda: now[0])
    plan(ledger, item("r"))
    start = now[0]
    due = start + timedelta(seconds=0.6)
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).values(state=RETRY, next_attempt_at=due))
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        now[0] += timedelta(seconds=seconds)

    monkeypatch.setattr(engine_module.time, "sleep", fake_sleep)
    vendor = ScriptedVendor()
    DeliveryEngine(ledger, vendor, policy=RedrivePolicy(max_wait_in_run_s=5)).run()
    assert vendor.received == [("order_placed", "r")]
    # One sleep, until the retry is due (and a hair more, so that it is due when the engine wakes).
    assert sleeps == [pytest.approx(0.6 + 0.01)]


# ---------------------------------------------------------------------------- watermarks
def test_the_watermark_stops_at_the_first_window_not_settled(ledger):
    from datetime import datetime, timedelta

    from storesync.delivery.ledger import Outcome

    t0 = datetime(2026, 1, 1)
    windows = [(t0 + timedelta(hours=h), t0 + timedelta(hours=h + 1)) for h in range(3)]
    for n, (start, end) in enumerate(windows):
        ledger.start_run(f"w{n}", "hourly", window_start=start, window_end=end)
        ledger.plan([item(f"e{n}")], sync_name="hourly", run_id=f"w{n}", window_start=start, window_end=end)
        ledger.promote(f"w{n}")
    claimed = {d.entity_id: d for d in ledger.claim("fake", "acct", 10, owner="me:1")}
    # Windows 0 and 2 settle; window 1 is left with a retry.
    ledger.record([(claimed["e0"], Outcome(ACCEPTED)), (claimed["e1"], Outcome(RETRY)),
                   (claimed["e2"], Outcome(ACCEPTED))], run_id="x", owner="me:1")
    assert ledger.window_is_settled("hourly", *windows[2])
    assert ledger.advance_watermark("hourly", windows[2][1], window_start=windows[2][0]) == windows[0][1]
    assert ledger.watermark("hourly") == windows[0][1]
    retry = ledger.claim("fake", "acct", 10, owner="me:2")
    ledger.record([(retry[0], Outcome(ACCEPTED))], run_id="y", owner="me:2")
    assert ledger.advance_watermark("hourly", windows[2][1], window_start=windows[2][0]) == windows[2][1]
    # Never back: a backfill of an old window keeps it.
    assert ledger.advance_watermark("hourly", windows[0][1], window_start=windows[0][0]) == windows[2][1]


def test_the_watermark_stops_at_a_window_that_never_ran_until_a_backfill_runs_it(ledger):
    """Hours 0 and 2 ran and settled; hour 1 never ran (the scheduler was down, its run failed):
    its orders were never read, so the mark stays at the end of hour 0 however settled hour 2
    is, and the no-progress alert fires. A backfill of hour 1 moves it past hour 2 at once."""
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1)
    hour = [(t0 + timedelta(hours=h), t0 + timedelta(hours=h + 1)) for h in range(4)]

    def run(n, status="success", dry_run=False):
        ledger.start_run(f"h{n}", "hourly", window_start=hour[n][0], window_end=hour[n][1], dry_run=dry_run)
        ledger.finish_run(f"h{n}", status)

    run(0)
    assert ledger.advance_watermark("hourly", hour[0][1], window_start=hour[0][0]) == hour[0][1]
    run(1, status="failed")
    run(2)
    assert ledger.advance_watermark("hourly", hour[2][1], window_start=hour[2][0]) == hour[0][1]
    run(3, dry_run=True)  # a dry run plans nothing: it does not fill a gap either
    assert ledger.advance_watermark("hourly", hour[3][1], window_start=hour[3][0]) == hour[0][1]
    # The backfill of hour 1 fills the gap: the mark moves past hour 2, not hour 3 (only dry-ran).
    assert ledger.advance_watermark("hourly", hour[1][1], window_start=hour[1][0]) == hour[2][1]
    assert ledger.watermark("hourly") == hour[2][1]


def test_a_first_window_still_open_leaves_no_watermark(ledger):
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1)
    window = (t0, t0 + timedelta(hours=1))
    ledger.start_run("w0", "hourly", window_start=window[0], window_end=window[1])
    ledger.plan([item("e0")], sync_name="hourly", run_id="w0", window_start=window[0], window_end=window[1])
    ledger.promote("w0")
    assert ledger.advance_watermark("hourly", window[1], window_start=window[0]) is None
    assert ledger.watermark("hourly") is None


# ---------------------------------------------------------------------------- schema and reads
def test_an_older_ledger_gets_the_new_column_and_indexes_in_place(db_url):
    from sqlalchemy import Column, MetaData, Table, create_engine, inspect

    from storesync.delivery.ledger import deliveries, metadata

    engine = create_engine(db_url)
    old = MetaData()
    columns = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in deliveries.columns if c.name not in ("versioning", "person")]
    Table(deliveries.name, old, *columns)
    for table in metadata.sorted_tables:
        if table.name != deliveries.name:
            table.to_metadata(old)
    old.create_all(engine)
    Ledger(db_url)
    Ledger(db_url)  # twice: idempotent
    inspector = inspect(engine)
    assert {"versioning", "person"} <= {c["name"] for c in inspector.get_columns(deliveries.name)}
    names = {i["name"] for i in inspector.get_indexes(deliveries.name)}
    assert {"ix_deliveries_state_updated", "ix_deliveries_last_run", "ix_deliveries_open_window",
            "ix_deliveries_person_wait"} <= names
    engine.dispose()


def test_known_versions_reads_only_the_latest_row_of_the_entities_asked(ledger):
    from sqlalchemy import event

    for n, version in enumerate(["A", "B", "C", "D"]):
        plan(ledger, content("p", version), content(f"other{n}", version), run_id=f"r{n}")
    fetched = []

    def count_rows(conn, cursor, statement, parameters, context, executemany):
        if "storesync_deliveries" in statement and statement.lstrip().upper().startswith("SELECT"):
            fetched.append(statement)

    event.listen(ledger.engine, "after_cursor_execute", count_rows)
    try:
        result = ledger.known_versions("fake", "acct", "content", ["p"])
    finally:
        event.remove(ledger.engine, "after_cursor_execute", count_rows)
    assert result == {"p": "D"}
    assert len(fetched) == 1 and "max(" in fetched[0].lower()


# ---------------------------------------------------------------------------- record and claim in one
def _sending(ledger):
    from sqlalchemy import select

    from storesync.delivery.ledger import deliveries

    with ledger.engine.connect() as conn:
        return {r.entity_id: r.claimed_by for r in conn.execute(
            select(deliveries.c.entity_id, deliveries.c.claimed_by).where(deliveries.c.state == SENDING))}


def test_record_and_claim_writes_only_its_own_claims_and_claims_no_more_than_asked(ledger):
    from storesync.delivery.ledger import Outcome

    plan(ledger, *[item(f"e{i}") for i in range(10)])
    mine = ledger.claim("fake", "acct", 2, owner="me:1")
    theirs = ledger.claim("fake", "acct", 1, owner="them:1")  # another run's claim
    assert [d.entity_id for d in mine + theirs] == ["e0", "e1", "e2"]
    # The owner guard: an answer for a row this owner does not hold is not written.
    claimed = ledger.record_and_claim([(mine[0], Outcome(ACCEPTED)), (theirs[0], Outcome(ACCEPTED))],
                                      run_id="r", owner="me:1", vendor="fake", account="acct", limit=2)
    assert [(d.entity_id, d.state, d.claimed_by, d.attempts) for d in claimed] == [
        ("e3", SENDING, "me:1", 1), ("e4", SENDING, "me:1", 1)]
    assert states_of(ledger, "e0") == [("1", ACCEPTED)]
    assert states_of(ledger, "e2") == [("1", SENDING)]
    assert _sending(ledger) == {"e1": "me:1", "e2": "them:1", "e3": "me:1", "e4": "me:1"}
    # Limit 0: the answers are recorded, nothing is claimed.
    assert ledger.record_and_claim([(mine[1], Outcome(RETRY))], run_id="r", owner="me:1",
                                   vendor="fake", account="acct", limit=0) == []
    assert _sending(ledger) == {"e2": "them:1", "e3": "me:1", "e4": "me:1"}
    # Only what is sendable: e1 is a retry now, e5..e9 are planned; 3 asked, 3 claimed, in id order.
    assert [d.entity_id for d in ledger.record_and_claim([], run_id="r", owner="me:1", vendor="fake",
                                                         account="acct", limit=3)] == ["e1", "e5", "e6"]
    assert len(_sending(ledger)) == 6


def test_record_and_claim_keeps_the_ordering_rule(ledger):
    from storesync.delivery.ledger import Outcome

    plan(ledger, item("9", "order_placed", seq=1), item("9", "order_fulfilled", seq=2))
    [placed] = ledger.claim("fake", "acct", 10, owner="me:1")  # fulfilled waits behind placed
    assert placed.event_type == "order_placed"
    [fulfilled] = ledger.record_and_claim([(placed, Outcome(ACCEPTED))], run_id="r", owner="me:1",
                                          vendor="fake", account="acct", limit=10)
    assert fulfilled.event_type == "order_fulfilled"


def test_the_engine_never_holds_more_claims_than_threads(ledger):
    plan(ledger, *[item(f"e{i}") for i in range(40)])
    engine = DeliveryEngine(ledger, ScriptedVendor(), concurrency=3, policy=FAST)
    held, calls = [], []
    original = ledger.record_and_claim

    def checking(results, **kwargs):
        calls.append(len(results))
        claimed = original(results, **kwargs)
        held.append(sum(1 for owner in _sending(ledger).values() if owner == engine.owner))
        return claimed

    ledger.record_and_claim = checking
    report = engine.run()
    assert report.states[ACCEPTED] == 40
    assert max(held) <= 3
    assert sum(calls) == 40  # every answer went through the batched write


def test_the_claim_walks_the_claimable_index_in_id_order(tmp_path):
    """On SQLite: the claim reads open rows through the partial index, stopping at its limit,
    never sorting the account's claimable rows; the claimed rows are looked up by id."""
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"  # a query plan is per database: SQLite's
    from sqlalchemy import event

    ledger = Ledger(db_url)
    plan(ledger, *[item(f"e{i}") for i in range(50)])
    statements = []
    event.listen(ledger.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, params, context, many: statements.append((sql, params)))
    assert len(ledger.claim("fake", "acct", 4, owner="me:1")) == 4
    [(sql, params)] = [s for s in statements if "ix_" not in s[0] and "earlier" in s[0]]
    with ledger.engine.connect() as conn:
        steps = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert any("ix_deliveries_claimable" in step for step in steps), steps
    assert not any("TEMP B-TREE" in step for step in steps), steps


def test_the_historical_claim_shares_the_live_rule_a_dead_older_version_does_not_block(db_url):
    from datetime import timedelta

    from storesync.delivery.ledger import Outcome, utcnow
    from storesync.pipeline.historical import PARK_BASE, HistoricalLedger, unpark

    hist = HistoricalLedger(db_url)
    plan(hist, content("p", "A"), run_id="r1")
    [a] = hist.claim("fake", "acct", 10, owner="me:1")
    hist.record([(a, Outcome(DEAD))], run_id="r1", owner="me:1")
    plan(hist, content("p", "B"), run_id="r2")
    plan(hist, item("o", "order_placed", seq=1), item("o", "order_fulfilled", seq=2), run_id="r3")
    [b, placed] = hist.claim("fake", "acct", 10, owner="me:1")
    assert (b.version, placed.event_type) == ("B", "order_placed")
    # A dead status change still blocks the one after it; a retry recorded through the batched
    # write stays parked (never seen by the live claim).
    assert hist.record_and_claim([(placed, Outcome(DEAD)), (b, Outcome(RETRY, next_attempt_at=utcnow() + timedelta(hours=1)))],
                                 run_id="r", owner="me:1", vendor="fake", account="acct", limit=10) == []
    assert Ledger(db_url).claim("fake", "acct", 10, owner="me:2") == []
    [retry] = hist.in_state(RETRY)
    assert retry.version == "B"
    from sqlalchemy import select

    from storesync.delivery.ledger import deliveries

    with hist.engine.connect() as conn:
        due = conn.execute(select(deliveries.c.next_attempt_at).where(deliveries.c.id == retry.id)).scalar()
    assert due >= PARK_BASE and timedelta(minutes=59) < unpark(due) - utcnow() <= timedelta(hours=1)


# ---------------------------------------------------------------------------- review fixes
def _set_state(ledger, entity, version, state):
    from sqlalchemy import update

    from storesync.delivery.ledger import deliveries

    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.entity_id == entity, deliveries.c.version == version)
                     .values(state=state, claimed_by=None, next_attempt_at=None))


def test_a_replayed_older_version_is_never_claimed_after_a_newer_one(ledger):
    """A dead A replayed while B is accepted: an engine already past its ``supersede_stale`` (in
    its claim loop) must not send A after B."""
    vendor = PayloadVendor({"p": [PermanentError("422 bad title", http_status=422)]})
    plan(ledger, content("p", "A"), run_id="r1")
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    plan(ledger, content("p", "B"), run_id="r2")
    DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert states_of(ledger, "p") == [("A", DEAD), ("B", ACCEPTED)]
    [dead] = ledger.in_state(DEAD)
    assert ledger.requeue([dead.id]) == 1  # the replay
    assert ledger.claim("fake", "acct", 10, owner="me:1") == []  # the engine's claim loop
    assert ledger.record_and_claim([], run_id="r", owner="me:1", vendor="fake", account="acct", limit=10) == []
    # The same while B is itself still being sent or waiting to be.
    for state in (SENDING, UNKNOWN, RETRY, "planned"):
        _set_state(ledger, "p", "B", state)
        assert [d.version for d in ledger.claim("fake", "acct", 10, owner="me:1")] == (
            ["B"] if state in (RETRY, "planned") else [])
        _set_state(ledger, "p", "B", state)
    # A staged B (its gate not passed) does not count: A is still what is owed.
    _set_state(ledger, "p", "B", "staged")
    assert [d.version for d in ledger.claim("fake", "acct", 10, owner="me:1")] == ["A"]


def test_a_newer_version_does_not_wait_for_an_older_one_that_will_never_be_sent(ledger):
    """A fails retryably while B waits behind it: A is never sent now (B is newer), so B must not
    wait for it; the next run supersedes A."""
    from storesync.delivery.ledger import SUPERSEDED, Outcome

    plan(ledger, content("p", "A"), run_id="r1")
    [a] = ledger.claim("fake", "acct", 10, owner="me:1")
    plan(ledger, content("p", "B"), run_id="r2")
    ledger.record([(a, Outcome(RETRY))], run_id="r1", owner="me:1")
    assert [d.version for d in ledger.claim("fake", "acct", 10, owner="me:1")] == ["B"]
    assert ledger.supersede_stale("fake", "acct") == 1
    assert states_of(ledger, "p") == [("A", SUPERSEDED), ("B", SENDING)]


def test_two_planners_of_one_entity_give_the_same_seq_and_the_later_row_still_waits(ledger):
    """Two planners read the same latest row of an entity (none here), so B and C share a seq: C
    must not go while B is in flight."""
    from storesync.delivery.ledger import Outcome

    plan(ledger, content("p", "B"), run_id="r1")
    [b] = ledger.claim("fake", "acct", 10, owner="me:1")
    ledger._latest_rows = lambda conn, items: {}  # the second planner read before B was planned
    plan(ledger, content("p", "C"), run_id="r2")
    del ledger._latest_rows
    assert [d.seq for d in ledger.in_state(SENDING) + ledger.in_state("planned")] == [0, 0]
    assert ledger.claim("fake", "acct", 10, owner="me:2") == []
    ledger.record([(b, Outcome(UNKNOWN))], run_id="r1", owner="me:1")
    assert ledger.claim("fake", "acct", 10, owner="me:2") == []
    ledger.mark_accepted([b.id], reason="found in the export")
    assert [d.version for d in ledger.claim("fake", "acct", 10, owner="me:2")] == ["C"]


def test_the_settled_prefix_reads_open_rows_through_their_partial_index(tmp_path):
    """On SQLite: the open states are written inline, so the partial index on open rows is used."""
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"  # a query plan is per database: SQLite's
    from datetime import datetime, timedelta

    from sqlalchemy import event

    ledger = Ledger(db_url)
    t0 = datetime(2026, 1, 1)
    ledger.start_run("w0", "hourly", window_start=t0, window_end=t0 + timedelta(hours=1))
    ledger.plan([item("e0")], sync_name="hourly", run_id="w0", window_start=t0, window_end=t0 + timedelta(hours=1))
    statements = []
    event.listen(ledger.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, params, context, many: statements.append((sql, params)))
    assert ledger.settled_until("hourly", t0 + timedelta(hours=1), t0 + timedelta(hours=2)) is None
    [(sql, params)] = [s for s in statements if "min(" in s[0].lower()]
    with ledger.engine.connect() as conn:
        steps = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    # Without statistics SQLite ranks the partial index on open rows and the full window index
    # alike (both lead with sync_name, window_start) and picks by their creation order, which
    # SQLAlchemy leaves to a set's; either one is a bounded search, never a scan of the ledger.
    assert any("USING INDEX ix_deliveries_open_window" in step or "USING INDEX ix_deliveries_window" in step
               for step in steps), steps
    assert not any(step.startswith("SCAN storesync_deliveries") for step in steps), steps


def test_promotion_supersedes_only_within_the_entities_the_run_planned(db_url):
    """Promotion reads the promoted run's entities (looked up by entity), not every open content
    row of the ledger; on SQLite, checked with its plan."""
    from sqlalchemy import event

    from storesync.delivery.ledger import SUPERSEDED

    ledger = Ledger(db_url)
    plan(ledger, *[content(f"p{i}", "A") for i in range(30)], run_id="r1")
    ledger.plan([content("p1", "B")], sync_name="test", run_id="r2")
    statements = []
    event.listen(ledger.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, params, context, many: statements.append((sql, params)))
    assert ledger.promote("r2") == 1
    assert states_of(ledger, "p1") == [("A", SUPERSEDED), ("B", "planned")]
    assert ledger.counts() == {"planned": 30, SUPERSEDED: 1}
    if not db_url.startswith("sqlite"):
        return
    [(sql, params)] = [s for s in statements if s[0].lstrip().upper().startswith("UPDATE") and "newer" in s[0]]
    with ledger.engine.connect() as conn:
        steps = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    outer = [step for step in steps if "storesync_deliveries " in step and " AS " not in step
             and not step.split()[1] in ("mine", "newer")]
    assert outer and all("ix_deliveries_entity" in step for step in outer), steps


class FailingLookupVendor(ScriptedVendor):
    """Every lookup fails as the vendor's API would when it is down."""

    def resolve_unknown(self, delivery):
        raise RetryableError("503 on lookup", http_status=503)


def test_a_lookup_that_keeps_failing_is_held_after_a_day_not_retried_forever(ledger):
    from datetime import timedelta

    from sqlalchemy import update

    from storesync.delivery.ledger import deliveries, utcnow

    vendor = FailingLookupVendor({"o1": [UnknownOutcomeError("reset")]})
    plan(ledger, item("o1"))
    first = DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert first.awaiting_lookup == 1 and first.held_unknown == 0  # a failing lookup: try again later
    with ledger.engine.begin() as conn:  # unknown for 23 h: still a blip
        conn.execute(update(deliveries).values(updated_at=utcnow() - timedelta(hours=23)))
    second = DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert second.awaiting_lookup == 1 and second.held_unknown == 0
    # A failed lookup leaves the row as it was: its unknown_since still ages.
    assert ledger.in_state(UNKNOWN)[0].unknown_since < utcnow() - timedelta(hours=22)
    with ledger.engine.begin() as conn:  # unknown for a day and more
        conn.execute(update(deliveries).values(updated_at=utcnow() - timedelta(hours=25)))
    third = DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert third.awaiting_lookup == 0 and third.held_unknown == 1 and third.held_from_earlier == 1
    assert ledger.counts() == {UNKNOWN: 1} and vendor.received == [("order_placed", "o1")]  # never resent


def _under(account, entity, version="1"):
    return PlannedDelivery(vendor="fake", account=account, event_type="order_placed", entity_id=entity,
                           version=version, endpoint="/x", payload={"id": entity}, ordering_key=f"order:{entity}")


def test_open_rows_under_an_old_account_key_fail_the_task_and_are_not_lost(ledger):
    from storesync.provider.tasks import raise_if_held

    # Planned under "old-key", then the account key changed (a rotated key's fingerprint).
    plan(ledger, _under("old-key", "o1"), _under("old-key", "o2"))
    vendor = ScriptedVendor()  # sends as "acct"
    report = DeliveryEngine(ledger, vendor, policy=FAST).run().as_dict()
    assert vendor.received == [] and report["open_under_other_accounts"] == {"old-key": 2}
    with pytest.raises(RuntimeError, match=r"2 open fake deliveries are under other accounts \(old-key: 2\).*"
                                           r"move-account --vendor fake --from OLD --to acct"):
        raise_if_held("fake", report)
    assert ledger.open_by_account("fake") == {"old-key": 2}  # still owed, under the key they were planned with


def test_moving_an_account_re_keys_every_row_so_nothing_is_sent_twice_or_lost(ledger):
    from storesync.delivery.ledger import PLANNED

    plan(ledger, _under("old-key", "sent"))
    old_sender = ScriptedVendor()
    old_sender.account = "old-key"
    DeliveryEngine(ledger, old_sender, policy=FAST).run()
    plan(ledger, _under("old-key", "owed"), run_id="run-2")
    moved = ledger.move_account("fake", "old-key", "acct")
    assert moved["storesync_deliveries"] == 2
    assert ledger.open_by_account("fake") == {"acct": 1}
    # Planning the sent event again under the new key is a no-op: its row moved with its key.
    assert plan(ledger, _under("acct", "sent"), _under("acct", "owed"), run_id="run-3") == 0
    vendor = ScriptedVendor()
    report = DeliveryEngine(ledger, vendor, policy=FAST).run().as_dict()
    assert vendor.received == [("order_placed", "owed")] and report["open_under_other_accounts"] == {}
    assert ledger.counts() == {ACCEPTED: 2} and not ledger.in_state(PLANNED)


def test_moving_an_account_refuses_clashes_and_rows_in_flight_and_changes_nothing(ledger):
    from storesync.delivery.ledger import LedgerConflict

    plan(ledger, _under("old-key", "o1"), _under("acct", "o1"), _under("old-key", "o2"))
    with pytest.raises(LedgerConflict, match="already holds 1 fake deliveries"):
        ledger.move_account("fake", "old-key", "acct")
    assert ledger.open_by_account("fake") == {"old-key": 2, "acct": 1}
    ledger.claim("fake", "old-key", 1, owner="me:1")
    with pytest.raises(LedgerConflict, match="1 fake deliveries of account 'old-key' are in flight"):
        ledger.move_account("fake", "old-key", "other")
    assert ledger.open_by_account("fake") == {"old-key": 2, "acct": 1}


@pytest.mark.postgres
def test_an_index_added_to_a_postgresql_ledger_is_built_concurrently_and_a_failed_build_is_redone(pg_url):
    """A plain CREATE INDEX blocks every write to the ledger while it builds: an upgrade builds
    the missing ones CONCURRENTLY. One that failed half way (INVALID, what a killed or failed
    concurrent build leaves) is dropped and built again, not taken for done."""
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.engine import Engine

    from storesync.delivery.ledger import deliveries

    Ledger(pg_url)
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_deliveries_state_updated"))
        conn.execute(text("DROP INDEX ix_deliveries_last_run"))
        conn.execute(text("DELETE FROM storesync_ledger_schema"))  # an older storesync recorded none
        conn.execute(text(f"INSERT INTO {deliveries.name} (delivery_key, vendor, account, event_type, entity_id, "
                          "version, ordering_key, seq, method, endpoint, payload, historical, state, attempts, "
                          "planned_at, updated_at) SELECT 'k' || n, 'v', 'a', 'e', 'x' || n, '1', 'x' || n, 0, "
                          "'POST', '/', '{}', false, 'pending', 0, now(), now() FROM generate_series(1, 2) AS n"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        with pytest.raises(Exception, match="could not create unique index"):
            # two rows share a state: the unique build fails and leaves an INVALID index behind
            conn.execute(text(f"CREATE UNIQUE INDEX CONCURRENTLY ix_deliveries_state_updated "
                              f"ON {deliveries.name} (state)"))
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(Engine, "before_cursor_execute", listener)
    try:
        Ledger(pg_url)
    finally:
        event.remove(Engine, "before_cursor_execute", listener)
    built = [s for s in statements if s.startswith("CREATE") and "INDEX" in s]
    assert len(built) == 2 and all(s.startswith("CREATE INDEX CONCURRENTLY") for s in built), built
    assert any(s.startswith("DROP INDEX CONCURRENTLY") and "ix_deliveries_state_updated" in s for s in statements)
    with engine.connect() as conn:
        valid = dict(conn.execute(text(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname IN ('ix_deliveries_state_updated', 'ix_deliveries_last_run')")).all())
        definition = conn.execute(text("SELECT indexdef FROM pg_indexes "
                                       "WHERE indexname = 'ix_deliveries_state_updated'")).scalar_one()
    assert valid == {"ix_deliveries_state_updated": True, "ix_deliveries_last_run": True}
    assert "UNIQUE" not in definition and "(state, updated_at)" in definition
    engine.dispose()


@pytest.mark.parametrize("analyzed", [False, True], ids=["no statistics", "analyzed"])
def test_whether_a_window_is_settled_is_read_from_its_open_rows(tmp_path, analyzed):
    """A window's thousands of accepted rows are not read to find its one open row: the open
    states are written inline, so the partial index on open rows can answer (SQLite takes a
    partial index only for a query naming its literals; checked with its plan, statistics taken)."""
    from datetime import datetime

    from sqlalchemy import event, update

    from storesync.delivery.ledger import deliveries

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    window = (datetime(2026, 1, 1), datetime(2026, 1, 1, 1))
    ledger.plan([item(f"e{i}") for i in range(3000)], sync_name="hourly", run_id="w0",
                window_start=window[0], window_end=window[1])
    ledger.promote("w0")
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.entity_id != "e0").values(state=ACCEPTED))
        if analyzed:
            conn.exec_driver_sql("ANALYZE")
    statements = []
    listener = lambda conn, cursor, sql, params, context, many: statements.append((sql, params))  # noqa: E731
    event.listen(ledger.engine, "before_cursor_execute", listener)
    assert not ledger.window_is_settled("hourly", *window)
    event.remove(ledger.engine, "before_cursor_execute", listener)
    [(sql, params)] = statements
    with ledger.engine.connect() as conn:
        steps = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert any("USING INDEX ix_deliveries_open_window" in step for step in steps), steps
    with ledger.engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.entity_id == "e0").values(state=ACCEPTED))
    assert ledger.window_is_settled("hourly", *window)
    assert ledger.window_is_settled("hourly", window[0], window[1].replace(hour=2))  # nothing planned: settled
    ledger.plan([item("late")], sync_name="hourly", run_id="w1", window_start=window[0],
                window_end=window[1].replace(hour=2))
    ledger.promote("w1")
    assert not ledger.window_is_settled("hourly", window[0], window[1].replace(hour=2))
    assert ledger.window_is_settled("hourly", *window)  # another window's open row is not this one's


def _open_ledger_at_once(url, barrier, results):
    barrier.wait()
    try:
        Ledger(url)
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_processes_opening_a_new_ledger_at_once_all_get_it(tmp_path):
    """Every task of a first DAG run opens the ledger at the same moment: each creates the
    missing tables, and loses the race for some of them (without a retry, this fails every time).
    All of them must come up."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    n = 8
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    barrier, results = context.Barrier(n), context.Queue()
    processes = [context.Process(target=_open_ledger_at_once, args=(url, barrier, results)) for _ in range(n)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == ["ok"] * n, outcomes


# ---------------------------------------------------------------------------- budget before claim
class FakeClock:
    """Moves only when someone sleeps (thread-safe: the engine's threads may sleep too)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


class BudgetedVendor(ScriptedVendor):
    """A scripted vendor whose client admits every request through its limiter, as the real
    clients' retry loop does (``client.limiter``, found by the engine)."""

    def __init__(self, limiter, script=None):
        super().__init__(script)
        from types import SimpleNamespace

        self.client = SimpleNamespace(limiter=limiter)

    def send(self, delivery):
        self.client.limiter.acquire()
        return super().send(delivery)


def test_rows_wait_for_budget_unclaimed_and_each_request_takes_one_admission(ledger):
    from storesync.core.throttle import TokenBucket

    clock = FakeClock()
    bucket = TokenBucket(60, burst=2, clock=clock, sleep=clock.sleep)  # two now, then one a second
    vendor = BudgetedVendor(bucket)
    plan(ledger, *[item(f"e{i}") for i in range(5)])
    seen_while_waiting = []

    def engine_sleep(seconds):  # the engine waits for budget: what is claimed at that moment?
        seen_while_waiting.append((sorted(_sending(ledger)), dict(ledger.counts())))
        clock.sleep(seconds)

    report = DeliveryEngine(ledger, vendor, concurrency=5, policy=FAST, sleep=engine_sleep).run()
    assert report.states[ACCEPTED] == 5 and len(vendor.received) == 5
    assert seen_while_waiting, "the budget never held the engine back: the test proves nothing"
    for sending, counts in seen_while_waiting:
        assert sending == [], "a row was claimed while its request could not leave"
        assert counts.get("planned", 0) >= 1
    # Two at once, then one a second: 3 s in all. Had a request taken a second admission (the
    # engine's and then the client's own), the bucket would have needed 8 s.
    assert clock.now - 1_000.0 == pytest.approx(3.0)


def test_an_unused_admission_is_handed_back(ledger):
    from storesync.core.throttle import TokenBucket

    clock = FakeClock()
    bucket = TokenBucket(60, burst=1, clock=clock, sleep=clock.sleep)
    # The first row is refused before any request (as a mapping failure is): its admission
    # must go back to the budget, so the second row goes at once.
    vendor = BudgetedVendor(bucket)
    original_send = vendor.send

    def send(delivery):
        if delivery.entity_id == "bad":
            raise PermanentError("could not be mapped")
        return original_send(delivery)

    vendor.send = send
    plan(ledger, item("bad"), item("good"))
    DeliveryEngine(ledger, vendor, concurrency=1, policy=FAST, sleep=clock.sleep).run()
    assert vendor.received == [("order_placed", "good")]
    assert clock.now == 1_000.0  # nobody waited: the unused admission was handed back


_BUDGET_CRASH_CHILD = """
import sys
from types import SimpleNamespace
from storesync.core.throttle import SharedWindowLimiter
from storesync.delivery.engine import DeliveryEngine
from storesync.delivery.ledger import Ledger

class Vendor:
    vendor, account = "fake", "acct"
    def __init__(self, limiter):
        self.client = SimpleNamespace(limiter=limiter)
    def send(self, delivery):
        settle = self.client.limiter.acquire_until_answered()
        settle()
        return {"ok": True}
    def resolve_unknown(self, delivery):
        return None

ledger = Ledger(sys.argv[1])
limiter = SharedWindowLimiter(sys.argv[1], "fake:acct", limit=2, window_s=3600.0)
DeliveryEngine(ledger, Vendor(limiter), concurrency=5).run()  # sends 2, then waits an hour
"""


def test_a_crash_while_rows_wait_for_budget_leaves_them_claimable(ledger, db_url):
    """A real process, killed (SIGKILL) while it waits for the shared budget: the rows it could
    not send yet are still planned (claimable), none unknown; the next run sends them."""
    import os
    import signal
    import subprocess
    import sys

    plan(ledger, *[item(f"e{i}") for i in range(5)])
    child = subprocess.Popen([sys.executable, "-c", _BUDGET_CRASH_CHILD, db_url], stderr=subprocess.PIPE)
    try:
        # Two answers recorded = the budget spent; no admission is possible for an hour, so from
        # here on the child only waits (an event, not a timer: however slow the machine is).
        while ledger.counts().get(ACCEPTED, 0) < 2:
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            threading.Event().wait(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert ledger.counts() == {"accepted": 2, "planned": 3}  # nothing sending, nothing unknown
    vendor = ScriptedVendor()
    report = DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert report.recovered == 0 and report.held_unknown == 0
    assert ledger.counts() == {"accepted": 5}
    assert sorted(e for _, e in vendor.received) == ["e2", "e3", "e4"]


def test_crash_point_env_var_is_validated_and_off_by_default(monkeypatch):
    from storesync.delivery.engine import crash_point_from_env

    monkeypatch.delenv("STORESYNC_CRASH_AT", raising=False)
    assert crash_point_from_env() is None
    monkeypatch.setenv("STORESYNC_CRASH_AT", "after_lunch")
    with pytest.raises(ValueError, match="after_accept"):
        crash_point_from_env()


_ACCEPT_CRASH_CHILD = """
import sys
from pathlib import Path
from storesync.delivery.engine import DeliveryEngine
from storesync.delivery.ledger import Ledger

class Vendor:
    vendor, account = "fake", "acct"
    def send(self, delivery):
        with open(sys.argv[2], "a") as out:  # the vendor's record, written before it answers
            out.write(delivery.entity_id + "\\n")
        return {"ok": True}
    def resolve_unknown(self, delivery):
        return None

DeliveryEngine(Ledger(sys.argv[1]), Vendor(), concurrency=1).run()
"""


def test_the_crash_point_after_accept_kills_the_process_before_the_ledger_knows(ledger, db_url, tmp_path):
    """``STORESYNC_CRASH_AT=after_accept``: the vendor has the request, the process is gone, the row
    is still ``sending``; the next run recovers it as unknown and a lookup that finds it at the
    vendor settles it without sending it again."""
    import os
    import subprocess
    import sys

    from storesync.delivery.engine import CRASH_EXIT_CODE

    plan(ledger, item("a"), item("b"))
    received = tmp_path / "vendor.txt"
    env = {**os.environ, "STORESYNC_CRASH_AT": "after_accept", "STORESYNC_CRASH_ON": "fake:order_placed"}
    child = subprocess.run([sys.executable, "-c", _ACCEPT_CRASH_CHILD, db_url, str(received)], env=env,
                           capture_output=True, timeout=120)
    assert child.returncode == CRASH_EXIT_CODE, child.stderr.decode()[-3000:]
    assert received.read_text().split() == ["a"]  # accepted by the vendor, then the crash
    assert ledger.counts() == {"sending": 1, "planned": 1}
    vendor = ScriptedVendor(lookup={"a": "lookup"})
    vendor.received.append(("order_placed", "a"))  # what the vendor already holds
    report = DeliveryEngine(ledger, vendor, policy=FAST).run()
    assert report.recovered == 1 and report.resolved_by_lookup == 1
    assert ledger.counts() == {"accepted": 2}
    assert vendor.received == [("order_placed", "a"), ("order_placed", "b")]  # "a" not sent again


def test_a_budget_store_that_fails_ahead_of_the_claim_loses_nothing(ledger):
    """The shared budget's database refuses the admission taken ahead: the rows are claimed
    anyway and take their admission in their thread, as the client always could."""
    from storesync.core.throttle import TokenBucket

    class Flaky(TokenBucket):
        def try_reserve(self, cost=1):
            raise OSError("the budget's database is away")

    clock = FakeClock()
    vendor = BudgetedVendor(Flaky(60, burst=3, clock=clock, sleep=clock.sleep))
    plan(ledger, *[item(f"e{i}") for i in range(3)])
    report = DeliveryEngine(ledger, vendor, concurrency=3, policy=FAST, sleep=clock.sleep).run()
    assert report.states[ACCEPTED] == 3 and sorted(e for _, e in vendor.received) == ["e0", "e1", "e2"]
