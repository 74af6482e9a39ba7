# Two entry points (README Quickstart): `make up` runs the service, `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Rebuild the install stamp when the dependency list changes.
STAMP := $(VENV)/.installed

.PHONY: install up test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	# torch/torchvision first and pinned: pip takes them from the local disk copies where present.
	$(PIP) install --quiet torch==2.14.1 torchvision==0.29.1
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: install
	$(PY) scripts/serve.py

test: install
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow and not integration and not browser" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PIP) install --quiet -e '.[bench]'
	$(PY) bench/throughput.py
	$(PY) bench/corruptions.py
	$(PY) bench/inference_batch.py

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
