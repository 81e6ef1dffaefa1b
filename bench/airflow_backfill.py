"""``airflow_backfill``: a backfill of N hourly windows in a real Airflow, against the same-shaped
DAG whose tasks do nothing, in the same run (issue 21); and the historical-sync DAG over days of
history in the same deployment, the other way to send a long past.

One Airflow 3.3 deployment (api-server, scheduler, dag-processor; ``StoresyncLocalExecutor`` with
``AIRFLOW__CORE__PARALLELISM=4``; metadata, demo store and ledger each a fresh PostgreSQL
database) holds three DAGs: ``storesync_order_events``, ``bench_noop_order_events``
(``bench/airflow_noop_dag.py``: plan, a deliver task per vendor, finish; each task a real task
process that returns at once) and ``storesync_historical_sync``. The demo store has a few orders
an hour; the emulator runs as a subprocess with its rate limits off and storesync's budgets at
6,000/min as in the end-to-end tests, so this measures per-run cost, not the vendors' budgets.

1. The historical sync (orders, both vendors, sending, budget share 0.5) over the whole days
   before the backfill's first window: from the REST trigger to the run's end.
2. The backfill, in blocks (default 48 windows): a REST backfill of storesync's DAG over a block
   (``POST /api/v2/backfills`` as the UI posts it, the form's default ``max_active_runs`` 10),
   then the no-op's over the same windows, block after block, so both see the same machine load
   (the machine is shared). Each clock runs from the POST to the backfill's ``completed_at`` with
   every run succeeded. ``--deadline HH:MM`` (UTC) starts no pair of blocks that would end past
   it; the figures are then those of the pairs done, and say so.

Reported: seconds per run of each and their ratio (target ≤ 1.5), every expected delivery
accepted by the emulator (a run that sends nothing would be fast for the wrong reason), and
where storesync's time goes: per task, the mean task-instance duration against the no-op's, and
from the tasks' own log lines (``storesync task timings``, ``storesync <step> timings``, the
quality gate's): connections, modules imported during the task (0-4 when warm), opening engines
and clients, warehouse and ledger SQL, the delivery engine, the gate; and whether any plan task
had to build Great Expectations itself (it should not: the executor builds it before forking).

``--quick`` (``make bench-quick``): 12 windows in one block, 1 day of history. Full: 720 windows
(a month) and 365 days; ``python -m bench.airflow_backfill 720 --historical-days 14 --deadline 20:00``
for a shorter history or a bounded run.
"""

from __future__ import annotations

import json
import os
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
HISTORICAL_DAG = "storesync_historical_sync"
BACKFILL_MAX_ACTIVE_RUNS = 10  # the UI form's default (BackfillPostBody, 3.3.2)
BLOCK_WINDOWS = 48  # windows per REST backfill: storesync's and the no-op's blocks alternate
HISTORICAL_DAYS = 365
HISTORICAL_DAYS_QUICK = 1


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
        runs = [r for r in _runs_between(airflow, h, dag_id, start, end) if r["run_type"] == "backfill"]
        return runs if all(r["state"] == "success" for r in runs) else None

    runs = airflow.wait_until(f"backfill of {dag_id}", done, timeout, interval=2)
    elapsed = time.monotonic() - started
    return {"elapsed_s": elapsed, "runs": [r["dag_run_id"] for r in runs]}


def _runs_between(airflow, h, dag_id: str, start, end) -> list[dict]:
    """The DAG's runs with a logical date in [start, end)."""
    runs, offset = [], 0
    while True:
        page = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns",
                           params={"limit": 100, "offset": offset, "logical_date_gte": h.iso(start),
                                   "logical_date_lte": h.iso(end - HOUR)})
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
TASK_LINE = re.compile(r"storesync task timings: connections (\d+\.\d+) s, job (\d+\.\d+) s, modules imported (-?\d+)")
STEP_LINE = re.compile(r"storesync \w+ timings: (\{[^}]*\})")


def _task_logs(home: Path, dag_id: str) -> dict:
    """From the storesync tasks' own log files, per task id: the mean of each timing the tasks log
    (``storesync task timings``: connections, job, modules imported; ``storesync <step> timings``:
    opening engines and clients, warehouse and ledger SQL, the delivery engine, the whole step), the
    quality gate's seconds (plan), and how many plan tasks built Great Expectations themselves."""
    import ast

    per_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    cold = 0
    for path in (home / "logs").glob(f"dag_id={dag_id}/run_id=backfill__*/task_id=*/*.log"):
        task = path.parent.name.removeprefix("task_id=")
        text = path.read_text(errors="replace")
        values = per_task[task]
        for connections, job, modules in TASK_LINE.findall(text):
            values["connections"].append(float(connections))
            values["job"].append(float(job))
            values["modules_imported"].append(float(modules))
        for found in STEP_LINE.findall(text):
            for key, value in ast.literal_eval(found).items():
                if isinstance(value, (int, float)):
                    values[key].append(float(value))
        gate = GATE_LINE.findall(text)
        if gate:
            values["quality_gate"].append(sum(float(m) for m in gate))
        if "great expectations ready in" in text:
            cold += 1
    means = {task: {k: round(statistics.fmean(v), 3) for k, v in sorted(values.items())}
             for task, values in sorted(per_task.items())}
    return {"tasks": means, "gx_built_in_task": cold}


def measure_airflow_backfill(quick: bool, windows: int | None = None, *, block: int | None = None,
                             historical_days: int | None = None, deadline: float | None = None) -> Measurement:
    """``deadline``: a ``time.time()`` after which no further pair of blocks starts (the figures are
    then those of the pairs that finished, and say so)."""
    from bench.stores import pg_admin_url, pg_available

    h = _harness()
    windows = windows or (12 if quick else 720)
    block = min(block or BLOCK_WINDOWS, windows)
    historical_days = HISTORICAL_DAYS_QUICK if quick else (historical_days or HISTORICAL_DAYS)
    m = Measurement(
        name="airflow_backfill",
        description=f"REST backfills of {windows} hourly order-events windows in Airflow (StoresyncLocalExecutor, "
                    "parallelism 4) vs a no-op DAG of the same shape, same run; then the historical-sync DAG "
                    f"over {historical_days} days of history",
        target="storesync ≤ 1.5× the no-op DAG's seconds per run",
        sizes={"windows": windows, "block_windows": block, "orders_per_hour": ORDERS_PER_HOUR,
               "executor": EXECUTOR, "parallelism": 4, "backfill_max_active_runs": BACKFILL_MAX_ACTIVE_RUNS,
               "historical_days": historical_days},
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
    load = [os.getloadavg()[0]]
    try:
        for name in ("airflow", "store", "ledger"):
            urls[name] = _create_database(admin, f"storesync_bench_af_{name}")
        end = h.recent_hours(gap_hours=2)
        start = end - windows * HOUR
        # History: whole days before the backfill's first day (the two never share a delivery).
        history_last = (start - timedelta(days=1)).date()
        history_first = history_last - timedelta(days=historical_days - 1)
        days = (end.date() - history_first).days + 2  # a day more: the first days hold orders changing status
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
                                              h.DAGS_DIR / f"{HISTORICAL_DAG}.py",
                                              BENCH_DIR / "airflow_noop_dag.py"),
                                   extra_env=env)
            try:
                with stack.diagnosed("airflow_backfill"):
                    stack.migrate()
                    stack.start_core()
                    stack.wait_healthy(timeout=300)
                    stack.login()
                    for dag_id in (h.ORDER_EVENTS_DAG, NOOP_DAG_ID, HISTORICAL_DAG):
                        stack.wait_for_dag(dag_id, timeout=300)
                    # The history first: it has no deadline to stop at, the blocks after it do.
                    historical = _historical(stack, h, emulator, history_first, history_last, load)
                    for dag_id in (h.ORDER_EVENTS_DAG, NOOP_DAG_ID):
                        stack.unpause(dag_id)
                    before = _accepted(emulator)
                    pairs = _alternating_backfills(stack, h, start, windows, block, deadline, load)
                    done_windows = sum(p["windows"] for p in pairs)
                    done_end = start + done_windows * HOUR
                    real_runs = [r for p in pairs for r in p["storesync"]["runs"]]
                    noop_runs = [r for p in pairs for r in p["noop"]["runs"]]
                    real_tasks = _task_durations(stack, h.ORDER_EVENTS_DAG, real_runs)
                    noop_tasks = _task_durations(stack, NOOP_DAG_ID, noop_runs)
                    expected = h.expected_order_deliveries(urls["store"], start, done_end,
                                                           excluded_orders=h.quarantined_orders(urls["ledger"]))
                    backfill_accepted = {v: n - before[v] for v, n in _accepted(emulator).items()}
                    task_logs = _task_logs(stack.home, h.ORDER_EVENTS_DAG)
                    warm_line = _warm_line(stack.logs_dir / "scheduler.log")
            finally:
                stack.stop()
    finally:
        for url in urls.values():
            _drop_database(admin, url)
    if not os.environ.get("STORESYNC_BENCH_KEEP"):
        shutil.rmtree(workdir, ignore_errors=True)  # kept only after a failure (or asked): its logs explain it

    owed = {v: sum(n for (w, _, _), n in expected.items() if w == v) for v in ("sendlane", "sailthru")}
    real_s = sum(p["storesync"]["elapsed_s"] for p in pairs)
    noop_s = sum(p["noop"]["elapsed_s"] for p in pairs)
    per_run, per_run_noop = real_s / done_windows, noop_s / done_windows
    ratio = per_run / per_run_noop
    m.sizes["windows_done"] = done_windows
    m.figures = {"storesync_s": real_s, "storesync_s_per_run": per_run, "runs": len(real_runs),
                 "blocks": [{"windows": p["windows"], "storesync_s": round(p["storesync"]["elapsed_s"], 1),
                             "noop_s": round(p["noop"]["elapsed_s"], 1), "load": p["load"]} for p in pairs],
                 "deliveries_owed": owed, "deliveries_accepted": backfill_accepted,
                 "tasks": real_tasks, "task_logs": task_logs, "scheduler_warm_up": warm_line,
                 "historical": historical,
                 "load_average_1m": {"min": min(load), "max": max(load)}}
    m.baseline = {"noop_s": noop_s, "noop_s_per_run": per_run_noop, "runs": len(noop_runs), "tasks": noop_tasks}
    m.ratio = {"storesync / no-op, seconds per run": ratio}
    m.figures["storesync_own_s_per_task"] = {
        t: real_tasks[t]["mean_s"] - noop_tasks.get(t, {}).get("mean_s", 0.0) for t in real_tasks}
    m.checks = [
        Check("storesync / no-op DAG, seconds per run", ratio, "<=", 1.5),
        Check("every owed delivery accepted (both vendors)", float(backfill_accepted == owed), "==", 1.0),
        Check("plan tasks that built Great Expectations themselves", float(task_logs["gx_built_in_task"]),
              "==", 0.0),
    ]
    if done_windows < windows:
        m.notes.append(f"deadline: {done_windows} of {windows} windows backfilled (whole pairs of blocks only)")
    m.notes.append("per task, mean seconds storesync vs no-op: " + ", ".join(
        f"{t} {real_tasks[t]['mean_s']:.2f} vs {noop_tasks.get(t, {}).get('mean_s', 0):.2f}" for t in real_tasks))
    for task, values in task_logs["tasks"].items():
        m.notes.append(f"{task} (its own log lines, mean s): " + ", ".join(f"{k} {v}" for k, v in values.items()))
    m.notes.append(
        f"historical sync, {historical['days']} days ({historical['first_day']} .. {historical['last_day']}): "
        f"{historical['elapsed_s']:.0f} s, {historical['s_per_day']:.1f} s per day of history against "
        f"{24 * per_run:.0f} s per day through the hourly backfill; accepted {historical['accepted']}")
    if warm_line:
        m.notes.append(f"scheduler: {warm_line}")
    m.notes.append(f"load average (1 min) during the run: {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} cores")
    return m


def _accepted(emulator) -> dict[str, int]:
    summary = emulator.summary()["vendors"]
    return {v: int(summary[v]["accepted"]) for v in ("sendlane", "sailthru")}


def _alternating_backfills(stack, h, start, windows: int, block: int, deadline: float | None,
                           load: list[float]) -> list[dict]:
    """Blocks of ``block`` windows, one REST backfill each: storesync's block, then the no-op's over
    the same windows, so both see the same machine load. Stops before a pair that would run past
    ``deadline`` (judged by the last pair's time)."""
    pairs: list[dict] = []
    first = 0
    while first < windows:
        size = min(block, windows - first)
        if deadline is not None and pairs:
            last = pairs[-1]["storesync"]["elapsed_s"] + pairs[-1]["noop"]["elapsed_s"]
            if time.time() + last * size / pairs[-1]["windows"] > deadline:
                log(f"  deadline: stopping after {first} of {windows} windows")
                break
        block_start = start + first * HOUR
        block_end = block_start + size * HOUR
        timeout = 600 + 60 * size
        pair = {"windows": size}
        for key, dag_id in (("storesync", h.ORDER_EVENTS_DAG), ("noop", NOOP_DAG_ID)):
            pair[key] = _backfill(stack, h, dag_id, block_start, block_end, timeout)
        pair["load"] = round(os.getloadavg()[0], 1)
        load.append(pair["load"])
        pairs.append(pair)
        first += size
        log(f"  windows {first}/{windows}: storesync {pair['storesync']['elapsed_s']:.0f} s, "
            f"no-op {pair['noop']['elapsed_s']:.0f} s (load {pair['load']})")
    return pairs


def _historical(stack, h, emulator, first_day, last_day, load: list[float]) -> dict:
    """One run of the historical-sync DAG over [first_day, last_day] (orders, both vendors, sending,
    the largest budget share), from the trigger to the run's end."""
    days = (last_day - first_day).days + 1
    before = _accepted(emulator)
    conf = {"entities": ["orders"], "start_date": first_day.isoformat(), "end_date": last_day.isoformat(),
            "vendors": ["sendlane", "sailthru"], "dry_run": False, "budget_share": 0.5, "job_poll_seconds": 1}
    stack.unpause(HISTORICAL_DAG)
    log(f"  historical sync of {days} days: {first_day} .. {last_day}")
    started = time.monotonic()
    run = stack.api("POST", f"/api/v2/dags/{HISTORICAL_DAG}/dagRuns",
                    json={"dag_run_id": f"bench_history_{first_day}", "logical_date": None, "conf": conf})
    stack.wait_runs_finished(HISTORICAL_DAG, [run["dag_run_id"]], timeout=600 + 120 * days)
    elapsed = time.monotonic() - started
    load.append(round(os.getloadavg()[0], 1))
    after = _accepted(emulator)
    accepted = {v: after[v] - before[v] for v in after}
    log(f"    {elapsed:.0f} s; accepted {accepted}")
    return {"days": days, "first_day": first_day.isoformat(), "last_day": last_day.isoformat(),
            "elapsed_s": elapsed, "s_per_day": elapsed / days, "accepted": accepted}


def _warm_line(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"storesync (?:task processes warmed before fork[^{]*\{[^}]*\}|could not warm[^\n]*)", text)
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


def main(argv=None) -> None:
    import argparse
    from datetime import datetime, timezone

    parser = argparse.ArgumentParser(prog="python -m bench.airflow_backfill")
    parser.add_argument("windows", nargs="?", type=int, default=None, help="hourly windows (default 720)")
    parser.add_argument("--block", type=int, default=None, help=f"windows per backfill (default {BLOCK_WINDOWS})")
    parser.add_argument("--historical-days", type=int, default=None,
                        help=f"days of history for the historical sync (default {HISTORICAL_DAYS})")
    parser.add_argument("--deadline", default=None,
                        help="UTC time (HH:MM) after which no further pair of blocks starts")
    parser.add_argument("--quick", action="store_true", help="the quick sizes (make bench-quick)")
    args = parser.parse_args(argv)
    deadline = None
    if args.deadline:
        now = datetime.now(timezone.utc)
        hour, minute = (int(x) for x in args.deadline.split(":"))
        deadline = now.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()
    result = measure_airflow_backfill(args.quick, args.windows, block=args.block,
                                      historical_days=args.historical_days, deadline=deadline)
    print(json.dumps(result.as_dict(), indent=2, default=str))


if __name__ == "__main__":
    main()
