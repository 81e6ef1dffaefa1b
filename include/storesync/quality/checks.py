"""The expectation suites, as data: one registry entry per entity, one ``Check`` per expectation.

A ``Check`` names a Great Expectations expectation class and its arguments; the suite for an
entity is built from its checks (see ``storesync.quality.gate``), never by code branches. Where GX
has no built-in (a total that must add up, an amount that must be whole cents), the check carries
a vectorised pandas/numpy *helper* that computes a boolean column ``_<check name>``, and the
expectation is that the column is true: the accepted GX pattern for derived rules.

The check name is the reason code: it is what a quarantined row's reasons start with, what the
quarantine store counts, and what the threshold error lists. Its ``detail`` turns a failing row
into a readable sentence that never quotes an email address, a name or a URL.

GX is never imported here (``import great_expectations`` takes ~5 s): this module is data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from storesync.quality.currencies import KNOWN_CURRENCIES
from storesync.quality.money import EXACT, MAX_CENTS, Money, fmt, parse_money, to_decimal
from storesync.quality.serialize import native
from storesync.warehouse.contract import ORDER_STATUSES  # the contract's (include/sql/README.md shows them)

# RFC 5322 "dot-atom" local part (no leading, trailing or doubled dots) at a dotted host name with
# an alphabetic top-level domain. ``\Z``, not ``$``: Python's ``$`` also matches before a final
# newline, and "a@b.com\n" is not an address a vendor accepts.
EMAIL_REGEX = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\Z"
)
# An absolute http(s) URL with a host (letters, digits, dots, hyphens), an optional port, and no
# whitespace anywhere.
HTTP_URL_REGEX = (
    r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:[/?#]\S*)?\Z"
)

ONE_CENT = Decimal("0.01")


# --------------------------------------------------------------------------------------------
# The prepared batch: what helpers and details read
# --------------------------------------------------------------------------------------------


class Prepared:
    """A batch made ready for validation, without touching the caller's DataFrame.

    ``frame`` is what GX validates: a ``_row`` position column (the row id every failure is keyed
    on), the columns the checks read, coerced (money as float, dates as naive UTC datetimes, flags
    as numbers, blank strings as missing), and one boolean column per helper check.
    """

    def __init__(self, spec: EntitySpec, source: pd.DataFrame, now: dt.datetime) -> None:
        self.spec = spec
        self.source = source
        self.now = now
        self.n = len(source)
        self._counts: dict[str, pd.Series] = {}
        self.money: dict[str, Money] = {
            col: parse_money(col, source[col]) for col in spec.money if col in spec.reads
        }
        columns: dict[str, Any] = {ROW_ID: np.arange(self.n, dtype=np.int64)}
        for col in spec.reads:
            if col in self.money:
                columns[col] = self.money[col].value
            elif col in spec.dates:
                columns[col] = _datetime_ns(source[col])
            elif col in spec.numbers:
                number = pd.to_numeric(source[col], errors="coerce")
                columns[col] = number.to_numpy(dtype=np.float64, na_value=np.nan)
            elif col in spec.flags:
                flag = pd.to_numeric(source[col], errors="coerce")
                columns[col] = flag.fillna(0).to_numpy(dtype=np.float64)
            else:
                columns[col] = _blank_to_none(source[col]).to_numpy()
        self.frame = pd.DataFrame(columns)
        for check in spec.checks:
            if check.helper is not None:
                flags = np.asarray(check.helper(self), dtype=bool)
                if flags.shape != (self.n,):
                    raise ValueError(f"helper of {check.name} returned {flags.shape}, expected ({self.n},)")
                self.frame[check.helper_column] = flags

    def value(self, col: str, position: int) -> Any:
        return self.source[col].iat[position]

    def count(self, col: str, value: Any) -> int:
        """How many rows of the batch hold ``value`` in ``col`` (for duplicate details)."""
        if col not in self._counts:
            self._counts[col] = self.frame[col].value_counts(dropna=True)
        return int(self._counts[col].get(value, 0))


ROW_ID = "_row"


def _naive_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    return parsed.dt.tz_localize(None)


_NS_MIN = np.datetime64(pd.Timestamp.min.ceil("us").to_datetime64(), "us").astype(np.int64)
_NS_MAX = np.datetime64(pd.Timestamp.max.floor("us").to_datetime64(), "us").astype(np.int64)


def _datetime_ns(series: pd.Series) -> np.ndarray:
    """Naive-UTC ``datetime64[ns]``: GX compares that dtype vectorised (pandas 3 defaults to
    microseconds, which GX compares one value at a time). Dates outside the nanosecond range
    (years before 1677 or after 2262) are clamped to its ends, so a year-9999 date still fails
    "not in the future"; details quote the original value."""
    values = _naive_utc(series).to_numpy()
    if values.dtype == np.dtype("datetime64[ns]"):
        return values
    micros = values.astype("datetime64[us]")
    nat = np.isnat(micros)
    clamped = np.clip(micros.astype(np.int64), _NS_MIN, _NS_MAX).astype("datetime64[us]")
    out = clamped.astype("datetime64[ns]")
    out[nat] = np.datetime64("NaT")
    return out


def _iso(value: Any) -> str:
    value = native(value)
    return value.isoformat() if hasattr(value, "isoformat") else _short(value)


def _blank_to_none(series: pd.Series) -> pd.Series:
    """Whitespace-only strings count as missing for "present" checks."""
    if not (pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype)):
        return series
    try:
        blank = series.str.strip().eq("").fillna(False).to_numpy(dtype=bool)
    except AttributeError:  # an object column without strings
        return series
    if not blank.any():
        return series
    out = series.astype(object).copy()
    out[blank] = None
    return out


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

Helper = Callable[[Prepared], np.ndarray]
Detail = Callable[[Prepared, int], str]


@dataclass(frozen=True)
class Check:
    """One named, documented expectation of an entity's suite.

    ``expectation`` is a class name in ``great_expectations.expectations`` and ``kwargs`` its
    arguments. A check with a ``helper`` validates the boolean column ``_<name>`` that the helper
    computes. ``reads`` lists the batch columns the check needs.
    """

    name: str
    description: str
    expectation: str
    kwargs: Mapping[str, Any]
    reads: tuple[str, ...]
    helper: Helper | None = None
    detail: Detail | None = None

    @property
    def helper_column(self) -> str | None:
        return f"_{self.name}" if self.helper is not None else None

    def explain(self, prepared: Prepared, position: int) -> str:
        """``"<name>: <readable detail>"`` for one failing row."""
        text = self.description
        if self.detail is not None:
            try:
                text = self.detail(prepared, position)
            except Exception:  # noqa: BLE001 - a detail must never hide the verdict
                text = self.description
        return f"{self.name}: {text}"


@dataclass(frozen=True)
class EntitySpec:
    """An entity's suite: its row id, how to coerce its columns, and its checks, in order."""

    entity: str
    id_column: str
    checks: tuple[Check, ...]
    money: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    description: str = ""
    reads: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.checks]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"{self.entity}: check names must be unique, repeated: {sorted(duplicates)}")
        reads = dict.fromkeys([self.id_column, *(col for c in self.checks for col in c.reads)])
        object.__setattr__(self, "reads", tuple(reads))

    @property
    def suite_name(self) -> str:
        return f"storesync_{self.entity}"

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


def _short(value: Any, limit: int = 40) -> str:
    value = native(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- built-in expectations ------------------------------------------------------------------


def present(col: str) -> Check:
    return Check(
        name=f"{col}_present",
        description=f"`{col}` is present: not null, not blank.",
        expectation="ExpectColumnValuesToNotBeNull",
        kwargs={"column": col},
        reads=(col,),
        detail=lambda p, i: _missing_detail(p, i, col),
    )


def _missing_detail(p: Prepared, i: int, col: str) -> str:
    raw = p.value(col, i)
    if col in p.spec.money and col in p.money and p.money[col].invalid[i]:
        return f"{col} is not a number"
    if col in p.spec.dates and raw is not None and not pd.isna(raw):
        return f"{col} is not a date"
    return f"{col} is missing"


def unique(col: str) -> Check:
    return Check(
        name=f"{col}_unique",
        description=f"`{col}` is unique in the batch. Every row sharing an id is quarantined: the gate "
        "does not guess which copy is right.",
        expectation="ExpectColumnValuesToBeUnique",
        kwargs={"column": col},
        reads=(col,),
        detail=lambda p, i: _duplicate_detail(p, i, col),
    )


def _duplicate_detail(p: Prepared, i: int, col: str) -> str:
    value = p.frame[col].iat[i]
    return f"{col} {_short(value)} appears {p.count(col, value)} times in the batch"


def non_negative(col: str) -> Check:
    return Check(
        name=f"{col}_non_negative",
        description=f"`{col}` is not negative.",
        expectation="ExpectColumnValuesToBeBetween",
        kwargs={"column": col, "min_value": 0},
        reads=(col,),
        detail=lambda p, i: f"{col} {fmt(p.money[col].decimal(i))} is negative",
    )


def at_least(col: str, minimum: int, name: str) -> Check:
    return Check(
        name=name,
        description=f"`{col}` is at least {minimum}.",
        expectation="ExpectColumnValuesToBeBetween",
        kwargs={"column": col, "min_value": minimum},
        reads=(col,),
        detail=lambda p, i: f"{col} {_short(p.value(col, i))} is below {minimum}",
    )


def in_set(col: str, values: tuple[Any, ...], name: str, what: str, failure: str | None = None) -> Check:
    return Check(
        name=name,
        description=f"`{col}` is {what}.",
        expectation="ExpectColumnValuesToBeInSet",
        kwargs={"column": col, "value_set": list(values)},
        reads=(col,),
        detail=(lambda p, i: failure)
        if failure
        else (lambda p, i: f"{col} {_short(p.value(col, i))} is not {what}"),
    )


def matches(col: str, regex: str, name: str, what: str) -> Check:
    # Details never quote the value: emails are personal data and URLs can carry tokens.
    return Check(
        name=name,
        description=f"`{col}`, when present, is {what}.",
        expectation="ExpectColumnValuesToMatchRegex",
        kwargs={"column": col, "regex": regex},
        reads=(col,),
        detail=lambda p, i: f"{col} is not {what}",
    )


def not_in_future(col: str) -> Check:
    return Check(
        name=f"{col}_not_in_future",
        description=f"`{col}` is not after the run's reference time (`now`, a suite parameter).",
        expectation="ExpectColumnValuesToBeBetween",
        kwargs={"column": col, "max_value": {"$PARAMETER": "now"}},
        reads=(col,),
        detail=lambda p, i: f"{col} {_iso(p.value(col, i))} is after now ({p.now.isoformat()})",
    )


def not_before(later: str, earlier: str) -> Check:
    return Check(
        name=f"{later}_not_before_{earlier}",
        description=f"`{later}` is not before `{earlier}` (rows missing either are left to the "
        "presence checks).",
        expectation="ExpectColumnPairValuesAToBeGreaterThanB",
        kwargs={
            "column_A": later,
            "column_B": earlier,
            "or_equal": True,
            "ignore_row_if": "either_value_is_missing",
        },
        reads=(later, earlier),
        detail=lambda p, i: (
            f"{later} {_iso(p.value(later, i))} is before {earlier} {_iso(p.value(earlier, i))}"
        ),
    )


# --- derived (helper-column) expectations ---------------------------------------------------


def derived(name: str, description: str, reads: tuple[str, ...], helper: Helper, detail: Detail) -> Check:
    return Check(
        name=name,
        description=description,
        expectation="ExpectColumnValuesToBeInSet",
        kwargs={"column": f"_{name}", "value_set": [True]},
        reads=reads,
        helper=helper,
        detail=detail,
    )


def fits_cents(col: str) -> Check:
    def helper(p: Prepared) -> np.ndarray:
        m = p.money[col]
        return m.missing | m.fits

    def detail(p: Prepared, i: int) -> str:
        m = p.money[col]
        if m.invalid[i]:
            return f"{col} {_short(p.value(col, i))} is not a number"
        value = m.decimal(i)
        if m.whole[i] or (value is not None and _is_whole_cents(value)):
            return f"{col} {fmt(value)} is not below {MAX_CENTS} cents"
        return f"{col} {fmt(value)} has more than 2 decimal places"

    return derived(
        f"{col}_fits_cents",
        f"`{col}`, when present, is a whole number of cents (at most 2 decimal places) and below "
        f"{MAX_CENTS} cents in size. Helper column `_{col}_fits_cents`.",
        (col,),
        helper,
        detail,
    )


def _is_whole_cents(value: Decimal) -> bool:
    if value.adjusted() >= 20:  # far above the maximum: whole, and no need to build a huge integer
        return True
    if value.adjusted() <= -60:
        return not value
    num, den = value.as_integer_ratio()
    return (num * 100) % den == 0


def _total_components(p: Prepared) -> tuple[Money, Money, Money, Money]:
    return p.money["total"], p.money["lines_subtotal"], p.money["total_tax"], p.money["total_discounts"]


def _within_one_cent(
    rows: np.ndarray,
    approx_cents: np.ndarray,
    scale_cents: np.ndarray,
    exact: Callable[[int], bool],
    ok: np.ndarray,
) -> None:
    """Settle ``ok`` for ``rows`` from a float estimate of the difference in cents, exactly: the
    estimate's error is far below ``1e-12 * scale``, so only rows within that margin of one cent
    (in practice none) need the exact ``Decimal`` comparison."""
    if not rows.any():
        return
    with np.errstate(invalid="ignore"):
        margin = np.abs(scale_cents) * 1e-12 + 1e-9
        distance = np.abs(approx_cents)
        inside = rows & (distance <= 1 - margin)
        outside = rows & (distance >= 1 + margin)
    ok[inside] = True
    ok[outside] = False
    for i in np.flatnonzero(rows & ~inside & ~outside):  # near one cent, or not finite (NaN, inf)
        ok[i] = exact(int(i))


def _order_total_matches(p: Prepared) -> np.ndarray:
    """total == lines_subtotal + total_tax - total_discounts, within one cent.

    A missing ``lines_subtotal`` (an order without lines) counts as 0. Rows where a required
    amount is missing or not a number pass here and fail their presence check instead. Whole cents
    compare as integers; the rest (a SQL SUM on SQLite returns 90.94999999999999) through
    ``_within_one_cent``.
    """
    total, lines, tax, disc = _total_components(p)
    evaluable = ~(
        total.missing | total.invalid | tax.missing | tax.invalid
        | disc.missing | disc.invalid | lines.invalid
    )
    whole = total.whole & tax.whole & disc.whole & (lines.whole | lines.missing)
    lines_cents = np.where(lines.missing, 0, lines.cents)
    ok = np.ones(p.n, dtype=bool)
    fast = evaluable & whole
    diff = total.cents - (lines_cents + tax.cents - disc.cents)
    ok[fast] = np.abs(diff[fast]) <= 1
    lines_value = np.where(lines.missing, 0.0, lines.value)
    with np.errstate(invalid="ignore", over="ignore"):
        approx = (total.value - (lines_value + tax.value - disc.value)) * 100.0
        scale = (np.abs(total.value) + np.abs(lines_value) + np.abs(tax.value) + np.abs(disc.value)) * 100.0

    def exact(i: int) -> bool:
        return abs(EXACT.subtract(total.decimal(i), _expected_total(p, i))) <= ONE_CENT

    _within_one_cent(evaluable & ~whole, approx, scale, exact, ok)
    return ok


def _expected_total(p: Prepared, i: int) -> Decimal:
    _, lines, tax, disc = _total_components(p)
    return EXACT.subtract(EXACT.add(lines.decimal(i) or Decimal(0), tax.decimal(i)), disc.decimal(i))


def _order_total_detail(p: Prepared, i: int) -> str:
    total, lines, tax, disc = _total_components(p)
    expected = _expected_total(p, i)
    return (
        f"total {fmt(total.decimal(i))} != lines_subtotal {fmt(lines.decimal(i) or Decimal(0))} + total_tax "
        f"{fmt(tax.decimal(i))} - total_discounts {fmt(disc.decimal(i))} = {fmt(expected)} "
        f"(off by {fmt(EXACT.subtract(total.decimal(i), expected))})"
    )


_QTY_FAST_LIMIT = float(2**20)
_UNIT_FAST_LIMIT = 2**40


def _line_total_matches(p: Prepared) -> np.ndarray:
    """line_total == quantity * unit_price, within one cent. Rows missing a part pass here and
    fail their presence checks instead."""
    qty = p.frame["quantity"].to_numpy(dtype=np.float64)
    unit, line = p.money["unit_price"], p.money["line_total"]
    evaluable = np.isfinite(qty) & ~(unit.missing | unit.invalid | line.missing | line.invalid)
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(qty) & (np.floor(qty) == qty) & (np.abs(qty) < _QTY_FAST_LIMIT)
    fast = evaluable & integral & unit.whole & line.whole & (np.abs(unit.cents) < _UNIT_FAST_LIMIT)
    ok = np.ones(p.n, dtype=bool)
    q = np.where(fast, qty, 0).astype(np.int64)
    diff = line.cents - q * unit.cents
    ok[fast] = np.abs(diff[fast]) <= 1
    with np.errstate(invalid="ignore", over="ignore"):
        product = qty * unit.value
        approx = (line.value - product) * 100.0
        scale = (np.abs(line.value) + np.abs(product)) * 100.0

    def exact(i: int) -> bool:
        expected = _expected_line_total(p, i)
        return expected is not None and abs(EXACT.subtract(line.decimal(i), expected)) <= ONE_CENT

    _within_one_cent(evaluable & ~fast, approx, scale, exact, ok)
    return ok


def _expected_line_total(p: Prepared, i: int) -> Decimal | None:
    try:
        qty = to_decimal(p.value("quantity", i))
    except ValueError:
        return None
    unit = p.money["unit_price"].decimal(i)
    if qty is None or unit is None:
        return None
    if qty == qty.to_integral_value():  # 2.0 (a float column with a gap) is 2
        qty = qty.to_integral_value()
    return EXACT.multiply(qty, unit)


def _line_total_detail(p: Prepared, i: int) -> str:
    expected = _expected_line_total(p, i)
    line = p.money["line_total"].decimal(i)
    return (
        f"line_total {fmt(line)} != quantity {_short(p.value('quantity', i))} x unit_price "
        f"{fmt(p.money['unit_price'].decimal(i))} = {fmt(expected)}"
    )


def _email_present_when_customer(p: Prepared) -> np.ndarray:
    return (p.frame["customer_id"].isna() | p.frame["email"].notna()).to_numpy(dtype=bool)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def _ids(col: str) -> tuple[Check, ...]:
    return (present(col), unique(col))


def _email(required: bool) -> tuple[Check, ...]:
    well_formed = matches("email", EMAIL_REGEX, "email_well_formed", "a well-formed email address")
    return ((present("email"),) if required else ()) + (well_formed,)


def _amounts(*cols: str, optional: tuple[str, ...] = (), computed: tuple[str, ...] = ()) -> tuple[Check, ...]:
    """Stored amounts must be present (``optional`` ones may be null), not negative and whole
    cents. ``computed`` amounts (a SQL ``SUM``, like ``lines_subtotal``) are only checked for sign:
    SQLite sums REAL money into floats such as 90.94999999999999, which is not bad data; their
    agreement with the other amounts is the total match's job, within one cent."""
    checks: list[Check] = []
    for col in cols:
        checks += [present(col), non_negative(col), fits_cents(col)]
    for col in optional:
        checks += [non_negative(col), fits_cents(col)]
    for col in computed:
        checks += [non_negative(col)]
    return tuple(checks)


def _currency() -> tuple[Check, ...]:
    return (
        present("currency"),
        in_set("currency", KNOWN_CURRENCIES, "currency_known", "a known ISO 4217 currency code"),
    )


def _timestamps() -> tuple[Check, ...]:
    return (
        present("created_at"),
        present("updated_at"),
        not_in_future("created_at"),
        not_in_future("updated_at"),
        not_before("updated_at", "created_at"),
    )


def _url(col: str) -> Check:
    return matches(col, HTTP_URL_REGEX, f"{col}_is_http", "an absolute http(s) URL")


ORDERS = EntitySpec(
    entity="orders",
    id_column="order_id",
    description="One row per order, with its lines' subtotal computed in SQL.",
    money=("subtotal", "total_tax", "total_discounts", "total", "lines_subtotal"),
    dates=("created_at", "updated_at"),
    checks=(
        *_ids("order_id"),
        *_email(required=True),
        present("status"),
        in_set("status", ORDER_STATUSES, "status_known", "a known order status"),
        *_currency(),
        *_amounts("subtotal", "total_tax", "total_discounts", "total", computed=("lines_subtotal",)),
        derived(
            "order_total_matches",
            "`total` equals `lines_subtotal + total_tax - total_discounts` within one cent (an order "
            "without lines counts as a 0 lines subtotal). Helper column `_order_total_matches`, exact "
            "in integer cents / Decimal.",
            ("total", "lines_subtotal", "total_tax", "total_discounts"),
            _order_total_matches,
            _order_total_detail,
        ),
        *_timestamps(),
    ),
)

ORDER_LINES = EntitySpec(
    entity="order_lines",
    id_column="line_id",
    description="One row per order line, with SQL-computed flags saying its order and product exist.",
    money=("unit_price", "line_total"),
    numbers=("quantity",),
    flags=("order_exists", "product_exists"),
    checks=(
        *_ids("line_id"),
        present("order_id"),
        in_set("order_exists", (1,), "order_exists", "1 (the line's order exists in the warehouse)",
               failure="the line's order does not exist in the warehouse"),
        in_set("product_exists", (1,), "product_exists", "1 (the line's product exists in the warehouse)",
               failure="the line's product does not exist in the warehouse"),
        present("quantity"),
        at_least("quantity", 1, "quantity_at_least_one"),
        *_amounts("unit_price", "line_total"),
        derived(
            "line_total_matches",
            "`line_total` equals `quantity * unit_price` within one cent. Helper column "
            "`_line_total_matches`, exact in integer cents / Decimal.",
            ("quantity", "unit_price", "line_total"),
            _line_total_matches,
            _line_total_detail,
        ),
    ),
)

PRODUCTS = EntitySpec(
    entity="products",
    id_column="product_id",
    description="One row per product.",
    money=("price", "compare_at_price"),
    dates=("created_at", "updated_at"),
    checks=(
        *_ids("product_id"),
        present("sku"),
        present("url"),
        _url("url"),
        present("image_url"),
        _url("image_url"),
        *_amounts("price", optional=("compare_at_price",)),
        *_timestamps(),
    ),
)

CUSTOMERS = EntitySpec(
    entity="customers",
    id_column="customer_id",
    description="One row per customer.",
    dates=("created_at", "updated_at"),
    checks=(
        *_ids("customer_id"),
        *_email(required=True),
        *_timestamps(),
    ),
)

CHECKOUTS = EntitySpec(
    entity="checkouts",
    id_column="checkout_id",
    description="One row per checkout (cart), with its lines' subtotal computed in SQL.",
    money=("subtotal", "total_tax", "total", "lines_subtotal"),
    dates=("created_at", "updated_at"),
    checks=(
        *_ids("checkout_id"),
        derived(
            "email_present_when_customer",
            "A checkout with a `customer_id` has an email. Guest checkouts may have none. Helper "
            "column `_email_present_when_customer`.",
            ("customer_id", "email"),
            _email_present_when_customer,
            lambda p, i: "email is missing although the checkout has a customer_id",
        ),
        *_email(required=False),
        _url("checkout_url"),
        *_currency(),
        *_amounts("subtotal", "total_tax", "total", computed=("lines_subtotal",)),
        *_timestamps(),
    ),
)

def _cart_present_when_added(p: Prepared) -> np.ndarray:
    return (p.frame["event_name"].ne("added_to_cart") | p.frame["cart_id"].notna()).to_numpy(dtype=bool)


SITE_EVENTS = EntitySpec(
    entity="site_events",
    id_column="event_id",
    description="One row per storefront event (product viewed, added to cart), as the tracker's tables "
                "hold them. Events with no email are not bad data (anonymous browsing): the sync skips them.",
    money=("price", "cart_total"),
    numbers=("quantity",),
    dates=("occurred_at",),
    checks=(
        *_ids("event_id"),
        present("event_name"),
        present("occurred_at"),
        not_in_future("occurred_at"),
        *_email(required=False),
        present("product_id"),
        derived(
            "cart_present_when_added",
            "An `added_to_cart` event names its cart (`cart_id`): Sendlane keys the cart by it. Helper "
            "column `_cart_present_when_added`.",
            ("event_name", "cart_id"),
            _cart_present_when_added,
            lambda p, i: "cart_id is missing on an added_to_cart event",
        ),
        at_least("quantity", 1, "quantity_at_least_one"),
        *_amounts(optional=("price", "cart_total")),
    ),
)

REGISTRY: dict[str, EntitySpec] = {
    spec.entity: spec for spec in (ORDERS, ORDER_LINES, PRODUCTS, CUSTOMERS, CHECKOUTS, SITE_EVENTS)
}
ENTITIES: tuple[str, ...] = tuple(REGISTRY)


def spec_for(entity: str) -> EntitySpec:
    try:
        return REGISTRY[entity]
    except KeyError:
        raise KeyError(f"no expectation suite for entity {entity!r}; known: {', '.join(ENTITIES)}") from None


__all__ = [
    "Check",
    "EntitySpec",
    "ENTITIES",
    "EMAIL_REGEX",
    "HTTP_URL_REGEX",
    "ORDER_STATUSES",
    "Prepared",
    "REGISTRY",
    "ROW_ID",
    "spec_for",
]
