"""The model packs (include/sql/packs/, issue 17.6), each on a fixture warehouse in its layout
(tests/fixtures/packs/), used as a user would: point ``models_dir`` at the pack, run
``storesync models check``, sync the store's day into the emulator, compute LTV with the pack's
``[ltv]`` settings from its README.

What each store must become (the events per vendor, the LTV figures) is written in the fixture
module by hand from its scenario, or computed here from that scenario; never by storesync.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from fixtures.packs import shopify_fivetran as shopify
from fixtures.packs import woocommerce
from sqlalchemy import create_engine, select
from storesync.cli import main
from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.ltv.tables import ltv_tables
from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity, run_nightly
from storesync.quality import QuarantineStore

PACKS = Path(__file__).resolve().parents[2] / "include" / "sql" / "packs"
SENDLANE_ORDER_PATHS = {
    "placed": "/tracking/order-placed",
    "fulfilled": "/tracking/order-fulfilled",
    "cancelled": "/tracking/order-cancelled",
    "refunded": "/tracking/order-refunded",
}


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORESYNC_CONFIG", raising=False)


def _settings(emulator, url: str, models: Path, tmp_path) -> Settings:
    emulator.configure(rate_limits_enabled=False)
    return Settings(
        warehouse_url=url,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        models_dir=models,
        sendlane=SendlaneSettings(
            base_url=emulator.sendlane_url,
            api_token=emulator.sendlane_api_token,
            integration_token=emulator.sendlane_integration_token,
            budget_per_minute=6000,
        ),
        sailthru=SailthruSettings(
            base_url=emulator.sailthru_url,
            api_key=emulator.sailthru_api_key,
            secret=emulator.sailthru_secret,
            budget_per_minute=6000,
        ),
        quarantine_thresholds={"*": 0.5},
    )  # a small store: one orphan line is a large share


def _order_requests(emulator) -> dict:
    """What the vendors recorded for orders: {(vendor, kind): Counter(order id)}."""
    got = {
        ("sendlane", kind): Counter(r["entity_id"] for r in emulator.requests("sendlane", path))
        for kind, path in SENDLANE_ORDER_PATHS.items()
    }
    got[("sailthru", "purchase")] = Counter(
        r["body"]["purchase_keys"]["extid"]
        for r in emulator.requests("sailthru", "/purchase")
        if not r["body"].get("incomplete")
    )
    got[("sailthru", "return")] = Counter(
        r["body"]["purchase_keys"]["extid"] for r in emulator.requests("sailthru", "/return")
    )
    return {k: v for k, v in got.items() if v}


def _expected_order_requests(expected_events: dict) -> dict:
    """Sendlane hears every event; Sailthru a purchase per placement and a return per cancellation
    or refund (targets.py's table)."""
    want: dict = {}
    for order_id, events in expected_events.items():
        for kind, _ in events:
            want.setdefault(("sendlane", kind), Counter())[str(order_id)] += 1
            sailthru = {"placed": "purchase", "cancelled": "return", "refunded": "return"}.get(kind)
            if sailthru:
                want.setdefault(("sailthru", sailthru), Counter())[str(order_id)] += 1
    return want


def _ltv_toml(tmp_path, url: str, models: Path, ltv: dict) -> Path:
    def value(v):
        return json.dumps(list(v)) if isinstance(v, tuple) else json.dumps(v)

    config = tmp_path / "storesync.toml"
    config.write_text(
        f'warehouse_url = "{url}"\nledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
        f'models_dir = "{models}"\n[ltv]\n' + "".join(f"{k} = {value(v)}\n" for k, v in ltv.items())
    )
    return config


def _expected_ltv(orders: dict, fx: dict, reporting: str) -> dict:
    """Per customer, from the scenario's hand-classified orders: valid orders count and make net
    revenue, valid and reversed make gross; each total converted at its currency's rate, to the cent."""
    out: dict = {}
    for customer, klass, currency, total in orders.values():
        if customer is None:
            continue  # a guest order: no customer to hold it
        amount = (
            total
            if currency == reporting
            else (total * fx[currency]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        )
        row = out.setdefault(
            customer, {"order_count": 0, "gross_revenue": Decimal("0.00"), "net_revenue": Decimal("0.00")}
        )
        if klass in ("valid", "reversed"):
            row["gross_revenue"] += amount
        if klass == "valid":
            row["order_count"] += 1
            row["net_revenue"] += amount
    for row in out.values():
        row["avg_order_value"] = (
            (row["net_revenue"] / row["order_count"]).quantize(Decimal("0.01"))
            if row["order_count"]
            else None
        )
    return out


def _ltv_figures(url: str, as_of) -> dict:
    engine = create_engine(url)
    with engine.connect() as conn:
        view, _ = ltv_tables(conn)
        rows = conn.execute(select(view).where(view.c.as_of == as_of)).mappings().all()
    engine.dispose()

    def money(v):
        return None if v is None else Decimal(str(v)).quantize(Decimal("0.01"))

    return {
        int(r["customer_id"]): {
            "order_count": r["order_count"],
            "gross_revenue": money(r["gross_revenue"]),
            "net_revenue": money(r["net_revenue"]),
            "avg_order_value": money(r["avg_order_value"]),
        }
        for r in rows
    }


# ------------------------------------------------------------------------------------------ tests
STORES = {"shopify_fivetran": shopify, "woocommerce": woocommerce}


def _build(pack: str, url: str):
    store = STORES[pack]
    store.build(url)
    return store, PACKS / pack


def _day(store) -> Window:
    return Window(store.DAY, store.DAY + timedelta(days=1))


@pytest.mark.parametrize("pack", list(STORES))
def test_pack_keeps_the_contract(pack, warehouse_db_url, capsys):
    store, models = _build(pack, warehouse_db_url)
    day = _day(store)
    code = main(
        [
            "models",
            "check",
            "--warehouse-url",
            warehouse_db_url,
            "--models-dir",
            str(models),
            "--start",
            day.start.isoformat(),
            "--end",
            day.end.isoformat(),
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"], {
        n: m.get("error") for n, m in result["models"].items() if m.get("error")
    }
    assert {m["status"] for m in result["models"].values()} <= {"ok", "absent"}
    rows = {name: result["models"][name]["rows"] for name in store.EXPECTED_CHECK_ROWS}
    assert rows == store.EXPECTED_CHECK_ROWS
    # Every change of the day: each order's placement, shipment, refunds (partial ones too: they
    # are history, just no event) and cancellation; orders never placed and test orders none.
    assert rows["order_changes"] == sum(len(e) for e in store.EXPECTED_ORDER_EVENTS.values()) + 2


@pytest.mark.parametrize("pack", list(STORES))
def test_pack_syncs_each_event_once(pack, emulator, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store, models = _build(pack, url)
    settings = _settings(emulator, url, models, tmp_path)
    # The order-events sync over the day in four windows of six hours, run after the day (the
    # fixture holds the day's final state: an order's updated_at is later than its earlier windows).
    quarantined = Counter()
    for n in range(4):
        window = Window(store.DAY + timedelta(hours=6 * n), store.DAY + timedelta(hours=6 * (n + 1)))
        ctx = open_context(
            settings,
            run_id=f"orders-{n}",
            sync_name="order_events",
            now=store.DAY + timedelta(days=1, minutes=5),
        )
        plan = plan_entity(ctx, "orders", window)
        quarantined.update({e: s["quarantined"] for e, s in plan["entities"].items() if s["quarantined"]})
        for vendor in ("sendlane", "sailthru"):
            assert deliver_vendor(ctx, vendor)["waiting_behind_dead"] == 0
        ctx.ledger.finish_run(ctx.run_id, "success")
    # Only what the scenario holds back is quarantined (an orphan line), with its reason.
    assert quarantined == {e: len(ids) for e, ids in store.EXPECTED_QUARANTINE.items()}
    for entity, ids in store.EXPECTED_QUARANTINE.items():
        records = QuarantineStore(create_engine(settings.ledger_url)).open_rows(entity)
        assert sorted(str(r["entity_id"]) for r in records) == ids
        assert all(any(reason.startswith("order_exists") for reason in r["reasons"]) for r in records)
    want = _expected_order_requests(store.EXPECTED_ORDER_EVENTS)
    assert _order_requests(emulator) == want
    # Sendlane gets each change under the warehouse's change id; a refund is never a new purchase.
    versions = {(r["entity_id"], r["endpoint"]) for r in emulator.requests("sendlane")}
    assert versions == {
        (str(o), SENDLANE_ORDER_PATHS[kind])
        for o, events in store.EXPECTED_ORDER_EVENTS.items()
        for kind, _ in events
    }
    placed = {
        r["entity_id"]: r["body"] for r in emulator.requests("sendlane", SENDLANE_ORDER_PATHS["placed"])
    }
    for order_id, (_, _, currency, total) in store.LTV_ORDERS.items():
        assert (placed[str(order_id)]["currency"], Decimal(str(placed[str(order_id)]["total"]))) == (
            currency,
            total,
        )
    assert "guest@example.com" in {body["email"] for body in placed.values()}
    # Variant ids stay integers though some lines have none (pandas reads such a column as floats).
    variants = [item.get("variant_id") for body in placed.values() for item in body["line_items"]]
    assert any(isinstance(v, int) for v in variants) and not any(isinstance(v, float) for v in variants)

    # The nightly job over the whole day, twice: orders are not sent again; customers, products and
    # the abandoned cart go out once.
    summary = run_nightly(settings, _day(store), run_id="nightly-1")
    assert not any(
        k.split(":")[1].startswith(("order_", "purchase", "return")) for k in summary["planned"]
    ), summary["planned"]
    # The orphan is found again in the day, and still held: one open record, never sent.
    assert {e: r["quarantined"] for e, r in summary["rows"].items() if r["quarantined"]} == quarantined
    run_nightly(settings, _day(store), run_id="nightly-2")
    assert _order_requests(emulator) == want
    started = [r["entity_id"] for r in emulator.requests("sendlane", "/tracking/checkout-started")]
    assert started == store.OPEN_CHECKOUTS
    carts = {
        r["body"]["purchase_keys"]["extid"].split("-")[1]: r["body"]  # extid: cart-<checkout id>-...
        for r in emulator.requests("sailthru", "/purchase")
        if r["body"].get("incomplete")
    }
    assert sorted(carts) == sorted(store.OPEN_CHECKOUTS + store.COMPLETED_CHECKOUTS)
    assert all(carts[c]["items"] == [] for c in store.COMPLETED_CHECKOUTS)  # a completed cart is cleared
    assert all(carts[c]["items"] for c in store.OPEN_CHECKOUTS)
    customers = sorted(r["entity_id"] for r in emulator.requests("sendlane", "/tracking/customer-added"))
    products = sorted(r["entity_id"] for r in emulator.requests("sendlane", "/tracking/product-added"))
    assert (customers, products) == (store.CUSTOMER_IDS, store.PRODUCT_IDS)
    assert not any(emulator.duplicates().values())
    for entity, ids in store.EXPECTED_QUARANTINE.items():
        records = QuarantineStore(create_engine(settings.ledger_url)).open_rows(entity)
        assert sorted(str(r["entity_id"]) for r in records) == ids


@pytest.mark.parametrize("pack", list(STORES))
def test_pack_ltv_from_its_settings(pack, warehouse_db_url, tmp_path, capsys):
    store, models = _build(pack, warehouse_db_url)
    config = _ltv_toml(tmp_path, warehouse_db_url, models, store.LTV_SETTINGS)
    assert (
        main(
            [
                "--config",
                str(config),
                "ltv",
                "--as-of",
                store.DAY.date().isoformat(),
                "--full",
                "--no-predict",
                "--json",
            ]
        )
        == 0
    ), capsys.readouterr().err
    capsys.readouterr()
    fx = {r["currency"]: r["rate"] for r in store.FX_RATES}
    expected = _expected_ltv(store.LTV_ORDERS, fx, store.LTV_SETTINGS["currency"])
    assert expected == store.EXPECTED_LTV  # the oracle agrees with the figures worked out by hand
    assert _ltv_figures(warehouse_db_url, store.DAY.date()) == expected
