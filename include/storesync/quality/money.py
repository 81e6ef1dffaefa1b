"""Exact money: every value as a whole number of cents, or a flag saying it is not one.

Money arrives as ``Decimal`` objects (NUMERIC columns) or as floats. Both are judged exactly:

* a ``Decimal`` by its exact value (``as_integer_ratio``), so ``19.990000000000000001`` is *not*
  whole cents even though it is within a float's reach of ``19.99``;
* a float by the decimal it stands for, its shortest repr (``19.99``, not the binary
  ``19.989999999999998436805981327779591083526611328125``). Vectorised: ``x`` stands for a
  2-decimal amount exactly when ``rint(x * 100) / 100 == x``, because IEEE division is
  correctly rounded, so ``c / 100`` is the float nearest to the decimal ``c/100`` that ``x``
  must be.

Integer cents make the arithmetic checks (totals within one cent) exact and vectorised; the rare
rows that are not whole cents fall back to ``Decimal`` arithmetic at high precision.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

MAX_CENTS = 10**9
"""Amounts must stay below this many cents (10 million currency units): a sane ceiling for one
order, line or price, and far inside the warehouse's NUMERIC(12,2)."""

_FLOAT_EXACT = float(2**53)
_CENTS_LIMIT = 2**53
EXACT = decimal.Context(prec=200)  # enough digits that sums of warehouse amounts never round


def to_decimal(value: Any) -> Decimal | None:
    """The exact decimal a money value stands for; ``None`` when missing.

    Raises ``ValueError`` for a value that is present but not a finite number ("abc", inf, True).
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():  # NaN (PostgreSQL NUMERIC has one) or infinity
            raise ValueError("not a finite number")
        return value
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("a boolean is not an amount")
    if isinstance(value, (float, np.floating)):
        if value != value:  # NaN
            return None
        if value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        return Decimal(repr(float(value)))
    if isinstance(value, (int, np.integer)):
        return Decimal(int(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = Decimal(text)
        except decimal.InvalidOperation:
            raise ValueError("not a number") from None
        if not parsed.is_finite():
            raise ValueError("not a finite number")
        return parsed
    raise ValueError(f"a {type(value).__name__} is not an amount")


@dataclass(frozen=True)
class Money:
    """One money column, parsed. Arrays are aligned with the batch's rows."""

    name: str
    source: pd.Series
    value: np.ndarray  # float64, NaN when missing or not a number: what GX's range checks see
    missing: np.ndarray  # bool: null
    invalid: np.ndarray  # bool: present but not a finite number
    whole: np.ndarray  # bool: exactly a whole number of cents (and below 2**53 cents)
    cents: np.ndarray  # int64: the cents where ``whole``, else 0

    @property
    def fits(self) -> np.ndarray:
        """Whole cents and below ``MAX_CENTS`` in size."""
        return self.whole & (np.abs(self.cents) < MAX_CENTS)

    def decimal(self, position: int) -> Decimal | None:
        """The exact value at a row position (``None`` when missing or not a number)."""
        try:
            return to_decimal(self.source.iat[position])
        except ValueError:
            return None


def parse_money(name: str, series: pd.Series) -> Money:
    n = len(series)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        x = series.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(x)
        finite = np.isfinite(x)
        invalid = ~missing & ~finite
        with np.errstate(invalid="ignore", over="ignore"):
            c = np.rint(np.where(finite, x, 0.0) * 100.0)
            whole = finite & (np.abs(c) < _FLOAT_EXACT) & (c / 100.0 == x)
        cents = np.where(whole, c, 0.0).astype(np.int64)
        value = np.where(finite, x, np.nan)
        return Money(name, series, value, missing, invalid, whole, cents)

    values = series.to_numpy(dtype=object)
    # Fast pass: finite Decimals that are whole cents (nearly every value), via a comprehension
    # (Decimals have no vectorised form; ~0.6 s per million). Cents below 2**53 are exact floats.
    fast = np.array([_whole_decimal_cents(v) for v in values], dtype=np.float64)
    whole = ~np.isnan(fast)
    cents = np.where(whole, fast, 0.0).astype(np.int64)
    value = cents / 100.0  # the float nearest the exact amount, as float(d) gives
    missing = np.zeros(n, dtype=bool)
    invalid = np.zeros(n, dtype=bool)
    # Slow pass: everything else (missing, floats, ints, strings, fractions of a cent, junk).
    for i in np.flatnonzero(~whole).tolist():
        try:
            d = to_decimal(values[i])
        except ValueError:
            invalid[i] = True
            value[i] = np.nan
            continue
        if d is None:
            missing[i] = True
            value[i] = np.nan
            continue
        c = _exact_cents(d)
        if c is not None:
            whole[i] = True
            cents[i] = c
            value[i] = c / 100.0
        else:
            value[i] = float(d)
    return Money(name, series, value, missing, invalid, whole, cents)


def _whole_decimal_cents(value: Any) -> int | None:
    if type(value) is Decimal and value.is_finite() and -60 < value.adjusted() < 20:
        num, den = value.as_integer_ratio()
        num *= 100
        if num % den == 0:
            c = num // den
            if -_CENTS_LIMIT < c < _CENTS_LIMIT:
                return c
    return None


def _exact_cents(d: Decimal) -> int | None:
    """``d`` in cents when it is a whole number of them (and below 2**53), else ``None``."""
    if not d:
        return 0
    if not -60 < d.adjusted() < 20:  # absurd sizes: never whole cents below the maximum
        return None
    num, den = d.as_integer_ratio()
    num *= 100
    if num % den:
        return None
    c = num // den
    return c if -_CENTS_LIMIT < c < _CENTS_LIMIT else None


def fmt(value: Decimal | None) -> str:
    return "missing" if value is None else format(value, "f")
