"""Personal data (issue 22): who counts as erased, suppression at planning, retention's scrub,
[retention] settings and the erase command's input errors. The end-to-end erasure against the
emulator is tests/integration/test_erasure.py."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from storesync.cli import main
from storesync.core.config import RetentionSettings, load_settings
from storesync.core.errors import ConfigurationError
from storesync.delivery.ledger import (
    ACCEPTED,
    DEAD,
    CONTENT,
    Ledger,
    Outcome,
    PlannedDelivery,
    deliveries,
    erasures,
    record_log,
)
from storesync.privacy import erasure
from storesync.privacy.erasure import Person, _audit, scrub_people, sendlane_contact_erasure
from storesync.privacy.retention import SCRUBBED_PAYLOAD, scrub_expired
from storesync.privacy.subjects import ErasedSet, identifiers, salt_of

ANA = "Ana.Lima@example.com"


def _order(entity: str, email: str, customer_id: int, version: str = "1") -> PlannedDelivery:
    return PlannedDelivery(vendor="sendlane", account="acct", event_type="order_placed", entity_id=entity,
                           version=version, endpoint="/tracking/order-placed", ordering_key=f"order:{entity}",
                           payload={"order_id": entity, "email": email, "customer_id": customer_id,
                                    "billing_address": {"first_name": "Ana", "address1": "1 Rua Nova"}})


def _profile(customer_id: int, email: str, name: str) -> PlannedDelivery:
    payload = {"id": str(customer_id), "key": "extid", "keys": {"email": email}, "vars": {"first_name": name}}
    return PlannedDelivery(vendor="sailthru", account="acct", event_type="profile", entity_id=str(customer_id),
                           version=hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16], endpoint="/user", payload=payload,
                           versioning=CONTENT)


def _erase_locally(ledger: Ledger, person: Person) -> None:
    salt = salt_of(ledger.engine, create=True)
    _audit(ledger.engine, salt, person, "cli", datetime(2026, 12, 1), vendors_result=None, scrubbed=None)


def _send_all(ledger: Ledger, run_id: str, state: str = ACCEPTED) -> None:
    ledger.promote(run_id)
    for vendor in ("sendlane", "sailthru"):
        claimed = ledger.claim(vendor, "acct", 100, "test")
        ledger.record([(d, Outcome(state)) for d in claimed], run_id=run_id)


def test_identifiers_are_emails_anywhere_and_customer_ids_where_they_name_a_person():
    payload = {"email": "a@x.io", "billing_address": {"email": "b@x.io"}, "customer_id": 7,
               "purchase_keys": {"extid": "order-9"}, "items": [{"title": "mug"}]}
    assert sorted(identifiers(payload)) == [("customer_id", "7"), ("email", "a@x.io"), ("email", "b@x.io")]
    # Sailthru's profile: id + key "extid" is the customer id; a purchase's extid is an order id.
    assert sorted(identifiers({"id": "7", "key": "extid", "keys": {"email": "a@x.io"}})) == [
        ("customer_id", "7"), ("email", "a@x.io")]


def test_planning_drops_every_delivery_naming_an_erased_person(db_url):
    ledger = Ledger(db_url)
    _erase_locally(ledger, Person(emails={ANA.lower()}, customer_ids={"42"}))

    planned = ledger.plan([
        _order("o1", ANA.upper(), 42),       # her email, in any case
        _order("o2", "other@example.com", 42),  # a guest order under her customer id
        _profile(42, "new-address@example.com", "Ana"),  # her profile, by extid
        _order("o3", "bob@example.com", 7),
    ], sync_name="nightly", run_id="r1")

    assert planned == 1
    with ledger.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.entity_id)).scalars().all() == ["o3"]
        audit = conn.execute(select(erasures)).mappings().all()
    # The audit holds hashes, never the email or the id.
    assert len(audit) == 2 and all(len(a["subject_hash"]) == 64 for a in audit)
    cells = [str(v).lower() for a in audit for k, v in a.items() if k not in ("id", "subject_hash")]
    assert not any("ana" in c or c == "42" for c in cells)


def test_the_audit_hash_is_salted_per_ledger(tmp_path):
    one, two = Ledger(f"sqlite:///{tmp_path / 'a.db'}"), Ledger(f"sqlite:///{tmp_path / 'b.db'}")
    for ledger in (one, two):
        _erase_locally(ledger, Person(emails={"ana@example.com"}))
    hashes = [ErasedSet.load(ledger.engine).hashes for ledger in (one, two)]
    assert len(hashes[0]) == 1 and hashes[0] != hashes[1]


def test_scrubbing_a_person_keeps_identity_and_suppresses_what_was_still_owed(db_url):
    ledger = Ledger(db_url)
    ledger.plan([_order("o1", ANA, 42), _profile(42, ANA, "Ana")], sync_name="nightly", run_id="r1")
    _send_all(ledger, "r1")
    ledger.plan([_order("o1", ANA, 42, version="2"), _order("o9", "bob@example.com", 7)],
                sync_name="nightly", run_id="r2")
    ledger.promote("r2")  # planned, not sent yet

    counts = scrub_people(ledger, [Person(emails={ANA.lower()}, customer_ids={"42"})])

    assert counts["storesync_deliveries"] == 3
    with ledger.engine.connect() as conn:
        rows = {(r.entity_id, r.version): r for r in conn.execute(select(deliveries))}
    assert rows[("o1", "1")].state == ACCEPTED and rows[("o1", "1")].payload == '{"erased": true}'
    assert rows[("o1", "2")].state == "suppressed" and rows[("o1", "2")].error_class == "erased"
    assert "bob@example.com" in rows[("o9", "1")].payload and rows[("o9", "1")].state == "planned"
    assert not any("ana" in (r.payload + (r.vendor_error or "")).lower() for r in rows.values()
                   if r.entity_id != "o9")


def test_retention_scrubs_old_accepted_payloads_and_a_rerun_plans_nothing(db_url):
    ledger = Ledger(db_url)
    first = [_order("o1", ANA, 42), _profile(42, ANA, "Ana")]
    ledger.plan(first, sync_name="nightly", run_id="r1", window_start=datetime(2026, 1, 1),
                window_end=datetime(2026, 1, 2))
    _send_all(ledger, "r1")
    with ledger.engine.begin() as conn:  # an earlier attempt's answer quoting her email
        o1 = conn.execute(select(deliveries.c.id).where(deliveries.c.entity_id == "o1")).scalar()
        conn.execute(record_log.insert().values(run_id="r0", delivery_id=o1, vendor="sendlane", operation="x",
                                                entity_id="o1", status="retry", error=f"422: {ANA} bounced",
                                                logged_at=datetime(2026, 1, 1)))
    ledger.plan([_order("o2", "dead@example.com", 8)], sync_name="nightly", run_id="r2")
    _send_all(ledger, "r2", state=DEAD)
    ledger.plan([_order("o3", "open@example.com", 9)], sync_name="nightly", run_id="r3")

    too_soon = scrub_expired(ledger, days=30, now=datetime.utcnow() + timedelta(days=29))
    assert too_soon.deliveries == 0
    report = scrub_expired(ledger, days=30, now=datetime.utcnow() + timedelta(days=31))
    assert report.deliveries == 2
    assert scrub_expired(ledger, days=30, now=datetime.utcnow() + timedelta(days=31)).deliveries == 0
    with ledger.engine.connect() as conn:
        rows = {r.entity_id: r for r in conn.execute(select(deliveries))}
    assert rows["o1"].payload == SCRUBBED_PAYLOAD and rows["42"].payload == SCRUBBED_PAYLOAD
    assert "dead@example.com" in rows["o2"].payload and "open@example.com" in rows["o3"].payload
    with ledger.engine.connect() as conn:
        o1_errors = [r.error for r in conn.execute(select(record_log).where(record_log.c.entity_id == "o1"))]
    assert o1_errors.count("payload scrubbed (retention)") == 1 and not any("ana" in (e or "").lower()
                                                                           for e in o1_errors)

    # The rerun of the window and a backfill plan the same events: nothing new is owed.
    assert ledger.plan(first, sync_name="nightly", run_id="rerun", window_start=datetime(2026, 1, 1),
                       window_end=datetime(2026, 1, 2)) == 0
    assert ledger.plan(first, sync_name="historical", run_id="backfill") == 0
    ledger.promote("rerun")
    ledger.promote("backfill")
    assert ledger.claim("sendlane", "acct", 10, "t") == [] and ledger.claim("sailthru", "acct", 10, "t") == []


def test_retention_scrubs_resolved_quarantine_rows_only(db_url):
    from storesync.quality import QuarantineStore
    from storesync.quality.gate import QuarantinedRow

    ledger = Ledger(db_url)
    store = QuarantineStore(ledger.engine)
    rows = [QuarantinedRow(entity="orders", entity_id=i, row={"order_id": i, "email": f"p{i}@example.com"},
                           reasons=(f"email_well_formed: p{i}@example.com is odd",)) for i in (1, 2)]
    store.record_rows(rows, run_id="r1", batch_id="b1")
    store.resolve_passed("orders", [1], "r2")

    report = scrub_expired(ledger, days=30, now=datetime.utcnow() + timedelta(days=31))

    assert report.quarantine == 1
    history = {str(r["entity_id"]): r for r in store.open_rows("orders")}
    assert "2" in history and history["2"]["row"]["email"] == "p2@example.com"
    resolved = store.history("orders", 1)[0]
    assert resolved["row"] == {"scrubbed": "retention"} and resolved["reasons"] == ["email_well_formed"]


def test_retention_days_default_and_validation(tmp_path, monkeypatch):
    assert RetentionSettings().days == 30
    config = tmp_path / "storesync.toml"
    config.write_text("[retention]\ndays = 90\n")
    assert load_settings(config).retention.days == 90
    config.write_text("[retention]\ndays = 0\n")
    with pytest.raises(ConfigurationError, match=r"retention\.days.*>= 1"):
        load_settings(config)
    monkeypatch.setenv("STORESYNC_RETENTION_DAYS", "7")
    config.write_text("")
    assert load_settings(config).retention.days == 7


def test_erase_command_refuses_bad_input_without_echoing_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STORESYNC_CONFIG", str(tmp_path / "none.toml"))
    assert main(["erase"]) == 2
    assert "--email" in capsys.readouterr().err
    assert main(["erase", "--email", "ana.lima-at-example.com", "--ledger-url",
                 f"sqlite:///{tmp_path / 'l.db'}"]) == 2
    err = capsys.readouterr().err
    assert "not emails" in err and "ana.lima" not in err


def test_erase_command_end_to_end_against_the_emulator(tmp_path, capsys, monkeypatch, emulator):
    """The command as a user runs it: vendors from STORESYNC_* settings, JSON out, the profile
    gone from the emulator's Sailthru, the ledger row scrubbed, exit 0; a second run is harmless."""
    from storesync.clients.sailthru import SailthruClient
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    warehouse = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(warehouse, DemoStoreSpec(orders=20, seed=4, end=datetime(2026, 11, 20), days=2))
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for key, value in {"STORESYNC_CONFIG": str(tmp_path / "none.toml"), "STORESYNC_WAREHOUSE_URL": warehouse,
                       "STORESYNC_LEDGER_URL": ledger_url, "STORESYNC_SENDLANE_BASE_URL": emulator.sendlane_url,
                       "STORESYNC_SENDLANE_API_TOKEN": emulator.sendlane_api_token,
                       "STORESYNC_SAILTHRU_BASE_URL": emulator.sailthru_url,
                       "STORESYNC_SAILTHRU_API_KEY": emulator.sailthru_api_key,
                       "STORESYNC_SAILTHRU_SECRET": emulator.sailthru_secret}.items():
        monkeypatch.setenv(key, value)
    sailthru = SailthruClient(emulator.sailthru_url, emulator.sailthru_api_key, emulator.sailthru_secret)
    sailthru.user({"id": "9001", "key": "extid", "keys": {"email": ANA}, "vars": {"first_name": "Ana"}})
    Ledger(ledger_url).plan([_profile(9001, ANA, "Ana")], sync_name="customers", run_id="r")
    assert emulator.users(email=ANA.lower())

    assert main(["erase", "--email", ANA, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["vendors"]["sailthru"]["deleted"] == 1
    assert result["vendors"]["sendlane"] == {"deleted": 0, "not found": 1, "not confirmed": 0, "failed": 0}
    assert result["scrubbed"]["storesync_deliveries"] == 1
    assert emulator.users(email=ANA.lower()) == [] and sailthru.lookup("user", {"id": "9001", "key": "extid"}) is None
    assert main(["erase", "--email", ANA, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vendors"]["sailthru"]["not found"] == 1


def _erase_env(monkeypatch, tmp_path, emulator) -> str:
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    warehouse = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(warehouse, DemoStoreSpec(orders=10, seed=4, end=datetime(2026, 11, 20), days=1))
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for key, value in {"STORESYNC_CONFIG": str(tmp_path / "none.toml"), "STORESYNC_WAREHOUSE_URL": warehouse,
                       "STORESYNC_LEDGER_URL": ledger_url, "STORESYNC_SENDLANE_BASE_URL": emulator.sendlane_url,
                       "STORESYNC_SENDLANE_API_TOKEN": emulator.sendlane_api_token}.items():
        monkeypatch.setenv(key, value)
    return ledger_url


@pytest.mark.parametrize("answer", ["json_404", "html_404"])
def test_sendlane_deletion_answered_by_a_generic_404_is_not_confirmed_until_it_is(
        answer, tmp_path, capsys, monkeypatch, emulator):
    """Sendlane's contact search answered with a 404 that is not its not-found (the path is not
    routed): nothing is claimed, the audit keeps the person unfinished, exit 1 with what to do;
    everything else is done. Once the path answers, a rerun deletes the contact and finishes."""
    from storesync.clients.sendlane import SendlaneClient

    ledger_url = _erase_env(monkeypatch, tmp_path, emulator)
    SendlaneClient(emulator.sendlane_url, emulator.sendlane_api_token).add_contacts(
        emulator.sendlane_list_id, [{"email": ANA, "first_name": "Ana"}])
    Ledger(ledger_url).plan([_order("o1", ANA, 42)], sync_name="orders", run_id="r")
    emulator.configure(sendlane_unrouted_gets=["contacts/search"], sendlane_unrouted_answer=answer)

    assert main(["erase", "--email", ANA, "--vendor", "sendlane", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["vendors"]["sendlane"] == {"deleted": 0, "not found": 0, "not confirmed": 1, "failed": 0}
    [failure] = result["failures"]
    assert "generic 404" in failure and "Sendlane's app" in failure and "ana" not in failure.lower()
    assert result["scrubbed"]["storesync_deliveries"] == 1  # the rest is done all the same
    assert emulator.people(email=ANA.lower())  # still at Sendlane, and not claimed otherwise
    with Ledger(ledger_url).engine.connect() as conn:
        audit = conn.execute(select(erasures)).mappings().one()
    assert audit["erased_at"] is None and json.loads(audit["vendors"])["sendlane"].startswith("not confirmed")

    emulator.configure(sendlane_unrouted_gets=[])
    assert main(["erase", "--email", ANA, "--vendor", "sendlane", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vendors"]["sendlane"]["deleted"] == 1
    assert emulator.people(email=ANA.lower()) == [] and emulator.contacts(email=ANA.lower()) == []
    with Ledger(ledger_url).engine.connect() as conn:
        assert conn.execute(select(erasures.c.erased_at)).scalar() is not None


class _Sendlane:
    """A Sendlane client whose delete found nothing to delete, and whose search then finds ``left``."""

    def __init__(self, left):
        self.left = left

    def delete_contact(self, email):
        return False

    def find_contact(self, email):
        return self.left


def test_a_sendlane_delete_that_answered_404_counts_only_if_the_contact_is_gone():
    assert sendlane_contact_erasure(_Sendlane(None), ANA) == "not found"
    status = sendlane_contact_erasure(_Sendlane({"id": 7, "email": ANA}), ANA)
    assert status.startswith("not confirmed: DELETE /contacts/{id} answered 404")


def test_a_sendlane_contact_not_found_right_after_an_event_of_theirs_is_not_confirmed(
        tmp_path, capsys, monkeypatch, emulator):
    """Sendlane processes asynchronously: the contact made by an event accepted a moment ago is not
    searchable yet, so "not found" proves nothing and is not confirmed. An hour on, it is."""
    from storesync.clients.sendlane import SendlaneClient

    ledger_url = _erase_env(monkeypatch, tmp_path, emulator)
    emulator.configure(sendlane_contact_delay_s=7200)  # not searchable during the test
    SendlaneClient(emulator.sendlane_url, emulator.sendlane_api_token).add_contacts(
        emulator.sendlane_list_id, [{"email": ANA}])
    ledger = Ledger(ledger_url)
    ledger.plan([_order("o1", ANA, 42)], sync_name="orders", run_id="r")
    _send_all(ledger, "r")  # Sendlane accepted it just now

    assert main(["erase", "--email", ANA, "--vendor", "sendlane", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["vendors"]["sendlane"]["not confirmed"] == 1
    assert "asynchronously" in result["failures"][0] and "ana" not in result["failures"][0].lower()

    # Run again at once: her payload is erased by now, the audit still knows to wait.
    assert main(["erase", "--email", ANA, "--vendor", "sendlane", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["vendors"]["sendlane"]["not confirmed"] == 1

    # An hour on (the audit's "search again after" is past): not found is nothing to delete.
    with ledger.engine.begin() as conn:
        for row in conn.execute(select(erasures.c.id, erasures.c.vendors)).all():
            earlier = json.loads(row.vendors)
            earlier["sendlane"] = re.sub(r"after \S+ \S+ UTC", "after 2026-01-01 00:00 UTC",
                                         earlier["sendlane"])
            conn.execute(erasures.update().where(erasures.c.id == row.id).values(vendors=json.dumps(earlier)))
        conn.execute(deliveries.update().values(accepted_at=datetime.utcnow() - timedelta(hours=2)))
    assert main(["erase", "--email", ANA, "--vendor", "sendlane", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vendors"]["sendlane"]["not found"] == 1


def test_finding_nobody_reads_no_customers(monkeypatch):
    def unread(_settings):
        raise AssertionError("the warehouse's customers were read for an empty request")

    monkeypatch.setattr(erasure, "_warehouse_customers", unread)
    assert erasure.find_people(object(), emails=["", "  "], customer_ids=[None]) == []
