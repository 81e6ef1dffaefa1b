"""Failures a retry cannot fix fail the task at once, saying what happened and what fixes it.

Auth and lock-out answers, configuration errors, a quality gate that stopped the run, held
deliveries and deliveries stranded under another account key do not get better by waiting two
minutes: the operators raise :class:`StoresyncTaskFailure` (an ``AirflowFailException``: no Airflow
retries) whose message is the whole story for the task log and the UI, and whose attributes feed
the failure alert (``storesync.provider.notifiers``). Anything else (a vendor outage outlasting the
client's retries, a database blip) goes through the task's retries as usual.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException

from storesync.core.errors import AuthError, ConfigurationError

AUTH, LOCKOUT, CONFIGURATION, QUARANTINE, HELD, OTHER_ACCOUNTS = (
    "auth", "lockout", "configuration", "quarantine", "held", "other_accounts")


class StoresyncTaskFailure(AirflowFailException):
    """A storesync task failed for a reason retries cannot fix.

    :ivar kind: ``auth``, ``lockout``, ``configuration``, ``quarantine``, ``held``, ``other_accounts``.
    :ivar vendor, conn_id, account: whose failure (None when not about a vendor).
    :ivar http_status, error_class: the vendor's answer, when there was one.
    :ivar counts: whole-number counts (deliveries waiting, held, accepted...).
    :ivar next_step: what a person does about it.
    """

    def __init__(self, message: str, *, kind: str, next_step: str, vendor: str | None = None,
                 conn_id: str | None = None, account: str | None = None, http_status: int | None = None,
                 error_class: str | None = None, counts: dict | None = None, quarantine=None) -> None:
        super().__init__(message)
        self.kind = kind
        self.next_step = next_step
        self.vendor = vendor
        self.conn_id = conn_id
        self.account = account
        self.http_status = http_status
        self.error_class = error_class
        self.counts = {k: v for k, v in (counts or {}).items() if isinstance(v, int) and not isinstance(v, bool)}
        if quarantine is not None:  # what the quarantine alert shows (storesync.quality.QualityGateError)
            self.entity = quarantine.entity
            self.share = quarantine.share
            self.threshold = quarantine.threshold
            self.top_reasons = getattr(quarantine, "top_reasons", None) or []


def _vendor_name(vendor: str | None) -> str:
    return {"sendlane": "Sendlane", "sailthru": "Sailthru"}.get(vendor or "", vendor or "the vendor")


def _credential_fields(vendor: str | None) -> str:
    return {"sendlane": "the API token (password) and the integration token (extra)",
            "sailthru": "the API key (login) and the secret (password)"}.get(vendor or "", "its credentials")


def explain(error: BaseException, *, vendor: str | None = None, conn_id: str | None = None,
            account: str | None = None, waiting: int | None = None,
            databases: str | None = None) -> StoresyncTaskFailure | None:
    """The task failure for ``error``, or None when a retry may help (let Airflow retry).
    ``databases``: which warehouse and ledger (connections, URLs masked) and models the task used."""
    from sqlalchemy.exc import DBAPIError, NoSuchTableError

    from storesync.provider import tasks
    from storesync.quality.errors import QualityGateError
    from storesync.warehouse import errors as database_errors

    counts = {"waiting_in_ledger": waiting} if waiting is not None else {}
    nothing_lost = (f" Nothing is lost: {waiting} {vendor} deliveries wait in the ledger and go on the next run."
                    if waiting else " Nothing is lost: the ledger keeps every planned delivery.")
    if isinstance(error, AuthError):
        status = getattr(error, "http_status", None)
        where = f"connection {conn_id!r}" if conn_id else f"the {vendor} settings"
        if vendor == "sendlane" and status == 403:
            next_step = (f"wait for Sendlane's lock-out of this account to lapse (it follows too many "
                         f"errors), check {where}, then clear this task")
            kind, what = LOCKOUT, "refused the requests (HTTP 403): the account may be locked out"
        else:
            next_step = (f"fix {_credential_fields(vendor)} in Airflow {where} (Admin -> Connections; "
                         f"its Test button checks them), then clear this task")
            kind, what = AUTH, f"refused the credentials (HTTP {status})" if status else "refused the credentials"
        message = (f"{_vendor_name(vendor)} {what} of {where} (account {account}); its answer: "
                   f"{error}.{nothing_lost} To fix: {next_step}.")
        return StoresyncTaskFailure(message, kind=kind, next_step=next_step, vendor=vendor, conn_id=conn_id,
                                    account=account, http_status=status, error_class="auth", counts=counts)
    if isinstance(error, QualityGateError):
        from storesync.pipeline.jobs import gate_failure
        from storesync.run_report import model_at_fault

        entity = getattr(error, "entity", None) or "rows"
        fault = model_at_fault(gate_failure(error))
        if fault:  # half the rows or more fail one check: the model, not the threshold
            next_step = (f"fix the {entity} model: most rows fail {fault[0]} (`storesync models check "
                         f"--model {entity}` shows what it returns against the contract), then clear this task")
        else:
            next_step = (f"fix the {entity} rows in the warehouse (storesync_quarantine lists each row's "
                         f"reasons), or raise quarantine_thresholds.{entity}, then clear this task")
        return StoresyncTaskFailure(f"{error}. Nothing was sent for this window. To fix: {next_step}.",
                                    kind=QUARANTINE, next_step=next_step, quarantine=error)
    if isinstance(error, tasks.HeldDeliveries):
        report = error.report
        message = str(error)
        next_step = message.split("\n", 1)[1] if "\n" in message else tasks.held_remedy(vendor or "")
        return StoresyncTaskFailure(
            message, kind=HELD, next_step=next_step, vendor=vendor, conn_id=conn_id, account=account,
            counts={k: report.get(k) for k in ("held_unknown", "accepted", "awaiting_lookup", "dead",
                                               "waiting_behind_dead")})
    if isinstance(error, tasks.OtherAccountsOpen):
        report = error.report
        others = report.get("open_under_other_accounts") or {}
        next_step = (f"if it is the same {vendor} account under a new key: storesync ledger move-account "
                     f"--vendor {vendor} --from OLD --to {account}; else set account_id in {conn_id!r} back")
        return StoresyncTaskFailure(f"{error}", kind=OTHER_ACCOUNTS, next_step=next_step, vendor=vendor,
                                    conn_id=conn_id, account=account,
                                    counts={"open_under_other_accounts": sum(others.values()),
                                            "accepted": report.get("accepted")})
    if isinstance(error, DBAPIError | NoSuchTableError) and database_errors.database_problem(error) in (
            database_errors.URL, database_errors.SCHEMA):  # a wrong URL or models: no retry fixes them
        next_step = "fix the connection's URL or the models the message names, then clear this task"
        text = database_errors.describe(error, databases or "the warehouse and ledger connections")
        return StoresyncTaskFailure(f"{text}. To fix: {next_step}.", kind=CONFIGURATION, next_step=next_step,
                                    vendor=vendor, conn_id=conn_id, account=account)
    if isinstance(error, ConfigurationError):
        next_step = "fix the connection or setting the message names, then clear this task"
        return StoresyncTaskFailure(f"configuration: {error}. To fix: {next_step}.", kind=CONFIGURATION,
                                    next_step=next_step, vendor=vendor, conn_id=conn_id, account=account)
    return None
