"""Small, strict type checks shared by both vendor emulations (stdlib only)."""

from __future__ import annotations

import math
import re
from datetime import datetime
from email.utils import parsedate_to_datetime

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_URL_RE = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# "2010-02-14 9:30:00 America/New_York", "2024-01-31", "2024-01-31 10:00 UTC", "... +0100"
_LOOSE_DATE_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?"
    r"(?:\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}|[A-Za-z_]+/[A-Za-z_/+-]+|[A-Z]{3,5}))?$"
)
_RELATIVE_RE = re.compile(r"^[+-]?\s*\d+\s+(second|minute|hour|day|week|month|year)s?$", re.IGNORECASE)

MAX_UNIX_SECONDS = 10_000_000_000  # beyond year 2286: almost certainly milliseconds


def is_int(value: object) -> bool:
    """A JSON integer (``True``/``False`` are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite JSON number, integer or decimal (booleans and strings are not numbers)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def is_id(value: object) -> bool:
    """An identifier: a non-empty string or an integer."""
    return is_int(value) or (isinstance(value, str) and value.strip() != "")


def is_email(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 254:
        return False
    if not _EMAIL_RE.match(value):
        return False
    local = value.split("@", 1)[0]
    return not (local.startswith(".") or local.endswith(".") or ".." in local)


def is_url(value: object) -> bool:
    return isinstance(value, str) and bool(_URL_RE.match(value))


def is_currency(value: object) -> bool:
    return isinstance(value, str) and bool(_CURRENCY_RE.match(value))


def is_date_string(value: object) -> bool:
    """A date the emulator understands: ISO 8601, ``YYYY-MM-DD HH:MM[:SS] [zone]`` or RFC 2822."""
    if not isinstance(value, str) or not value.strip():
        return False
    text = value.strip()
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    except ValueError:
        pass
    match = _LOOSE_DATE_RE.match(text)
    if match:
        year, month, day, hour, minute, second = match.groups()
        try:
            datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
            return True
        except ValueError:
            return False
    try:
        return parsedate_to_datetime(text) is not None
    except (TypeError, ValueError, IndexError):
        return False


def is_sailthru_time(value: object, *, relative: bool = False) -> bool:
    """A Sailthru date/time: unix seconds, a date string, or (when allowed) ``+3 hours``."""
    if is_number(value):
        return 0 <= value < MAX_UNIX_SECONDS
    if not isinstance(value, str):
        return False
    if value.strip().lower() == "now":
        return True
    if relative and _RELATIVE_RE.match(value.strip()):
        return True
    return is_date_string(value)
