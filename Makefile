# One command per verb. Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: serve install install-dev test-tools test lint typecheck check bench clean replicas

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The gateway alone: no servers, no keys, no network needed to run it.
install: $(BIN)/python
	$(PIP) install -q -e .

serve: install
	$(BIN)/switchboard serve

# Everything the tests need, the [local] embedding model and the [presidio] analyzer included
# (its tests make their own small spaCy pipeline). torch is pinned first to the CPU build so
# that nothing pulls a multi-GB CUDA build.
install-dev: $(BIN)/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,local,presidio]'

lint: install-dev
	$(BIN)/ruff check .

typecheck: install-dev
	$(BIN)/mypy

# The Prometheus server and promtool that tests/ops runs (Debian's prometheus package), and
# kubectl for tests/deploy (Debian's kubectl package).
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo )env DEBIAN_FRONTEND=noninteractive apt-get
test-tools:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then \
	  $(APT_GET) install -y --no-install-recommends prometheus \
	    || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends prometheus; }; \
	fi
	@# nginx: the load balancer in front of the replicas in tests/replicas
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
	  $(APT_GET) install -y --no-install-recommends nginx \
	    || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends nginx; }; \
	fi
	@# kubectl renders deploy/kubernetes (kubectl kustomize) for tests/deploy: the `kubectl`
	@# package of the Kubernetes (or Google Cloud SDK) apt repository; Debian's own
	@# kubernetes-client is too old. Where apt has none, tests/deploy skips rendering, saying so.
	@if ! command -v kubectl >/dev/null 2>&1; then \
	  $(APT_GET) install -y --no-install-recommends kubectl \
	    || { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends kubectl; } \
	    || echo "test-tools: no kubectl package here; tests/deploy will skip rendering"; \
	fi

# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them
# (its module fixtures, such as a private Postgres, are made once). Most tests wait on servers,
# so 2 workers on this project's 2-core machine took the suite from 809 s to 428-466 s. Files
# running at once do not collide: each makes its own Postgres databases (or private servers),
# uses its own key prefixes on the shared Redis or looks there only for its own ids, and takes
# free ports from the kernel. TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
test: install-dev test-tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

# Three gateway processes behind nginx sharing Postgres and Redis; graceful shutdown
# (README.md, "Running several replicas"). Also part of `make test`.
replicas: install-dev test-tools
	$(BIN)/pytest -q tests/replicas

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
