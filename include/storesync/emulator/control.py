"""Inspection and control under ``/_emulator`` (JSON, no authentication)."""

from __future__ import annotations

import json
import time

from . import __version__
from .state import ConfigError, EmulatorState, Faults, iso_utc
from .wire import Request, Response, json_response

PREFIX = "/_emulator"


def _body(req: Request) -> dict:
    if not req.body:
        return {}
    try:
        data = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError("body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise ConfigError("body must be a JSON object")
    return data


def _q(req: Request, name: str) -> str | None:
    return req.query_value(name)


def handle(state: EmulatorState, req: Request) -> Response:
    sub = req.path[len(PREFIX):].rstrip("/") or "/"
    method = req.method
    try:
        route = ROUTES.get((method, sub))
        if route is None:
            known = sorted({path for _, path in ROUTES})
            if any(path == sub for _, path in ROUTES):
                return json_response(405, {"error": f"{method} not allowed on {PREFIX}{sub}"})
            return json_response(404, {"error": f"unknown control path {PREFIX}{sub}", "known": known})
        return route(state, req)
    except ConfigError as exc:
        return json_response(400, {"error": str(exc)})


def health(state, req):
    uptime = round(time.time() - state.started_at, 3)
    return json_response(200, {"ok": True, "version": __version__, "uptime_s": uptime,
                               "vendors": {"sendlane": "/sendlane/v2", "sailthru": "/sailthru"}})


def requests_(state, req):
    filters = {k: _q(req, k) for k in ("vendor", "endpoint", "entity_id", "method", "source", "account",
                                       "entity_type", "since_seq", "recorded")}
    records = state.query_records(filters)
    return json_response(200, {"count": len(records), "requests": records})


def summary(state, req):
    return json_response(200, state.summary())


def duplicates(state, req):
    return json_response(200, {"duplicates": state.duplicates()})


def contacts(state, req):
    list_id, email = _q(req, "list_id"), _q(req, "email")
    with state.lock:
        rows = [dict(c, custom_fields=dict(c["custom_fields"]), tag_names=list(c["tag_names"]))
                for (_, lid), book in state.contacts.items() if not list_id or lid == list_id
                for c in book.values() if not email or c["email"] == email.strip().lower()]
    return json_response(200, {"count": len(rows), "contacts": rows})


def people(state, req):
    """Sendlane's account contacts (what ``GET /contacts/search`` reads), with the writes that
    made them (``sources``) and when a search first finds them (``visible_at``)."""
    email = _q(req, "email")
    with state.lock:
        rows = [dict(p, account=account, lists=list(p["lists"]), sources=list(p["sources"]))
                for account, book in state.sendlane_people.items() for p in book.values()
                if not email or p["email"] == email.strip().lower()]
    return json_response(200, {"count": len(rows), "people": rows})


def unsubscribed(state, req):
    with state.lock:
        rows = [{"account": account, "email": e["email"], "unsubscribed_at": e["unsubscribed_at"],
                 "list_ids": None if e["list_ids"] is None else sorted(e["list_ids"]), "source": e["source"]}
                for account, book in state.unsubscribed.items() for e in book.values()]
    return json_response(200, {"count": len(rows), "unsubscribed": rows})


def users(state, req):
    email = _q(req, "email")
    with state.lock:
        rows = []
        for sid, p in state.users.items():
            if email and (p["keys"].get("email") or "").lower() != email.strip().lower():
                continue
            rows.append({"sid": sid, "account": p["account"], "keys": dict(p["keys"]),
                         "vars": dict(p["vars"]),
                         "lists": sorted(p["lists"]), "optout_email": p["optout_email"],
                         "optout_history": list(p["optout_history"]), "updates": p["updates"]})
    return json_response(200, {"count": len(rows), "users": rows})


def content(state, req):
    with state.lock:
        rows = [dict(item) for item in state.content.values()]
    return json_response(200, {"count": len(rows), "content": rows})


def purchases(state, req):
    extid, email, source = _q(req, "extid"), _q(req, "email"), _q(req, "source")
    with state.lock:
        rows = [dict(p) for p in state.purchases.values()
                if (not extid or p["extid"] == extid) and (not email or p["email"].lower() == email.lower())
                and (not source or p["source"] == source)]
    return json_response(200, {"count": len(rows), "purchases": rows})


def returns(state, req):
    with state.lock:
        rows = [dict(r) for r in state.returns]
    return json_response(200, {"count": len(rows), "returns": rows})


def jobs(state, req):
    with state.lock:
        rows = [dict(j) for j in state.jobs.values()]
    return json_response(200, {"count": len(rows), "jobs": rows})


def get_config(state, req):
    with state.lock:
        return json_response(200, state.public_config())


def post_config(state, req):
    return json_response(200, state.configure(_body(req)))


def reset(state, req):
    state.reset()
    return json_response(200, {"ok": True, "reset_at": iso_utc(time.time())})


def get_faults(state, req):
    with state.lock:
        return json_response(200, {"faults": state.faults.describe(time.time()),
                                   "injected": dict(state.fault_counts)})


def post_faults(state, req):
    spec = _body(req)
    faults = Faults.parse(spec, time.time())
    with state.lock:
        state.faults = faults
    return json_response(200, {"faults": faults.describe(time.time())})


def delete_faults(state, req):
    with state.lock:
        state.faults = Faults()
    return json_response(200, {"faults": None})


ROUTES = {
    ("GET", "/health"): health,
    ("GET", "/requests"): requests_,
    ("GET", "/summary"): summary,
    ("GET", "/duplicates"): duplicates,
    ("GET", "/contacts"): contacts,
    ("GET", "/people"): people,
    ("GET", "/unsubscribed"): unsubscribed,
    ("GET", "/users"): users,
    ("GET", "/content"): content,
    ("GET", "/purchases"): purchases,
    ("GET", "/returns"): returns,
    ("GET", "/jobs"): jobs,
    ("GET", "/config"): get_config,
    ("POST", "/config"): post_config,
    ("POST", "/reset"): reset,
    ("GET", "/faults"): get_faults,
    ("POST", "/faults"): post_faults,
    ("DELETE", "/faults"): delete_faults,
}
