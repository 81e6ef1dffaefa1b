"""The storesync Airflow provider: metadata Airflow accepts, hooks built from ``AIRFLOW_CONN_*``
variables (URI and JSON forms), connection tests against the emulator, and thin operators."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import airflow
import jsonschema
import pytest

from storesync.clients.sailthru import SailthruClient
from storesync.core.config import fingerprint
from storesync.core.errors import PermanentError, UnknownOutcomeError
from storesync.core.throttle import SharedWindowLimiter
from storesync.provider.get_provider_info import get_provider_info
from storesync.provider.hooks.sailthru import SailthruHook
from storesync.provider.hooks.sendlane import SendlaneHook
from storesync.provider.operators.sailthru import SailthruPostOperator, SailthruPurchaseOperator
from storesync.provider.operators.sendlane import SendlaneAddContactsOperator, SendlaneTrackEventsOperator

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


def test_test_connection_reports_missing_credentials(monkeypatch):
    set_connection(monkeypatch, "sendlane_default", {"conn_type": "sendlane"})
    ok, message = SendlaneHook().test_connection()
    assert not ok and "API token" in message


# ------------------------------------------------------------------ operators
@pytest.mark.parametrize("operator", [SendlaneTrackEventsOperator, SendlaneAddContactsOperator,
                                      SailthruPostOperator, SailthruPurchaseOperator])
def test_operators_are_declared_airflow_style(operator):
    assert isinstance(operator.template_fields, tuple)


def test_operator_init_does_no_io():
    # A connection that does not exist, and no network: construction must not notice.
    task = SendlaneTrackEventsOperator(task_id="t", events=[("/tracking/order-placed", {})],
                                       sendlane_conn_id="nowhere")
    assert task.retries == 0  # resending accepted events would duplicate them
    assert SailthruPurchaseOperator(task_id="p", purchases=[], sailthru_conn_id="nowhere").retries == 0


def test_track_events_operator_sends_and_reports_rejections(monkeypatch, emulator):
    set_connection(monkeypatch, "sendlane_default", sendlane_json(emulator))
    events = [("/tracking/order-placed", {"order_id": 1, "total": 10.0}),
              ("/tracking/order-placed", {"order_id": 2, "email": "not-an-email"}),
              ("/tracking/order-placed", {"order_id": 3})]
    with pytest.raises(PermanentError, match="rejected 1 of 3"):
        SendlaneTrackEventsOperator(task_id="t", events=events).execute(context={})
    recorded = [r["entity_id"] for r in emulator.requests(vendor="sendlane", endpoint="/tracking/order-placed")]
    assert recorded == ["1", "3"]


def test_add_contacts_operator(monkeypatch, emulator):
    set_connection(monkeypatch, "sendlane_default", sendlane_json(emulator))
    contacts = [{"email": f"p{i}@example.com", "email_consent": True} for i in range(3)]
    result = SendlaneAddContactsOperator(task_id="c", list_id=emulator.sendlane_list_id,
                                         contacts=contacts).execute(context={})
    assert result == {"contacts": 3, "requests": 1}
    assert len(emulator.contacts(list_id=emulator.sendlane_list_id)) == 3


def _purchase(extid: str) -> dict:
    return {"email": "a@example.com", "purchase_keys": {"extid": extid},
            "items": [{"qty": 1, "title": "Tee", "price": 1999, "id": "T", "url": "https://s.example.com/t"}]}


@pytest.fixture
def lookups_after_the_fault(monkeypatch, emulator):
    """The emulator's drop faults hit every Sailthru request: clear them when the operator turns to
    its lookup, so that only the purchase itself goes unanswered."""
    original = SailthruClient.lookup_purchase

    def lookup(self, extid):
        emulator.clear_faults()
        return original(self, extid)

    monkeypatch.setattr(SailthruClient, "lookup_purchase", lookup)


@pytest.mark.usefixtures("lookups_after_the_fault")
def test_purchase_operator_confirms_an_unanswered_purchase_by_lookup(monkeypatch, emulator):
    set_connection(monkeypatch, "sailthru_default", sailthru_json(emulator))
    emulator.set_faults(drop_after_rate=1.0, vendors=["sailthru"])
    result = SailthruPurchaseOperator(task_id="p", purchases=[_purchase("5001")]).execute(context={})
    assert result == {"accepted": 1, "confirmed_by_lookup": 1}
    assert len(emulator.purchases(extid="5001")) == 1  # recorded once, never resent


@pytest.mark.usefixtures("lookups_after_the_fault")
def test_purchase_operator_stops_when_the_lookup_finds_nothing(monkeypatch, emulator):
    set_connection(monkeypatch, "sailthru_default", sailthru_json(emulator))
    emulator.set_faults(drop_before_rate=1.0, vendors=["sailthru"])
    with pytest.raises(UnknownOutcomeError):
        SailthruPurchaseOperator(task_id="p", purchases=[_purchase("5003")]).execute(context={})
    assert emulator.purchases(extid="5003") == []


def test_purchase_operator_sends_purchases(monkeypatch, emulator):
    set_connection(monkeypatch, "sailthru_default", sailthru_json(emulator))
    result = SailthruPurchaseOperator(task_id="p", purchases=[_purchase("5002")]).execute(context={})
    assert result == {"accepted": 1, "confirmed_by_lookup": 0}
    assert len(emulator.purchases(extid="5002")) == 1
