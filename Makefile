# superionic: two commands on a fresh machine.
#   make demo   create .venv, install, run workflows/demo.yaml on the embedded default (CHGNet)
#   make test   create/refresh .venv, install with test extras, run the test suite
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned here: any other spec pulls the CUDA build (GBs).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/superionic run workflows/demo.yaml

# -n auto: one test process per core, each with its own cores and threads (tests/conftest.py)
test: install
	$(BIN)/python -m pytest -n auto --no-loadscope-reorder

test-slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) report workflows/report workflows/.superionic
