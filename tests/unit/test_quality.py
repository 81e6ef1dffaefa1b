"""The data-quality gate: a corpus of malformed rows, one or more per check, next to good rows.

Each entity's corpus is validated once (one GX run per entity, shared by the module). For every
bad row we assert it is quarantined with exactly the expected checks as reasons; for the batch, that
no row is lost (rows_in = passed + quarantined) and that every good row passes untouched. A meta
test asserts the corpus covers every check of every suite in the registry.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from decimal import Decimal as D

import numpy as np
import pandas as pd
import pytest

from storesync.core.errors import StoresyncError
from storesync.quality import QualityGateError, ValidationIncompleteError
from storesync.quality.checks import REGISTRY, spec_for

NOW = dt.datetime(2025, 6, 1, 12, 0, 0)
PAST = dt.datetime(2025, 5, 1, 8, 0, 0)
LATER = dt.datetime(2025, 5, 2, 9, 30, 0)
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
CASE = "_case"  # an extra column naming each corpus row; extra columns pass through the gate


# --------------------------------------------------------------------------------------------
# Good rows
# --------------------------------------------------------------------------------------------


def order(i, **kw):
    row = dict(
        order_id=i, customer_id=1000 + i, email=f"buyer{i}@example.com", status="completed", currency="USD",
        subtotal=D("20.00"), total_tax=D("1.60"), total_discounts=D("2.00"), discount_code="SAVE2",
        total=D("19.60"), payment_method="Visa", sailthru_bid=None, created_at=PAST, updated_at=LATER,
        lines_subtotal=D("20.00"), line_count=2,
    )
    row.update(kw)
    return row


def line(i, **kw):
    row = dict(
        line_id=i, order_id=1, product_id=7, variant_id=None, sku="SKU-7", product_name="Mug", quantity=2,
        unit_price=D("9.99"), line_total=D("19.98"), order_exists=1, product_exists=1,
    )
    row.update(kw)
    return row


def product(i, **kw):
    row = dict(
        product_id=i, sku=f"SKU-{i}", title=f"Product {i}", description=None, brand="Acme", category="Home",
        url=f"https://shop.example.com/products/{i}", image_url=f"https://cdn.example.com/img/{i}.jpg",
        price=D("10.00"), compare_at_price=None, inventory=5, created_at=PAST, updated_at=LATER,
    )
    row.update(kw)
    return row


def customer(i, **kw):
    row = dict(
        customer_id=i, email=f"person{i}@example.org", first_name="Ada", last_name="Lovelace", phone=None,
        company=None, address_1=None, city="London", state=None, state_code=None, country="United Kingdom",
        country_code="GB", postal_code=None, accepts_marketing=True, created_at=PAST, updated_at=LATER,
    )
    row.update(kw)
    return row


def checkout(i, **kw):
    row = dict(
        checkout_id=i, customer_id=2000 + i, email=f"cart{i}@example.net", status="open",
        checkout_url=f"https://shop.example.com/checkout/{i}", currency="EUR", subtotal=D("20.00"),
        total_tax=D("1.60"), total=D("21.60"), order_id=None, sailthru_bid=None, created_at=PAST,
        updated_at=LATER, lines_subtotal=D("20.00"),
    )
    row.update(kw)
    return row


def site_event(i, **kw):
    row = dict(
        event_id=f"evt-{i}", event_name="added_to_cart", occurred_at=PAST, anonymous_id=f"anon-{i}", user_id=None,
        email=f"visitor{i}@example.com", product_id="7", variant_id=None, sku="SKU-7", product_name="Mug",
        quantity=1, price=D("9.99"), currency="USD", product_url=None, image_url=None, cart_id="c-1",
        checkout_url=None, cart_total=D("9.99"),
    )
    row.update(kw)
    return row


BUILDERS = {
    "orders": order, "order_lines": line, "products": product, "customers": customer, "checkouts": checkout,
    "site_events": site_event,
}


def future(**delta):
    """Both timestamps after ``NOW``: the row fails both "not in the future" checks."""
    at = NOW + dt.timedelta(**delta)
    return {"created_at": at, "updated_at": at}


BACKWARDS = {"created_at": LATER, "updated_at": PAST}  # updated before created
BOTH_FUTURE = {"created_at_not_in_future", "updated_at_not_in_future"}

# Rows that must pass, boundary cases included: (case, overrides).
GOOD = {
    "orders": [
        ("plain", {}),
        ("total_one_cent_high", {"total": D("19.61")}),
        ("total_one_cent_low", {"total": D("19.59")}),
        ("no_lines_counts_as_zero",
         {"lines_subtotal": None, "total_discounts": D("0.00"), "total": D("1.60"), "line_count": 0}),
        ("float_money",
         {"subtotal": 20.0, "total_tax": 1.6, "total_discounts": 2.0, "total": 19.6, "lines_subtotal": 20.0}),
        ("sqlite_float_sum", {"lines_subtotal": 19.999999999999996}),
        ("updated_exactly_now", {"updated_at": NOW}),
        ("same_created_updated", {"updated_at": PAST}),
        ("refunded_gbp", {"status": "refunded", "currency": "GBP"}),
        ("guest_order", {"customer_id": None}),
        ("plus_address", {"email": "first.last+tag@mail.example.co.uk"}),
        ("largest_amount", {"subtotal": D("9999999.99")}),
        ("zero_order", {"subtotal": D("0"), "total_tax": D("0"), "total_discounts": D("0"), "total": D("0"),
                        "lines_subtotal": D("0.00")}),
    ],
    "order_lines": [
        ("plain", {}),
        ("one_cent_rounding", {"line_total": D("19.97")}),
        ("float_line", {"quantity": 3, "unit_price": 0.1, "line_total": 0.3}),
        ("bool_flags", {"order_exists": True, "product_exists": True}),
    ],
    "products": [
        ("plain", {}),
        ("http_with_port_and_query", {"url": "http://shop.example.com:8080/p?id=3#top"}),
        ("compare_at_price", {"compare_at_price": D("12.00")}),
        ("free", {"price": D("0.00")}),
        ("localhost", {"image_url": "http://localhost/img.png"}),
    ],
    "customers": [
        ("plain", {}),
        ("no_marketing", {"accepts_marketing": False}),
        ("aware_dates", {"created_at": pd.Timestamp("2025-05-01T10:00:00+02:00"),
                         "updated_at": pd.Timestamp("2025-05-01T08:30:00Z")}),
    ],
    "checkouts": [
        ("plain", {}),
        ("guest_without_email", {"customer_id": None, "email": None}),
        ("no_checkout_url", {"checkout_url": None}),
        ("converted", {"status": "completed", "order_id": 55}),
    ],
    "site_events": [
        ("plain", {}),
        ("viewed_without_cart", {"event_name": "product_viewed", "cart_id": None, "quantity": None,
                                 "price": None, "cart_total": None}),
        ("anonymous", {"email": None}),
        ("iso_text_time", {"occurred_at": "2025-05-01T08:00:00.000Z"}),
        ("free_sample", {"price": D("0.00"), "cart_total": D("0.00")}),
    ],
}

# Malformed rows: (case, overrides, the exact set of checks it must fail). Ids are given per case.
BAD = {
    "orders": [
        ("missing_id", {"order_id": None}, {"order_id_present"}),
        ("duplicate_a", {"order_id": 900}, {"order_id_unique"}),
        ("duplicate_b", {"order_id": 900, "email": "other@example.com"}, {"order_id_unique"}),
        ("missing_email", {"email": None}, {"email_present"}),
        ("blank_email", {"email": "   "}, {"email_present"}),
        ("email_no_at", {"email": "buyer.example.com"}, {"email_well_formed"}),
        ("email_no_tld", {"email": "buyer@example"}, {"email_well_formed"}),
        ("email_double_at", {"email": "buyer@@example.com"}, {"email_well_formed"}),
        ("email_space", {"email": "bu yer@example.com"}, {"email_well_formed"}),
        ("email_trailing_newline", {"email": "buyer@example.com\n"}, {"email_well_formed"}),
        ("email_leading_dot", {"email": ".buyer@example.com"}, {"email_well_formed"}),
        ("email_at_word", {"email": "buyer at example.com"}, {"email_well_formed"}),
        ("missing_status", {"status": None}, {"status_present"}),
        ("unknown_status", {"status": "shipped"}, {"status_known"}),
        ("status_wrong_case", {"status": "Completed"}, {"status_known"}),
        ("missing_currency", {"currency": None}, {"currency_present"}),
        ("currency_lower", {"currency": "usd"}, {"currency_known"}),
        ("currency_unknown", {"currency": "XXQ"}, {"currency_known"}),
        ("currency_no_currency", {"currency": "XXX"}, {"currency_known"}),
        ("missing_subtotal", {"subtotal": None}, {"subtotal_present"}),
        ("missing_tax", {"total_tax": None}, {"total_tax_present"}),
        ("missing_discounts", {"total_discounts": None}, {"total_discounts_present"}),
        ("missing_total", {"total": None}, {"total_present"}),
        ("subtotal_not_a_number", {"subtotal": "abc"}, {"subtotal_present", "subtotal_fits_cents"}),
        ("negative_subtotal", {"subtotal": D("-5.00")}, {"subtotal_non_negative"}),
        ("negative_tax", {"total_tax": D("-1.00"), "total": D("17.00")}, {"total_tax_non_negative"}),
        ("negative_discounts", {"total_discounts": D("-1.00"), "total": D("22.60")},
         {"total_discounts_non_negative"}),
        ("negative_total",
         {"lines_subtotal": D("0"), "total_tax": D("0"), "total_discounts": D("1.00"), "total": D("-1.00")},
         {"total_non_negative"}),
        ("negative_lines_subtotal",
         {"lines_subtotal": D("-1.00"), "total_tax": D("5.00"), "total_discounts": D("0"),
          "total": D("4.00")},
         {"lines_subtotal_non_negative"}),
        ("total_fraction_of_cent", {"total": D("19.605")}, {"total_fits_cents"}),
        ("total_float_fraction_of_cent", {"total": 19.605}, {"total_fits_cents"}),
        ("tax_hidden_fraction", {"total_tax": D("1.600000000000000000001")}, {"total_tax_fits_cents"}),
        ("discounts_fraction", {"total_discounts": D("2.001")}, {"total_discounts_fits_cents"}),
        ("subtotal_too_large", {"subtotal": D("10000000.00")}, {"subtotal_fits_cents"}),
        ("total_two_cents_off", {"total": D("19.62")}, {"order_total_matches"}),
        ("total_ignores_discount", {"total": D("21.60")}, {"order_total_matches"}),
        ("no_lines_but_total", {"lines_subtotal": None, "line_count": 0}, {"order_total_matches"}),
        ("missing_created", {"created_at": None}, {"created_at_present"}),
        ("missing_updated", {"updated_at": None}, {"updated_at_present"}),
        ("created_not_a_date", {"created_at": "yesterday"}, {"created_at_present"}),
        ("created_in_future", future(hours=1), BOTH_FUTURE),
        ("updated_in_future", {"updated_at": NOW + dt.timedelta(seconds=1)}, {"updated_at_not_in_future"}),
        ("year_9999", {"updated_at": dt.datetime(9999, 1, 1)}, {"updated_at_not_in_future"}),
        ("updated_before_created", BACKWARDS, {"updated_at_not_before_created_at"}),
        ("many_problems", {"email": "nope", "status": "lost", "total": D("99.99")},
         {"email_well_formed", "status_known", "order_total_matches"}),
    ],
    "order_lines": [
        ("missing_id", {"line_id": None}, {"line_id_present"}),
        ("duplicate_a", {"line_id": 900}, {"line_id_unique"}),
        ("duplicate_b", {"line_id": 900}, {"line_id_unique"}),
        ("missing_order_id", {"order_id": None, "order_exists": 0}, {"order_id_present", "order_exists"}),
        ("order_missing", {"order_id": 404, "order_exists": 0}, {"order_exists"}),
        ("product_missing", {"product_id": 404, "product_exists": 0}, {"product_exists"}),
        ("product_flag_null", {"product_exists": None}, {"product_exists"}),
        ("product_flag_false", {"product_exists": False}, {"product_exists"}),
        ("missing_quantity", {"quantity": None}, {"quantity_present"}),
        ("zero_quantity", {"quantity": 0, "line_total": D("0.00")}, {"quantity_at_least_one"}),
        ("negative_quantity", {"quantity": -1, "line_total": D("9.99")},
         {"quantity_at_least_one", "line_total_matches"}),
        ("missing_unit_price", {"unit_price": None}, {"unit_price_present"}),
        ("missing_line_total", {"line_total": None}, {"line_total_present"}),
        ("negative_unit_price", {"unit_price": D("-9.99"), "line_total": D("-19.98")},
         {"unit_price_non_negative", "line_total_non_negative"}),
        ("negative_line_total", {"line_total": D("-19.98")},
         {"line_total_non_negative", "line_total_matches"}),
        ("unit_fraction_of_cent", {"unit_price": D("9.995"), "line_total": D("19.99")},
         {"unit_price_fits_cents"}),
        ("line_total_fraction", {"line_total": D("19.985")}, {"line_total_fits_cents"}),
        ("unit_too_large", {"quantity": 1, "unit_price": D("10000000.00"), "line_total": D("10000000.00")},
         {"unit_price_fits_cents", "line_total_fits_cents"}),
        ("line_total_two_cents_off", {"line_total": D("19.96")}, {"line_total_matches"}),
        ("line_total_float_off", {"quantity": 3, "unit_price": 0.1, "line_total": 0.32},
         {"line_total_matches"}),
    ],
    "products": [
        ("missing_id", {"product_id": None}, {"product_id_present"}),
        ("duplicate_a", {"product_id": 900}, {"product_id_unique"}),
        ("duplicate_b", {"product_id": 900}, {"product_id_unique"}),
        ("missing_sku", {"sku": None}, {"sku_present"}),
        ("blank_sku", {"sku": ""}, {"sku_present"}),
        ("missing_url", {"url": None}, {"url_present"}),
        ("ftp_url", {"url": "ftp://shop.example.com/p/1"}, {"url_is_http"}),
        ("relative_url", {"url": "/products/1"}, {"url_is_http"}),
        ("url_with_space", {"url": "https://shop.example.com/my product"}, {"url_is_http"}),
        ("javascript_url", {"url": "javascript:alert(1)"}, {"url_is_http"}),
        ("missing_image", {"image_url": None}, {"image_url_present"}),
        ("data_image", {"image_url": "data:image/png;base64,AAAA"}, {"image_url_is_http"}),
        ("scheme_only_image", {"image_url": "https://"}, {"image_url_is_http"}),
        ("missing_price", {"price": None}, {"price_present"}),
        ("negative_price", {"price": D("-0.01")}, {"price_non_negative"}),
        ("price_fraction", {"price": D("10.001")}, {"price_fits_cents"}),
        ("price_too_large", {"price": D("10000000.00")}, {"price_fits_cents"}),
        ("negative_compare_at", {"compare_at_price": D("-1.00")}, {"compare_at_price_non_negative"}),
        ("compare_at_fraction", {"compare_at_price": 12.345}, {"compare_at_price_fits_cents"}),
        ("missing_created", {"created_at": None}, {"created_at_present"}),
        ("missing_updated", {"updated_at": None}, {"updated_at_present"}),
        ("created_in_future", future(days=1), BOTH_FUTURE),
        ("updated_before_created", BACKWARDS, {"updated_at_not_before_created_at"}),
    ],
    "customers": [
        ("missing_id", {"customer_id": None}, {"customer_id_present"}),
        ("duplicate_a", {"customer_id": 900}, {"customer_id_unique"}),
        ("duplicate_b", {"customer_id": 900}, {"customer_id_unique"}),
        ("missing_email", {"email": None}, {"email_present"}),
        ("bad_email", {"email": "person at example.org"}, {"email_well_formed"}),
        ("email_double_dot", {"email": "person..x@example.org"}, {"email_well_formed"}),
        ("missing_created", {"created_at": None}, {"created_at_present"}),
        ("missing_updated", {"updated_at": None}, {"updated_at_present"}),
        ("updated_in_future", {"updated_at": NOW + dt.timedelta(minutes=5)}, {"updated_at_not_in_future"}),
        ("created_in_future", future(days=400), BOTH_FUTURE),
        ("updated_before_created", BACKWARDS, {"updated_at_not_before_created_at"}),
    ],
    "checkouts": [
        ("missing_id", {"checkout_id": None}, {"checkout_id_present"}),
        ("duplicate_a", {"checkout_id": 900}, {"checkout_id_unique"}),
        ("duplicate_b", {"checkout_id": 900}, {"checkout_id_unique"}),
        ("customer_without_email", {"email": None}, {"email_present_when_customer"}),
        ("customer_blank_email", {"email": ""}, {"email_present_when_customer"}),
        ("guest_bad_email", {"customer_id": None, "email": "guest@"}, {"email_well_formed"}),
        ("bad_checkout_url", {"checkout_url": "shop.example.com/checkout/1"}, {"checkout_url_is_http"}),
        ("missing_currency", {"currency": None}, {"currency_present"}),
        ("unknown_currency", {"currency": "EURO"}, {"currency_known"}),
        ("missing_subtotal", {"subtotal": None}, {"subtotal_present"}),
        ("missing_tax", {"total_tax": None}, {"total_tax_present"}),
        ("missing_total", {"total": None}, {"total_present"}),
        ("negative_subtotal", {"subtotal": D("-20.00")}, {"subtotal_non_negative"}),
        ("negative_tax", {"total_tax": D("-1.60")}, {"total_tax_non_negative"}),
        ("negative_total", {"total": D("-21.60")}, {"total_non_negative"}),
        ("negative_lines_subtotal", {"lines_subtotal": D("-20.00")}, {"lines_subtotal_non_negative"}),
        ("subtotal_fraction", {"subtotal": D("20.005")}, {"subtotal_fits_cents"}),
        ("tax_fraction", {"total_tax": 1.605}, {"total_tax_fits_cents"}),
        ("total_too_large", {"total": D("12345678.90")}, {"total_fits_cents"}),
        ("missing_created", {"created_at": None}, {"created_at_present"}),
        ("missing_updated", {"updated_at": None}, {"updated_at_present"}),
        ("created_in_future", future(days=3), BOTH_FUTURE),
        ("updated_before_created", BACKWARDS, {"updated_at_not_before_created_at"}),
    ],
    "site_events": [
        ("missing_id", {"event_id": None}, {"event_id_present"}),
        ("duplicate_a", {"event_id": 900}, {"event_id_unique"}),
        ("duplicate_b", {"event_id": 900}, {"event_id_unique"}),
        ("missing_name", {"event_name": None}, {"event_name_present"}),
        ("missing_time", {"occurred_at": None}, {"occurred_at_present"}),
        ("time_in_future", {"occurred_at": NOW + dt.timedelta(hours=2)}, {"occurred_at_not_in_future"}),
        ("bad_email", {"email": "visitor@"}, {"email_well_formed"}),
        ("missing_product", {"product_id": None}, {"product_id_present"}),
        ("added_without_cart", {"cart_id": None}, {"cart_present_when_added"}),
        ("zero_quantity", {"quantity": 0}, {"quantity_at_least_one"}),
        ("negative_price", {"price": D("-1.00")}, {"price_non_negative"}),
        ("price_fraction", {"price": D("9.999")}, {"price_fits_cents"}),
        ("negative_cart_total", {"cart_total": D("-9.99")}, {"cart_total_non_negative"}),
        ("cart_total_fraction", {"cart_total": 9.991}, {"cart_total_fits_cents"}),
    ],
}

BAD_CASES = [(entity, case, expected) for entity, cases in BAD.items() for case, _, expected in cases]


def corpus(entity: str) -> pd.DataFrame:
    build = BUILDERS[entity]
    id_column = spec_for(entity).id_column
    rows, next_id = [], 1
    for case, overrides in GOOD[entity]:
        rows.append({**build(next_id, **overrides), CASE: f"good:{case}"})
        next_id += 1
    for case, overrides, _ in BAD[entity]:
        row = build(next_id)
        row.update(overrides)
        rows.append({**row, CASE: f"bad:{case}"})
        next_id += 1
    frame = pd.DataFrame(rows)
    assert frame[id_column].notna().sum() >= len(rows) - 1
    return frame


@pytest.fixture(scope="module")
def outcomes():
    from storesync.quality import validate_batch

    results = {}
    for entity in REGISTRY:
        frame = corpus(entity)
        outcome = validate_batch(entity, frame, run_id="run-1", batch_id=f"{entity}-0", now=NOW)
        results[entity] = frame, outcome
    return results


def by_case(outcome):
    return {q.row[CASE]: q for q in outcome.quarantined}


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def test_corpus_covers_every_check_of_every_suite():
    for entity, spec in REGISTRY.items():
        covered = set().union(*(expected for _, _, expected in BAD[entity]))
        missing = {check.name for check in spec.checks} - covered
        assert not missing, f"{entity}: no malformed row exercises {sorted(missing)}"
        unknown = covered - {check.name for check in spec.checks}
        assert not unknown, f"{entity}: corpus names checks the suite lacks: {sorted(unknown)}"


@pytest.mark.parametrize(("entity", "case", "expected"), BAD_CASES, ids=[f"{e}-{c}" for e, c, _ in BAD_CASES])
def test_malformed_row_is_quarantined_with_its_reasons(outcomes, entity, case, expected):
    _, outcome = outcomes[entity]
    quarantined = by_case(outcome)
    assert f"bad:{case}" in quarantined, f"{entity} {case} was not quarantined"
    row = quarantined[f"bad:{case}"]
    assert set(row.checks) == expected
    assert len(row.checks) == len(set(row.checks))  # quarantined once, each reason once
    for reason in row.reasons:
        name, _, detail = reason.partition(": ")
        assert name in expected and detail.strip(), reason
        assert not EMAIL_RE.search(detail), f"a reason quotes an email: {reason!r}"


@pytest.mark.parametrize("entity", list(REGISTRY))
def test_no_good_row_is_lost(outcomes, entity):
    frame, outcome = outcomes[entity]
    assert outcome.rows_in == len(frame) == outcome.rows_passed + outcome.rows_quarantined
    assert sorted(outcome.passed[CASE]) == sorted(f"good:{case}" for case, _ in GOOD[entity])
    bad_cases = sorted(f"bad:{case}" for case, _, _ in BAD[entity])
    assert sorted(q.row[CASE] for q in outcome.quarantined) == bad_cases
    # The passed rows are the caller's rows: same columns, same index, same values (Decimals kept).
    assert list(outcome.passed.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(outcome.passed, frame.loc[outcome.passed.index])
    assert outcome.share == pytest.approx(outcome.rows_quarantined / outcome.rows_in)


def test_passed_money_stays_decimal(outcomes):
    _, outcome = outcomes["orders"]
    plain = outcome.passed[outcome.passed[CASE] == "good:plain"].iloc[0]
    assert plain["total"] == D("19.60") and isinstance(plain["total"], D)


def test_quarantined_row_keeps_the_original_values(outcomes):
    _, outcome = outcomes["orders"]
    q = by_case(outcome)["bad:tax_hidden_fraction"]
    assert q.entity == "orders" and isinstance(q.entity_id, int)
    assert q.row["total_tax"] == D("1.600000000000000000001")
    assert q.row["created_at"] == PAST and q.row["sailthru_bid"] is None


def test_a_row_failing_several_checks_is_quarantined_once_with_every_reason(outcomes):
    _, outcome = outcomes["orders"]
    rows = [q for q in outcome.quarantined if q.row[CASE] == "bad:many_problems"]
    assert len(rows) == 1
    reasons = rows[0].reasons
    assert [r.split(":")[0] for r in reasons] == ["email_well_formed", "status_known", "order_total_matches"]
    assert "status 'lost' is not a known order status" in reasons[1]
    assert "total 99.99 != lines_subtotal 20.00 + total_tax 1.60 - total_discounts 2.00 = 19.60" in reasons[2]


@pytest.mark.parametrize("entity", list(REGISTRY))
def test_every_duplicate_is_quarantined(outcomes, entity):
    _, outcome = outcomes[entity]
    id_column = spec_for(entity).id_column
    dups = [q for q in outcome.quarantined if q.row[CASE].startswith("bad:duplicate_")]
    assert len(dups) == 2 and {q.entity_id for q in dups} == {900}
    assert all(f"{id_column}_unique: {id_column} 900 appears 2 times in the batch" in q.reasons for q in dups)
    assert 900 not in set(outcome.passed[id_column])


def test_missing_id_is_quarantined_without_an_id(outcomes):
    _, outcome = outcomes["orders"]
    q = by_case(outcome)["bad:missing_id"]
    assert q.entity_id is None and q.reasons == ["order_id_present: order_id is missing"]


def test_readable_details(outcomes):
    orders = by_case(outcomes["orders"][1])
    assert orders["bad:total_fraction_of_cent"].reasons == [
        "total_fits_cents: total 19.605 has more than 2 decimal places"]
    assert orders["bad:subtotal_too_large"].reasons == [
        "subtotal_fits_cents: subtotal 10000000.00 is not below 1000000000 cents"]
    assert orders["bad:subtotal_not_a_number"].reasons == [
        "subtotal_present: subtotal is not a number", "subtotal_fits_cents: subtotal 'abc' is not a number"]
    assert orders["bad:created_not_a_date"].reasons == ["created_at_present: created_at is not a date"]
    assert orders["bad:updated_in_future"].reasons == [
        "updated_at_not_in_future: updated_at 2025-06-01T12:00:01 is after now (2025-06-01T12:00:00)"]
    assert orders["bad:year_9999"].reasons[0].startswith(
        "updated_at_not_in_future: updated_at 9999-01-01T00:00:00")
    assert orders["bad:email_trailing_newline"].reasons == [
        "email_well_formed: email is not a well-formed email address"]
    lines = by_case(outcomes["order_lines"][1])
    assert lines["bad:line_total_two_cents_off"].reasons == [
        "line_total_matches: line_total 19.96 != quantity 2 x unit_price 9.99 = 19.98"]
    assert lines["bad:product_missing"].reasons == [
        "product_exists: the line's product does not exist in the warehouse"]


# --------------------------------------------------------------------------------------------
# The batch as a whole
# --------------------------------------------------------------------------------------------


def test_results_are_json_without_row_values(outcomes):
    _, outcome = outcomes["orders"]
    text = json.dumps(outcome.results, allow_nan=False)
    assert not EMAIL_RE.search(text), "GX results must not carry emails"
    assert outcome.results["suite_name"] == "storesync_orders"
    assert outcome.results["meta"]["storesync"]["rows_quarantined"] == outcome.rows_quarantined
    by_check = {r["expectation_config"]["meta"]["storesync_check"]: r for r in outcome.results["results"]}
    assert set(by_check) == {c.name for c in spec_for("orders").checks}
    unique = by_check["order_id_unique"]["result"]
    assert unique["unexpected_count"] == 2
    assert unique["unexpected_index_list"][0]["order_id"] == [900, 900]
    assert "unexpected_index_query" not in unique


def test_results_list_is_capped(monkeypatch):
    from storesync.quality import gate, validate_batch

    monkeypatch.setattr(gate, "RESULTS_INDEX_LIMIT", 3)
    frame = pd.DataFrame([order(i, email="bad") for i in range(1, 11)])
    outcome = validate_batch("orders", frame, run_id="r", batch_id="b", now=NOW)
    assert outcome.rows_quarantined == 10
    result = next(r for r in outcome.results["results"]
                  if r["expectation_config"]["meta"]["storesync_check"] == "email_well_formed")["result"]
    assert result["unexpected_count"] == 10
    assert result["unexpected_index_list"] == [{"_row": [0, 1, 2], "order_id": [1, 2, 3]}]
    assert result["unexpected_index_list_truncated"] is True


def test_all_float_batch_is_exact():
    from storesync.quality import validate_batch

    # Money as float64 columns, not Decimal objects: the vectorised path.
    frame = pd.DataFrame([
        order(1, subtotal=0.3, lines_subtotal=0.1 + 0.2, total_tax=0.0, total_discounts=0.0, total=0.3),
        order(2, total=19.605),
        order(3, total=19.62),
        order(4),
    ])
    for col in ("subtotal", "total_tax", "total_discounts", "total", "lines_subtotal"):
        frame[col] = frame[col].astype(np.float64)
    outcome = validate_batch("orders", frame, run_id="r", batch_id="floats", now=NOW)
    assert {q.entity_id: q.checks for q in outcome.quarantined} == {
        2: ["total_fits_cents"], 3: ["order_total_matches"]}
    assert sorted(outcome.passed["order_id"]) == [1, 4]


def test_empty_batch():
    from storesync.quality import validate_batch

    frame = pd.DataFrame(columns=list(order(1)))
    outcome = validate_batch("orders", frame, run_id="r", batch_id="empty", now=NOW)
    assert (outcome.rows_in, outcome.rows_passed, outcome.rows_quarantined, outcome.share) == (0, 0, 0, 0.0)


def test_aware_now_is_converted_to_naive_utc():
    from storesync.quality import validate_batch

    frame = pd.DataFrame([order(1, updated_at=dt.datetime(2025, 6, 1, 11, 0))])
    aware = dt.datetime(2025, 6, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 10:30 UTC
    outcome = validate_batch("orders", frame, run_id="r", batch_id="tz", now=aware)
    assert outcome.now == dt.datetime(2025, 6, 1, 10, 30)
    assert outcome.quarantined[0].checks == ["updated_at_not_in_future"]


def test_missing_column_is_an_error_not_a_pass():
    from storesync.quality import validate_batch

    frame = pd.DataFrame([order(1)]).drop(columns=["total"])
    with pytest.raises(ValidationIncompleteError, match=r"lacks columns the suite reads: \['total'\]"):
        validate_batch("orders", frame, run_id="r", batch_id="b", now=NOW)


def test_unknown_entity():
    from storesync.quality import validate_batch

    with pytest.raises(KeyError, match="no expectation suite for entity 'refunds'"):
        validate_batch("refunds", pd.DataFrame(), run_id="r", batch_id="b", now=NOW)


def test_an_expectation_that_cannot_run_stops_the_batch(monkeypatch):
    from storesync.quality import checks, validate_batch

    broken = checks.EntitySpec(
        entity="test_broken",
        id_column="thing_id",
        checks=(checks.Check("thing_between", "compares text with a number", "ExpectColumnValuesToBeBetween",
                             {"column": "label", "min_value": 0}, reads=("label",)),),
    )
    monkeypatch.setitem(checks.REGISTRY, "test_broken", broken)
    frame = pd.DataFrame({"thing_id": [1, 2], "label": ["a", "b"]})
    with pytest.raises(ValidationIncompleteError, match="thing_between could not be evaluated"):
        validate_batch("test_broken", frame, run_id="r", batch_id="b", now=NOW)


def test_rows_that_do_not_add_up_raise():
    from storesync.quality import ValidationOutcome

    with pytest.raises(ValidationIncompleteError, match="refusing to lose rows"):
        ValidationOutcome(entity="orders", run_id="r", batch_id="b", now=NOW, suite_name="storesync_orders",
                          passed=pd.DataFrame({"order_id": [1]}), quarantined=[], rows_in=2, results={},
                          validated_at=NOW, seconds=0.0)


# --------------------------------------------------------------------------------------------
# Threshold
# --------------------------------------------------------------------------------------------


def test_threshold_error(outcomes):
    from storesync.quality import check_threshold

    _, outcome = outcomes["customers"]
    assert outcome.share > 0.5
    with pytest.raises(QualityGateError) as stopped:
        check_threshold(outcome, {"customers": 0.05, "*": 1.0})
    exc = stopped.value
    assert isinstance(exc, StoresyncError)
    assert (exc.entity, exc.threshold) == ("customers", 0.05)
    assert exc.share == pytest.approx(outcome.share)
    message = str(exc)
    assert "customers" in message and f"{outcome.share:.2%}" in message and "5.00%" in message
    assert "customer_id_unique (2)" in message and "top reasons" in message
    assert exc.top_reasons[0][1] >= exc.top_reasons[-1][1]
    assert not EMAIL_RE.search(message), "the gate's message must never carry an email"


def test_threshold_not_exceeded(outcomes):
    from storesync.quality import check_threshold

    _, outcome = outcomes["customers"]
    # A share equal to the threshold passes.
    assert check_threshold(outcome, {"customers": outcome.share}) == {"customers": outcome.share}
    assert check_threshold(outcome, {"*": 1.0}) == {"customers": 1.0}
    with pytest.raises(QualityGateError):
        check_threshold(outcome, {})  # default 5 %
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_threshold(outcome, {"customers": 5})


def test_threshold_over_several_batches(outcomes):
    from storesync.quality import check_threshold, validate_batch

    clean = validate_batch("customers", pd.DataFrame([customer(i) for i in range(1, 200)]), run_id="run-1",
                           batch_id="customers-1", now=NOW)
    _, dirty = outcomes["customers"]
    share = dirty.rows_quarantined / (dirty.rows_in + clean.rows_in)
    assert check_threshold([dirty, clean], {"customers": share}) == {"customers": share}
    with pytest.raises(QualityGateError) as stopped:
        check_threshold([dirty, clean], {"customers": share / 2})
    assert stopped.value.share == pytest.approx(share)


def test_gate_error_with_only_a_message():
    exc = QualityGateError("quality gate failed")
    assert not hasattr(exc, "entity") and exc.top_reasons == []


# --------------------------------------------------------------------------------------------
# The suites and the import cost
# --------------------------------------------------------------------------------------------


def test_suites_are_built_from_the_registry():
    from storesync.quality import build_suite

    for entity, spec in REGISTRY.items():
        suite = build_suite(spec)
        assert suite.name == f"storesync_{entity}"
        names = [e.meta["storesync_check"] for e in suite.expectations]
        assert names == [c.name for c in spec.checks]
        assert all(e.description for e in suite.expectations)


def test_helper_columns_are_named_after_their_checks():
    for spec in REGISTRY.values():
        for check in spec.checks:
            if check.helper is not None:
                assert check.kwargs == {"column": f"_{check.name}", "value_set": [True]}


def test_importing_the_gate_does_not_import_great_expectations():
    code = (
        "import sys\n"
        "import storesync.quality\n"
        "from storesync.quality import validate_batch, QuarantineStore, render_data_docs, check_threshold\n"
        "import storesync.quality.checks, storesync.quality.gate\n"
        "import storesync.quality.store, storesync.quality.docs, storesync.quality.money\n"
        "assert 'great_expectations' not in sys.modules, 'GX imported at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
