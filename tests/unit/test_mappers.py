"""Mappers: exact money, historical flags, consent that only moves toward opting out, and bad
events turned into PermanentError."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from storesync.core.config import DEFAULT_SENDLANE_EVENT_PATHS, SailthruSettings
from storesync.core.errors import ConfigurationError, PermanentError
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

PLACED_AT = datetime(2026, 3, 14, 15, 9, 26)  # naive: the warehouse's UTC
CREATED_AT = datetime(2026, 3, 14, 15, 0, 0)


def tee(quantity: int = 3, unit: str = "19.99", **changes) -> LineItem:
    unit_price = Decimal(unit)
    values = dict(product_id=101, sku="TEE-1", product_name="Tee", quantity=quantity, unit_price=unit_price,
                  total=unit_price * quantity, product_url="https://shop.example.com/p/tee",
                  image_url="https://cdn.example.com/tee.jpg", variant_id=1011, categories=("shirts", "sale"))
    values.update(changes)
    return LineItem(**values)


def order(**changes) -> OrderEvent:
    values = dict(
        kind="placed", order_id=1001, customer_id=42, email="jimmy@example.com", status="processing",
        currency="USD", subtotal=Decimal("59.97"), total_tax=Decimal("4.80"), total_discounts=Decimal("5.00"),
        total=Decimal("59.77"), occurred_at=PLACED_AT, created_at=CREATED_AT, line_items=(tee(),),
        discount_code="5OFF",
        billing_address=Address(first_name="Jimmy", last_name="Kim", email="jimmy@example.com", city="San Diego"),
        shipping_address=Address(first_name="Jimmy", city="San Diego"), accepts_marketing=True,
        message_id="23423.231", payment_method="Amex",
    )
    values.update(changes)
    return OrderEvent(**values)


def customer(**changes) -> CustomerEvent:
    values = dict(customer_id=42, email="jimmy@example.com", first_name="Jimmy", last_name="Kim", phone="8885552664",
                  accepts_marketing=True, created_at=CREATED_AT, updated_at=PLACED_AT,
                  address=Address(city="San Diego", country_code="US"), vars={"ltv_total": Decimal("164.77")})
    values.update(changes)
    return CustomerEvent(**values)


def product(**changes) -> ProductEvent:
    values = dict(product_id=101, sku="TEE-1", title="Tee", url="https://shop.example.com/p/tee",
                  image_url="https://cdn.example.com/tee.jpg", price=Decimal("19.99"), updated_at=PLACED_AT,
                  description="A tee.", compare_at_price=Decimal("24.99"), brand="Acme", categories=("shirts",),
                  variants=(ProductVariant(1011, "TEE-1-S", "Tee S", Decimal("19.99")),), inventory=7)
    values.update(changes)
    return ProductEvent(**values)


def checkout(**changes) -> CheckoutEvent:
    values = dict(checkout_id=9876, customer_id=42, email="jimmy@example.com", status="open",
                  checkout_url="https://shop.example.com/checkout/9876", currency="USD",
                  subtotal=Decimal("39.98"), total_tax=Decimal("0"), total=Decimal("39.98"),
                  created_at=CREATED_AT, updated_at=PLACED_AT, line_items=(tee(2),), message_id="23423.231")
    values.update(changes)
    return CheckoutEvent(**values)


# ------------------------------------------------------------------ money
def test_cents_never_go_through_float():
    assert int(19.99 * 100) == 1998  # what a float does to money
    assert st.cents(Decimal("19.99")) == 1999
    assert st.cents(Decimal("19.99") * 3) == 5997
    assert st.cents(Decimal("0.1") + Decimal("0.2")) == 30
    assert st.cents(0.1 + 0.2) == 30  # a float from a driver is read by its repr, not multiplied
    assert st.cents(Decimal("1.005")) == 101  # half-up; round(1.005 * 100) gives 100
    assert st.cents(Decimal("0.004")) == 0


def test_sendlane_money_is_two_decimals_exactly_in_json():
    assert json.dumps(sl.money(Decimal("19.99") * 3)) == "59.97"
    assert json.dumps(sl.money(Decimal("0.1") + Decimal("0.2"))) == "0.3"
    assert json.dumps(sl.money(Decimal("19.995"))) == "20.0"
    assert json.dumps(sl.money(Decimal("1234567890.12"))) == "1234567890.12"
    with pytest.raises(PermanentError):
        sl.money(Decimal("1e13"))


def test_purchase_items_are_one_unit_in_cents():
    _, payload = st.map_purchase(order())
    assert payload["items"] == [{
        "qty": 3, "title": "Tee", "price": 1999, "id": "TEE-1", "url": "https://shop.example.com/p/tee",
        "tags": ["shirts", "sale"], "vars": {"image_url": "https://cdn.example.com/tee.jpg"},
    }]


# ------------------------------------------------------------------ Sailthru purchase
def test_purchase_adjustments_add_up_to_the_total():
    endpoint, payload = st.map_purchase(order())
    assert endpoint == "/purchase"
    assert payload["adjustments"] == [{"title": "5OFF", "price": -500}, {"title": "Tax", "price": 480}]
    items = sum(i["qty"] * i["price"] for i in payload["items"])
    assert items + sum(a["price"] for a in payload["adjustments"]) == 5977
    assert payload["tenders"] == [{"title": "Amex", "price": 5977}]


def test_purchase_discount_is_negative_even_when_stored_negative():
    _, payload = st.map_purchase(order(total_discounts=Decimal("-5.00"), discount_code=None))
    assert {"title": "Discount", "price": -500} in payload["adjustments"]


def test_purchase_difference_to_total_becomes_shipping_or_other():
    _, payload = st.map_purchase(order(total=Decimal("65.76")))  # 5.99 shipping on top
    assert payload["adjustments"][-1] == {"title": "Shipping and fees", "price": 599}
    _, payload = st.map_purchase(order(total=Decimal("58.77")))
    assert payload["adjustments"][-1] == {"title": "Other discounts", "price": -100}


def test_purchase_identity_date_and_attribution():
    _, payload = st.map_purchase(order(occurred_at=datetime(2026, 3, 14, 17, 9, 26, tzinfo=timezone(timedelta(hours=2)))))
    assert payload["purchase_keys"] == {"extid": "1001"}
    assert payload["date"] == "2026-03-14 15:09:26 UTC"
    assert payload["message_id"] == "23423.231"
    assert payload["email"] == "jimmy@example.com"
    _, payload = st.map_purchase(order(message_id=None, payment_method=None, total_discounts=Decimal(0),
                                       total_tax=Decimal(0), total=Decimal("59.97")))
    assert not {"message_id", "tenders", "adjustments"} & set(payload)


@pytest.mark.parametrize(("changes", "complaint"), [
    ({"email": None}, "no email"),
    ({"line_items": ()}, "no line items"),
    ({"line_items": (tee(product_url=None),)}, "no product URL"),
])
def test_bad_orders_are_permanent_errors_for_sailthru(changes, complaint):
    with pytest.raises(PermanentError, match=complaint):
        st.map_purchase(order(**changes))


def test_return_sends_every_line_keyed_by_extid():
    endpoint, payload = st.map_return(order(kind="refunded", status="refunded", seq=2))
    assert endpoint == "/return"
    assert payload == {"email": "jimmy@example.com", "purchase_keys": {"extid": "1001"},
                       "items": [{"qty": 3, "price": 1999, "id": "TEE-1", "url": "https://shop.example.com/p/tee"}]}
    with pytest.raises(PermanentError):
        st.map_return(order(kind="cancelled", email=None))


# ------------------------------------------------------------------ Sailthru cart, content, user
def test_open_checkout_is_an_incomplete_purchase_with_the_reminder():
    settings = SailthruSettings(reminder_template="abandoned-cart", reminder_time="+3 hours")
    endpoint, payload = st.map_incomplete_purchase(checkout(), settings)
    assert endpoint == "/purchase"
    assert payload["incomplete"] == 1
    assert payload["reminder_template"] == "abandoned-cart" and payload["reminder_time"] == "+3 hours"
    assert [(i["qty"], i["price"]) for i in payload["items"]] == [(2, 1999)]
    assert payload["message_id"] == "23423.231"


def test_completed_checkout_clears_the_cart_without_a_reminder():
    _, payload = st.map_incomplete_purchase(checkout(completed=True, order_id=1001), SailthruSettings())
    assert payload == {"email": "jimmy@example.com", "items": [], "incomplete": 1}


def test_reminder_can_be_switched_off_and_bad_carts_are_rejected():
    _, payload = st.map_incomplete_purchase(checkout(), SailthruSettings(reminder_template=""))
    assert "reminder_template" not in payload and "reminder_time" not in payload
    with pytest.raises(PermanentError):
        st.map_incomplete_purchase(checkout(email=None), SailthruSettings())
    with pytest.raises(PermanentError):
        st.map_incomplete_purchase(checkout(line_items=()), SailthruSettings())


def test_content_from_a_product():
    endpoint, payload = st.map_content(product())
    assert endpoint == "/content"
    assert payload == {
        "url": "https://shop.example.com/p/tee", "title": "Tee", "price": 1999, "tags": ["shirts"],
        "keys": {"sku": "TEE-1"}, "vars": {"sku": "TEE-1", "brand": "Acme"},
        "images": {"full": {"url": "https://cdn.example.com/tee.jpg"}}, "inventory": 7, "description": "A tee.",
    }
    with pytest.raises(PermanentError, match="no URL"):
        st.map_content(product(url=None))


def test_user_is_keyed_by_extid_with_email_and_vars():
    endpoint, payload = st.map_user(customer(), {"predicted_clv": Decimal("88.10")})
    assert endpoint == "/user"
    assert payload["id"] == "42" and payload["key"] == "extid"
    assert payload["keys"] == {"email": "jimmy@example.com"} and payload["keysconflict"] == "merge"
    assert payload["vars"] == {"first_name": "Jimmy", "last_name": "Kim", "phone": "8885552664",
                               "ltv_total": 164.77, "predicted_clv": 88.1}


@pytest.mark.parametrize("accepts", [True, False])
def test_user_opt_out_is_all_or_omitted_never_none(accepts):
    _, payload = st.map_user(customer(accepts_marketing=accepts))
    assert payload.get("optout_email") in (None, "all")
    assert ("optout_email" in payload) is (not accepts)


def test_user_var_names_must_fit_32_characters():
    with pytest.raises(PermanentError, match="32"):
        st.map_user(customer(), {"a_very_long_lifetime_value_variable_name": 1})
    _, payload = st.map_user(customer(), {"x" * 32: 1})
    assert "x" * 32 in payload["vars"]


# ------------------------------------------------------------------ Sendlane orders
def test_live_order_has_date_created_but_no_time_or_initial_sync():
    path, payload = sl.map_order_event(order())
    assert path == "/tracking/order-placed"
    assert payload["date_created"] == "2026-03-14T15:00:00+00:00"
    assert "time" not in payload and "initial_sync" not in payload


def test_historical_order_carries_its_real_time_and_initial_sync():
    _, payload = sl.map_order_event(order(historical=True))
    assert payload["initial_sync"] is True
    assert payload["time"] == int(PLACED_AT.replace(tzinfo=UTC).timestamp())
    assert payload["date_created"] == "2026-03-14T15:00:00+00:00"


def test_order_payload_shape():
    _, payload = sl.map_order_event(order())
    assert payload == {
        "order_id": 1001, "email": "jimmy@example.com", "status": "processing",
        "subtotal": 59.97, "total_tax": 4.8, "total": 59.77, "total_items": 3, "currency": "USD",
        "discounts": {"discount_code": "5OFF", "discount_value": 5.0},
        "line_items": [{"product_id": 101, "sku": "TEE-1", "product_name": "Tee", "quantity": 3,
                        "item_price": 19.99, "total": 59.97, "variant_id": 1011,
                        "product_url": "https://shop.example.com/p/tee", "image_url": "https://cdn.example.com/tee.jpg"}],
        "billing_address": {"first_name": "Jimmy", "last_name": "Kim", "email": "jimmy@example.com",
                            "city": "San Diego"},
        "shipping_address": {"first_name": "Jimmy", "city": "San Diego"},
        "customer_id": 42, "accepts_marketing": True, "date_created": "2026-03-14T15:00:00+00:00",
    }


@pytest.mark.parametrize("kind", ["fulfilled", "cancelled", "refunded"])
def test_status_change_events_use_the_configured_path_and_their_status(kind):
    paths = {**DEFAULT_SENDLANE_EVENT_PATHS, f"order_{kind}": f"/tracking/custom-{kind}"}
    path, payload = sl.map_order_event(order(kind=kind, status="completed", seq=2), paths)
    assert path == f"/tracking/custom-{kind}"
    assert payload["status"] == kind


def test_missing_path_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        sl.map_order_event(order(kind="refunded"), {"order_placed": "/tracking/order-placed"})


def test_vendor_unsubscribes_win_over_the_store():
    unsubscribed = frozenset({"jimmy@example.com"})
    _, payload = sl.map_order_event(order(email="Jimmy@Example.com"), unsubscribed=unsubscribed)
    assert payload["accepts_marketing"] is False
    _, payload = sl.map_customer_added(customer(), unsubscribed=unsubscribed)
    assert payload["accepts_marketing"] is False
    assert sl.map_contact(customer(), unsubscribed=unsubscribed)["email_consent"] is False
    # And nothing turns a store-side opt-out into consent.
    assert sl.map_contact(customer(accepts_marketing=False))["email_consent"] is False


def test_order_discount_value_is_positive_whatever_the_stores_sign():
    _, payload = sl.map_order_event(order(total_discounts=Decimal("-5.00"), discount_code=None))
    assert payload["discounts"] == {"discount_value": 5.0}


def test_order_without_discount_has_no_discounts():
    _, payload = sl.map_order_event(order(discount_code=None, total_discounts=Decimal("0.00")))
    assert "discounts" not in payload


# ------------------------------------------------------------------ Sendlane customers, products, carts
def test_customer_added_puts_the_person_in_the_billing_address():
    path, payload = sl.map_customer_added(customer(historical=True))
    assert path == "/tracking/customer-added"
    assert payload["billing_address"] == {"first_name": "Jimmy", "last_name": "Kim", "email": "jimmy@example.com",
                                          "city": "San Diego", "country_code": "US", "phone": "8885552664"}
    assert payload["time"] == int(CREATED_AT.replace(tzinfo=UTC).timestamp()) and payload["initial_sync"] is True
    assert payload["date_created"] == "2026-03-14T15:00:00+00:00"


def test_product_added():
    path, payload = sl.map_product_added(product())
    assert path == "/tracking/product-added"
    assert payload["product_url"] == "https://shop.example.com/p/tee" and payload["item_price"] == 19.99
    assert payload["compare_at_price"] == 24.99 and payload["categories"] == ["shirts"]
    assert payload["variants"] == [{"variant_id": 1011, "product_id": 101, "sku": "TEE-1-S",
                                    "product_name": "Tee S", "item_price": 19.99}]
    assert "time" not in payload
    assert sl.map_product_added(product(historical=True))[1]["initial_sync"] is True


@pytest.mark.parametrize("missing", ["url", "image_url"])
def test_product_without_required_urls_is_permanent(missing):
    with pytest.raises(PermanentError, match=missing):
        sl.map_product_added(product(**{missing: None}))


def test_checkout_started_and_added_to_cart():
    path, payload = sl.map_checkout_started(checkout())
    assert path == "/tracking/checkout-started"
    assert payload["status"] == "pending" and payload["checkout_id"] == 9876 and payload["total"] == 39.98
    assert payload["total_items"] == 2 and "time" not in payload
    path, payload = sl.map_added_to_cart(checkout())
    assert path == "/tracking/added-to-cart" and payload["cart_id"] == 9876
    with pytest.raises(PermanentError):
        sl.map_checkout_started(checkout(email=None))


def test_product_viewed():
    assert sl.map_product_viewed("jimmy@example.com", 101, variant_id=1011) == (
        "/tracking/product-viewed", {"product_id": 101, "email": "jimmy@example.com", "variant_id": 1011})


def test_contact_with_consent_and_custom_fields():
    contact = sl.map_contact(customer(), {"ltv_predicted": Decimal("88.10"), "last_order": datetime(2026, 3, 1),
                                          "empty": None})
    assert contact == {
        "email": "jimmy@example.com", "first_name": "Jimmy", "last_name": "Kim", "phone": "8885552664",
        "email_consent": True,
        "custom_fields": [{"key": "ltv_total", "value": 164.77}, {"key": "ltv_predicted", "value": 88.1},
                          {"key": "last_order", "value": "2026-03-01T00:00:00+00:00"}],
    }
    with pytest.raises(PermanentError):
        sl.map_contact(customer(email=None))


# ------------------------------------------------------------------ all of them
def every_mapping():
    settings = SailthruSettings()
    return [
        sl.map_order_event(order()), sl.map_order_event(order(kind="refunded", historical=True)),
        sl.map_customer_added(customer()), sl.map_product_added(product()), sl.map_checkout_started(checkout()),
        sl.map_added_to_cart(checkout()), sl.map_product_viewed("a@example.com", 1),
        ("/lists/1/contacts", {"contacts": [sl.map_contact(customer())]}),
        st.map_purchase(order()), st.map_return(order(kind="cancelled")),
        st.map_incomplete_purchase(checkout(), settings), st.map_incomplete_purchase(replace(checkout(), completed=True),
                                                                                     settings),
        st.map_content(product()), st.map_user(customer()),
    ]


def test_every_payload_is_plain_json():
    for _, payload in every_mapping():
        assert json.loads(json.dumps(payload, allow_nan=False)) == payload


# ------------------------------------------------------------------ required fields, checked locally
@pytest.mark.parametrize("kind", ["cancelled", "refunded"])
def test_a_return_without_an_item_url_is_caught_before_sending(kind):
    """Sailthru requires items[].url on a return: the mapper refuses it, naming the item, so the
    target plans it as a local dead letter instead of sending what the vendor would reject."""
    with pytest.raises(PermanentError, match=r"order 1001: item TEE-1 has no url \(Sailthru /return requires items\[\]\.url\)"):
        st.map_return(order(kind=kind, status=kind, line_items=(tee(product_url=None),)))


def test_every_sailthru_endpoint_checks_its_required_fields():
    from storesync.mappers.required import check_sailthru

    check_sailthru("/purchase", {"email": "a@b.c", "items": [], "incomplete": 1}, "cart 1")  # a clearing call
    with pytest.raises(PermanentError, match="Sailthru /purchase requires items"):
        check_sailthru("/purchase", {"email": "a@b.c", "items": []}, "order 1")
    with pytest.raises(PermanentError, match="has no title"):
        check_sailthru("/purchase", {"email": "a@b.c", "items": [{"qty": 1, "price": 1, "id": "x", "url": "u"}]}, "o")
    with pytest.raises(PermanentError, match="Sailthru /content requires url"):
        check_sailthru("/content", {"url": ""}, "product 1")
    with pytest.raises(PermanentError, match="Sailthru /user requires id"):
        check_sailthru("/user", {"key": "extid"}, "customer 1")


def test_every_sendlane_event_checks_its_required_fields():
    from storesync.mappers.required import SENDLANE_REQUIRED, check_sendlane

    assert set(SENDLANE_REQUIRED) == set(DEFAULT_SENDLANE_EVENT_PATHS)  # every event has its rule
    with pytest.raises(PermanentError, match="Sendlane order_placed requires order_id"):
        sl.map_order_event(order(order_id=None))
    with pytest.raises(PermanentError, match="Sendlane checkout_started requires checkout_id"):
        sl.map_checkout_started(checkout(checkout_id=None))
    with pytest.raises(PermanentError, match="requires custom_event"):
        check_sendlane("custom_event", {"email": "a@b.c"}, "event")


def test_mapped_payloads_pass_their_own_checks():
    """What the mappers make from good events carries every required field."""
    from storesync.mappers.required import check_sailthru, check_sendlane

    for kind in ("placed", "fulfilled", "cancelled", "refunded"):
        check_sendlane(f"order_{kind}", sl.map_order_event(order(kind=kind))[1], "order")
    for endpoint, payload in (st.map_purchase(order()), st.map_return(order(kind="cancelled")),
                              st.map_content(product()), st.map_user(customer()),
                              st.map_incomplete_purchase(checkout(), SailthruSettings())):
        check_sailthru(endpoint, payload, "x")
