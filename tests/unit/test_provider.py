"""The storesync Airflow provider: metadata Airflow accepts, hooks built from ``AIRFLOW_CONN_*``
variables (URI and JSON forms), connection tests against the emulator, the operators declared as
Airflow's own (keyword-only, templated, no I/O before execute), settings from connections, and the
stores file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import airflow
import jsonschema
import pytest

from storesync.core.config import fingerprint
from storesync.core.throttle import SharedWindowLimiter
from storesync.provider.get_provider_info import get_provider_info
from storesync.provider.hooks.sailthru import SailthruHook
from storesync.provider.hooks.sendlane import SendlaneHook
from storesync.provider.operators.sailthru import SailthruDeliverOperator, SailthruSyncOperator
from storesync.provider.operators.sendlane import (
    SendlaneDeliverOperator,
    SendlaneSyncOperator,
    SendlaneUnsubscribesOperator,
)
from storesync.provider.operators.sync import (
    StoresyncFinishOperator,
    StoresyncHistoricalOperator,
    StoresyncHistoricalRequestOperator,
    StoresyncLtvOperator,
    StoresyncMonitorOperator,
    StoresyncPlanOperator,
    StoresyncReplayOperator,
)

AIRFLOW_DIR = Path(airflow.__file__).parent


@pytest.fixture(autouse=True)
def ledger_in_tmp(tmp_path, monkeypatch):
    """The Sendlane hook keeps its shared budget in the ledger database: a temporary one here."""
    monkeypatch.setenv("STORESYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")


def set_connection(monkeypatch, conn_id: str, value: dict | str) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value if isinstance(value, str) else json.dumps(value))


def sendlane_json(emulator, **changes) -> dict:
    conn = {"conn_type": "sendlane", "host": emulator.sendlane_url, "password": emulator.sendlane_api_token,
            "extra": {"integration_token": emulator.sendlane_integration_token, "budget_per_minute": 120}}
    conn.update(changes)
    return conn


def sailthru_json(emulator, **changes) -> dict:
    conn = {"conn_type": "sailthru", "host": emulator.sailthru_url, "login": emulator.sailthru_api_key,
            "password": emulator.sailthru_secret}
    conn.update(changes)
    return conn


# ------------------------------------------------------------------ metadata
def test_provider_info_satisfies_airflows_schema():
    schema = json.loads((AIRFLOW_DIR / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "storesync"
    assert info["versions"] == ["0.1.0"]


@pytest.mark.parametrize("hook", [SendlaneHook, SailthruHook])
def test_connection_types_point_at_the_hooks(hook):
    entry = {c["connection-type"]: c for c in get_provider_info()["connection-types"]}[hook.conn_type]
    assert entry["hook-class-name"] == f"{hook.__module__}.{hook.__name__}"
    assert entry["hook-name"] == hook.hook_name
    assert hook.default_conn_name == f"{hook.conn_type}_default"
    assert hook.conn_name_attr == f"{hook.conn_type}_conn_id"


@pytest.mark.parametrize("hook", [SendlaneHook, SailthruHook])
def test_ui_field_behaviour_satisfies_airflows_schema(hook):
    schema = json.loads((AIRFLOW_DIR / "customized_form_field_behaviours.schema.json").read_text())
    jsonschema.validate(hook.get_ui_field_behaviour(), schema)


def test_field_labels():
    sendlane = SendlaneHook.get_ui_field_behaviour()
    assert sendlane["relabeling"] == {"host": "Base URL", "password": "API token"}
    assert "login" in sendlane["hidden_fields"]
    sailthru = SailthruHook.get_ui_field_behaviour()
    assert sailthru["relabeling"] == {"host": "Base URL", "login": "API key", "password": "Secret"}
    fields = {c["connection-type"]: c for c in get_provider_info()["connection-types"]}["sendlane"]["conn-fields"]
    assert fields["integration_token"]["schema"]["format"] == "password"
    assert fields["budget_per_minute"]["schema"]["type"] == ["integer", "null"]


def test_airflow_discovers_the_connection_forms():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.field_behaviours["sendlane"]["relabeling"]["password"] == "API token"
    assert manager.field_behaviours["sailthru"]["relabeling"]["login"] == "API key"
    widget = manager.connection_form_widgets["extra__sendlane__integration_token"]
    assert widget.is_sensitive
    assert "extra__sendlane__budget_per_minute" in manager.connection_form_widgets


# ------------------------------------------------------------------ hooks from connections
def test_sendlane_hook_from_a_json_connection(monkeypatch, emulator):
    set_connection(monkeypatch, "sendlane_default", sendlane_json(emulator))
    client = SendlaneHook().get_conn()
    assert client.base_url == emulator.sendlane_url
    assert isinstance(client.limiter, SharedWindowLimiter)
    assert client.limiter.key == f"sendlane:{fingerprint(emulator.sendlane_api_token)}"
    assert emulator.sendlane_api_token not in client.limiter.key
    assert client.limiter.limit == 120
    assert SendlaneHook().get_conn() is not client  # each hook builds its own...
    hook = SendlaneHook()
    assert hook.get_conn() is hook.get_conn()  # ...and keeps it


def test_sendlane_hook_from_a_uri_connection(monkeypatch, emulator):
    uri = (f"sendlane://:{quote(emulator.sendlane_api_token, safe='')}@{quote(emulator.sendlane_url, safe='')}"
           f"?integration_token={emulator.sendlane_integration_token}&budget_per_minute=90")
    set_connection(monkeypatch, "sendlane_uri", uri)
    client = SendlaneHook("sendlane_uri").get_conn()
    assert client.base_url == emulator.sendlane_url
    assert client.limiter.limit == 90
    assert client.track("/tracking/order-placed", {"order_id": 7})["data"]["message"] == "Successfully handled event"


def test_uri_with_a_plain_host_means_https_and_the_vendors_path(monkeypatch):
    set_connection(monkeypatch, "sendlane_default", "sendlane://:tok-12345@api.sendlane.com/v2?integration_token=t")
    assert SendlaneHook().get_conn().base_url == "https://api.sendlane.com/v2"
    set_connection(monkeypatch, "sailthru_default", "sailthru://key-12345:secret-12345@")
    assert SailthruHook().get_conn().base_url == "https://api.sailthru.com"


def test_sailthru_hook_from_json_and_uri(monkeypatch, emulator):
    set_connection(monkeypatch, "sailthru_default", sailthru_json(emulator))
    assert SailthruHook().get_conn().base_url == emulator.sailthru_url
    uri = (f"sailthru://{emulator.sailthru_api_key}:{emulator.sailthru_secret}@"
           f"{quote(emulator.sailthru_url, safe='')}")
    set_connection(monkeypatch, "sailthru_uri", uri)
    client = SailthruHook("sailthru_uri").get_conn()
    assert client.base_url == emulator.sailthru_url
    assert client.lookup_purchase("no-such-order") is None


def test_hooks_register_their_secrets_with_the_log_masker(monkeypatch, emulator):
    from airflow.sdk.log import redact

    set_connection(monkeypatch, "sailthru_default", sailthru_json(emulator))
    set_connection(monkeypatch, "sendlane_default", sendlane_json(emulator))
    SailthruHook().get_conn()
    SendlaneHook().get_conn()
    line = (f"key={emulator.sailthru_api_key} secret={emulator.sailthru_secret} "
            f"token={emulator.sendlane_api_token} integration={emulator.sendlane_integration_token}")
    masked = redact(line)
    for secret in (emulator.sailthru_api_key, emulator.sailthru_secret, emulator.sendlane_api_token,
                   emulator.sendlane_integration_token):
        assert secret not in masked


# ------------------------------------------------------------------ test_connection
def test_test_connection_against_the_emulator(monkeypatch, emulator):
    set_connection(monkeypatch, "sendlane_default", sendlane_json(emulator))
    set_connection(monkeypatch, "sailthru_default", sailthru_json(emulator))
    assert SendlaneHook().test_connection()[0] is True
    ok, message = SailthruHook().test_connection()
    assert ok, message


def test_test_connection_reports_bad_credentials(monkeypatch, emulator):
    set_connection(monkeypatch, "sendlane_default", sendlane_json(emulator, password="wrong-token-123"))
    set_connection(monkeypatch, "sailthru_default", sailthru_json(emulator, password="wrong-secret-123"))
    ok, message = SendlaneHook().test_connection()
    assert not ok and "401" in message
    ok, message = SailthruHook().test_connection()
    assert not ok and "error 5" in message and "wrong-secret-123" not in message


def test_a_short_token_does_not_garble_the_test_message(monkeypatch, emulator):
    # A one-letter integration token blanked verbatim cut every "t": "***he API ***oken (HTTP 401)".
    set_connection(monkeypatch, "sendlane_default",
                   sendlane_json(emulator, password="wrong-token-123", extra={"integration_token": "t"}))
    ok, message = SendlaneHook().test_connection()
    assert not ok and "401" in message and "***he" not in message and "token" in message.lower()
    assert "wrong-token-123" not in message


def test_test_connection_reports_missing_credentials(monkeypatch):
    set_connection(monkeypatch, "sendlane_default", {"conn_type": "sendlane"})
    ok, message = SendlaneHook().test_connection()
    assert not ok and "API token" in message


# ------------------------------------------------------------------ operators
OPERATORS = [SendlaneDeliverOperator, SendlaneSyncOperator, SendlaneUnsubscribesOperator, SailthruDeliverOperator,
             SailthruSyncOperator, StoresyncPlanOperator, StoresyncFinishOperator, StoresyncLtvOperator,
             StoresyncReplayOperator, StoresyncMonitorOperator, StoresyncHistoricalOperator,
             StoresyncHistoricalRequestOperator]
REQUIRED = {"entity": "orders", "sync_name": "order_events"}


def build(operator, **kwargs):
    import inspect

    params = inspect.signature(operator.__init__).parameters
    return operator(task_id="t", **{k: v for k, v in REQUIRED.items() if k in params}, **kwargs)


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: o.__name__)
def test_operators_are_declared_airflow_style(operator):
    import inspect

    assert isinstance(operator.template_fields, tuple)
    assert {"warehouse_conn_id", "ledger_conn_id", "window_start", "window_end"} <= set(operator.template_fields)
    for name, param in inspect.signature(operator.__init__).parameters.items():
        if name not in ("self", "kwargs"):
            assert param.kind is param.KEYWORD_ONLY, f"{operator.__name__}({name}) is not keyword-only"
    vendor = getattr(operator, "vendor", None)
    if vendor:
        assert f"{vendor}_conn_id" in operator.template_fields


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: o.__name__)
def test_operator_init_does_no_io(operator, monkeypatch):
    # Connections that do not exist and a ledger that cannot be opened: construction must not notice.
    monkeypatch.setenv("STORESYNC_LEDGER_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    task = build(operator, warehouse_conn_id="nowhere", ledger_conn_id="nowhere")
    assert task.warehouse_conn_id == "nowhere"


def test_vendor_operators_name_their_own_connection():
    deliver = SendlaneDeliverOperator(task_id="d", sync_name="s", sendlane_conn_id="sendlane_brand_b")
    assert deliver.conn_ids.sendlane == "sendlane_brand_b" and deliver.conn_ids.sailthru is None
    assert deliver.vendor_conn_id == "sendlane_brand_b"
    plan = StoresyncPlanOperator(task_id="p", entity="orders", sync_name="s", sailthru_conn_id=None)
    assert plan.conn_ids.vendors == ["sendlane"]


def _context(run_id="manual__1"):
    from types import SimpleNamespace

    return {"run_id": run_id, "dag_run": SimpleNamespace(dag_id="my_dag", run_id=run_id), "params": {}}


def test_a_missing_named_connection_fails_the_task_at_once_and_says_which(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from storesync.provider.failures import StoresyncTaskFailure

    task = SendlaneDeliverOperator(task_id="d", sync_name="s", sendlane_conn_id="sendlane_typo",
                                   window_start="2026-11-20T00:00:00+00:00", window_end="2026-11-20T01:00:00+00:00")
    with pytest.raises(StoresyncTaskFailure) as failure:
        task.execute(_context())
    assert isinstance(failure.value, AirflowFailException)  # no Airflow retries
    assert failure.value.kind == "configuration"
    assert "'sendlane_typo' does not exist" in str(failure.value) and "AIRFLOW_CONN_SENDLANE_TYPO" in str(failure.value)


def test_a_window_is_required_and_its_absence_is_plain(monkeypatch):
    from storesync.provider.failures import StoresyncTaskFailure

    task = StoresyncFinishOperator(task_id="f", sync_name="s", window_start="None", window_end="None")
    with pytest.raises(StoresyncTaskFailure, match="needs a data interval"):
        task.execute(_context())


def test_auth_answers_become_clear_failures_and_outages_are_left_to_retries():
    from storesync.core.errors import AuthError, RetryableError
    from storesync.provider.failures import explain

    failure = explain(AuthError("unauthorized", http_status=401), vendor="sendlane", conn_id="sendlane_default",
                      account="abc123", waiting=42)
    assert failure.kind == "auth" and failure.http_status == 401 and failure.counts == {"waiting_in_ledger": 42}
    assert "connection 'sendlane_default'" in str(failure) and "42 sendlane deliveries wait" in str(failure)
    assert "fix the API token" in failure.next_step
    lockout = explain(AuthError("locked", http_status=403), vendor="sendlane", conn_id="sendlane_default")
    assert lockout.kind == "lockout" and "lock-out" in lockout.next_step
    sailthru = explain(AuthError("bad sig", http_status=401), vendor="sailthru", conn_id="sailthru_x")
    assert "the API key (login) and the secret (password)" in sailthru.next_step
    assert explain(RetryableError("503"), vendor="sendlane") is None


# ------------------------------------------------------------------ connections
def test_warehouse_and_ledger_from_database_connections(monkeypatch, tmp_path):
    from storesync.provider.connections import ConnectionIds, resolve_settings

    set_connection(monkeypatch, "shop_pg", {"conn_type": "postgres", "host": "db.internal", "port": 5432,
                                            "login": "sync", "password": "pg-Secret-9", "schema": "shop"})
    set_connection(monkeypatch, "shop_ledger", {"conn_type": "sqlite", "host": str(tmp_path / "ledger.db")})
    current = resolve_settings(ConnectionIds(warehouse="shop_pg", ledger="shop_ledger", sendlane=None, sailthru=None))
    assert current.warehouse_url == "postgresql+psycopg://sync:pg-Secret-9@db.internal:5432/shop"
    assert current.ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"


def test_relative_paths_resolve_against_the_documented_root_not_the_working_directory(monkeypatch, tmp_path):
    from storesync.provider.connections import ConnectionIds, base_settings, resolve_settings

    root = tmp_path / "project"
    root.mkdir()
    (root / "conf.toml").write_text('chunk_size = 777\nledger_url = "sqlite:///var/ledger.db"\n')
    monkeypatch.setenv("STORESYNC_HOME", str(root))
    monkeypatch.setenv("STORESYNC_CONFIG", "conf.toml")
    monkeypatch.delenv("STORESYNC_LEDGER_URL", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = base_settings()
    assert settings.chunk_size == 777
    assert settings.ledger_url == f"sqlite:///{root / 'var' / 'ledger.db'}"
    set_connection(monkeypatch, "rel_wh", {"conn_type": "sqlite", "host": "data/store.db"})
    resolved = resolve_settings(ConnectionIds(warehouse="rel_wh", ledger=None, sendlane=None, sailthru=None))
    assert resolved.warehouse_url == f"sqlite:///{root / 'data' / 'store.db'}"


def test_default_connections_fall_back_to_the_settings_named_ones_must_exist(monkeypatch, tmp_path):
    from storesync.core.errors import ConfigurationError
    from storesync.provider.connections import ConnectionIds, resolve_settings

    monkeypatch.setenv("STORESYNC_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'wh.db'}")
    for name in ("STORESYNC_WAREHOUSE", "STORESYNC_LEDGER", "SENDLANE_DEFAULT", "SAILTHRU_DEFAULT"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{name}", raising=False)
    assert resolve_settings(ConnectionIds()).warehouse_url == f"sqlite:///{tmp_path / 'wh.db'}"
    with pytest.raises(ConfigurationError, match="'shop_warehouse' does not exist"):
        resolve_settings(ConnectionIds(warehouse="shop_warehouse"))


def test_vendor_settings_and_list_from_the_connection(monkeypatch, emulator):
    from storesync.provider.connections import ConnectionIds, known_secrets, resolve_settings

    set_connection(monkeypatch, "sendlane_b", sendlane_json(emulator, extra={
        "integration_token": "integ-b-123", "budget_per_minute": 90, "account_id": "brand-b", "list_id": 7}))
    current = resolve_settings(ConnectionIds(sendlane="sendlane_b", sailthru=None))
    assert current.sendlane.account == "brand-b" and current.sendlane.budget_per_minute == 90
    assert current.sendlane.list_id == "7" and current.sendlane.base_url == emulator.sendlane_url
    assert current.sendlane.integration_token.reveal() == "integ-b-123"
    secrets = known_secrets(ConnectionIds(sendlane="sendlane_b", sailthru=None, warehouse=None, ledger=None))
    assert {emulator.sendlane_api_token, "integ-b-123"} <= set(secrets)
    set_connection(monkeypatch, "sendlane_bad", sendlane_json(emulator, extra={"budget_per_minute": "lots"}))
    from storesync.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="budget_per_minute must be a whole number"):
        resolve_settings(ConnectionIds(sendlane="sendlane_bad", sailthru=None))


# ------------------------------------------------------------------ stores
def write_stores(monkeypatch, tmp_path, body: str):
    path = tmp_path / "stores.toml"
    path.write_text(body)
    monkeypatch.setenv("STORESYNC_STORES", str(path))
    return path


def test_no_stores_file_means_one_default_store(monkeypatch, tmp_path):
    from storesync.provider.stores import load_stores

    monkeypatch.delenv("STORESYNC_STORES", raising=False)
    (store,) = load_stores(tmp_path)
    assert store.name == "default" and store.dag_id("order_events") == "storesync_order_events"
    assert store.sync_name("order_events") == "order_events" and store.vendors == ["sendlane", "sailthru"]


def test_stores_file_names_and_connections(monkeypatch, tmp_path):
    from storesync.provider.stores import load_stores

    write_stores(monkeypatch, tmp_path, '[stores.default]\n[stores.outlet]\nsailthru_conn_id = "sailthru_outlet"\n')
    default, outlet = load_stores()
    assert outlet.dag_id("customers") == "storesync_outlet_customers"
    assert outlet.sync_name("customers") == "outlet.customers"
    assert (outlet.vendors, outlet.warehouse_conn_id, outlet.ledger_conn_id) == \
        (["sailthru"], "storesync_warehouse", "storesync_ledger")


@pytest.mark.parametrize("body, message", [
    ('[stores.Outlet]\nsendlane_conn_id = "x"\n', "lower case letters"),
    ('[stores.outlet]\nsendlane_conn = "x"\n', "unknown keys ['sendlane_conn']"),
    ('[stores.outlet]\nwarehouse_conn_id = "wh"\n', "names no vendor connection"),
    ('[stores.default]\n[stores.outlet]\nsendlane_conn_id = "sendlane_default"\n', "already store 'default'"),
    ('[store.outlet]\n', "unknown top-level keys"),
    ('[stores.outlet]\nsendlane_conn_id = 5\n', "must be a connection id"),
    ("[stores\n", "not valid TOML"),
])
def test_a_bad_stores_file_says_where_and_what(monkeypatch, tmp_path, body, message):
    from storesync.core.errors import ConfigurationError
    from storesync.provider.stores import load_stores

    path = write_stores(monkeypatch, tmp_path, body)
    with pytest.raises(ConfigurationError, match=re.escape(message)) as error:
        load_stores()
    assert str(path) in str(error.value)


def test_tasks_quiet_great_expectations_import_noise():
    # GX logs ~200 "Skipping registering function" lines at INFO when first imported (in a task).
    import subprocess
    import sys

    probe = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
             "from storesync.provider.operators.base import quiet_great_expectations; {quiet}"
             "import great_expectations as gx; gx.get_context(mode='ephemeral'); "
             "logging.getLogger('great_expectations').warning('still warns')")
    # (Without the call, this prints ~200 "Skipping registering function" lines.)
    quiet = subprocess.run([sys.executable, "-c", probe.format(quiet="quiet_great_expectations(); ")],
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Skipping registering function" not in quiet.stdout and "INFO:great_expectations" not in quiet.stdout
    assert "still warns" in quiet.stdout


def test_a_vendor_connection_without_a_base_url_means_the_real_api_never_the_emulator(monkeypatch):
    from storesync.provider.connections import ConnectionIds, resolve_settings

    monkeypatch.setenv("STORESYNC_SENDLANE_BASE_URL", "http://127.0.0.1:8765/sendlane/v2")  # a demo's setting
    set_connection(monkeypatch, "sendlane_live", {"conn_type": "sendlane", "password": "real-token",
                                                  "extra": {"integration_token": "real-integration"}})
    set_connection(monkeypatch, "sailthru_live", {"conn_type": "sailthru", "login": "key", "password": "secret"})
    current = resolve_settings(ConnectionIds(sendlane="sendlane_live", sailthru="sailthru_live"))
    assert current.sendlane.base_url == "https://api.sendlane.com/v2"
    assert current.sailthru.base_url == "https://api.sailthru.com"
