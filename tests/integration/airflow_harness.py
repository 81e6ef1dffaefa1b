"""Real Airflow services for end-to-end tests: a private AIRFLOW_HOME, one process group per service.

    stack = AirflowStack(tmp_dir, sql_alchemy_conn=..., executor="LocalExecutor", extra_env={...})
    stack.migrate()                                   # airflow db migrate
    stack.start_core()                                # api-server, scheduler, dag-processor
    with stack.diagnosed():                           # any failure carries the services' last log lines
        stack.wait_healthy(); stack.login(); stack.wait_for_dag(DAG_ID); stack.unpause(DAG_ID)
        stack.api("POST", "/api/v2/backfills", json={...})
    stack.stop()                                      # TERM, then KILL, every process group

Every service runs in its own session (``setsid``), so stopping it kills the whole process group:
uvicorn workers, the LocalExecutor's workers, Celery's pool and the task processes they supervise.
The services get a clean environment: nothing from the test process's own Airflow or storesync
settings (``AIRFLOW_*``, ``STORESYNC_*``, unit-test mode) leaks into them.

The oracle for order events (:func:`expected_order_deliveries`) reads the warehouse directly and
derives, independently of the pipeline code, which vendor calls the data intervals owe.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")
ORDER_EVENTS_DAG = "storesync_order_events"

# The status → event rules of targets.py / build.py, restated here as the test's own oracle:
# the first change of an order (seq 1) is its placement; later changes to these statuses are events.
STATUS_EVENTS = {"fulfilled": "fulfilled", "completed": "fulfilled", "cancelled": "cancelled",
                 "refunded": "refunded"}
SAILTHRU_ENDPOINT = {"placed": "/purchase", "cancelled": "/return", "refunded": "/return"}


def root_conftest(config):
    """tests/conftest.py as pytest loaded it (``unavailable``, ``create_pg_database``, ...).

    Not importable by name: conftest modules outside packages all load as ``conftest``."""
    path = (REPO_ROOT / "tests" / "conftest.py").resolve()
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__).resolve() == path:
            return plugin
    raise LookupError(f"{path} is not loaded as a conftest plugin")


def free_port() -> int:
    """A free TCP port on the loopback interface (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def iso(value: datetime) -> str:
    return utc(value).isoformat().replace("+00:00", "Z")


def hour_floor(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64_000))
            text = handle.read().decode(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def clean_environment() -> dict[str, str]:
    """os.environ without the test process's Airflow/storesync/pytest settings."""
    dropped = ("AIRFLOW", "_AIRFLOW", "STORESYNC_", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env["PATH"] = f"{AIRFLOW_BIN.parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    # Task processes call the Execution API and the emulator on the loopback: never via a proxy.
    no_proxy = [h for h in (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",") if h]
    env["NO_PROXY"] = env["no_proxy"] = ",".join(dict.fromkeys([*no_proxy, "127.0.0.1", "localhost"]))
    return env


def vendor_connection_env(emulator) -> dict[str, str]:
    """The provider's two connections, in Airflow's JSON env-var form, pointed at the emulator."""
    return {
        "AIRFLOW_CONN_SENDLANE_DEFAULT": json.dumps({
            "conn_type": "sendlane", "host": emulator.sendlane_url, "password": emulator.sendlane_api_token,
            "extra": {"integration_token": emulator.sendlane_integration_token, "budget_per_minute": 6000}}),
        "AIRFLOW_CONN_SAILTHRU_DEFAULT": json.dumps({
            "conn_type": "sailthru", "host": emulator.sailthru_url, "login": emulator.sailthru_api_key,
            "password": emulator.sailthru_secret}),
    }


def storesync_env(workdir: Path, *, warehouse_url: str, ledger_url: str, emulator) -> dict[str, str]:
    """STORESYNC_* settings for the task processes (vendor credentials come from the connections)."""
    return {
        "STORESYNC_WAREHOUSE_URL": warehouse_url,
        "STORESYNC_LEDGER_URL": ledger_url,
        "STORESYNC_CONFIG": str(workdir / "no-storesync.toml"),
        "STORESYNC_HOME": str(workdir / "storesync-home"),
        "STORESYNC_SENDLANE_BUDGET_PER_MINUTE": "6000",
        "STORESYNC_SAILTHRU_BUDGET_PER_MINUTE": "6000",
        **vendor_connection_env(emulator),
    }


class ServiceFailed(RuntimeError):
    """A service exited while the test still needed it."""


class AirflowStack:
    """Airflow's services in a private AIRFLOW_HOME; see the module docstring."""

    def __init__(self, workdir: Path, *, sql_alchemy_conn: str, executor: str = "LocalExecutor",
                 dag_files: Iterable[Path] = (DAGS_DIR / f"{ORDER_EVENTS_DAG}.py",),
                 extra_env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.home = self.workdir / "airflow-home"
        self.dags_folder = self.home / "dags"
        self.logs_dir = self.workdir / "service-logs"
        for folder in (self.home, self.dags_folder, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for dag_file in dag_files:  # only the DAGs under test: parsing stays quick
            shutil.copy2(dag_file, self.dags_folder / Path(dag_file).name)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.services: dict[str, subprocess.Popen] = {}
        self._log_handles: list = []
        self._session = None
        self.timings: dict[str, float] = {}
        self.killed_after_grace: list[str] = []
        self._started = time.monotonic()
        self.env = clean_environment()
        self.env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            # On 2 cores: the default 32 would start 32 LocalExecutor workers.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            # Separate processes must share these, or tokens minted by one are refused by another.
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # A private port for the log server, so parallel stacks on one machine do not collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "PYTHONUNBUFFERED": "1",
        })
        self.env.update(extra_env or {})
        atexit.register(self.stop)

    # ---- processes ------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """``airflow <args>`` to completion in this stack's environment; raises with its output."""
        started = time.monotonic()
        result = subprocess.run([str(AIRFLOW_BIN), *args], env=self.env, cwd=self.workdir, text=True,
                                capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        self.timings[f"airflow {' '.join(args[:2])}"] = round(time.monotonic() - started, 1)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def migrate(self) -> None:
        self.cli("db", "migrate")

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``airflow <args>`` in its own session; stdout+stderr go to ``service-logs/<name>.log``."""
        log = open(self.logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._log_handles.append(log)
        process = subprocess.Popen([str(AIRFLOW_BIN), *args], env={**self.env, **(env or {})},
                                   cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        self.services[name] = process
        return process

    def start_core(self) -> None:
        self._started = time.monotonic()
        self.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1")
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")

    def check_alive(self) -> None:
        for name, process in self.services.items():
            if process.poll() is not None:
                raise ServiceFailed(f"{name} exited with {process.returncode}")

    def stop(self, grace: float = 15.0) -> None:
        """TERM every service's process group, then KILL what is left. Idempotent."""
        groups = []
        for process in self.services.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)  # pid == pgid: start_new_session=True
                groups.append(process.pid)
            except ProcessLookupError:
                pass
        started = time.monotonic()
        deadline = started + grace
        for pgid in groups:
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.2)
            if _group_alive(pgid):
                self.killed_after_grace.extend(_group_members(pgid))
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if groups:
            self.timings["stop"] = round(time.monotonic() - started, 1)
        for process in self.services.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for handle in self._log_handles:
            handle.close()
        self._log_handles.clear()
        if self._session is not None:
            self._session.close()
            self._session = None

    def leftover_processes(self, wait: float = 5.0) -> list[str]:
        """Live processes left in this stack's process groups (should be none after stop())."""
        deadline = time.monotonic() + wait
        while True:
            left = [m for p in self.services.values() for m in _group_members(p.pid)]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def assert_no_leftovers(self) -> None:
        """After stop(): nothing of the stack is left running."""
        left = self.leftover_processes()
        if left:
            raise AssertionError(f"processes still alive after stop(): {left}")

    # ---- diagnostics ----------------------------------------------------------------------------
    def log_tail(self, lines: int = 40, task_logs: int = 3) -> str:
        parts = []
        for name, process in self.services.items():
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            parts.append(f"----- {name} ({state}): last {lines} lines -----\n"
                         f"{tail(self.logs_dir / f'{name}.log', lines)}")
        task_files = sorted((self.home / "logs").glob("dag_id=*/**/*.log"), key=lambda p: p.stat().st_mtime)
        for path in task_files[-task_logs:]:
            parts.append(f"----- task log {path.relative_to(self.home / 'logs')} -----\n{tail(path, lines)}")
        return "\n".join(parts)

    @contextmanager
    def diagnosed(self, what: str = "Airflow end-to-end"):
        """Re-raise any failure (assertion, timeout, HTTP error) with the services' last log lines."""
        try:
            yield self
        except Exception as exc:  # noqa: BLE001 - pytest's skip/fail are BaseExceptions and pass through
            raise AssertionError(f"{what}: {type(exc).__name__}: {exc}\n\n{self.log_tail()}") from exc

    # ---- REST API -------------------------------------------------------------------------------
    @property
    def session(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.trust_env = False  # never through an HTTP(S)_PROXY: the server is local
        return self._session

    def api(self, method: str, path: str, *, expected: tuple[int, ...] = (200,), **kwargs):
        response = self.session.request(method, self.base_url + path, timeout=30, **kwargs)
        if response.status_code not in expected:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_until(self, what: str, probe: Callable[[], object], timeout: float, interval: float = 1.0):
        """Call ``probe`` until it returns something truthy; services must stay up meanwhile."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            self.check_alive()
            try:
                last = probe()
            except (OSError, RuntimeError, ValueError) as exc:  # not up yet / transient
                last = exc
                if isinstance(exc, ServiceFailed):
                    raise
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {str(last)[:1500]})")
            time.sleep(interval)

    def wait_healthy(self, timeout: float = 120, components: tuple[str, ...] = ("metadatabase", "scheduler",
                                                                               "dag_processor")) -> dict:
        def probe():
            health = self.api("GET", "/api/v2/monitor/health")
            healthy = all((health.get(c) or {}).get("status") == "healthy" for c in components)
            return health if healthy else None

        health = self.wait_until("GET /api/v2/monitor/health", probe, timeout)
        self.timings["healthy after"] = round(time.monotonic() - self._started, 1)
        return health

    def login(self) -> str:
        """A JWT without credentials: GET /auth/token (201) in SIMPLE_AUTH_MANAGER_ALL_ADMINS mode."""
        token = self.api("GET", "/auth/token", expected=(200, 201))["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"
        return token

    def wait_for_dag(self, dag_id: str, timeout: float = 90) -> dict:
        def probe():
            response = self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=30)
            if response.status_code == 200:
                return response.json()
            errors = self.api("GET", "/api/v2/importErrors")
            if errors.get("total_entries"):
                raise AssertionError(f"DAG import errors: {errors['import_errors']}")
            return None

        return self.wait_until(f"DAG {dag_id} parsed and serialized", probe, timeout)

    def unpause(self, dag_id: str) -> dict:
        dag = self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        assert dag["is_paused"] is False, dag
        return dag

    def dag_runs(self, dag_id: str, **params) -> list[dict]:
        params.setdefault("limit", 100)
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        run = urllib.parse.quote(run_id, safe="")
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run}/taskInstances",
                             params={"limit": 100})["task_instances"])

    def failing_task_instances(self, dag_id: str) -> list[dict]:
        """Task instances of any run of the DAG that failed or wait for a retry (``~`` = every run)."""
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances",
                             params={"state": ["failed", "up_for_retry", "upstream_failed"],
                                     "limit": 100})["task_instances"])

    def fail_fast(self, dag_id: str) -> None:
        """No task of a fault-free run should ever fail or retry (retries wait minutes): stop at once."""
        failing = self.failing_task_instances(dag_id)
        if failing:
            raise AssertionError("task instances failed or are up for retry: " + ", ".join(
                f"{t['dag_run_id']}/{t['task_id']}[{t['map_index']}] {t['state']} (try {t['try_number']})"
                for t in failing))

    def wait_runs_finished(self, dag_id: str, run_ids: Iterable[str], timeout: float) -> dict[str, dict]:
        """Wait until every run succeeded; returns run id → run. Fails at the first failing task."""
        wanted = set(run_ids)

        def probe():
            self.fail_fast(dag_id)
            runs = {r["dag_run_id"]: r for r in self.dag_runs(dag_id) if r["dag_run_id"] in wanted}
            failed = [k for k, r in runs.items() if r["state"] == "failed"]
            if failed:
                raise AssertionError(f"DAG runs failed: {failed}")
            if len(runs) == len(wanted) and all(r["state"] == "success" for r in runs.values()):
                return runs
            return None

        return self.wait_until(f"DAG runs {sorted(wanted)} finished", probe, timeout, interval=2)


ZERO_WIDTH_INTERVALS = (
    "has a zero-width data interval. Under Airflow 3 defaults ([scheduler] create_cron_data_intervals = "
    "False) a cron string such as schedule=\"@hourly\" becomes a CronTriggerTimetable, whose runs "
    "(scheduled, backfill, manual) have data_interval_start == data_interval_end, so an interval sync "
    "extracts nothing. The DAG must say schedule=CronDataIntervalTimetable(\"0 * * * *\", timezone=\"UTC\"). "
    "Unit tests miss this: AIRFLOW__CORE__UNIT_TEST_MODE loads Airflow's unit_tests.cfg, which sets "
    "create_cron_data_intervals = true.")


def assert_interval(run: dict, width: timedelta, *,
                    logical_date_is: str = "start") -> tuple[datetime, datetime]:
    """The run's data interval is ``width`` wide, and its logical date is the interval's ``start``
    (scheduled and backfill runs) or ``end`` (manual runs: Airflow infers the last complete
    interval before the logical date). Returns the interval."""
    start, end = parse_time(run["data_interval_start"]), parse_time(run["data_interval_end"])
    if end == start:
        raise AssertionError(f"DAG run {run['dag_run_id']} [{start} .. {end}) {ZERO_WIDTH_INTERVALS}")
    assert end - start == width, f"DAG run {run['dag_run_id']}: [{start} .. {end}), expected {width} wide"
    anchor = {"start": start, "end": end}[logical_date_is]
    assert parse_time(run["logical_date"]) == anchor, (run["logical_date"], start, end)
    return start, end


def parse_time(value: str) -> datetime:
    return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def _group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, as "pid cmd" (Linux /proc; elsewhere killpg)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [f"group {pgid}"]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                members.append(f"{entry.name} {cmd[:120]}")
        except (OSError, ValueError, IndexError):
            continue
    return members


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


# ---- a whole deployment -------------------------------------------------------------------------
@contextmanager
def storesync_on_airflow(config, postgres_admin_url: str, workdir: Path, *, executor: str = "LocalExecutor",
                         extra_env: dict[str, str] | Callable[[dict], dict[str, str]] | None = None,
                         start_more: Callable[[AirflowStack], None] | None = None,
                         orders: int = 900, days: int = 2, seed: int = 23, gap_hours: int = 2):
    """The demo store, a subprocess emulator (limits off) and Airflow's services running
    ``storesync_order_events``, parsed and unpaused; everything torn down afterwards.

    Three fresh PostgreSQL databases: Airflow's metadata, the warehouse (the demo store) and the
    storesync ledger. The store's data ends ``gap_hours`` whole hours ago, so the run the scheduler
    makes by itself on unpause (catchup=False: the latest complete hour) finds nothing to send.
    ``extra_env`` may be a function of the database URLs ({"airflow", "store", "ledger"}).
    ``start_more(stack)`` starts further services (a Celery worker) before the health wait.
    Yields a namespace: airflow, emulator, end, warehouse_url, ledger_url, metadata_url.
    """
    from storesync.emulator.testing import start_emulator
    from storesync.warehouse.demo import DemoStoreSpec, generate_demo_store

    conftest = root_conftest(config)
    urls: dict[str, str] = {}
    try:
        for name in ("airflow", "store", "ledger"):
            urls[name] = conftest.create_pg_database(postgres_admin_url, f"storesync_e2e_{name}")
        end = recent_hours(gap_hours=gap_hours)
        generate_demo_store(urls["store"], DemoStoreSpec(orders=orders, seed=seed, end=end, days=days,
                                                         bad_share=0.0))
        create_storesync_schema(urls["ledger"])
        with start_emulator(in_process=False, rate_limits_enabled=False) as emulator:
            env = storesync_env(workdir, warehouse_url=urls["store"], ledger_url=urls["ledger"],
                                emulator=emulator)
            if callable(extra_env):
                extra_env = extra_env(dict(urls))
            stack = AirflowStack(workdir, sql_alchemy_conn=urls["airflow"], executor=executor,
                                 extra_env={**env, **(extra_env or {})})
            started = False
            try:
                with stack.diagnosed("starting Airflow"):
                    stack.migrate()
                    stack.start_core()
                    if start_more is not None:
                        start_more(stack)
                    stack.wait_healthy()
                    stack.login()
                    stack.wait_for_dag(ORDER_EVENTS_DAG)
                    stack.unpause(ORDER_EVENTS_DAG)
                started = True
                yield SimpleNamespace(airflow=stack, emulator=emulator, end=end, warehouse_url=urls["store"],
                                      ledger_url=urls["ledger"], metadata_url=urls["airflow"])
            finally:
                stack.stop()
                print(f"\nairflow timings ({executor}): {stack.timings}")
                if started:  # else the start-up failure is the one to report
                    stack.assert_no_leftovers()
    finally:
        for url in urls.values():
            conftest.drop_pg_database(postgres_admin_url, url)


def task_timings(stack: AirflowStack, dag_id: str, run_ids: Iterable[str]) -> dict[str, dict[str, float]]:
    """run id → task → seconds from queued to end (for reports)."""
    timings = {}
    for run_id in run_ids:
        timings[run_id] = {}
        for t in stack.task_instances(dag_id, run_id):
            if t["end_date"]:
                name = t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "")
                began = parse_time(t["queued_when"] or t["start_date"])
                timings[run_id][name] = round((parse_time(t["end_date"]) - began).total_seconds(), 1)
    return timings


# ---- the oracle ---------------------------------------------------------------------------------
def expected_order_deliveries(warehouse_url: str, start: datetime, end: datetime,
                              excluded_orders: Iterable[str] = ()) -> Counter:
    """(vendor, endpoint, order id) → how many calls the status changes in [start, end) owe.

    Computed from the warehouse's ``order_status_history`` only: an order's changes are numbered
    by (changed_at, history_id) over its whole history; seq 1 is the placement. Orders in
    ``excluded_orders`` (quarantined by the gate) owe nothing.
    """
    from sqlalchemy import create_engine, text

    start, end = utc(start).replace(tzinfo=None), utc(end).replace(tzinfo=None)
    excluded = {str(o) for o in excluded_orders}
    engine = create_engine(warehouse_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT history_id, order_id, status, changed_at FROM order_status_history "
                "WHERE order_id IN (SELECT order_id FROM order_status_history "
                "                    WHERE changed_at >= :s AND changed_at < :e)"),
                {"s": start, "e": end}).all()
    finally:
        engine.dispose()
    history: dict = {}
    for row in rows:
        history.setdefault(row.order_id, []).append(row)
    owed: Counter = Counter()
    for order_id, changes in history.items():
        if str(order_id) in excluded:
            continue
        changes.sort(key=lambda r: (_naive(r.changed_at), r.history_id))
        for seq, change in enumerate(changes, start=1):
            if not start <= _naive(change.changed_at) < end:
                continue
            kind = "placed" if seq == 1 else STATUS_EVENTS.get(change.status)
            if kind is None:
                continue
            owed[("sendlane", f"/tracking/order-{kind}", str(order_id))] += 1
            if kind in SAILTHRU_ENDPOINT:
                owed[("sailthru", SAILTHRU_ENDPOINT[kind], str(order_id))] += 1
    return owed


def _naive(value) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None) if value.tzinfo is None else utc(value).replace(tzinfo=None)


def create_storesync_schema(ledger_url: str) -> None:
    """The ledger database's storesync tables, created once before Airflow starts.

    Task processes create them lazily, but two first runs at once on a fresh PostgreSQL database
    race: CREATE TABLE fails with UniqueViolation (an IntegrityError, which the create-retry
    loops do not catch). A deployment creates the schema first; so do these tests."""
    from sqlalchemy import create_engine

    from storesync.core.throttle import rate_slots_metadata
    from storesync.delivery import ledger
    from storesync.quality import store

    engine = create_engine(ledger_url)
    try:
        for metadata in (ledger.metadata, store.metadata, rate_slots_metadata):
            metadata.create_all(engine, checkfirst=True)
    finally:
        engine.dispose()


def quarantined_orders(ledger_url: str) -> set[str]:
    """Order ids the quality gate holds (the quarantine lives in the ledger database)."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(ledger_url)
    try:
        if not inspect(engine).has_table("storesync_quarantine"):
            return set()
        with engine.connect() as conn:
            return {str(r[0]) for r in conn.execute(text(
                "SELECT DISTINCT entity_id FROM storesync_quarantine "
                "WHERE entity = 'orders' AND resolved_at IS NULL AND entity_id IS NOT NULL"))}
    finally:
        engine.dispose()


def received_writes(emulator) -> Counter:
    """(vendor, endpoint, entity id) → how many writes (POSTs) the emulator accepted."""
    return Counter((r["vendor"], r["endpoint"], r["entity_id"]) for r in emulator.requests(method="POST"))


def diff_report(expected: Counter, received: Counter, limit: int = 10) -> str:
    missing, extra = expected - received, received - expected
    return (f"missing {sum(missing.values())} (e.g. {list(missing.items())[:limit]}); "
            f"unexpected {sum(extra.values())} (e.g. {list(extra.items())[:limit]})")


# ---- Redis --------------------------------------------------------------------------------------
def redis_reachable(host: str = "127.0.0.1", port: int = 6379) -> str | None:
    import redis

    try:
        redis.Redis(host=host, port=port, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def ensure_redis(host: str = "127.0.0.1", port: int = 6379) -> str | None:
    """None when Redis answers (started with ``redis-server --daemonize yes`` if needed), else why not."""
    problem = redis_reachable(host, port)
    if problem is None:
        return None
    server = shutil.which("redis-server")
    if server is None:
        return f"Redis not reachable at {host}:{port} ({problem}) and redis-server is not installed"
    subprocess.run([server, "--daemonize", "yes", "--port", str(port), "--bind", host, "--save", "",
                    "--appendonly", "no"], capture_output=True, timeout=30)
    for _ in range(50):
        if redis_reachable(host, port) is None:
            return None
        time.sleep(0.1)
    return f"Redis not reachable at {host}:{port} ({problem}), and starting redis-server did not help"


def claim_redis_db(host: str = "127.0.0.1", port: int = 6379, preferred: Iterable[int] = range(7, 16)) -> int:
    """The first empty Redis database among ``preferred`` (else the first one), flushed."""
    import redis

    preferred = list(preferred)
    chosen = next((db for db in preferred if redis.Redis(host=host, port=port, db=db).dbsize() == 0),
                  preferred[0])
    redis.Redis(host=host, port=port, db=chosen).flushdb()
    return chosen


def recent_hours(now: datetime | None = None, *, gap_hours: int = 2) -> datetime:
    """A store ``end`` a few whole hours in the past: the interval the scheduler creates on unpause
    (catchup=False: the latest complete hour) then holds no store data."""
    now = utc(now or datetime.now(timezone.utc))
    return hour_floor(now).replace(tzinfo=None) - timedelta(hours=gap_hours)
