"""Sailthru's API, as documented in /work/shared/vendors.md, served under ``/sailthru``.

Order of checks for every request (each step answers and stops):

1. unknown endpoint -> 404 error 99; unsupported method -> 405 error 1.
2. parameters: ``api_key``, ``sig``, ``json`` (and ``format=json``) from the query string (GET) or the
   form-encoded / multipart body (POST). Bad UTF-8 -> error 6.
3. missing ``api_key`` / ``sig`` -> error 2 (400); unknown api_key -> error 3 (401);
   wrong signature -> error 5 (401).
4. rate limit per account + "METHOD /endpoint", fixed windows (per minute by default) -> 429 error 43.
5. missing/invalid ``json`` -> error 2; then the endpoint's own validation.

Every response to steps 3-5 carries ``X-Rate-Limit-Limit/-Remaining/-Reset``.
HTTP status per error code: see ``HTTP_FOR_CODE``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs

from .state import SAILTHRU_OPTOUT_RANK, EmulatorState, FixedWindow, iso_utc, sailthru_limit
from .validation import is_email, is_id, is_int, is_sailthru_time, is_url
from .wire import Request, Response, json_response, text_response

PREFIX = "/sailthru"
VENDOR = "sailthru"

HTTP_FOR_CODE = {1: 405, 2: 400, 3: 401, 4: 403, 5: 401, 6: 400, 9: 500, 11: 400, 14: 404, 15: 404,
                 18: 400, 32: 400, 33: 400, 34: 400, 35: 400, 37: 400, 43: 429, 99: 400}
MAX_VAR_NAME = 32
OPTOUT_VALUES = tuple(SAILTHRU_OPTOUT_RANK)


class Err(Exception):
    def __init__(self, code: int, message: str, http: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http = http or HTTP_FOR_CODE.get(code, 400)


def sign(params: dict, secret: str) -> str:
    """The official sailthru-client signature: md5(secret + sorted str(values) of every param but sig)."""
    values = sorted(str(v) for k, v in params.items() if k != "sig")
    return hashlib.md5((secret + "".join(values)).encode("utf-8")).hexdigest()


def _error_body(err: Err) -> dict:
    return {"error": err.code, "errormsg": err.message}


# --------------------------------------------------------------------------------------------
# Parameter parsing
# --------------------------------------------------------------------------------------------
def _parse_params(req: Request) -> tuple[dict, dict]:
    """(params, files) or raises Err."""
    if req.method != "POST":
        return {k: v[-1] for k, v in req.query.items()}, {}
    content_type = req.header("Content-Type")
    if content_type.lower().startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
        message = BytesParser(policy=HTTP).parsebytes(head + req.body)
        if not message.is_multipart():
            raise Err(2, "Malformed multipart body")
        params, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                files[name] = payload
            else:
                try:
                    params[name] = payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise Err(6, f"Invalid UTF-8 characters for field {name}") from exc
        return params, files
    try:
        text = req.body.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise Err(6, "Invalid UTF-8 characters in the request body") from exc
    return {k: v[-1] for k, v in parsed.items()}, {}


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _require(data: dict, name: str, where: str = ""):
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Err(2, f"Missing required parameter: {where}{name}")
    return value


def _email(data: dict, name: str = "email") -> str:
    value = _require(data, name)
    if not is_email(value):
        raise Err(11, f"Invalid email: {value}")
    return value.strip()


def _cents(value, where: str, *, allow_negative: bool = False) -> int:
    if not is_int(value):
        raise Err(2, f"{where} must be an integer number of cents")
    if value < 0 and not allow_negative:
        raise Err(2, f"{where} must not be negative")
    return value


def _check_vars(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise Err(2, f"{where} must be an object")
    for name in value:
        if not name or len(name) > MAX_VAR_NAME:
            raise Err(2, f"{where} names must be 1 to {MAX_VAR_NAME} characters: {name[:40]!r}")
    return value


def _check_tags(value, where: str) -> None:
    if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(t, str) for t in value))):
        raise Err(2, f"{where} must be a list of strings or a comma-separated string")


def _check_priced_list(value, where: str, *, allow_negative: bool) -> list:
    if not isinstance(value, list):
        raise Err(2, f"{where} must be an array")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise Err(2, f"{where}[{i}] must be an object")
        title = entry.get("title")
        if not isinstance(title, str) or not title.strip():
            raise Err(2, f"Missing required parameter: {where}[{i}].title")
        if "price" not in entry:
            raise Err(2, f"Missing required parameter: {where}[{i}].price")
        _cents(entry["price"], f"{where}[{i}].price", allow_negative=allow_negative)
    return value


def _extid(data: dict) -> str | None:
    keys = data.get("purchase_keys")
    extid = None
    if keys is not None:
        if not isinstance(keys, dict):
            raise Err(2, "purchase_keys must be an object")
        if "extid" in keys:
            if not is_id(keys["extid"]):
                raise Err(2, "purchase_keys.extid must be a non-empty string or an integer")
            extid = str(keys["extid"])
    if data.get("extid") is not None:
        if not is_id(data["extid"]):
            raise Err(2, "extid must be a non-empty string or an integer")
        if extid is not None and extid != str(data["extid"]):
            raise Err(2, "purchase_keys.extid and extid disagree")
        extid = str(data["extid"])
    return extid


def _check_template(state: EmulatorState, data: dict, name: str) -> None:
    template = data.get(name)
    if template is None:
        return
    if not isinstance(template, str) or template not in state.templates:
        raise Err(14, f"Unknown template: {template}")


def validate_purchase(state: EmulatorState, data: dict) -> dict:
    email = _email(data)
    items = data.get("items")
    if items is None:
        raise Err(2, "Missing required parameter: items")
    if not isinstance(items, list):
        raise Err(2, "items must be an array")
    incomplete = data.get("incomplete", 0)
    if incomplete is None:
        incomplete = 0
    if not ((is_int(incomplete) or isinstance(incomplete, bool)) and incomplete in (0, 1)):
        raise Err(2, "incomplete must be 1 or 0")
    incomplete = int(incomplete)
    if not items and not incomplete:
        raise Err(2, "items must not be empty (an empty cart is sent with incomplete=1)")
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            raise Err(2, f"{where} must be an object")
        for field_name in ("qty", "title", "price", "id", "url"):
            _require(item, field_name, f"{where}.")
        if not is_int(item["qty"]) or item["qty"] <= 0:
            raise Err(2, f"{where}.qty must be an integer greater than 0")
        _cents(item["price"], f"{where}.price")
        if not isinstance(item["title"], str):
            raise Err(2, f"{where}.title must be a string")
        if not is_id(item["id"]):
            raise Err(2, f"{where}.id must be a string or an integer")
        if not is_url(item["url"]):
            raise Err(2, f"{where}.url must be an http(s) URL")
        if "tags" in item:
            _check_tags(item["tags"], f"{where}.tags")
        if "vars" in item and not isinstance(item["vars"], dict):
            raise Err(2, f"{where}.vars must be an object")
        if "images" in item and not isinstance(item["images"], dict):
            raise Err(2, f"{where}.images must be an object")
    if "adjustments" in data:
        _check_priced_list(data["adjustments"], "adjustments", allow_negative=True)
    if "tenders" in data:
        _check_priced_list(data["tenders"], "tenders", allow_negative=False)
    if "vars" in data:
        _check_vars(data["vars"], "vars")
    message_id = data.get("message_id")
    if message_id is not None and not (isinstance(message_id, str) or is_int(message_id)
                                       or isinstance(message_id, float)):
        raise Err(2, "message_id must be a string")
    extid = _extid(data)
    _check_template(state, data, "reminder_template")
    _check_template(state, data, "send_template")
    if data.get("date") is not None and not is_sailthru_time(data["date"]):
        raise Err(18, f"Invalid time: date={data['date']!r}")
    if data.get("reminder_time") is not None and not is_sailthru_time(data["reminder_time"], relative=True):
        raise Err(18, f"Invalid time: reminder_time={data['reminder_time']!r}")
    if email.lower() in state.opted_out:
        raise Err(33, f"Email has opted out of delivery: {email}")
    total = sum(item["qty"] * item["price"] for item in items)
    total += sum(adj["price"] for adj in data.get("adjustments") or [])
    return {"email": email, "items": items, "incomplete": incomplete, "extid": extid, "total": total}


def _store_purchase(
    state: EmulatorState, account: str, data: dict, checked: dict, source: str, now: float
) -> dict:
    purchase_id = state.new_id()
    purchase = {
        "id": purchase_id,
        "email": checked["email"],
        "items": data["items"],
        "incomplete": checked["incomplete"],
        "price": checked["total"],
        "qty": sum(item["qty"] for item in data["items"]),
        "extid": checked["extid"],
        "purchase_keys": {"extid": checked["extid"]} if checked["extid"] is not None else {},
        "source": source,
        "time": iso_utc(now),
    }
    for key in ("message_id", "date", "reminder_template", "reminder_time", "send_template", "adjustments",
                "tenders", "vars"):
        if data.get(key) is not None:
            purchase[key] = data[key]
    purchase["account"] = account
    state.purchases[purchase_id] = purchase
    if checked["extid"] is not None:
        state.purchases_by_extid.setdefault((account, checked["extid"]), []).append(purchase_id)
    state.record(
        VENDOR, account, "POST", "/purchase", "purchase", [checked["extid"] or checked["email"].lower()],
        data, source=source, extra={"purchase_id": purchase_id},
    )
    return purchase


def _public(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "account"}


# --------------------------------------------------------------------------------------------
# Endpoints (called with the state lock held); return (status, body)
# --------------------------------------------------------------------------------------------
def post_purchase(state, account, data, files, now):
    checked = validate_purchase(state, data)
    purchase = _store_purchase(state, account, data, checked, "api", now)
    return 200, {"purchase": _public(purchase)}


def get_purchase(state, account, data, files, now):
    purchase_id = _require(data, "purchase_id")
    key = data.get("purchase_key", "sid")
    if key not in ("sid", "extid"):
        raise Err(2, "purchase_key must be sid or extid")
    purchase = None
    if key == "extid":
        ids = state.purchases_by_extid.get((account, str(purchase_id)))
        if ids:
            purchase = state.purchases[ids[-1]]  # the most recent one with that extid
    else:
        found = state.purchases.get(str(purchase_id))
        if found is not None and found["account"] == account:
            purchase = found
    if purchase is None:
        raise Err(99, f"Purchase not found: {key}={purchase_id}", http=404)
    state.record(VENDOR, account, "GET", "/purchase", "purchase", [purchase_id], data,
                 extra={"purchase_id": purchase["id"]})
    matches = len(state.purchases_by_extid.get((account, purchase["extid"]), [])) if purchase["extid"] else 1
    return 200, {"purchase": _public(purchase), "matches": matches}


def post_return(state, account, data, files, now):
    email = _email(data)
    items = _require(data, "items")
    if not isinstance(items, list) or not items:
        raise Err(2, "items must be a non-empty array")
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict):
            raise Err(2, f"{where} must be an object")
        if not is_int(item.get("qty")) or item["qty"] <= 0:
            raise Err(2, f"{where}.qty must be an integer greater than 0")
        if "price" not in item:
            raise Err(2, f"Missing required parameter: {where}.price")
        _cents(item["price"], f"{where}.price")
        if item.get("id") is None and item.get("url") is None:
            raise Err(2, f"Missing required parameter: {where}.id or {where}.url")
        if item.get("id") is not None and not is_id(item["id"]):
            raise Err(2, f"{where}.id must be a string or an integer")
        if item.get("url") is not None and not is_url(item["url"]):
            raise Err(2, f"{where}.url must be an http(s) URL")
    extid = _extid(data)
    if data.get("date") is not None and not is_sailthru_time(data["date"]):
        raise Err(18, f"Invalid time: date={data['date']!r}")
    stored = {"id": state.new_id(), "email": email, "items": items, "extid": extid, "time": iso_utc(now),
              "account": account}
    if data.get("date") is not None:
        stored["date"] = data["date"]
    state.returns.append(stored)
    state.record(VENDOR, account, "POST", "/return", "return", [extid or email.lower()], data,
                 extra={"return_id": stored["id"]})
    return 200, {"return": _public(stored)}


def validate_content(data: dict) -> None:
    url = _require(data, "url")
    if not is_url(url):
        raise Err(2, "url must be an http(s) URL")
    title = _require(data, "title")
    if not isinstance(title, str):
        raise Err(2, "title must be a string")
    if "price" in data and data["price"] is not None:
        _cents(data["price"], "price")
    if "tags" in data and data["tags"] is not None:
        _check_tags(data["tags"], "tags")
    if "vars" in data and data["vars"] is not None:
        _check_vars(data["vars"], "vars")
    images = data.get("images")
    if images is not None:
        if not isinstance(images, dict):
            raise Err(2, "images must be an object like {full: {url}, thumb: {url}}")
        for size, image in images.items():
            if size not in ("full", "thumb") or not isinstance(image, dict) or not is_url(image.get("url")):
                raise Err(2, f"images.{size} must be {{url: <http(s) URL>}} (sizes: full, thumb)")
    inventory = data.get("inventory")
    if inventory is not None and (not is_int(inventory) or inventory < 0):
        raise Err(2, "inventory must be an integer >= 0")
    if data.get("description") is not None and not isinstance(data["description"], str):
        raise Err(2, "description must be a string")
    for name in ("date", "expire_date"):
        if data.get(name) is not None and not is_sailthru_time(data[name]):
            raise Err(18, f"Invalid time: {name}={data[name]!r}")
    keys = data.get("keys")
    if keys is not None:
        if not isinstance(keys, dict) or ("sku" in keys and not is_id(keys["sku"])):
            raise Err(2, 'keys must be an object like {"sku": "ABC-1"}')


def upsert_content(state: EmulatorState, account: str, data: dict, source: str, now: float) -> dict:
    validate_content(data)
    url = data["url"]
    sku = None if not data.get("keys") or data["keys"].get("sku") is None else str(data["keys"]["sku"])
    content_id = None
    if sku is not None:
        content_id = state.content_by_sku.get((account, sku))
    if content_id is None:
        content_id = state.content_by_url.get((account, url))
    item = state.content.get(content_id) if content_id else None
    if item is None:
        content_id = state.new_id()
        item = state.content[content_id] = {"content_id": content_id, "account": account, "vars": {},
                                            "created_at": iso_utc(now), "updates": 0}
    old_url = item.get("url")
    for key, value in data.items():
        if key == "vars" and isinstance(value, dict):
            item["vars"].update(value)
        elif key == "keys":
            item.setdefault("keys", {}).update(value)
        else:
            item[key] = value
    if old_url and old_url != url and state.content_by_url.get((account, old_url)) == content_id:
        del state.content_by_url[(account, old_url)]
    state.content_by_url[(account, url)] = content_id
    if sku is not None:
        state.content_by_sku[(account, sku)] = content_id
    item["updates"] += 1
    item["updated_at"] = iso_utc(now)
    state.record(VENDOR, account, "POST", "/content", "content", [url], data, source=source,
                 extra={"content_id": content_id})
    return item


def post_content(state, account, data, files, now):
    item = upsert_content(state, account, data, "api", now)
    return 200, {"content": _public(item)}


def get_content(state, account, data, files, now):
    url = _require(data, "url")
    content_id = state.content_by_url.get((account, url))
    if content_id is None:
        raise Err(99, f"Content not found: {url}", http=404)
    state.record(VENDOR, account, "GET", "/content", "content", [url], data)
    return 200, {"content": _public(state.content[content_id])}


# ---- user -------------------------------------------------------------------------------------
def _find_user(state: EmulatorState, account: str, key: str, value: str) -> str | None:
    if key == "sid":
        profile = state.users.get(value)
        return value if profile is not None and profile["account"] == account else None
    return state.user_index[key].get((account, _index_key(key, value)))


def _index_key(key: str, value: str) -> str:
    return value.lower() if key == "email" else value


def _index_user(state: EmulatorState, account: str, sid: str, key: str, value: str) -> None:
    profile = state.users[sid]
    old = profile["keys"].get(key)
    if old is not None and state.user_index[key].get((account, _index_key(key, old))) == sid:
        del state.user_index[key][(account, _index_key(key, old))]
    profile["keys"][key] = value
    state.user_index[key][(account, _index_key(key, value))] = sid


def _user_view(profile: dict) -> dict:
    return {
        "keys": dict(profile["keys"]),
        "vars": dict(profile["vars"]),
        "lists": sorted(profile["lists"]),
        "optout_email": profile["optout_email"],
        "optout_history": list(profile["optout_history"]),
        "updates": profile["updates"],
    }


def _set_optout(state, profile, value, seq, reason) -> None:
    old = profile["optout_email"]
    if value == old:
        return
    profile["optout_history"].append(
        {"from": old, "to": value, "seq": seq, "at": time.time(), "reason": reason}
    )
    profile["optout_email"] = value
    if SAILTHRU_OPTOUT_RANK[value] < SAILTHRU_OPTOUT_RANK[old]:
        state.consent_reversal(VENDOR, profile["keys"].get("email") or profile["keys"]["sid"],
                               f"optout_email {old} -> {value} ({reason})", seq)


def post_user(state, account, data, files, now):
    id_value = _require(data, "id")
    if not is_id(id_value):
        raise Err(2, "id must be a string or an integer")
    id_value = str(id_value)
    key = data.get("key", "sid")
    if key not in ("email", "extid", "sid"):
        raise Err(2, "key must be one of email, extid, sid")
    if key == "email" and not is_email(id_value):
        raise Err(11, f"Invalid email: {id_value}")
    keys = data.get("keys") or {}
    if not isinstance(keys, dict) or not set(keys) <= {"email", "extid", "sid"}:
        raise Err(2, "keys must be an object with email and/or extid")
    keys = {k: str(v) for k, v in keys.items() if k != "sid" and v is not None}
    if "email" in keys and not is_email(keys["email"]):
        raise Err(11, f"Invalid email: {keys['email']}")
    conflict = data.get("keysconflict", "error")
    if conflict not in ("error", "merge"):
        raise Err(2, "keysconflict must be error or merge")
    if data.get("vars") is not None:
        _check_vars(data["vars"], "vars")
    lists = data.get("lists")
    if lists is not None and not (isinstance(lists, dict) and all(v in (0, 1) and not isinstance(v, float)
                                                                   for v in lists.values())):
        raise Err(2, 'lists must be an object like {"List name": 1, "Other": 0}')
    optout = data.get("optout_email")
    if optout is not None and optout not in OPTOUT_VALUES:
        raise Err(2, f"optout_email must be one of {', '.join(OPTOUT_VALUES)}")

    sid = _find_user(state, account, key, id_value)
    if sid is None and key == "sid":
        raise Err(99, f"User not found: sid={id_value}", http=404)
    others = {sid} if sid else set()
    for k, v in keys.items():
        other = _find_user(state, account, k, v)
        if other is not None and other != sid:
            if conflict != "merge":
                raise Err(99, f"Key conflict: {k}={v} belongs to another profile (send keysconflict=merge)")
            others.add(other)
    created = False
    if sid is None and others:
        sid = sorted(others, key=lambda s: state.users[s]["created_seq"])[0]
    if sid is None:
        sid = state.new_id()
        state.users[sid] = {"account": account, "keys": {"sid": sid}, "vars": {}, "lists": set(),
                            "optout_email": "none", "optout_history": [], "created_seq": None, "updates": 0}
        created = True
    rec = state.record(VENDOR, account, "POST", "/user", "user", [id_value], data, extra={"sid": sid})
    profile = state.users[sid]
    if created:
        profile["created_seq"] = rec["seq"]
    for other in sorted(others - {sid}):  # merge other profiles into this one
        victim = state.users.pop(other)
        for k in ("email", "extid"):
            if k in victim["keys"] and k not in profile["keys"]:
                _index_user(state, account, sid, k, victim["keys"][k])
            elif k in victim["keys"]:
                state.user_index[k].pop((account, _index_key(k, victim["keys"][k])), None)
        for name, value in victim["vars"].items():
            profile["vars"].setdefault(name, value)
        profile["lists"] |= victim["lists"]
        if SAILTHRU_OPTOUT_RANK[victim["optout_email"]] > SAILTHRU_OPTOUT_RANK[profile["optout_email"]]:
            _set_optout(state, profile, victim["optout_email"], rec["seq"], "merge")
    if key != "sid":
        _index_user(state, account, sid, key, id_value)
    for k, v in keys.items():
        _index_user(state, account, sid, k, v)
    for name, value in (data.get("vars") or {}).items():
        if value is None:
            profile["vars"].pop(name, None)
        else:
            profile["vars"][name] = value
    for name, member in (lists or {}).items():
        if member:
            profile["lists"].add(name)
        else:
            profile["lists"].discard(name)
    if optout is not None:
        _set_optout(state, profile, optout, rec["seq"], "POST /user")
    profile["updates"] += 1
    return 200, {"ok": True, **_user_view(profile)}


def get_user(state, account, data, files, now):
    id_value = str(_require(data, "id"))
    key = data.get("key", "sid")
    if key not in ("email", "extid", "sid"):
        raise Err(2, "key must be one of email, extid, sid")
    sid = _find_user(state, account, key, id_value)
    if sid is None:
        raise Err(99, f"User not found: {key}={id_value}", http=404)
    state.record(VENDOR, account, "GET", "/user", "user", [id_value], data, extra={"sid": sid})
    return 200, _user_view(state.users[sid])


def delete_user(state, account, data, files, now):
    """``DELETE /user`` (a GDPR/CCPA deletion): the profile and what the account holds of it
    (its purchases, returns and logged requests). A profile it does not know: the documented
    not-found, error 99 with HTTP 404."""
    id_value = str(_require(data, "id"))
    key = data.get("key", "sid")
    if key not in ("email", "extid", "sid"):
        raise Err(2, "key must be one of email, extid, sid")
    sid = _find_user(state, account, key, id_value)
    if sid is None:
        # Purchases make a user of their email at Sailthru: with no profile stored here, what the
        # account holds under the email is still that user's.
        if key != "email" or not state.forget_person(VENDOR, account, id_value):
            raise Err(99, f"User not found: {key}={id_value}", http=404)
    else:
        keys = dict(state.users[sid]["keys"])
        state.forget_person(VENDOR, account, keys.get("email"), [keys["extid"]] if "extid" in keys else ())
    state.stats_for(VENDOR, "DELETE /user").accepted += 1
    return 200, {"ok": True}


# ---- job --------------------------------------------------------------------------------------
JOB_INPUTS = {"purchase_import": "purchases", "content_update": "content"}


def _job_rows(data: dict, files: dict, inline: str) -> list:
    if "file" in files:
        try:
            text = files["file"].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Err(6, "Invalid UTF-8 characters in the job file") from exc
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = Err(2, f"line {number}: invalid JSON")
            rows.append(row)
        return rows
    if inline in data:
        if not isinstance(data[inline], list):
            raise Err(2, f"{inline} must be an array")
        return list(data[inline])
    if data.get("url"):
        raise Err(2, f"the emulator does not fetch job urls: send a multipart file or an inline {inline} "
                     "array")
    raise Err(2, f"Missing required parameter: file (or an inline {inline} array)")


def post_job(state, account, data, files, now):
    name = _require(data, "job")
    if name not in JOB_INPUTS:
        raise Err(2, f"Unsupported job: {name} (the emulator runs {', '.join(JOB_INPUTS)})")
    rows = _job_rows(data, files, JOB_INPUTS[name])
    job_id = state.new_id()
    job = {"job_id": job_id, "name": name, "account": account, "status": "pending", "rows": len(rows),
           "imported": 0, "failed": 0, "errors": [], "created_at": iso_utc(now), "start_time": None,
           "end_time": None}
    state.jobs[job_id] = job
    recorded = dict(data)
    if "file" in files:
        recorded["file"] = f"<{len(files['file'])} bytes, {len(rows)} rows>"
    state.record(VENDOR, account, "POST", "/job", "job", [job_id], recorded, extra={"job": name})
    thread = threading.Thread(target=_run_job, args=(state, job_id, state.generation, rows),
                              name=f"emulator-job-{job_id[-6:]}", daemon=True)
    thread.start()
    return 200, {"job_id": job_id, "name": name, "status": "pending"}


def _run_job(state: EmulatorState, job_id: str, generation: int, rows: list) -> None:
    delay = state.config["job_delay_s"]
    time.sleep(delay / 2)
    with state.lock:
        if state.generation != generation:
            return
        job = state.jobs[job_id]
        job["status"] = "running"
        job["start_time"] = iso_utc(time.time())
    time.sleep(delay / 2)
    for number, row in enumerate(rows, start=1):
        with state.lock:
            if state.generation != generation:
                return
            now = time.time()
            try:
                if isinstance(row, Err):
                    raise row
                if not isinstance(row, dict):
                    raise Err(2, "row must be a JSON object")
                if job["name"] == "purchase_import":
                    checked = validate_purchase(state, row)
                    _store_purchase(state, job["account"], row, checked, "job", now)
                else:
                    upsert_content(state, job["account"], row, "job", now)
                job["imported"] += 1
            except Err as err:
                job["failed"] += 1
                if len(job["errors"]) < 100:
                    job["errors"].append({"row": number, "error": err.code, "errormsg": err.message})
    with state.lock:
        if state.generation == generation:
            job["status"] = "completed"
            job["end_time"] = iso_utc(time.time())


def get_job(state, account, data, files, now):
    job_id = str(_require(data, "job_id"))
    job = state.jobs.get(job_id)
    if job is None or job["account"] != account:
        raise Err(99, f"Job not found: {job_id}", http=404)
    state.record(VENDOR, account, "GET", "/job", "job", [job_id], data)
    return 200, _public(job)


ENDPOINTS = {
    "purchase": {"POST": post_purchase, "GET": get_purchase},
    "return": {"POST": post_return},
    "content": {"POST": post_content, "GET": get_content},
    "user": {"POST": post_user, "GET": get_user, "DELETE": delete_user},
    "job": {"POST": post_job, "GET": get_job},
}


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------
UNLIMITED_ANNOUNCED = 1_000_000


def _rate_headers(limit: int, remaining: int, reset: int) -> list[tuple[str, str]]:
    return [("X-Rate-Limit-Limit", str(limit)), ("X-Rate-Limit-Remaining", str(remaining)),
            ("X-Rate-Limit-Reset", str(reset))]


def storm_response(state: EmulatorState, req: Request, until: float) -> Response:
    """The answer during an injected 429 storm: error 43 with headers whose reset is the storm's end."""
    endpoint = req.path[len(PREFIX):].strip("/")
    limit = sailthru_limit(state.config, f"{req.method} /{endpoint}")
    headers = _rate_headers(limit, 0, int(until) + 1)
    return json_response(429, {"error": 43, "errormsg": "Too many requests"}, headers=headers)


def unrouted_response(state: EmulatorState, endpoint: str) -> Response | None:
    """The answer to a GET the account or a gateway in front of it does not route (config
    ``sailthru_unrouted_gets``), or None when it is routed. Such a GET never reaches Sailthru:
    no rate-limit headers, no budget used, and never a record found."""
    cfg = state.config
    if endpoint not in cfg["sailthru_unrouted_gets"]:
        return None
    answer = cfg["sailthru_unrouted_answer"]
    state.reject(VENDOR, f"GET /{endpoint}", 404, 99 if answer == "not_found_99" else None)
    if answer == "html_404":
        page = "<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1></body></html>"
        return text_response(404, page, content_type="text/html; charset=utf-8")
    if answer == "not_found_99":
        # Indistinguishable from the documented not-found: only a lookup of a purchase known to
        # exist tells this path apart.
        return json_response(404, {"error": 99, "errormsg": f"{endpoint.capitalize()} not found"})
    return json_response(404, {"message": "Not Found"})


def handle(state: EmulatorState, req: Request) -> Response:
    endpoint = req.path[len(PREFIX):].strip("/")
    method = req.method
    key = f"{method} /{endpoint}"
    if method == "GET":
        with state.lock:
            unrouted = unrouted_response(state, endpoint)
        if unrouted is not None:
            return unrouted
    handlers = ENDPOINTS.get(endpoint)
    if handlers is None:
        with state.lock:
            state.reject(VENDOR, key, 404, 99)
        return json_response(404, {"error": 99, "errormsg": f"Unknown API call: {endpoint}"})
    handler = handlers.get(method)
    if handler is None:
        with state.lock:
            state.reject(VENDOR, key, 405, 1)
        message = f"Unsupported HTTP method {method} for {endpoint}"
        return json_response(405, {"error": 1, "errormsg": message})
    now = time.time()
    headers: list[tuple[str, str]] = []
    with state.lock:
        cfg = state.config
        # Limits off (benchmarks): announce a budget no client will reach, as a raised account would.
        limit = sailthru_limit(cfg, key) if cfg["rate_limits_enabled"] else UNLIMITED_ANNOUNCED
        window = cfg["sailthru_rate_window_s"]
        try:
            params, files = _parse_params(req)
            api_key = params.get("api_key")
            account = state.sailthru_by_key.get(api_key) if api_key else None
            existing = state.sailthru_limiters.get((account, key)) if account else None
            remaining, reset = (existing or FixedWindow()).peek(now, limit, window)
            headers = _rate_headers(limit, remaining, reset)
            if not api_key:
                raise Err(2, "Missing required parameter: api_key")
            if account is None:
                raise Err(3, "Invalid API key")
            if not params.get("sig"):
                raise Err(2, "Missing required parameter: sig")
            expected = sign(params, cfg["sailthru_accounts"][account]["secret"])
            if not hmac.compare_digest(expected, str(params["sig"])):
                raise Err(5, "Authentication failed: invalid signature")
            limiter = existing
            if limiter is None:
                limiter = state.sailthru_limiters[(account, key)] = FixedWindow()
            allowed, remaining, reset = limiter.hit(now, limit, window, cfg["rate_limits_enabled"])
            headers = _rate_headers(limit, remaining, reset)
            if not allowed:
                raise Err(43, "Too many requests")
            if params.get("format", "json") != "json":
                raise Err(2, "Only format=json is supported")
            raw = params.get("json")
            if raw is None or raw == "":
                raise Err(2, "Missing required parameter: json")
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise Err(2, "The json parameter is not valid JSON") from exc
            if not isinstance(data, dict):
                raise Err(2, "The json parameter must be a JSON object")
            status, body = handler(state, account, data, files, now)
        except Err as err:
            state.reject(VENDOR, key, err.http, err.code)
            return json_response(err.http, _error_body(err), headers=headers)
    return json_response(status, body, headers=headers, accepted=True)
