"""A Python handle on a running emulator, for tests and benchmarks.

    with start_emulator() as emu:                       # in-process, daemon thread, free port
        requests.post(emu.sendlane_url + "/tracking/order-placed", ...)
        assert emu.summary()["vendors"]["sendlane"]["accepted"] == 1

    with start_emulator(in_process=False, rate_limits_enabled=False) as emu:   # a subprocess
        ...

Keyword arguments other than ``in_process``/``port``/``host``/``startup_timeout`` are emulator
configuration (the fields of ``POST /_emulator/config``); ``reset()`` returns to them.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from .state import (
    DEFAULT_SAILTHRU_ACCOUNT,
    DEFAULT_SAILTHRU_API_KEY,
    DEFAULT_SAILTHRU_SECRET,
    DEFAULT_SENDLANE_ACCOUNT,
    DEFAULT_SENDLANE_API_TOKEN,
    DEFAULT_SENDLANE_INTEGRATION_TOKEN,
    DEFAULT_SENDLANE_LIST_ID,
)

__all__ = ["EmulatorHandle", "EmulatorControlError", "start_emulator"]


# The emulator is local: never route control calls through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorControlError(RuntimeError):
    """The control API refused a call (bad config or fault fields, unknown path)."""


class EmulatorHandle:
    """Where the emulator is, what its credentials are, and its inspection/control calls."""

    def __init__(self, base_url: str, *, server=None, process: subprocess.Popen | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.server = server  # the EmulatorServer when in-process (its .state is inspectable)
        self.process = process
        self.sendlane_account = DEFAULT_SENDLANE_ACCOUNT
        self.sendlane_api_token = DEFAULT_SENDLANE_API_TOKEN
        self.sendlane_integration_token = DEFAULT_SENDLANE_INTEGRATION_TOKEN
        self.sendlane_list_id = DEFAULT_SENDLANE_LIST_ID
        self.sailthru_account = DEFAULT_SAILTHRU_ACCOUNT
        self.sailthru_api_key = DEFAULT_SAILTHRU_API_KEY
        self.sailthru_secret = DEFAULT_SAILTHRU_SECRET

    # ---- addresses ------------------------------------------------------------------------------
    @property
    def sendlane_url(self) -> str:
        return self.base_url + "/sendlane/v2"

    @property
    def sailthru_url(self) -> str:
        return self.base_url + "/sailthru"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.base_url).port

    def __repr__(self) -> str:
        mode = "in-process" if self.server is not None else "subprocess"
        return f"EmulatorHandle({self.base_url!r}, {mode})"

    # ---- control plumbing -----------------------------------------------------------------------
    def call(self, method: str, path: str, payload: dict | None = None, query: dict | None = None):
        """One control-API call (``path`` below ``/_emulator``); returns the decoded JSON."""
        url = f"{self.base_url}/_emulator/{path.lstrip('/')}"
        query = {k: v for k, v in (query or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise EmulatorControlError(f"{method} {url}: {exc.code} {detail}") from None

    def _refresh_credentials(self) -> None:
        config = self.config()
        name, account = next(iter(config["sendlane_accounts"].items()))
        self.sendlane_account = name
        self.sendlane_api_token = account["api_token"]
        self.sendlane_integration_token = account["integration_token"]
        self.sendlane_list_id = next(iter(config["sendlane_lists"]), DEFAULT_SENDLANE_LIST_ID)
        name, account = next(iter(config["sailthru_accounts"].items()))
        self.sailthru_account = name
        self.sailthru_api_key = account["api_key"]
        self.sailthru_secret = account["secret"]

    # ---- inspection -----------------------------------------------------------------------------
    def health(self) -> dict:
        return self.call("GET", "health")

    def requests(self, vendor: str | None = None, endpoint: str | None = None, *,
                 entity_id: str | None = None, method: str | None = None, source: str | None = None,
                 account: str | None = None, entity_type: str | None = None,
                 since_seq: int | None = None, recorded: bool | None = True) -> list[dict]:
        """Accepted requests, oldest first (filters are exact matches). ``recorded=True``
        (default): what the vendor recorded; ``False``: only the repeats it answered but skipped
        (Sendlane's repeated order events); ``None``: every request it accepted, both kinds."""
        query = {"vendor": vendor, "endpoint": endpoint, "entity_id": entity_id, "method": method,
                 "source": source, "account": account, "entity_type": entity_type, "since_seq": since_seq,
                 "recorded": "all" if recorded is None else ("1" if recorded else "0")}
        return self.call("GET", "requests", query=query)["requests"]

    def summary(self) -> dict:
        return self.call("GET", "summary")

    def duplicates(self) -> dict:
        """What the vendors recorded twice, by their documented semantics (``EmulatorState.duplicates``)."""
        return self.call("GET", "duplicates")["duplicates"]

    def contacts(self, list_id: str | None = None, email: str | None = None) -> list[dict]:
        return self.call("GET", "contacts", query={"list_id": list_id, "email": email})["contacts"]

    def people(self, email: str | None = None) -> list[dict]:
        """Sendlane's account contacts (what its contact search reads), with the writes that made them."""
        return self.call("GET", "people", query={"email": email})["people"]

    def unsubscribed(self) -> list[dict]:
        return self.call("GET", "unsubscribed")["unsubscribed"]

    def users(self, email: str | None = None) -> list[dict]:
        return self.call("GET", "users", query={"email": email})["users"]

    def content(self) -> list[dict]:
        return self.call("GET", "content")["content"]

    def purchases(self, extid: str | None = None, email: str | None = None,
                  source: str | None = None) -> list[dict]:
        query = {"extid": extid, "email": email, "source": source}
        return self.call("GET", "purchases", query=query)["purchases"]

    def returns(self) -> list[dict]:
        return self.call("GET", "returns")["returns"]

    def jobs(self) -> list[dict]:
        return self.call("GET", "jobs")["jobs"]

    # ---- control --------------------------------------------------------------------------------
    def config(self) -> dict:
        return self.call("GET", "config")

    def configure(self, **config) -> dict:
        result = self.call("POST", "config", config)
        if "sendlane_accounts" in config or "sailthru_accounts" in config or "sendlane_lists" in config:
            self._refresh_credentials()
        return result

    def set_faults(self, **faults) -> dict:
        """Replace the active faults (error_rate, storm={"duration_s": x} or {"requests": n,
        "reset_s": x}, latency_ms, drop_before_rate, drop_after_rate, error_statuses, vendors, seed)."""
        return self.call("POST", "faults", faults)["faults"]

    def clear_faults(self) -> None:
        self.call("DELETE", "faults")

    def reset(self) -> None:
        """Forget everything recorded; configuration and faults back to the start configuration."""
        self.call("POST", "reset", {})
        self._refresh_credentials()


def _wait_healthy(handle: EmulatorHandle, deadline: float, process: subprocess.Popen | None = None) -> None:
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"emulator process exited with {process.returncode}")
        try:
            if handle.health().get("ok"):
                return
        except (OSError, EmulatorControlError, ValueError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"emulator at {handle.base_url} not healthy in time ({last_error})")


def _spawn(host: str, port: int, config: dict, timeout: float) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    include_dir = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = include_dir + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [sys.executable, "-m", "storesync.emulator", "--host", host, "--port", str(port)]
    if config:
        command += ["--config", json.dumps(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)
    lines: queue.Queue = queue.Queue()

    def _pump() -> None:  # read the announcement, then keep draining so the child never blocks
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=_pump, name="emulator-stdout", daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = None
    if not line or "listening on " not in line:
        process.kill()
        process.wait(timeout=5)
        raise RuntimeError(f"emulator subprocess did not start (first line: {line!r})")
    return process, line.rsplit("listening on ", 1)[1].strip()


@contextmanager
def start_emulator(*, in_process: bool = True, port: int = 0, host: str = "127.0.0.1",
                   startup_timeout: float = 20.0, **config):
    """Run an emulator for the duration of the ``with`` block and yield its ``EmulatorHandle``.

    ``in_process=True`` serves from a daemon thread of this process; ``False`` runs
    ``python -m storesync.emulator`` as a subprocess (keeps the GIL free for the client under test).
    """
    deadline = time.monotonic() + startup_timeout
    if in_process:
        from .server import EmulatorServer

        server = EmulatorServer(host, port, config=config).start()
        handle = EmulatorHandle(server.base_url, server=server)
        try:
            _wait_healthy(handle, deadline)
            handle._refresh_credentials()
            yield handle
        finally:
            server.stop()
        return
    process, base_url = _spawn(host, port, config, startup_timeout)
    handle = EmulatorHandle(base_url, process=process)
    try:
        _wait_healthy(handle, deadline, process)
        handle._refresh_credentials()
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
