"""``airflow_backfill``: a backfill of N hourly windows in a real Airflow, against the same-shaped
DAG whose tasks do nothing, in the same run (issue 21).

One Airflow 3.3 deployment (api-server, scheduler, dag-processor; LocalExecutor with
``AIRFLOW__CORE__PARALLELISM=4``; metadata, demo store and ledger each a fresh PostgreSQL
database) holds both DAGs: ``storesync_order_events`` and ``bench_noop_order_events``
(``bench/airflow_noop_dag.py``: plan, a deliver task per vendor, finish; each task a real task
process that returns at once). Each gets one backfill through the REST API, as the UI posts it
(``POST /api/v2/backfills``, the form's default ``max_active_runs`` 10), over the same N hourly
windows of the demo store (a few orders an hour), one after the other; storesync's against the
emulator (a subprocess; rate limits off and storesync's budgets lifted to 6,000/min as in the
end-to-end tests, so this measures per-run cost, not the vendors' budgets). The clock runs from
the POST to the backfill's ``completed_at`` with every run succeeded.

Reported: seconds per run of each and their ratio (target ≤ 1.5), every expected delivery
accepted by the emulator (a run that sends nothing would be fast for the wrong reason), and
where storesync's time goes: per task, the mean task-instance duration of storesync's task
against the no-op's (the difference is storesync's own work: imports, the quality gate, the
warehouse, the ledger, sending), and from the plan tasks' own log lines the quality gate's
seconds and whether any task had to build Great Expectations itself (it should not:
``StoresyncLocalExecutor`` builds it once in the scheduler, before the workers fork).

``--quick``: 12 windows (CI proves the harness; the figure needs the full size). Full: 720 (a month).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from bench.common import BENCH_DIR, REPO, Check, Measurement, log

HOUR = timedelta(hours=1)
ORDERS_PER_HOUR = 5  # "a few orders" per window, as in the issue
EXECUTOR = "storesync.provider.executors.StoresyncLocalExecutor"
NOOP_DAG_ID = "bench_noop_order_events"  # bench/airflow_noop_dag.py (not imported here: it makes a DAG)
BACKFILL_MAX_ACTIVE_RUNS = 10  # the UI form's default (BackfillPostBody, 3.3.2)


def _harness():
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import airflow_harness

    return airflow_harness


def _backfill(airflow, h, dag_id: str, start, end, timeout: float) -> dict:
    """POST one backfill over [start, end) and wait for it; returns its timings and run ids."""
    body = {"dag_id": dag_id, "from_date": h.iso(start), "to_date": h.iso(end - HOUR),
            "reprocess_behavior": "none", "max_active_runs": BACKFILL_MAX_ACTIVE_RUNS, "run_backwards": False,
            "dag_run_conf": {}}
    started = time.monotonic()
    backfill = airflow.api("POST", "/api/v2/backfills", json=body)

    def done():
        airflow.fail_fast(dag_id)
        state = airflow.api("GET", f"/api/v2/backfills/{backfill['id']}")
        if not state["completed_at"]:
            return None
        runs = [r for r in _all_runs(airflow, dag_id) if r["run_type"] == "backfill"]
        return runs if all(r["state"] == "success" for r in runs) else None

    runs = airflow.wait_until(f"backfill of {dag_id}", done, timeout, interval=2)
    elapsed = time.monotonic() - started
    return {"elapsed_s": elapsed, "runs": [r["dag_run_id"] for r in runs]}


def _all_runs(airflow, dag_id: str) -> list[dict]:
    runs, offset = [], 0
    while True:
        page = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100, "offset": offset})
        runs.extend(page["dag_runs"])
        offset += len(page["dag_runs"])
        if not page["dag_runs"] or offset >= page["total_entries"]:
            return runs


def _task_durations(airflow, dag_id: str, run_ids) -> dict[str, dict]:
    """task id → mean and median duration (s) of its instances in the backfill's runs."""
    run_ids = set(run_ids)
    by_task: dict[str, list[float]] = defaultdict(list)
    offset = 0
    while True:
        page = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances",
                           params={"limit": 100, "offset": offset, "state": ["success"]})
        for ti in page["task_instances"]:
            if ti.get("duration") is not None and ti["dag_run_id"] in run_ids:
                by_task[ti["task_id"]].append(float(ti["duration"]))
        offset += len(page["task_instances"])
        if not page["task_instances"] or offset >= page["total_entries"]:
            break
    return {task: {"mean_s": statistics.fmean(d), "median_s": statistics.median(d), "n": len(d)}
            for task, d in sorted(by_task.items())}


GATE_LINE = re.compile(r"quality gate \w+ batch \S+: \d+ in, .* in (\d+\.\d+) s")


def _plan_logs(home: Path, dag_id: str) -> dict:
    """From the plan tasks' own log files: quality gate seconds per task, and how many tasks had
    to build Great Expectations themselves ("great expectations ready in ...")."""
    gate, cold, tasks = [], 0, 0
    for path in (home / "logs").glob(f"dag_id={dag_id}/run_id=backfill__*/task_id=plan_order_events/*.log"):
        text = path.read_text(errors="replace")
        tasks += 1
        gate.append(sum(float(m) for m in GATE_LINE.findall(text)))
        cold += "great expectations ready in" in text
    return {"plan_tasks_read": tasks, "gx_built_in_task": cold,
            "quality_gate_mean_s": statistics.fmean(gate) if gate else None}


def measure_airflow_backfill(quick: bool, windows: int | None = None) -> Measurement:
    from bench.stores import pg_admin_url, pg_available

    h = _harness()
    windows = windows or (12 if quick else 720)
    m = Measurement(
        name="airflow_backfill",
        description=f"one REST backfill of {windows} hourly order-events windows in Airflow (LocalExecutor, "
                    "parallelism 4) vs a no-op DAG of the same shape, same run",
        target="storesync ≤ 1.5× the no-op DAG's seconds per run",
        sizes={"windows": windows, "orders_per_hour": ORDERS_PER_HOUR, "executor": EXECUTOR,
               "parallelism": 4, "backfill_max_active_runs": BACKFILL_MAX_ACTIVE_RUNS},
    )
    problem = pg_available()
    if problem:
        m.error = f"PostgreSQL needed: {problem}"
        return m

    from storesync.emulator.testing import start_emulator
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    admin = pg_admin_url()
    urls: dict[str, str] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-airflow-backfill-"))
    try:
        for name in ("airflow", "store", "ledger"):
            urls[name] = _create_database(admin, f"storesync_bench_af_{name}")
        end = h.recent_hours(gap_hours=2)
        days = -(-windows // 24) + 1  # a day more: the first windows hold orders changing status
        started = time.perf_counter()
        generate_demo_store(urls["store"], DemoStoreSpec(orders=ORDERS_PER_HOUR * 24 * days, seed=21, end=end,
                                                          days=days, bad_share=0.0))
        h.create_storesync_schema(urls["ledger"])
        log(f"  demo store of {ORDERS_PER_HOUR * 24 * days:,} orders over {days} days in "
            f"{time.perf_counter() - started:.0f} s")
        with start_emulator(in_process=False, rate_limits_enabled=False, record_bodies=False) as emulator:
            env = h.storesync_env(workdir, warehouse_url=urls["store"], ledger_url=urls["ledger"], emulator=emulator)
            stack = h.AirflowStack(workdir, sql_alchemy_conn=urls["airflow"], executor=EXECUTOR,
                                   dag_files=(h.DAGS_DIR / f"{h.ORDER_EVENTS_DAG}.py",
                                              BENCH_DIR / "airflow_noop_dag.py"),
                                   extra_env=env)
            try:
                with stack.diagnosed("airflow_backfill"):
                    stack.migrate()
                    stack.start_core()
                    stack.wait_healthy(timeout=300)
                    stack.login()
                    for dag_id in (h.ORDER_EVENTS_DAG, NOOP_DAG_ID):
                        stack.wait_for_dag(dag_id, timeout=300)
                    stack.unpause(h.ORDER_EVENTS_DAG)  # the no-op's own run must not overlap storesync's backfill
                    start = end - windows * HOUR
                    timeout = 600 + 60 * windows
                    log(f"  backfill of {windows} windows: {h.ORDER_EVENTS_DAG}")
                    real = _backfill(stack, h, h.ORDER_EVENTS_DAG, start, end, timeout)
                    log(f"    {real['elapsed_s']:.0f} s; then {NOOP_DAG_ID}")
                    stack.unpause(NOOP_DAG_ID)
                    noop = _backfill(stack, h, NOOP_DAG_ID, start, end, timeout)
                    log(f"    {noop['elapsed_s']:.0f} s")
                    real_tasks = _task_durations(stack, h.ORDER_EVENTS_DAG, real["runs"])
                    noop_tasks = _task_durations(stack, NOOP_DAG_ID, noop["runs"])
                    expected = h.expected_order_deliveries(urls["store"], start, end,
                                                           excluded_orders=h.quarantined_orders(urls["ledger"]))
                    summary = emulator.summary()["vendors"]
                    plan_logs = _plan_logs(stack.home, h.ORDER_EVENTS_DAG)
                    warm_line = _warm_line(stack.logs_dir / "scheduler.log")
            finally:
                stack.stop()
    finally:
        for url in urls.values():
            _drop_database(admin, url)
    shutil.rmtree(workdir, ignore_errors=True)  # kept only after a failure: its logs explain it

    owed = {v: sum(n for (w, _, _), n in expected.items() if w == v) for v in ("sendlane", "sailthru")}
    accepted = {v: int(summary[v]["accepted"]) for v in owed}
    per_run, per_run_noop = real["elapsed_s"] / windows, noop["elapsed_s"] / windows
    ratio = per_run / per_run_noop
    m.figures = {"storesync_s": real["elapsed_s"], "storesync_s_per_run": per_run,
                 "runs": len(real["runs"]), "deliveries_owed": owed, "deliveries_accepted": accepted,
                 "tasks": real_tasks, "plan_task_logs": plan_logs, "scheduler_warm_up": warm_line}
    m.baseline = {"noop_s": noop["elapsed_s"], "noop_s_per_run": per_run_noop, "runs": len(noop["runs"]),
                  "tasks": noop_tasks}
    m.ratio = {"storesync / no-op, seconds per run": ratio}
    m.figures["storesync_own_s_per_task"] = {
        t: real_tasks[t]["mean_s"] - noop_tasks.get(t, {}).get("mean_s", 0.0) for t in real_tasks}
    m.checks = [
        Check("storesync / no-op DAG, seconds per run", ratio, "<=", 1.5),
        Check("every owed delivery accepted (both vendors)", float(accepted == owed), "==", 1.0),
        Check("plan tasks that built Great Expectations themselves", float(plan_logs["gx_built_in_task"]),
              "==", 0.0),
    ]
    m.notes.append("per task, mean seconds storesync vs no-op: " + ", ".join(
        f"{t} {real_tasks[t]['mean_s']:.2f} vs {noop_tasks.get(t, {}).get('mean_s', 0):.2f}" for t in real_tasks))
    if plan_logs["quality_gate_mean_s"] is not None:
        m.notes.append(f"quality gate (validation only) {plan_logs['quality_gate_mean_s']:.2f} s per plan task")
    if warm_line:
        m.notes.append(f"scheduler: {warm_line}")
    return m


def _warm_line(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"storesync (?:task processes warmed before fork: \{[^}]*\}|could not warm[^\n]*)", text)
    return found[-1] if found else None


def _create_database(admin: str, prefix: str) -> str:
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def _drop_database(admin: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


if __name__ == "__main__":  # python -m bench.airflow_backfill [windows]
    result = measure_airflow_backfill(True, int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(json.dumps(result.as_dict(), indent=2, default=str))
