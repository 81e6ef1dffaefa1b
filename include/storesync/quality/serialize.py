"""Turning batch values into plain Python and into JSON, exactly (Decimals as strings)."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd


def native(value: Any) -> Any:
    """A batch cell as a plain Python value: numpy scalars unwrapped, Timestamps as datetimes,
    every kind of missing (NaN, NaT, NA) as ``None``. Decimals stay Decimals."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def jsonable(value: Any) -> Any:
    """A value JSON can hold without losing money precision: Decimal -> "19.99", datetimes ->
    ISO 8601, NaN/inf -> null, numpy and pandas scalars unwrapped, containers recursed."""
    value = native(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(jsonable(value), allow_nan=False, ensure_ascii=False, **kwargs)
