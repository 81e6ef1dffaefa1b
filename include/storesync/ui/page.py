"""The Storesync page: one HTML document, rendered on the server from the ledger's numbers.

Sections: overview (deliveries by state per day, sends per minute against the budget, budgets in
use now, watermark lag, the last runs), dead letters and held rows (masked, with the replay
actions), the quarantine, and LTV. Every number a test or a person checks carries a
``data-metric`` attribute. The only script (``static/storesync.js``) posts the actions; the
page reads fine without it.
"""

from __future__ import annotations

import json
from html import escape
from urllib.parse import urlencode

from storesync.ui import charts
from storesync.ui.queries import STATE_ORDER, Filters

OPEN_STATES = ("staged", "planned", "sending", "retry")
WATERMARK_LATE_S = 2 * 3600  # a sync whose settled prefix is older than this is shown late


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _n(value) -> str:
    return "–" if value is None else f"{value:,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{sign}{seconds} s"
    if seconds < 5400:
        return f"{sign}{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{sign}{seconds / 3600:.1f} h"
    return f"{sign}{seconds / 86400:.1f} d"


def _json_block(value) -> str:
    text = json.dumps(value, indent=1, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return f"<pre class='payload'>{_e(text[:4000])}</pre>"


def _select(name: str, options: list[tuple[str, str]], selected: str | None) -> str:
    items = "".join(f"<option value='{_e(v)}'{' selected' if (v or None) == (selected or None) else ''}>"
                    f"{_e(label)}</option>" for v, label in options)
    return f"<label>{_e(name)} <select name='{_e(name)}'>{items}</select></label>"


def render_page(*, base: str, store: str, stores: list[str], filters: Filters, overview: dict, quarantine: dict,
                ltv: dict, can_trigger: bool, data_docs: bool, airflow_base: str,
                replay_dag: str) -> str:
    states = overview["states"]
    totals = states["totals"]
    dead, held = overview["dead"], overview["held"]
    accounts = overview["accounts"]
    query = {"store": store, "vendor": filters.vendor or "", "account": filters.account or "", "days": filters.days}
    vendor_options = [("", "all vendors"), ("sendlane", "Sendlane"), ("sailthru", "Sailthru")]
    account_options = [("", "all accounts")] + [(a["account"], f"{a['vendor']}: {a['account']}") for a in accounts
                                                if not filters.vendor or a["vendor"] == filters.vendor]
    day_options = [(str(d), f"{d} days") for d in (1, 7, 14, 30, 90)]
    if str(filters.days) not in dict(day_options):
        day_options.append((str(filters.days), f"{filters.days} days"))

    parts = [f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Storesync · {_e(store)}</title>
<link rel="stylesheet" href="{_e(base)}static/storesync.css">
<script src="{_e(base)}static/storesync.js" defer></script>
</head><body data-base="{_e(base)}" data-store="{_e(store)}" data-airflow="{_e(airflow_base)}"
 data-replay-dag="{_e(replay_dag)}">
<header><h1>Storesync</h1>
<form method="get" action="{_e(base)}" class="filters">
{_select("store", [(s, s) for s in stores], store)}
{_select("vendor", vendor_options, filters.vendor)}
{_select("account", account_options, filters.account)}
{_select("days", day_options, str(filters.days))}
<button type="submit">Show</button></form>
<nav><a href="#overview">Overview</a> <a href="#dead">Dead letters ({_n(dead['total'])})</a>
<a href="#held">Held ({_n(held['total'])})</a> <a href="#quarantine">Quarantine</a> <a href="#ltv">LTV</a>
{f'<a href="{_e(base)}data-docs/" target="_blank" rel="noopener">Data Docs</a>' if data_docs else
 '<span class="muted" title="no validation results stored yet">Data Docs (none yet)</span>'}
<a href="{_e(base)}api/overview?{_e(urlencode(query))}">JSON</a></nav>
<p class="muted">as of {_e(overview['generated_at'])} UTC</p></header>
<main>"""]

    # ---- overview ----
    open_total = sum(totals.get(s, 0) for s in OPEN_STATES)
    # Unknown rows split: held (a person decides) and those the next run settles by itself.
    held_now = held.get("held_in_window", 0)
    cards = [("accepted", totals.get("accepted", 0), "ok"), ("open", open_total, ""),
             ("held", held_now, "warn"), ("settling", totals.get("unknown", 0) - held_now, ""),
             ("dead", totals.get("dead", 0), "bad"), ("suppressed", totals.get("suppressed", 0), "")]
    parts.append(f"<section id='overview'><h2>Deliveries, last {filters.days} days</h2>"
                 "<p class='muted'>by the day each reached its current state</p><div class='cards'>")
    for name, value, tone in cards:
        parts.append(f"<div class='card {tone}'><span class='value' data-metric='window-{name}'>{_n(value)}</span>"
                     f"<span class='label'>{_e(name)}</span></div>")
    parts.append("</div>")
    parts.append(charts.stacked_bars("Deliveries by state per day", [d[5:] for d in states["days"]],
                                     {s: states["series"].get(s, [0] * len(states["days"])) for s in STATE_ORDER},
                                     charts.STATE_COLOURS))
    parts.append("<table class='compact'><thead><tr><th>state</th>"
                 + "".join(f"<th>{_e(d[5:])}</th>" for d in states["days"][-7:]) + "<th>total</th></tr></thead><tbody>")
    for state in STATE_ORDER:
        if totals.get(state):
            row = states["series"][state][-7:]
            parts.append(f"<tr><td><span class='dot' style='background:{charts.STATE_COLOURS[state]}'></span>"
                         f"{_e(state)}</td>" + "".join(f"<td>{_n(v)}</td>" for v in row)
                         + f"<td data-metric='state-{_e(state)}'>{_n(totals[state])}</td></tr>")
    parts.append("</tbody></table>")

    parts.append("<h2>Sent per minute and budget, last hour</h2>")
    sent = overview["sent"]
    if not sent["accounts"]:
        parts.append("<p class='muted'>No vendor answered in the last hour.</p>")
    for acct in sent["accounts"]:
        label = f"{acct['vendor']} · {acct['account']}"
        parts.append(f"<h3>{_e(label)} <span class='muted'>sent {_n(acct['sent'])}, peak "
                     f"{_n(acct['peak_per_minute'])}/min"
                     + (f" of {_n(acct['limit_per_minute'])}/min" if acct["limit_per_minute"] else "")
                     + "</span></h3>")
        parts.append(charts.bars_with_limit(f"Sent per minute, {label}", [m[11:] for m in sent["minutes"]],
                                            acct["counts"], acct["limit_per_minute"]))
    budgets = overview["budgets"]
    parts.append("<h3>Shared budgets now</h3>")
    if budgets:
        parts.append("<table><thead><tr><th>budget</th><th>used</th><th>limit</th><th>window</th><th>paused</th>"
                     "</tr></thead><tbody>")
        for b in budgets:
            share = f" ({b['used'] / b['limit']:.0%})" if b["limit"] else ""
            parts.append(f"<tr><td>{_e(b['key'])}</td><td data-metric='budget-used'>{_n(b['used'])}{share}</td>"
                         f"<td>{_n(b['limit'])}</td><td>{b['window_s']:g} s</td>"
                         f"<td>{_duration(b['paused_for_s']) if b['paused_for_s'] else '–'}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<p class='muted'>No shared budget has been used in its current window.</p>")

    parts.append("<h2>Watermarks</h2>")
    if overview["watermarks"]:
        parts.append("<table><thead><tr><th>sync</th><th>settled up to</th><th>lag</th></tr></thead><tbody>")
        for w in overview["watermarks"]:
            late = " class='bad'" if w["lag_s"] > WATERMARK_LATE_S else ""
            parts.append(f"<tr><td>{_e(w['sync_name'])}</td><td>{_e(w['window_end'])}</td>"
                         f"<td{late} data-metric='lag-{_e(w['sync_name'])}'>{_duration(w['lag_s'])}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<p class='muted'>No sync has settled a window yet.</p>")

    parts.append("<h2>Last runs</h2>")
    if overview["runs"]:
        parts.append("<table><thead><tr><th>run</th><th>sync</th><th>window</th><th>outcome</th><th>took</th>"
                     "<th>counts / error</th></tr></thead><tbody>")
        for r in overview["runs"]:
            tone = {"succeeded": "ok", "success": "ok", "failed": "bad",
                    "delivery_failed": "bad"}.get(r["status"], "")
            detail = _e(r["error"]) if r["error"] else _e(_counts_summary(r["counts"]))
            parts.append(f"<tr><td class='mono'>{_e(r['run_id'])}</td><td>{_e(r['sync_name'])}</td>"
                         f"<td>{_e(r['window_start'])} → {_e(r['window_end'])}</td>"
                         f"<td class='{tone}'>{_e(r['status'])}{' (dry run)' if r['dry_run'] else ''}</td>"
                         f"<td>{_duration(r['duration_s'])}</td><td class='detail'>{detail}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<p class='muted'>No runs recorded.</p>")
    parts.append("</section>")

    # ---- dead letters and held rows ----
    parts.append(_problems_section("dead", "Dead letters", dead, can_trigger=can_trigger, filters=filters,
                                   replay_dag=replay_dag))
    parts.append(_problems_section("held", "Held: outcome unknown, a person decides", held,
                                   can_trigger=can_trigger, filters=filters, replay_dag=replay_dag))

    # ---- quarantine ----
    parts.append("<section id='quarantine'><h2>Quarantine</h2>")
    if quarantine["entities"]:
        parts.append("<table class='compact'><thead><tr><th>entity</th><th>open rows</th><th>fixed rows</th>"
                     "<th title='each run that reads a still-bad row records it again'>open records</th>"
                     "</tr></thead><tbody>")
        for e in quarantine["entities"]:
            parts.append(f"<tr><td>{_e(e['entity'])}</td><td data-metric='quarantine-open-{_e(e['entity'])}'>"
                         f"{_n(e['open'])}</td><td data-metric='quarantine-fixed-{_e(e['entity'])}'>"
                         f"{_n(e['fixed'])}</td><td data-metric='quarantine-records-{_e(e['entity'])}'>"
                         f"{_n(e.get('open_records', e['open']))}</td></tr>")
        parts.append("</tbody></table>")
        parts.append(charts.stacked_bars("Quarantine reasons per day", [d[5:] for d in quarantine["days"]],
                                         dict(list(quarantine["reasons"].items())[:10])))
        parts.append("<table><thead><tr><th>entity</th><th>id</th><th>status</th><th>reasons</th><th>row (masked)</th>"
                     "<th>quarantined</th></tr></thead><tbody>")
        for r in quarantine["rows"]:
            reasons = r["reasons"] if isinstance(r["reasons"], list) else [r["reasons"]]
            parts.append(f"<tr><td>{_e(r['entity'])}</td><td class='mono'>{_e(r['entity_id'])}</td>"
                         f"<td class='{'warn' if r['status'] == 'open' else 'ok'}'>{_e(r['status'])}</td>"
                         f"<td>{'<br>'.join(_e(x) for x in reasons)}</td><td>{_json_block(r['row'])}</td>"
                         f"<td>{_e(r['quarantined_at'])}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<p class='muted'>Nothing has been quarantined.</p>")
    parts.append("</section>")

    # ---- LTV ----
    parts.append("<section id='ltv'><h2>Customer lifetime value</h2>")
    if ltv["as_of"]:
        labels = [b["label"] for b in ltv["historic"]]
        parts.append(f"<p>As of <b>{_e(ltv['as_of'])}</b>, <span data-metric='ltv-customers'>{_n(ltv['customers'])}"
                     "</span> customers.</p>")
        parts.append(charts.grouped_bars("Customers by historic net revenue", labels,
                                         {"customers": [b["customers"] for b in ltv["historic"]]}))
        parts.append(charts.grouped_bars("Historic against predicted, average per customer", labels,
                                         {"historic net revenue": [b["avg_historic"] for b in ltv["historic"]],
                                          "predicted CLV": [b["avg_predicted"] for b in ltv["historic"]]}))
        if ltv["predicted"]:
            parts.append(charts.grouped_bars("Customers by predicted CLV", [b["label"] for b in ltv["predicted"]],
                                             {"customers": [b["customers"] for b in ltv["predicted"]]}))
    else:
        parts.append("<p class='muted'>LTV has not been computed for this store yet (the storesync_ltv DAG).</p>")
    parts.append("</section></main></body></html>")
    return "".join(parts)


def _counts_summary(counts) -> str:
    if isinstance(counts, dict):
        flat = []
        for key, value in counts.items():
            if isinstance(value, (int, float)):
                flat.append(f"{key} {value:,}")
            elif isinstance(value, dict):
                inner = ", ".join(f"{k} {v:,}" for k, v in value.items() if isinstance(v, (int, float)) and v)
                if inner:
                    flat.append(f"{key}: {inner}")
        return "; ".join(flat)[:400]
    return "" if counts is None else str(counts)[:400]


SETTLING_LABELS = {"lookup": "awaiting their lookup (Sailthru)",
                   "resend": "awaiting their safe resend (Sendlane)",
                   "read": "awaiting the next run's rules and contact read (Sendlane checkouts, customers)"}


def _settling(held: dict) -> str:
    """The unknown rows that are not held: counted per kind, never listed with actions (the next
    scheduled run settles them; a person's resend beside it could count one twice)."""
    settling = held.get("settling") or {}
    total = settling.get("total", 0)
    parts = [f"<p class='settling'>Settling on the next run, nothing to do: <b data-metric='settling-total'>"
             f"{_n(total)}</b>"]
    if total:
        kinds = [f"<span data-metric='settling-{_e(k)}'>{_n(settling.get(k, 0))}</span> {_e(label)}"
                 for k, label in SETTLING_LABELS.items() if settling.get(k)]
        parts.append(" (" + "; ".join(kinds) + ")")
    parts.append("</p>")
    if not held.get("complete", True):
        parts.append(f"<p class='warn'>{_n(held['unknown_total'])} deliveries have an unknown outcome; "
                     f"the newest {_n(held['classified'])} were told apart here, so the counts above leave "
                     "the older ones out. <code>storesync reconcile --list</code> lists every one.</p>")
    return "".join(parts)


def _problems_section(kind: str, title: str, data: dict, *, can_trigger: bool, filters: Filters,
                      replay_dag: str) -> str:
    parts = [f"<section id='{kind}'><h2>{_e(title)} <span class='muted'>(<span data-metric='{kind}-total'>"
             f"{_n(data['total'])}</span>{', all accounts' if not filters.account else ''})</span></h2>"]
    if data["by_error"]:
        parts.append(f"<p><span class='muted'>last {filters.days} days:</span> " + " · ".join(f"{_e(b['vendor'])} {_e(b['event_type'])}: {_e(b['error_class'] or '?')} "
                                        f"×{b['count']:,}" for b in data["by_error"]) + "</p>")
    if kind == "held":
        parts.append(_settling(data))
    if kind == "held" and data["total"]:
        parts.append("<p class='muted'>A held delivery may have reached the vendor and no rule can "
                     "tell: check each at the vendor, then mark those it has <b>arrived</b> and "
                     "<b>resend</b> those it does not (or use <code>storesync reconcile</code>).</p>")
        for vendor, remedy in data.get("remedy", {}).items():
            parts.append(f"<pre class='remedy' data-remedy='{_e(vendor)}'>{_e(remedy)}</pre>")
        if can_trigger:
            parts.append("<div class='actions' data-kind='held'>"
                         "<button type='button' data-action='mark-arrived'>Mark arrived (selected)</button>"
                         "<button type='button' data-action='resend'>Resend (selected)</button>"
                         "<output class='action-result' aria-live='polite'></output></div>")
        else:
            parts.append(f"<p class='muted'>Resolving held rows needs the right to trigger runs of "
                         f"<code>{_e(replay_dag)}</code>.</p>")
    if kind == "dead" and data["total"]:
        if can_trigger:
            parts.append("<div class='actions' data-kind='dead'>"
                         "<button type='button' data-action='dry-run'>Dry run (selected, or all shown filters)</button>"
                         "<button type='button' data-action='replay-selected'>Replay selected</button>"
                         "<button type='button' data-action='replay-all'>Replay all matching</button>"
                         "<output class='action-result' aria-live='polite'></output></div>")
        else:
            parts.append(f"<p class='muted'>Replaying needs the right to trigger runs of <code>{_e(replay_dag)}</code>."
                         "</p>")
    if data["rows"]:
        pickable = kind == "dead" or can_trigger  # held rows: only where they can be resolved
        select_all = "<th><input type='checkbox' class='select-all' aria-label='select all'></th>" if pickable else ""
        parts.append(f"<table class='problems'><thead><tr>{select_all}<th>id</th><th>vendor · account</th>"
                     "<th>event</th><th>request</th><th>error</th><th>payload (masked)</th><th>updated</th>"
                     "</tr></thead><tbody>")
        for r in data["rows"]:
            box = (f"<td><input type='checkbox' class='pick' value='{r['id']}' aria-label='delivery {r['id']}'></td>"
                   if pickable else "")
            error = " ".join(_e(x) for x in (r["error_class"], r["http_status"], r["vendor_code"]) if x)
            parts.append(f"<tr data-delivery='{r['id']}'>{box}<td class='mono'>{r['id']}</td>"
                         f"<td>{_e(r['vendor'])} · {_e(r['account'])}</td><td>{_e(r['event_type'])}<br>"
                         f"<span class='mono'>{_e(r['entity_id'])}</span></td><td class='mono'>{_e(r['request'])}</td>"
                         f"<td><b>{error}</b><br>{_e(r['vendor_error'])}</td><td>{_json_block(r['payload'])}</td>"
                         f"<td>{_e(r['updated_at'])}</td></tr>")
        parts.append("</tbody></table>")
        if data["total"] > len(data["rows"]):
            parts.append(f"<p class='muted'>Newest {len(data['rows'])} of {data['total']:,}; the JSON endpoint "
                         f"<code>api/deliveries/{kind}</code> pages through all.</p>")
    else:
        parts.append("<p class='muted'>None.</p>")
    parts.append("</section>")
    return "".join(parts)
