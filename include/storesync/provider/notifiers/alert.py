"""Failure alerts through Airflow notifiers: a Slack incoming webhook and/or e-mail, from connections.

``StoresyncAlertNotifier`` is an Airflow ``BaseNotifier`` (``airflow.sdk``). It sends one
:class:`~storesync.provider.notifiers.messages.Alert` to every channel that is configured:

- ``storesync_slack``: a connection of type ``slackwebhook`` (Slack provider; the webhook token or
  the whole webhook URL in the password; a custom ``http://host:port`` in the host for a local
  receiver), or of type ``http`` (HTTP provider; the whole webhook URL in the host), which receives
  ``{"text": ..., "kind", "dag_id", "run_id", "counts", "link"}`` as JSON;
- ``storesync_smtp``: a connection of type ``smtp`` (SMTP provider), recipients in its extra
  ``"to"`` (or ``email_to=``), the sender in ``"from_email"`` (or ``email_from=``).

With neither connection defined it logs one line and sends nothing, without raising: alerting is
opt-in per deployment. A configured channel that fails raises :class:`AlertDeliveryError` (after
the other channel was tried), with the error text scrubbed of the connection's secrets.

Attach it as a DAG's failure callback (runs once per failed run, in the DAG processor)::

    @dag(..., on_failure_callback=alert_callbacks())

or per task (runs in the worker, and sees the exception)::

    default_args={"on_failure_callback": alert_callbacks()}

The message goes to the providers' *hooks*, not through their notifiers: a provider notifier
renders its ``text`` / ``subject`` / ``html_content`` as Jinja templates, and an alert holds
exception text, which must never be evaluated as a template (``{{ conn.x.password }}`` in an
error message would otherwise be expanded). For the same reason this notifier has no template
fields.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from typing import TYPE_CHECKING

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from storesync.provider.notifiers.messages import Alert

# The message builders (and their compiled patterns) load on first use: DAG files build this
# notifier while they are parsed, and parsing must stay cheap.

log = logging.getLogger(__name__)


def _messages():
    """The message builders, loaded on first use: DAG files build this notifier while they are
    parsed, and the builders' compiled patterns are not needed until an alert is made."""
    from storesync.provider.notifiers import messages

    return messages


def _scrub(text, **kwargs) -> str:
    return _messages().scrub(text, **kwargs)

SLACK_CONN_ID = "storesync_slack"
SMTP_CONN_ID = "storesync_smtp"
SLACK_WEBHOOK_CONN_TYPES = frozenset({"slackwebhook", "slack_webhook"})
HTTP_CONN_TYPES = frozenset({"http", "https"})


class AlertDeliveryError(Exception):
    """A configured alert channel could not deliver (the message names the channel, never a secret)."""


def airflow_base_url() -> str | None:
    """``[api] base_url`` (Airflow maps the deprecated ``[webserver] base_url`` onto it), or None."""
    try:
        from airflow.sdk.configuration import conf

        return conf.get("api", "base_url", fallback=None) or None
    except Exception:  # noqa: BLE001 - a link is a nicety: a relative one will do
        return None


def _get_connection(conn_id: str | None):
    """The connection, or None when it is not defined (any backend: env var, secrets, metadata DB)."""
    if not conn_id:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as exc:  # noqa: BLE001 - a lookup failure must not turn into a second failure
        log.warning("storesync alerts: could not look up connection %r (%s); skipping it",
                    conn_id, _scrub(f"{type(exc).__name__}: {exc}", limit=200))
        return None


def _secrets_of(conn) -> list[str]:
    return [v for v in (getattr(conn, "password", None), getattr(conn, "host", None),
                        getattr(conn, "login", None)) if v]


def _known_secrets(conn_ids) -> list[str]:
    if conn_ids is None:
        return []
    from storesync.provider.connections import known_secrets

    return known_secrets(conn_ids)


def _generic_next_step(exception) -> str:
    """What to do about a failure storesync did not classify (it went through its retries)."""
    error_class = getattr(exception, "error_class", None)
    if error_class in ("retryable", "rate_limited"):
        return ("the vendor kept failing through every retry: check its status page, then clear the task; "
                "nothing is lost (the ledger re-drives what was not accepted)")
    return "read the task log for the error, fix its cause, then clear the task (the ledger sends nothing twice)"


def _recipients(value) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    return [v.strip() for v in value if v and v.strip()]


class StoresyncAlertNotifier(BaseNotifier):
    """Sends storesync alerts to the ``storesync_slack`` webhook and/or ``storesync_smtp`` e-mail.

    :param slack_conn_id: webhook connection (``slackwebhook`` or ``http``); None disables it.
    :param smtp_conn_id: SMTP connection; None disables it.
    :param email_to: recipients (else the SMTP connection's extra ``"to"``).
    :param email_from: sender (else the SMTP connection's extra ``"from_email"``).
    :param base_url: Airflow UI base for links (else ``[api] base_url``; else relative links).
    :param ledger_counts: add the run's delivery counts by state from the ledger to failure alerts.
    :param timeout: seconds for each webhook request.
    :param secrets: values masked verbatim in every alert (on top of the patterns). A storesync
        task's own connections' secrets (its ``conn_ids``) are masked without being listed.
    """

    template_fields: Sequence[str] = ()  # never render alert text as Jinja (see the module doc)

    def __init__(self, *, slack_conn_id: str | None = SLACK_CONN_ID, smtp_conn_id: str | None = SMTP_CONN_ID,
                 email_to: str | Iterable[str] | None = None, email_from: str | None = None,
                 base_url: str | None = None, ledger_counts: bool = True, timeout: int = 10,
                 secrets: Iterable[str] = (), context=None) -> None:
        super().__init__(context=context)
        self.secrets = [str(v) for v in secrets if v]
        self.slack_conn_id = slack_conn_id
        self.smtp_conn_id = smtp_conn_id
        self.email_to = email_to
        self.email_from = email_from
        self.base_url = base_url
        self.ledger_counts = ledger_counts
        self.timeout = timeout

    # ------------------------------------------------------------------ Airflow entry point
    def render_template_fields(self, context, jinja_env=None) -> None:
        """Nothing to render, so no Jinja environment is built either.

        ``BaseNotifier.__call__`` builds one from ``context["dag"]`` even without template fields,
        and in ``dag.test()`` (Airflow 3.3) a DAG-level callback's context holds a ``SerializedDAG``
        that has no ``get_template_env``: the callback would fail before sending anything.
        """

    def notify(self, context) -> None:
        self.send(self.build_alert(context))

    # ------------------------------------------------------------------ what to say
    def build_alert(self, context) -> Alert:
        """The failure alert for a callback context (DAG-level or task-level)."""
        dag, dag_run = context.get("dag"), context.get("dag_run")
        ti = context.get("ti") or context.get("task_instance")
        dag_id = (getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None)
                  or getattr(ti, "dag_id", None))
        run_id = context.get("run_id") or getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None)
        exception = context.get("exception")
        reason = context.get("reason")  # only DAG-level callbacks carry one
        task = context.get("task") or getattr(ti, "task", None)
        conn_ids = getattr(task, "conn_ids", None)  # a storesync operator's connections
        secrets = [*self.secrets, *_known_secrets(conn_ids)]
        counts = self._ledger_counts(dag_id, run_id, conn_ids) if self.ledger_counts else {}
        base_url = self.base_url or airflow_base_url()
        if exception is not None and all(hasattr(exception, a) for a in ("entity", "share", "threshold")):
            # The quality gate stopped the run (storesync.quality.QualityGateError).
            alert = _messages().quarantine_message(dag_id, run_id, entity=str(exception.entity),
                                       share=float(exception.share), threshold=float(exception.threshold),
                                       top_reasons=getattr(exception, "top_reasons", None) or [],
                                       counts=counts, base_url=base_url)
            next_step = getattr(exception, "next_step", None)
            task_id = getattr(ti, "task_id", None)
            if next_step or task_id:
                extra = ((("Task", task_id),) if task_id else ()) + \
                    ((("Next step", _scrub(next_step, secrets=secrets, limit=300)),) if next_step else ())
                alert = replace(alert, facts=alert.facts + extra)
            return alert
        if reason is None and (conn_ids is not None or hasattr(exception, "next_step")):
            # A storesync task: name its vendor, connection, account, the answer, and what fixes it.
            vendor = getattr(exception, "vendor", None) or getattr(task, "vendor", None)
            conn_id = getattr(exception, "conn_id", None) or (
                conn_ids.for_vendor(vendor) if conn_ids is not None and vendor else None)
            return _messages().task_failure_message(
                dag_id, run_id, task_id=getattr(ti, "task_id", None), map_index=getattr(ti, "map_index", None),
                try_number=getattr(ti, "try_number", None), exception=exception, vendor=vendor, conn_id=conn_id,
                account=getattr(exception, "account", None),
                http_status=getattr(exception, "http_status", None),
                error_class=getattr(exception, "error_class", None) or getattr(exception, "kind", None),
                next_step=getattr(exception, "next_step", None) or _generic_next_step(exception),
                counts={**counts, **(getattr(exception, "counts", None) or {})}, base_url=base_url,
                secrets=secrets)
        return _messages().failed_run_message(
            dag_id, run_id, task_id=getattr(ti, "task_id", None), map_index=getattr(ti, "map_index", None),
            try_number=getattr(ti, "try_number", None), reason=reason, exception=exception, counts=counts,
            base_url=base_url, scope="run" if reason is not None else None, secrets=secrets,
        )

    def _ledger_counts(self, dag_id: str | None, run_id: str | None, conn_ids=None) -> dict[str, int]:
        """Deliveries by state this run touched, from the ledger; {} when it cannot be read."""
        if not dag_id or not run_id:
            return {}
        try:
            from sqlalchemy import create_engine
            from sqlalchemy.engine import make_url

            from storesync.provider.connections import base_settings, database_url, get_connection
            from storesync.provider.notifiers.checks import run_counts

            ledger_conn = get_connection(conn_ids.ledger, required=False) if conn_ids is not None else None
            url = (database_url(conn_ids.ledger, ledger_conn) if ledger_conn is not None
                   else base_settings().ledger_url)
            parsed = make_url(url)
            backend = parsed.get_backend_name()
            if backend == "sqlite" and not (parsed.database and os.path.exists(parsed.database)):
                return {}  # no ledger yet; never create an empty SQLite file from a callback
            # A callback must not hang on an unreachable ledger: fail fast, send without counts.
            connect_args = {"connect_timeout": 5} if backend == "postgresql" else {}
            engine = create_engine(url, connect_args=connect_args)
            try:
                return run_counts(engine, f"{dag_id}/{run_id}")
            finally:
                engine.dispose()
        except Exception as exc:  # noqa: BLE001 - counts are a nicety; the alert must still go out
            log.info("storesync alerts: no ledger counts (%s)",
                     _scrub(f"{type(exc).__name__}: {exc}", limit=200))
            return {}

    # ------------------------------------------------------------------ where to say it
    def send(self, alert: Alert) -> list[str]:
        """Send ``alert`` to every configured channel; returns the channels that took it.

        Nothing configured: one log line, returns []. A configured channel failing: the other is
        still tried, then :class:`AlertDeliveryError` is raised.
        """
        delivered: list[str] = []
        failures: list[str] = []
        tried = 0
        webhook = _get_connection(self.slack_conn_id)
        if webhook is not None:
            tried += 1
            try:
                delivered.append(self._send_webhook(webhook, alert))
            except Exception as exc:  # noqa: BLE001 - reported below, scrubbed
                failures.append(f"{self.slack_conn_id}: " + _scrub(f"{type(exc).__name__}: {exc}",
                                                                   secrets=_secrets_of(webhook), limit=300))
        smtp = _get_connection(self.smtp_conn_id)
        if smtp is not None:
            to = _recipients(self.email_to) or _recipients(smtp.extra_dejson.get("to"))
            if not to:
                log.warning("storesync alerts: connection %r has no recipients (extra \"to\"); "
                            "no e-mail sent", self.smtp_conn_id)
            else:
                tried += 1
                try:
                    delivered.append(self._send_email(smtp, alert, to))
                except Exception as exc:  # noqa: BLE001 - reported below, scrubbed
                    failures.append(f"{self.smtp_conn_id}: " + _scrub(f"{type(exc).__name__}: {exc}",
                                                                      secrets=_secrets_of(smtp), limit=300))
        if not tried:
            log.warning("storesync alerts: no alert channel configured (connections %r, %r); not sent: %s",
                     self.slack_conn_id, self.smtp_conn_id, alert.subject)
            return []
        if failures:
            # ``from None``: the original exception may print the webhook URL with its token.
            raise AlertDeliveryError("storesync alert not delivered by " + "; ".join(failures)) from None
        log.info("storesync alert sent to %s: %s", ", ".join(delivered), alert.subject)
        return delivered

    def _send_webhook(self, conn, alert: Alert) -> str:
        conn_type = (conn.conn_type or "").lower()
        if conn_type in SLACK_WEBHOOK_CONN_TYPES:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

            SlackWebhookHook(slack_webhook_conn_id=conn.conn_id, timeout=self.timeout).send(text=alert.text)
            return f"slack webhook ({conn.conn_id})"
        if conn_type in HTTP_CONN_TYPES:
            from airflow.providers.http.hooks.http import HttpHook

            HttpHook(method="POST", http_conn_id=conn.conn_id).run(
                json=alert.as_webhook_payload(), extra_options={"timeout": self.timeout})
            return f"http webhook ({conn.conn_id})"
        raise AlertDeliveryError(f"connection type {conn_type!r} is not a webhook (use slackwebhook or http)")

    def _send_email(self, conn, alert: Alert, to: list[str]) -> str:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=conn.conn_id) as hook:
            hook.send_email_smtp(to=to, from_email=self.email_from or hook.from_email,
                                 subject=alert.subject, html_content=alert.html)
        return f"e-mail ({conn.conn_id})"


def alert_callbacks(**kwargs) -> list[BaseNotifier]:
    """What a DAG passes as ``on_failure_callback`` (or puts in ``default_args`` for task failures)."""
    return [StoresyncAlertNotifier(**kwargs)]


def send_alert(alert: Alert, *, secrets: Iterable[str] = (), **kwargs) -> list[str]:
    """Send an alert built elsewhere (quarantine, dead letters, no progress) to the configured channels,
    ``secrets`` masked in its free text."""
    if secrets:
        facts = tuple((label, _scrub(value, secrets=secrets, limit=None)) for label, value in alert.facts)
        alert = replace(alert, facts=facts,
                        detail=_scrub(alert.detail, secrets=secrets) if alert.detail else alert.detail)
    return StoresyncAlertNotifier(secrets=secrets, **kwargs).send(alert)


DEFAULT_STUCK_AFTER = timedelta(hours=6)


def alert_on_ledger(engine, *, since: datetime, now: datetime, expected_interval, max_intervals: int = 3,
                    dag_id: str | None = None, run_id: str | None = None, notifier=None,
                    stuck_after: timedelta | None = DEFAULT_STUCK_AFTER) -> list[Alert]:
    """Check the ledger for new dead letters, stalled syncs and deliveries stuck in ``staged``,
    ``sending`` or ``unknown`` for longer than ``stuck_after`` (None: not checked), and send an
    alert for each finding.

    For a monitoring task: ``since`` / ``now`` are its data interval. Returns the alerts built
    (sent when a channel is configured).
    """
    from storesync.provider.notifiers.checks import (
        find_new_dead_letters,
        naive_utc,
        find_stalled_syncs,
        find_stuck_deliveries,
    )

    notifier = notifier or StoresyncAlertNotifier()
    base_url = notifier.base_url or airflow_base_url()
    alerts = [
        _messages().dead_letters_message(dag_id, run_id, vendor=found.vendor, count=found.count,
                             top_error_classes=found.top_error_classes, since=since, base_url=base_url)
        for found in find_new_dead_letters(engine, since, until=now)
    ]
    alerts += [
        _messages().no_progress_message(
            stalled.sync_name, watermark=stalled.watermark, now=now, expected_interval=stalled.expected_interval,
            max_intervals=stalled.max_intervals, dag_id=dag_id, run_id=run_id, base_url=base_url)
        for stalled in find_stalled_syncs(engine, expected_interval, max_intervals, now)
    ]
    if stuck_after is not None:
        alerts += [
            _messages().stuck_deliveries_message(
                stuck.vendor, state=stuck.state, count=stuck.count, oldest_at=stuck.oldest_at,
                now=naive_utc(now), older_than=stuck_after, sync_names=stuck.sync_names,
                dag_id=dag_id, run_id=run_id, base_url=base_url)
            for stuck in find_stuck_deliveries(engine, stuck_after, now)
        ]
    for alert in alerts:
        notifier.send(alert)
    return alerts


__all__ = [
    "AlertDeliveryError",
    "HTTP_CONN_TYPES",
    "SLACK_CONN_ID",
    "SMTP_CONN_ID",
    "StoresyncAlertNotifier",
    "airflow_base_url",
    "alert_callbacks",
    "alert_on_ledger",
    "send_alert",
]
