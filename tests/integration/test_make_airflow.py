"""`make airflow`: a local Airflow 3 with storesync wired in, started and stopped as a user would.

The slow test runs ``scripts/airflow_local.py start`` (what ``make airflow`` runs) in a private
``--var-dir`` on free ports, then checks what a newcomer meets: Airflow healthy, the printed login
working, the four connections there, the connection Test endpoint (``POST
/api/v2/connections/test``, what the form's Test button calls) succeeding for the vendor
connections (also in the shape the 3.3.2 UI sends), no credential on any command line, in any
service's environment or in the audit log, every DAG parsed and unpaused, a second start refused
politely, and ``stop`` leaving no process behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "airflow_local.py"
sys.path.insert(0, str(SCRIPT.parent))
import airflow_local  # noqa: E402 - the script is the unit under test

# The credentials (the Sailthru API key is the connection's login, shown like a user name).
SECRETS = tuple(v for k, v in airflow_local.EMULATOR_CREDENTIALS.items() if k != "sailthru_api_key")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script_env() -> dict[str, str]:
    """The caller's environment without the test session's Airflow settings (a user's shell)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "STORESYNC_", "PYTEST_"))}


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=script_env(), cwd=REPO_ROOT, timeout=timeout)


def test_a_port_in_use_stops_the_start_before_anything_runs(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_script("start", "--var-dir", str(tmp_path), "--port", str(port),
                            "--emulator-port", str(free_port()))
    assert result.returncode == 1
    assert f"port {port} for Airflow is in use" in result.stderr
    assert f"AIRFLOW_PORT={port + 1} make airflow" in result.stderr
    assert not (tmp_path / "airflow").exists()  # nothing was set up


def test_a_port_airflow_itself_uses_is_refused_before_anything_runs(tmp_path):
    # 8793 is the scheduler's and workers' log server: free now, taken once the scheduler starts.
    result = run_script("start", "--var-dir", str(tmp_path), "--port", str(free_port()),
                        "--emulator-port", "8793", "--log-server-port", "8793")
    assert result.returncode == 1
    assert "EMULATOR_PORT=8793 for the emulator is the port of Airflow's task log server" in result.stderr
    assert "(AIRFLOW_LOG_SERVER_PORT)" in result.stderr and "make airflow`" in result.stderr
    assert not (tmp_path / "airflow").exists()  # nothing was set up


def test_the_makefile_targets_run_the_script():
    dry = subprocess.run(["make", "-n", "airflow", "airflow-stop"], capture_output=True, text=True, cwd=REPO_ROOT,
                         env=script_env(), timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "scripts/airflow_local.py start" in dry.stdout and "scripts/airflow_local.py stop" in dry.stdout


def _secrets_in_processes(pgids) -> list[str]:
    """Processes of the given groups whose command line or environment holds a credential."""
    found = []
    for pgid in pgids:
        for pid in airflow_local.group_members(pgid):
            for part in ("cmdline", "environ"):
                try:
                    text = Path(f"/proc/{pid}/{part}").read_bytes().decode(errors="replace")
                except OSError:
                    continue
                found += [f"{pid} {part}" for secret in SECRETS if secret in text]
    return found


@pytest.mark.slow
def test_make_airflow_starts_a_wired_airflow_and_stop_leaves_nothing(tmp_path):
    var_dir = tmp_path / "var"
    port, emulator_port = free_port(), free_port()
    ports = ["--port", str(port), "--emulator-port", str(emulator_port),
             "--log-server-port", str(free_port()), "--trigger-log-server-port", str(free_port())]
    layout = airflow_local.Layout(var_dir, port, emulator_port, 0, 0)
    base = layout.base_url
    try:
        started = run_script("start", "--var-dir", str(var_dir), "--demo-orders", "600", *ports, timeout=900)
        assert started.returncode == 0, f"{started.stdout[-3000:]}\n{started.stderr[-3000:]}"
        out = started.stdout

        # The login it prints is the generated one, and it works.
        password = json.loads(layout.passwords_file.read_text())["admin"]
        assert f"login: admin / {password}" in out
        assert f"http://localhost:{port}" in out
        status, _ = airflow_local.http_json("POST", f"{base}/auth/token",
                                            {"username": "admin", "password": password + "x"})
        assert status == 401
        token = airflow_local.login(layout, password)

        def api(method, path, body=None):
            return airflow_local.http_json(method, f"{base}{path}", body, token=token)

        status, health = api("GET", "/api/v2/monitor/health")
        assert status == 200
        assert {c: health[c]["status"] for c in ("metadatabase", "scheduler", "dag_processor", "triggerer")} == \
            dict.fromkeys(("metadatabase", "scheduler", "dag_processor", "triggerer"), "healthy")

        # The connections, with the secrets masked by the API.
        status, body = api("GET", "/api/v2/connections?limit=100")
        connections = {c["connection_id"]: c for c in body["connections"]}
        assert {k: connections[k]["conn_type"] for k in ("storesync_warehouse", "storesync_ledger",
                                                          "sendlane_default", "sailthru_default")} == {
            "storesync_warehouse": "sqlite", "storesync_ledger": "sqlite", "sendlane_default": "sendlane",
            "sailthru_default": "sailthru"}
        assert connections["sendlane_default"]["host"] == f"http://127.0.0.1:{emulator_port}/sendlane/v2"
        assert connections["storesync_warehouse"]["host"] == str(var_dir.resolve() / "demo_store.db")
        assert not any(secret in json.dumps(body) for secret in SECRETS)

        # The Test button's endpoint: the stored fields, then the body the 3.3.2 form sends (the
        # port as a number, the password masked), then a wrong token, which must fail with the 401.
        for conn_id, conn_type in (("sendlane_default", "sendlane"), ("sailthru_default", "sailthru"),
                                   ("storesync_warehouse", "sqlite"), ("storesync_ledger", "sqlite")):
            status, result = api("POST", "/api/v2/connections/test", {"connection_id": conn_id,
                                                                     "conn_type": conn_type})
            assert (status, result["status"]) == (200, True), (conn_id, result)
        stored = connections["sendlane_default"]
        ui_body = {"connection_id": "sendlane_default", "conn_type": "sendlane", "host": stored["host"],
                   "port": 0, "login": "", "schema": "", "password": "***", "extra": stored["extra"]}
        status, result = api("POST", "/api/v2/connections/test", ui_body)
        assert (status, result["status"]) == (200, True), result
        assert "API token accepted" in result["message"]
        status, result = api("POST", "/api/v2/connections/test", {**ui_body, "password": "a-wrong-token"})
        assert status == 200 and result["status"] is False and "401" in result["message"]
        status, result = api("POST", "/api/v2/connections/test", {
            "connection_id": "sailthru_default", "conn_type": "sailthru", "host": stored["host"].replace(
                "sendlane/v2", "sailthru"), "port": 0, "login": connections["sailthru_default"]["login"],
            "schema": "", "password": "***"})
        assert (status, result["status"]) == (200, True), result

        # Every DAG file parsed, nothing paused, no import error.
        status, body = api("GET", "/api/v2/dags?limit=100")
        files = {Path(d["fileloc"]).name for d in body["dags"]}
        assert files == set(airflow_local.dag_files())
        assert [d["dag_id"] for d in body["dags"] if d["is_paused"]] == []
        assert api("GET", "/api/v2/importErrors")[1]["total_entries"] == 0

        # No credential on a command line, in a service's environment or in the audit log.
        groups = airflow_local.running_services(layout)
        assert set(groups) == {"emulator", "api-server", "scheduler", "dag-processor", "triggerer"}
        assert _secrets_in_processes(groups.values()) == []
        status, events = api("GET", "/api/v2/eventLogs?limit=500")
        assert status == 200 and not any(secret in json.dumps(events) for secret in SECRETS)

        # A second start while it runs changes nothing.
        again = run_script("start", "--var-dir", str(var_dir), *ports, timeout=120)
        assert again.returncode == 0 and "already running" in again.stdout
        assert airflow_local.running_services(layout) == groups
    finally:
        stopped = run_script("stop", "--var-dir", str(var_dir), timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped: api-server, dag-processor, emulator, scheduler, triggerer" in stopped.stdout
    print(f"\nmake airflow: {out.strip().splitlines()[-2].strip()}; stop: {stopped.stdout.strip()}")
    assert all(airflow_local.group_members(pgid) == [] for pgid in groups.values())
    assert not layout.state_file.exists()
    assert run_script("status", "--var-dir", str(var_dir)).returncode == 3

    # Connections are created once: a second run keeps what exists (a user's edits survive).
    edited = [{**c, "host": "http://example.invalid"} for c in layout.connections()]
    kept = subprocess.run([sys.executable, str(SCRIPT), "_create-connections"], input=json.dumps(edited),
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          env={**script_env(), **layout.env()})
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.split("\n")[:4] == [f"{c['conn_id']}: kept (exists)" for c in edited]
