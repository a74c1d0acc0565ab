# headreport — every target that needs the virtual environment creates it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= report.toml
OUT ?= build

.PHONY: setup test report bench clean lint

setup: $(STAMP)

# Re-installs only when the project's metadata or the constraints change (a second run is instant).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,demo]'
	@touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

report: setup
	$(VENV)/bin/headreport build --config $(CONFIG) --out $(OUT)

bench: setup
	HF_HUB_OFFLINE=1 $(PY) bench/run.py --out $(OUT)

lint: setup
	$(VENV)/bin/ruff check analysis report tests

clean:
	rm -rf $(OUT)
