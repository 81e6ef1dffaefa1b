"""The ``airflow_backfill`` benchmark's baseline: ``storesync_order_events``' shape with tasks that
do nothing. Same timetable, ``max_active_runs``, retries and task graph (plan, a deliver task per
vendor, finish), so a backfill of it costs what Airflow itself costs per run: scheduling, a task
process per task instance, the Execution API. Real tasks (each runs in its own process), not
``EmptyOperator``, which the scheduler marks done without running anything.

Lives under ``bench/``, not ``dags/``: the benchmark copies it into its own DAG folder; a user
never gets it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, BaseOperator, CronDataIntervalTimetable

NOOP_DAG_ID = "bench_noop_order_events"


class NoopOperator(BaseOperator):
    """Runs, and does nothing."""

    def execute(self, context) -> None:
        return None


with DAG(
    dag_id=NOOP_DAG_ID,
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "bench", "retries": 2, "retry_delay": timedelta(minutes=2)},
):
    plan = NoopOperator(task_id="plan_order_events")
    delivers = [NoopOperator(task_id="deliver_sendlane"), NoopOperator(task_id="deliver_sailthru")]
    plan >> delivers >> NoopOperator(task_id="finish")
