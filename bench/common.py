"""What every measurement shares: paths, children in fresh interpreters, peak RSS, the emulator."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
CACHE = BENCH_DIR / "cache"
RESULTS = BENCH_DIR / "results.json"
MARKER = "__BENCH_RESULT__ "
MB = 1024 * 1024


class ChildError(RuntimeError):
    """A measurement's subprocess failed; the message carries the tail of its stderr."""


class Skipped(RuntimeError):
    """A subject cannot run here (e.g. no PostgreSQL server); the reason is reported."""


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Airflow, if a child imports it, must not touch a real installation's home or examples.
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    env.update(extra or {})
    return env


def run_child(target: str, kwargs: dict | None = None, *, timeout: float = 3600.0,
              env: dict | None = None) -> dict:
    """Run ``module:function(**kwargs)`` in a fresh interpreter (``python -m bench.worker``).

    Returns the function's JSON result under ``result`` with the child's ``wall_s`` (the call
    only, imports included) and ``peak_rss_mb`` (the whole process)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", target],
        input=json.dumps(kwargs or {}), capture_output=True, text=True, cwd=REPO,
        env=child_env(env), timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise ChildError(f"{target} exited {proc.returncode}:\n{tail}")
    out = json.loads(lines[-1][len(MARKER):])
    if out.get("skipped"):
        raise Skipped(out["skipped"])
    out["process_s"] = time.perf_counter() - started
    return out


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- results
@dataclass
class Check:
    what: str
    value: float | None
    op: str  # ">=", "<=", "<", "=="
    target: float

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return {">=": self.value >= self.target, "<=": self.value <= self.target,
                "<": self.value < self.target, "==": self.value == self.target}[self.op]

    def as_dict(self) -> dict:
        return {"what": self.what, "value": _round(self.value), "op": self.op, "target": self.target,
                "pass": self.passed}


@dataclass
class Measurement:
    name: str
    description: str
    target: str
    sizes: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    ratio: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool | None:
        if self.error is not None:
            return False
        verdicts = [c.passed for c in self.checks]
        if not verdicts or any(v is None for v in verdicts):
            return None
        return all(verdicts)

    def as_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "sizes": self.sizes,
            "figures": _round(self.figures), "baseline": _round(self.baseline), "ratio": _round(self.ratio),
            "target": self.target, "checks": [c.as_dict() for c in self.checks], "pass": self.passed,
            "notes": self.notes, "error": self.error, "elapsed_s": round(self.elapsed_s, 1),
        }


def _round(value):
    if isinstance(value, float):
        return round(value, 4) if abs(value) < 100 else round(value, 1)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


# ---------------------------------------------------------------------------------- emulator
@contextmanager
def emulator(**config):
    """The vendor emulator in a subprocess of its own (it must not share the GIL with the
    client under test). Bodies are not kept: the benchmarks count, they do not inspect."""
    from storesync.emulator.testing import start_emulator

    config.setdefault("record_bodies", False)
    with start_emulator(in_process=False, **config) as emu:
        yield emu


def emulator_info(emu) -> dict:
    """What a child needs to reach the emulator (JSON-able)."""
    return {
        "sendlane_url": emu.sendlane_url, "sendlane_api_token": emu.sendlane_api_token,
        "sendlane_integration_token": emu.sendlane_integration_token, "sailthru_url": emu.sailthru_url,
        "sailthru_api_key": emu.sailthru_api_key, "sailthru_secret": emu.sailthru_secret,
    }


def accepted(emu, vendor: str) -> int:
    return int(emu.summary()["vendors"][vendor]["accepted"])


def rejected(emu, vendor: str) -> dict:
    return emu.summary()["vendors"][vendor]["rejected"]
