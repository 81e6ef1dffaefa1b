"""Customer lifetime value per customer_id: historic (in the warehouse) and predicted (BG/NBD + Gamma-Gamma).

Never imports Airflow. Read through the view ``storesync_customer_ltv``: one row per (as_of,
customer_id) for every computed day. Behind it (``storesync.ltv.tables``, created when missing):
versions of each customer's historic figures (a day writes only the customers whose figures
moved), the runs (one row per computed day), the predictions per (as_of, customer_id) and
``storesync_ltv_models`` (fitted parameters, one row per as_of). One run per day: ``as_of`` is
the run's logical date; rerunning a date gives the same rows.

Definitions (as of ``as_of``)
-----------------------------
* **Cutoff**: orders count when ``created_at < as_of + 1 day`` (midnight, in the warehouse's own
  naive timestamps): ``as_of`` is inclusive, to the end of the day. Calendar days (tenure, RFM)
  are the dates of those timestamps (for a PostgreSQL ``timestamptz`` column: in the session's
  TimeZone). ``as_of`` may be a date, a datetime (its date) or an ISO string (Airflow's ``ds``).
* **As-of status**: the status of the latest ``order_status_history`` row with
  ``changed_at <`` cutoff (ties broken by the larger ``history_id``). An order without a history
  row by the cutoff takes ``orders.status`` if it has no history at all, else ``initial_status``
  ("pending": its history starts later). So a backfilled day gives the numbers a run on that day
  gave, whatever happened since; with ``status_history=None`` the current status is used instead.
  Only orders with a history row at or after the cutoff are looked up in the history: for every
  other order ``orders.status`` *is* its status after its last change (the orders model must keep
  the current status, as a store's orders table does), so the query is one scan of ``orders``
  plus index lookups for the few orders changed since.
* **Valid order**: as-of status not in ``excluded_statuses`` (default ``failed``) nor in
  ``reversed_statuses`` (default ``cancelled``, ``refunded``). Pending and processing orders are
  valid: they were placed and not (yet) reversed.
* ``order_count``: number of valid orders.
* ``gross_revenue``: sum of ``total`` over orders whose as-of status is not ``failed`` (i.e.
  valid + cancelled + refunded orders).
* ``net_revenue``: gross minus the totals of orders whose as-of status is cancelled or refunded
  (= sum of ``total`` over valid orders). Whole-order reversals only: the schema has no partial
  refund amounts.
* ``avg_order_value``: net_revenue / order_count (NULL when 0). Money rounded to cents.
* ``first_order_at`` / ``last_order_at``: first and last ``created_at`` among non-failed orders;
  ``tenure_days``: whole calendar days from the first such order's date to ``as_of``.
* A row exists for every customer with at least one order created by the cutoff (customers
  whose orders all failed get zeros and NULL dates); orders without customer_id are ignored.

RFM summary (for the models; columns ``rfm_*`` of the LTV table, in whole days)
------------------------------------------------------------------------------
Over **valid** orders, grouped by calendar purchase day as ``lifetimes``'
``summary_data_from_transaction_data(freq="D")`` does: ``frequency`` = distinct purchase days - 1
(repeat purchase days), ``recency`` = last purchase day - first purchase day, ``T`` = as_of - first
purchase day, ``monetary`` = mean of the per-day totals over the repeat days (the first day
excluded; 0 without repeats). NULL for customers without any valid purchase. The models use
time unit ``time_unit_days`` (default **7: weeks**, the unit of the CDNOW literature; 1 = days):
recency and T are divided by it, exactly like lifetimes' ``freq="D", freq_multiplier=7``.

Predictions (``predict_ltv``; columns of the LTV table)
-------------------------------------------------------
BG/NBD and Gamma-Gamma (Fader, Hardie & Lee 2005) fitted by maximum likelihood in
``storesync.ltv.models``; then, over ``horizon_days`` (default 365): ``expected_purchases`` =
E[purchases in (as_of, as_of + horizon]], ``p_alive``, ``expected_aov`` = Gamma-Gamma E[order
value] (population mean for one-time buyers), ``predicted_clv`` = expected_aov x expected
purchases, optionally discounted at ``discount_rate`` per ``discount_period_days`` (default 30;
cash at each period's end; default rate 0 = undiscounted). Revenue, not margin: multiply by
your margin for profit CLV. NULL for customers without a valid purchase. Only histograms of the
RFM summary leave the database (memory O(distinct RFM rows) <= O(customers)); the predictions go
back in one INSERT ... SELECT join. ``LtvFitError`` when the models cannot be fitted (no repeat
buyer yet, no convergence: try ``penalizer=0.001``).

Reruns
------
Rerunning a date gives the same numbers (predictions are deterministic: histograms are read in
a fixed order) and leaves every other date as it was: the historic step writes the date's
figures for the customers whose figures differ, the days after it keep theirs; the prediction
step replaces the date's predictions. After correcting old orders in place, rerun both steps
(``incremental=False`` for the historic one) for each date to correct.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storesync.ltv.historic import OrderSource
    from storesync.ltv.predicted import LtvModelFit

# Imported on first use (PEP 562): `storesync ltv --help` and the settings need none of numpy,
# scipy or SQLAlchemy.
_LAZY = {
    "storesync.ltv.historic": ("OrderSource", "RfmSummary", "as_of_cutoff", "compute_historic_ltv",
                               "historic_ltv_select", "ltv_index_available", "rfm_summary"),
    "storesync.ltv.models": ("BgNbdParams", "GammaGammaParams", "LtvFitError", "clv", "discounted_purchases",
                             "fit_bgnbd", "fit_gamma_gamma"),
    "storesync.ltv.predicted": ("LtvModelFit", "fit_ltv_models", "predict_ltv"),
    "storesync.ltv.profile": ("PROFILE_FIELDS", "ltv_profile_fields"),
    "storesync.ltv.tables": ("LTV_TABLE", "MODELS_TABLE", "ensure_ltv_tables"),
    "storesync.ltv.job": ("LtvJobReport", "run_ltv_job"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'storesync.ltv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "LTV_TABLE",
    "MODELS_TABLE",
    "PROFILE_FIELDS",
    "BgNbdParams",
    "GammaGammaParams",
    "LtvFitError",
    "LtvJobReport",
    "LtvModelFit",
    "LtvRun",
    "OrderSource",
    "RfmSummary",
    "as_of_cutoff",
    "clv",
    "compute_historic_ltv",
    "discounted_purchases",
    "ensure_ltv_tables",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_ltv_models",
    "historic_ltv_select",
    "ltv_index_available",
    "ltv_profile_fields",
    "predict_ltv",
    "rfm_summary",
    "run_ltv",
    "run_ltv_job",
]

@dataclass(frozen=True)
class LtvRun:
    """What run_ltv did: rows upserted by the historic step, and the model fit (None: not predicted)."""

    rows_historic: int
    fit: LtvModelFit | None


def run_ltv(
    engine, as_of, source: OrderSource | None = None, *, predict: bool = True, incremental: bool = True,
    **predict_options,
) -> LtvRun:
    """The daily job: ``compute_historic_ltv`` (``incremental``: from the day before when it was
    computed) then (unless ``predict=False``) ``predict_ltv`` with ``predict_options``
    (horizon_days, time_unit_days, discount_rate, discount_period_days, penalizer). Each step is
    its own transaction; LtvFitError propagates (e.g. no repeat buyers yet)."""
    from storesync.ltv.historic import compute_historic_ltv
    from storesync.ltv.predicted import predict_ltv

    rows = compute_historic_ltv(engine, as_of, source, incremental=incremental)
    fit = predict_ltv(engine, as_of, **predict_options) if predict else None
    return LtvRun(rows, fit)
