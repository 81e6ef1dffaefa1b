"""Issue 6: a backfill started through the REST API, as the UI does, against Airflow's real services.

api-server + scheduler + dag-processor (LocalExecutor, PARALLELISM=4; metadata, demo store and
ledger each on a fresh PostgreSQL database) run ``storesync_order_events`` against a subprocess
emulator (limits off). A backfill over three past hourly intervals must deliver every order event
of those intervals exactly once per vendor and nothing else; a second backfill over the same range
with ``reprocess_behavior: "completed"`` re-runs all three runs and must send nothing new.

The module shares one stack and the first backfill between its two tests.
"""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from airflow_harness import (
    ORDER_EVENTS_DAG,
    AirflowStack,
    assert_interval,
    diff_report,
    expected_order_deliveries,
    iso,
    parse_time,
    quarantined_orders,
    received_writes,
    storesync_on_airflow,
    task_timings,
    utc,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HOUR = timedelta(hours=1)
BACKFILL_TIMEOUT = 300  # generous: three runs one after another (max_active_runs 1)


@pytest.fixture(scope="module")
def stack(request, postgres_admin_url, tmp_path_factory):
    """The demo store (data ending two hours ago), a subprocess emulator, and Airflow's services
    on the LocalExecutor; the DAG parsed and unpaused."""
    workdir = tmp_path_factory.mktemp("airflow-backfill")
    with storesync_on_airflow(request.config, postgres_admin_url, workdir,
                              executor="LocalExecutor") as deployment:
        yield deployment


def backfill_body(start, end, reprocess_behavior: str) -> dict:
    """What the UI's backfill form posts (BackfillPostBody, 3.3.2). Runs are made for every
    logical date in [from_date, to_date], so ``to_date`` is the last run's logical date."""
    return {"dag_id": ORDER_EVENTS_DAG, "from_date": iso(start), "to_date": iso(end - HOUR),
            "reprocess_behavior": reprocess_behavior, "max_active_runs": 1, "run_backwards": False,
            "dag_run_conf": {}}


def backfill_runs(airflow: AirflowStack, logical_dates: list) -> dict[str, dict]:
    """This range's backfill runs by logical date (ISO, UTC)."""
    wanted = {iso(d) for d in logical_dates}
    return {iso(parse_time(r["logical_date"])): r
            for r in airflow.dag_runs(ORDER_EVENTS_DAG, run_type="backfill")
            if r["logical_date"] and iso(parse_time(r["logical_date"])) in wanted}


def run_backfill(airflow: AirflowStack, body: dict, logical_dates: list) -> tuple[dict, dict]:
    """POST /api/v2/backfills, then follow GET /api/v2/backfills/{id} and the DAG runs API until
    the backfill is completed and its runs succeeded. Fails at the first failing task."""
    backfill = airflow.api("POST", "/api/v2/backfills", json=body)
    assert backfill["dag_id"] == ORDER_EVENTS_DAG and backfill["completed_at"] is None, backfill
    assert backfill["reprocess_behavior"] == body["reprocess_behavior"] and backfill["max_active_runs"] == 1
    # The runs exist (queued) as soon as the POST returns: check their intervals before waiting.
    runs = backfill_runs(airflow, logical_dates)
    assert sorted(runs) == sorted(iso(d) for d in logical_dates), runs
    for run in runs.values():
        assert_interval(run, HOUR)

    def finished():
        airflow.fail_fast(ORDER_EVENTS_DAG)
        state = airflow.api("GET", f"/api/v2/backfills/{backfill['id']}")
        runs = backfill_runs(airflow, logical_dates)
        if state["completed_at"] and all(r["state"] == "success" for r in runs.values()):
            return state, runs
        return None

    return airflow.wait_until(f"backfill {backfill['id']} completed", finished, BACKFILL_TIMEOUT, interval=2)


def wait_all_runs_finished(airflow: AirflowStack) -> list[dict]:
    """Every run of the DAG (the backfill's and the scheduler's own) finished: nothing still sends."""
    def probe():
        airflow.fail_fast(ORDER_EVENTS_DAG)
        runs = airflow.dag_runs(ORDER_EVENTS_DAG)
        return runs if all(r["state"] in ("success", "failed") for r in runs) else None

    return airflow.wait_until("all DAG runs finished", probe, 120, interval=2)


@pytest.fixture(scope="module")
def first_backfill(stack):
    """The three hours before the store's end, backfilled once (reprocess_behavior "none")."""
    airflow = stack.airflow
    start = stack.end - 3 * HOUR
    logical_dates = [utc(start + i * HOUR) for i in range(3)]
    with airflow.diagnosed("first backfill"):
        body = backfill_body(start, stack.end, "none")
        dry_run = airflow.api("POST", "/api/v2/backfills/dry_run", json=body)
        planned = [iso(parse_time(b["logical_date"])) for b in dry_run["backfills"]]
        assert planned == [iso(d) for d in logical_dates], dry_run
        started = time.monotonic()
        backfill, runs = run_backfill(airflow, body, logical_dates)
        elapsed = time.monotonic() - started
        all_runs = wait_all_runs_finished(airflow)
        timings = task_timings(airflow, ORDER_EVENTS_DAG, [r["dag_run_id"] for r in runs.values()])
    print(f"\nfirst backfill: 3 runs in {elapsed:.1f} s; queued→done per task: {timings}")
    return SimpleNamespace(start=start, end=stack.end, logical_dates=logical_dates, backfill=backfill,
                           runs=runs, all_runs=all_runs)


def test_backfill_of_three_hours_delivers_each_event_once_per_vendor(stack, first_backfill):
    airflow, emulator = stack.airflow, stack.emulator
    with airflow.diagnosed("backfill exactly-once"):
        for run in first_backfill.runs.values():
            assert run["run_type"] == "backfill" and run["state"] == "success", run
            assert_interval(run, HOUR)
        # Besides the backfill, only the scheduler's own runs, all after the store's data.
        ours = {r["dag_run_id"] for r in first_backfill.runs.values()}
        others = [r for r in first_backfill.all_runs if r["dag_run_id"] not in ours]
        assert all(r["run_type"] == "scheduled" and parse_time(r["data_interval_start"]) >= utc(stack.end)
                   for r in others), others

        held = quarantined_orders(stack.ledger_url)
        expected = expected_order_deliveries(stack.warehouse_url, first_backfill.start, first_backfill.end,
                                              excluded_orders=held)
        received = received_writes(emulator)
        assert {v for v, _, _ in expected} == {"sendlane", "sailthru"} and sum(expected.values()) >= 50, (
            f"the three hours should hold a real workload, not {dict(expected)}")
        duplicates = {k: n for k, n in received.items() if n > expected.get(k, 0)}
        assert not duplicates, f"sent more often than owed: {list(duplicates.items())[:10]}"
        # Exactly the intervals' events, once per vendor each, and nothing outside them. (A multiset:
        # an order that is fulfilled and completed within the range owes two fulfilled events.)
        assert received == expected, diff_report(expected, received)
    by_vendor = {v: sum(n for (w, _, _), n in received.items() if w == v) for v in ("sendlane", "sailthru")}
    print(f"\nbackfill delivered {by_vendor}; {len(held)} orders quarantined")


def test_reprocess_completed_backfill_sends_nothing_new(stack, first_backfill):
    airflow, emulator = stack.airflow, stack.emulator
    with airflow.diagnosed("reprocessing backfill"):
        last_seq = max((r["seq"] for r in emulator.requests()), default=0)
        started = time.monotonic()
        body = backfill_body(first_backfill.start, first_backfill.end, "completed")
        backfill, runs = run_backfill(airflow, body, first_backfill.logical_dates)
        elapsed = time.monotonic() - started
        assert backfill["id"] != first_backfill.backfill["id"]
        # Airflow clears and re-queues the existing runs (same run ids) rather than making new ones:
        # every task instance ran again, on its second try.
        for logical_date, run in runs.items():
            assert run["dag_run_id"] == first_backfill.runs[logical_date]["dag_run_id"], run
            tries = {t["task_id"]: t["try_number"]
                     for t in airflow.task_instances(ORDER_EVENTS_DAG, run["dag_run_id"])}
            assert tries and all(n >= 2 for n in tries.values()), (run["dag_run_id"], tries)
        wait_all_runs_finished(airflow)
        resent = [r for r in emulator.requests(since_seq=last_seq) if r["method"] == "POST"]
        assert resent == [], f"the reprocessing backfill sent {len(resent)} writes again, e.g. {resent[:3]}"
    print(f"\nreprocessing backfill: 3 runs in {elapsed:.1f} s, nothing sent")
