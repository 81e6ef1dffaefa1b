"""Contract: every mapper's output, sent through the real clients, is accepted by the vendor
emulator, and the emulator's inspection API shows what the vendor would now hold."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import pytest

from storesync.clients.http import RetryPolicy
from storesync.clients.sailthru import SailthruClient
from storesync.clients.sendlane import SendlaneClient
from storesync.core.config import DEFAULT_SENDLANE_EVENT_PATHS, SailthruSettings
from storesync.core.events import (
    Address,
    CheckoutEvent,
    CustomerEvent,
    LineItem,
    OrderEvent,
    ProductEvent,
    ProductVariant,
)
from storesync.mappers import sailthru as st
from storesync.mappers import sendlane as sl

PLACED_AT = datetime(2026, 3, 14, 15, 9, 26)
EMAIL = "jimmy@example.com"
ONE_TRY = RetryPolicy(max_attempts=1)  # the emulator has no faults here: any error is a contract break


def line(sku: str = "TEE-1", quantity: int = 3, unit: str = "19.99") -> LineItem:
    price = Decimal(unit)
    return LineItem(product_id=101, sku=sku, product_name="Tee", quantity=quantity, unit_price=price,
                    total=price * quantity, product_url=f"https://shop.example.com/p/{sku.lower()}",
                    image_url=f"https://cdn.example.com/{sku.lower()}.jpg", variant_id=1011, categories=("shirts",))


def order(**changes) -> OrderEvent:
    values = dict(kind="placed", order_id=1001, customer_id=42, email=EMAIL, status="processing", currency="USD",
                  subtotal=Decimal("59.97"), total_tax=Decimal("4.80"), total_discounts=Decimal("5.00"),
                  total=Decimal("65.76"), occurred_at=PLACED_AT, created_at=PLACED_AT, line_items=(line(),),
                  discount_code="5OFF", billing_address=Address(first_name="Jimmy", email=EMAIL, city="San Diego"),
                  shipping_address=Address(first_name="Jimmy", city="San Diego"), accepts_marketing=True,
                  message_id="23423.231", payment_method="Amex")
    values.update(changes)
    return OrderEvent(**values)


def customer(**changes) -> CustomerEvent:
    values = dict(customer_id=42, email=EMAIL, first_name="Jimmy", last_name="Kim", phone="8885552664",
                  accepts_marketing=True, created_at=PLACED_AT, updated_at=PLACED_AT,
                  address=Address(city="San Diego", country_code="US"), vars={"ltv_total": Decimal("164.77")})
    values.update(changes)
    return CustomerEvent(**values)


def product(**changes) -> ProductEvent:
    values = dict(product_id=101, sku="TEE-1", title="Tee", url="https://shop.example.com/p/tee-1",
                  image_url="https://cdn.example.com/tee-1.jpg", price=Decimal("19.99"), updated_at=PLACED_AT,
                  description="A tee.", compare_at_price=Decimal("24.99"), brand="Acme", categories=("shirts",),
                  variants=(ProductVariant(1011, "TEE-1-S", "Tee S", Decimal("19.99")),), inventory=7)
    values.update(changes)
    return ProductEvent(**values)


def checkout(**changes) -> CheckoutEvent:
    values = dict(checkout_id=9876, customer_id=42, email=EMAIL, status="open",
                  checkout_url="https://shop.example.com/checkout/9876", currency="USD", subtotal=Decimal("39.98"),
                  total_tax=Decimal("0"), total=Decimal("39.98"), created_at=PLACED_AT, updated_at=PLACED_AT,
                  line_items=(line(quantity=2),), message_id="23423.231")
    values.update(changes)
    return CheckoutEvent(**values)


@pytest.fixture
def sendlane(emulator):
    client = SendlaneClient(emulator.sendlane_url, emulator.sendlane_api_token, emulator.sendlane_integration_token,
                            retry_policy=ONE_TRY)
    yield client
    client.close()


@pytest.fixture
def sailthru(emulator):
    client = SailthruClient(emulator.sailthru_url, emulator.sailthru_api_key, emulator.sailthru_secret,
                            retry_policy=ONE_TRY)
    yield client
    client.close()


def recorded(emulator, vendor: str, endpoint: str, entity_id) -> dict:
    [record] = emulator.requests(vendor=vendor, endpoint=endpoint, entity_id=str(entity_id))
    return record["body"]


# ------------------------------------------------------------------ Sendlane
SENDLANE_EVENTS = [
    ("order placed", lambda: sl.map_order_event(order())),
    ("order placed, historical", lambda: sl.map_order_event(order(order_id=1002, historical=True))),
    ("order fulfilled", lambda: sl.map_order_event(order(order_id=1003, kind="fulfilled", status="completed"))),
    ("order cancelled", lambda: sl.map_order_event(order(order_id=1004, kind="cancelled", status="cancelled"))),
    ("order refunded", lambda: sl.map_order_event(order(order_id=1005, kind="refunded", status="refunded",
                                                        historical=True))),
    ("customer added", lambda: sl.map_customer_added(customer())),
    ("customer added, historical", lambda: sl.map_customer_added(customer(customer_id=43, historical=True))),
    ("product added", lambda: sl.map_product_added(product())),
    ("product added, historical", lambda: sl.map_product_added(product(product_id=102, historical=True))),
    ("checkout started", lambda: sl.map_checkout_started(checkout())),
    ("added to cart", lambda: sl.map_added_to_cart(checkout())),
    ("product viewed", lambda: sl.map_product_viewed(EMAIL, 101, variant_id=1011)),
]


@pytest.mark.parametrize(("name", "mapping"), SENDLANE_EVENTS, ids=[name for name, _ in SENDLANE_EVENTS])
def test_sendlane_accepts_every_event_mapping(emulator, sendlane, name, mapping):
    path, payload = mapping()
    assert sendlane.track(path, payload) == {"data": {"message": "Successfully handled event"}}
    [record] = emulator.requests(vendor="sendlane", endpoint=path)
    assert record["body"] == {**payload, "token": "***"}  # what arrived is what was mapped (+ the token)


def test_sendlane_paths_cover_every_order_kind():
    paths = {sl.map_order_event(order(kind=kind))[0] for kind in ("placed", "fulfilled", "cancelled", "refunded")}
    assert paths == {DEFAULT_SENDLANE_EVENT_PATHS[f"order_{k}"]
                     for k in ("placed", "fulfilled", "cancelled", "refunded")}


def test_sendlane_contacts_land_on_the_list_with_their_fields(emulator, sendlane):
    contacts = [sl.map_contact(customer(), {"ltv_predicted": Decimal("88.10")}),
                sl.map_contact(customer(customer_id=43, email="opted.out@example.com", accepts_marketing=False))]
    sendlane.add_contacts(emulator.sendlane_list_id, contacts)
    stored = {c["email"]: c for c in emulator.contacts(list_id=emulator.sendlane_list_id)}
    assert stored[EMAIL]["email_consent"] is True
    assert stored[EMAIL]["custom_fields"] == {"ltv_total": 164.77, "ltv_predicted": 88.1}
    assert stored["opted.out@example.com"]["email_consent"] is False


def test_sendlane_unsubscribes_win_end_to_end(emulator, sendlane):
    """A contact unsubscribed at Sendlane stays unsubscribed, however the store has them."""
    emulator.configure(sendlane_unsubscribed=[EMAIL])
    unsubscribed = frozenset(row["email"].lower() for row in sendlane.iter_unsubscribed())
    assert EMAIL in unsubscribed
    sendlane.track(*sl.map_order_event(order(), unsubscribed=unsubscribed))
    sendlane.track(*sl.map_customer_added(customer(), unsubscribed=unsubscribed))
    sendlane.add_contacts(emulator.sendlane_list_id, [sl.map_contact(customer(), unsubscribed=unsubscribed)])
    assert emulator.summary()["consent_reversals"] == []


def test_sendlane_unsubscribed_pages_are_all_read(emulator, sendlane):
    emulator.configure(sendlane_unsubscribed=[f"u{i}@example.com" for i in range(7)])
    emails = [row["email"] for row in sendlane.iter_unsubscribed(page_size=3)]
    assert sorted(emails) == sorted(f"u{i}@example.com" for i in range(7))
    assert len(emulator.requests(vendor="sendlane", endpoint="/contacts/unsubscribed")) == 3


# ------------------------------------------------------------------ Sailthru
def test_sailthru_purchase_is_recorded_with_the_order_total(emulator, sailthru):
    endpoint, payload = st.map_purchase(order())
    sailthru.post(endpoint, payload)
    [purchase] = emulator.purchases(extid="1001")
    assert purchase["price"] == 6576  # items + discount + tax + shipping, in cents: the order total
    assert purchase["message_id"] == "23423.231" and purchase["email"] == EMAIL
    assert purchase["date"] == "2026-03-14 15:09:26 UTC"
    found = sailthru.lookup_purchase("1001")
    assert found["purchase"]["extid"] == "1001"
    assert sailthru.lookup_purchase("9999") is None


def test_sailthru_return_is_recorded_against_the_purchase(emulator, sailthru):
    sailthru.post(*st.map_purchase(order()))
    endpoint, payload = st.map_return(order(kind="refunded", status="refunded"))
    sailthru.return_(payload)
    [returned] = emulator.returns()
    assert endpoint == "/return"
    assert returned["extid"] == "1001" and returned["items"] == payload["items"]


def test_sailthru_cart_then_clearing_call(emulator, sailthru):
    settings = SailthruSettings()
    sailthru.post(*st.map_incomplete_purchase(checkout(), settings))
    sailthru.post(*st.map_incomplete_purchase(replace(checkout(), completed=True, order_id=1001), settings))
    cart, cleared = sorted(emulator.purchases(email=EMAIL), key=lambda p: p["time"] + p["id"])
    assert cart["incomplete"] == 1 and cart["reminder_template"] == settings.reminder_template
    assert cleared["incomplete"] == 1 and cleared["items"] == [] and "reminder_template" not in cleared


def test_sailthru_content_is_upserted_by_url_and_sku(emulator, sailthru):
    sailthru.content(st.map_content(product())[1])
    sailthru.content(st.map_content(product(url="https://shop.example.com/p/tee-1-new", price=Decimal("17.49")))[1])
    [item] = emulator.content()  # one item: the URL change updated it via keys.sku
    assert item["url"] == "https://shop.example.com/p/tee-1-new" and item["price"] == 1749
    assert item["images"] == {"full": {"url": "https://cdn.example.com/tee-1.jpg"}}
    assert item["vars"] == {"sku": "TEE-1", "brand": "Acme"}


def test_sailthru_user_profile_by_extid_and_email_change(emulator, sailthru):
    sailthru.user(st.map_user(customer(), {"predicted_clv": Decimal("88.10")})[1])
    sailthru.user(st.map_user(customer(email="jimmy.new@example.com"))[1])
    [profile] = emulator.users()
    assert profile["keys"]["extid"] == "42" and profile["keys"]["email"] == "jimmy.new@example.com"
    assert profile["vars"]["predicted_clv"] == 88.1 and profile["vars"]["ltv_total"] == 164.77
    assert profile["optout_email"] == "none"  # Sailthru's default: storesync never sent it


def test_sailthru_opt_outs_are_never_reversed(emulator, sailthru):
    sailthru.user(st.map_user(customer(accepts_marketing=False))[1])
    sailthru.user(st.map_user(customer(accepts_marketing=True))[1])  # the store says yes again
    [profile] = emulator.users(email=EMAIL)
    assert profile["optout_email"] == "all"
    assert emulator.summary()["consent_reversals"] == []


def test_sailthru_purchase_import_job_with_mapped_purchases(emulator, sailthru):
    rows = [st.map_purchase(order(order_id=order_id, historical=True))[1] for order_id in (2001, 2002)]
    job_id = sailthru.submit_job("purchase_import", rows=rows)
    job = sailthru.wait_job(job_id, poll_interval_s=0.05, timeout_s=30)
    assert job["imported"] == 2 and job["failed"] == 0
    assert {p["extid"] for p in emulator.purchases(source="job")} == {"2001", "2002"}


def test_every_mapper_was_exercised_here():
    """A new mapper must get a contract test: this lists the ones covered above."""
    covered_sendlane = {"map_order_event", "map_customer_added", "map_product_added", "map_checkout_started",
                        "map_added_to_cart", "map_product_viewed", "map_contact"}
    covered_sailthru = {"map_purchase", "map_return", "map_incomplete_purchase", "map_content", "map_user"}
    assert {name for name in sl.__all__ if name.startswith("map_")} == covered_sendlane
    assert {name for name in st.__all__ if name.startswith("map_")} == covered_sailthru
