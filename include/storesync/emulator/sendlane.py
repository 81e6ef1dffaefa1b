"""Sendlane API v2, as documented in /work/shared/vendors.md, served under ``/sendlane/v2``.

Order of checks for every request (each step answers and stops):

1. ``Authorization: Bearer <API token>`` unknown or missing -> 401, plain text (not counted per account).
2. the account is locked out -> 403 JSON (does not use the rate budget).
3. the account's sliding-window budget is spent -> 429 JSON, no rate-limit headers.
4. routing (404 / 405), body parsing (415 / 400), integration token (401 plain text), validation (422).
5. accepted -> recorded, 200 (tracking) / 202 (contacts) / 200 (GETs).

Every 4xx of step 4 counts toward the account's lock-out threshold.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from urllib.parse import urlencode

from .state import EmulatorState, SlidingWindow, iso_utc
from .validation import (
    MAX_UNIX_SECONDS,
    is_currency,
    is_date_string,
    is_email,
    is_id,
    is_int,
    is_number,
    is_url,
)
from .wire import Request, Response, json_response, text_response

PREFIX = "/sendlane/v2"
VENDOR = "sendlane"

ORDER_STATUSES = {"cancelled", "completed", "failed", "fulfilled", "pending", "processing", "refunded"}

# path slug -> (entity type, entity id field, required fields besides token)
TRACKING = {
    "order-placed": ("order", "order_id", ("order_id",)),
    "order-fulfilled": ("order", "order_id", ("order_id",)),
    "order-cancelled": ("order", "order_id", ("order_id",)),
    "order-refunded": ("order", "order_id", ("order_id",)),
    "customer-added": ("customer", "customer_id", ("customer_id",)),
    "product-added": ("product", "product_id", ("product_id", "product_url", "image_url")),
    "checkout-started": ("checkout", "checkout_id", ("checkout_id",)),
    "added-to-cart": ("cart", "cart_id", ("cart_id",)),
    "product-viewed": ("product", "product_id", ("product_id",)),
    "event": ("event", "custom_event", ("custom_event",)),
}

# De-duplicated by event + order id (the seed guide); nothing else is.
ORDER_EVENTS = frozenset({"order-placed", "order-fulfilled", "order-cancelled", "order-refunded"})

INVALID = "The given data was invalid."
MAX_PAGE_LIMIT = 100
DEFAULT_PAGE_LIMIT = 25


# --------------------------------------------------------------------------------------------
# Field validators: (value, label) -> message or None
# --------------------------------------------------------------------------------------------
def _label(key: str) -> str:
    return key.replace("_", " ")


def v_id(v, a):
    return None if is_id(v) else f"The {a} must be a string or an integer."


def v_str(v, a):
    return None if isinstance(v, str) else f"The {a} must be a string."


def v_nonempty_str(v, a):
    return None if isinstance(v, str) and v.strip() else f"The {a} must be a non-empty string."


def v_money(v, a):
    if not is_number(v):
        return f"The {a} must be a number."
    if v < 0:
        return f"The {a} must be at least 0."
    return None


def v_count(v, a):
    if not is_int(v):
        return f"The {a} must be an integer."
    return None if v >= 0 else f"The {a} must be at least 0."


def v_quantity(v, a):
    if not is_int(v):
        return f"The {a} must be an integer."
    return None if v >= 1 else f"The {a} must be at least 1."


def v_time(v, a):
    if not is_int(v):
        return f"The {a} must be an integer (unix seconds)."
    if not 0 <= v < MAX_UNIX_SECONDS:
        return f"The {a} must be a unix timestamp in seconds."
    return None


def v_bool(v, a):
    return None if isinstance(v, bool) else f"The {a} field must be true or false."


def v_email(v, a):
    return None if is_email(v) else f"The {a} must be a valid email address."


def v_url(v, a):
    return None if is_url(v) else f"The {a} must be a valid URL."


def v_currency(v, a):
    return None if is_currency(v) else f"The {a} must be a 3-letter ISO 4217 currency code."


def v_status(v, a):
    return None if v in ORDER_STATUSES else f"The selected {a} is invalid."


def v_date(v, a):
    return None if is_date_string(v) else f"The {a} is not a valid date."


def v_str_list(v, a):
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return None
    return f"The {a} must be an array of strings."


def v_object(v, a):
    return None if isinstance(v, dict) else f"The {a} must be an object."


SIMPLE_FIELDS = {
    "email": v_email,
    "time": v_time,
    "date_created": v_date,
    "initial_sync": v_bool,
    "accepts_marketing": v_bool,
    "subtotal": v_money,
    "total_tax": v_money,
    "total": v_money,
    "item_price": v_money,
    "compare_at_price": v_money,
    "total_items": v_count,
    "currency": v_currency,
    "status": v_status,
    "order_id": v_id,
    "customer_id": v_id,
    "product_id": v_id,
    "checkout_id": v_id,
    "cart_id": v_id,
    "variant_id": v_id,
    "custom_event": v_nonempty_str,
    "product_url": v_url,
    "image_url": v_url,
    "checkout_url": v_url,
    "sku": v_str,
    "product_name": v_str,
    "brand": v_str,
    "categories": v_str_list,
    "data": v_object,
}

LINE_ITEM_FIELDS = {
    "product_id": v_id,
    "quantity": v_quantity,
    "item_price": v_money,
    "total": v_money,
    "sku": v_str,
    "product_name": v_str,
    "variant_id": v_id,
    "product_url": v_url,
    "image_url": v_url,
}
LINE_ITEM_REQUIRED = ("product_id", "quantity", "item_price")

VARIANT_FIELDS = {
    "variant_id": v_id,
    "product_id": v_id,
    "sku": v_str,
    "item_price": v_money,
    "compare_at_price": v_money,
    "product_name": v_str,
}


def _add(errors: dict, key: str, message: str | None) -> None:
    if message:
        errors.setdefault(key, []).append(message)


def _check_fields(obj: dict, spec: dict, prefix: str, errors: dict) -> None:
    for key, check in spec.items():
        if key in obj:
            full = prefix + key
            _add(errors, full, check(obj[key], _label(full)))


def _check_required(obj: dict, required, prefix: str, errors: dict) -> None:
    for key in required:
        value = obj.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            errors.pop(prefix + key, None)
            _add(errors, prefix + key, f"The {_label(prefix + key)} field is required.")


def _check_line_items(value, errors: dict) -> None:
    if not isinstance(value, list):
        _add(errors, "line_items", "The line items must be an array.")
        return
    for i, item in enumerate(value):
        prefix = f"line_items.{i}."
        if not isinstance(item, dict):
            _add(errors, f"line_items.{i}", f"The line items.{i} must be an object.")
            continue
        _check_fields(item, LINE_ITEM_FIELDS, prefix, errors)
        _check_required(item, LINE_ITEM_REQUIRED, prefix, errors)


def _check_address(key: str, value, errors: dict) -> None:
    if not isinstance(value, dict):
        _add(errors, key, f"The {_label(key)} must be an object.")
        return
    if "email" in value:
        _add(errors, f"{key}.email", v_email(value["email"], _label(f"{key}.email")))
    for field_name, field_value in value.items():
        scalar = field_value is None or isinstance(field_value, (str, int, float))
        if field_name != "email" and not scalar:
            _add(errors, f"{key}.{field_name}", f"The {_label(key + '.' + field_name)} must be a string.")


def _check_discounts(value, errors: dict) -> None:
    entries = value if isinstance(value, list) else [value]
    if not all(isinstance(e, dict) for e in entries):
        _add(errors, "discounts", "The discounts must be an object or an array of objects.")
        return
    for i, entry in enumerate(entries):
        prefix = f"discounts.{i}." if isinstance(value, list) else "discounts."
        for key, check in (("discount_value", v_money), ("discount_code", v_str)):
            if key in entry:
                _add(errors, prefix + key, check(entry[key], _label(prefix + key)))


def _check_variants(value, errors: dict) -> None:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        _add(errors, "variants", "The variants must be an array of objects.")
        return
    for i, variant in enumerate(value):
        _check_fields(variant, VARIANT_FIELDS, f"variants.{i}.", errors)


def validate_tracking(slug: str, body: dict, *, strict_initial_sync: bool, now: float) -> dict:
    """Laravel-style field errors for one tracking event (the token is checked by the caller)."""
    errors: dict[str, list[str]] = {}
    _check_fields(body, SIMPLE_FIELDS, "", errors)
    if "line_items" in body:
        _check_line_items(body["line_items"], errors)
    for key in ("billing_address", "shipping_address"):
        if key in body:
            _check_address(key, body[key], errors)
    if "discounts" in body:
        _check_discounts(body["discounts"], errors)
    if "variants" in body:
        _check_variants(body["variants"], errors)
    _check_required(body, TRACKING[slug][2], "", errors)
    if strict_initial_sync and body.get("initial_sync") is True and "time" not in errors:
        if body.get("time") is None and body.get("date_created") is None:
            _add(errors, "time", "The time field is required when initial sync is true.")
        elif is_int(body.get("time")) and body["time"] > now + 300:
            _add(errors, "time", "The time must be in the past when initial sync is true.")
    return errors


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _invalid(errors: dict, message: str = INVALID) -> Response:
    return json_response(422, {"message": message, "errors": errors})


def _json_body(req: Request) -> tuple[dict | None, Response | None]:
    content_type = req.header("Content-Type").lower()
    if "json" not in content_type:
        message = "Unsupported Media Type: send Content-Type: application/json."
        return None, json_response(415, {"message": message})
    try:
        body = json.loads(req.body.decode("utf-8")) if req.body else None
    except (UnicodeDecodeError, ValueError):
        return None, _failed("Malformed JSON body.")
    if not isinstance(body, dict):
        return None, _failed("The body must be a JSON object.")
    return body, None


def _failed(error: str) -> Response:
    return json_response(400, {"data": {"message": "Failed to handle event", "errors": [error]}})


def _redact(body: dict) -> dict:
    if "token" in body:
        body = dict(body)
        body["token"] = "***"
    return body


def _emails_of(body: dict) -> list[str]:
    emails = []
    for candidate in (body.get("email"), (body.get("billing_address") or {}).get("email"),
                      (body.get("shipping_address") or {}).get("email")):
        if isinstance(candidate, str) and is_email(candidate):
            lowered = candidate.strip().lower()
            if lowered not in emails:
                emails.append(lowered)
    return emails


def _is_unsubscribed(state: EmulatorState, account: str, email: str, list_id: str | None = None) -> bool:
    entry = state.unsubscribed.get(account, {}).get(email)
    if entry is None:
        return False
    return entry["list_ids"] is None or list_id is None or list_id in entry["list_ids"]


def _page_params(req: Request) -> tuple[int, int] | Response:
    errors: dict = {}
    page_raw, limit_raw = req.query_value("page", "1"), req.query_value("limit", str(DEFAULT_PAGE_LIMIT))
    try:
        page = int(page_raw)
        if page < 1:
            raise ValueError
    except ValueError:
        errors["page"] = ["The page must be an integer of at least 1."]
        page = 1
    try:
        limit = int(limit_raw)
        if limit < 1:
            raise ValueError
    except ValueError:
        errors["limit"] = ["The limit must be an integer of at least 1."]
        limit = DEFAULT_PAGE_LIMIT
    if errors:
        return _invalid(errors)
    return page, min(limit, MAX_PAGE_LIMIT)


def _paged(req: Request, items: list, page: int, limit: int) -> dict:
    start = (page - 1) * limit
    chunk = items[start : start + limit]
    last_page = max(1, -(-len(items) // limit))
    base = f"http://{req.host}{req.path}"
    has_next = start + limit < len(items)
    next_url = f"{base}?{urlencode({'page': page + 1, 'limit': limit})}" if has_next else None
    prev_url = f"{base}?{urlencode({'page': page - 1, 'limit': limit})}" if page > 1 else None
    return {
        "data": chunk,
        "links": {
            "first": f"{base}?{urlencode({'page': 1, 'limit': limit})}",
            "last": f"{base}?{urlencode({'page': last_page, 'limit': limit})}",
            "prev": prev_url,
            "next": next_url,
        },
        "meta": {"current_page": page, "per_page": limit, "last_page": last_page, "total": len(items)},
    }


# --------------------------------------------------------------------------------------------
# Endpoint handlers (called with the state lock held)
# --------------------------------------------------------------------------------------------
def tracking(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
    slug = params["slug"]
    if slug not in TRACKING:
        return json_response(404, {"message": f"Unknown tracking path /tracking/{slug}."})
    body, problem = _json_body(req)
    if problem:
        return problem
    strict = state.config["sendlane_strict_initial_sync"]
    token = body.get("token")
    if token is None or token == "":
        errors = validate_tracking(slug, body, strict_initial_sync=strict, now=now)
        errors = {"token": ["The token field is required."], **errors}
        return _invalid(errors)
    if not isinstance(token, str):
        return _invalid({"token": ["The token must be a string."]})
    if token != state.config["sendlane_accounts"][account]["integration_token"]:
        return text_response(401, "Unauthorized: invalid integration token.")
    errors = validate_tracking(slug, body, strict_initial_sync=strict, now=now)
    if errors:
        return _invalid(errors)
    entity_type, id_field, _ = TRACKING[slug]
    if slug in ORDER_EVENTS:
        # The seed guide: the same event + id sent again is skipped (the first one is recorded).
        seen = (account, slug, str(body[id_field]))
        if seen in state.sendlane_order_events:
            state.record(VENDOR, account, "POST", f"/tracking/{slug}", entity_type, [body[id_field]],
                         _redact(body), skipped=True)
            return json_response(200, {"data": {"message": "Successfully handled event"}}, accepted=True)
        state.sendlane_order_events.add(seen)
    rec = state.record(
        VENDOR, account, "POST", f"/tracking/{slug}", entity_type, [body[id_field]], _redact(body)
    )
    # An event with an email adds the contact to the account (the seed guide's "contacts added to
    # Sendlane" by events); only the top-level email, the one the event is about.
    if isinstance(body.get("email"), str) and is_email(body["email"]):
        state.upsert_sendlane_person(account, body["email"], body, now, source=slug)
    # Consent side effects the seed guide documents: accepts_marketing=false unsubscribes.
    marketing = body.get("accepts_marketing")
    if isinstance(marketing, bool):
        for email in _emails_of(body):
            if marketing is False and state.config["sendlane_unsubscribe_on_accepts_marketing_false"]:
                if not _is_unsubscribed(state, account, email):
                    state._add_unsubscribed({"email": email, "account": account},
                                            source="accepts_marketing_false")
            elif marketing is True and _is_unsubscribed(state, account, email):
                detail = f"/tracking/{slug} sent accepts_marketing=true for an unsubscribed contact"
                state.consent_reversal(VENDOR, email, detail, rec["seq"])
    return json_response(200, {"data": {"message": "Successfully handled event"}}, accepted=True)


CONTACT_FIELDS = {
    "first_name": v_str,
    "last_name": v_str,
    "phone": v_str,
    "email_consent": v_bool,
    "tag_names": v_str_list,
}


def _is_custom_field(cf) -> bool:
    if not (isinstance(cf, dict) and isinstance(cf.get("key"), str) and cf["key"] and "value" in cf):
        return False
    return cf["value"] is None or isinstance(cf["value"], (str, int, float))


def post_contacts(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
    list_id = params["list_id"]
    if list_id not in state.config["sendlane_lists"]:
        return json_response(404, {"message": f"List {list_id} not found."})
    body, problem = _json_body(req)
    if problem:
        return problem
    contacts = body.get("contacts")
    errors: dict = {}
    maximum = state.config["sendlane_max_contacts_per_request"]
    if contacts is None:
        _add(errors, "contacts", "The contacts field is required.")
    elif not isinstance(contacts, list) or not contacts:
        _add(errors, "contacts", "The contacts must be a non-empty array.")
    elif len(contacts) > maximum:
        _add(errors, "contacts", f"The contacts may not have more than {maximum} items.")
    else:
        for i, contact in enumerate(contacts):
            prefix = f"contacts.{i}."
            if not isinstance(contact, dict):
                _add(errors, f"contacts.{i}", f"The contacts.{i} must be an object.")
                continue
            if contact.get("email") in (None, ""):
                _add(errors, prefix + "email", f"The contacts.{i}.email field is required.")
            else:
                _add(errors, prefix + "email", v_email(contact["email"], f"contacts.{i}.email"))
            for key, check in CONTACT_FIELDS.items():
                if key in contact and contact[key] is not None:
                    _add(errors, prefix + key, check(contact[key], f"contacts.{i}.{key}"))
            fields_ = contact.get("custom_fields")
            if fields_ is not None:
                if not isinstance(fields_, list):
                    _add(errors, prefix + "custom_fields",
                         f"The contacts.{i}.custom_fields must be an array.")
                else:
                    for j, cf in enumerate(fields_):
                        if not _is_custom_field(cf):
                            _add(errors, f"{prefix}custom_fields.{j}",
                                 f"The contacts.{i}.custom_fields.{j} must be an object with a key and a "
                                 "scalar value.")
    if errors:
        return _invalid(errors)
    emails = [c["email"].strip().lower() for c in contacts]
    rec = state.record(
        VENDOR, account, "POST", "/lists/{list_id}/contacts", "contact", emails, body,
        status=202, extra={"list_id": list_id},
    )
    book = state.contacts.setdefault((account, list_id), {})
    for contact, email in zip(contacts, emails):
        stored = book.get(email)
        if stored is None:
            stored = book[email] = {
                "account": account, "list_id": list_id, "email": email, "first_name": None,
                "last_name": None, "phone": None, "email_consent": None, "tag_names": [],
                "custom_fields": {}, "created_at": iso_utc(now), "upserts": 0,
            }
        previous_consent = stored["email_consent"]
        for key in ("first_name", "last_name", "phone", "email_consent"):
            if contact.get(key) is not None:
                stored[key] = contact[key]
        for tag in contact.get("tag_names") or []:
            if tag not in stored["tag_names"]:
                stored["tag_names"].append(tag)
        for cf in contact.get("custom_fields") or []:
            stored["custom_fields"][cf["key"]] = cf["value"]
        stored["upserts"] += 1
        stored["updated_at"] = iso_utc(now)
        state.upsert_sendlane_person(account, email, contact, now, source="list", list_id=list_id)
        if contact.get("email_consent") is True:
            if _is_unsubscribed(state, account, email, list_id):
                detail = "contact upsert sent email_consent=true for an unsubscribed contact"
                state.consent_reversal(VENDOR, email, detail, rec["seq"])
            elif previous_consent is False:
                detail = "contact upsert changed email_consent false -> true"
                state.consent_reversal(VENDOR, email, detail, rec["seq"])
    body = {"data": {"message": "Contacts accepted for processing.", "count": len(contacts)}}
    return json_response(202, body, accepted=True)


def _unsubscribed_items(state: EmulatorState, account: str, list_id: str | None) -> list[dict]:
    entries = state.unsubscribed.get(account, {}).values()
    items = [
        {"email": e["email"], "unsubscribed_at": e["unsubscribed_at"]}
        for e in entries
        if list_id is None or e["list_ids"] is None or list_id in e["list_ids"]
    ]
    items.sort(key=lambda item: (item["unsubscribed_at"], item["email"]))
    return items


def get_unsubscribed(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
    list_id = params.get("list_id")
    if list_id is not None and list_id not in state.config["sendlane_lists"]:
        return json_response(404, {"message": f"List {list_id} not found."})
    paging = _page_params(req)
    if isinstance(paging, Response):
        return paging
    page, limit = paging
    endpoint = "/contacts/unsubscribed" if list_id is None else "/lists/{list_id}/unsubscribed"
    state.record(VENDOR, account, "GET", endpoint, None, [], {"page": page, "limit": limit},
                 extra={"list_id": list_id} if list_id else None)
    items = _unsubscribed_items(state, account, list_id)
    return json_response(200, _paged(req, items, page, limit), accepted=True)


def get_lists(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
    paging = _page_params(req)
    if isinstance(paging, Response):
        return paging
    page, limit = paging
    items = []
    for list_id, name in sorted(state.config["sendlane_lists"].items(), key=lambda kv: (len(kv[0]), kv[0])):
        items.append({
            "id": int(list_id) if list_id.isdigit() else list_id,
            "name": name,
            "contacts_count": len(state.contacts.get((account, list_id), {})),
        })
    state.record(VENDOR, account, "GET", "/lists", None, [], {"page": page, "limit": limit})
    return json_response(200, _paged(req, items, page, limit), accepted=True)


def _derived(kind: str):
    def handler(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
        paging = _page_params(req)
        if isinstance(paging, Response):
            return paging
        page, limit = paging
        names: list[str] = []
        for (acct, _), book in state.contacts.items():
            if acct != account:
                continue
            for contact in book.values():
                values = contact["tag_names"] if kind == "tags" else contact["custom_fields"].keys()
                for value in values:
                    if value not in names:
                        names.append(value)
        items = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
        state.record(VENDOR, account, "GET", f"/{kind}", None, [], {"page": page, "limit": limit})
        return json_response(200, _paged(req, items, page, limit), accepted=True)

    return handler


# --------------------------------------------------------------------------------------------
# Contact reads and deletion. NOT in Sendlane's public API v2 reference nor in /work/shared: the
# shapes public clients use (the Laravel client arindam/sendlane-apis, WP Fusion's Sendlane CRM
# module). The not-found answer is the one WP Fusion treats as "no such contact": 422 "The selected
# email is invalid." (Laravel's ``exists`` rule). A deletion forgets the person the way
# ``EmulatorState.forget_person`` does: the contact, its list memberships and unsubscribes, and the
# logged requests that carry its email (so what the vendor "recorded" of them is gone too).
# --------------------------------------------------------------------------------------------
CONTACT_NOT_FOUND = "The selected email is invalid."


def _contact_view(person: dict) -> dict:
    return {key: person[key] for key in ("id", "email", "first_name", "last_name", "phone",
                                          "created_at", "updated_at")}


def search_contacts(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
    email = req.query_value("email")
    if email is None or not email.strip():
        return _invalid({"email": ["The email field is required."]})
    if not is_email(email.strip()):
        return _invalid({"email": ["The email must be a valid email address."]})
    person = state.sendlane_people.get(account, {}).get(email.strip().lower())
    if person is None or person["visible_at"] > now:  # not created, or not processed yet
        return _invalid({"email": [CONTACT_NOT_FOUND]}, message=CONTACT_NOT_FOUND)
    state.record(VENDOR, account, "GET", "/contacts/search", "contact", [person["id"]], None)
    return json_response(200, {"data": _contact_view(person)}, accepted=True)


def get_contact(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
    person = state.sendlane_person_by_id(account, params["contact_id"])
    if person is None or person["visible_at"] > now:
        return json_response(404, {"message": "Contact not found."})
    state.record(VENDOR, account, "GET", "/contacts/{id}", "contact", [person["id"]], None)
    return json_response(200, {"data": _contact_view(person)}, accepted=True)


def delete_contact(state: EmulatorState, account: str, req: Request, params: dict, now: float) -> Response:
    person = state.sendlane_person_by_id(account, params["contact_id"])
    if person is None:
        return json_response(404, {"message": "Contact not found."})
    state.forget_person(VENDOR, account, person["email"])
    state.stats_for(VENDOR, "DELETE /contacts/{id}").accepted += 1
    return json_response(200, {"data": {"message": "Contact deleted"}})


def unrouted_response(state: EmulatorState, method: str, sub: str) -> Response | None:
    """The answer to a contact read the account or a gateway does not route (config
    ``sendlane_unrouted_gets``), or None when it is routed. Such a GET never reaches Sendlane: no
    budget used, no lock-out count, never a contact found."""
    if method != "GET":
        return None
    path = sub.strip("/")
    if path == "contacts/search":
        endpoint = "contacts/search"
    elif re.fullmatch(r"contacts/[^/]+", path) and path != "contacts/unsubscribed":
        endpoint = "contacts/{id}"
    else:
        return None
    cfg = state.config
    if endpoint not in cfg["sendlane_unrouted_gets"]:
        return None
    answer = cfg["sendlane_unrouted_answer"]
    state.reject(VENDOR, f"GET /{endpoint}", 404 if answer != "not_found_422" else 422)
    if answer == "html_404":
        page = "<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1></body></html>"
        return text_response(404, page, content_type="text/html; charset=utf-8")
    if answer == "not_found_422":
        # Indistinguishable from the observed not-found: only a search for a contact known to
        # exist tells this path apart.
        return _invalid({"email": [CONTACT_NOT_FOUND]}, message=CONTACT_NOT_FOUND)
    return json_response(404, {"message": "Not Found"})


ROUTES = [
    ("POST", re.compile(r"^/tracking/(?P<slug>[^/]+)/?$"), None, tracking),
    ("POST", re.compile(r"^/lists/(?P<list_id>[^/]+)/contacts/?$"), "/lists/{list_id}/contacts",
     post_contacts),
    ("GET", re.compile(r"^/lists/(?P<list_id>[^/]+)/unsubscribed/?$"), "/lists/{list_id}/unsubscribed",
     get_unsubscribed),
    ("GET", re.compile(r"^/contacts/unsubscribed/?$"), "/contacts/unsubscribed", get_unsubscribed),
    ("GET", re.compile(r"^/contacts/search/?$"), "/contacts/search", search_contacts),
    ("GET", re.compile(r"^/contacts/(?P<contact_id>[^/]+)/?$"), "/contacts/{id}", get_contact),
    ("DELETE", re.compile(r"^/contacts/(?P<contact_id>[^/]+)/?$"), "/contacts/{id}", delete_contact),
    ("GET", re.compile(r"^/lists/?$"), "/lists", get_lists),
    ("GET", re.compile(r"^/tags/?$"), "/tags", _derived("tags")),
    ("GET", re.compile(r"^/custom-fields/?$"), "/custom-fields", _derived("custom-fields")),
]


def _route(method: str, sub: str):
    """(handler, params, endpoint template, allowed methods)"""
    allowed = []
    for route_method, pattern, template, handler in ROUTES:
        match = pattern.match(sub)
        if not match:
            continue
        params = match.groupdict()
        endpoint = template or (f"/tracking/{params['slug']}" if "slug" in params else sub)
        if route_method == method:
            return handler, params, endpoint, [route_method]
        allowed.append(route_method)
    return None, {}, sub, allowed


def _register_error(state: EmulatorState, account: str, now: float) -> None:
    cfg = state.config
    errors = state.sendlane_errors.get(account)
    if errors is None:
        errors = state.sendlane_errors[account] = deque()
    errors.append(now)
    cutoff = now - cfg["lockout_window_s"]
    while errors and errors[0] <= cutoff:
        errors.popleft()
    if cfg["lockout_enabled"] and len(errors) >= cfg["lockout_errors"]:
        state.sendlane_locked_until[account] = now + cfg["lockout_cooldown_s"]
        state.sendlane_lockouts[account] += 1
        errors.clear()


def handle(state: EmulatorState, req: Request) -> Response:
    sub = req.path[len(PREFIX):] or "/"
    method = req.method
    with state.lock:
        unrouted = unrouted_response(state, method, sub)
    if unrouted is not None:
        return unrouted
    handler, params, endpoint, allowed = _route(method, sub)
    key = f"{method} {endpoint}"
    auth = req.header("Authorization").strip()
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    now = time.time()
    with state.lock:
        account = state.sendlane_by_token.get(token) if token else None
        if account is None:
            state.reject(VENDOR, key, 401)
            return text_response(401, "Unauthorized")
        cfg = state.config
        if state.sendlane_locked_until.get(account, 0.0) > now:
            state.sendlane_locked_rejections[account] += 1
            state.reject(VENDOR, key, 403)
            message = "Too many failed requests: this account is temporarily blocked."
            return json_response(403, {"message": message})
        limiter = state.sendlane_limiters.get(account)
        if limiter is None:
            limiter = state.sendlane_limiters[account] = SlidingWindow()
        limit, window = cfg["sendlane_rate_limit"], cfg["sendlane_rate_window_s"]
        if not limiter.hit(now, limit, window, cfg["rate_limits_enabled"]):
            state.reject(VENDOR, key, 429)
            return json_response(429, {"message": "Too Many Attempts."})
        if handler is None:
            if allowed:
                message = (f"The {method} method is not supported for this route. "
                           f"Supported methods: {', '.join(allowed)}.")
                response = json_response(405, {"message": message})
            else:
                response = json_response(404, {"message": f"Not found: {sub}"})
        else:
            response = handler(state, account, req, params, now)
        if response.status >= 400:
            state.reject(VENDOR, key, response.status)
            if 400 <= response.status < 500 and response.status not in (403, 429):
                _register_error(state, account, now)
        return response
