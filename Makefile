# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first
# (idempotent: a second run installs nothing).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmbyol-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR ?= runs/demo

.PHONY: setup data demo test lint throughput clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=64,<82' wheel
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian's data packages, installed only when missing: Fashion-MNIST, espeak-ng that synthesizes
# the spoken digits, and WordNet whose noun definitions are the text data set.
DATA_PACKAGES := dataset-fashion-mnist espeak-ng wordnet-base
data:
	@dpkg -s $(DATA_PACKAGES) >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $(DATA_PACKAGES); }

# Train BYOL on Fashion-MNIST (small_cnn, batch 256, 10 epochs), then print the linear-probe accuracy.
# Resumes (or, when finished, just re-evaluates) a run already in $(DEMO_DIR).
demo: setup data
	$(BIN)/mmbyol train run.dir=$(DEMO_DIR) resume=auto
	$(BIN)/mmbyol eval $(DEMO_DIR) eval.labels_per_class=10

# The suite on every core: one pytest-xdist worker a core, each with its share of the threads (tests/conftest.py);
# a worker that runs out of tests takes queued ones from the other (worksteal), so neither idles at the end.
test: setup data
	$(BIN)/python -m pytest -q -n auto --dist worksteal

# ruff with the project's rules and its 120-column line length (pyproject.toml).
lint: setup
	$(BIN)/ruff check mmbyol tests benchmarks examples

throughput: setup data
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info
