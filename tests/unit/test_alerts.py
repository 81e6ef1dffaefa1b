"""Alerts: scrubbing, message builders, ledger checks, and the Airflow notifier over real sockets.

The Slack webhook and the plain HTTP webhook post to a local ``http.server`` on 127.0.0.1:0; the
e-mail goes to a minimal SMTP server on 127.0.0.1:0 (``smtpd`` is deprecated in 3.11 and gone in
3.12, ``aiosmtpd`` is not installed). Connections come from ``AIRFLOW_CONN_*`` variables in JSON
form, as in a deployment; no metadata database is needed.
"""

from __future__ import annotations

import email
import json
import logging
import os
import re
import socketserver
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import airflow.sdk  # noqa: F401 - Airflow configures logging on import: before caplog, not during a test
import pytest
from sqlalchemy import insert, update

from storesync.delivery.ledger import ACCEPTED, DEAD, RETRY, Ledger, deliveries, watermarks
from storesync.provider.notifiers.checks import (
    find_new_dead_letters,
    find_stalled_syncs,
    run_counts,
    split_ledger_run_id,
)
from storesync.provider.notifiers.messages import (
    dead_letters_message,
    failed_run_message,
    no_progress_message,
    quarantine_message,
    run_link,
    scrub,
)

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
DAG_ID = "storesync_order_events"
RUN_ID = "scheduled__2026-11-20T10:00:00+00:00"
WEBHOOK_TOKEN = "T0STORE/B0SYNC/wEbHoOk5eCrEt9x"
CUSTOMER = "jane.doe+vip@customer-mail.example.com"


# ============================================================================ scrub
@pytest.mark.parametrize("raw, leaked, kept", [
    (f"400 invalid email {CUSTOMER} for order 42", [CUSTOMER, "jane.doe"], ["400 invalid email", "order 42"]),
    ("GET /purchase?api_key=test-sailthru-key&sig=0123456789abcdef0123456789abcdef&format=json",
     ["test-sailthru-key", "0123456789abcdef"], ["/purchase?api_key=", "format=json"]),
    ("json=%7B%22email%22%3A%22bob%40shop.example.com%22%7D", ["bob%40shop", "shop.example.com"], ["json="]),
    ("could not connect: postgresql+psycopg://airflow:s3cr3tP4ss@postgres:5432/airflow",
     ["s3cr3tP4ss"], ["postgresql+psycopg://", "@postgres:5432/airflow"]),
    ("{'Authorization': 'Bearer abcDEF123456ghiJKL', 'x-api-key': 'test-sendlane-integration-token'}",
     ["abcDEF123456ghiJKL", "test-sendlane-integration-token"], ["Authorization", "Bearer"]),
    ('{"conn_type": "sendlane", "password": "test-sendlane-api-token", "login": "ops"}',
     ["test-sendlane-api-token"], ['"login": "ops"']),
    ("POST https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX failed",
     ["T000/B000", "XXXXXXXX"], ["hooks.slack.com/services/", "failed"]),
    ("leaked xoxb-1234-5678-abcdEFGH and AKIAABCDEFGHIJKLMNOP and "
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcDEF123xyz",
     ["xoxb-1234", "AKIAABCDEFGHIJKLMNOP", "eyJhbGci"], ["leaked"]),
    ("random Zx8Qm2Lp9Vt4Rk7Ws1Yn3Bc6 in text", ["Zx8Qm2Lp9Vt4Rk7Ws1Yn3Bc6"], ["random", "in text"]),
])
def test_scrub_masks_emails_and_tokens(raw, leaked, kept):
    out = scrub(raw)
    for secret in leaked:
        assert secret not in out, out
    for text in kept:
        assert text in out, out
    assert not EMAIL_RE.search(out)


def test_scrub_keeps_what_an_operator_needs():
    text = (f"run {RUN_ID} of {DAG_ID} failed after 3 tries; Sendlane 429: token bucket empty, "
            "Retry-After: 5; ti 0190a5b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b")
    assert scrub(text) == text


def test_scrub_known_secrets_limit_and_none():
    assert scrub("the secret is hunter22!", secrets=["hunter22!"]) == "the secret is ***"
    long = "x " * 1000 + CUSTOMER
    out = scrub(long, limit=50)
    assert len(out) <= 50 and out.endswith("…")
    # masked before the cut: an address straddling the limit never shows half of itself
    out = scrub("ab " + CUSTOMER, limit=14)
    assert "jane" not in out
    assert scrub(None) == ""


# ============================================================================ messages
def test_failed_run_message_carries_ids_counts_link_and_no_emails():
    exc = RuntimeError(f"vendor refused {CUSTOMER} with api_token=test-sendlane-api-token")
    alert = failed_run_message(DAG_ID, RUN_ID, task_id="deliver", map_index=1, try_number=3, exception=exc,
                               counts={"accepted": 40, "dead": 2, "email": CUSTOMER},
                               base_url="https://airflow.example.org/")
    for text in (alert.text, alert.plain, alert.html, alert.subject):
        assert not EMAIL_RE.search(text), text
        assert "test-sendlane-api-token" not in text
    assert DAG_ID in alert.text and RUN_ID in alert.text
    assert "accepted=40" in alert.text and "dead=2" in alert.text
    assert alert.link == ("https://airflow.example.org/dags/storesync_order_events/runs/"
                          "scheduled__2026-11-20T10%3A00%3A00%2B00%3A00/tasks/deliver/mapped/1")
    assert alert.subject == f"storesync: task deliver failed [{DAG_ID}]"
    assert "RuntimeError: vendor refused [email]" in alert.plain


def test_failed_run_message_dag_level_links_the_run_relatively():
    alert = failed_run_message(DAG_ID, RUN_ID, task_id="finish", reason="task_failure", scope="run")
    assert alert.title == "run failed"
    assert ("Last task", "finish") in alert.facts
    assert alert.link == f"/dags/{DAG_ID}/runs/scheduled__2026-11-20T10%3A00%3A00%2B00%3A00"
    assert run_link(None, None) is None


def test_slack_text_escapes_markup():
    alert = failed_run_message("d", "r", exception=ValueError("a < b & c > d"))
    assert "a &lt; b &amp; c &gt; d" in alert.text
    assert "a < b & c > d" in alert.plain


def test_quarantine_dead_letter_and_no_progress_messages():
    q = quarantine_message(DAG_ID, RUN_ID, entity="orders", share=0.125, threshold=0.05,
                           top_reasons={"email_well_formed": 9, "amount_positive": 3, f"bad {CUSTOMER}": 1},
                           counts={"rows_in": 80, "rows_quarantined": 10})
    assert "orders: quarantine 12.5% over threshold 5.0%" in q.subject
    assert "email_well_formed ×9, amount_positive ×3" in q.text
    assert "rows_quarantined=10" in q.text and not EMAIL_RE.search(q.text)

    d = dead_letters_message(DAG_ID, RUN_ID, vendor="sendlane", count=3,
                             top_error_classes=[("permanent", 2), ("auth", 1)])
    assert "3 new sendlane dead letters" in d.subject
    assert "permanent ×2, auth ×1" in d.text and "dead=3" in d.text
    assert "storesync replay --vendor sendlane" in d.text

    n = no_progress_message("order_events", watermark=datetime(2026, 11, 20, 4),
                            now=datetime(2026, 11, 20, 10, 30), expected_interval=timedelta(hours=1),
                            max_intervals=3, dag_id="storesync_monitor",
                            run_id="scheduled__x")
    assert "order_events: no progress for more than 3 intervals" in n.subject
    assert "6 intervals" in n.text and "intervals_behind=6" in n.text
    assert n.link == "/dags/storesync_monitor/runs/scheduled__x"


# ============================================================================ ledger checks
def _delivery_row(i, *, vendor="sendlane", state=DEAD, error_class="permanent", updated_at,
                  run_id=f"{DAG_ID}/{RUN_ID}", sync="order_events"):
    return {
        "delivery_key": f"{vendor}|acct|order_placed|{i}|1", "vendor": vendor, "account": "acct",
        "event_type": "order_placed", "entity_id": str(i), "version": "1", "ordering_key": f"order:{i}",
        "seq": 0, "method": "POST", "endpoint": "/x", "payload": json.dumps({"email": CUSTOMER}),
        "historical": False, "state": state, "attempts": 1, "error_class": error_class,
        "vendor_error": f"bad address {CUSTOMER}", "sync_name": sync, "planned_run_id": run_id,
        "last_run_id": run_id, "planned_at": updated_at, "updated_at": updated_at,
    }


@pytest.fixture
def ledger_engine(db_url):
    ledger = Ledger(db_url)
    yield ledger.engine
    ledger.engine.dispose()


def test_find_new_dead_letters(ledger_engine):
    t0 = datetime(2026, 11, 20, 10, 0)
    rows = [
        _delivery_row(1, updated_at=t0 - timedelta(minutes=5)),                       # before: not new
        _delivery_row(2, updated_at=t0 + timedelta(minutes=1)),
        _delivery_row(3, updated_at=t0 + timedelta(minutes=2)),
        _delivery_row(4, updated_at=t0 + timedelta(minutes=3), error_class="auth", run_id="other_dag/r2"),
        _delivery_row(5, updated_at=t0 + timedelta(minutes=4), error_class=None),
        _delivery_row(6, updated_at=t0 + timedelta(minutes=5), state=RETRY),            # not dead
        _delivery_row(7, vendor="sailthru", updated_at=t0 + timedelta(minutes=6)),
        _delivery_row(8, vendor="sailthru", updated_at=t0 + timedelta(hours=2)),       # after until
    ]
    with ledger_engine.begin() as conn:
        conn.execute(insert(deliveries), rows)

    # aware datetimes are converted to the ledger's naive UTC
    found = find_new_dead_letters(ledger_engine, t0.replace(tzinfo=timezone.utc),
                                  until=t0 + timedelta(hours=1))
    assert [f.vendor for f in found] == ["sailthru", "sendlane"]
    sailthru, sendlane = found
    assert sailthru.count == 1
    assert sendlane.count == 4
    assert sendlane.top_error_classes == [("permanent", 2), ("auth", 1), ("unclassified", 1)]
    assert sendlane.run_ids[0] == f"{DAG_ID}/{RUN_ID}" and set(sendlane.run_ids) == {f"{DAG_ID}/{RUN_ID}",
                                                                                     "other_dag/r2"}
    assert sendlane.first_at == t0 + timedelta(minutes=1) and sendlane.last_at == t0 + timedelta(minutes=4)
    assert find_new_dead_letters(ledger_engine, t0 + timedelta(hours=3)) == []

    # the message built from a finding names no customer
    alert = dead_letters_message(*split_ledger_run_id(sendlane.run_ids[0]), vendor="sendlane",
                                 count=sendlane.count, top_error_classes=sendlane.top_error_classes)
    assert alert.dag_id == DAG_ID and alert.run_id == RUN_ID and not EMAIL_RE.search(alert.text)


def test_find_stalled_syncs(ledger_engine):
    now = datetime(2026, 11, 20, 12, 0)
    with ledger_engine.begin() as conn:
        conn.execute(insert(watermarks), [
            {"sync_name": "order_events", "window_end": now - timedelta(hours=1), "updated_at": now},
            {"sync_name": "products", "window_end": now - timedelta(hours=5), "updated_at": now},
            {"sync_name": "profiles", "window_end": now - timedelta(hours=3), "updated_at": now},
        ])
    stalled = find_stalled_syncs(ledger_engine, timedelta(hours=1), 3, now)
    assert [(s.sync_name, s.intervals_behind) for s in stalled] == [("products", 5)]
    assert stalled[0].watermark == now - timedelta(hours=5)
    # exactly N intervals behind is not yet stalled; one second more is
    later = find_stalled_syncs(ledger_engine, timedelta(hours=1), 3, now + timedelta(seconds=1))
    assert [s.sync_name for s in later] == ["products", "profiles"]
    # per-sync intervals: a daily sync 5 hours behind is fine; a listed sync never advanced is reported
    per_sync = {"products": timedelta(days=1), "order_events": timedelta(minutes=15),
                "cart_reminders": timedelta(hours=1)}
    stalled = find_stalled_syncs(ledger_engine, per_sync, 3, now.replace(tzinfo=timezone.utc),
                                 include_missing=True)
    assert [(s.sync_name, s.intervals_behind) for s in stalled] == [("cart_reminders", None),
                                                                     ("order_events", 4)]
    with pytest.raises(ValueError):
        find_stalled_syncs(ledger_engine, timedelta(hours=1), 0, now)


def test_run_counts(ledger_engine):
    t0 = datetime(2026, 11, 20, 10, 0)
    with ledger_engine.begin() as conn:
        conn.execute(insert(deliveries), [_delivery_row(i, updated_at=t0) for i in range(5)]
                     + [_delivery_row(9, updated_at=t0, run_id="x/y")])
        conn.execute(update(deliveries).where(deliveries.c.entity_id.in_(["0", "1", "2"]))
                     .values(state=ACCEPTED))
    assert run_counts(ledger_engine, f"{DAG_ID}/{RUN_ID}") == {"accepted": 3, "dead": 2}
    assert split_ledger_run_id("a/b/plan") == ("a", "b") and split_ledger_run_id("x") == (None, "x")


def test_find_stuck_deliveries(ledger_engine):
    from storesync.provider.notifiers.checks import find_stuck_deliveries
    from storesync.provider.notifiers.messages import stuck_deliveries_message

    now = datetime(2026, 11, 20, 12, 0)
    old, recent = now - timedelta(hours=7), now - timedelta(hours=1)
    rows = [
        _delivery_row(1, state="staged", updated_at=old, sync="customers"),
        _delivery_row(2, state="staged", updated_at=old - timedelta(hours=1), sync="order_events"),
        _delivery_row(3, state="sending", updated_at=old),
        _delivery_row(4, vendor="sailthru", state="unknown", updated_at=old),
        _delivery_row(5, state="unknown", updated_at=recent),       # not old enough
        _delivery_row(6, state=RETRY, updated_at=old),              # retries re-drive themselves
        _delivery_row(7, state="planned", updated_at=old),
        _delivery_row(8, state=ACCEPTED, updated_at=old),
    ]
    with ledger_engine.begin() as conn:
        conn.execute(insert(deliveries), rows)
    stuck = find_stuck_deliveries(ledger_engine, timedelta(hours=6), now.replace(tzinfo=timezone.utc))
    assert [(s.vendor, s.state, s.count) for s in stuck] == [
        ("sailthru", "unknown", 1), ("sendlane", "sending", 1), ("sendlane", "staged", 2)]
    staged = stuck[2]
    assert staged.oldest_at == old - timedelta(hours=1) and staged.sync_names == ("customers", "order_events")
    assert [(s.vendor, s.state) for s in find_stuck_deliveries(ledger_engine, timedelta(hours=7, minutes=30), now)
            ] == [("sendlane", "staged")]
    with pytest.raises(ValueError):
        find_stuck_deliveries(ledger_engine, timedelta(0), now)
    alert = stuck_deliveries_message("sendlane", state="unknown", count=2, oldest_at=old, now=now,
                                     older_than=timedelta(hours=6), dag_id=DAG_ID, run_id=RUN_ID)
    assert alert.kind == "stuck_deliveries" and "2 sendlane deliveries stuck in unknown" in alert.title
    assert "storesync reconcile --list" in alert.text and not EMAIL_RE.search(alert.text)


# ============================================================================ local receivers
class WebhookReceiver:
    """A local HTTP endpoint that records every POST and answers ``status``."""

    def __init__(self, status: int = 200):
        self.status = status
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if receiver.status == 200 else b"invalid_token")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def json(self, i: int = -1) -> dict:
        return json.loads(self.requests[i]["body"])


class SmtpReceiver(socketserver.ThreadingTCPServer):
    """Just enough SMTP (RFC 5321 without extensions) to receive what ``smtplib`` sends."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.messages: list[dict] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str):
                self.wfile.write((line + "\r\n").encode())

            def handle(self):
                self.reply("220 storesync-test SMTP")
                mail_from, rcpt = None, []
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    verb = raw.decode(errors="replace").strip().split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 storesync-test")
                    elif verb == "MAIL":
                        mail_from, rcpt = raw.decode().split(":", 1)[1].strip(), []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        rcpt.append(raw.decode().split(":", 1)[1].strip())
                        self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 End data with <CR><LF>.<CR><LF>")
                        lines = []
                        while (line := self.rfile.readline()) not in (b".\r\n", b""):
                            lines.append(line[1:] if line.startswith(b"..") else line)
                        outer.messages.append({"from": mail_from, "to": rcpt, "data": b"".join(lines)})
                        self.reply("250 OK queued")
                    elif verb in ("RSET", "NOOP"):
                        self.reply("250 OK")
                    elif verb == "QUIT":
                        self.reply("221 Bye")
                        return
                    else:
                        self.reply("502 Command not implemented")

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


# ============================================================================ the notifier
@pytest.fixture
def alert_env(monkeypatch, tmp_path):
    """No alert connection, a ledger with this run's deliveries, no stray storesync.toml."""
    for name in ("AIRFLOW_CONN_STORESYNC_SLACK", "AIRFLOW_CONN_STORESYNC_SMTP", "AIRFLOW__API__BASE_URL",
                 "AIRFLOW__WEBSERVER__BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    t0 = datetime(2026, 11, 20, 10, 0)
    with ledger.engine.begin() as conn:
        conn.execute(insert(deliveries), [_delivery_row(i, updated_at=t0) for i in range(4)])
        conn.execute(update(deliveries).where(deliveries.c.entity_id.in_(["0", "1", "2"]))
                     .values(state=ACCEPTED))
    ledger.engine.dispose()
    monkeypatch.setenv("STORESYNC_LEDGER_URL", url)
    monkeypatch.setenv("STORESYNC_CONFIG", str(tmp_path / "none.toml"))
    return monkeypatch


def slack_conn(url: str, **extra) -> str:
    return json.dumps({"conn_type": "slackwebhook", "host": url, "password": WEBHOOK_TOKEN, **extra})


def smtp_conn(port: int, **extra) -> str:
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                       "extra": {"from_email": "storesync-alerts@ops.example.org",
                                 "to": "oncall@ops.example.org",
                                 "disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5,
                                 **extra}})


def task_context(exception=None, *, reason=None):
    from airflow.sdk import DAG

    dag = DAG(DAG_ID, schedule=None)
    ti = SimpleNamespace(dag_id=DAG_ID, run_id=RUN_ID, task_id="deliver", map_index=0, try_number=2)
    context = {"dag": dag, "run_id": RUN_ID, "ti": ti, "task_instance": ti}
    if exception is not None:
        context["exception"] = exception
    if reason is not None:
        context["reason"] = reason
    return context


def failing_exception():
    # What a vendor error can look like: a customer's address, a credential, and Jinja syntax that
    # must reach the channel verbatim (never rendered: it would expand the webhook token).
    return RuntimeError(f"Sendlane 400 for {CUSTOMER}: api_token=test-sendlane-api-token "
                        "{{ conn.storesync_slack.password }}")


def test_provider_import_paths_and_callbacks_shape():
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.providers.smtp.hooks.smtp import SmtpHook
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import BaseNotifier

    from storesync.provider.notifiers import StoresyncAlertNotifier, alert_callbacks

    assert issubclass(SlackWebhookNotifier, BaseNotifier) and issubclass(SmtpNotifier, BaseNotifier)
    assert SlackWebhookHook.conn_type == "slackwebhook" and SmtpHook.conn_type == "smtp"
    callbacks = alert_callbacks(smtp_conn_id=None)
    assert len(callbacks) == 1 and isinstance(callbacks[0], StoresyncAlertNotifier)
    assert isinstance(callbacks[0], BaseNotifier) and callbacks[0].template_fields == ()
    assert callbacks[0].smtp_conn_id is None and callbacks[0].slack_conn_id == "storesync_slack"


def test_silent_without_connections(alert_env, caplog):
    from storesync.provider.notifiers import StoresyncAlertNotifier

    with caplog.at_level(logging.INFO, logger="storesync.provider.notifiers.alert"):
        StoresyncAlertNotifier()(task_context(failing_exception()))  # no exception
    assert any("no alert channel configured" in r.getMessage() for r in caplog.records)
    assert not any(CUSTOMER in r.getMessage() for r in caplog.records)


def test_slack_webhook_receives_the_alert(alert_env):
    from storesync.provider.notifiers import alert_callbacks

    with WebhookReceiver() as hook:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", slack_conn(hook.url))
        alert_env.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org")
        for callback in alert_callbacks():
            callback(task_context(failing_exception()))
    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request["path"] == "/" + WEBHOOK_TOKEN
    text = hook.json()["text"]
    assert DAG_ID in text and RUN_ID in text
    assert "accepted=3" in text and "dead=1" in text  # the run's ledger counts
    assert "Task: deliver[0]" in text and "Try: 2" in text
    assert "https://airflow.example.org/dags/storesync_order_events/runs/" in text
    assert not EMAIL_RE.search(request["body"].decode())
    assert "test-sendlane-api-token" not in text
    assert "{{ conn.storesync_slack.password }}" in text  # not rendered
    assert "wEbHoOk5eCrEt9x" not in text


def test_slack_webhook_with_full_url_in_password_and_dag_level_context(alert_env):
    from storesync.provider.notifiers import StoresyncAlertNotifier

    with WebhookReceiver() as hook:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", json.dumps(
            {"conn_type": "slackwebhook", "password": f"{hook.url}/services/{WEBHOOK_TOKEN}"}))
        StoresyncAlertNotifier(ledger_counts=False)(task_context(reason="task_failure"))
    assert hook.requests[0]["path"] == f"/services/{WEBHOOK_TOKEN}"
    text = hook.json()["text"]
    assert "run failed" in text and "Last task: deliver" in text and "Reason: task_failure" in text
    assert f"Link: /dags/{DAG_ID}/runs/" in text and "Counts" not in text


def test_plain_http_webhook(alert_env):
    from storesync.provider.notifiers import StoresyncAlertNotifier

    with WebhookReceiver() as hook:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", json.dumps(
            {"conn_type": "http", "host": f"{hook.url}/hooks/storesync"}))
        StoresyncAlertNotifier()(task_context(failing_exception()))
    assert hook.requests[0]["path"] == "/hooks/storesync"
    payload = hook.json()
    assert payload["dag_id"] == DAG_ID and payload["run_id"] == RUN_ID and payload["kind"] == "failed_run"
    assert payload["counts"] == {"accepted": 3, "dead": 1}
    assert not EMAIL_RE.search(hook.requests[0]["body"].decode())


def test_quarantine_failure_becomes_a_quarantine_alert(alert_env):
    from storesync.provider.notifiers import StoresyncAlertNotifier
    from storesync.quality.errors import QualityGateError

    exc = QualityGateError("quality gate failed", entity="orders", share=0.2, threshold=0.05,
                           top_reasons=[("email_well_formed", 12), ("amount_positive", 4)])
    with WebhookReceiver() as hook:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", slack_conn(hook.url))
        StoresyncAlertNotifier()(task_context(exc))
    text = hook.json()["text"]
    assert "orders: quarantine 20.0% over threshold 5.0%" in text
    assert "email_well_formed ×12, amount_positive ×4" in text and RUN_ID in text


def test_failing_webhook_raises_without_the_token(alert_env):
    from storesync.provider.notifiers import AlertDeliveryError, StoresyncAlertNotifier

    with WebhookReceiver(status=403) as hook:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", slack_conn(hook.url))
        with pytest.raises(AlertDeliveryError) as refused:
            StoresyncAlertNotifier(ledger_counts=False)(task_context(failing_exception()))
    assert "storesync_slack" in str(refused.value) and "403" in str(refused.value)
    # nothing listens on the port any more: a transport error, whose text would name the URL
    with pytest.raises(AlertDeliveryError) as unreachable:
        StoresyncAlertNotifier(ledger_counts=False, timeout=2)(task_context(failing_exception()))
    for err in (refused.value, unreachable.value):
        assert "wEbHoOk5eCrEt9x" not in str(err) and err.__cause__ is None


def test_smtp_alert_to_a_local_server(alert_env):
    from storesync.provider.notifiers import StoresyncAlertNotifier

    with SmtpReceiver() as smtp:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SMTP", smtp_conn(smtp.port))
        delivered = StoresyncAlertNotifier().send(StoresyncAlertNotifier().build_alert(
            task_context(failing_exception())))
    assert delivered == ["e-mail (storesync_smtp)"]
    (message,) = smtp.messages
    assert message["to"] == ["<oncall@ops.example.org>"]
    parsed = email.message_from_bytes(message["data"])
    assert parsed["Subject"] == f"storesync: task deliver failed [{DAG_ID}]"
    html_part = next(p for p in parsed.walk() if p.get_content_type() == "text/html")
    html = html_part.get_payload(decode=True).decode()
    assert DAG_ID in html and RUN_ID in html and "accepted=3" in html
    assert not EMAIL_RE.search(html) and "test-sendlane-api-token" not in html


def test_both_channels_and_smtp_without_recipients(alert_env, caplog):
    from storesync.provider.notifiers import StoresyncAlertNotifier, send_alert

    alert = dead_letters_message(DAG_ID, RUN_ID, vendor="sailthru", count=2,
                                 top_error_classes={"permanent": 2})
    with WebhookReceiver() as hook, SmtpReceiver() as smtp:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", slack_conn(hook.url))
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SMTP", smtp_conn(smtp.port))
        assert send_alert(alert) == ["slack webhook (storesync_slack)", "e-mail (storesync_smtp)"]
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SMTP", smtp_conn(smtp.port, to=""))
        with caplog.at_level(logging.WARNING, logger="storesync.provider.notifiers.alert"):
            assert StoresyncAlertNotifier().send(alert) == ["slack webhook (storesync_slack)"]
    assert len(hook.requests) == 2 and len(smtp.messages) == 1
    assert "2 new sailthru dead letters" in hook.json(0)["text"]
    assert any("has no recipients" in r.getMessage() for r in caplog.records)


def test_alert_on_ledger_sends_dead_letters_and_stalls(alert_env, tmp_path):
    from storesync.provider.notifiers import alert_on_ledger

    now = datetime(2026, 11, 20, 12, 0)
    ledger = Ledger(f"sqlite:///{tmp_path / 'monitor.db'}")
    with ledger.engine.begin() as conn:
        conn.execute(insert(deliveries),
                     [_delivery_row(i, updated_at=now - timedelta(minutes=10)) for i in range(3)])
        conn.execute(insert(watermarks), {"sync_name": "order_events", "window_end": now - timedelta(hours=6),
                                          "updated_at": now - timedelta(hours=6)})
    with WebhookReceiver() as hook:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", slack_conn(hook.url))
        alerts = alert_on_ledger(ledger.engine, since=now - timedelta(hours=1), now=now,
                                 expected_interval=timedelta(hours=1), max_intervals=3,
                                 dag_id="storesync_monitor", run_id="scheduled__m")
    assert [a.kind for a in alerts] == ["dead_letters", "no_progress"]
    texts = [hook.json(i)["text"] for i in range(len(hook.requests))]
    assert "3 new sendlane dead letters" in texts[0] and "order_events: no progress" in texts[1]
    assert all("storesync_monitor" in t and "scheduled__m" in t and not EMAIL_RE.search(t) for t in texts)
    ledger.engine.dispose()


def test_alert_on_ledger_reports_deliveries_stuck_open(alert_env, tmp_path):
    from storesync.provider.notifiers import alert_on_ledger

    now = datetime(2026, 11, 20, 12, 0)
    ledger = Ledger(f"sqlite:///{tmp_path / 'monitor.db'}")
    with ledger.engine.begin() as conn:
        conn.execute(insert(deliveries), [_delivery_row(i, state="unknown", updated_at=now - timedelta(hours=9))
                                          for i in range(2)])
    with WebhookReceiver() as hook:
        alert_env.setenv("AIRFLOW_CONN_STORESYNC_SLACK", slack_conn(hook.url))
        alerts = alert_on_ledger(ledger.engine, since=now - timedelta(hours=1), now=now,
                                 expected_interval={}, max_intervals=3, stuck_after=timedelta(hours=6),
                                 dag_id="storesync_monitor", run_id="scheduled__m")
        assert alert_on_ledger(ledger.engine, since=now - timedelta(hours=1), now=now, expected_interval={},
                               stuck_after=None) == []
    assert [a.kind for a in alerts] == ["stuck_deliveries"]
    assert "2 sendlane deliveries stuck in unknown" in hook.json(0)["text"]
    ledger.engine.dispose()


def test_sqlite_ledger_is_not_created_by_a_callback(alert_env, tmp_path):
    from storesync.provider.notifiers import StoresyncAlertNotifier

    missing = tmp_path / "absent" / "ledger.db"
    alert_env.setenv("STORESYNC_LEDGER_URL", f"sqlite:///{missing}")
    alert = StoresyncAlertNotifier().build_alert(task_context(failing_exception()))
    assert alert.counts == {} and not missing.exists()


# ============================================================================ inside Airflow
PROBE_DAG = textwrap.dedent("""
    from datetime import datetime

    from airflow.sdk import dag, task

    from storesync.provider.notifiers import alert_callbacks


    @dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         on_failure_callback=alert_callbacks(),                             # once per failed run
         default_args={"retries": 0, "on_failure_callback": alert_callbacks()})  # per failed task
    def storesync_alert_probe():
        @task
        def deliver():
            raise RuntimeError("Sendlane 400 for jane.doe@customer-mail.example.com api_token=abc123")

        deliver()


    storesync_alert_probe()
""")


@pytest.mark.slow
@pytest.mark.airflow
def test_airflow_runs_both_callbacks(tmp_path):
    """``airflow dags test`` in its own AIRFLOW_HOME: the task-level callback runs in the task
    runner (with the exception), the DAG-level one once for the failed run (with the reason)."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "storesync_alert_probe.py").write_text(PROBE_DAG)
    home = tmp_path / "airflow"
    with WebhookReceiver() as hook:
        env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
               "AIRFLOW__API__BASE_URL": "https://airflow.example.org",
               "STORESYNC_LEDGER_URL": f"sqlite:///{tmp_path / 'absent.db'}",
               "AIRFLOW_CONN_STORESYNC_SLACK": slack_conn(hook.url)}
        env.pop("AIRFLOW_CONN_STORESYNC_SMTP", None)
        airflow = [sys.executable, "-m", "airflow"]
        migrate = subprocess.run(airflow + ["db", "migrate"], env=env, capture_output=True, text=True,
                                 timeout=300)
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        run = subprocess.run(airflow + ["dags", "test", "storesync_alert_probe"], env=env,
                             capture_output=True, text=True, timeout=300)
        texts = [hook.json(i)["text"] for i in range(len(hook.requests))]
    output = run.stdout + run.stderr
    assert "DagRun failed" in output or "state=failed" in output, output[-3000:]
    assert "Failed to send notification" not in output and "Callback failed" not in output, output[-3000:]
    assert len(texts) == 2, output[-3000:]
    task_alert, run_alert = texts
    assert "task deliver failed" in task_alert and "RuntimeError: Sendlane 400 for [email]" in task_alert
    assert "run failed" in run_alert and "Reason: task_failure" in run_alert
    assert "Last task: deliver" in run_alert
    for text in texts:
        assert "DAG: storesync_alert_probe" in text and "Run: manual__" in text
        assert "https://airflow.example.org/dags/storesync_alert_probe/runs/manual__" in text
        assert not EMAIL_RE.search(text) and "abc123" not in text


@pytest.mark.postgres
def test_ledger_counts_from_a_postgres_ledger(alert_env, pg_url):
    from storesync.provider.notifiers import StoresyncAlertNotifier

    ledger = Ledger(pg_url)
    with ledger.engine.begin() as conn:
        conn.execute(insert(deliveries),
                     [_delivery_row(i, updated_at=datetime(2026, 11, 20)) for i in range(2)])
    ledger.engine.dispose()
    alert_env.setenv("STORESYNC_LEDGER_URL", pg_url)
    assert StoresyncAlertNotifier().build_alert(task_context(failing_exception())).counts == {"dead": 2}
    # an unreachable ledger costs the counts, never the alert
    alert_env.setenv("STORESYNC_LEDGER_URL", "postgresql+psycopg://storesync:pw@127.0.0.1:1/store")
    alert = StoresyncAlertNotifier().build_alert(task_context(failing_exception()))
    assert alert.counts == {} and alert.dag_id == DAG_ID


# ---------------------------------------------------------------------------- task-level alerts
def test_run_counts_include_the_runs_per_sync_ids(ledger_engine):
    t0 = datetime(2026, 11, 20, 10, 0)
    with ledger_engine.begin() as conn:
        conn.execute(insert(deliveries), [_delivery_row(i, updated_at=t0, run_id=f"{DAG_ID}/{RUN_ID}/order_events")
                                          for i in range(3)]
                     + [_delivery_row(7, updated_at=t0, run_id=f"{DAG_ID}/{RUN_ID}x/order_events")])
    assert run_counts(ledger_engine, f"{DAG_ID}/{RUN_ID}") == {"dead": 3}  # not the run whose id extends it


def test_a_storesync_tasks_alert_names_vendor_connection_fix_and_masks_its_connections_secrets(alert_env):
    from storesync.core.errors import AuthError
    from storesync.provider.failures import explain
    from storesync.provider.notifiers import StoresyncAlertNotifier
    from storesync.provider.operators.sendlane import SendlaneDeliverOperator

    plain_secret = "plainpass-7"  # no pattern would take it for a secret: only knowing it masks it
    alert_env.setenv("AIRFLOW_CONN_SENDLANE_BRAND_B", json.dumps({
        "conn_type": "sendlane", "host": "http://127.0.0.1:9/sendlane/v2", "password": plain_secret,
        "extra": {"integration_token": "integ-plain-8"}}))
    task = SendlaneDeliverOperator(task_id="deliver_sendlane", sync_name="brand_b.orders",
                                   sendlane_conn_id="sendlane_brand_b")
    failure = explain(AuthError(f"token {plain_secret} refused; integration integ-plain-8", http_status=401),
                      vendor="sendlane", conn_id="sendlane_brand_b", account="brand-b", waiting=12)
    context = task_context(failure)
    context["task"] = task
    alert = StoresyncAlertNotifier(secrets=["extra-known-1"]).build_alert(context)
    facts = dict(alert.facts)
    assert facts["Vendor"] == "sendlane" and facts["Connection"] == "sendlane_brand_b"
    assert facts["Account"] == "brand-b" and facts["Error"] == "HTTP 401 auth"
    assert facts["Next step"].startswith("fix the API token (password) and the integration token")
    assert alert.counts["waiting_in_ledger"] == 12 and alert.counts["accepted"] == 3  # the ledger's, too
    assert plain_secret not in alert.text and "integ-plain-8" not in alert.text and "***" in alert.detail
    assert "sendlane task deliver failed: HTTP 401" in alert.subject  # the task id of the context's ti


def test_an_unclassified_failure_of_a_storesync_task_still_names_its_vendor(alert_env):
    from storesync.core.errors import RetryableError
    from storesync.provider.notifiers import StoresyncAlertNotifier
    from storesync.provider.operators.sailthru import SailthruDeliverOperator

    context = task_context(RetryableError("HTTP 503 after 5 attempts"))
    context["task"] = SailthruDeliverOperator(task_id="deliver_sailthru", sync_name="s")
    alert = StoresyncAlertNotifier().build_alert(context)
    facts = dict(alert.facts)
    assert facts["Vendor"] == "sailthru" and facts["Connection"] == "sailthru_default"
    assert "check its status page" in facts["Next step"]
