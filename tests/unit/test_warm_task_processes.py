"""Task processes forked from a warmed scheduler (``StoresyncLocalExecutor``) reuse its Great
Expectations context and suites, and quarantine exactly what a context built in the task would."""

from __future__ import annotations

import gc
import json
import os

import pytest
from test_quality import NOW, corpus

from storesync.quality import gate
from storesync.quality.checks import REGISTRY


def _quarantine_by_entity() -> dict:
    result = {}
    for entity in REGISTRY:
        outcome = gate.validate_batch(entity, corpus(entity), run_id="run-1", batch_id=f"{entity}-0", now=NOW)
        result[entity] = sorted([str(q.entity_id), q.reasons] for q in outcome.quarantined)
        assert outcome.rows_quarantined, f"{entity}: the corpus has bad rows; none quarantined"
    return result


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: what Airflow's LocalExecutor does on Linux")
def test_a_task_forked_after_warming_builds_nothing_and_quarantines_the_same_rows():
    from storesync.provider.executors import warm_task_processes

    timings = warm_task_processes()
    assert set(timings) == {"imports", "quality_gate"}
    runtime = gate.gx_runtime()
    # Every shipped suite built (a suite another test registered for itself may be there too).
    assert set(REGISTRY) <= set(runtime._suites) and set(REGISTRY) <= set(runtime._batch_definitions)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task process: building a GX context here would be the cost warming saves
        status = 1
        try:
            os.close(read_end)

            def refuse(self):
                raise AssertionError("the forked task built its own Great Expectations context")

            gate._GXRuntime.__init__ = refuse
            payload = json.dumps({"runtime_id": id(gate.gx_runtime()), "quarantine": _quarantine_by_entity()})
            with os.fdopen(write_end, "w") as out:
                out.write(payload)
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent through the pipe
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as incoming:
        child = json.loads(incoming.read() or "{}")
    _, status = os.waitpid(pid, 0)
    assert "error" not in child, child["error"]
    assert os.WEXITSTATUS(status) == 0
    assert child["runtime_id"] == id(runtime)  # the scheduler's context, inherited

    gate.gx_runtime.cache_clear()  # a context built on first use, as a cold task does
    try:
        assert _quarantine_by_entity() == child["quarantine"]
    finally:
        gate.gx_runtime.cache_clear()


def test_the_executor_warms_before_its_workers_fork_and_starts_even_if_warming_fails(monkeypatch):
    from airflow.executors.local_executor import LocalExecutor

    from storesync.provider import executors

    calls = []
    monkeypatch.setattr(LocalExecutor, "start", lambda self: calls.append("workers forked"))
    monkeypatch.setattr(executors, "warm_task_processes", lambda: calls.append("warmed") or {"imports": 0.1})
    executor = executors.StoresyncLocalExecutor(parallelism=1)
    executor.is_mp_using_fork = True
    executor.start()
    assert calls == ["warmed", "workers forked"]

    def broken():
        raise ImportError("no great_expectations")

    calls.clear()
    monkeypatch.setattr(executors, "warm_task_processes", broken)
    executor.start()
    assert calls == ["workers forked"]

    calls.clear()
    executor.is_mp_using_fork = False  # spawn: nothing would be inherited, so nothing is warmed
    monkeypatch.setattr(executors, "warm_task_processes", lambda: calls.append("warmed") or {})
    executor.start()
    assert calls == ["workers forked"]


def test_a_celery_worker_warms_before_its_pool_forks_with_airflows_own_configuration(monkeypatch):
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
    from celery.signals import worker_init

    from storesync.provider import celery_config, executors

    assert celery_config.CELERY_CONFIG is DEFAULT_CELERY_CONFIG  # nothing of Airflow's changed
    calls = []
    monkeypatch.setattr(executors, "warm_task_processes", lambda: calls.append("warmed") or {"imports": 0.1})
    try:
        worker_init.send(sender=None)
        assert calls == ["warmed"]
        assert gc.get_freeze_count() > 0  # the warmed objects stay shared with the pool's processes
    finally:
        gc.unfreeze()

    def broken():
        raise ImportError("no great_expectations")

    monkeypatch.setattr(executors, "warm_task_processes", broken)
    worker_init.send(sender=None)  # logged, not raised: the worker starts cold


def test_task_timings_count_each_databases_statements_and_leave_no_listener(tmp_path):
    from sqlalchemy import create_engine, event, text

    from storesync.provider.tasks import _sql_clocks

    engine = create_engine(f"sqlite:///{tmp_path / 'clock.db'}")
    with _sql_clocks(ledger=engine) as clocks:
        with engine.connect() as conn:
            conn.execute(text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
                              "SELECT count(*) FROM n")).scalar()
    assert clocks["ledger"].seconds > 0
    assert not event.contains(engine, "before_cursor_execute", clocks["ledger"]._before)
    assert not event.contains(engine, "after_cursor_execute", clocks["ledger"]._after)
    seconds = clocks["ledger"].seconds
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert clocks["ledger"].seconds == seconds  # stopped with its block


def test_configurations_built_once_per_validation_change_no_outcome_and_are_undone(monkeypatch):
    import contextlib

    from great_expectations.expectations.expectation import Expectation

    original = Expectation.__dict__["configuration"]

    def outcomes() -> dict:
        result = {}
        for entity in REGISTRY:
            outcome = gate.validate_batch(entity, corpus(entity), run_id="run-1", batch_id=f"{entity}-0", now=NOW)
            result[entity] = (sorted([str(q.entity_id), q.reasons] for q in outcome.quarantined),
                              outcome.results["results"], outcome.results["statistics"])
        return result

    built = outcomes()
    assert Expectation.__dict__["configuration"] is original  # GX's own property again
    monkeypatch.setattr(gate, "_configurations_built_once", contextlib.nullcontext)
    assert outcomes() == built  # GX building every configuration each time: the same results, row for row
