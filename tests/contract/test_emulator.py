"""Contract tests of the local vendor emulator (storesync.emulator), over real HTTP.

Raw ``requests`` + ``hashlib`` only: these tests pin what the emulator says the vendors do
(/work/shared/vendors.md), independently of storesync's own clients.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import pytest
import requests

from storesync.emulator.state import (
    DEFAULT_SAILTHRU_API_KEY,
    DEFAULT_SAILTHRU_SECRET,
    DEFAULT_SENDLANE_API_TOKEN,
    DEFAULT_SENDLANE_INTEGRATION_TOKEN,
)
from storesync.emulator.testing import EmulatorControlError, start_emulator

TIMEOUT = 10
RATE_HEADERS = ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def sl_headers(token: str = DEFAULT_SENDLANE_API_TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def sl_post(emu, path: str, body: dict, *, session=None, token: str | None = None, with_token: bool = True):
    if with_token and "token" not in body:
        body = {"token": emu.sendlane_integration_token, **body}
    poster = session or requests
    headers = sl_headers(token or emu.sendlane_api_token)
    return poster.post(emu.sendlane_url + path, json=body, headers=headers, timeout=TIMEOUT)


def sl_get(emu, path: str, *, session=None):
    return (session or requests).get(emu.sendlane_url + path, headers=sl_headers(), timeout=TIMEOUT)


def sl_contacts(emu, contacts: list, list_id: str = "1"):
    url = f"{emu.sendlane_url}/lists/{list_id}/contacts"
    return requests.post(url, json={"contacts": contacts}, headers=sl_headers(), timeout=TIMEOUT)


def sign(params: dict, secret: str) -> str:
    return hashlib.md5((secret + "".join(sorted(str(v) for v in params.values()))).encode()).hexdigest()


def signed(data: dict, *, api_key: str = DEFAULT_SAILTHRU_API_KEY,
           secret: str = DEFAULT_SAILTHRU_SECRET) -> dict:
    params = {"api_key": api_key, "format": "json", "json": json.dumps(data)}
    params["sig"] = sign(params, secret)
    return params


def st_post(emu, endpoint: str, data: dict, *, session=None, **kw):
    poster = session or requests
    return poster.post(f"{emu.sailthru_url}/{endpoint}", data=signed(data, **kw), timeout=TIMEOUT)


def st_get(emu, endpoint: str, data: dict, **kw):
    return requests.get(f"{emu.sailthru_url}/{endpoint}", params=signed(data, **kw), timeout=TIMEOUT)


def item(sku: str = "SKU-1", price: int = 1099, qty: int = 1) -> dict:
    url = f"https://shop.example/p/{sku}"
    return {"id": sku, "title": f"Product {sku}", "price": price, "qty": qty, "url": url}


def purchase(extid: str = "ord-1", email: str = "joe@example.com", **extra) -> dict:
    return {"email": email, "items": [item()], "purchase_keys": {"extid": extid}, **extra}


def assert_sailthru_error(response, http: int, code: int) -> None:
    assert response.status_code == http, response.text
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["errormsg"], str) and body["errormsg"]


class EmulatorClock:
    """The in-process emulator's clock, frozen until a test moves it: rate windows, lock-outs
    and latency are tested without the wall clock (a loaded machine cannot miss a window). Every
    other use of ``time`` in the emulator's modules is the real one."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # the latency fault: recorded, and time moves on
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def emulator_clock(monkeypatch, emulator):
    import storesync.emulator.sailthru as sailthru_module
    import storesync.emulator.sendlane as sendlane_module
    import storesync.emulator.server as server_module
    import storesync.emulator.state as state_module

    clock = EmulatorClock(float(int(time.time())))
    for module in (sailthru_module, sendlane_module, server_module, state_module):
        monkeypatch.setattr(module, "time", clock)
    return clock


def wait_for(predicate, timeout: float = 5.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


# --------------------------------------------------------------------------------------------
# handle
# --------------------------------------------------------------------------------------------
def test_handle_exposes_urls_and_default_credentials(emulator):
    assert emulator.sendlane_url == emulator.base_url + "/sendlane/v2"
    assert emulator.sailthru_url == emulator.base_url + "/sailthru"
    assert emulator.sendlane_api_token == DEFAULT_SENDLANE_API_TOKEN
    assert emulator.sendlane_integration_token == DEFAULT_SENDLANE_INTEGRATION_TOKEN
    assert emulator.sailthru_api_key == DEFAULT_SAILTHRU_API_KEY
    assert emulator.sailthru_secret == DEFAULT_SAILTHRU_SECRET
    assert emulator.health()["ok"] is True
    assert emulator.requests() == []


def test_control_api_rejects_unknown_fields(emulator):
    with pytest.raises(EmulatorControlError, match="unknown config fields"):
        emulator.configure(sendlane_rate_limt=5)
    with pytest.raises(EmulatorControlError, match="unknown fault fields"):
        emulator.set_faults(eror_rate=0.5)


def test_reset_forgets_records_and_restores_defaults(emulator):
    emulator.configure(sendlane_rate_limit=7, sailthru_templates=["x"])
    assert sl_post(emulator, "/tracking/product-viewed", {"product_id": 1}).status_code == 200
    emulator.set_faults(latency_ms=5)
    emulator.reset()
    assert emulator.requests() == []
    config = emulator.config()
    assert config["sendlane_rate_limit"] == 240
    assert config["sailthru_templates"] == ["abandoned-cart", "purchase receipt"]
    assert emulator.summary()["faults"]["active"]["latency_ms"] == 0


def test_subprocess_mode_serves_both_vendors():
    with start_emulator(in_process=False, sendlane_rate_limit=99) as emu:
        assert emu.server is None and emu.process.poll() is None
        assert sl_post(emu, "/tracking/product-viewed", {"product_id": 7}).status_code == 200
        assert st_post(emu, "purchase", purchase()).status_code == 200
        assert [r["vendor"] for r in emu.requests()] == ["sendlane", "sailthru"]
        assert emu.config()["sendlane_rate_limit"] == 99
    assert emu.process.poll() is not None


# --------------------------------------------------------------------------------------------
# Sendlane: auth
# --------------------------------------------------------------------------------------------
def test_sendlane_auth_failures_are_plain_text_401(emulator):
    url = emulator.sendlane_url + "/tracking/order-placed"
    body = {"token": emulator.sendlane_integration_token, "order_id": 1}
    cases = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {emulator.sendlane_integration_token}"},  # the wrong one of the two tokens
        {"Authorization": emulator.sendlane_api_token},  # no "Bearer"
    ]
    for headers in cases:
        response = requests.post(url, json=body, headers=headers, timeout=TIMEOUT)
        assert response.status_code == 401, headers
        assert response.headers["Content-Type"].startswith("text/plain")
        with pytest.raises(ValueError):
            response.json()
    # A good API token with a wrong custom-integration token: also 401, plain text.
    body = {"token": "not-the-integration-token", "order_id": 1}
    response = sl_post(emulator, "/tracking/order-placed", body)
    assert response.status_code == 401 and response.headers["Content-Type"].startswith("text/plain")
    # A missing integration token is a validation error.
    response = sl_post(emulator, "/tracking/order-placed", {"order_id": 1}, with_token=False)
    assert response.status_code == 422 and "token" in response.json()["errors"]
    assert emulator.requests() == []
    assert emulator.summary()["vendors"]["sendlane"]["rejected"] == {"401": 5, "422": 1}


# --------------------------------------------------------------------------------------------
# Sendlane: tracking paths
# --------------------------------------------------------------------------------------------
LINE = {"product_id": 12345678, "sku": "ABC123", "product_name": "tshirt #1", "quantity": 1,
        "item_price": 19.99, "total": 19.99}
ADDRESS = {"first_name": "Jimmy", "last_name": "Kim", "email": "jimmy@example.com", "city": "San Diego",
           "postal_code": "92131", "phone": "8885552664"}

# path -> (valid body, entity id, invalid body, the field errors expected for it)
TRACKING_CASES = {
    "order-placed": (
        {"event": "order_placed", "order_id": 1001, "email": "jimmy@example.com", "status": "processing",
         "subtotal": 19.99, "total_tax": 0, "total": 19.99, "total_items": 1, "currency": "USD",
         "discounts": {"discount_code": "25OFF", "discount_value": 4.99}, "line_items": [LINE],
         "billing_address": ADDRESS, "shipping_address": ADDRESS, "customer_id": 123456789,
         "accepts_marketing": True, "time": 1700000000},
        "1001",
        {"order_id": 1001, "total": "19.99", "time": 1700000000000,
         "line_items": [{"product_id": 1, "quantity": 1}]},
        {"total", "time", "line_items.0.item_price"},
    ),
    "order-fulfilled": ({"order_id": 1001, "status": "fulfilled"}, "1001",
                        {"status": "shipped"}, {"order_id", "status"}),
    "order-cancelled": ({"order_id": "A-1", "status": "cancelled", "time": 1700000000}, "A-1",
                        {"order_id": 1.5}, {"order_id"}),
    "order-refunded": ({"order_id": 1001, "status": "refunded", "total": 5.0}, "1001",
                       {"order_id": 1001, "total": -5}, {"total"}),
    "customer-added": (
        {"customer_id": 123, "billing_address": ADDRESS, "accepts_marketing": True, "initial_sync": True,
         "time": 1600000000},
        "123",
        {"customer_id": 123, "accepts_marketing": "yes", "initial_sync": 1,
         "billing_address": {"email": "nope"}},
        {"accepts_marketing", "initial_sync", "billing_address.email"},
    ),
    "product-added": (
        {"product_id": 5, "product_url": "https://shop.example/p/5", "image_url": "https://cdn.example/5.jpg",
         "sku": "S5", "product_name": "Shirt", "item_price": 19.99, "compare_at_price": 25,
         "categories": ["shirts"], "variants": [{"variant_id": 51, "item_price": 19.99}]},
        "5",
        {"product_id": 5, "image_url": "not a url", "categories": "shirts"},
        {"product_url", "image_url", "categories"},
    ),
    "checkout-started": (
        {"checkout_id": 9876, "email": "jimmy@example.com", "status": "pending",
         "checkout_url": "https://shop.example/checkout/9876", "subtotal": 19.99, "total_tax": 0,
         "total": 19.99, "total_items": 1, "currency": "USD", "line_items": [LINE]},
        "9876",
        {"email": "jimmy@", "currency": "usd"},
        {"checkout_id", "email", "currency"},
    ),
    "added-to-cart": (
        {"cart_id": "c-1", "email": "jimmy@example.com", "line_items": [LINE], "total": 19.99,
         "currency": "USD"},
        "c-1",
        {"cart_id": "c-1", "line_items": [{"product_id": 1, "quantity": 0, "item_price": "5"}]},
        {"line_items.0.quantity", "line_items.0.item_price"},
    ),
    "product-viewed": ({"product_id": 12345, "email": "jimmy@example.com"}, "12345", {}, {"product_id"}),
    "event": ({"custom_event": "wishlist_added", "email": "jimmy@example.com", "data": {"sku": "A"}},
              "wishlist_added", {"custom_event": "", "data": []}, {"custom_event", "data"}),
}


@pytest.mark.parametrize("slug", sorted(TRACKING_CASES))
def test_sendlane_tracking_valid_and_invalid(emulator, slug):
    valid, entity_id, invalid, expected_errors = TRACKING_CASES[slug]
    response = sl_post(emulator, f"/tracking/{slug}", valid)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"message": "Successfully handled event"}}

    response = sl_post(emulator, f"/tracking/{slug}", invalid)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"] == "The given data was invalid."
    assert set(body["errors"]) == expected_errors, body["errors"]
    assert all(isinstance(msgs, list) and msgs for msgs in body["errors"].values())

    records = emulator.requests(vendor="sendlane")
    assert len(records) == 1
    record = records[0]
    assert record["endpoint"] == f"/tracking/{slug}" and record["method"] == "POST"
    assert record["entity_id"] == entity_id and record["account"] == "acct-1"
    assert record["body"]["token"] == "***"  # the integration token is never kept
    endpoint = emulator.summary()["vendors"]["sendlane"]["endpoints"][f"POST /tracking/{slug}"]
    assert endpoint["accepted"] == 1 and endpoint["rejected"] == {"422": 1}


def test_sendlane_type_rules_for_money_time_and_history(emulator):
    base = {"order_id": 1}
    bad = [
        ({"total": "19.99"}, "total"),  # money as a string
        ({"subtotal": True}, "subtotal"),  # booleans are not numbers
        ({"total": -0.01}, "total"),  # negative totals
        ({"time": 1.5}, "time"),  # not an int
        ({"time": 1700000000123}, "time"),  # milliseconds
        ({"initial_sync": "true"}, "initial_sync"),
        ({"initial_sync": True}, "time"),  # historical event without a past time
        ({"line_items": {"product_id": 1}}, "line_items"),
        ({"email": None}, "email"),  # present fields must have their type
    ]
    for extra, field in bad:
        response = sl_post(emulator, "/tracking/order-placed", {**base, **extra})
        assert response.status_code == 422, (extra, response.text)
        assert field in response.json()["errors"], (extra, response.json())
    historical = {**base, "initial_sync": True, "time": 1600000000, "total": 0}
    ok = sl_post(emulator, "/tracking/order-placed", historical)
    assert ok.status_code == 200
    assert sl_post(emulator, "/tracking/no-such-event", base).status_code == 404
    assert sl_post(emulator, "/no/such/path", base).status_code == 404


def test_sendlane_requires_json_content_type(emulator):
    response = requests.post(emulator.sendlane_url + "/tracking/product-viewed",
                             data={"token": emulator.sendlane_integration_token, "product_id": "1"},
                             headers=sl_headers(), timeout=TIMEOUT)
    assert response.status_code == 415
    response = requests.post(emulator.sendlane_url + "/tracking/product-viewed", data=b"{not json",
                             headers={**sl_headers(), "Content-Type": "application/json"}, timeout=TIMEOUT)
    assert response.status_code == 400


def test_sendlane_skips_a_repeated_order_event_and_records_other_repeats(emulator):
    # The seed guide: the same event + order id again is skipped (answered 200, not recorded).
    for _ in range(2):
        assert sl_post(emulator, "/tracking/order-placed", {"order_id": 77, "total": 1.0}).status_code == 200
    assert sl_post(emulator, "/tracking/order-placed", {"order_id": 78, "total": 1.0}).status_code == 200
    # The same order id under another order event is another event: recorded.
    assert sl_post(emulator, "/tracking/order-fulfilled", {"order_id": 77}).status_code == 200
    posted = emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed", entity_id="77", recorded=None)
    assert [r["skipped"] for r in posted] == [False, True]
    assert len(emulator.requests(vendor="sendlane", entity_id="77")) == 2  # recorded: placed and fulfilled
    assert len(emulator.requests(vendor="sendlane", recorded=False)) == 1
    endpoint = emulator.summary()["vendors"]["sendlane"]["endpoints"]["POST /tracking/order-placed"]
    assert endpoint["accepted"] == 2 and endpoint["skipped"] == 1 and endpoint["duplicates"] == {}
    # Nothing else is de-duplicated: a second checkout_started is a second event (a flow may
    # fire twice), a product is overwritten (not a duplicate), a changed checkout is owed.
    checkout = {"checkout_id": 5, "email": "a@example.com", "total": 3.0}
    for body in (checkout, checkout, {**checkout, "total": 4.0}):
        assert sl_post(emulator, "/tracking/checkout-started", body).status_code == 200
    product = {"product_id": 9, "product_url": "https://s.example/9", "image_url": "https://s.example/9.png"}
    for _ in range(2):
        assert sl_post(emulator, "/tracking/product-added", product).status_code == 200
    assert len(emulator.requests(vendor="sendlane", endpoint="/tracking/checkout-started", recorded=True)) == 3
    assert emulator.duplicates() == {"sendlane": {"/tracking/checkout-started": {"count": 1, "entities": ["5"]}}}
    assert emulator.summary()["total_accepted"] == 8


# --------------------------------------------------------------------------------------------
# Sendlane: contacts, lists, unsubscribes
# --------------------------------------------------------------------------------------------
def test_sendlane_contacts_upsert_and_validation(emulator):
    contacts = [
        {"email": "Ann@Example.com", "first_name": "Ann", "last_name": "Lee", "phone": "555",
         "email_consent": True, "tag_names": ["vip"],
         "custom_fields": [{"key": "ltv", "value": 120.5}, {"key": "tier", "value": "gold"}]},
        {"email": "bob@example.com", "first_name": "Bob"},
    ]
    response = sl_contacts(emulator, contacts, emulator.sendlane_list_id)
    assert response.status_code == 202, response.text
    update = {"email": "ann@example.com", "custom_fields": [{"key": "ltv", "value": 200}],
              "tag_names": ["repeat"]}
    assert sl_contacts(emulator, [update]).status_code == 202

    (ann,) = emulator.contacts(email="ann@example.com")
    assert ann["first_name"] == "Ann" and ann["upserts"] == 2
    assert ann["custom_fields"] == {"ltv": 200, "tier": "gold"}
    assert ann["tag_names"] == ["vip", "repeat"]
    assert len(emulator.contacts(list_id=emulator.sendlane_list_id)) == 2

    bad = [{"email": "ok@example.com"}, {"email": "broken@"}, {"first_name": "no email"}]
    response = sl_contacts(emulator, bad)
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"contacts.1.email", "contacts.2.email"}
    assert sl_contacts(emulator, contacts, list_id="999").status_code == 404
    records = emulator.requests(vendor="sendlane", endpoint="/lists/{list_id}/contacts")
    assert [r["entity_ids"] for r in records] == [["ann@example.com", "bob@example.com"], ["ann@example.com"]]


def _walk(emulator, url: str) -> tuple[list[dict], int]:
    items, pages = [], 0
    while url:
        response = requests.get(url, headers=sl_headers(), timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["data"])
        url = body["links"]["next"]
        pages += 1
    return items, pages


def test_sendlane_unsubscribed_paging_and_accepts_marketing(emulator):
    emulator.configure(sendlane_unsubscribed=["a@example.com", "b@example.com", "c@example.com",
                                              {"email": "d@example.com", "list_id": "1"},
                                              {"email": "e@example.com", "list_id": "2"}],
                       sendlane_lists={"1": "Newsletter", "2": "Customers"})
    items, pages = _walk(emulator, emulator.sendlane_url + "/contacts/unsubscribed?limit=2")
    assert pages == 3
    assert sorted(i["email"] for i in items) == [f"{c}@example.com" for c in "abcde"]
    assert all(i["unsubscribed_at"] for i in items)
    items, _ = _walk(emulator, emulator.sendlane_url + "/lists/1/unsubscribed?limit=100")
    assert sorted(i["email"] for i in items) == [f"{c}@example.com" for c in "abcd"]

    # The seed guide: accepts_marketing=false unsubscribes the contact.
    body = {"customer_id": 9, "billing_address": {"email": "f@example.com"}, "accepts_marketing": False}
    assert sl_post(emulator, "/tracking/customer-added", body).status_code == 200
    items, _ = _walk(emulator, emulator.sendlane_url + "/contacts/unsubscribed")
    assert "f@example.com" in {i["email"] for i in items}

    lists = sl_get(emulator, "/lists").json()
    assert [entry["id"] for entry in lists["data"]] == [1, 2] and lists["links"]["next"] is None


def test_sendlane_resubscribing_an_unsubscribed_contact_is_flagged(emulator):
    emulator.configure(sendlane_unsubscribed=["gone@example.com"])
    assert sl_contacts(emulator, [{"email": "gone@example.com", "email_consent": True}]).status_code == 202
    (reversal,) = emulator.summary()["consent_reversals"]
    assert reversal["vendor"] == "sendlane" and reversal["email"] == "gone@example.com"


# --------------------------------------------------------------------------------------------
# Sendlane: rate limit and lock-out
# --------------------------------------------------------------------------------------------
def test_sendlane_rate_limit_is_per_account_sliding_window_without_headers(emulator, emulator_clock):
    emulator.configure(sendlane_rate_limit=5, sendlane_rate_window_s=1.0)
    session = requests.Session()
    # Contacts and tracking share the one budget of the account.
    def view(product_id):
        return sl_post(emulator, "/tracking/product-viewed", {"product_id": product_id}, session=session)

    statuses = [view(i).status_code for i in range(4)]
    statuses.append(sl_get(emulator, "/lists", session=session).status_code)
    limited = [view(9) for _ in range(3)]
    assert statuses == [200] * 5
    for response in limited:
        assert response.status_code == 429
        assert not any(h.lower().startswith(("x-rate", "retry-after")) for h in response.headers)
    stats = emulator.summary()["rate_limits"]["sendlane"]["acct-1"]
    assert stats["over_limit_rejections"] == 3 and stats["max_in_window"] == 5
    emulator_clock.advance(1.05)
    assert view(10).status_code == 200
    assert emulator.summary()["rate_limits"]["sendlane"]["acct-1"]["max_in_window"] == 5
    assert len(emulator.requests(vendor="sendlane")) == 6


def test_sendlane_lockout_after_too_many_errors(emulator, emulator_clock):
    emulator.configure(lockout_errors=3, lockout_window_s=10, lockout_cooldown_s=0.5)
    for _ in range(3):
        assert sl_post(emulator, "/tracking/order-placed", {"total": "x"}).status_code == 422
    locked = sl_post(emulator, "/tracking/order-placed", {"order_id": 1})
    assert locked.status_code == 403
    assert sl_get(emulator, "/lists").status_code == 403
    stats = emulator.summary()["rate_limits"]["sendlane"]["acct-1"]
    assert stats["lockouts"] == 1 and stats["locked_rejections"] == 2
    emulator_clock.advance(0.6)
    assert sl_post(emulator, "/tracking/order-placed", {"order_id": 1}).status_code == 200


# --------------------------------------------------------------------------------------------
# Sailthru: auth
# --------------------------------------------------------------------------------------------
def test_sailthru_auth_errors(emulator):
    url = emulator.sailthru_url + "/purchase"
    bad_key = requests.post(url, data=signed(purchase(), api_key="nope"), timeout=TIMEOUT)
    assert_sailthru_error(bad_key, 401, 3)
    bad_sig = requests.post(url, data=signed(purchase(), secret="wrong-secret"), timeout=TIMEOUT)
    assert_sailthru_error(bad_sig, 401, 5)
    tampered = signed(purchase())
    tampered["json"] = json.dumps(purchase(extid="ord-2"))
    assert_sailthru_error(requests.post(url, data=tampered, timeout=TIMEOUT), 401, 5)
    no_sig = signed(purchase())
    del no_sig["sig"]
    assert_sailthru_error(requests.post(url, data=no_sig, timeout=TIMEOUT), 400, 2)
    no_json = {"api_key": emulator.sailthru_api_key, "format": "json"}
    no_json["sig"] = sign(no_json, emulator.sailthru_secret)
    assert_sailthru_error(requests.post(url, data=no_json, timeout=TIMEOUT), 400, 2)
    assert all(h in bad_sig.headers for h in RATE_HEADERS)
    assert emulator.requests() == []


# --------------------------------------------------------------------------------------------
# Sailthru: purchase, return, lookups
# --------------------------------------------------------------------------------------------
def test_sailthru_purchase_duplicates_and_lookup_by_extid(emulator):
    first = st_post(emulator, "purchase", purchase(
        "ord-1", message_id="23423.231", adjustments=[{"title": "Sale", "price": -100}],
        tenders=[{"title": "Amex", "price": 999}], vars={"channel": "web"}))
    assert first.status_code == 200, first.text
    stored = first.json()["purchase"]
    assert stored["id"] and stored["extid"] == "ord-1" and stored["price"] == 999
    assert all(h in first.headers for h in RATE_HEADERS)

    second = st_post(emulator, "purchase", purchase("ord-1"))  # the same order again: NOT idempotent
    assert second.status_code == 200 and second.json()["purchase"]["id"] != stored["id"]
    # The official client's top-level extid is accepted too.
    top_level = {"email": "amy@example.com", "items": [item("SKU-2", 500, 2)], "extid": "ord-2"}
    assert st_post(emulator, "purchase", top_level).status_code == 200

    posted = emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST", entity_id="ord-1")
    assert len(posted) == 2
    assert len(emulator.purchases(extid="ord-1")) == 2
    endpoint = emulator.summary()["vendors"]["sailthru"]["endpoints"]["POST /purchase"]
    assert endpoint["duplicates"] == {"ord-1": 2} and endpoint["accepted"] == 3

    found = st_get(emulator, "purchase", {"purchase_id": "ord-2", "purchase_key": "extid"})
    assert found.status_code == 200 and found.json()["purchase"]["email"] == "amy@example.com"
    by_sid = st_get(emulator, "purchase", {"purchase_id": stored["id"], "purchase_key": "sid"})
    assert by_sid.json()["purchase"]["extid"] == "ord-1"
    missing = st_get(emulator, "purchase", {"purchase_id": "ord-404", "purchase_key": "extid"})
    assert_sailthru_error(missing, 404, 99)


def test_sailthru_incomplete_cart_and_return(emulator):
    cart = {"email": "joe@example.com", "items": [item()], "incomplete": 1,
            "reminder_template": "abandoned-cart", "reminder_time": "+3 hours"}
    assert st_post(emulator, "purchase", cart).status_code == 200
    cleared = {"email": "joe@example.com", "items": [], "incomplete": 1}  # clearing a cart
    assert st_post(emulator, "purchase", cleared).status_code == 200
    assert_sailthru_error(st_post(emulator, "purchase", {"email": "joe@example.com", "items": []}), 400, 2)

    ret = {"email": "joe@example.com", "items": [{"qty": 1, "price": 1099, "id": "SKU-1"}],
           "purchase_keys": {"extid": "ord-1"}}
    response = st_post(emulator, "return", ret)
    assert response.status_code == 200, response.text
    (record,) = emulator.requests(vendor="sailthru", endpoint="/return")
    assert record["entity_id"] == "ord-1" and len(emulator.returns()) == 1


@pytest.mark.parametrize(
    ("payload", "http", "code"),
    [
        (purchase(email="not-an-email"), 400, 11),
        (purchase(reminder_template="no-such-template", incomplete=1), 404, 14),
        (purchase(send_template="receipt-v9"), 404, 14),
        ({**purchase(), "items": [{**item(), "price": 10.99}]}, 400, 2),  # dollars, not cents
        ({**purchase(), "items": [{**item(), "price": "1099"}]}, 400, 2),  # strings are not cents
        ({**purchase(), "items": [{**item(), "qty": 0}]}, 400, 2),
        ({**purchase(), "items": [{"id": "1", "price": 100, "qty": 1}]}, 400, 2),  # no title/url
        ({"items": [item()]}, 400, 2),  # no email
        (purchase(date="not a date"), 400, 18),
    ],
    ids=["bad-email", "unknown-reminder", "unknown-send-template", "float-price", "string-price", "zero-qty",
         "item-fields", "no-email", "bad-date"],
)
def test_sailthru_purchase_rejections(emulator, payload, http, code):
    assert_sailthru_error(st_post(emulator, "purchase", payload), http, code)
    assert emulator.requests() == []
    endpoint = emulator.summary()["vendors"]["sailthru"]["endpoints"]["POST /purchase"]
    assert endpoint["error_codes"] == {str(code): 1}


def test_sailthru_opted_out_email_is_error_33(emulator):
    emulator.configure(sailthru_opted_out=["Gone@Example.com"],
                       sailthru_templates=["abandoned-cart", "receipt-v2"])
    assert_sailthru_error(st_post(emulator, "purchase", purchase(email="gone@example.com")), 400, 33)
    assert st_post(emulator, "purchase", purchase(send_template="receipt-v2")).status_code == 200


# --------------------------------------------------------------------------------------------
# Sailthru: content and user upserts
# --------------------------------------------------------------------------------------------
def test_sailthru_content_upsert_by_url_and_sku(emulator):
    product = {"url": "https://shop.example/p/1", "title": "Shirt", "price": 1999, "tags": ["shirts", "sale"],
               "vars": {"brand": "Acme"}, "images": {"full": {"url": "https://cdn.example/1.jpg"},
                                                      "thumb": {"url": "https://cdn.example/1t.jpg"}},
               "inventory": 5, "description": "A shirt", "date": "2024-01-31 10:00:00 UTC"}
    assert st_post(emulator, "content", product).status_code == 200
    update = {"url": "https://shop.example/p/1", "title": "Shirt", "price": 1499, "vars": {"color": "red"}}
    assert st_post(emulator, "content", update).status_code == 200
    (stored,) = emulator.content()
    assert stored["price"] == 1499 and stored["inventory"] == 5
    assert stored["vars"] == {"brand": "Acme", "color": "red"}

    sku_item = {"url": "https://shop.example/p/2", "title": "Hat", "keys": {"sku": "HAT-1"}}
    moved = {"url": "https://shop.example/hats/2", "title": "Hat", "keys": {"sku": "HAT-1"}, "price": 500}
    assert st_post(emulator, "content", sku_item).status_code == 200
    assert st_post(emulator, "content", moved).status_code == 200
    assert len(emulator.content()) == 2
    assert len(emulator.requests(vendor="sailthru", endpoint="/content")) == 4

    assert_sailthru_error(st_post(emulator, "content", {**update, "price": 14.99}), 400, 2)
    assert_sailthru_error(st_post(emulator, "content", {"title": "no url"}), 400, 2)
    assert_sailthru_error(st_post(emulator, "content", {**update, "expire_date": "someday"}), 400, 18)


def test_sailthru_user_upsert_and_optout_only_changes_when_sent(emulator):
    create = {"id": "ann@example.com", "key": "email", "keys": {"extid": "cust-1"},
              "vars": {"ltv_cents": 12050, "first_name": "Ann"}, "lists": {"Customers": 1},
              "optout_email": "all"}
    response = st_post(emulator, "user", create)
    assert response.status_code == 200, response.text
    assert response.json()["optout_email"] == "all"

    # Later syncs that do not mention optout_email leave it alone.
    by_extid = {"id": "cust-1", "key": "extid"}
    by_email = {"id": "ann@example.com", "key": "email"}
    assert st_post(emulator, "user", {**by_extid, "vars": {"ltv_cents": 20000}}).status_code == 200
    assert st_post(emulator, "user", {**by_email, "lists": {"VIP": 1}}).status_code == 200
    (user,) = emulator.users()
    assert user["optout_email"] == "all" and user["keys"]["extid"] == "cust-1"
    assert user["vars"] == {"ltv_cents": 20000, "first_name": "Ann"}
    assert user["lists"] == ["Customers", "VIP"]
    assert [h["to"] for h in user["optout_history"]] == ["all"]
    assert emulator.summary()["consent_reversals"] == []

    fetched = st_get(emulator, "user", {"id": "cust-1", "key": "extid"})
    assert fetched.status_code == 200 and fetched.json()["optout_email"] == "all"
    assert_sailthru_error(st_get(emulator, "user", {"id": "who@example.com", "key": "email"}), 404, 99)

    assert_sailthru_error(st_post(emulator, "user", {"id": "ann@example.com", "key": "email",
                                                     "vars": {"x" * 33: 1}}), 400, 2)
    assert_sailthru_error(st_post(emulator, "user", {"id": "ann@example.com", "key": "email",
                                                     "optout_email": "some"}), 400, 2)
    assert_sailthru_error(st_post(emulator, "user", {"id": "bad-email", "key": "email"}), 400, 11)

    # Sending a less restrictive opt-out is accepted (the vendor allows it) but flagged.
    assert st_post(emulator, "user", {**by_extid, "optout_email": "none"}).status_code == 200
    (reversal,) = emulator.summary()["consent_reversals"]
    assert reversal["vendor"] == "sailthru" and "all -> none" in reversal["detail"]
    assert len(emulator.requests(vendor="sailthru", endpoint="/user", method="POST")) == 4


# --------------------------------------------------------------------------------------------
# Sailthru: jobs
# --------------------------------------------------------------------------------------------
def _wait_job(emulator, job_id: str) -> dict:
    def done():
        response = st_get(emulator, "job", {"job_id": job_id})
        assert response.status_code == 200, response.text
        body = response.json()
        return body if body["status"] == "completed" else None

    return wait_for(done)


def test_sailthru_job_purchase_import_inline_completes_and_records(emulator):
    emulator.configure(job_delay_s=0.1)
    rows = [purchase(f"hist-{i}", email=f"u{i}@example.com", date="2023-05-01 10:00:00 UTC")
            for i in range(5)]
    rows.append({"email": "broken", "items": [item()]})
    response = st_post(emulator, "job", {"job": "purchase_import", "purchases": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "pending" and body["job_id"]
    assert len(emulator.requests(vendor="sailthru", endpoint="/purchase", source="job")) == 0  # asynchronous
    job = _wait_job(emulator, body["job_id"])
    assert (job["rows"], job["imported"], job["failed"]) == (6, 5, 1)
    assert job["errors"][0]["row"] == 6 and job["errors"][0]["error"] == 11
    imported = emulator.requests(vendor="sailthru", endpoint="/purchase", source="job")
    assert sorted(r["entity_id"] for r in imported) == [f"hist-{i}" for i in range(5)]
    endpoint = emulator.summary()["vendors"]["sailthru"]["endpoints"]["POST /purchase"]
    assert endpoint["by_source"] == {"job": 5}
    lookup = st_get(emulator, "purchase", {"purchase_id": "hist-3", "purchase_key": "extid"})
    assert lookup.json()["purchase"]["source"] == "job"


def test_sailthru_job_multipart_file_and_content_update(emulator):
    emulator.configure(job_delay_s=0.05)
    lines = "\n".join(json.dumps(purchase(f"f-{i}")) for i in range(3)) + "\n{oops\n"
    params = signed({"job": "purchase_import"})
    files = {"file": ("purchases.json", lines.encode(), "application/json")}
    response = requests.post(emulator.sailthru_url + "/job", data=params, files=files, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    job = _wait_job(emulator, response.json()["job_id"])
    assert (job["imported"], job["failed"]) == (3, 1)

    content = [{"url": f"https://shop.example/p/{i}", "title": f"P{i}", "price": 100 * i}
               for i in range(1, 4)]
    response = st_post(emulator, "job", {"job": "content_update", "content": content})
    job = _wait_job(emulator, response.json()["job_id"])
    assert job["imported"] == 3 and len(emulator.content()) == 3
    assert_sailthru_error(st_post(emulator, "job", {"job": "purchase_import"}), 400, 2)
    assert_sailthru_error(st_get(emulator, "job", {"job_id": "nope"}), 404, 99)


# --------------------------------------------------------------------------------------------
# Sailthru: rate limits
# --------------------------------------------------------------------------------------------
def test_sailthru_rate_limit_headers_count_down_then_error_43(emulator, emulator_clock):
    window = 10
    emulator.configure(sailthru_rate_limits={"POST /purchase": 3}, sailthru_rate_window_s=window)
    emulator_clock.advance(window - emulator_clock.now % window + 1)  # early in one fixed window
    responses = [st_post(emulator, "purchase", purchase(f"o-{i}")) for i in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [int(r.headers["X-Rate-Limit-Remaining"]) for r in responses] == [2, 1, 0, 0]
    assert {int(r.headers["X-Rate-Limit-Limit"]) for r in responses} == {3}
    resets = {int(r.headers["X-Rate-Limit-Reset"]) for r in responses}
    assert len(resets) == 1 and emulator_clock.now <= resets.pop() <= math.ceil(emulator_clock.now) + window
    assert_sailthru_error(responses[-1], 429, 43)
    # Limits are per endpoint and method: GET /purchase still has its own budget.
    lookup = st_get(emulator, "purchase", {"purchase_id": "o-0", "purchase_key": "extid"})
    assert lookup.status_code == 200 and int(lookup.headers["X-Rate-Limit-Limit"]) == 300
    stats = emulator.summary()["rate_limits"]["sailthru"]["acct-1"]["POST /purchase"]
    assert stats["over_limit_rejections"] == 1 and stats["max_in_window"] == 3
    assert len(emulator.requests(vendor="sailthru", method="POST")) == 3


def test_sailthru_bare_method_limit_applies_to_every_endpoint(emulator):
    emulator.configure(sailthru_rate_limits={"POST": 6000, "GET": 6000})
    limits = emulator.config()["sailthru_rate_limits"]
    assert limits == {"POST": 6000, "GET": 6000, "DELETE": 40}
    response = st_post(emulator, "purchase", purchase())
    assert response.headers["X-Rate-Limit-Limit"] == "6000"
    emulator.configure(sailthru_rate_limits={"POST /purchase": 2})
    assert st_post(emulator, "purchase", purchase()).headers["X-Rate-Limit-Limit"] == "2"
    assert st_post(emulator, "content", {"url": "https://s.example/1", "title": "T"}).headers[
        "X-Rate-Limit-Limit"] == "6000"


def test_rate_limits_can_be_disabled(emulator):
    emulator.configure(rate_limits_enabled=False, sendlane_rate_limit=2,
                       sailthru_rate_limits={"POST /purchase": 1})
    views = [sl_post(emulator, "/tracking/product-viewed", {"product_id": i}) for i in range(4)]
    assert all(r.status_code == 200 for r in views)
    assert all(st_post(emulator, "purchase", purchase(f"x{i}")).status_code == 200 for i in range(3))
    # Still measured, so a benchmark can assert the client stayed under the real limit.
    assert emulator.summary()["rate_limits"]["sendlane"]["acct-1"]["max_in_window"] == 4


# --------------------------------------------------------------------------------------------
# Faults: one test per mode
# --------------------------------------------------------------------------------------------
def test_fault_error_rate_matches_share_with_seed(emulator):
    emulator.configure(rate_limits_enabled=False)  # 600 requests: more than a minute's budget
    emulator.set_faults(error_rate=0.3, seed=42, vendors=["sendlane"])
    session = requests.Session()
    statuses = [sl_post(emulator, "/tracking/product-viewed", {"product_id": i}, session=session).status_code
                for i in range(300)]
    errors = [s for s in statuses if s >= 500]
    assert set(errors) <= {500, 502, 503} and set(statuses) <= {200, 500, 502, 503}
    assert 0.2 <= len(errors) / len(statuses) <= 0.4
    assert len(emulator.requests(vendor="sendlane")) == statuses.count(200)  # 5xx: not accepted
    summary = emulator.summary()
    assert summary["faults"]["injected"] == {"error_rate": len(errors)}
    # The same seed gives the same sequence.
    emulator.set_faults(error_rate=0.3, seed=42, vendors=["sendlane"])
    again = [sl_post(emulator, "/tracking/product-viewed", {"product_id": i}, session=session).status_code
             for i in range(300)]
    assert again == statuses
    # Sailthru is out of scope for this fault set.
    assert all(st_post(emulator, "purchase", purchase(f"s{i}")).status_code == 200 for i in range(5))


def test_fault_storm_counted_in_requests_then_recovery(emulator):
    # A counted storm: the next 3 requests get 429, whoever sends them; no wall clock involved.
    emulator.set_faults(storm={"requests": 3, "reset_s": 2})
    sendlane = sl_post(emulator, "/tracking/product-viewed", {"product_id": 1})
    assert sendlane.status_code == 429
    assert not any(h.lower().startswith("x-rate") for h in sendlane.headers)
    sailthru = st_post(emulator, "purchase", purchase())
    assert_sailthru_error(sailthru, 429, 43)
    assert sailthru.headers["X-Rate-Limit-Remaining"] == "0"
    assert int(sailthru.headers["X-Rate-Limit-Reset"]) >= int(time.time())
    assert sl_post(emulator, "/tracking/product-viewed", {"product_id": 1}).status_code == 429
    assert emulator.requests() == []
    assert emulator.summary()["faults"]["active"]["storm"]["remaining_requests"] == 0
    assert sl_post(emulator, "/tracking/product-viewed", {"product_id": 1}).status_code == 200
    assert st_post(emulator, "purchase", purchase()).status_code == 200
    assert emulator.summary()["faults"]["injected"]["storm"] == 3


def test_fault_storm_by_duration_still_answers_429(emulator):
    emulator.set_faults(storm={"duration_s": 60})
    assert sl_post(emulator, "/tracking/product-viewed", {"product_id": 1}).status_code == 429
    emulator.clear_faults()
    assert sl_post(emulator, "/tracking/product-viewed", {"product_id": 1}).status_code == 200
    with pytest.raises(EmulatorControlError):
        emulator.set_faults(storm={"requests": 0})
    with pytest.raises(EmulatorControlError):
        emulator.set_faults(storm={"requests": 2, "duration_s": 1})


def test_fault_draws_depend_on_the_request_count_not_on_other_faults(emulator):
    # The same seed and request order give the same faults even when another fault kind is
    # added (no shared random stream): drop_after does not shift which requests get a 5xx.
    emulator.configure(rate_limits_enabled=False)

    def statuses():
        out = []
        for i in range(60):
            try:
                out.append(sl_post(emulator, "/tracking/product-viewed", {"product_id": i}).status_code)
            except requests.ConnectionError:
                out.append("dropped")
        return out

    emulator.set_faults(error_rate=0.2, seed=7, vendors=["sendlane"])
    plain = statuses()
    emulator.set_faults(error_rate=0.2, drop_after_rate=0.1, seed=7, vendors=["sendlane"])
    with_drops = statuses()
    assert [s for s in plain if s != 200] == [s for s in with_drops if s not in (200, "dropped")]
    assert [i for i, s in enumerate(plain) if s != 200] == [i for i, s in enumerate(with_drops)
                                                            if s not in (200, "dropped")]
    assert "dropped" in with_drops


def test_fault_latency(emulator, emulator_clock):
    emulator.set_faults(latency_ms=250, vendors=["sailthru"])
    assert st_post(emulator, "purchase", purchase()).status_code == 200
    assert emulator_clock.slept == [0.25]  # the answer was held back a quarter of a second
    assert sl_post(emulator, "/tracking/product-viewed", {"product_id": 1}).status_code == 200
    assert emulator_clock.slept == [0.25]  # sendlane not in scope: not held
    assert emulator.summary()["faults"]["injected"] == {"latency": 1}


def test_fault_drop_before_is_not_recorded(emulator):
    emulator.set_faults(drop_before_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        sl_post(emulator, "/tracking/order-placed", {"order_id": 5})
    with pytest.raises(requests.ConnectionError):
        st_post(emulator, "purchase", purchase("ord-5"))
    assert emulator.requests() == []
    assert emulator.summary()["faults"]["injected"] == {"drop_before": 2}
    emulator.clear_faults()
    assert sl_post(emulator, "/tracking/order-placed", {"order_id": 5}).status_code == 200


def test_fault_drop_after_is_recorded_although_the_client_saw_an_error(emulator):
    emulator.set_faults(drop_after_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        sl_post(emulator, "/tracking/order-placed", {"order_id": 6, "total": 10.0})
    with pytest.raises(requests.ConnectionError):
        st_post(emulator, "purchase", purchase("ord-6"))
    assert [r["entity_id"] for r in emulator.requests()] == ["6", "ord-6"]
    assert emulator.summary()["faults"]["injected"] == {"drop_after": 2}
    emulator.clear_faults()
    # The lookup a client uses to resolve the unknown outcome finds the purchase.
    lookup = st_get(emulator, "purchase", {"purchase_id": "ord-6", "purchase_key": "extid"})
    assert lookup.status_code == 200 and lookup.json()["matches"] == 1


# --------------------------------------------------------------------------------------------
# Sailthru: lookups the account or a gateway does not route
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", ["json_404", "html_404", "not_found_99"])
def test_sailthru_unrouted_lookup_answers_404_even_for_a_purchase_that_exists(emulator, answer):
    assert st_post(emulator, "purchase", purchase("ord-9")).status_code == 200
    found = st_get(emulator, "purchase", {"purchase_id": "ord-9", "purchase_key": "extid"})
    assert found.status_code == 200 and found.json()["purchase"]["extid"] == "ord-9"
    missing = st_get(emulator, "purchase", {"purchase_id": "ord-10", "purchase_key": "extid"})
    assert_sailthru_error(missing, 404, 99)
    assert "not found" in missing.json()["errormsg"].lower()

    emulator.configure(sailthru_unrouted_gets=["purchase", "content"], sailthru_unrouted_answer=answer)
    unrouted = st_get(emulator, "purchase", {"purchase_id": "ord-9", "purchase_key": "extid"})
    assert unrouted.status_code == 404
    assert not any(h.lower().startswith("x-rate") for h in unrouted.headers)  # never reached Sailthru
    if answer == "html_404":
        assert unrouted.headers["Content-Type"].startswith("text/html")
    elif answer == "json_404":
        assert "error" not in unrouted.json()
    else:  # the documented not-found's very shape, for a purchase that exists
        assert_sailthru_error(unrouted, 404, 99)
        assert "not found" in unrouted.json()["errormsg"].lower()
    assert st_get(emulator, "content", {"url": "https://shop.example/p/SKU-1"}).status_code == 404
    # Only the listed GETs: users are still looked up, and every POST still lands.
    assert st_post(emulator, "user", {"id": "a@example.com", "key": "email"}).status_code == 200
    assert st_get(emulator, "user", {"id": "a@example.com", "key": "email"}).status_code == 200
    assert st_post(emulator, "purchase", purchase("ord-11")).status_code == 200
    with pytest.raises(EmulatorControlError):
        emulator.configure(sailthru_unrouted_gets=["return"])


def test_sailthru_drop_after_accept_then_resend_is_a_recorded_duplicate(emulator):
    emulator.set_faults(drop_after_rate=1.0, vendors=["sailthru"])
    with pytest.raises(requests.ConnectionError):
        st_post(emulator, "purchase", purchase("ord-20"))
    emulator.clear_faults()
    assert st_post(emulator, "purchase", purchase("ord-20")).status_code == 200  # a blind resend
    assert len(emulator.purchases(extid="ord-20")) == 2  # purchases are not idempotent
    cart = purchase("cart-1", incomplete=1)
    assert st_post(emulator, "purchase", cart).status_code == 200
    assert st_post(emulator, "content", {"url": "https://s.example/1", "title": "T"}).status_code == 200
    assert st_post(emulator, "content", {"url": "https://s.example/1", "title": "T"}).status_code == 200
    assert emulator.duplicates() == {"sailthru": {"/purchase": {"count": 1, "entities": ["ord-20"]}}}


# --------------------------------------------------------------------------------------------
# Sendlane: contact reads and deletion (undocumented; the shapes public clients use)
# --------------------------------------------------------------------------------------------
def sl_search(emu, email: str):
    return requests.get(emu.sendlane_url + "/contacts/search", params={"email": email},
                        headers=sl_headers(), timeout=TIMEOUT)


def assert_contact_not_found(response):
    assert response.status_code == 422
    assert response.json() == {"message": "The selected email is invalid.",
                               "errors": {"email": ["The selected email is invalid."]}}


def test_sendlane_events_and_list_upserts_make_contacts_a_search_finds(emulator):
    assert_contact_not_found(sl_search(emulator, "ann@example.com"))
    added = {"customer_id": "c-1", "email": "Ann@Example.com", "first_name": "Ann"}
    assert sl_post(emulator, "/tracking/customer-added", added).status_code == 200
    found = sl_search(emulator, "ann@example.com")
    assert found.status_code == 200
    contact = found.json()["data"]
    assert contact["email"] == "ann@example.com" and contact["first_name"] == "Ann"
    by_id = sl_get(emulator, f"/contacts/{contact['id']}")
    assert by_id.status_code == 200 and by_id.json()["data"] == contact
    # A list upsert makes one too; an order event with its email updates the same contact.
    assert sl_contacts(emulator, [{"email": "bob@example.com"}], emulator.sendlane_list_id).status_code == 202
    assert sl_search(emulator, "bob@example.com").status_code == 200
    order = {"order_id": 7, "email": "ann@example.com", "total": 5.0}
    assert sl_post(emulator, "/tracking/order-placed", order).status_code == 200
    (ann,) = emulator.people(email="ann@example.com")
    assert ann["id"] == contact["id"] and ann["sources"] == ["customer-added", "order-placed"]
    # An event without an email makes no contact; a bad query is a validation error, not "not found".
    assert sl_post(emulator, "/tracking/checkout-started", {"checkout_id": 3}).status_code == 200
    assert len(emulator.people()) == 2
    assert sl_search(emulator, "not-an-email").json()["errors"]["email"] == [
        "The email must be a valid email address."]
    assert sl_get(emulator, "/contacts/999999").status_code == 404


def test_sendlane_contact_is_found_only_once_processed(emulator, emulator_clock):
    emulator.configure(sendlane_contact_delay_s=30.0)
    assert sl_post(emulator, "/tracking/customer-added", {"customer_id": 1, "email": "c@example.com"}).ok
    assert_contact_not_found(sl_search(emulator, "c@example.com"))  # accepted, not processed yet
    emulator_clock.advance(31)
    assert sl_search(emulator, "c@example.com").status_code == 200


def test_sendlane_delete_contact_by_id_forgets_the_person(emulator):
    assert sl_post(emulator, "/tracking/customer-added", {"customer_id": 1, "email": "d@example.com"}).ok
    assert sl_contacts(emulator, [{"email": "d@example.com"}], emulator.sendlane_list_id).status_code == 202
    # A neighbour whose email ends with the deleted one's keeps everything.
    assert sl_post(emulator, "/tracking/customer-added", {"customer_id": 2, "email": "dd@example.com"}).ok
    contact_id = sl_search(emulator, "d@example.com").json()["data"]["id"]
    deleted = requests.delete(f"{emulator.sendlane_url}/contacts/{contact_id}", headers=sl_headers(),
                              timeout=TIMEOUT)
    assert deleted.status_code == 200
    assert_contact_not_found(sl_search(emulator, "d@example.com"))
    assert emulator.contacts(email="d@example.com") == []
    kept = emulator.requests(vendor="sendlane", endpoint="/tracking/customer-added")  # theirs go: kept simple
    assert [r["body"]["email"] for r in kept] == ["dd@example.com"]
    assert sl_search(emulator, "dd@example.com").status_code == 200
    again = requests.delete(f"{emulator.sendlane_url}/contacts/{contact_id}", headers=sl_headers(),
                            timeout=TIMEOUT)
    assert again.status_code == 404


@pytest.mark.parametrize("answer", ["json_404", "html_404", "not_found_422"])
def test_sendlane_unrouted_contact_search_never_finds_a_contact_that_exists(emulator, answer):
    assert sl_post(emulator, "/tracking/customer-added", {"customer_id": 1, "email": "e@example.com"}).ok
    found = sl_search(emulator, "e@example.com")
    assert found.status_code == 200
    emulator.configure(sendlane_unrouted_gets=["contacts/search", "contacts/{id}"],
                       sendlane_unrouted_answer=answer)
    unrouted = sl_search(emulator, "e@example.com")
    if answer == "html_404":
        assert unrouted.status_code == 404 and unrouted.headers["Content-Type"].startswith("text/html")
    elif answer == "json_404":
        assert unrouted.status_code == 404 and unrouted.json() == {"message": "Not Found"}
    else:  # the not-found's very shape, for a contact that exists
        assert_contact_not_found(unrouted)
    assert sl_get(emulator, f"/contacts/{found.json()['data']['id']}").status_code in (404, 422)
    # Only the listed reads: the unsubscribed list and every write still work.
    assert sl_get(emulator, "/contacts/unsubscribed").status_code == 200
    assert sl_post(emulator, "/tracking/customer-added", {"customer_id": 2, "email": "f@example.com"}).ok
    with pytest.raises(EmulatorControlError):
        emulator.configure(sendlane_unrouted_gets=["lists"])
