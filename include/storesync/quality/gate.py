"""The data-quality gate: validate one extracted batch, split it into passed and quarantined rows.

``validate_batch`` runs the entity's expectation suite (``storesync.quality.checks``) in Great
Expectations 1.x, in an ephemeral context shared by the whole process, on a pandas DataFrame as a
single batch. Result format is COMPLETE with ``unexpected_index_column_names=["_row"]``: every
failing expectation lists the failing rows' positions, and each row is keyed on its position in
the batch, which is then mapped to the entity id. (Keying on the entity id itself would be
ambiguous exactly when it matters: duplicate ids, missing ids.) ``exclude_unexpected_values`` is
on, so GX's results never carry row values: no email address reaches the results JSON or the
Data Docs. The quarantined rows themselves carry the row, for the quarantine store.

A row failing several checks is quarantined once, with every reason. A uniqueness failure
quarantines every row sharing the id. Rows are never dropped: ``rows_in == rows_passed +
rows_quarantined`` is checked and a mismatch raises ``ValidationIncompleteError``.

GX is imported lazily, on the first validation in a process (~5 s), never at import time.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from storesync.quality.checks import ROW_ID, EntitySpec, Prepared, spec_for
from storesync.quality.errors import QualityGateError, ValidationIncompleteError
from storesync.quality.serialize import jsonable, native

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

log = logging.getLogger(__name__)

RESULTS_INDEX_LIMIT = 1000
"""At most this many failing rows are listed per expectation in ``outcome.results`` (and so in
the stored results and Data Docs); the quarantine store holds them all."""

RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "exclude_unexpected_values": True,
}

DEFAULT_MAX_SHARE = 0.05
"""Share of quarantined rows above which ``check_threshold`` stops a batch when the thresholds
name neither the entity nor ``"*"``."""

CHECK_META_KEY = "storesync_check"


# --------------------------------------------------------------------------------------------
# Outcome
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinedRow:
    """A row held back from sending, with every reason (``"<check name>: <detail>"``)."""

    entity: str
    entity_id: Any
    reasons: list[str]
    row: dict[str, Any]

    @property
    def checks(self) -> list[str]:
        """The names of the checks the row failed, in suite order."""
        return [reason.split(":", 1)[0] for reason in self.reasons]


@dataclass(frozen=True)
class ValidationOutcome:
    entity: str
    run_id: str
    batch_id: str
    now: dt.datetime
    suite_name: str
    passed: pd.DataFrame
    quarantined: list[QuarantinedRow]
    rows_in: int
    results: dict[str, Any] = field(repr=False)
    validated_at: dt.datetime
    seconds: float

    def __post_init__(self) -> None:
        if self.rows_in != self.rows_passed + self.rows_quarantined:
            raise ValidationIncompleteError(
                f"{self.entity} batch {self.batch_id}: {self.rows_in} rows in but {self.rows_passed} passed "
                f"+ {self.rows_quarantined} quarantined; refusing to lose rows"
            )

    @property
    def id_column(self) -> str:
        return spec_for(self.entity).id_column

    @property
    def rows_passed(self) -> int:
        return len(self.passed)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)

    @property
    def share(self) -> float:
        """Share of the batch quarantined (0.0 for an empty batch)."""
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    @property
    def success(self) -> bool:
        return not self.quarantined

    def reason_counts(self) -> Counter[str]:
        """Quarantined rows per check name (a row failing two checks counts under both)."""
        return Counter(check for row in self.quarantined for check in row.checks)

    def passed_ids(self) -> list[Any]:
        return [_entity_id(v) for v in self.passed[self.id_column].tolist()]

    def summary(self) -> dict[str, Any]:
        """Counts only, no row values: safe to log and to push to XCom."""
        return {
            "entity": self.entity,
            "run_id": self.run_id,
            "batch_id": self.batch_id,
            "rows_in": self.rows_in,
            "rows_passed": self.rows_passed,
            "rows_quarantined": self.rows_quarantined,
            "share": self.share,
            "reasons": dict(self.reason_counts().most_common()),
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------------------------
# Great Expectations, lazily
# --------------------------------------------------------------------------------------------


class _GXRuntime:
    """One ephemeral GX context per process, with a pandas data source, one DataFrame asset and
    whole-DataFrame batch definition per entity, and the entity suites built from the registry."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.source = self.context.data_sources.add_pandas("storesync")
        self.lock = threading.Lock()
        self._batch_definitions: dict[str, Any] = {}
        self._suites: dict[str, ExpectationSuite] = {}

    def batch_definition(self, entity: str) -> Any:
        if entity not in self._batch_definitions:
            asset = self.source.add_dataframe_asset(name=entity)
            self._batch_definitions[entity] = asset.add_batch_definition_whole_dataframe(f"{entity}_batch")
        return self._batch_definitions[entity]

    def suite(self, spec: EntitySpec) -> ExpectationSuite:
        if spec.entity not in self._suites:
            self._suites[spec.entity] = self.context.suites.add(build_suite(spec))
        return self._suites[spec.entity]


@lru_cache(maxsize=1)
def gx_runtime() -> _GXRuntime:
    """The process's GX context (created, and GX imported, on first use)."""
    started = time.perf_counter()
    runtime = _GXRuntime()
    log.info("great expectations ready in %.1f s", time.perf_counter() - started)
    return runtime


def build_suite(spec: EntitySpec) -> ExpectationSuite:
    """The entity's ``ExpectationSuite``, one expectation per registry check, in order."""
    import great_expectations as gx

    expectations = []
    for check in spec.checks:
        expectation_class = getattr(gx.expectations, check.expectation)
        expectations.append(
            expectation_class(
                **check.kwargs, meta={CHECK_META_KEY: check.name}, description=check.description
            )
        )
    return gx.ExpectationSuite(
        name=spec.suite_name,
        expectations=expectations,
        meta={"notes": f"storesync data-quality gate for {spec.entity}. {spec.description}".strip()},
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    if isinstance(moment, pd.Timestamp):
        moment = moment.to_pydatetime()
    if not isinstance(moment, dt.datetime):
        raise TypeError(f"now must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def validate_batch(
    entity: str,
    df: pd.DataFrame,
    *,
    run_id: str,
    batch_id: str,
    now: dt.datetime,
) -> ValidationOutcome:
    """Validate one batch of ``entity`` rows against its suite.

    ``now`` is the run's reference time for "not in the future" (naive UTC; an aware datetime is
    converted). Raises ``ValidationIncompleteError`` when the batch lacks a column the suite reads,
    when an expectation cannot be evaluated, or when the rows do not add up.
    """
    spec = spec_for(entity)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_batch expects a pandas DataFrame, not {type(df).__name__}")
    missing = [col for col in spec.reads if col not in df.columns]
    if missing:
        raise ValidationIncompleteError(f"{entity} batch {batch_id} lacks columns the suite reads: {missing}")
    now = _naive_utc(now)
    started = time.perf_counter()
    validated_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    prepared = Prepared(spec, df, now)
    runtime = gx_runtime()
    with runtime.lock, _configurations_built_once():
        batch = runtime.batch_definition(entity).get_batch(batch_parameters={"dataframe": prepared.frame})
        result = batch.validate(
            runtime.suite(spec), result_format=RESULT_FORMAT, expectation_parameters={"now": now}
        )

    failing = _failing_positions(spec, result, prepared.n, batch_id)
    quarantined, bad = _quarantine(spec, prepared, failing)
    passed = df.iloc[np.flatnonzero(~bad)]

    _trim_results(spec, prepared, result, failing)
    results = result.to_json_dict()
    outcome_meta = {
        "entity": entity,
        "run_id": run_id,
        "batch_id": batch_id,
        "now": now.isoformat(),
        "validated_at": validated_at.isoformat(),
        "rows_in": prepared.n,
        "rows_passed": len(passed),
        "rows_quarantined": len(quarantined),
    }
    meta = results.setdefault("meta", {})
    meta["storesync"] = outcome_meta
    # What Data Docs show as the run and the data asset.
    meta["run_id"] = {"run_name": run_id, "run_time": now.replace(tzinfo=dt.UTC).isoformat()}
    meta.setdefault("batch_spec", {})["data_asset_name"] = f"{entity} (batch {batch_id})"

    outcome = ValidationOutcome(
        entity=entity,
        run_id=run_id,
        batch_id=batch_id,
        now=now,
        suite_name=spec.suite_name,
        passed=passed,
        quarantined=quarantined,
        rows_in=prepared.n,
        results=jsonable(results),
        validated_at=validated_at,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "quality gate %s batch %s: %d in, %d passed, %d quarantined (%.2f%%) in %.2f s",
        entity, batch_id, outcome.rows_in, outcome.rows_passed, outcome.rows_quarantined,
        100 * outcome.share, outcome.seconds,
    )
    return outcome


@contextmanager
def _configurations_built_once():
    """Within one validation, each expectation's ``configuration`` is built once.

    GX 1.x rebuilds it (a pydantic ``dict()`` round trip) on every access, thousands of times per
    validation: half the CPU of a small batch, the hourly run's case. Nothing changes an
    expectation while a batch validates (under the runtime's lock), so the first build stands.
    The cache holds each expectation itself, so no id is reused while it lives."""
    from great_expectations.expectations.expectation import Expectation

    original = Expectation.__dict__["configuration"]
    built: dict[int, tuple[Any, Any]] = {}

    def configuration(self):
        entry = built.get(id(self))
        if entry is None or entry[0] is not self:
            entry = built[id(self)] = (self, original.fget(self))
        return entry[1]

    Expectation.configuration = property(configuration)
    try:
        yield
    finally:
        Expectation.configuration = original


def _failing_positions(spec: EntitySpec, result: Any, n: int, batch_id: str) -> dict[str, np.ndarray]:
    """Row positions failing each check, read from each expectation's ``unexpected_index_list``."""
    failing: dict[str, np.ndarray] = {}
    for expectation_result in result.results:
        config = expectation_result.expectation_config
        name = (config.meta or {}).get(CHECK_META_KEY)
        if name is None:
            raise ValidationIncompleteError(f"{spec.entity}: a result without a check name ({config.type})")
        problem = _exception_message(expectation_result.exception_info)
        if problem is not None:
            raise ValidationIncompleteError(
                f"{spec.entity} batch {batch_id}: expectation {name} could not be evaluated: {problem}"
            )
        res = expectation_result.result or {}
        if res.get("element_count", n) != n:
            raise ValidationIncompleteError(
                f"{spec.entity} batch {batch_id}: {name} saw {res.get('element_count')} rows of {n}"
            )
        positions = _positions(res.get("unexpected_index_list") or [])
        expected = res.get("unexpected_count") or 0
        if positions.size != expected or (positions.size and (positions.min() < 0 or positions.max() >= n)):
            raise ValidationIncompleteError(
                f"{spec.entity} batch {batch_id}: {name} reported {expected} failing rows but listed "
                f"{positions.size} valid row ids"
            )
        if not expectation_result.success and positions.size == 0:
            raise ValidationIncompleteError(
                f"{spec.entity} batch {batch_id}: {name} failed without naming a failing row"
            )
        if name in failing:
            raise ValidationIncompleteError(f"{spec.entity}: check {name} reported twice")
        failing[name] = np.unique(positions)
    missing = [check.name for check in spec.checks if check.name not in failing]
    if missing:
        raise ValidationIncompleteError(f"{spec.entity} batch {batch_id}: no result for checks {missing}")
    return failing


def _exception_message(info: Any) -> str | None:
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        return str(info.get("exception_message") or "unknown error") if info.get("raised_exception") else None
    if isinstance(info, Mapping):  # one entry per metric
        for value in info.values():
            if not isinstance(value, Mapping):
                value = getattr(value, "to_json_dict", dict)()
            message = _exception_message(value)
            if message:
                return message
        return None
    if getattr(info, "raised_exception", False):
        return str(getattr(info, "exception_message", "unknown error"))
    return None


def _positions(index_list: list[Any]) -> np.ndarray:
    """Row positions from GX's ``unexpected_index_list``: ``[{"_row": [..]}]`` with
    ``exclude_unexpected_values``, ``[{"_row": 3, ...}, ...]`` without."""
    chunks: list[np.ndarray] = []
    for entry in index_list:
        value = entry[ROW_ID] if isinstance(entry, Mapping) else entry
        chunks.append(np.asarray(value, dtype=np.int64).reshape(-1))
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


def _entity_id(value: Any) -> Any:
    value = native(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _quarantine(
    spec: EntitySpec, prepared: Prepared, failing: dict[str, np.ndarray]
) -> tuple[list[QuarantinedRow], np.ndarray]:
    n = prepared.n
    bad = np.zeros(n, dtype=bool)
    order = {check.name: k for k, check in enumerate(spec.checks)}
    pos_parts, check_parts = [], []
    for name, positions in failing.items():
        if positions.size:
            bad[positions] = True
            pos_parts.append(positions)
            check_parts.append(np.full(positions.size, order[name], dtype=np.int64))
    if not pos_parts:
        return [], bad
    positions = np.concatenate(pos_parts)
    check_idx = np.concatenate(check_parts)
    sort = np.lexsort((check_idx, positions))
    positions, check_idx = positions[sort], check_idx[sort]
    bad_positions, starts = np.unique(positions, return_index=True)
    ends = np.append(starts[1:], positions.size)

    source = prepared.source
    records = source.iloc[bad_positions].to_dict("records")
    ids = source[spec.id_column].iloc[bad_positions].tolist()
    checks = spec.checks
    quarantined = []
    for k, position in enumerate(bad_positions.tolist()):
        reasons = [checks[c].explain(prepared, position) for c in check_idx[starts[k] : ends[k]].tolist()]
        row = {str(col): native(value) for col, value in records[k].items()}
        quarantined.append(QuarantinedRow(spec.entity, _entity_id(ids[k]), reasons, row))
    return quarantined, bad


def _trim_results(spec: EntitySpec, prepared: Prepared, result: Any, failing: dict[str, np.ndarray]) -> None:
    """Replace GX's full row lists by the first ``RESULTS_INDEX_LIMIT`` rows with their entity
    ids, and drop the ``unexpected_index_query`` (a pandas expression listing every row)."""
    ids = prepared.source[spec.id_column]
    for expectation_result in result.results:
        res = expectation_result.result
        if not isinstance(res, dict):
            continue
        positions = failing[expectation_result.expectation_config.meta[CHECK_META_KEY]]
        res.pop("unexpected_index_query", None)
        res["unexpected_index_column_names"] = [ROW_ID, spec.id_column]
        if positions.size:
            shown = positions[:RESULTS_INDEX_LIMIT]
            listed = {
                ROW_ID: shown.tolist(),
                spec.id_column: [jsonable(_entity_id(v)) for v in ids.iloc[shown]],
            }
            res["unexpected_index_list"] = [listed]
            res["partial_unexpected_index_list"] = [{key: value[:20] for key, value in listed.items()}]
            if positions.size > RESULTS_INDEX_LIMIT:
                res["unexpected_index_list_truncated"] = True
        else:
            res["unexpected_index_list"] = []
            res["partial_unexpected_index_list"] = []


# --------------------------------------------------------------------------------------------
# Threshold
# --------------------------------------------------------------------------------------------


def check_threshold(
    outcome: ValidationOutcome | Iterable[ValidationOutcome], thresholds: Mapping[str, float]
) -> dict[str, float]:
    """Raise ``QualityGateError`` when an entity's quarantined share is above its threshold.

    ``outcome`` is one batch's outcome, or several (the chunks of a run: counted together per
    entity). ``thresholds`` maps entity -> largest acceptable share (0.0-1.0); ``"*"`` is the
    fallback, then ``DEFAULT_MAX_SHARE``; a share equal to the threshold passes. Returns the
    threshold applied per entity. The message names the entity, the share, the threshold and the
    most frequent failed checks; it never carries a row value.
    """
    outcomes = [outcome] if isinstance(outcome, ValidationOutcome) else list(outcome)
    by_entity: dict[str, list[ValidationOutcome]] = {}
    for item in outcomes:
        by_entity.setdefault(item.entity, []).append(item)
    applied: dict[str, float] = {}
    for entity, items in by_entity.items():
        threshold = float(thresholds.get(entity, thresholds.get("*", DEFAULT_MAX_SHARE)))
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold for {entity} must be a share between 0 and 1, got {threshold}")
        applied[entity] = threshold
        rows_in = sum(item.rows_in for item in items)
        quarantined = sum(item.rows_quarantined for item in items)
        share = quarantined / rows_in if rows_in else 0.0
        if share <= threshold:
            continue
        reasons: Counter[str] = Counter()
        for item in items:
            reasons.update(item.reason_counts())
        top = reasons.most_common(5)
        runs = sorted({item.run_id for item in items})
        batches = ", ".join(sorted({item.batch_id for item in items})[:3]) + ("…" if len(items) > 3 else "")
        raise QualityGateError(
            f"quality gate stopped {entity} in run {', '.join(runs)} (batch {batches}): {quarantined} of "
            f"{rows_in} rows quarantined ({share:.2%}), above the {threshold:.2%} threshold; top reasons: "
            + ", ".join(f"{name} ({count})" for name, count in top),
            entity=entity,
            share=share,
            threshold=threshold,
            top_reasons=top,
        )
    return applied
