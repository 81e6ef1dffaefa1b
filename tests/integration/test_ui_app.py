"""The Storesync view's app without a browser: its numbers against the ledger's, auth, masking,
the replay action, bad input, and the Data Docs served offline.

Airflow's auth manager is replaced by a small fake here (two tokens: an admin who may trigger DAG
runs, a viewer who may not); ``test_ui_browser.py`` runs the real one in a real api-server.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ui_ledger import (
    BUDGET_SLOTS,
    SAILTHRU_ACCOUNT,
    SENDLANE_ACCOUNT,
    build_ui_ledger,
    ledger_counts,
)

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "plugins" / "storesync_ui" / "static"
ADMIN = {"Authorization": "Bearer admin-token"}
VIEWER = {"Authorization": "Bearer viewer-token"}
PERSONAL = ("jane.doe@example.com", "Jane", "Doe", "555 0100", "12 Elm", "10.1.2.3", "12345")


class FakeAuth:
    async def user(self, token):
        return {"admin-token": "admin", "viewer-token": "viewer"}.get(token)

    def can_read(self, user, dag_id):
        return True

    def can_trigger(self, user, dag_id):
        return user == "admin"

    def login_url(self, next_url):
        return f"/auth/login?next={next_url}"


@pytest.fixture
def ledger(db_url):
    build_ui_ledger(db_url)
    return db_url


@pytest.fixture
def view(ledger, tmp_path):
    from fastapi.testclient import TestClient

    from storesync.ui.app import StoreConfig, UIConfig, create_app
    from storesync.ui.datadocs import DataDocsSite

    triggered = []

    def trigger(api_base, token, dag_id, conf, note):
        triggered.append({"token": token, "dag_id": dag_id, "conf": conf, "note": note})
        return 200, {"dag_run_id": f"manual__{len(triggered)}", "state": "queued"}

    config = UIConfig(stores={"shop": StoreConfig("shop", ledger, budgets={"sendlane": (200, 60.0)})},
                      static_dir=STATIC, site=DataDocsSite(tmp_path / "no-site"), api_base="http://airflow.test")
    client = TestClient(create_app(config, auth=FakeAuth(), trigger=trigger))
    client.triggered = triggered
    return client


def test_anonymous_requests_are_refused(view):
    for path in ("/api/overview", "/api/deliveries/dead", "/api/quarantine", "/api/ltv", "/static/storesync.js"):
        response = view.get(path)
        assert response.status_code == 401, path
    page = view.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login?next=")
    assert view.get("/", headers={"Authorization": "Bearer forged"}).status_code == 401
    assert view.post("/api/actions/replay", json={"ids": [1]}).status_code == 401
    assert view.triggered == []


def test_the_overview_equals_the_ledger(view, ledger):
    expected = ledger_counts(ledger)
    data = view.get("/api/overview", headers=ADMIN).json()
    totals = {state: n for state, n in data["states"]["totals"].items() if n}
    assert totals == expected["states"]
    assert data["dead"]["total"] == expected["dead"] == 4 and data["held"]["total"] == 1
    assert {(a["vendor"], a["account"]) for a in data["accounts"]} == {
        ("sendlane", SENDLANE_ACCOUNT), ("sailthru", SAILTHRU_ACCOUNT)}
    budget = next(b for b in data["budgets"] if b["key"] == f"sendlane:{SENDLANE_ACCOUNT}")
    assert budget["used"] == BUDGET_SLOTS and budget["limit"] == 200  # the hour-old slot is not counted
    lags = {w["sync_name"]: w["lag_s"] for w in data["watermarks"]}
    assert 3590 <= lags["order_events"] <= 3700 and 17990 <= lags["customers"] <= 18100
    assert [r["status"] for r in data["runs"]] == ["succeeded", "failed"]
    sent = {(a["vendor"], a["account"]): a for a in data["sent"]["accounts"]}
    assert sent[("sendlane", SENDLANE_ACCOUNT)]["sent"] >= 12  # the last hour's answers (+ held rows)
    assert sent[("sendlane", SENDLANE_ACCOUNT)]["limit_per_minute"] == 200

    one_vendor = view.get("/api/overview", params={"vendor": "sailthru", "days": 3}, headers=ADMIN).json()
    expected_3 = ledger_counts(ledger, days=3)
    assert one_vendor["dead"]["total"] == 1 and one_vendor["held"]["total"] == 0
    assert one_vendor["states"]["totals"]["accepted"] == 12 < expected_3["states"]["accepted"]


def test_the_page_shows_the_ledgers_numbers_masked(view, ledger):
    expected = ledger_counts(ledger)
    html = view.get("/", headers=ADMIN).text
    metrics = dict(re.findall(r"data-metric='([^']+)'>([^<]*)<", html))
    assert int(metrics["window-accepted"].replace(",", "")) == expected["states"]["accepted"]
    assert int(metrics["window-dead"]) == expected["states"]["dead"]
    assert int(metrics["dead-total"]) == expected["dead"] and int(metrics["held-total"]) == 1
    assert int(metrics["window-held"]) == 1 and int(metrics["window-settling"]) == 3
    assert int(metrics["quarantine-open-orders"]) == expected["quarantine_open"]["orders"] == 3
    assert int(metrics["ltv-customers"]) == expected["ltv_customers"] == 5
    assert html.count("<svg") >= 5, "charts: states per day, sends per minute, quarantine, LTV"
    for value in PERSONAL:
        assert value not in html, f"personal data on the page: {value!r}"
    assert "j***@example.com" in html  # still readable: which address, masked
    # Everything the page loads is the plugin's own.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?://", html)


def test_dead_letters_are_paged_and_masked(view, ledger):
    data = view.get("/api/deliveries/dead", params={"limit": 2}, headers=ADMIN).json()
    assert data["total"] == 4 and len(data["rows"]) == 2
    rest = view.get("/api/deliveries/dead", params={"limit": 2, "offset": 2}, headers=ADMIN).json()
    assert sorted(r["id"] for r in data["rows"] + rest["rows"]) == ledger_counts(ledger)["dead_ids"]
    row = next(r for r in data["rows"] + rest["rows"] if r["vendor"] == "sendlane")
    assert row["error_class"] == "validation" and row["http_status"] == 400
    assert row["payload"]["email"] == "j***@example.com" and row["payload"]["first_name"] == "***"
    assert row["payload"]["address"]["street"] == "***" and row["payload"]["total"] == "19.60"
    assert "jane.doe" not in row["vendor_error"] and "10.1.2.3" not in row["vendor_error"]
    held = view.get("/api/deliveries/held", headers=ADMIN).json()
    assert held["total"] == 1 and {r["error_class"] for r in held["rows"]} == {"network"}
    assert held["rows"][0]["payload"]["email"] == "j***@example.com"
    quarantine = view.get("/api/quarantine", headers=ADMIN).text
    assert all(value not in quarantine for value in PERSONAL)


def test_replay_triggers_the_dag_with_the_callers_token(view, ledger):
    dead_ids = ledger_counts(ledger)["dead_ids"]
    answer = view.post("/api/actions/replay", json={"ids": [dead_ids[1], dead_ids[0], dead_ids[1]],
                                                     "dry_run": False}, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    assert answer.json()["dag_run_id"] == "manual__1"
    assert answer.json()["url"] == "http://airflow.test/dags/storesync_dead_letter_replay/runs/manual__1"
    [call] = view.triggered
    assert call["token"] == "admin-token" and call["dag_id"] == "storesync_dead_letter_replay"
    assert call["conf"] == {"vendor": None, "event_type": None, "ids": sorted(dead_ids[:2]), "dry_run": False}

    everything = view.post("/api/actions/replay", json={"all_matching": True, "vendor": "sailthru"}, headers=ADMIN)
    assert everything.status_code == 201 and view.triggered[-1]["conf"] == {
        "vendor": "sailthru", "event_type": None, "ids": [], "dry_run": True}


def test_replay_needs_the_right_to_trigger_and_a_clear_choice(view):
    refused = view.post("/api/actions/replay", json={"ids": [1]}, headers=VIEWER)
    assert refused.status_code == 403 and "trigger" in refused.json()["detail"]
    assert "Replay selected" not in view.get("/", headers=VIEWER).text  # no buttons that cannot work
    nothing = view.post("/api/actions/replay", json={}, headers=ADMIN)
    assert nothing.status_code == 400 and "choose" in nothing.json()["detail"]
    bad_vendor = view.post("/api/actions/replay", json={"all_matching": True, "vendor": "mailchimp"}, headers=ADMIN)
    assert bad_vendor.status_code == 400 and "sendlane or sailthru" in bad_vendor.json()["detail"]
    not_ids = view.post("/api/actions/replay", json={"ids": ["1; DROP TABLE"]}, headers=ADMIN)
    assert not_ids.status_code == 422
    other_store = view.post("/api/actions/replay", json={"ids": [1], "store": "elsewhere"}, headers=ADMIN)
    assert other_store.status_code == 400 and "unknown store" in other_store.json()["detail"]
    assert view.triggered == []


def test_held_rows_are_told_from_rows_the_next_run_settles(view, ledger):
    """Of four unknown outcomes only the Sendlane checkout no rule settles is a person's: the
    customer awaiting its contact read, the Sailthru purchase awaiting its lookup and the Sendlane
    order event awaiting its safe resend are counted apart, per kind, with no action on them."""
    expected = ledger_counts(ledger)
    kinds = expected["unknown_ids"]
    held = view.get("/api/deliveries/held", headers=ADMIN).json()
    assert [r["id"] for r in held["rows"]] == [kinds["held"]] and held["total"] == 1
    assert held["rows"][0]["event_type"] == "checkout_started"
    settling = held["settling"]
    assert {k: settling[k] for k in ("total", "lookup", "resend", "read")} == {
        "total": 3, "lookup": 1, "resend": 1, "read": 1}
    assert held["total"] + settling["total"] == held["unknown_total"] == expected["unknown"] == 4
    assert held["complete"] and held["classified"] == 4
    assert {(e["vendor"], e["event_type"], e["kind"]) for e in settling["by_event"]} == {
        ("sailthru", "purchase", "lookup"), ("sendlane", "order_placed", "resend"),
        ("sendlane", "customer_added", "read")}
    assert list(held["remedy"]) == ["sendlane"]
    assert "1 sendlane deliveries are held" in held["remedy"]["sendlane"]
    assert "checkout_started 1" in held["remedy"]["sendlane"]

    page = view.get("/", headers=ADMIN).text
    section = page.split("<section id='held'>")[1].split("</section>")[0]
    metrics = dict(re.findall(r"data-metric='([^']+)'>([^<]*)<", section))
    assert metrics["held-total"] == "1" and metrics["settling-total"] == "3"
    assert metrics["settling-lookup"] == metrics["settling-resend"] == metrics["settling-read"] == "1"
    assert re.findall(r"class='pick' value='(\d+)'", section) == [str(kinds["held"])]  # no box on the others
    assert "storesync reconcile --vendor sendlane --arrived" in section  # the remedy beside the held row
    assert "jane.doe" not in section

    # The route refuses the rows the next run settles, whatever the resolution, and triggers nothing.
    for kind in ("read", "lookup", "resend"):
        for resolution in ("resend", "arrived"):
            refused = view.post("/api/actions/resolve", json={"ids": [kinds["held"], kinds[kind]],
                                                              "resolution": resolution}, headers=ADMIN)
            assert refused.status_code == 409, (kind, resolution, refused.text)
            assert f"{kind} 1" in refused.json()["detail"] and str(kinds[kind]) in refused.json()["detail"]
    not_unknown = view.post("/api/actions/resolve", headers=ADMIN,
                            json={"ids": [expected["dead_ids"][0]], "resolution": "resend"})
    assert not_unknown.status_code == 400 and "not deliveries of store shop" in not_unknown.json()["detail"]
    assert view.triggered == []


def test_a_ledger_with_more_unknown_rows_than_the_view_classifies_says_so(view, ledger, monkeypatch):
    """The view classifies the newest UNKNOWN_CLASSIFIED_MAX unknown rows; beyond, the JSON and
    the page say the counts leave the older ones out (and name the CLI that lists them all)."""
    import storesync.ui.queries as queries

    monkeypatch.setattr(queries, "UNKNOWN_CLASSIFIED_MAX", 2)
    held = view.get("/api/deliveries/held", headers=ADMIN).json()
    assert held["unknown_total"] == ledger_counts(ledger)["unknown"] == 4
    assert held["classified"] == 2 and held["complete"] is False
    assert held["total"] + held["settling"]["total"] == 2
    page = view.get("/", headers=ADMIN).text
    assert "the newest 2 were told apart here" in page and "storesync reconcile --list" in page


def test_the_stores_unknown_outcome_settings_decide_what_is_held(ledger):
    """With ``unknown_outcome = "hold"`` for both vendors, the order event and the purchase are held
    too (nothing resends or looks them up); the awaiting-read customer is still the next run's."""
    from fastapi.testclient import TestClient

    from storesync.ui.app import StoreConfig, UIConfig, create_app

    hold = {"sendlane_unknown_outcome": "hold", "sailthru_unknown_outcome": "hold"}
    store = StoreConfig("shop", ledger, unknown_outcome=hold)
    client = TestClient(create_app(UIConfig(stores={"shop": store}, static_dir=STATIC), auth=FakeAuth()))
    held = client.get("/api/deliveries/held", headers=ADMIN).json()
    kinds = ledger_counts(ledger)["unknown_ids"]
    assert sorted(r["id"] for r in held["rows"]) == sorted([kinds["held"], kinds["lookup"], kinds["resend"]])
    assert held["settling"]["total"] == held["settling"]["read"] == 1
    assert set(held["remedy"]) == {"sendlane", "sailthru"}


def test_resolving_held_rows_triggers_the_dag_with_held_ids_and_the_callers_token(view):
    held_ids = sorted(r["id"] for r in view.get("/api/deliveries/held", headers=ADMIN).json()["rows"])
    assert len(held_ids) == 1
    page = view.get("/", headers=ADMIN).text
    assert "data-action='mark-arrived'" in page and "data-action='resend'" in page
    assert all(f"class='pick' value='{i}'" in page for i in held_ids)  # each held row can be chosen

    arrived = view.post("/api/actions/resolve", json={"ids": [held_ids[0], held_ids[0]],
                                                      "resolution": "arrived"}, headers=ADMIN)
    assert arrived.status_code == 201, arrived.text
    [call] = view.triggered
    assert call["token"] == "admin-token" and call["dag_id"] == "storesync_dead_letter_replay"
    assert call["conf"] == {"held_ids": held_ids, "resolution": "arrived", "dry_run": False}
    assert "1 held deliveries marked arrived" in call["note"]

    resend = view.post("/api/actions/resolve", json={"ids": [held_ids[0]], "resolution": "resend"}, headers=ADMIN)
    assert resend.status_code == 201 and resend.json()["dag_run_id"] == "manual__2"
    assert view.triggered[-1]["conf"] == {"held_ids": held_ids[:1], "resolution": "resend", "dry_run": False}


def test_resolving_held_rows_needs_the_right_to_trigger_and_a_clear_choice(view):
    refused = view.post("/api/actions/resolve", json={"ids": [1], "resolution": "arrived"}, headers=VIEWER)
    assert refused.status_code == 403 and "trigger" in refused.json()["detail"]
    page = view.get("/", headers=VIEWER).text
    assert "Mark arrived" not in page and "class='pick'" not in page.split("id='held'")[1]
    assert view.post("/api/actions/resolve", json={"ids": [1], "resolution": "arrived"}).status_code == 401
    for bad in ({"ids": [], "resolution": "arrived"}, {"ids": [1]}, {"ids": [1], "resolution": "delete"},
                {"ids": ["1; DROP TABLE"], "resolution": "resend"}):
        assert view.post("/api/actions/resolve", json=bad, headers=ADMIN).status_code == 422, bad
    assert view.triggered == []


def test_bad_filters_get_clear_errors(view):
    assert view.get("/api/overview", params={"vendor": "mailchimp"}, headers=ADMIN).json() == {
        "detail": "vendor must be sendlane or sailthru, not 'mailchimp'"}
    assert view.get("/api/overview", params={"days": 0}, headers=ADMIN).status_code == 422
    assert view.get("/api/overview", params={"days": "many"}, headers=ADMIN).status_code == 422
    assert view.get("/api/deliveries/lost", headers=ADMIN).status_code == 400
    assert view.get("/api/overview", params={"store": "nope"}, headers=ADMIN).status_code == 400
    assert view.get("/static/../../README.md", headers=ADMIN).status_code == 404
    assert view.get("/static/%2e%2e/%2e%2e/README.md", headers=ADMIN).status_code == 404


def test_stores_sharing_a_ledger_see_their_own_rows(ledger):
    """Two stores on one ledger (the rule for a deployment: one ledger, budgets shared there): each
    reads its own vendor accounts' deliveries and budgets, its own syncs' runs and watermarks,
    and replays through its own DAG."""
    from fastapi.testclient import TestClient

    from storesync.ui.app import StoreConfig, UIConfig, create_app
    from storesync.ui.filters import StoreScope

    triggered = []
    stores = {
        "default": StoreConfig("default", ledger, scope=StoreScope(((("sendlane", SENDLANE_ACCOUNT)),), ""),
                               budgets={"sendlane": (200, 60.0)}),
        "outlet": StoreConfig("outlet", ledger, scope=StoreScope((("sailthru", SAILTHRU_ACCOUNT),), "outlet."),
                              replay_dag="storesync_outlet_dead_letter_replay"),
    }
    client = TestClient(create_app(UIConfig(static_dir=STATIC, load_stores=lambda: stores), auth=FakeAuth(),
                                   trigger=lambda *a: triggered.append(a) or (200, {"dag_run_id": "r"})))
    main = client.get("/api/overview", headers=ADMIN).json()
    outlet = client.get("/api/overview", params={"store": "outlet"}, headers=ADMIN).json()
    assert main["store"] == "default" and main["dead"]["total"] == 3 and main["held"]["total"] == 1
    assert main["held"]["settling"]["total"] == 2 and main["held"]["settling"]["lookup"] == 0
    assert outlet["dead"]["total"] == 1 and outlet["held"]["total"] == 0
    assert outlet["held"]["settling"]["total"] == outlet["held"]["settling"]["lookup"] == 1
    assert main["accounts"] == [{"vendor": "sendlane", "account": SENDLANE_ACCOUNT}]
    assert [b["key"] for b in main["budgets"]] == [f"sendlane:{SENDLANE_ACCOUNT}"] and outlet["budgets"] == []
    assert {w["sync_name"] for w in main["watermarks"]} == {"order_events", "customers"}
    assert outlet["watermarks"] == [] and outlet["runs"] == []  # no "outlet.*" sync has run
    assert client.post("/api/actions/replay", json={"store": "outlet", "ids": [1]}, headers=ADMIN).status_code == 201
    assert triggered[-1][2] == "storesync_outlet_dead_letter_replay"
    listed = client.get("/api/stores", headers=ADMIN).json()["stores"]
    assert [s["name"] for s in listed] == ["default", "outlet"]


def test_an_empty_ledger_reads_as_empty(tmp_path):
    from fastapi.testclient import TestClient

    from storesync.ui.app import StoreConfig, UIConfig, create_app

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    client = TestClient(create_app(UIConfig(stores={"shop": StoreConfig("shop", url)}, static_dir=STATIC),
                                   auth=FakeAuth()))
    data = client.get("/api/overview", headers=ADMIN).json()
    assert data["dead"]["total"] == 0 and data["accounts"] == [] and data["runs"] == []
    page = client.get("/", headers=ADMIN)
    assert page.status_code == 200 and "Nothing has been quarantined" in page.text
    assert "Data Docs (none yet)" in page.text


def test_every_vendored_asset_exists():
    from storesync.ui.datadocs import CDN_ASSETS

    vendor = STATIC / "vendor"
    for url, path in CDN_ASSETS.items():
        target = vendor / path
        assert target.is_dir() if path.endswith("/") else target.is_file(), (url, path)


def test_data_docs_are_served_with_local_assets(tmp_path):
    """A real GX site (built from a validated batch) with every CDN link pointed at the vendored
    copies, each of which the app serves."""
    import datetime as dt
    from decimal import Decimal as D

    import pandas as pd
    from fastapi.testclient import TestClient

    from storesync.quality import store_results, validate_batch
    from storesync.ui.app import StoreConfig, UIConfig, create_app
    from storesync.ui.datadocs import DataDocsSite

    row = dict(order_id=1, customer_id=1001, email="buyer@example.com", status="completed", currency="USD",
               subtotal=D("20.00"), total_tax=D("1.60"), total_discounts=D("2.00"), discount_code=None,
               total=D("19.60"), payment_method="Visa", sailthru_bid=None, created_at=dt.datetime(2025, 5, 1),
               updated_at=dt.datetime(2025, 5, 2), lines_subtotal=D("20.00"), line_count=2)
    frame = pd.DataFrame([row, {**row, "order_id": 2, "email": "broken@"}])
    outcome = validate_batch("orders", frame, run_id="run-1", batch_id="orders-0", now=dt.datetime(2025, 6, 1))
    store_results(outcome, tmp_path / "results")
    site = DataDocsSite(tmp_path / "site", tmp_path / "results")  # built on first use
    client = TestClient(create_app(UIConfig(stores={"shop": StoreConfig("shop", f"sqlite:///{tmp_path / 'l.db'}")}, static_dir=STATIC,
                                            site=site), auth=FakeAuth()), root_path="/storesync")
    index = client.get("/data-docs/", headers=ADMIN)
    assert index.status_code == 200 and "storesync_orders" in index.text
    pages = [index.text] + [client.get(f"/data-docs/{p.relative_to(tmp_path / 'site').as_posix()}", headers=ADMIN).text
                            for p in (tmp_path / "site").rglob("*.html") if p.name != "index.html"]
    loaded = set()
    for html in pages:
        for tag in re.findall(r"<(?:script|link|img)\b[^>]*>", html):
            assert "://" not in tag, f"still loads from the network: {tag}"
            assert "integrity=" not in tag
        loaded |= set(re.findall(r"(?:src|href)=\"(/storesync/static/vendor/[^\"]+)\"", html))
    assert len(loaded) >= 12
    for path in loaded:
        assert client.get(path.removeprefix("/storesync"), headers=ADMIN).status_code == 200, path
    assert client.get("/data-docs/../l.db", headers=ADMIN).status_code == 404


def test_stores_come_from_the_stores_file_and_their_connections(tmp_path, monkeypatch):
    """Inside Airflow: each store of storesync_stores.toml, its ledger from its ledger connection,
    its accounts and budgets from its vendor connections (as its DAGs resolve them)."""
    import json

    from storesync.ui.app import stores_from_airflow

    (tmp_path / "storesync_stores.toml").write_text(
        '[stores.default]\nledger_conn_id = "storesync_ledger"\nsendlane_conn_id = "sendlane_default"\n'
        'sailthru_conn_id = "sailthru_default"\n'
        '[stores.outlet]\nledger_conn_id = "storesync_ledger"\nsendlane_conn_id = "sendlane_outlet"\n')
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path))
    monkeypatch.delenv("STORESYNC_STORES", raising=False)
    connections = {
        "STORESYNC_LEDGER": {"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")},
        "SENDLANE_DEFAULT": {"conn_type": "sendlane", "password": "token-main",
                             "extra": {"account_id": "sl-main", "budget_per_minute": 120}},
        "SENDLANE_OUTLET": {"conn_type": "sendlane", "password": "token-outlet", "extra": {"account_id": "sl-outlet"}},
        "SAILTHRU_DEFAULT": {"conn_type": "sailthru", "login": "key-main", "password": "secret-main",
                             "extra": {"account_id": "st-main"}},
    }
    for name, conn in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))

    stores = stores_from_airflow()
    assert list(stores) == ["default", "outlet"]
    main, outlet = stores["default"], stores["outlet"]
    assert main.ledger_url == outlet.ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert main.scope.accounts == (("sendlane", "sl-main"), ("sailthru", "st-main")) and main.scope.sync_prefix == ""
    assert outlet.scope.accounts == (("sendlane", "sl-outlet"),) and outlet.scope.sync_prefix == "outlet."
    assert main.replay_dag == "storesync_dead_letter_replay"
    assert outlet.replay_dag == "storesync_outlet_dead_letter_replay"
    assert main.budgets["sendlane"] == (120, 60.0)
    assert "token" not in repr(stores) and "secret" not in repr(stores)  # no credential kept


def test_an_unreachable_ledger_or_a_bad_stores_file_is_a_clear_503(tmp_path):
    from fastapi.testclient import TestClient

    from storesync.core.errors import ConfigurationError
    from storesync.ui.app import StoreConfig, UIConfig, create_app

    down = StoreConfig("shop", "postgresql+psycopg://nobody:pw-not-shown@127.0.0.1:1/ledger")
    client = TestClient(create_app(UIConfig(stores={"shop": down}, static_dir=STATIC), auth=FakeAuth()))
    answer = client.get("/api/overview", headers=ADMIN)
    assert answer.status_code == 503 and answer.json()["detail"].startswith("the ledger database did not answer")
    assert "pw-not-shown" not in answer.text and "SELECT" not in answer.text

    def broken():
        raise ConfigurationError("dags/storesync_stores.toml: [stores.outlet]: unknown keys ['ledger']")

    client = TestClient(create_app(UIConfig(load_stores=broken, static_dir=STATIC), auth=FakeAuth()))
    answer = client.get("/api/overview", headers=ADMIN)
    assert answer.status_code == 503 and "[stores.outlet]: unknown keys" in answer.json()["detail"]
