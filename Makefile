# actgrad: `make serve` and `make test` set up everything on a fresh machine whose pip
# reaches PyPI (`make check-pypi` proves it on a fresh clone).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SERVE_STAMP := $(VENV)/.serve-stamp
TORCH_STAMP := $(VENV)/.torch-stamp
HOST ?= 127.0.0.1
PORT ?= 50051
HTTP_PORT ?= 8000

.PHONY: install torch check-pypi lock serve test check lint format types stubs stubs-check unit integration clean bench bench-settings node-deps deploy-deps deploy test-containers soak soak-drain screenshots

# The project editable, and its two source folders on sys.path (a .pth file): setuptools'
# editable finder runs after the path search, so a folder named `actgrad` in the current
# directory (this clone, seen from the folder holding it) would otherwise be imported as
# an empty namespace package instead (tests/integration/test_install.py).
define INSTALL_PROJECT
$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_path("purelib"), \
	"actgrad-sources.pth").write_text("".join(f"{pathlib.Path(d).resolve()}\n" for d in ("client", "server")))'
endef

# Every version comes from the hash-pinned lock (requirements/dev.txt: runtime, dev,
# bench, pip and setuptools; all from PyPI); the project itself is installed editable
# on top.
LOCK := requirements/dev.txt
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(INSTALL_PROJECT)
	touch $(STAMP)

install: $(STAMP)

# What serving needs and nothing else: the runtime lock (requirements/server.txt, the
# CPU image's), pip and setuptools (requirements/build.txt) and the project. A stamp of
# its own: `make test` after `make serve` still installs the dev lock on top.
SERVE_LOCKS := requirements/build.txt requirements/server.txt
$(SERVE_STAMP): $(SERVE_LOCKS) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes $(addprefix -r ,$(SERVE_LOCKS))
	$(INSTALL_PROJECT)
	touch $(SERVE_STAMP)

# PyTorch for the cross-checks against autograd (tests that need it skip, loudly, where
# it is missing; ACTGRAD_REQUIRE_TORCH=1 fails them instead). Its CPU build is not on
# PyPI, whose torch for Linux is a multi-GB CUDA build: the lock pins torch==2.13.0 (a
# version PyPI has) with the hash of the CPU wheel (2.13.0+cpu, which ==2.13.0 matches),
# so only that file can install; it does where pip finds it (this machine's find-links,
# or TORCH_INDEX=https://download.pytorch.org/whl/cpu). Elsewhere this target asks for
# the CPU build by its label first, fails at once, says how to get it and installs
# nothing.
TORCH_LOCK := requirements/torch-cpu.txt
TORCH_CPU_BUILD := $(shell sed -n 's/^\(torch==[^ ]*+cpu\).*/\1/p' requirements/torch.in)
TORCH_INDEX ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
$(TORCH_STAMP): $(TORCH_LOCK) $(STAMP)
	@torch=$(TORCH_CPU_BUILD); \
	if ! out=$$($(PY) -m pip install --dry-run --no-deps $(TORCH_PIP_ARGS) "$$torch" 2>&1); then \
		echo "$$out" | tail -n 3 >&2; \
		echo "" >&2; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2; \
		echo "!! make torch: pip cannot find $$torch, PyTorch's CPU build (PyPI does not" >&2; \
		echo "!! have it; its torch for Linux is a multi-GB CUDA build, never installed here)." >&2; \
		echo "!! Get it from PyTorch's CPU index:" >&2; \
		echo "!!     make torch TORCH_INDEX=https://download.pytorch.org/whl/cpu" >&2; \
		echo "!! Until then \`make test\` skips the PyTorch cross-checks and says so at its end." >&2; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2; \
		exit 1; \
	fi
	$(PY) -m pip install --quiet --require-hashes $(TORCH_PIP_ARGS) -r $(TORCH_LOCK)
	touch $(TORCH_STAMP)

torch: $(TORCH_STAMP)

# The README's commands where pip reaches PyPI alone (no pip configuration, no PIP_*
# settings: scripts/pypi_only.sh), on a fresh clone of HEAD in a temporary folder:
# `make serve` answers, `make install` installs the dev lock, `make torch` refuses
# without installing anything, and every other lock's pins exist there.
check-pypi:
	scripts/check_pypi.sh

# Renews the locks from pyproject.toml's ranges: the only way versions move. Then run
# `make bench` and compare with docs/performance.md (a dependency bump once made one
# onnxruntime kernel 16x slower). LOCK_ARGS="--upgrade-package onnxruntime" moves one.
# All but torch's are resolved against PyPI alone, so that every pin exists there; the
# torch lock with this machine's pip configuration, which must reach the CPU build.
LOCK_ARGS ?= --upgrade
PIP_COMPILE = $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links
PYPI_ONLY := scripts/pypi_only.sh
lock: install
	$(PYPI_ONLY) $(PIP_COMPILE) $(LOCK_ARGS) --extra server --extra dev --extra bench \
		-o requirements/dev.txt pyproject.toml requirements/tools.in
	$(PYPI_ONLY) $(PIP_COMPILE) -o requirements/build.txt requirements/tools.in requirements/runtime.in
	$(PYPI_ONLY) $(PIP_COMPILE) --extra server -o requirements/server.txt pyproject.toml \
		requirements/runtime.in
	$(PYPI_ONLY) $(PIP_COMPILE) --extra cuda -o requirements/cuda.txt pyproject.toml \
		requirements/runtime.in
	$(PIP_COMPILE) $(LOCK_ARGS) $(TORCH_PIP_ARGS) -o $(TORCH_LOCK) requirements/torch.in
	sed -i 's/^torch==\([0-9.]*\)+cpu /torch==\1 /' $(TORCH_LOCK)  # the version PyPI has

# The Node.js client test's npm packages (tests/node), pinned by its package-lock.json.
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed-stamp
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: apt-get install nodejs npm" >&2; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

node-deps: $(NODE_STAMP)

# Debian's nginx for tests/deploy's load-balancer tests (installed only when missing).
deploy-deps:
	scripts/install_nginx.sh

# The compose file, Dockerfiles and nginx config, checked without a Docker engine.
deploy: install deploy-deps
	$(PY) -m pytest tests/deploy

# The CPU image and docker-compose.yml on a real engine (root; a few minutes): starts
# Docker when none runs (installing Debian's docker.io if needed) and stops it after,
# makes the base images with debootstrap when no registry has them, builds
# docker/Dockerfile as it is and runs tests/containers (docs/deployment.md).
test-containers: install
	PY=$(PY) scripts/test_containers.sh

serve: $(SERVE_STAMP)
	$(VENV)/bin/actgrad serve --host $(HOST) --port $(PORT) --http-port $(HTTP_PORT)

stubs: install
	scripts/generate_stubs.sh $(PY)

# Regenerates the stubs into a scratch folder and fails on any difference.
stubs-check: install
	scripts/check_stubs.sh $(PY)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

types: install
	$(VENV)/bin/mypy client/actgrad server/actgrad_server

check: stubs-check lint types

unit: install
	$(PY) -m pytest tests/unit

integration: install node-deps
	$(PY) -m pytest tests/integration

test: check node-deps deploy-deps
	$(PY) -m pytest

# The benchmark (not a test): latency, throughput and server memory against the
# transport and compute floors; writes bench/results/. Flags go in BENCH_ARGS, e.g.
# make bench BENCH_ARGS="--sizes 16,1Ki,64Ki --repeats 3"; `$(PY) -m bench --help`.
# Throughput (gRPC and HTTP) is sent by h2load: Debian's nghttp2-client
# (sudo apt-get install nghttp2-client); without it the bench stops at once and says so.
# The MLServer comparison runs where .venv-mlserver exists (make bench-mlserver-venv);
# make bench does not install it, and says loudly in its log and report when it skipped it.
BENCH_ARGS ?=
bench: install
	$(PY) -m bench $(BENCH_ARGS)

# MLServer 1.7 for make bench's comparison (issue 21), in a venv of its own from its own
# hash-pinned lock (requirements/mlserver.txt, every pin on PyPI), never in the project's.
.PHONY: bench-mlserver-venv bench-mlserver-lock
MLSERVER_VENV := .venv-mlserver
MLSERVER_LOCK := requirements/mlserver.txt
bench-mlserver-venv: $(MLSERVER_VENV)/.installed-stamp
$(MLSERVER_VENV)/.installed-stamp: $(MLSERVER_LOCK)
	test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(PYPI_ONLY) $(MLSERVER_VENV)/bin/python -m pip install --quiet --require-hashes \
		-r $(MLSERVER_LOCK)
	touch $@

# Renews MLServer's lock from requirements/mlserver.in (against PyPI alone).
bench-mlserver-lock: install
	$(PYPI_ONLY) $(PIP_COMPILE) $(LOCK_ARGS) -o $(MLSERVER_LOCK) requirements/mlserver.in

# The settings sweeps behind docs/performance.md's "Settings chosen by measurement"
# (a few minutes; not part of `make bench`): bench/results/settings-*.
bench-settings: install
	$(PY) -m bench.settings $(BENCH_ARGS)

# Minutes of mixed traffic against `actgrad serve --workers 2`, every answer checked,
# RSS and latency drift reported (not a test): SOAK_MINUTES=1 make soak for a short one.
SOAK_MINUTES ?= 3
soak: install
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) scripts/soak.py

# Drain/restart cycles under load (not a test): DRAIN_CYCLES (default 150) cycles of
# SIGTERM and restart of `actgrad serve --workers 2`, then rolling drains of three
# servers behind round_robin; lost calls by code printed, exit 1 on any.
DRAIN_CYCLES ?= 150
soak-drain: install
	$(PY) scripts/drain_cycles.py --mode restart --cycles $(DRAIN_CYCLES)
	$(PY) scripts/drain_cycles.py --mode rolling --cycles $(DRAIN_CYCLES)

# The playground's screenshots, docs/images/playground-*.png (README, docs/playground.md),
# from a real server and Debian's headless Chromium (apt-get install chromium
# chromium-driver).
screenshots: install
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
