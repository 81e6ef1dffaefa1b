"""``storesync_order_events`` on the CeleryExecutor with a real worker (the docker-compose topology).

Metadata on a fresh PostgreSQL database, broker Redis (a free database number, flushed), result
backend ``db+postgresql+psycopg://`` (the metadata database), ``airflow db migrate``, then
api-server, scheduler, dag-processor and ``airflow celery worker --concurrency 2``. One DAG run
for a past hour is triggered through the REST API with a logical date, as the UI does.

Proof that the tasks ran on the Celery worker, not in the scheduler: the task instances'
``queue`` is a queue only the worker consumes, their ``hostname`` is the worker's (the worker
alone gets a distinct ``[core] hostname_callable``), and every task instance's
``external_executor_id`` is a Celery task id that the worker stored as SUCCESS in the result
backend (``celery_taskmeta``) and logged as received.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from airflow_harness import (
    ORDER_EVENTS_DAG,
    AirflowStack,
    assert_interval,
    claim_redis_db,
    diff_report,
    ensure_redis,
    expected_order_deliveries,
    iso,
    quarantined_orders,
    received_writes,
    root_conftest,
    storesync_on_airflow,
    task_timings,
    tail,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

HOUR = timedelta(hours=1)
QUEUE = "storesync-e2e"
WORKER_HOSTNAME = "storesync-celery-worker"
RUN_TIMEOUT = 180


@pytest.fixture(scope="module")
def celery_stack(request, postgres_admin_url, tmp_path_factory):
    problem = ensure_redis()
    if problem:
        root_conftest(request.config).unavailable(problem)
    redis_db = claim_redis_db()
    workdir = tmp_path_factory.mktemp("airflow-celery")
    # The worker's task processes report this host name: only they import this hook.
    hooks = workdir / "worker-hooks"
    hooks.mkdir()
    (hooks / "storesync_e2e_hostname.py").write_text(f"def hostname():\n    return {WORKER_HOSTNAME!r}\n")

    def start_worker(stack: AirflowStack) -> None:
        pythonpath = os.pathsep.join(filter(None, [str(hooks), stack.env.get("PYTHONPATH")]))
        stack.start("celery-worker", "celery", "worker", "--concurrency", "2", "--queues", QUEUE,
                    "--skip-serve-logs", "--without-gossip", "--without-mingle",
                    env={"AIRFLOW__CORE__HOSTNAME_CALLABLE": "storesync_e2e_hostname.hostname",
                         "PYTHONPATH": pythonpath})

    def extra_env(urls: dict) -> dict:
        return {
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
            # The database result backend, in the metadata database (as docker-compose.yaml does).
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{urls['airflow']}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": QUEUE,
            # Only the run this test triggers: no scheduled run competing for the worker.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }

    try:
        with storesync_on_airflow(request.config, postgres_admin_url, workdir, executor="CeleryExecutor",
                                  extra_env=extra_env, start_more=start_worker, orders=600) as deployment:
            yield deployment
    finally:
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


def test_a_triggered_run_executes_on_the_celery_worker_and_delivers_once(celery_stack):
    airflow, emulator = celery_stack.airflow, celery_stack.emulator
    with airflow.diagnosed("CeleryExecutor run"):
        logical_date = celery_stack.end  # a manual run covers the last complete hour before it
        run_id = f"e2e_celery__{iso(logical_date)}"
        started = time.monotonic()
        run = airflow.api("POST", f"/api/v2/dags/{ORDER_EVENTS_DAG}/dagRuns",
                          json={"dag_run_id": run_id, "logical_date": iso(logical_date), "conf": {}})
        assert run["dag_run_id"] == run_id and run["run_type"] == "manual", run
        start, end = assert_interval(run, HOUR, logical_date_is="end")
        airflow.wait_runs_finished(ORDER_EVENTS_DAG, [run_id], RUN_TIMEOUT)
        elapsed = time.monotonic() - started

        tis = airflow.task_instances(ORDER_EVENTS_DAG, run_id)
        names = sorted(t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "") for t in tis)
        assert names == ["deliver_sailthru", "deliver_sendlane", "finish", "plan_order_events"], names
        for ti in tis:
            assert ti["state"] == "success" and ti["try_number"] == 1, ti
            assert ti["queue"] == QUEUE, ti
            assert ti["hostname"] == WORKER_HOSTNAME, ti
            assert ti["executor"] in (None, "CeleryExecutor"), ti  # task-level executor: unset = default

        celery_ids = celery_task_ids(celery_stack.metadata_url, run_id)
        assert set(celery_ids) == set(names), celery_ids
        # The Celery task (execute_workload) returns a moment after its task instance reported
        # success through the Execution API: wait for the worker to store every result.
        def stored():
            results = celery_results(celery_stack.metadata_url)
            return {results.get(task_id) for task_id in celery_ids.values()} == {"SUCCESS"}

        airflow.wait_until("Celery results SUCCESS in celery_taskmeta", stored, 30, interval=0.5)
        worker_log = tail(airflow.logs_dir / "celery-worker.log", 2000)
        missing = [task_id for task_id in celery_ids.values() if f"[{task_id}] received" not in worker_log]
        assert not missing, f"Celery task ids the worker never logged as received: {missing}"

        held = quarantined_orders(celery_stack.ledger_url)
        expected = expected_order_deliveries(celery_stack.warehouse_url, start, end, excluded_orders=held)
        received = received_writes(emulator)
        assert {v for v, _, _ in expected} == {"sendlane", "sailthru"}, dict(expected)
        assert received == expected, diff_report(expected, received)
    print(f"\nCelery run: {elapsed:.1f} s for {sum(received.values())} calls; queued→done per task: "
          f"{task_timings(airflow, ORDER_EVENTS_DAG, [run_id])}")


def celery_task_ids(metadata_url: str, run_id: str) -> dict[str, str]:
    """task[map] → the Celery task id the scheduler pre-assigned (task_instance.external_executor_id).
    The REST API does not expose this column: read it from the metadata database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT task_id, map_index, external_executor_id FROM task_instance "
                "WHERE dag_id = :dag AND run_id = :run"), {"dag": ORDER_EVENTS_DAG, "run": run_id}).all()
    finally:
        engine.dispose()
    return {r.task_id + (f"[{r.map_index}]" if r.map_index >= 0 else ""): r.external_executor_id
            for r in rows}


def celery_results(metadata_url: str) -> dict[str, str]:
    """Celery task id → status, from the database result backend's ``celery_taskmeta`` table."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(metadata_url)
    try:
        if not inspect(engine).has_table("celery_taskmeta"):
            return {}
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT task_id, status FROM celery_taskmeta")).all()
        return {r.task_id: r.status for r in rows}
    finally:
        engine.dispose()
