"""``make bench-quick`` end to end: every measurement runs at small sizes and writes its figures.

The targets are for the full sizes (``make bench``), so they are not asserted here: this proves
the benchmark itself works (stores, emulator, peers, children, JSON), as CI runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS = ("parse", "delivery", "budget", "bulk_backfill", "incremental_cost", "pipeline_memory", "ltv", "ui",
                "airflow_backfill")
NEEDS_POSTGRES = {"airflow_backfill"}  # a real Airflow on PostgreSQL: an error saying so without it
KEYS = {"name", "description", "sizes", "figures", "baseline", "ratio", "target", "checks", "pass", "notes",
        "error", "elapsed_s"}


@pytest.mark.slow
@pytest.mark.timeout(2000)  # every measurement, the Airflow backfill included: past the 600 s default
def test_bench_quick_writes_every_measurement(tmp_path, request):
    output = tmp_path / "results.json"
    env = dict(os.environ)
    have_postgres = True
    try:  # PostgreSQL as the rest of the suite has it: required in CI, else used when it answers
        env["STORESYNC_BENCH_PG_URL"] = request.getfixturevalue("postgres_admin_url")
    except pytest.skip.Exception:
        env["STORESYNC_BENCH_PG_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/none"  # SQLite only
        have_postgres = False
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--output", str(output)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    # 1 without PostgreSQL: airflow_backfill could not run (each measurement's error is checked below)
    assert proc.returncode == (0 if have_postgres else 1), proc.stderr[-4000:]
    document = json.loads(output.read_text())
    assert document["meta"]["quick"] is True
    assert document["meta"]["generator_version"]
    measurements = {m["name"]: m for m in document["measurements"]}
    assert set(measurements) == set(MEASUREMENTS)
    for name, m in measurements.items():
        assert KEYS <= set(m), (name, KEYS - set(m))
        if name in NEEDS_POSTGRES and not have_postgres:
            assert "PostgreSQL" in m["error"], (name, m["error"])
            continue
        assert m["error"] is None, (name, m["error"])
        assert m["figures"], f"{name} produced no figures"
        assert m["baseline"], f"{name} has no baseline"
        assert m["ratio"], f"{name} has no ratio"
        assert m["target"], name
        assert m["checks"], f"{name} has no checks"
        for check in m["checks"]:
            assert {"what", "value", "op", "target", "pass"} <= set(check), (name, check)
            assert check["value"] is not None, (name, check)
            assert check["pass"] in (True, False), (name, check)
        assert m["pass"] in (True, False), name
    # Every subject of the side-by-side runs delivered every event it was given, at every distance.
    delivery = measurements["delivery"]
    events = delivery["sizes"]["events"]
    assert events > 0
    subjects = {}
    for side in ("figures", "baseline"):
        for variant, figs in delivery[side].items():
            if variant == "emulator_ceiling":
                continue
            for key, fig in figs.items():
                subjects[(variant, key)] = fig
    assert len(subjects) >= 2 + 4 * len(delivery["sizes"]["latency_variants"]), sorted(subjects)
    for (variant, key), fig in subjects.items():
        wanted = events if variant == "localhost" else delivery["sizes"]["latency_variants"][
            variant.removeprefix("vendor_").replace("ms_away", " ms")]["events"]
        assert fig["accepted_by_emulator"] == wanted, (variant, key, fig)
        assert fig["events_per_s"] > 0 and fig["peak_rss_mb"] > 0, (variant, key, fig)
    # Both LTV implementations agree on the numbers they compute.
    for backend, base in measurements["ltv"]["baseline"].items():
        assert base["totals_agree"], (backend, base["totals"], measurements["ltv"]["figures"][backend]["totals"])
    # The table is printed.
    assert "measurement" in proc.stdout and "results:" in proc.stdout
