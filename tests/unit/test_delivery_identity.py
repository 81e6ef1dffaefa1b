"""Delivery identities (issue #4 follow-ups): order events versioned by their warehouse change id,
no raw email in any ledger key, an explicit vendor account id, and an older ledger's keys still
recognised."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from storesync.core.config import SailthruSettings, SendlaneSettings, Settings, fingerprint, load_settings
from storesync.core.errors import ConfigurationError
from storesync.delivery.ledger import Ledger, PlannedDelivery
from storesync.pipeline.targets import SailthruTarget, SendlaneTarget, person_key

from tests.unit.test_mappers import checkout, order

EMAIL = "jimmy@example.com"


def settings(tmp_path, **vendor) -> Settings:
    return Settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
                    sendlane=SendlaneSettings(api_token="sl-token", integration_token="it",
                                              account_id=vendor.get("sendlane")),
                    sailthru=SailthruSettings(api_key="st-key", secret="st-secret",
                                              account_id=vendor.get("sailthru")))


def targets(tmp_path, **vendor):
    current = settings(tmp_path, **vendor)
    return SendlaneTarget(current, unsubscribed=set()), SailthruTarget(current)


# ------------------------------------------------------------------ order events: change ids
def test_order_events_are_versioned_by_their_change_id_and_ordered_by_seq(tmp_path):
    sendlane, sailthru = targets(tmp_path)
    # Two status changes of one order in one interval, both a Sailthru "return".
    cancelled = order(kind="cancelled", status="cancelled", seq=2, change_id=5001)
    refunded = order(kind="refunded", status="refunded", seq=3, change_id=5002)
    returns = [p for e in (cancelled, refunded) for p in sailthru.plan_order(e)]
    assert [(p.event_type, p.version, p.seq) for p in returns] == [("return", "5001", 2), ("return", "5002", 3)]
    assert len({p.delivery_key for p in returns}) == 2
    assert {p.ordering_key for p in returns} == {"order:1001"}
    events = [p for e in (cancelled, refunded) for p in sendlane.plan_order(e)]
    assert [(p.version, p.seq) for p in events] == [("5001", 2), ("5002", 3)]


def test_a_backdated_history_row_that_shifts_seq_does_not_change_the_identity(tmp_path):
    _, sailthru = targets(tmp_path)
    before = sailthru.plan_order(order(kind="cancelled", status="cancelled", seq=2, change_id=5001))[0]
    after = sailthru.plan_order(order(kind="cancelled", status="cancelled", seq=3, change_id=5001))[0]
    assert before.delivery_key == after.delivery_key
    assert (before.seq, after.seq) == (2, 3)


def test_a_delivery_planned_under_the_old_seq_version_is_not_planned_again(tmp_path):
    _, sailthru = targets(tmp_path)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    event = order(seq=1, change_id=777)
    new = sailthru.plan_order(event)[0]
    old = replace(new, version="1", legacy_versions=(), versioning="change")  # as an older storesync keyed it
    assert ledger.plan([old], sync_name="s", run_id="old") == 1
    assert ledger.plan([new], sync_name="s", run_id="new") == 0
    other = sailthru.plan_order(order(order_id=1002, seq=1, change_id=778))[0]
    assert ledger.plan([other], sync_name="s", run_id="new") == 1


# ------------------------------------------------------------------ no raw email in ledger keys
def test_the_abandoned_cart_ordering_key_holds_a_hash_of_the_email(tmp_path):
    sendlane, sailthru = targets(tmp_path)
    cart = sailthru.plan_checkout(checkout())[0]
    assert EMAIL not in cart.ordering_key and "jimmy" not in cart.ordering_key
    assert cart.ordering_key == f"cart:{person_key(EMAIL)}"
    # One person, one key, however the email is written; two people, two keys.
    assert sailthru.plan_checkout(checkout(checkout_id=1, email=" Jimmy@Example.com"))[0].ordering_key \
        == cart.ordering_key
    assert sailthru.plan_checkout(checkout(email="ann@example.com"))[0].ordering_key != cart.ordering_key
    for planned in [cart, *sendlane.plan_checkout(checkout()), *sailthru.plan_order(order(change_id=1)),
                    *sendlane.plan_order(order(change_id=1))]:
        for key in (planned.delivery_key, planned.ordering_key, planned.entity_id):
            assert "@" not in key and "jimmy" not in key.lower()


def test_a_cart_reverted_to_earlier_content_gets_its_own_lookup_key(tmp_path):
    from datetime import timedelta

    _, sailthru = targets(tmp_path)
    first = sailthru.plan_checkout(checkout())[0]
    again = sailthru.plan_checkout(checkout(updated_at=checkout().updated_at + timedelta(hours=2)))[0]
    assert first.version == again.version  # same content
    assert first.payload["purchase_keys"]["extid"] != again.payload["purchase_keys"]["extid"]
    assert first.versioning == again.versioning == "content"


# ------------------------------------------------------------------ account ids
def test_an_explicit_account_id_keys_the_ledger_and_the_fingerprint_is_the_fallback(tmp_path):
    sendlane, sailthru = targets(tmp_path, sendlane="sl-acct-1", sailthru="st-acct-9")
    assert (sendlane.account, sailthru.account) == ("sl-acct-1", "st-acct-9")
    assert sendlane.plan_order(order(change_id=1))[0].delivery_key.startswith("sendlane|sl-acct-1|")
    unset_sendlane, unset_sailthru = targets(tmp_path)
    assert unset_sendlane.account == fingerprint("sl-token")
    assert unset_sailthru.account == fingerprint("st-key")
    # A new token on the same configured account keeps its ledger.
    rotated = replace(settings(tmp_path, sendlane="sl-acct-1"),
                      sendlane=SendlaneSettings(api_token="new-token", account_id="sl-acct-1"))
    assert SendlaneTarget(rotated, unsubscribed=set()).account == "sl-acct-1"


def test_account_id_settings_are_checked(tmp_path, monkeypatch):
    assert SendlaneSettings(account_id="  ").account_id is None
    assert SailthruSettings(account_id=12345).account == "12345"
    with pytest.raises(ConfigurationError):
        SendlaneSettings(account_id="x" * 41)
    with pytest.raises(ConfigurationError):
        SailthruSettings(account_id="a|b")
    config = tmp_path / "storesync.toml"
    config.write_text('[sendlane]\naccount_id = "from-file"\n[sailthru]\nunknown_grace_s = 30\n')
    monkeypatch.setenv("STORESYNC_SAILTHRU_ACCOUNT_ID", "from-env")
    loaded = load_settings(config)
    assert (loaded.sendlane.account, loaded.sailthru.account) == ("from-file", "from-env")
    assert loaded.sailthru.unknown_grace_s == 30.0
    assert SailthruSettings().unknown_grace_s == 120.0


def test_the_connection_extra_account_id_reaches_the_settings(tmp_path, monkeypatch):
    from storesync.provider.connections import resolve_settings
    from storesync.provider.get_provider_info import get_provider_info

    monkeypatch.setenv("STORESYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("AIRFLOW_CONN_SENDLANE_DEFAULT", json.dumps(
        {"conn_type": "sendlane", "password": "tok", "extra": {"integration_token": "it", "account_id": "acct-7"}}))
    monkeypatch.setenv("AIRFLOW_CONN_SAILTHRU_DEFAULT", json.dumps(
        {"conn_type": "sailthru", "login": "key", "password": "secret", "extra": {"account_id": "st-3"}}))
    current = resolve_settings()
    assert (current.sendlane.account, current.sailthru.account) == ("acct-7", "st-3")
    monkeypatch.setenv("AIRFLOW_CONN_SAILTHRU_DEFAULT", json.dumps(
        {"conn_type": "sailthru", "login": "key", "password": "secret"}))
    assert resolve_settings().sailthru.account == fingerprint("key")
    fields = {c["connection-type"]: c.get("conn-fields", {}) for c in get_provider_info()["connection-types"]}
    assert "account_id" in fields["sendlane"] and "account_id" in fields["sailthru"]


def test_the_sendlane_hook_shares_the_budget_of_the_configured_account(tmp_path, monkeypatch):
    from storesync.provider.hooks.sendlane import SendlaneHook

    monkeypatch.setenv("STORESYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("AIRFLOW_CONN_SENDLANE_DEFAULT", json.dumps(
        {"conn_type": "sendlane", "host": "http://127.0.0.1:9", "password": "tok",
         "extra": {"integration_token": "it", "account_id": "acct-7"}}))
    assert SendlaneHook().get_conn().limiter.key == "sendlane:acct-7"


def test_planned_deliveries_default_to_change_versions():
    item = PlannedDelivery("v", "a", "e", "1", "1", "/x", {})
    assert item.versioning == "change" and item.legacy_versions == ()
