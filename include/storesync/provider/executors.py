"""Task processes that start warm: the LocalExecutor with storesync's task-time imports and the
quality gate's Great Expectations context made once, in the scheduler, before it forks.

    AIRFLOW__CORE__EXECUTOR=storesync.provider.executors.StoresyncLocalExecutor

Why: on Linux, Airflow 3.3's LocalExecutor forks its worker processes from the scheduler
(``multiprocessing`` with ``fork``) and each worker forks one process per task instance
(``airflow.sdk.execution_time.supervisor``: ``os.fork``, no exec). A task process therefore
starts with whatever the scheduler had imported. Out of the box that is Airflow alone, so every
storesync task imported pandas, SQLAlchemy and the pipeline, and every plan task imported Great
Expectations and built its context and suites (8 of a 16 s plan task on 2 cores). Done once here,
the forks share it: a plan task on a window with a few orders only validates, plans and writes.

Warming never stops the scheduler: on any failure it logs a warning and the tasks build what they
need themselves, as with the plain LocalExecutor. With the ``spawn`` start method (macOS) nothing is
inherited and warming is skipped.
"""

from __future__ import annotations

import logging
import multiprocessing
import time

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

# What a storesync task process imports: the DAG file's modules (a task process parses its DAG
# file) and what the tasks load while they run (found by diffing sys.modules in a forked task).
TASK_MODULES = (
    "pandas",
    "sqlalchemy",
    "psycopg",
    "storesync.provider.dag_parts",
    "storesync.provider.stores",
    "storesync.provider.notifiers",
    "storesync.provider.operators.sync",
    "storesync.provider.operators.sendlane",
    "storesync.provider.operators.sailthru",
    "storesync.provider.tasks",
    "storesync.provider.connections",
    "storesync.provider.failures",
    "storesync.pipeline.jobs",
    "storesync.pipeline.syncs",
    "storesync.pipeline.consent",
    "storesync.clients.sendlane",
    "storesync.clients.sailthru",
    "storesync.mappers.sendlane",
    "storesync.mappers.sailthru",
    "storesync.delivery.ledger",
    "storesync.delivery.engine",
    "storesync.quality.gate",
    "storesync.quality.store",
)


def warm_task_processes() -> dict[str, float]:
    """Import storesync's task-time modules and build the quality gate's GX context with every
    entity's suite and batch definition, in this process. Returns seconds per step (for logs and
    the benchmark). Creates no database connection, thread or socket: safe to fork after."""
    import importlib

    from storesync.provider.operators.base import quiet_great_expectations

    quiet_great_expectations()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for name in TASK_MODULES:
        importlib.import_module(name)
    timings["imports"] = time.perf_counter() - started

    started = time.perf_counter()
    from storesync.quality.checks import ENTITIES, spec_for
    from storesync.quality.gate import gx_runtime

    runtime = gx_runtime()  # the process's context: cached, so the forks reuse it
    for entity in ENTITIES:
        runtime.suite(spec_for(entity))
        runtime.batch_definition(entity)
    timings["quality_gate"] = time.perf_counter() - started
    return timings


def warm_logged(where: str = "scheduler") -> dict[str, float] | None:
    """:func:`warm_task_processes`, logged; never raises (the process it runs in must start)."""
    try:
        timings = warm_task_processes()
    except Exception as exc:  # noqa: BLE001 - tasks then warm themselves; the scheduler/worker must run
        log.warning("storesync could not warm the task processes in the %s (%s: %s); each task will import "
                    "and build its quality gate itself", where, type(exc).__name__, exc)
        return None
    log.info("storesync task processes warmed before fork (%s): %s", where,
             {k: round(v, 2) for k, v in timings.items()})
    return timings


class StoresyncLocalExecutor(LocalExecutor):
    """Airflow's LocalExecutor, with :func:`warm_task_processes` run once before its workers fork."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            warm_logged()
        else:
            log.info("storesync: multiprocessing start method is %r, not fork: task processes start cold",
                     multiprocessing.get_start_method())
        super().start()
