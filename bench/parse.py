"""DAG parse time: every ``dags/*.py`` in a fresh interpreter after ``import airflow.sdk``, and a
``DagBag`` of the whole folder (its per-file load durations).

The baseline is a minimal DAG (one ``@task``, nothing imported at the top but ``airflow.sdk``)
parsed the same way in the same run: the floor any DAG file pays.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Check, Measurement, log, run_child

DAGS = REPO / "dags"
MINIMAL_DAG = '''
from datetime import datetime

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def bench_minimal():
    @task
    def noop():
        return 1

    noop()


bench_minimal()
'''

# The warm-up: a first DAG, with an asset outlet (the first Asset of a process makes Airflow
# discover every provider's asset URI handlers: about 0.1 s, once).
WARM_DAG = MINIMAL_DAG.replace("bench_minimal", "bench_warm").replace(
    "from airflow.sdk import dag, task", "from airflow.sdk import Asset, dag, task").replace(
    "    @task\n", '    @task(outlets=[Asset("bench://warm/up")])\n')


def _airflow_env(home: str) -> dict:
    return {"AIRFLOW_HOME": home, "AIRFLOW__CORE__UNIT_TEST_MODE": "True", "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}


def _exec_file(path: str, name: str) -> float:
    import importlib.util

    started = time.perf_counter()
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return time.perf_counter() - started


def parse_file_child(path: str, warm_path: str | None = None) -> dict:
    """Child: ``import airflow.sdk`` (timed), then execute the DAG file as a module (timed).

    With ``warm_path``, a minimal DAG with an asset outlet is defined first (untimed): Airflow
    loads part of itself lazily when the first DAG of a process is defined, and discovers every
    installed provider's asset URI handlers when the first ``Asset`` is made; both are once per
    process (a DagBag or the DAG processor pays them once), and they are Airflow's, not the file's."""
    import sys

    started = time.perf_counter()
    import airflow.sdk  # noqa: F401

    sdk_s = time.perf_counter() - started
    if warm_path:
        _exec_file(warm_path, "bench_dag_warm")
    before = set(sys.modules)
    parse_s = _exec_file(path, f"bench_dag_{Path(path).stem}")
    heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before}
                   & {"pandas", "numpy", "sqlalchemy", "great_expectations", "requests", "scipy", "storesync",
                      "psycopg", "faker", "lifetimes"})
    return {"import_airflow_sdk_s": sdk_s, "parse_s": parse_s, "new_heavy_imports": heavy}


def dagbag_child(folder: str) -> dict:
    """Child: a DagBag of the folder; total time and Airflow's own per-file durations."""
    started = time.perf_counter()
    import airflow.sdk  # noqa: F401 - as for the per-file figures: the SDK is loaded first
    from airflow.dag_processing.dagbag import DagBag

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    bag = DagBag(dag_folder=folder)
    total_s = time.perf_counter() - started
    stats = [{"file": Path(str(s.file)).name, "duration_s": _seconds(s.duration), "dags": s.dag_num,
              "tasks": s.task_num} for s in bag.dagbag_stats]
    return {"import_s": import_s, "dagbag_s": total_s, "dags": len(bag.dags), "import_errors": dict(bag.import_errors),
            "files": stats}


def _seconds(value) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def measure_parse(quick: bool) -> Measurement:
    repeats = 1 if quick else 2
    m = Measurement("parse", "DAG folder parse time (fresh interpreter per file after import airflow.sdk; DagBag)",
                    "< 50 ms per DAG file")
    files = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    m.sizes = {"dag_files": len(files), "repeats": repeats}
    if quick:  # the smoke run: a few files, one way; the DagBag still loads them all
        files = files[:3]
        m.sizes["files_timed_one_by_one"] = len(files)
    # A deployment runs storesync from compiled bytecode (pip compiles what it installs); the
    # editable checkout has none with PYTHONDONTWRITEBYTECODE set, and every child would compile
    # the provider's modules from source: Python's cost, not the DAG files'.
    import compileall

    compileall.compile_dir(str(REPO / "include" / "storesync"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as home:
        env = _airflow_env(home)
        minimal = Path(home) / "bench_minimal_dag.py"
        minimal.write_text(MINIMAL_DAG)
        warm = Path(home) / "bench_warm_dag.py"
        warm.write_text(WARM_DAG)
        per_file = {}
        for path in [minimal, *files]:
            # Quick: the files only after a first DAG (the check); the minimal DAG both ways.
            n_cold = repeats if (path == minimal or not quick) else 0
            cold = [run_child("bench.parse:parse_file_child", {"path": str(path)}, env=env, timeout=600)["result"]
                    for _ in range(n_cold)]
            warmed = [run_child("bench.parse:parse_file_child", {"path": str(path), "warm_path": str(warm)},
                                env=env, timeout=600)["result"] for _ in range(repeats)]
            per_file[path.name] = {
                "parse_ms": statistics.median(r["parse_s"] for r in cold) * 1000 if cold else None,
                "parse_after_first_dag_ms": statistics.median(r["parse_s"] for r in warmed) * 1000,
                "import_airflow_sdk_ms": statistics.median(r["import_airflow_sdk_s"] for r in warmed) * 1000,
                "new_heavy_imports": warmed[0]["new_heavy_imports"]}
            log(f"parse: {path.name} {_ms(per_file[path.name]['parse_ms'])} cold, "
                f"{_ms(per_file[path.name]['parse_after_first_dag_ms'])} after a first DAG")
        bag = run_child("bench.parse:dagbag_child", {"folder": str(DAGS)}, env=env, timeout=900)
    base = per_file.pop(minimal.name)
    worst = max((v["parse_ms"] for v in per_file.values() if v["parse_ms"] is not None), default=None)
    worst_own = max((v["parse_after_first_dag_ms"] for v in per_file.values()), default=0.0)
    b = bag["result"]
    bag_ms = {f["file"]: f["duration_s"] * 1000 for f in b["files"]}
    bag_mean = statistics.mean(bag_ms.values()) if bag_ms else 0.0
    m.figures = {"per_file": per_file, "worst_file_ms": worst, "worst_file_after_first_dag_ms": worst_own,
                 "dagbag": {"total_s": b["dagbag_s"], "dags": b["dags"], "import_errors": b["import_errors"],
                            "per_file_ms": bag_ms, "mean_file_ms": bag_mean,
                            "worst_file_ms": max(bag_ms.values(), default=0.0), "peak_rss_mb": bag["peak_rss_mb"]}}
    m.baseline = {"minimal_dag_ms": base["parse_ms"], "minimal_dag_after_first_dag_ms": base["parse_after_first_dag_ms"],
                  "import_airflow_sdk_ms": base["import_airflow_sdk_ms"]}
    m.ratio = {"worst file / minimal DAG (cold)": worst / base["parse_ms"] if worst and base["parse_ms"] else None,
               "worst file / minimal DAG (after a first DAG)": (worst_own / base["parse_after_first_dag_ms"]
                                                                if base["parse_after_first_dag_ms"] else 0.0)}
    m.checks = [Check("worst DAG file, fresh interpreter after import airflow.sdk and a first DAG (ms)",
                      worst_own, "<", 50.0),
                Check("DagBag mean per-file duration (ms)", bag_mean, "<", 50.0)]
    if worst is not None:
        m.notes.append(f"cold (the file is the process's first DAG): worst {worst:.0f} ms, of which the minimal "
                       f"DAG's {base['parse_ms']:.0f} ms is Airflow loading itself on first use")
    if b["import_errors"]:
        m.notes.append(f"DagBag import errors: {sorted(b['import_errors'])}")
    heavy = {k: v["new_heavy_imports"] for k, v in per_file.items() if v["new_heavy_imports"]}
    if heavy:
        m.notes.append(f"heavy modules imported at parse time: {heavy}")
    return m
