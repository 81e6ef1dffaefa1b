"""Every storesync DAG end to end with dag.test(): the demo store → the gate → both vendors (emulator).

Each test runs real DAG runs (Airflow's metadata DB, the provider's hooks from ``AIRFLOW_CONN_*``
connections) and asserts what the vendors received: each event once, reruns sending nothing.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.airflow

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
UTC = timezone.utc


@pytest.fixture
def vendors(monkeypatch, store_env):
    """Vendor connections as a deployment defines them (env-var JSON), the emulator behind them."""
    emulator = store_env["emulator"]
    monkeypatch.setenv("AIRFLOW_CONN_SENDLANE_DEFAULT", json.dumps({
        "conn_type": "sendlane", "host": emulator.sendlane_url, "password": emulator.sendlane_api_token,
        "extra": {"integration_token": emulator.sendlane_integration_token, "budget_per_minute": 6000,
                  "list_id": emulator.sendlane_list_id}}))
    monkeypatch.setenv("AIRFLOW_CONN_SAILTHRU_DEFAULT", json.dumps({
        "conn_type": "sailthru", "host": emulator.sailthru_url, "login": emulator.sailthru_api_key,
        "password": emulator.sailthru_secret}))
    for name in ("AIRFLOW_CONN_STORESYNC_SLACK", "AIRFLOW_CONN_STORESYNC_SMTP"):
        monkeypatch.delenv(name, raising=False)
    emulator.configure(job_delay_s=0.1)
    return store_env


def load_dag(dag_id: str, file: str | None = None):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR / f"{file or dag_id}.py")).get_dag(dag_id)


def warehouse(env):
    return create_engine(env["STORESYNC_WAREHOUSE_URL"])


def busiest_hour(env, sql: str) -> datetime:
    """The hour (its end, tz-aware UTC) with the most rows of ``sql`` (which selects ``updated_at``)."""
    with warehouse(env).connect() as conn:
        hour = conn.execute(text(f"SELECT substr(updated_at, 1, 13) AS h FROM ({sql}) "
                                 "GROUP BY h ORDER BY COUNT(*) DESC, h LIMIT 1")).scalar()
    return datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=UTC) + timedelta(hours=1)


def ledger_counts(env) -> Counter:
    with create_engine(env["STORESYNC_LEDGER_URL"]).connect() as conn:
        rows = conn.execute(text("SELECT state, COUNT(*) FROM storesync_deliveries GROUP BY state")).all()
    return Counter({state: n for state, n in rows})


# ---------------------------------------------------------------------------- products
def test_nightly_products_send_each_product_once_then_nothing_and_force_full_resends(airflow_db, vendors):
    emulator = vendors["emulator"]
    with warehouse(vendors).connect() as conn:
        products = {str(p) for p in conn.execute(text("SELECT product_id FROM products")).scalars()}
    dag = load_dag("storesync_products")
    night = datetime(2026, 11, 20, tzinfo=UTC)  # the interval [11-19, 11-20): the whole catalog so far
    assert dag.test(logical_date=night).state == "success"
    added = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                                   endpoint="/tracking/product-added"))
    content = emulator.requests(vendor="sailthru", endpoint="/content", method="POST")
    assert set(added) == products and set(added.values()) == {1}
    assert len(content) == len(products) == len(emulator.content())

    before = len(emulator.requests())
    assert dag.test(logical_date=night).state == "success"  # a rerun: nothing changed, nothing sent
    assert dag.test(logical_date=night + timedelta(days=1)).state == "success"  # the next night: same
    assert len(emulator.requests()) == before

    forced = dag.test(logical_date=night + timedelta(days=2), run_conf={"force_full": True})
    assert forced.state == "success"
    added = Counter(str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                                   endpoint="/tracking/product-added"))
    assert set(added.values()) == {2}  # every product once more, and only once
    assert len(emulator.requests(vendor="sailthru", endpoint="/content", method="POST")) == 2 * len(products)
    before = len(emulator.requests())
    dag = load_dag("storesync_products")  # dag.test() keeps the last run_conf in the DAG's params
    assert dag.test(logical_date=night + timedelta(days=3)).state == "success"  # back to diffing
    assert len(emulator.requests()) == before


def test_hourly_product_changes_send_only_the_hours_changes(airflow_db, vendors):
    emulator = vendors["emulator"]
    hour_end = busiest_hour(vendors, "SELECT updated_at FROM products")
    with warehouse(vendors).connect() as conn:
        changed = {str(p) for p in conn.execute(
            text("SELECT product_id FROM products WHERE updated_at >= :s AND updated_at < :e"),
            {"s": (hour_end - timedelta(hours=1)).replace(tzinfo=None), "e": hour_end.replace(tzinfo=None)})
            .scalars()}
    dag = load_dag("storesync_products_changed", "storesync_products")
    assert dag.test(logical_date=hour_end).state == "success"
    sent = [str(r["entity_id"]) for r in emulator.requests(vendor="sendlane", endpoint="/tracking/product-added")]
    assert changed and sorted(sent) == sorted(changed)
    assert len(emulator.requests(vendor="sailthru", endpoint="/content", method="POST")) == len(changed)


# ---------------------------------------------------------------------------- customers and consent
def test_customers_read_back_unsubscribes_carry_ltv_and_never_reverse_an_opt_out(airflow_db, vendors):
    from storesync.ltv import run_ltv

    emulator = vendors["emulator"]
    hour_end = busiest_hour(vendors, "SELECT updated_at FROM customers")
    start, end = (hour_end - timedelta(hours=1)).replace(tzinfo=None), hour_end.replace(tzinfo=None)
    with warehouse(vendors).connect() as conn:
        rows = conn.execute(text("SELECT customer_id, email, accepts_marketing FROM customers "
                                 "WHERE updated_at >= :s AND updated_at < :e ORDER BY customer_id"),
                            {"s": start, "e": end}).all()
    consenting = [r.email for r in rows if r.accepts_marketing]
    assert len(consenting) >= 2
    # Sendlane says this person unsubscribed (a link in an email); the store still says yes.
    emulator.configure(sendlane_unsubscribed=[{"email": consenting[0], "unsubscribed_at": "2026-11-17T08:00:00Z"}])
    engine = warehouse(vendors)
    run_ltv(engine, "2026-11-19")  # the newest LTV day, as the LTV DAG would have left it

    dag = load_dag("storesync_customers")
    run = dag.test(logical_date=hour_end)
    assert run.state == "success"

    assert emulator.requests(vendor="sendlane", endpoint="/contacts/unsubscribed")
    with create_engine(vendors["STORESYNC_LEDGER_URL"]).connect() as conn:
        recorded = set(conn.execute(text("SELECT email FROM storesync_vendor_unsubscribes "
                                         "WHERE cleared_at IS NULL")).scalars())
    assert consenting[0].lower() in recorded

    added = {r["body"]["email"]: r["body"] for r in
             emulator.requests(vendor="sendlane", endpoint="/tracking/customer-added")}
    assert set(added) == {r.email for r in rows}
    assert added[consenting[0]]["accepts_marketing"] is False
    assert added[consenting[1]]["accepts_marketing"] is True
    assert emulator.summary()["consent_reversals"] == []

    users = {u["keys"].get("extid"): u for u in emulator.users()}
    assert set(users) == {str(r.customer_id) for r in rows}
    with_ltv = [u for u in users.values() if "ltv_order_count" in u["vars"]]
    assert with_ltv and all(isinstance(u["vars"]["ltv_net_revenue"], float) for u in with_ltv)
    contacts = {c["email"]: c for c in emulator.contacts(list_id=emulator.sendlane_list_id)}
    assert contacts[consenting[0].lower()]["email_consent"] is False
    assert any("ltv_order_count" in c["custom_fields"] for c in contacts.values())

    before = len([r for r in emulator.requests() if r["method"] == "POST"])
    assert dag.test(logical_date=hour_end).state == "success"  # rerun: the readback again, no sends
    assert len([r for r in emulator.requests() if r["method"] == "POST"]) == before
    assert emulator.summary()["consent_reversals"] == []


# ---------------------------------------------------------------------------- checkouts
def test_checkouts_send_reminders_and_clear_completed_carts(airflow_db, vendors):
    emulator = vendors["emulator"]
    hour_end = busiest_hour(vendors, "SELECT updated_at FROM checkouts WHERE status = 'open' AND order_id IS NULL")
    start, end = (hour_end - timedelta(hours=1)).replace(tzinfo=None), hour_end.replace(tzinfo=None)
    with warehouse(vendors).connect() as conn:
        rows = conn.execute(text("SELECT checkout_id, status, order_id FROM checkouts "
                                 "WHERE updated_at >= :s AND updated_at < :e"), {"s": start, "e": end}).all()
    open_ids = {str(r.checkout_id) for r in rows if r.order_id is None and r.status != "completed"}
    completed = [r for r in rows if r.order_id is not None or r.status == "completed"]
    assert open_ids

    dag = load_dag("storesync_checkouts")
    # The store's data is days old: lift the reminder age limit, as for a scheduled (fresh) run.
    assert dag.test(logical_date=hour_end, run_conf={"reminder_max_age_hours": 0}).state == "success"
    started = {str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                              endpoint="/tracking/checkout-started")}
    assert started == open_ids
    carts = [r["body"] for r in emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST")]
    reminders = [c for c in carts if c["items"]]
    cleared = [c for c in carts if not c["items"]]
    assert all(c["incomplete"] == 1 for c in carts)
    assert len(reminders) == len(open_ids)
    assert all(c["reminder_template"] == "abandoned-cart" and c["reminder_time"] == "+3 hours" for c in reminders)
    assert len(cleared) == len(completed) and all("reminder_template" not in c for c in cleared)

    before = len(emulator.requests())
    assert dag.test(logical_date=hour_end, run_conf={"reminder_max_age_hours": 0}).state == "success"
    assert len(emulator.requests()) == before

    # A backfill of an older hour with the default age limit: clearing calls only, no reminders.
    older = hour_end - timedelta(hours=6)
    dag = load_dag("storesync_checkouts")  # dag.test() keeps the last run_conf in the DAG's params
    assert dag.test(logical_date=older).state == "success"
    later = [r["body"] for r in emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST")][len(carts):]
    assert all(not c["items"] for c in later)
    assert {str(r["entity_id"]) for r in emulator.requests(vendor="sendlane",
                                                           endpoint="/tracking/checkout-started")} == open_ids


# ---------------------------------------------------------------------------- LTV
def test_daily_ltv_is_idempotent_pushes_the_newest_figures_and_a_backfill_pushes_nothing(airflow_db, vendors):
    emulator = vendors["emulator"]
    dag = load_dag("storesync_ltv")
    day = datetime(2026, 11, 20, tzinfo=UTC)  # interval [11-19, 11-20): as_of 2026-11-19
    assert dag.test(logical_date=day).state == "success"
    query = text("SELECT customer_id, order_count, net_revenue, predicted_clv FROM storesync_customer_ltv "
                 "WHERE as_of = :d ORDER BY customer_id")
    with warehouse(vendors).connect() as conn:
        first = conn.execute(query, {"d": "2026-11-19"}).all()
    assert first
    users = [u for u in emulator.users() if "ltv_order_count" in u["vars"]]
    assert len(users) == len(first)
    assert {u["keys"]["extid"]: u["vars"]["ltv_order_count"] for u in users} == \
        {str(r.customer_id): r.order_count for r in first}

    before = len(emulator.requests())
    assert dag.test(logical_date=day).state == "success"  # same numbers, nothing to push
    with warehouse(vendors).connect() as conn:
        assert conn.execute(query, {"d": "2026-11-19"}).all() == first
    assert len(emulator.requests()) == before

    # A backfill of the day before computes that day and leaves the newer figures at the vendors.
    assert dag.test(logical_date=day - timedelta(days=1)).state == "success"
    with warehouse(vendors).connect() as conn:
        assert conn.execute(query, {"d": "2026-11-18"}).all()
    assert len(emulator.requests()) == before

    # The day again, now from the day before; then recomputed in full on request: same numbers.
    runs = text("SELECT method, from_as_of FROM storesync_ltv_runs WHERE as_of = :d")
    assert dag.test(logical_date=day).state == "success"
    with warehouse(vendors).connect() as conn:
        assert conn.execute(query, {"d": "2026-11-19"}).all() == first
    assert dag.test(logical_date=day, run_conf={"full_recompute": True}).state == "success"
    with warehouse(vendors).connect() as conn:
        assert conn.execute(query, {"d": "2026-11-19"}).all() == first
        assert tuple(conn.execute(runs, {"d": "2026-11-19"}).one()) == ("full", None)
    assert len(emulator.requests()) == before


# ---------------------------------------------------------------------------- historical sync
def test_historical_sync_imports_purchases_by_job_and_a_rerun_sends_nothing(airflow_db, vendors):
    emulator = vendors["emulator"]
    dag = load_dag("storesync_historical_sync", "storesync_historical_sync")
    conf = {"entities": ["orders"], "start_date": "2026-11-17", "end_date": "2026-11-18",
            "job_poll_seconds": 0.05}
    when = datetime(2026, 11, 23, 6, tzinfo=UTC)

    assert dag.test(logical_date=when, run_conf=conf).state == "success"  # dry run by default
    assert emulator.requests() == []

    live = {**conf, "dry_run": False}
    assert dag.test(logical_date=when + timedelta(minutes=1), run_conf=live).state == "success"
    with warehouse(vendors).connect() as conn:
        placed = {str(o) for o in conn.execute(text(
            "SELECT order_id FROM order_status_history GROUP BY order_id "
            "HAVING MIN(changed_at) >= '2026-11-17' AND MIN(changed_at) < '2026-11-19'")).scalars()}
    jobs = emulator.jobs()
    assert jobs and {j["name"] for j in jobs} == {"purchase_import"} and all(j["status"] == "completed" for j in jobs)
    purchases = emulator.purchases()
    assert {p["extid"] for p in purchases} == placed and {p["source"] for p in purchases} == {"job"}
    assert len(purchases) == len(placed)  # once each
    assert not emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST", source="api")
    order_placed = emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed")
    assert {str(r["entity_id"]) for r in order_placed} == placed
    end_of_range = datetime(2026, 11, 19, tzinfo=UTC).timestamp()
    assert all(r["body"]["initial_sync"] is True and r["body"]["time"] < end_of_range for r in order_placed)

    before = len(emulator.requests())
    assert dag.test(logical_date=when + timedelta(minutes=2), run_conf=live).state == "success"
    assert len(emulator.requests()) == before  # every day checkpointed: nothing sent, nothing polled

    # The live hourly order DAG over one of those hours now sends nothing the history already sent.
    hour = datetime(2026, 11, 18, 12, tzinfo=UTC)
    assert load_dag("storesync_order_events").test(logical_date=hour).state == "success"
    assert Counter(p["extid"] for p in emulator.purchases()).most_common(1)[0][1] == 1


# ---------------------------------------------------------------------------- dead letters, monitor, replay
class WebhookReceiver:
    def __init__(self):
        self.posts: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/storesync"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_dead_letters_alert_through_the_monitor_and_replay_resends_them_after_the_fix(airflow_db, vendors,
                                                                                   monkeypatch):
    emulator = vendors["emulator"]
    receiver = WebhookReceiver()
    monkeypatch.setenv("AIRFLOW_CONN_STORESYNC_SLACK", json.dumps({"conn_type": "http", "host": receiver.url}))
    try:
        # Sailthru lost the abandoned-cart template: every reminder is refused (error 14) for good.
        emulator.configure(sailthru_templates=["purchase receipt"])
        hour_end = busiest_hour(vendors, "SELECT updated_at FROM checkouts WHERE status = 'open' AND order_id IS NULL")
        assert load_dag("storesync_checkouts").test(
            logical_date=hour_end, run_conf={"reminder_max_age_hours": 0}).state == "success"
        dead = ledger_counts(vendors)["dead"]
        assert dead >= 1

        # The monitor's interval that saw them alerts once, to the webhook, without customer emails.
        with create_engine(vendors["STORESYNC_LEDGER_URL"]).connect() as conn:
            died = conn.execute(text("SELECT MIN(updated_at) FROM storesync_deliveries WHERE state = 'dead'")).scalar()
        died = datetime.fromisoformat(str(died)).replace(tzinfo=UTC)
        boundary = died.replace(minute=0, second=0, microsecond=0) + timedelta(minutes=30 * (died.minute // 30 + 1))
        monitor = load_dag("storesync_monitor")
        assert monitor.test(logical_date=boundary).state == "success"
        dead_alerts = [p for p in receiver.posts if p.get("kind") == "dead_letters"]
        assert len(dead_alerts) == 1 and dead_alerts[0]["counts"]["dead"] == dead
        assert dead_alerts[0]["dag_id"] == "storesync_monitor" and "sailthru" in dead_alerts[0]["text"]
        assert any(p.get("kind") == "no_progress" for p in receiver.posts)  # the store's data is days old
        assert not re.search(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.", json.dumps(receiver.posts))  # no emails
        # The next interval has nothing new to report about dead letters.
        assert monitor.test(logical_date=boundary + timedelta(minutes=30)).state == "success"
        assert len([p for p in receiver.posts if p.get("kind") == "dead_letters"]) == 1

        replay = load_dag("storesync_dead_letter_replay")
        sent_before = len(emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST"))
        assert replay.test(logical_date=datetime(2026, 11, 23, 8, tzinfo=UTC)).state == "success"  # dry run
        assert ledger_counts(vendors)["dead"] == dead
        assert len(emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST")) == sent_before

        emulator.configure(sailthru_templates=["abandoned-cart", "purchase receipt"])  # the fix
        run = replay.test(logical_date=datetime(2026, 11, 23, 9, tzinfo=UTC),
                          run_conf={"vendor": "sailthru", "event_type": "incomplete_purchase", "dry_run": False})
        assert run.state == "success"
        counts = ledger_counts(vendors)
        assert counts["dead"] == 0
        resent = emulator.requests(vendor="sailthru", endpoint="/purchase", method="POST")[sent_before:]
        assert len(resent) == dead and all(r["body"]["reminder_template"] == "abandoned-cart" for r in resent)
        assert len({r["entity_id"] for r in resent}) == dead
    finally:
        receiver.close()
