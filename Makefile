# storesync: `make run` runs the nightly sync on the embedded demo store; `make test` runs the tests.
# Both set up everything they need on a fresh clone (virtual environment, pinned packages).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
UV     := $(BIN)/uv
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install run test test-fast bench bench-quick chaos lock emulator clean airflow airflow-stop browser

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q uv==0.13.9
	# --compile-bytecode: these machines set PYTHONDONTWRITEBYTECODE; without .pyc imports are 2x slower
	$(UV) pip install --python $(BIN)/python --compile-bytecode -q -r requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -q -e .
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

## The main job: demo store (if missing) + local vendor emulator + the nightly sync, with a summary.
run: $(STAMP)
	$(BIN)/storesync demo

## The whole test suite (unit, contract, DAG, end-to-end). CI=true makes server-backed tests mandatory.
test: $(STAMP) browser
	$(BIN)/python -m pytest

## Debian's chromium for the UI browser test (Playwright drives it; never `playwright install`).
## Installed with apt when missing and we are root; otherwise that test says why it skipped.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the UI browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "no /usr/bin/chromium and not root: the UI browser test will be skipped (CI=true fails it)"; fi

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick

## The fault suite: 5xx, drops after accept, a 429 storm, kill -9 and two concurrent syncs per vendor, then
## ordinary reruns only; fails unless duplicates, lost, held and manual steps are all 0 (docs/exactly-once.md).
chaos: $(STAMP)
	$(BIN)/python -m storesync.chaos

emulator: $(STAMP)
	$(BIN)/storesync emulator --port 8765

## A local Airflow 3 with storesync wired in (no Docker): var/airflow, the demo store, the emulator,
## the connections, api-server + scheduler + dag-processor + triggerer in the background; prints the
## login. AIRFLOW_PORT / EMULATOR_PORT change the ports (8080 / 8765). See docs/airflow.md.
airflow: $(STAMP)
	$(BIN)/python scripts/airflow_local.py start

## Stops what `make airflow` started (each service's whole process group).
airflow-stop:
	@$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) scripts/airflow_local.py stop

## Re-resolve the lock file from requirements*.txt (after changing a pin).
lock:
	@test -x $(UV) || $(MAKE) install
	$(UV) pip compile --python $(BIN)/python requirements.txt requirements-dev.txt -o requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache
