"""``storesync models check``: every model run against the configured warehouse for a window and held
to the contract (``storesync.warehouse.contract``), before a sync trusts it.

For each model it reports the rows the window returned, the required columns missing (a violation),
the optional ones missing and the extra ones (notes), values of the wrong type (a violation: the
first few, by column, never the value itself), values outside a column's allowed list (a violation:
an order status the quality gate would quarantine; the values with their counts and the allowed
list), and a few sample rows with personal data masked.
A window model that returns 0 rows while it returns rows both before and after the window gets a
warning: that is what window binds compared with the wrong text format look like (see
``include/sql/README.md``). Chunk models run on ids the window models returned.

Violations make the command exit 1; ``--json`` prints the same report as pure JSON.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy.exc import SQLAlchemyError

from storesync.core.windows import EPOCH, Window
from storesync.warehouse import contract
from storesync.warehouse.models import Warehouse, padded_ids, window_params

SAMPLE_ROWS = 3
TYPE_CHECKED_ROWS = 100_000  # rows whose values are type-checked per model (all are counted)
ID_SAMPLE = 200  # ids handed to each chunk model
FUTURE = timedelta(days=3660)
MASK = "***"

# Which window model's ids feed each chunk bind.
ID_SOURCES = {"order_ids": ("order_changes", "order_id"), "product_ids": ("products", "product_id"),
              "checkout_ids": ("checkouts", "checkout_id")}


@dataclass
class ModelReport:
    model: str
    file: str
    status: str = "ok"  # ok | warning | violation | absent | skipped
    rows: int = 0
    missing_required: list = field(default_factory=list)
    missing_optional: list = field(default_factory=list)
    extra: list = field(default_factory=list)
    type_errors: dict = field(default_factory=dict)  # column -> "n value(s) not <type> (<python type>)"
    # column -> {"values": {value: count} (the most frequent), "rows": n, "allowed": [...]}
    unknown_values: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    error: str | None = None
    samples: list = field(default_factory=list)

    @property
    def violated(self) -> bool:
        return bool(self.missing_required or self.type_errors or self.unknown_values or self.error)

    def settle(self) -> None:
        if self.status in ("absent", "skipped"):
            return
        self.status = "violation" if self.violated else ("warning" if self.warnings else "ok")


# ---------------------------------------------------------------------------- value types
def _is_integral(value) -> bool:
    try:
        return Decimal(str(value)) == Decimal(str(value)).to_integral_value()
    except (InvalidOperation, ValueError):
        return False


def _is_datetime(value) -> bool:
    if isinstance(value, datetime):
        return True
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return True
        except ValueError:
            return False
    return False


def type_ok(type_: str, value) -> bool:
    """Whether a driver's value can stand for the contract's ``type_`` (None always can)."""
    if value is None:
        return True
    if type_ == contract.ID:
        return isinstance(value, int | str) and not isinstance(value, bool) or (
            isinstance(value, Decimal) and _is_integral(value))
    if type_ == contract.TEXT:
        return isinstance(value, str)
    if type_ == contract.INTEGER:
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float | Decimal) and _is_integral(value))
    if type_ == contract.MONEY:
        return isinstance(value, int | float | Decimal) and not isinstance(value, bool) and value == value
    if type_ == contract.DATETIME:
        return _is_datetime(value) and not (isinstance(value, date) and not isinstance(value, datetime))
    if type_ in (contract.BOOL, contract.FLAG):
        return isinstance(value, bool) or (isinstance(value, int | float | Decimal) and value in (0, 1))
    return True


# ---------------------------------------------------------------------------- masking
def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}{MASK}@{domain}" if domain else MASK


def masked(spec: contract.ModelContract, row: dict) -> dict:
    """A sample row for people to look at: personal columns masked (emails keep their first letter
    and domain); columns the contract does not know and values of the wrong type masked too (they
    may be anything)."""
    out = {}
    for name, value in row.items():
        column = spec.column(name)
        if value is None:
            out[name] = None
        elif column is None or not type_ok(column.type, value) or (
                column.personal and not (name == "email" and isinstance(value, str))):
            out[name] = MASK  # unknown, of the wrong type (it could hold anything) or personal
        elif column.personal:
            out[name] = mask_email(value)
        elif isinstance(value, datetime | date):
            out[name] = value.isoformat()
        elif isinstance(value, Decimal):
            out[name] = str(value)
        else:
            out[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


# ---------------------------------------------------------------------------- running
# Optional for the store, but the LTV job reads them while these [ltv] settings name them (it
# refuses to run without the file rather than guess): "read as no rows" would be untrue there.
_LTV_SETTING = {"ltv_order_status_changes": "status_history_model", "fx_rates": "fx_rates_model"}


def _absent_ltv_model(model: str, ltv) -> str:
    setting = _LTV_SETTING[model]
    if ltv is not None and not getattr(ltv, setting):
        return f'not present and not used ([ltv] {setting} = "")'
    without = {"fx_rates_model": f' and [ltv] currency to the store\'s one currency (now '
                                 f'{getattr(ltv, "currency", "USD")})',
               "status_history_model": " (statuses are then taken as they are now)"}[setting]
    return (f"not present, but `storesync ltv` reads it while [ltv] {setting} names it: write it, or set "
            f'{setting} = ""{without}')


class ModelsCheck:
    def __init__(self, warehouse: Warehouse, window: Window, *, samples: int = SAMPLE_ROWS,
                 models: list[str] | None = None, ltv=None) -> None:
        self.warehouse = warehouse
        self.ltv = ltv  # LtvSettings: whether the LTV job reads its optional models
        self.window = window
        self.samples = samples
        self.models = models or list(contract.CONTRACTS)  # the syncs' models and LTV's
        unknown = [m for m in self.models if m not in contract.CONTRACTS]
        if unknown:
            raise ValueError(f"no such model: {', '.join(unknown)}; known: {', '.join(contract.CONTRACTS)}")
        self.ids: dict[str, list] = {}

    def run(self) -> dict:
        reports = {}
        # Window models first: they give the chunk models their ids.
        ordered = sorted(self.models, key=lambda m: contract.CONTRACTS[m].id_param is not None)
        for model in ordered:
            report = self.check(model)
            report.settle()
            reports[model] = report
        return {
            "window": {"start": self.window.start.isoformat(), "end": self.window.end.isoformat()},
            "ok": not any(r.violated for r in reports.values()),
            "models": {m: asdict(reports[m]) for m in self.models},
        }

    def check(self, model: str) -> ModelReport:
        spec = contract.contract_for(model)
        report = ModelReport(model, str(self.warehouse.path(model)))
        if not self.warehouse.has(model):
            if model in _LTV_SETTING:
                report.status = "absent"
                report.warnings.append(_absent_ltv_model(model, self.ltv))
            elif spec.optional:
                report.status = "absent"
                report.warnings.append("optional model not present: read as no rows")
            elif spec.group != "sync":  # another job's model (LTV): that job fails without it
                report.status = "absent"
                report.warnings.append(f"not present: needed by {spec.used_by}")
            else:
                report.error = f"required model missing: {report.file}"
            return report
        params = self._params(spec, report)
        if params is None:
            return report
        try:
            self._read(spec, params, report)
        except (SQLAlchemyError, contract.ModelContractError, ValueError) as exc:
            # The driver's message names the SQL problem; parameters are hidden by the engine.
            report.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return report
        if not report.rows and spec.time_column and not spec.id_param:
            self._zero_rows_probe(model, report)
        return report

    def _params(self, spec: contract.ModelContract, report: ModelReport) -> dict | None:
        dialect = self.warehouse.engine.dialect.name
        params = window_params(self.window, dialect)
        if not spec.id_param:
            return params
        if spec.id_param not in ID_SOURCES:
            report.status = "skipped"
            report.warnings.append(f"no ids for :{spec.id_param} to run it with")
            return None
        ids = self.ids.get(spec.id_param)
        if ids is None:
            source, column = ID_SOURCES[spec.id_param]
            ids = self.ids[spec.id_param] = self._ids_from(source, column)
        if not ids:
            report.warnings.append(f"not run: the window gave no ids for :{spec.id_param}")
            return None
        if self.warehouse.filters_ids(spec.name):
            params[spec.id_param] = padded_ids(ids)
        return params

    def _ids_from(self, model: str, column: str) -> list:
        if not self.warehouse.has(model):
            return []
        window = Window.everything_before(self.window.end) if model == "products" else self.window
        ids: list = []
        try:
            for frame in self.warehouse.stream(model, window, 10_000):
                for value in frame[column].dropna().tolist() if column in frame.columns else []:
                    if value not in ids:
                        ids.append(value)
                if len(ids) >= ID_SAMPLE:
                    break
        except (SQLAlchemyError, contract.ModelContractError, ValueError):
            return []  # the window model's own check reports it
        return ids[:ID_SAMPLE]

    def _read(self, spec: contract.ModelContract, params: dict, report: ModelReport) -> None:
        statement = self.warehouse.statement(spec.name)
        wrong: dict[str, Counter] = {}
        with self.warehouse.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=10_000).execute(statement, params)
            columns = list(result.keys())
            report.missing_required = [c for c in spec.required_columns if c not in columns]
            report.missing_optional = [c for c in spec.optional_columns if c not in columns]
            report.extra = [c for c in columns if spec.column(c) is None]
            typed = [(i, spec.column(c)) for i, c in enumerate(columns) if spec.column(c) is not None]
            restricted = [(i, column) for i, column in typed if column.values]
            unknown: dict[str, Counter] = {}
            for partition in result.partitions(10_000):
                for row in partition:
                    if report.rows < TYPE_CHECKED_ROWS:
                        for i, column in typed:
                            if not type_ok(column.type, row[i]):
                                wrong.setdefault(column.name, Counter())[type(row[i]).__name__] += 1
                        for i, column in restricted:
                            if isinstance(row[i], str) and row[i] not in column.values:
                                unknown.setdefault(column.name, Counter())[row[i]] += 1
                    if len(report.samples) < self.samples:
                        report.samples.append(masked(spec, dict(zip(columns, row))))
                    report.rows += 1
        for name, values in unknown.items():
            # Allowed-value columns hold codes (statuses): shown, cut short, an email masked (a model whose
            # columns are out of order could put one there).
            report.unknown_values[name] = {
                "rows": sum(values.values()), "allowed": list(spec.column(name).values),
                "values": {(mask_email(v) if "@" in v else v)[:40]: n for v, n in values.most_common(10)}}
        for name, kinds in wrong.items():
            found = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
            report.type_errors[name] = f"{sum(kinds.values())} value(s) not {spec.column(name).type} ({found})"

    def _zero_rows_probe(self, model: str, report: ModelReport) -> None:
        before = self._any(model, Window(EPOCH, self.window.start)) if self.window.start > EPOCH else False
        after = self._any(model, Window(self.window.end, self.window.end + FUTURE))
        if before and after:
            report.warnings.append(
                "0 rows in the window, but rows before and after it: do the window binds compare right "
                "with the time column? (ISO text with a 'T' needs :window_start_iso/:window_end_iso; "
                "see include/sql/README.md)")

    def _any(self, model: str, window: Window) -> bool:
        try:
            return any(len(frame) for frame in self.warehouse.stream(model, window, 1_000))
        except (SQLAlchemyError, contract.ModelContractError, ValueError):
            return False


# ---------------------------------------------------------------------------- output
def format_report(result: dict) -> str:
    lines = [f"models check, window [{result['window']['start']} .. {result['window']['end']})", ""]
    for model, r in result["models"].items():
        lines.append(f"{r['status']:<10} {model:<26} {r['rows']:>8} rows   {r['file']}")
        if r["error"]:
            lines.append(f"    error: {r['error']}")
        if r["missing_required"]:
            lines.append(f"    required column(s) missing: {', '.join(r['missing_required'])}")
        for column, problem in r["type_errors"].items():
            lines.append(f"    {column}: {problem}")
        for column, found in r.get("unknown_values", {}).items():
            shown = ", ".join(f"{value!r} ×{n}" for value, n in found["values"].items())
            lines.append(f"    {column}: {found['rows']} value(s) outside the contract ({shown}); allowed: "
                         f"{', '.join(found['allowed'])} (map yours in the model's SQL, e.g. a CASE)")
        if r["missing_optional"]:
            lines.append(f"    optional column(s) absent (read as null): {', '.join(r['missing_optional'])}")
        if r["extra"]:
            lines.append(f"    extra column(s), ignored: {', '.join(r['extra'])}")
        for warning in r["warnings"]:
            lines.append(f"    warning: {warning}")
        for sample in r["samples"]:
            lines.append("    sample: " + ", ".join(f"{k}={v}" for k, v in sample.items()))
    bad = [m for m, r in result["models"].items() if r["status"] == "violation"]
    lines.append("")
    lines.append("contract violations in: " + ", ".join(bad) if bad else "every model keeps the contract")
    return "\n".join(lines)


def run_check(settings, window: Window, *, samples: int = SAMPLE_ROWS, models: list[str] | None = None) -> dict:
    """Check the configured warehouse's models for ``window`` (a models folder missing files is
    reported file by file, not refused)."""
    warehouse = Warehouse(settings.warehouse_url, settings.models_dir, require_models=False)
    return ModelsCheck(warehouse, window, samples=samples, models=models,
                       ltv=getattr(settings, "ltv", None)).run()
