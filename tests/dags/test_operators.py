"""The storesync operators in DAGs of a user's own, run with dag.test() against the emulator, and
failures of the shipped DAGs alerting from real runs (task-level callbacks).

Warehouse and ledger come from Airflow connections here (``AIRFLOW_CONN_*`` of type sqlite), not
from ``STORESYNC_*``: the settings file is pointed at nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.dags.test_dag_suite import WebhookReceiver, busiest_hour, load_dag

pytestmark = pytest.mark.airflow
UTC = timezone.utc

BRAND_A = {"api_token": "brand-a-api-token-0001", "integration_token": "brand-a-integration-0001"}
BRAND_B = {"api_token": "brand-b-api-token-0002", "integration_token": "brand-b-integration-0002"}


def set_conn(monkeypatch, conn_id: str, value: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))


@pytest.fixture
def from_connections(monkeypatch, store_env, tmp_path):
    """Warehouse and ledger only as Airflow connections: no STORESYNC_* URL is left to fall back on."""
    warehouse = store_env["STORESYNC_WAREHOUSE_URL"].removeprefix("sqlite:///")
    ledger = str(tmp_path / "ledger_from_connection.db")
    for name in ("STORESYNC_WAREHOUSE_URL", "STORESYNC_LEDGER_URL"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("STORESYNC_HOME", str(tmp_path / "nowhere"))  # the settings' defaults lead nowhere useful
    set_conn(monkeypatch, "storesync_warehouse", {"conn_type": "sqlite", "host": warehouse})
    set_conn(monkeypatch, "storesync_ledger", {"conn_type": "sqlite", "host": ledger})
    for name in ("AIRFLOW_CONN_STORESYNC_SLACK", "AIRFLOW_CONN_STORESYNC_SMTP"):
        monkeypatch.delenv(name, raising=False)
    return {**store_env, "ledger_path": ledger, "warehouse_path": warehouse}


def sendlane_conn(emulator, token: dict, **extra) -> dict:
    return {"conn_type": "sendlane", "host": emulator.sendlane_url, "password": token["api_token"],
            "extra": {"integration_token": token["integration_token"], "budget_per_minute": 6000, **extra}}


def run_own_dag(dag, tmp_path, **test_kwargs):
    """``dag.test()`` of a DAG built in a test: dag.test() runs only DAGs serialized from a bundle,
    so it goes into the metadata DB under the dags-folder bundle first (as a DAG file there would)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(tmp_path / "no_dag_files_here"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(**test_kwargs)


def two_account_dag():
    from airflow.sdk import DAG, CronDataIntervalTimetable

    from storesync.provider.operators.sendlane import SendlaneDeliverOperator
    from storesync.provider.operators.sync import StoresyncFinishOperator, StoresyncPlanOperator

    with DAG("two_sendlane_accounts", schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"), start_date=datetime(2026, 1, 1), catchup=False,
             default_args={"owner": "test", "retries": 0}) as dag:
        plans, delivers = [], []
        for brand in ("brand_a", "brand_b"):
            sync = f"{brand}.orders"
            plans.append(StoresyncPlanOperator(task_id=f"plan_{brand}", entity="orders", sync_name=sync,
                                               sendlane_conn_id=f"sendlane_{brand}", sailthru_conn_id=None))
            deliver = SendlaneDeliverOperator(task_id=f"deliver_{brand}", sync_name=sync,
                                              sendlane_conn_id=f"sendlane_{brand}")
            deliver >> StoresyncFinishOperator(task_id=f"finish_{brand}", sync_name=sync)
            delivers.append(deliver)
        # Both plans before either delivers: each account's delivery meets the other's open rows.
        plans >> delivers[0] >> delivers[1]
    return dag


def test_two_accounts_of_one_vendor_keep_their_own_ledger_key_budget_and_events(airflow_db, from_connections,
                                                                              monkeypatch, tmp_path):
    from storesync.core.config import fingerprint

    emulator = from_connections["emulator"]
    emulator.configure(sendlane_accounts={"brand_a": BRAND_A, "brand_b": BRAND_B})
    set_conn(monkeypatch, "sendlane_brand_a", sendlane_conn(emulator, BRAND_A))
    set_conn(monkeypatch, "sendlane_brand_b", sendlane_conn(emulator, BRAND_B))
    hour_end = busiest_hour(from_connections, "SELECT changed_at AS updated_at FROM order_status_history")

    run = run_own_dag(two_account_dag(), tmp_path, logical_date=hour_end)
    assert run.state == "success"

    placed = {brand: Counter(str(r["entity_id"]) for r in emulator.requests(
        vendor="sendlane", endpoint="/tracking/order-placed", account=brand)) for brand in ("brand_a", "brand_b")}
    assert placed["brand_a"] and placed["brand_a"] == placed["brand_b"]  # the same store's orders, to both
    assert set(placed["brand_a"].values()) == {1}  # once each, per account
    # The emulator files each request under the account its token belongs to: nothing went to the
    # emulator's default account, and each account got exactly its own events.
    posts = [r for r in emulator.requests(vendor="sendlane") if r["method"] == "POST"]
    assert Counter(r["account"] for r in posts) == {"brand_a": len(posts) // 2, "brand_b": len(posts) // 2}

    ledger = create_engine(f"sqlite:///{from_connections['ledger_path']}")
    keys = {"brand_a": fingerprint(BRAND_A["api_token"]), "brand_b": fingerprint(BRAND_B["api_token"])}
    with ledger.connect() as conn:
        rows = conn.execute(text("SELECT account, sync_name, state, COUNT(*) FROM storesync_deliveries "
                                 "GROUP BY account, sync_name, state")).all()
        budgets = set(conn.execute(text("SELECT DISTINCT key FROM storesync_rate_slots")).scalars())
        marks = set(conn.execute(text("SELECT sync_name FROM storesync_watermarks")).scalars())
    assert {(a, s, st) for a, s, st, _ in rows} == {(keys["brand_a"], "brand_a.orders", "accepted"),
                                                    (keys["brand_b"], "brand_b.orders", "accepted")}
    assert {f"sendlane:{keys['brand_a']}", f"sendlane:{keys['brand_b']}"} <= budgets
    assert marks == {"brand_a.orders", "brand_b.orders"}

    before = len(emulator.requests())
    assert run_own_dag(two_account_dag(), tmp_path, logical_date=hour_end).state == "success"  # a rerun: nothing
    assert len(emulator.requests()) == before


def test_one_task_sync_operator_for_an_account_set_by_id(airflow_db, from_connections, monkeypatch, tmp_path):
    """``SailthruSyncOperator`` plans, sends and settles in one task; the account is the connection's
    ``account_id``, and its ledger rows carry it."""
    from airflow.sdk import DAG, CronDataIntervalTimetable

    from storesync.provider.operators.sailthru import SailthruSyncOperator

    emulator = from_connections["emulator"]
    set_conn(monkeypatch, "sailthru_main", {"conn_type": "sailthru", "host": emulator.sailthru_url,
                                            "login": emulator.sailthru_api_key, "password": emulator.sailthru_secret,
                                            "extra": {"account_id": "acme-main"}})
    with DAG("one_task_sync", schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), start_date=datetime(2026, 1, 1), catchup=False,
             default_args={"owner": "test", "retries": 0}) as dag:
        SailthruSyncOperator(task_id="products_to_sailthru", entity="products", sync_name="acme.products",
                             sailthru_conn_id="sailthru_main", full_catalog=True)
    night = datetime(2026, 11, 20, tzinfo=UTC)
    assert run_own_dag(dag, tmp_path, logical_date=night).state == "success"
    content = emulator.requests(vendor="sailthru", endpoint="/content", method="POST")
    with create_engine(f"sqlite:///{from_connections['warehouse_path']}").connect() as conn:
        products = conn.execute(text("SELECT COUNT(*) FROM products")).scalar()
    assert len(content) == products
    with create_engine(f"sqlite:///{from_connections['ledger_path']}").connect() as conn:
        assert set(conn.execute(text("SELECT DISTINCT account FROM storesync_deliveries")).scalars()) == {"acme-main"}
        assert conn.execute(text("SELECT window_end FROM storesync_watermarks WHERE sync_name = 'acme.products'")
                            ).scalar() is not None
    assert not emulator.requests(vendor="sendlane")


# ---------------------------------------------------------------------------- failures, from real runs
def task_instance(run, task_id: str):
    return next(ti for ti in run.get_task_instances() if ti.task_id == task_id)


@pytest.fixture
def receiver(monkeypatch):
    hook = WebhookReceiver()
    monkeypatch.setenv("AIRFLOW_CONN_STORESYNC_SLACK", json.dumps({"conn_type": "http", "host": hook.url}))
    yield hook
    hook.close()


def test_wrong_token_fails_at_once_and_the_alert_names_task_vendor_http_401_and_the_fix(
        airflow_db, from_connections, monkeypatch, receiver):
    emulator = from_connections["emulator"]
    wrong = {"api_token": "mistyped-token-Zx81Kq", "integration_token": emulator.sendlane_integration_token}
    set_conn(monkeypatch, "sendlane_default", sendlane_conn(emulator, wrong))
    set_conn(monkeypatch, "sailthru_default", {"conn_type": "sailthru", "host": emulator.sailthru_url,
                                               "login": emulator.sailthru_api_key,
                                               "password": emulator.sailthru_secret})
    hour_end = busiest_hour(from_connections, "SELECT changed_at AS updated_at FROM order_status_history")
    run = load_dag("storesync_order_events").test(logical_date=hour_end)

    assert run.state == "failed"
    failed = task_instance(run, "deliver_sendlane")
    assert failed.state == "failed" and failed.try_number == 1  # no Airflow retries for a 401
    assert task_instance(run, "deliver_sailthru").state == "success"  # the other vendor still delivered
    alerts = [p for p in receiver.posts if p.get("kind") == "failed_run"]
    assert len(alerts) == 1
    text_ = alerts[0]["text"]
    for needed in ("storesync_order_events", "deliver_sendlane", "Vendor: sendlane", "Connection: sendlane_default",
                   "HTTP 401", "Next step: fix the API token", "waiting_in_ledger="):
        assert needed in text_, (needed, text_)
    assert wrong["api_token"] not in json.dumps(receiver.posts)
    assert not emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed")


def test_quarantine_over_threshold_fails_the_plan_at_once_and_alerts_from_the_run(
        airflow_db, from_connections, monkeypatch, receiver, tmp_path):
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    emulator = from_connections["emulator"]
    bad_store = tmp_path / "bad_store.db"
    end = datetime(2026, 11, 20)
    generate_demo_store(f"sqlite:///{bad_store}", DemoStoreSpec(orders=300, seed=3, end=end, days=2, bad_share=0.4))
    set_conn(monkeypatch, "storesync_warehouse", {"conn_type": "sqlite", "host": str(bad_store)})
    set_conn(monkeypatch, "sendlane_default", sendlane_conn(emulator, {
        "api_token": emulator.sendlane_api_token, "integration_token": emulator.sendlane_integration_token}))
    run = load_dag("storesync_products").test(logical_date=end.replace(tzinfo=UTC))

    assert run.state == "failed"
    plan = task_instance(run, "plan_catalog")
    assert plan.state == "failed" and plan.try_number == 1
    alerts = [p for p in receiver.posts if p.get("kind") == "quarantine"]
    assert len(alerts) == 1, receiver.posts
    # Most rows fail one check (url_present): the advice names the model (run_report.model_at_fault).
    assert "products" in alerts[0]["text"] and "Next step: fix the products model" in alerts[0]["text"]
    assert "Task: plan_catalog" in alerts[0]["text"]
    assert not emulator.requests()


def test_held_deliveries_fail_the_task_with_the_command_that_resolves_them(
        airflow_db, from_connections, monkeypatch, receiver):
    emulator = from_connections["emulator"]
    set_conn(monkeypatch, "sendlane_default", sendlane_conn(emulator, {
        "api_token": emulator.sendlane_api_token, "integration_token": emulator.sendlane_integration_token}))
    hour_end = busiest_hour(from_connections, "SELECT updated_at FROM checkouts WHERE status = 'open'")
    conf = {"reminder_max_age_hours": 0}
    assert load_dag("storesync_checkouts").test(logical_date=hour_end, run_conf=conf).state == "success"
    # Sendlane's answers to the checkout events were lost an hour ago (it keeps no checkout id to look
    # them up by: past the grace, the rules run), and a contact read found contacts that prove
    # nothing (noted contact_found): no rule settles them.
    an_hour_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    with create_engine(f"sqlite:///{from_connections['ledger_path']}").begin() as conn:
        held = conn.execute(text("UPDATE storesync_deliveries SET state = 'unknown', "
                                 "vendor_code = 'contact_found', updated_at = :at "
                                 "WHERE vendor = 'sendlane' AND event_type = 'checkout_started'"),
                            {"at": an_hour_ago}).rowcount
    assert held
    run = load_dag("storesync_checkouts").test(logical_date=hour_end, run_conf=conf)

    assert run.state == "failed"
    failed = task_instance(run, "deliver_sendlane")
    assert failed.state == "failed" and failed.try_number == 1
    assert task_instance(run, "deliver_sailthru").state == "success"
    alerts = [p for p in receiver.posts if p.get("kind") == "failed_run"]
    assert len(alerts) == 1
    assert f"held_unknown={held}" in alerts[0]["text"] and "storesync reconcile" in alerts[0]["text"]
    assert "Vendor: sendlane" in alerts[0]["text"] and "Task: deliver_sendlane" in alerts[0]["text"]


def test_stores_file_generates_each_stores_dags_with_its_connections(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    stores = tmp_path / "stores.toml"
    stores.write_text('[stores.default]\n\n[stores.outlet]\nwarehouse_conn_id = "outlet_warehouse"\n'
                      'sendlane_conn_id = "sendlane_outlet"\n')
    monkeypatch.setenv("STORESYNC_STORES", str(stores))
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    assert bag.import_errors == {}
    outlet = bag.get_dag("storesync_outlet_order_events")
    assert outlet is not None and bag.get_dag("storesync_order_events") is not None
    assert {t.task_id for t in outlet.tasks} == {"plan_order_events", "deliver_sendlane", "finish"}  # no Sailthru
    plan = outlet.get_task("plan_order_events")
    assert (plan.sync_name, plan.warehouse_conn_id, plan.sendlane_conn_id, plan.sailthru_conn_id) == \
        ("outlet.order_events", "outlet_warehouse", "sendlane_outlet", None)
    assert bag.get_dag("storesync_outlet_customers").get_task("read_unsubscribes").sendlane_conn_id == "sendlane_outlet"
    default_plan = bag.get_dag("storesync_order_events").get_task("plan_order_events")
    assert (default_plan.sync_name, default_plan.sendlane_conn_id) == ("order_events", "sendlane_default")
    assert bag.get_dag("storesync_monitor") is not None  # one monitor: both stores share the ledger
    assert not [d for d in bag.dag_ids if d.startswith("storesync_monitor_")]
    for dag in bag.dags.values():
        assert dag.description, dag.dag_id
        for task in dag.tasks:
            assert task.on_failure_callback, (dag.dag_id, task.task_id)


def test_deliveries_waiting_behind_a_dead_letter_alert_from_the_run_without_failing_it(
        airflow_db, from_connections, monkeypatch, receiver):
    from sqlalchemy import insert, select, update

    from storesync.delivery.ledger import deliveries

    emulator = from_connections["emulator"]
    set_conn(monkeypatch, "sendlane_default", sendlane_conn(emulator, {
        "api_token": emulator.sendlane_api_token, "integration_token": emulator.sendlane_integration_token}))
    hour_end = busiest_hour(from_connections, "SELECT changed_at AS updated_at FROM order_status_history")
    dag = load_dag("storesync_order_events")
    assert dag.test(logical_date=hour_end).state == "success"
    # An order's purchase became a dead letter, and its next event waits behind it.
    with create_engine(f"sqlite:///{from_connections['ledger_path']}").begin() as conn:
        first = conn.execute(select(deliveries).where(deliveries.c.vendor == "sendlane")
                             .order_by(deliveries.c.id).limit(1)).mappings().one()
        conn.execute(update(deliveries).where(deliveries.c.id == first["id"]).values(state="dead"))
        later = {k: v for k, v in first.items() if k != "id"}
        later.update(delivery_key=first["delivery_key"] + "-next", version=first["version"] + "-next",
                     seq=first["seq"] + 1, state="planned", attempts=0)
        conn.execute(insert(deliveries).values(**later))
    run = load_dag("storesync_order_events").test(logical_date=hour_end)

    assert run.state == "success"  # everything else went; the waiting row is a person's to heal
    with create_engine(f"sqlite:///{from_connections['ledger_path']}").connect() as conn:
        state = conn.execute(select(deliveries.c.state)
                             .where(deliveries.c.delivery_key == later["delivery_key"])).scalar_one()
    assert state == "planned"  # not sent ahead of its dead letter
    waiting = [p for p in receiver.posts if "wait behind dead letters" in p["text"]]
    assert len(waiting) == 1 and waiting[0]["counts"]["waiting_behind_dead"] == 1
    assert "Vendor: sendlane" in waiting[0]["text"] and "storesync replay --vendor sendlane" in waiting[0]["text"]


@pytest.mark.slow
def test_a_wrong_token_on_one_account_never_takes_its_events_from_it(airflow_db, from_connections,
                                                                    monkeypatch, tmp_path):
    """Brand B's token is mistyped: B's deliveries wait (its task fails on auth, run after run) and
    are never taken over (sent or superseded) by brand A, whose credential works."""
    emulator = from_connections["emulator"]
    emulator.configure(sendlane_accounts={"brand_a": BRAND_A, "brand_b": BRAND_B})
    set_conn(monkeypatch, "sendlane_brand_a", sendlane_conn(emulator, BRAND_A))
    set_conn(monkeypatch, "sendlane_brand_b", sendlane_conn(emulator, {**BRAND_B, "api_token": "brand-b-typo"}))
    hour_end = busiest_hour(from_connections, "SELECT changed_at AS updated_at FROM order_status_history")

    first = run_own_dag(two_account_dag(), tmp_path, logical_date=hour_end)
    assert first.state == "failed" and task_instance(first, "deliver_brand_b").state == "failed"
    sent_to_a = len(emulator.requests(vendor="sendlane", account="brand_a"))
    assert sent_to_a and not emulator.requests(vendor="sendlane", account="brand_b")

    second = run_own_dag(two_account_dag(), tmp_path, logical_date=hour_end)  # B still mistyped
    assert task_instance(second, "deliver_brand_b").state == "failed"
    assert len(emulator.requests(vendor="sendlane", account="brand_a")) == sent_to_a  # nothing of B's went to A


def test_deliver_and_finish_tasks_never_look_the_warehouse_connection_up(airflow_db, from_connections, monkeypatch,
                                                                           tmp_path):
    """They send and settle what the ledger holds: a warehouse id that names no connection (which
    fails any task that looks it up) does not stop them; each lookup is an Execution API round trip."""
    from airflow.sdk import DAG, CronDataIntervalTimetable

    from storesync.provider.operators.sailthru import SailthruDeliverOperator
    from storesync.provider.operators.sendlane import SendlaneDeliverOperator
    from storesync.provider.operators.sync import StoresyncFinishOperator, StoresyncPlanOperator

    emulator = from_connections["emulator"]
    hour_end = busiest_hour(from_connections, "SELECT changed_at AS updated_at FROM order_status_history")
    nowhere = {"warehouse_conn_id": "no_such_warehouse"}
    with DAG("sends_without_the_warehouse", schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
             start_date=datetime(2026, 1, 1), catchup=False, default_args={"owner": "test", "retries": 0}) as dag:
        (StoresyncPlanOperator(task_id="plan", entity="orders", sync_name="orders")
         >> [SendlaneDeliverOperator(task_id="deliver_sendlane", sync_name="orders", **nowhere),
             SailthruDeliverOperator(task_id="deliver_sailthru", sync_name="orders", **nowhere)]
         >> StoresyncFinishOperator(task_id="finish", sync_name="orders", **nowhere))
    assert run_own_dag(dag, tmp_path, logical_date=hour_end).state == "success"
    assert emulator.requests(vendor="sendlane") and emulator.requests(vendor="sailthru")
    with pytest.raises(Exception, match="no_such_warehouse"):  # the plan does read it
        from storesync.provider.connections import get_connection

        get_connection("no_such_warehouse")
