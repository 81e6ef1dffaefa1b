"""Database errors are told apart once (storesync.warehouse.errors) for the CLI and the Airflow tasks:
a database or role that does not exist is "check the URL", not a missing table; a missing table is
the models' business; the message names the database (password hidden), the connection inside
Airflow and the models folder, and an Airflow task fails at once instead of a raw traceback."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from acme_store import AcmeStore, write_models
from sqlalchemy.engine import make_url

from storesync.cli import main
from storesync.warehouse import errors

DAY = datetime(2026, 11, 10)
WINDOW = ["--start", "2026-11-10", "--end", "2026-11-11"]


def _config(tmp_path, models) -> str:
    path = tmp_path / "storesync.toml"
    path.write_text(f'models_dir = "{models}"\n[sendlane]\napi_token = "t"\nintegration_token = "t"\n'
                    '[sailthru]\napi_key = "k"\nsecret = "s"\n')
    return str(path)


@pytest.fixture
def acme(tmp_path):
    store = AcmeStore(f"sqlite:///{tmp_path / 'acme.db'}")
    store.customer(1, DAY)
    store.order(1, 1, DAY + timedelta(hours=3))
    yield store, write_models(tmp_path / "models")
    store.dispose()


def test_the_cli_tells_a_wrong_url_from_a_missing_table(tmp_path, acme, postgres_admin_url, capsys):
    store, models = acme
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    no_db = make_url(postgres_admin_url).set(database="no_such_db").render_as_string(hide_password=False)
    no_role = make_url(postgres_admin_url).set(username="no_such_role", password="hunter2")
    for url in (no_db, no_role.render_as_string(hide_password=False)):
        code = main(["--config", _config(tmp_path, models), "sync", "--warehouse-url", url,
                     "--ledger-url", ledger, *WINDOW])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "does not exist" in err and "check the URL" in err and "missing table" not in err
        assert f"models in {models}" in err and "hunter2" not in err

    # The Acme store read through the demo's models: its tables are not there.
    code = main(["--config", _config(tmp_path, "include/sql"), "sync", "--warehouse-url", store.url,
                 "--ledger-url", ledger, *WINDOW])
    err = capsys.readouterr().err
    assert code == 2 and "no such table" in err and "missing table or column" in err


def test_an_airflow_task_fails_at_once_naming_the_connection_url_and_models(tmp_path, acme,
                                                                            postgres_admin_url, monkeypatch):
    from types import SimpleNamespace

    from storesync.provider.failures import CONFIGURATION, StoresyncTaskFailure
    from storesync.provider.operators.sync import StoresyncPlanOperator

    _, models = acme
    no_db = make_url(postgres_admin_url).set(database="no_such_db", password="hunter2")
    monkeypatch.setenv("STORESYNC_CONFIG", _config(tmp_path, models))
    monkeypatch.setenv("STORESYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("AIRFLOW_CONN_STORESYNC_WAREHOUSE", json.dumps({
        "conn_type": "postgres", "host": no_db.host, "port": no_db.port, "login": no_db.username,
        "password": "hunter2", "schema": "no_such_db"}))
    for name in ("STORESYNC_LEDGER", "SENDLANE_DEFAULT", "SAILTHRU_DEFAULT"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{name}", raising=False)
    task = StoresyncPlanOperator(task_id="plan", entity="orders", sync_name="order_events",
                                 window_start="2026-11-10T00:00:00+00:00",
                                 window_end="2026-11-11T00:00:00+00:00")
    context = {"run_id": "manual__1", "dag_run": SimpleNamespace(dag_id="d", run_id="manual__1"),
               "params": {}}
    with pytest.raises(StoresyncTaskFailure) as failure:
        task.execute(context)
    message = str(failure.value)
    assert failure.value.kind == CONFIGURATION
    assert 'database "no_such_db" does not exist' in message and "check the URL" in message
    assert "connection 'storesync_warehouse'" in message and f"models in {models}" in message
    assert "hunter2" not in message and "missing table" not in message


@pytest.mark.parametrize(("text", "kind"), [
    ('connection failed: FATAL:  database "x" does not exist', errors.URL),
    ('FATAL:  role "nobody" does not exist', errors.URL),
    ("FATAL:  password authentication failed for user \"u\"", errors.URL),
    ("unable to open database file", errors.URL),
    ('relation "orders" does not exist', errors.SCHEMA),
    ("no such column: o.placed", errors.SCHEMA),
    ("Catalog Error: Table with name orders does not exist!", errors.SCHEMA),
    ("connection to server at \"127.0.0.1\", port 1 failed: Connection refused", errors.UNREACHABLE),
    ("division by zero", errors.OTHER),
])
def test_driver_messages_are_sorted_by_what_fixes_them(text, kind):
    assert errors.database_problem(RuntimeError(text)) == kind
