"""Every DAG file imports cleanly, fast, and carries what operating it needs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = ("pandas", "sqlalchemy", "great_expectations", "numpy", "scipy", "requests")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= 1


def test_every_dag_has_tags_owner_retries_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 80, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_nothing_heavy_at_parse_time(dag_file):
    # A fresh interpreter: which heavy modules does parsing this file pull in, and how long does it take
    # beyond importing airflow.sdk itself? (Figures for the budget live in `make bench`.)
    probe = (
        "import sys, time, runpy; import airflow.sdk; before = set(sys.modules); t = time.perf_counter(); "
        f"runpy.run_path({str(dag_file)!r}); "
        "print('seconds=' + str(round(time.perf_counter() - t, 4))); "
        f"print('heavy=' + ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules and m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    found = dict(line.split("=", 1) for line in out.stdout.splitlines() if line.startswith(("seconds=", "heavy=")))
    assert found["heavy"] == "", f"{dag_file.name} imports {found['heavy']} at parse time"
    assert float(found["seconds"]) < 2.0, f"{dag_file.name} took {found['seconds']} s to parse"
