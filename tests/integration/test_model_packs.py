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
from sqlalchemy import create_engine, select

from storesync.cli import main
from storesync.core.config import SailthruSettings, SendlaneSettings, Settings
from storesync.core.windows import Window
from storesync.ltv.tables import ltv_tables
from storesync.pipeline.jobs import deliver_vendor, open_context, plan_entity, run_nightly

PACKS = Path(__file__).resolve().parents[2] / "include" / "sql" / "packs"
SENDLANE_ORDER_PATHS = {"placed": "/tracking/order-placed", "fulfilled": "/tracking/order-fulfilled",
                        "cancelled": "/tracking/order-cancelled", "refunded": "/tracking/order-refunded"}


@pytest.fixture(autouse=True)
def _no_settings_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STORESYNC_CONFIG", raising=False)


def _settings(emulator, url: str, models: Path, tmp_path) -> Settings:
    emulator.configure(rate_limits_enabled=False)
    return Settings(
        warehouse_url=url, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", models_dir=models,
        sendlane=SendlaneSettings(base_url=emulator.sendlane_url, api_token=emulator.sendlane_api_token,
                                  integration_token=emulator.sendlane_integration_token, budget_per_minute=6000),
        sailthru=SailthruSettings(base_url=emulator.sailthru_url, api_key=emulator.sailthru_api_key,
                                  secret=emulator.sailthru_secret, budget_per_minute=6000))


def _order_requests(emulator) -> dict:
    """What the vendors recorded for orders: {(vendor, kind): Counter(order id)}."""
    got = {("sendlane", kind): Counter(r["entity_id"] for r in emulator.requests("sendlane", path))
           for kind, path in SENDLANE_ORDER_PATHS.items()}
    got[("sailthru", "purchase")] = Counter(r["body"]["purchase_keys"]["extid"]
                                            for r in emulator.requests("sailthru", "/purchase")
                                            if not r["body"].get("incomplete"))
    got[("sailthru", "return")] = Counter(r["body"]["purchase_keys"]["extid"]
                                          for r in emulator.requests("sailthru", "/return"))
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
    config.write_text(f'warehouse_url = "{url}"\nledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
                      f'models_dir = "{models}"\n[ltv]\n' + "".join(f"{k} = {value(v)}\n" for k, v in ltv.items()))
    return config


def _expected_ltv(orders: dict, fx: dict, reporting: str) -> dict:
    """Per customer, from the scenario's hand-classified orders: valid orders count and make net
    revenue, valid and reversed make gross; each total converted at its currency's rate, to the cent."""
    out: dict = {}
    for customer, klass, currency, total in orders.values():
        if customer is None:
            continue  # a guest order: no customer to hold it
        amount = total if currency == reporting else (total * fx[currency]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        row = out.setdefault(customer, {"order_count": 0, "gross_revenue": Decimal("0.00"),
                                        "net_revenue": Decimal("0.00")})
        if klass in ("valid", "reversed"):
            row["gross_revenue"] += amount
        if klass == "valid":
            row["order_count"] += 1
            row["net_revenue"] += amount
    for row in out.values():
        row["avg_order_value"] = ((row["net_revenue"] / row["order_count"]).quantize(Decimal("0.01"))
                                  if row["order_count"] else None)
    return out


def _ltv_figures(url: str, as_of) -> dict:
    engine = create_engine(url)
    with engine.connect() as conn:
        view, _ = ltv_tables(conn)
        rows = conn.execute(select(view).where(view.c.as_of == as_of)).mappings().all()
    engine.dispose()

    def money(v):
        return None if v is None else Decimal(str(v)).quantize(Decimal("0.01"))

    return {int(r["customer_id"]): {"order_count": r["order_count"], "gross_revenue": money(r["gross_revenue"]),
                                    "net_revenue": money(r["net_revenue"]),
                                    "avg_order_value": money(r["avg_order_value"])} for r in rows}


# ---------------------------------------------------------------------------------------- Shopify
@pytest.fixture
def shopify_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'shopify.db'}"
    shopify.build(url)
    return url, PACKS / "shopify_fivetran"


def test_shopify_pack_keeps_the_contract(shopify_store, capsys):
    url, models = shopify_store
    day = Window(shopify.DAY, shopify.DAY + timedelta(days=1))
    code = main(["models", "check", "--warehouse-url", url, "--models-dir", str(models),
                 "--start", day.start.isoformat(), "--end", day.end.isoformat(), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["ok"]
    rows = {name: m["rows"] for name, m in result["models"].items()}
    live = {i: e for i, e in shopify.EXPECTED_ORDER_EVENTS.items()}
    # Every change of the day: each order's placement, successful fulfilments, refunds (partial
    # ones too: they are history, just no event), cancellations; the test order none.
    assert rows["order_changes"] == sum(len(e) for e in live.values()) + 2  # 7002, 7003: partial refunds
    assert rows["orders"] == len(live) and rows["order_lines"] == len(live)
    assert (rows["customers"], rows["products"], rows["checkouts"], rows["checkout_lines"]) == (2, 2, 2, 2)
    assert rows["ltv_orders"] == len(live) and rows["fx_rates"] == 1
    assert {m["status"] for m in result["models"].values()} <= {"ok", "absent"}


def test_shopify_pack_syncs_each_event_once(shopify_store, emulator, tmp_path):
    url, models = shopify_store
    settings = _settings(emulator, url, models, tmp_path)
    # The order-events sync over the day in four windows of six hours, run after the day (the
    # fixture holds the day's final state: an order's updated_at is later than its earlier windows).
    for n in range(4):
        window = Window(shopify.DAY + timedelta(hours=6 * n), shopify.DAY + timedelta(hours=6 * (n + 1)))
        ctx = open_context(settings, run_id=f"orders-{n}", sync_name="order_events",
                           now=shopify.DAY + timedelta(days=1, minutes=5))
        plan = plan_entity(ctx, "orders", window)
        assert plan["entities"].get("orders", {}).get("quarantined", 0) == 0, plan["entities"]
        for vendor in ("sendlane", "sailthru"):
            report = deliver_vendor(ctx, vendor)
            assert report["waiting_behind_dead"] == 0
        ctx.ledger.finish_run(ctx.run_id, "success")
    want = _expected_order_requests(shopify.EXPECTED_ORDER_EVENTS)
    assert _order_requests(emulator) == want
    # A refund is a return, never a new purchase; a partial refund (1004) no event at all.
    assert _order_requests(emulator)[("sailthru", "purchase")] == Counter({str(i): 1 for i in (1001, 1002, 1003,
                                                                                                1004, 1005)})
    refunded = emulator.requests("sendlane", SENDLANE_ORDER_PATHS["refunded"])
    assert sorted(r["entity_id"] for r in refunded) == ["1002", "1005"]
    placed = {r["entity_id"]: r["body"] for r in emulator.requests("sendlane", SENDLANE_ORDER_PATHS["placed"])}
    assert placed["1001"]["total"] == 48.20 and placed["1002"]["currency"] == "EUR"
    assert placed["1004"]["email"] == "guest@example.com"

    # The nightly job over the whole day, twice: orders are not sent again; customers, products and
    # the abandoned cart go out once.
    summary = run_nightly(settings, Window(shopify.DAY, shopify.DAY + timedelta(days=1)), run_id="nightly-1")
    assert not any(k.split(":")[1].startswith(("order_", "purchase", "return")) for k in summary["planned"])
    assert summary["rows"]["checkouts"]["quarantined"] == 0 and summary["rows"]["products"]["quarantined"] == 0
    run_nightly(settings, Window(shopify.DAY, shopify.DAY + timedelta(days=1)), run_id="nightly-2")
    assert _order_requests(emulator) == want
    assert [r["entity_id"] for r in emulator.requests("sendlane", "/tracking/checkout-started")] == ["9001"]
    carts = {r["body"]["purchase_keys"]["extid"].split("-")[1]: r["body"]  # extid: cart-<checkout id>-...
             for r in emulator.requests("sailthru", "/purchase") if r["body"].get("incomplete")}
    assert sorted(carts) == ["9001", "9002"] and carts["9002"]["items"] == []  # the completed cart cleared
    assert sorted(r["entity_id"] for r in emulator.requests("sendlane", "/tracking/customer-added")) == ["501", "502"]
    assert sorted(r["entity_id"] for r in emulator.requests("sendlane", "/tracking/product-added")) == ["101", "102"]
    assert emulator.duplicates() == {} or not any(emulator.duplicates().values())


def test_shopify_pack_ltv_from_its_settings(shopify_store, tmp_path, capsys):
    url, models = shopify_store
    config = _ltv_toml(tmp_path, url, models, shopify.LTV_SETTINGS)
    assert main(["--config", str(config), "ltv", "--as-of", shopify.DAY.date().isoformat(), "--full",
                 "--no-predict", "--json"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    fx = {r["currency"]: r["rate"] for r in shopify.FX_RATES}
    expected = _expected_ltv(shopify.LTV_ORDERS, fx, "USD")
    # Written out, so a wrong oracle cannot pass: Ada's cancelled order counts in gross only; Bea's
    # two EUR orders were both refunded (10.80 + 21.60 USD gross, nothing net); the guest is nobody.
    assert expected[shopify.ADA] == {"order_count": 1, "gross_revenue": Decimal("68.20"),
                                     "net_revenue": Decimal("48.20"), "avg_order_value": Decimal("48.20")}
    assert expected[shopify.BEA]["gross_revenue"] == Decimal("32.40") and expected[shopify.BEA]["order_count"] == 0
    assert _ltv_figures(url, shopify.DAY.date()) == expected
