"""Alert messages: what storesync tells a person when a sync needs one. Pure functions, no Airflow.

Four kinds, each an :class:`Alert` that renders itself as Slack text and as an e-mail:

- ``failed_run``: a DAG run (or one of its tasks) failed;
- ``quarantine``: an entity's quarantined share passed its threshold (the quality gate stopped the run);
- ``dead_letters``: deliveries a vendor refused for good appeared in the ledger;
- ``no_progress``: a sync's watermark has not moved for more than N schedule intervals.

Every alert names the DAG id and the run id (when there is one), its counts, and links to the run
in the Airflow UI (``base_url`` from the caller; a relative link without one). No alert carries a
secret or a customer's e-mail address: free text (exception messages, vendor errors, reasons) goes
through :func:`scrub` first, and records are only ever counted, never shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from urllib.parse import quote

FAILED_RUN, QUARANTINE, DEAD_LETTERS, NO_PROGRESS = "failed_run", "quarantine", "dead_letters", "no_progress"
STUCK = "stuck_deliveries"
MAX_DETAIL_CHARS = 600
MASK = "***"

# ---------------------------------------------------------------------------- scrub
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^\s/@:]*:[^\s/@]*@")
_SLACK_HOOK_PATH = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s\"'<>)]+")
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token|digest)\s+)?[^\s\"',;]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{6,}")
_SECRET_KEY = (r"[A-Za-z0-9_\-]*(?:token|secret|passw(?:or)?d|pwd|api[_\-]?key|apikey|access[_\-]?key"
               r"|private[_\-]?key|sig|signature|credentials?|auth|session[_\-]?id|cookie)")
_KEY_VALUE = re.compile(
    rf"(?i)([\"']?\b{_SECRET_KEY}\b[\"']?\s*(?:=|:)\s*)([\"']?)[^\s\"'&,;}}\]]+"
)
_KNOWN_TOKENS = re.compile(
    r"\b(?:xox[abposr]-[A-Za-z0-9\-]+"          # Slack tokens
    r"|gh[pousr]_[A-Za-z0-9]{20,}"              # GitHub tokens
    r"|sk-[A-Za-z0-9_\-]{16,}"                  # API secret keys of the sk- kind
    r"|AKIA[0-9A-Z]{16}"                        # AWS access key ids
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+)"  # JWTs
)
# A customer e-mail, also URL-encoded (``%40``) as it appears in query strings.
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_HEX = re.compile(r"\b[0-9a-fA-F]{32,}\b")
_LONG_WORD = re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{24,}={0,2}(?![A-Za-z0-9_\-])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _looks_random(word: str) -> bool:
    """Upper case, lower case and digits mixed in one long word, and not a date: a token's look."""
    return (any(c.isupper() for c in word) and any(c.islower() for c in word)
            and any(c.isdigit() for c in word) and not _DATE.search(word))


def scrub(text: object, *, secrets: Iterable[str] = (), limit: int | None = MAX_DETAIL_CHARS) -> str:
    """``text`` with anything that looks like a secret or an e-mail address masked.

    Masks: the given ``secrets`` verbatim; passwords in URLs (``scheme://user:pass@``); Slack
    webhook paths; ``Authorization`` headers and bearer tokens; values of keys that name a secret
    (``api_key=``, ``"password": "..."``, ``sig=``, ``X-Api-Key:``...); well-known token shapes
    (Slack, GitHub, AWS, JWT); e-mail addresses (also ``%40``-encoded) as ``[email]``; long hex
    strings and long mixed-case-and-digit words as ``[token]``. Then cuts to ``limit`` characters
    (after masking, so a cut never leaves half an address showing).
    """
    out = "" if text is None else str(text)
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", out)
    out = _SLACK_HOOK_PATH.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{(m.group(2) + ' ') if m.group(2) else ''}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", out)
    out = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", out)
    out = _KNOWN_TOKENS.sub("[token]", out)
    out = _EMAIL.sub("[email]", out)
    out = _HEX.sub("[token]", out)
    out = _LONG_WORD.sub(lambda m: "[token]" if _looks_random(m.group(0)) else m.group(0), out)
    if limit is not None and len(out) > limit:
        out = out[: max(limit - 1, 0)].rstrip() + "…"
    return out


# ---------------------------------------------------------------------------- links
def run_link(base_url: str | None, dag_id: str | None, run_id: str | None = None,
             task_id: str | None = None, map_index: int | None = None) -> str | None:
    """The Airflow 3 UI address of a DAG, a run or a task instance (relative without a base URL)."""
    if not dag_id:
        return None
    link = f"{(base_url or '').rstrip('/')}/dags/{quote(dag_id, safe='')}"
    if run_id:
        link += f"/runs/{quote(run_id, safe='')}"
        if task_id:
            link += f"/tasks/{quote(task_id, safe='')}"
            if map_index is not None and map_index >= 0:
                link += f"/mapped/{map_index}"
    return link


# ---------------------------------------------------------------------------- the alert
@dataclass(frozen=True)
class Alert:
    """One message, channel-neutral: Slack takes :attr:`text`, e-mail :attr:`subject` / :attr:`html`."""

    kind: str
    title: str
    dag_id: str | None = None
    run_id: str | None = None
    facts: tuple[tuple[str, str], ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    detail: str | None = None
    link: str | None = None

    @property
    def subject(self) -> str:
        where = f" [{self.dag_id}]" if self.dag_id else ""
        return f"storesync: {self.title}{where}"

    def lines(self) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        if self.dag_id:
            rows.append(("DAG", self.dag_id))
        if self.run_id:
            rows.append(("Run", self.run_id))
        rows.extend(self.facts)
        if self.counts:
            rows.append(("Counts", ", ".join(f"{k}={v}" for k, v in self.counts.items())))
        if self.detail:
            rows.append(("Detail", self.detail))
        if self.link:
            rows.append(("Link", self.link))
        return rows

    @property
    def text(self) -> str:
        """Plain text, also valid Slack ``mrkdwn`` (``&``, ``<`` and ``>`` escaped as Slack asks)."""
        def slack(value: str) -> str:
            return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        body = [f":rotating_light: *{slack(self.subject)}*"]
        body += [f"{label}: {slack(value)}" for label, value in self.lines()]
        return "\n".join(body)

    @property
    def plain(self) -> str:
        return "\n".join([self.subject] + [f"{label}: {value}" for label, value in self.lines()])

    @property
    def html(self) -> str:
        rows = []
        for label, value in self.lines():
            shown = (f'<a href="{escape(value, quote=True)}">{escape(value)}</a>' if label == "Link"
                     else escape(value).replace("\n", "<br>"))
            rows.append(f"<tr><th align=\"left\">{escape(label)}</th><td>{shown}</td></tr>")
        return f"<h3>{escape(self.subject)}</h3><table>{''.join(rows)}</table>"

    def as_webhook_payload(self) -> dict:
        """The JSON a plain HTTP webhook receives: Slack-compatible ``text`` plus the fields."""
        return {"text": self.text, "kind": self.kind, "dag_id": self.dag_id, "run_id": self.run_id,
                "counts": dict(self.counts), "link": self.link}


def _top(items: Mapping[str, int] | Iterable[tuple[str, int]] | None, n: int = 5) -> list[tuple[str, int]]:
    if not items:
        return []
    pairs = list(items.items()) if isinstance(items, Mapping) else [tuple(p) for p in items]
    pairs.sort(key=lambda p: (-int(p[1]), str(p[0])))
    return [(scrub(name, limit=80), int(count)) for name, count in pairs[:n]]


def _fmt_top(pairs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} ×{count}" for name, count in pairs) or "none recorded"


def _counts(counts: Mapping[str, object] | None) -> dict[str, int]:
    """Counts only: anything that is not a whole number is dropped (so no row value slips in)."""
    out: dict[str, int] = {}
    for key, value in (counts or {}).items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        out[scrub(key, limit=60)] = value
    return out


# ---------------------------------------------------------------------------- builders
def failed_run_message(dag_id: str | None, run_id: str | None, *, task_id: str | None = None,
                       map_index: int | None = None, try_number: int | None = None,
                       reason: str | None = None, exception: BaseException | str | None = None,
                       counts: Mapping[str, object] | None = None, base_url: str | None = None,
                       secrets: Iterable[str] = (), scope: str | None = None) -> Alert:
    """A DAG run (``scope="run"``; ``task_id`` is then its last task) or one of its tasks failed."""
    scope = scope or ("task" if task_id else "run")
    facts: list[tuple[str, str]] = []
    if task_id:
        facts.append(("Task" if scope == "task" else "Last task",
                      task_id + (f"[{map_index}]" if map_index is not None and map_index >= 0 else "")))
    if try_number:
        facts.append(("Try", str(try_number)))
    if reason:
        facts.append(("Reason", scrub(reason, secrets=secrets, limit=200)))
    detail = None
    if exception is not None:
        text = exception if isinstance(exception, str) else f"{type(exception).__name__}: {exception}"
        detail = scrub(text, secrets=secrets)
        error_class = getattr(exception, "error_class", None)
        if isinstance(error_class, str):
            facts.append(("Error class", error_class))
    title = f"task {task_id} failed" if scope == "task" and task_id else "run failed"
    link = (run_link(base_url, dag_id, run_id, task_id, map_index) if scope == "task"
            else run_link(base_url, dag_id, run_id))
    return Alert(FAILED_RUN, title, dag_id, run_id, tuple(facts), _counts(counts), detail, link)


def task_failure_message(dag_id: str | None, run_id: str | None, *, task_id: str | None,
                         map_index: int | None = None, try_number: int | None = None,
                         exception: BaseException | str | None = None, vendor: str | None = None,
                         conn_id: str | None = None, account: str | None = None,
                         http_status: int | None = None, error_class: str | None = None,
                         next_step: str | None = None, counts: Mapping[str, object] | None = None,
                         base_url: str | None = None, secrets: Iterable[str] = ()) -> Alert:
    """A storesync task failed: which task, vendor and account, the vendor's answer, the counts,
    and what fixes it (the failure's own ``next_step``)."""
    facts: list[tuple[str, str]] = [
        ("Task", (task_id or "?") + (f"[{map_index}]" if map_index is not None and map_index >= 0 else ""))]
    if vendor:
        facts.append(("Vendor", vendor))
    if conn_id:
        facts.append(("Connection", conn_id))
    if account:
        facts.append(("Account", scrub(account, secrets=secrets, limit=60)))
    if http_status or error_class:
        facts.append(("Error", " ".join(p for p in (f"HTTP {http_status}" if http_status else "",
                                                    error_class or "") if p)))
    if try_number:
        facts.append(("Try", str(try_number)))
    if next_step:
        facts.append(("Next step", scrub(next_step, secrets=secrets, limit=900)))
    detail = None
    if exception is not None:
        text = exception if isinstance(exception, str) else str(exception)
        if next_step and next_step in text:  # said once, under Next step
            text = text.replace(f" To fix: {next_step}.", "").replace(next_step, "").strip()
        detail = scrub(text, secrets=secrets)
    title = f"{vendor} " if vendor else ""
    title += f"task {task_id} failed" + (f": HTTP {http_status}" if http_status else "")
    return Alert(FAILED_RUN, title, dag_id, run_id, tuple(facts), _counts(counts), detail,
                 run_link(base_url, dag_id, run_id, task_id, map_index))


def waiting_behind_dead_message(dag_id: str | None, run_id: str | None, *, task_id: str | None, vendor: str | None,
                                account: str | None, conn_id: str | None, waiting: int, dead: int = 0,
                                base_url: str | None = None) -> Alert:
    """Deliveries wait behind a dead letter of the same order or cart: they go once it is replayed."""
    facts = [("Task", task_id or "?"), ("Vendor", vendor or "?"), ("Connection", conn_id or "?"),
             ("Account", account or "?"), ("Waiting behind dead letters", str(waiting)),
             ("Next step", f"fix the cause (the dead letters' vendor errors), then replay: storesync replay "
                           f"--vendor {vendor} (or the dead-letter replay DAG)")]
    return Alert(DEAD_LETTERS, f"{waiting} {vendor} deliveries wait behind dead letters", dag_id, run_id,
                 tuple(facts), {"waiting_behind_dead": waiting, "dead": dead}, None,
                 run_link(base_url, dag_id, run_id, task_id))


def quarantine_message(dag_id: str | None, run_id: str | None, *, entity: str, share: float,
                       threshold: float, top_reasons: Mapping[str, int] | Iterable[tuple[str, int]] | None,
                       counts: Mapping[str, object] | None = None, base_url: str | None = None) -> Alert:
    """An entity's quarantined share passed its threshold: nothing of the run was sent."""
    facts = (("Entity", entity), ("Quarantined share", f"{share:.1%}"), ("Threshold", f"{threshold:.1%}"),
             ("Top reasons", _fmt_top(_top(top_reasons))))
    return Alert(QUARANTINE, f"{entity}: quarantine {share:.1%} over threshold {threshold:.1%}",
                 dag_id, run_id, facts, _counts(counts), None, run_link(base_url, dag_id, run_id))


def dead_letters_message(dag_id: str | None, run_id: str | None, *, vendor: str, count: int,
                         top_error_classes: Mapping[str, int] | Iterable[tuple[str, int]] | None,
                         since: datetime | None = None, counts: Mapping[str, object] | None = None,
                         base_url: str | None = None) -> Alert:
    """Deliveries a vendor refused for good appeared (replay them with ``storesync replay``)."""
    facts = [("Vendor", vendor), ("Dead letters", str(count)),
             ("Top error classes", _fmt_top(_top(top_error_classes)))]
    if since is not None:
        facts.append(("Since", since.isoformat(sep=" ", timespec="seconds")))
    facts.append(("Next step", f"storesync replay --vendor {vendor}"))
    return Alert(DEAD_LETTERS, f"{count} new {vendor} dead letter{'s' if count != 1 else ''}", dag_id, run_id,
                 tuple(facts), {"dead": count, **_counts(counts)}, None, run_link(base_url, dag_id, run_id))


def no_progress_message(sync_name: str, *, watermark: datetime | None, now: datetime,
                        expected_interval: timedelta, max_intervals: int, dag_id: str | None = None,
                        run_id: str | None = None, base_url: str | None = None) -> Alert:
    """A sync's watermark is older than ``max_intervals`` schedule intervals."""
    facts = [("Sync", sync_name),
             ("Watermark", watermark.isoformat(sep=" ", timespec="seconds") if watermark else "never set"),
             ("Expected interval", str(expected_interval)), ("Allowed intervals", str(max_intervals))]
    counts: dict[str, int] = {}
    if watermark is not None and expected_interval.total_seconds() > 0:
        behind = int((now - watermark) / expected_interval)
        facts.insert(2, ("Behind by", f"{now - watermark} ({behind} intervals)"))
        counts["intervals_behind"] = behind
    return Alert(NO_PROGRESS, f"{sync_name}: no progress for more than {max_intervals} intervals",
                 dag_id, run_id, tuple(facts), counts, None,
                 run_link(base_url, dag_id, run_id) if dag_id else None)


STUCK_NEXT_STEP = {
    "staged": "the run's quality gate failed: fix the data and rerun the window",
    "sending": "a sender hangs or died: the next delivery run recovers it (outcome unknown)",
    "unknown": "storesync reconcile --list",
}


def stuck_deliveries_message(vendor: str, *, state: str, count: int, oldest_at: datetime, now: datetime,
                             older_than: timedelta, sync_names: Iterable[str] = (), dag_id: str | None = None,
                             run_id: str | None = None, base_url: str | None = None) -> Alert:
    """Open deliveries of one vendor have stayed in ``state`` for longer than ``older_than``."""
    facts = [("Vendor", vendor), ("State", state), ("Deliveries", str(count)),
             ("Oldest unchanged since", oldest_at.isoformat(sep=" ", timespec="seconds")),
             ("Age", str(now - oldest_at).split(".")[0]), ("Threshold", str(older_than))]
    names = [n for n in sync_names if n]
    if names:
        facts.append(("Syncs", ", ".join(names)))
    facts.append(("Next step", STUCK_NEXT_STEP.get(state, "look at storesync_deliveries")))
    return Alert(STUCK, f"{count} {vendor} deliver{'ies' if count != 1 else 'y'} stuck in {state}",
                 dag_id, run_id, tuple(facts), {state: count}, None,
                 run_link(base_url, dag_id, run_id) if dag_id else None)


__all__ = [
    "Alert",
    "DEAD_LETTERS",
    "FAILED_RUN",
    "MAX_DETAIL_CHARS",
    "NO_PROGRESS",
    "QUARANTINE",
    "STUCK",
    "dead_letters_message",
    "failed_run_message",
    "no_progress_message",
    "quarantine_message",
    "stuck_deliveries_message",
    "task_failure_message",
    "waiting_behind_dead_message",
    "run_link",
    "scrub",
]
