"""`make airflow` / `make airflow-stop`: a local Airflow 3 with storesync wired in, no Docker.

    .venv/bin/python scripts/airflow_local.py start     # or: make airflow
    .venv/bin/python scripts/airflow_local.py status
    .venv/bin/python scripts/airflow_local.py stop      # or: make airflow-stop

``start`` does what ``astro dev start`` does for Astronomer users, on this checkout:

1. ``AIRFLOW_HOME`` = ``var/airflow`` (metadata in SQLite there, ``StoresyncLocalExecutor``), the dags folder =
   ``dags/``, the plugins folder = ``plugins/``; ``airflow db migrate``. Airflow writes its
   ``airflow.cfg`` on the first run, with one Fernet key, JWT secret and API secret key that every
   service then shares.
2. The demo store (``var/demo_store.db``) when it is missing, and the vendor emulator on
   127.0.0.1:8765 in the background.
3. The connections, each created once (one that exists is left as the user edited it):
   ``storesync_warehouse`` and ``storesync_ledger`` (sqlite), ``sendlane_default`` and
   ``sailthru_default`` (the emulator, its test credentials). They are written through Airflow's
   ORM by a child process that reads them from its stdin: no secret on a command line (Airflow's
   audit log keeps ``airflow connections add --conn-extra ...`` unmasked) and none in the
   environment of the services.
4. api-server (waited for: tasks call it), then scheduler, dag-processor and triggerer, each in
   its own session (``setsid``), so ``stop`` ends every process a service started (uvicorn
   workers, task processes) by process group. ``[core] test_connection`` is on (the connection
   form's Test button), parallelism 4 (2 cores), new DAGs start unpaused (a demo runs them at once).
5. Waits until Airflow is healthy and has parsed the DAGs, then prints the URL and the admin login
   (from the password file the api-server generates).

storesync's own settings: the checkout's ``storesync.toml`` when it has one, else
``var/airflow/storesync-demo.toml`` (written here: the demo store's deliberate bad rows may be a
large share of an hourly window, so the demo's quarantine threshold is 50%).

Options: ``--port`` / ``$AIRFLOW_PORT`` (8080), ``--emulator-port`` / ``$EMULATOR_PORT`` (8765),
``--var-dir`` / ``$STORESYNC_LOCAL_DIR`` (``var``); Airflow's log servers take 8793 and 8794
(``$AIRFLOW_LOG_SERVER_PORT``, ``$AIRFLOW_TRIGGER_LOG_SERVER_PORT``), and a port given to two services
is refused before anything starts. Airflow and storesync variables of the calling
shell (``AIRFLOW_*``, ``STORESYNC_*``) do not reach the services: this Airflow is the checkout's
own. Service output goes to ``var/airflow/services/<name>.log``.

Only the standard library is imported here until a step needs Airflow (a child process), so
``stop`` works even on a broken install.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
STATE_FILE = "local-services.json"
ADMIN = "admin"

# The emulator's test credentials (storesync.emulator.state's defaults): a sandbox, not secrets.
EMULATOR_CREDENTIALS = {
    "sendlane_api_token": "test-sendlane-api-token",
    "sendlane_integration_token": "test-sendlane-integration-token",
    "sailthru_api_key": "test-sailthru-key",
    "sailthru_secret": "test-sailthru-secret",
}


# The demo store has malformed rows on purpose (the quarantine is there to see), and an hourly
# window holds a handful of orders: one bad row can be 15% of it, past the 5% a production run
# allows. The demo's settings let half a window be quarantined before a run stops, and raise the
# client budgets with the emulator's limits (as `make run` does): at the vendors' real 40-240
# requests a minute the first runs (every product, every customer's profile) would hold every
# task slot for half an hour.
DEMO_BUDGET = 6000
DEMO_SETTINGS = f"""\
# storesync settings of `make airflow`, written because the checkout has no storesync.toml
# (create one there to use your own). The demo store's bad rows are deliberate; an hourly window
# holds a few orders, so one bad row can pass the production threshold (5%): the demo allows 50%.
[quarantine_thresholds]
"*" = 0.5

# The local emulator's limits are raised to match (scripts/airflow_local.py); never at a vendor.
[sendlane]
budget_per_minute = {DEMO_BUDGET}

[sailthru]
budget_per_minute = {DEMO_BUDGET}
"""
EMULATOR_CONFIG = json.dumps({"sendlane_rate_limit": DEMO_BUDGET,
                              "sailthru_rate_limits": {"POST": DEMO_BUDGET, "GET": DEMO_BUDGET,
                                                       "DELETE": DEMO_BUDGET}})


class StartError(RuntimeError):
    """A step of ``start`` failed; the message says which and what to do."""


# ---------------------------------------------------------------------------- layout
class Layout:
    """Where everything of one local Airflow lives, and the environment its services run with."""

    def __init__(self, var_dir: Path, port: int, emulator_port: int, log_server_port: int,
                 trigger_log_server_port: int) -> None:
        self.var = var_dir.resolve()
        self.home = self.var / "airflow"
        self.services_dir = self.home / "services"
        self.state_file = self.home / STATE_FILE
        self.passwords_file = self.home / "simple_auth_manager_passwords.json.generated"
        self.warehouse = self.var / "demo_store.db"
        self.ledger = self.var / "storesync_ledger.db"
        self.port = port
        self.emulator_port = emulator_port
        self.base_url = f"http://127.0.0.1:{port}"
        self.emulator_url = f"http://127.0.0.1:{emulator_port}"
        self.log_server_port = log_server_port
        self.trigger_log_server_port = trigger_log_server_port

    def env(self) -> dict[str, str]:
        """The services' environment: the caller's, minus its Airflow/storesync settings, plus ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "STORESYNC_"))}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        # Tasks call the Execution API and the emulator on the loopback: never through a proxy.
        no_proxy = [h for h in (env.get("NO_PROXY") or env.get("no_proxy") or "").split(",") if h]
        env["NO_PROXY"] = env["no_proxy"] = ",".join(dict.fromkeys([*no_proxy, "127.0.0.1", "localhost"]))
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The LocalExecutor, with storesync and its quality gate loaded once in the scheduler
            # before the task processes fork from it (docs/airflow.md: what it saves).
            "AIRFLOW__CORE__EXECUTOR": "storesync.provider.executors.StoresyncLocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            # On 2 cores: the default 32 would start 32 LocalExecutor workers.
            "AIRFLOW__CORE__PARALLELISM": "4",
            # The connection form's Test button (off by default in Airflow 3).
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            # Tasks call the api-server (SQLite behind it) for everything; the 5 s default times out
            # when the first runs of every DAG start at once on a busy laptop, and the task is killed.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{self.port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_server_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_server_port),
            # storesync's own settings for what is not a connection (the CLI's defaults, the
            # vendor hooks' shared budget), pointing at the same files as the connections.
            "STORESYNC_HOME": str(self.var),
            "STORESYNC_CONFIG": str(self.settings_file()),
            "STORESYNC_WAREHOUSE_URL": f"sqlite:///{self.warehouse}",
            "STORESYNC_LEDGER_URL": f"sqlite:///{self.ledger}",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def settings_file(self) -> Path:
        """The checkout's storesync.toml when there is one, else the demo's (written by start)."""
        own = REPO_ROOT / "storesync.toml"
        return own if own.exists() else self.home / "storesync-demo.toml"

    def connections(self) -> list[dict]:
        """The connections ``start`` creates when missing (Airflow connection fields)."""
        creds = EMULATOR_CREDENTIALS
        # The vendor forms hide the port; the 3.3.2 UI then sends port 0 for a stored NULL, and the
        # test endpoint refuses it as "host or port differs" (an Airflow bug). A stored 0 matches,
        # and the hooks ignore the port of a whole-URL base (storesync.clients.http.base_url_from_parts).
        return [
            {"conn_id": "storesync_warehouse", "conn_type": "sqlite", "host": str(self.warehouse),
             "description": "storesync: the demo store (var/demo_store.db)"},
            {"conn_id": "storesync_ledger", "conn_type": "sqlite", "host": str(self.ledger),
             "description": "storesync: the delivery ledger"},
            {"conn_id": "sendlane_default", "conn_type": "sendlane", "port": 0,
             "host": f"{self.emulator_url}/sendlane/v2", "password": creds["sendlane_api_token"],
             # The budget matches the emulator's raised limit (a real account allows 240/min).
             "extra": json.dumps({"integration_token": creds["sendlane_integration_token"],
                                  "budget_per_minute": DEMO_BUDGET}),
             "description": "Sendlane: the local emulator (make airflow), its limit raised to 6000/min"},
            {"conn_id": "sailthru_default", "conn_type": "sailthru", "port": 0,
             "host": f"{self.emulator_url}/sailthru", "login": creds["sailthru_api_key"],
             "password": creds["sailthru_secret"],
             "description": "Sailthru: the local emulator (make airflow)"},
        ]


# ---------------------------------------------------------------------------- processes
def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell our process from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return members


def read_state(layout: Layout) -> dict:
    try:
        return json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return {}


def running_services(layout: Layout) -> dict[str, int]:
    """name -> pgid of the recorded services still running (a recycled pid does not count)."""
    state = read_state(layout)
    alive = {}
    for name, entry in state.get("services", {}).items():
        pid = entry["pid"]
        if entry.get("start_time") and _proc_start_time(pid) not in (None, entry["start_time"]):
            continue  # the pid now belongs to another process
        if group_members(pid):
            alive[name] = pid
    return alive


def start_service(layout: Layout, env: dict, name: str, argv: list[str]) -> subprocess.Popen:
    """``argv`` in its own session (setsid: pid == pgid); output to services/<name>.log."""
    layout.services_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.services_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    state = read_state(layout)
    state.setdefault("services", {})[name] = {"pid": process.pid, "start_time": _proc_start_time(process.pid),
                                              "argv": argv}
    state.update({"port": layout.port, "emulator_port": layout.emulator_port})
    layout.state_file.write_text(json.dumps(state, indent=2))
    return process


def stop(layout: Layout, grace: float = 20.0) -> tuple[list[str], list[str]]:
    """TERM every recorded service's process group, KILL what is left after ``grace`` seconds.
    Returns the names stopped and those that had to be killed."""
    groups = running_services(layout)
    killed = []
    # In two waves: first what runs tasks, while the api-server (their Execution API) and the
    # emulator still answer (a task cut off from them retries for minutes), then the rest.
    first = {n: g for n, g in groups.items() if n in ("scheduler", "triggerer")}
    for wave in (first, {n: g for n, g in groups.items() if n not in first}):
        for pgid in wave.values():
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for name, pgid in wave.items():
            while time.monotonic() < deadline and group_members(pgid):
                time.sleep(0.2)
            if group_members(pgid):
                killed.append(name)
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    try:
        layout.state_file.unlink()
    except FileNotFoundError:
        pass
    return sorted(groups), sorted(killed)


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------- steps
def run_step(what: str, argv: list[str], env: dict, log: Path, *, timeout: float = 600,
             stdin: str | None = None) -> str:
    """Run a one-shot command; its output goes to ``log``; a failure raises with its last lines."""
    result = subprocess.run(argv, env=env, cwd=REPO_ROOT, input=stdin, capture_output=True, text=True,
                            timeout=timeout)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        last = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise StartError(f"{what} failed (exit {result.returncode}); the last lines ({log}):\n{last}")
    return result.stdout


def create_connections_from_stdin() -> int:
    """Child process: create the connections read from stdin (JSON list) unless they exist.

    Runs with the services' environment, so Airflow opens the same metadata database and encrypts
    with the same Fernet key. Prints one line per connection: created or kept."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    wanted = json.loads(sys.stdin.read())
    with create_session() as session:
        for fields in wanted:
            existing = session.query(Connection).filter(Connection.conn_id == fields["conn_id"]).one_or_none()
            if existing is not None:
                print(f"{fields['conn_id']}: kept (exists)")
                continue
            session.add(Connection(**fields))
            print(f"{fields['conn_id']}: created ({fields['conn_type']})")
    return 0


def http_json(method: str, url: str, body: dict | None = None, token: str | None = None,
              timeout: float = 30) -> tuple[int, object]:
    """One request without any proxy (the server is local); returns (status, parsed body or text)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(what: str, probe, timeout: float, processes: dict[str, subprocess.Popen], layout: Layout,
             interval: float = 1.0):
    """Call ``probe`` until it returns something truthy; fail at once if a service exits."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        for name, process in processes.items():
            if process.poll() is not None:
                raise StartError(f"{name} exited with {process.returncode} while waiting for {what}; its log: "
                                 f"{layout.services_dir / (name + '.log')}")
        try:
            last = probe()
            if last:
                return last
        except OSError as exc:  # not listening yet
            last = exc
        if time.monotonic() > deadline:
            raise StartError(f"{what}: not within {timeout:.0f} s (last: {str(last)[:500]}); "
                             f"the services' logs are in {layout.services_dir}")
        time.sleep(interval)


def admin_password(layout: Layout) -> str | None:
    try:
        return json.loads(layout.passwords_file.read_text()).get(ADMIN)
    except (OSError, ValueError):
        return None


def login(layout: Layout, password: str) -> str:
    status, body = http_json("POST", f"{layout.base_url}/auth/token", {"username": ADMIN, "password": password})
    if status not in (200, 201) or not isinstance(body, dict):
        raise StartError(f"logging in as {ADMIN} failed: HTTP {status} {str(body)[:300]}")
    return body["access_token"]


def dag_files() -> list[str]:
    """The names of the files in dags/ that define DAGs (those importing Airflow; helpers do not)."""
    return sorted(p.name for p in (REPO_ROOT / "dags").glob("*.py")
                  if not p.name.startswith("_") and "airflow" in p.read_text())


def _free_after(port: int, ports) -> int:
    """The next port after ``port`` that no service here is given and nothing listens on."""
    taken = {p for p, _, _ in ports}
    candidate = port + 1
    while candidate in taken or port_in_use(candidate):
        candidate += 1
    return candidate


def start(layout: Layout, *, timeout: float = 300, demo_orders: int = 5000) -> dict:
    """Everything of ``make airflow``; returns what it printed as data (for tests)."""
    if running_services(layout):
        password = admin_password(layout)
        print(f"storesync's local Airflow is already running: {layout.base_url.replace('127.0.0.1', 'localhost')}"
              f"  (login {ADMIN} / {password})\nstop it with `make airflow-stop`")
        return {"already_running": True, "password": password}
    # Airflow's own log servers first: a clash is then blamed on the port a person chose.
    ports = ((layout.log_server_port, "Airflow's task log server (scheduler, workers)",
              "AIRFLOW_LOG_SERVER_PORT"),
             (layout.trigger_log_server_port, "Airflow's triggerer log server",
              "AIRFLOW_TRIGGER_LOG_SERVER_PORT"),
             (layout.port, "Airflow", "AIRFLOW_PORT"),
             (layout.emulator_port, "the emulator", "EMULATOR_PORT"))
    # Two services given one port: it is still free now, and the second to start would fail later
    # ("address already in use" in a service log), so refuse before anything runs.
    for i, (port, what, variable) in enumerate(ports):
        for other_port, other, other_variable in ports[:i]:
            if port == other_port:
                raise StartError(f"{variable}={port} for {what} is the port of {other} ({other_variable}): "
                                 f"choose another, e.g. `{variable}={_free_after(port, ports)} make airflow`")
    for port, what, variable in ports:
        if port_in_use(port):
            raise StartError(f"port {port} for {what} is in use (another Airflow or emulator?): stop it, or "
                             f"choose another port, e.g. `{variable}={port + 1} make airflow`")
    layout.home.mkdir(parents=True, exist_ok=True)
    (REPO_ROOT / "plugins").mkdir(exist_ok=True)
    if layout.settings_file().parent == layout.home:
        layout.settings_file().write_text(DEMO_SETTINGS)
    env = layout.env()
    setup_log = layout.services_dir / "setup.log"
    airflow = str(BIN / "airflow")
    storesync = str(BIN / "storesync")
    started = time.monotonic()

    print(f"[1/5] Airflow metadata database: {layout.home / 'airflow.db'} (airflow db migrate)", flush=True)
    run_step("airflow db migrate", [airflow, "db", "migrate"], env, setup_log)

    if layout.warehouse.exists():
        print(f"[2/5] demo store: {layout.warehouse} (kept; delete it for a fresh one)", flush=True)
    else:
        print(f"[2/5] demo store: {layout.warehouse} ({demo_orders} orders ending this hour)", flush=True)
        run_step("storesync demo-store", [storesync, "demo-store", "--url", f"sqlite:///{layout.warehouse}",
                                          "--orders", str(demo_orders)], env, setup_log)

    print(f"[3/5] connections: storesync_warehouse, storesync_ledger, sendlane_default, sailthru_default",
          flush=True)
    created = run_step("creating the connections",
                       [str(BIN / "python"), str(Path(__file__).resolve()), "_create-connections"],
                       env, setup_log, stdin=json.dumps(layout.connections()))
    for line in created.strip().splitlines():
        print(f"      {line}")

    print(f"[4/5] emulator on {layout.emulator_url}; api-server, scheduler, dag-processor, triggerer", flush=True)
    emulator = [str(BIN / "python"), "-m", "storesync.emulator.server", "--host", "127.0.0.1",
                "--port", str(layout.emulator_port), "--config", EMULATOR_CONFIG]
    processes = {"emulator": start_service(layout, env, "emulator", emulator)}
    processes["api-server"] = start_service(layout, env, "api-server",
                                            [airflow, "api-server", "--host", "127.0.0.1", "--port",
                                             str(layout.port), "--workers", "1"])
    try:
        # The api-server first: tasks talk to it (the Execution API) from their first second, and
        # the DAGs start unpaused, so a scheduler started beside it runs tasks that cannot reach it.
        wait_for("the api-server", lambda: http_json("GET", f"{layout.base_url}/api/v2/version", timeout=10)[0] == 200,
                 timeout, processes, layout)
        wait_for("the emulator", lambda: http_json("GET", f"{layout.emulator_url}/_emulator/health")[0] == 200,
                 60, processes, layout, interval=0.3)
        for name in ("scheduler", "dag-processor", "triggerer"):
            processes[name] = start_service(layout, env, name, [airflow, name])

        print("[5/5] waiting for Airflow to be healthy and to parse the DAGs ...", flush=True)

        def healthy():
            status, health = http_json("GET", f"{layout.base_url}/api/v2/monitor/health", timeout=10)
            components = ("metadatabase", "scheduler", "dag_processor", "triggerer")
            return status == 200 and isinstance(health, dict) and \
                all((health.get(c) or {}).get("status") == "healthy" for c in components)

        wait_for("Airflow's health (/api/v2/monitor/health)", healthy, timeout, processes, layout)
        password = wait_for("the admin password file", lambda: admin_password(layout), 30, processes, layout)
        token = login(layout, password)

        def parsed():
            status, body = http_json("GET", f"{layout.base_url}/api/v2/dags?limit=100", token=token)
            _, errors = http_json("GET", f"{layout.base_url}/api/v2/importErrors", token=token)
            dags = body.get("dags", []) if status == 200 and isinstance(body, dict) else []
            import_errors = errors.get("import_errors", []) if isinstance(errors, dict) else []
            seen = {Path(d.get("fileloc") or "").name for d in dags} | \
                {Path(e.get("filename") or "").name for e in import_errors}
            return {"dags": dags, "import_errors": import_errors} if seen >= set(dag_files()) else None

        dags = wait_for("the DAGs to be parsed", parsed, timeout, processes, layout, interval=2)
    except BaseException:
        stop(layout)
        raise

    url = layout.base_url.replace("127.0.0.1", "localhost")
    paused = [d["dag_id"] for d in dags["dags"] if d.get("is_paused")]
    print("")
    print(f"storesync on Airflow: {url}   login: {ADMIN} / {password}")
    print(f"  (password file: {layout.passwords_file})")
    print(f"  {len(dags['dags'])} DAGs parsed, " + (f"paused: {', '.join(paused)}" if paused else "all unpaused")
          + f"; the hourly syncs send the last hour of the demo store to the emulator ({layout.emulator_url})")
    for error in dags["import_errors"]:
        print(f"  DAG import error in {error.get('filename')}: {str(error.get('stack_trace', ''))[-300:]}")
    print(f"  connections: Admin -> Connections (the Test button works); logs: {layout.services_dir}")
    print(f"  storesync settings: {layout.settings_file()}")
    print(f"  ready in {time.monotonic() - started:.0f} s; stop with `make airflow-stop`")
    print(f"  the airflow CLI against it: AIRFLOW_HOME={layout.home} "
          f"AIRFLOW__CORE__DAGS_FOLDER={REPO_ROOT / 'dags'} .venv/bin/airflow dags list")
    return {"already_running": False, "password": password, "dags": dags, "url": layout.base_url}


# ---------------------------------------------------------------------------- command line
def layout_from(args) -> Layout:
    var_dir = Path(args.var_dir)
    if not var_dir.is_absolute():
        var_dir = REPO_ROOT / var_dir
    state = read_state(Layout(var_dir, 0, 0, 0, 0))
    # `stop` and `status` use the ports the running Airflow was started with.
    port = args.port or state.get("port") or 8080
    emulator_port = args.emulator_port or state.get("emulator_port") or 8765
    return Layout(var_dir, int(port), int(emulator_port), args.log_server_port, args.trigger_log_server_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow_local.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "status", "_create-connections"))
    parser.add_argument("--var-dir", default=os.environ.get("STORESYNC_LOCAL_DIR", "var"),
                        help="where var/airflow, the demo store and the ledger live (default: var)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT") or 0) or None,
                        help="Airflow's UI/API port (default 8080; $AIRFLOW_PORT)")
    parser.add_argument("--emulator-port", type=int, default=int(os.environ.get("EMULATOR_PORT") or 0) or None,
                        help="the emulator's port (default 8765; $EMULATOR_PORT)")
    parser.add_argument("--log-server-port", type=int,
                        default=int(os.environ.get("AIRFLOW_LOG_SERVER_PORT") or 8793))
    parser.add_argument("--trigger-log-server-port", type=int,
                        default=int(os.environ.get("AIRFLOW_TRIGGER_LOG_SERVER_PORT") or 8794))
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for health and DAGs")
    parser.add_argument("--demo-orders", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.command == "_create-connections":
        return create_connections_from_stdin()
    layout = layout_from(args)
    if args.command == "stop":
        stopped, killed = stop(layout)
        print((f"stopped: {', '.join(stopped)}" + (f" (killed after 20 s: {', '.join(killed)})" if killed else ""))
              if stopped else "storesync's local Airflow is not running")
        return 0
    if args.command == "status":
        running = running_services(layout)
        print("\n".join(f"{name}\tprocess group {pgid}" for name, pgid in sorted(running.items()))
              or "storesync's local Airflow is not running")
        return 0 if running else 3
    try:
        start(layout, timeout=args.timeout, demo_orders=args.demo_orders)
    except StartError as exc:
        print(f"make airflow: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make airflow: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
