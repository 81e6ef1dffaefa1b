"""Validation results kept as JSON, and GX Data Docs built from them."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal as D

import pandas as pd

NOW = dt.datetime(2025, 6, 1, 12, 0)


def order(i, **kw):
    row = dict(
        order_id=i, customer_id=1000 + i, email=f"buyer{i}@example.com", status="completed", currency="USD",
        subtotal=D("20.00"), total_tax=D("1.60"), total_discounts=D("2.00"), discount_code=None,
        total=D("19.60"), payment_method="Visa", sailthru_bid=None, created_at=dt.datetime(2025, 5, 1),
        updated_at=dt.datetime(2025, 5, 2), lines_subtotal=D("20.00"), line_count=2,
    )
    row.update(kw)
    return row


def test_results_are_stored_and_data_docs_name_the_suite(tmp_path):
    from storesync.quality import load_results, render_data_docs, store_results, validate_batch

    frame = pd.DataFrame([order(1), order(2, email="broken@"), order(3, total=D("30.00"))])
    run_id = "scheduled__2025-06-01T12:00:00+00:00"
    outcome = validate_batch("orders", frame, run_id=run_id, batch_id="orders-0", now=NOW)

    path = store_results(outcome, tmp_path / "results")
    assert path == tmp_path / "results" / "scheduled__2025-06-01T12_00_00_00_00" / "orders__orders-0.json"
    stored = json.loads(path.read_text())
    assert stored["suite_name"] == "storesync_orders" and stored["meta"]["storesync"]["rows_quarantined"] == 2
    assert load_results(tmp_path / "results") == [stored]

    index = render_data_docs(tmp_path / "results", tmp_path / "site")
    assert index == (tmp_path / "site" / "index.html").resolve() and index.is_file()
    html = index.read_text()
    assert "storesync_orders" in html

    pages = list((tmp_path / "site" / "validations" / "storesync_orders").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "order_total_matches" in page or "_order_total_matches" in page
    assert "scheduled__2025-06-01T12:00:00+00:00" in page  # the run is named
    assert "example.com" not in page and "broken@" not in page, "Data Docs must not show emails"
    suite_page = (tmp_path / "site" / "expectations" / "storesync_orders.html").read_text()
    assert "is a known ISO 4217 currency code" in suite_page  # the checks are documented

    # The process's validation context is untouched by the docs build.
    again = validate_batch("orders", frame, run_id="r2", batch_id="orders-0", now=NOW)
    assert again.rows_quarantined == 2
