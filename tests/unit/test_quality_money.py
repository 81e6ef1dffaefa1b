"""Exact cents for the quality gate: Decimals by their exact value, floats by the decimal they stand for."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from storesync.quality.money import MAX_CENTS, parse_money, to_decimal
from storesync.quality.serialize import dumps, jsonable, native


def parsed(values, dtype=object):
    return parse_money("amount", pd.Series(values, dtype=dtype))


def test_decimals_are_judged_by_their_exact_value():
    m = parsed([Decimal("19.99"), Decimal("19.990"), Decimal("19.995"), Decimal("19.990000000000000001"),
                Decimal("-0.01"), Decimal("0E-7"), Decimal("1E+2")])
    assert m.whole.tolist() == [True, True, False, False, True, True, True]
    assert m.cents[m.whole].tolist() == [1999, 1999, -1, 0, 10000]
    # A float cannot tell 19.990000000000000001 from 19.99; the gate can.
    assert float(Decimal("19.990000000000000001")) == 19.99


def test_floats_are_judged_by_the_decimal_they_stand_for():
    values = [19.99, 0.1 + 0.2, 0.3, 19.995, 1e-3, 1234567.89, -5.1, 2.675]
    m = parsed(values, dtype=np.float64)
    # 0.1 + 0.2 is 0.30000000000000004: a float that stands for no 2-decimal amount.
    assert m.whole.tolist() == [True, False, True, False, False, True, True, False]
    assert m.cents[m.whole].tolist() == [1999, 30, 123456789, -510]


def test_vectorised_float_path_agrees_with_decimal_repr_everywhere():
    rng = np.random.default_rng(7)
    cents = rng.integers(-10**11, 10**11, 20_000)
    floats = np.concatenate([cents / 100, rng.uniform(-1e6, 1e6, 5_000), cents[:5_000] / 1000])
    m = parsed(floats, dtype=np.float64)
    for x, whole, c in zip(floats, m.whole, m.cents):
        d = Decimal(repr(float(x)))
        expected = (d * 100) == (d * 100).to_integral_value()
        assert whole == expected, x
        if whole:
            assert Decimal(int(c)) / 100 == d


def test_missing_invalid_and_other_types():
    m = parsed([None, np.nan, pd.NA, Decimal("NaN"), "abc", "  ", "12.50", 7, True, float("inf"),
                Decimal("Infinity")])
    assert m.missing.tolist() == [True, True, True, False, False, True, False, False, False, False, False]
    assert m.invalid.tolist() == [False, False, False, True, True, False, False, False, True, True, True]
    assert m.whole.tolist() == [False] * 6 + [True, True] + [False] * 3
    assert m.cents[6:8].tolist() == [1250, 700]


def test_fits_requires_whole_cents_below_the_maximum():
    m = parsed([Decimal(MAX_CENTS - 1) / 100, Decimal(MAX_CENTS) / 100, Decimal("-9999999.99"),
                Decimal("1E+30")])
    assert m.fits.tolist() == [True, False, True, False]


def test_float_values_for_gx_are_the_nearest_floats():
    m = parsed([Decimal("19.99"), Decimal("0.015"), None])
    assert m.value[0] == 19.99 and m.value[1] == 0.015 and np.isnan(m.value[2])


def test_to_decimal():
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal(np.float64(2.5)) == Decimal("2.5")
    assert to_decimal(np.int64(3)) == Decimal(3)
    assert to_decimal(" 4.20 ") == Decimal("4.20")
    assert to_decimal(None) is None and to_decimal(float("nan")) is None
    for bad in ("x", True, float("inf"), object()):
        with pytest.raises(ValueError):
            to_decimal(bad)


def test_json_is_exact_and_safe():
    row = {
        "total": Decimal("19.90"),
        "at": pd.Timestamp("2025-01-02 03:04:05"),
        "d": dt.date(2025, 1, 2),
        "n": np.int64(5),
        "f": np.float64("nan"),
        "flag": np.bool_(True),
        "none": pd.NaT,
        "list": [Decimal("1.5"), None],
    }
    assert json.loads(dumps(row)) == {
        "total": "19.90", "at": "2025-01-02T03:04:05", "d": "2025-01-02", "n": 5, "f": None,
        "flag": True, "none": None, "list": ["1.5", None],
    }
    assert native(np.int64(3)) == 3 and type(native(np.int64(3))) is int
    assert jsonable(Decimal("1E+2")) == "100"
