"""The demo store, the models and the whole nightly sync on each warehouse dialect (SQLite,
PostgreSQL and DuckDB; the ledger on SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from storesync.core.config import DEFAULT_MODELS_DIR, SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.delivery.ledger import ACCEPTED, Ledger
from storesync.pipeline.jobs import format_summary, run_nightly
from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store, table_counts
from storesync.warehouse.models import Warehouse

END = datetime(2026, 11, 20)
SPEC = DemoStoreSpec(orders=500, seed=5, end=END, days=10, bad_share=0.02)


def _snapshot(url: str) -> dict:
    engine = create_engine(url)
    with engine.connect() as conn:
        orders = conn.execute(text("SELECT order_id, customer_id, email, status, total FROM orders ORDER BY order_id")).all()
        history = conn.execute(text("SELECT order_id, status FROM order_status_history ORDER BY history_id")).all()
    engine.dispose()
    return {"orders": [tuple(map(str, r)) for r in orders], "history": [tuple(r) for r in history]}


def test_generator_is_deterministic_by_seed(tmp_path):
    first, second, other = (f"sqlite:///{tmp_path / n}.db" for n in ("a", "b", "c"))
    generate_demo_store(first, SPEC)
    generate_demo_store(second, SPEC)
    generate_demo_store(other, DemoStoreSpec(orders=500, seed=6, end=END, days=10, bad_share=0.02))
    assert _snapshot(first) == _snapshot(second)
    assert _snapshot(first) != _snapshot(other)


def test_generator_writes_a_realistic_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    stats = generate_demo_store(url, SPEC)
    engine = create_engine(url)
    counts = table_counts(engine)
    assert counts["orders"] == 500 and counts["order_lines"] == stats.order_lines
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT status, COUNT(*) FROM orders GROUP BY status")).all())
        repeat = conn.execute(text(
            "SELECT COUNT(*) FROM (SELECT customer_id FROM orders GROUP BY customer_id HAVING COUNT(*) > 2) t")).scalar()
        opted_out = conn.execute(text("SELECT COUNT(*) FROM customers WHERE accepts_marketing = 0")).scalar()
        abandoned = conn.execute(text("SELECT COUNT(*) FROM checkouts WHERE order_id IS NULL")).scalar()
        first_changes = conn.execute(text(
            "SELECT COUNT(*) FROM order_status_history h WHERE h.changed_at = "
            "(SELECT MIN(changed_at) FROM order_status_history p WHERE p.order_id = h.order_id) "
            "AND h.status NOT IN ('processing', 'pending')")).scalar()
    assert {"fulfilled", "cancelled", "processing"} <= set(statuses)
    assert repeat > 10, "repeat buyers should follow a heavy tail"
    assert opted_out > 0 and abandoned > 0
    assert first_changes == 0, "every order starts placed (processing or pending)"
    assert stats.malformed_orders > 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"])
def backend_urls(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}", f"sqlite:///{tmp_path / 'ledger.db'}"
    if request.param == "duckdb":  # a columnar warehouse; the ledger is transactional, on SQLite
        return f"duckdb:///{tmp_path / 'store.duckdb'}", f"sqlite:///{tmp_path / 'ledger.db'}"
    warehouse = request.getfixturevalue("pg_url")
    return warehouse, warehouse  # the ledger in the warehouse's own database, as in production


def _every_model(url: str) -> list:
    """Every sync model's frame for the same window and chunks."""
    wh = Warehouse(url, DEFAULT_MODELS_DIR)
    window = Window(END - timedelta(days=2), END)
    changes = next(wh.stream_order_changes(window, 10_000))
    ids = changes["order_id"].unique().tolist()
    products = next(wh.stream("products", Window.everything_before(END), 10_000))
    checkouts = next(wh.stream("checkouts", window, 10_000))
    return [changes, wh.for_ids("orders", ids), wh.for_ids("order_lines", ids),
            wh.for_ids("order_history", ids, window_end=END), next(wh.stream("customers", window, 10_000)),
            products, wh.for_ids("product_variants", products["product_id"].tolist()), checkouts,
            wh.for_ids("checkout_lines", checkouts["checkout_id"].tolist())]


def _same(value):
    return None if value != value else value  # NaN (a missing float) equals NaN here


@pytest.mark.parametrize("other", [pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"])
def test_models_give_the_same_frames_on_every_dialect(tmp_path, other, request):
    sqlite_url = f"sqlite:///{tmp_path / 'store.db'}"
    other_url = request.getfixturevalue("pg_url") if other == "postgres" else f"duckdb:///{tmp_path / 'store.duckdb'}"
    for url in (sqlite_url, other_url):
        generate_demo_store(url, SPEC)
    frames = [_every_model(url) for url in (sqlite_url, other_url)]
    for left, right in zip(frames[0], frames[1]):
        assert len(left) > 0
        assert left.columns.tolist() == right.columns.tolist()
        for column in left.columns:
            assert list(map(_same, left[column])) == list(map(_same, right[column])), column


def test_nightly_sync_end_to_end(backend_urls, emulator):
    warehouse_url, ledger_url = backend_urls
    generate_demo_store(warehouse_url, SPEC)
    emulator.configure(rate_limits_enabled=False)
    settings = Settings(
        warehouse_url=warehouse_url, ledger_url=ledger_url,
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=6000),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=6000),
        quarantine_thresholds={"*": 0.2},
    )
    window = Window(END - timedelta(days=1), END)
    summary = run_nightly(settings, window, run_id="e2e")
    text_summary = format_summary(summary)
    assert "sendlane" in text_summary and "quarantined" in text_summary
    rows = summary["rows"]
    for entity, stats in rows.items():
        assert stats["rows_in"] == stats["passed"] + stats["quarantined"], entity
    assert rows["order_lines"]["reasons"].get("order_exists") == 1, "the demo's orphan line, found and held"
    assert summary["deliveries"]["sendlane"]["accepted"] > 0 and summary["deliveries"]["sailthru"]["accepted"] > 0
    ledger = Ledger(ledger_url)
    accepted = ledger.counts().get(ACCEPTED, 0)
    vendor_total = sum(v["accepted"] for v in emulator.summary()["vendors"].values())
    assert accepted == vendor_total
    assert ledger.watermark("nightly") == END


def test_dry_run_plans_without_sending_and_masks_emails(tmp_path, emulator):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    generate_demo_store(url, SPEC)
    settings = Settings(
        warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token="t", integration_token="i"),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key="k", secret="s"),
        quarantine_thresholds={"*": 0.2},
    )
    summary = run_nightly(settings, Window(END - timedelta(days=1), END), run_id="dry", dry_run=True)
    assert summary["deliveries"] == {} and emulator.requests() == []
    assert summary["planned"]["sendlane:order_placed"] > 0 and summary["planned"]["sailthru:purchase"] > 0
    assert summary["changes"]["sendlane:create"] > 0
    samples = summary["samples"]["sailthru:purchase"]
    assert samples and all("***@" in s["payload"]["email"] for s in samples)
    assert Ledger(settings.ledger_url).counts() == {}


def test_demo_store_command_writes_a_duckdb_file(tmp_path, capsys):
    from storesync.cli import main

    url = f"duckdb:///{tmp_path / 'new' / 'store.duckdb'}"  # its folder does not exist yet
    config = tmp_path / "storesync.toml"
    config.write_text("")  # every setting at its default
    assert main(["--config", str(config), "demo-store", "--url", url, "--orders", "200",
                 "--seed", "5", "--end", END.isoformat(), "--days", "10"]) == 0
    assert "orders 200" in capsys.readouterr().out
    engine = create_engine(url)
    counts = table_counts(engine)
    engine.dispose()
    assert counts["orders"] == 200 and counts["order_lines"] > 200 and counts["tracks"] > 0
