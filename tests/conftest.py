"""Shared fixtures: warehouses on SQLite and PostgreSQL, and the servers they need.

A test that needs a server starts it when it is missing. Outside CI, a server that cannot be had
skips the test with the reason; in CI (``CI=true``) nothing is skipped: it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"

# Airflow reads its settings at import: give the whole test session a private AIRFLOW_HOME (SQLite
# metadata, no examples, unit-test mode) before any test module imports it.
_AIRFLOW_HOME = Path(os.environ.get("STORESYNC_TEST_AIRFLOW_HOME") or
                     Path(__import__("tempfile").mkdtemp(prefix="storesync-airflow-")))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# Unit-test mode turns cron data intervals on; production's default is off: test what ships.
os.environ.setdefault("AIRFLOW__SCHEDULER__CREATE_CRON_DATA_INTERVALS", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parents[1] / "dags"))
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}")
PG_ADMIN_URL = os.environ.get("STORESYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REPO_ROOT = Path(__file__).resolve().parents[1]


def unavailable(reason: str):
    """Skip outside CI; fail in CI, where every server-backed test is mandatory."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def _pg_reachable(url: str) -> str | None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()


def _start_local_postgres() -> None:
    """Start the machine's PostgreSQL cluster when it is installed but stopped."""
    if shutil.which("pg_ctlcluster") and Path("/etc/postgresql").is_dir():
        for version in sorted(os.listdir("/etc/postgresql")):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                capture_output=True,
                timeout=60,
            )
        for _ in range(30):
            if _pg_reachable(PG_ADMIN_URL) is None:
                return
            time.sleep(0.5)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    problem = _pg_reachable(PG_ADMIN_URL)
    if problem:
        _start_local_postgres()
        problem = _pg_reachable(PG_ADMIN_URL)
    if problem:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}); set STORESYNC_TEST_PG_URL")
    return PG_ADMIN_URL


def create_pg_database(admin_url: str, prefix: str = "storesync_test") -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def pg_url(postgres_admin_url):
    """A fresh, empty PostgreSQL database for one test."""
    url = create_pg_database(postgres_admin_url)
    yield url
    drop_pg_database(postgres_admin_url, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """An empty database on each backend the project supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        yield request.getfixturevalue("pg_url")


WAREHOUSE_DIALECTS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"]


@pytest.fixture(params=WAREHOUSE_DIALECTS)
def warehouse_db_url(request, tmp_path):
    """An empty warehouse on each dialect storesync reads: SQLite, PostgreSQL and DuckDB (the
    ledger stays on SQLite or PostgreSQL: ledger tests use ``db_url``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    elif request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def emulator():
    """A running vendor emulator (both APIs) on a free loopback port, reset for each test."""
    from storesync.emulator.testing import start_emulator

    with start_emulator() as handle:
        yield handle
