# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?=
PORT ?=
FUZZ_SECONDS ?= 60
FUZZ_FRAMES ?= 1000000

.PHONY: run test lint typecheck unit bench fuzz clean image

$(VENV)/.installed: pyproject.toml sfu/_rtploop.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed-test pyproject.toml
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/parley serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .

typecheck: $(VENV)/.installed-test
	$(PY) -m mypy

unit: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(VENV)/.installed-bench
	$(PY) -m bench.run $(BENCH_ARGS)

# Each atheris target for FUZZ_SECONDS, then the protocol fuzzer with FUZZ_FRAMES frames
# (docs/fuzzing.md). `make test` runs short versions of both.
fuzz: $(VENV)/.installed-test
	$(PY) -m fuzz.run --all --seconds $(FUZZ_SECONDS)
	PARLEY_FUZZ_FRAMES=$(FUZZ_FRAMES) $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/fuzz/test_protocol_fuzz.py

# The node's container image (Containerfile), with the first builder found.
IMAGE ?= parley:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	@if command -v podman >/dev/null 2>&1; then \
		podman build -f Containerfile -t $(IMAGE) .; \
	elif command -v buildah >/dev/null 2>&1; then \
		buildah build -f Containerfile -t $(IMAGE) .; \
	elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		docker build -f Containerfile -t $(IMAGE) .; \
	else \
		echo "make image: no podman, buildah or docker with a running daemon on this machine."; \
		echo "Install one (e.g. apt-get install podman) where the base image can be pulled."; \
		exit 1; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info sfu/*.so build
