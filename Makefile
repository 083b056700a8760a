# diffseg: `make reproduce` runs the whole study, `make test` runs the tests. Both set themselves up.
#
#   make reproduce                       the study on the cpu profile (synthetic data, CPU) -> reports/
#   make reproduce PROFILE=paper ADE20K_ROOT=... CITYSCAPES_ROOT=...   the paper-scale study on GPUs
#   make -j4 reproduce                   notebooks render in parallel (the sweep runs first, alone)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PROFILE ?= cpu
RESULTS ?= results
ifeq ($(PROFILE),cpu)
REPORTS ?= reports
else
REPORTS ?= reports-$(PROFILE)
endif
export ADE20K_ROOT CITYSCAPES_ROOT

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
NAMES := $(notdir $(basename $(NOTEBOOKS)))
HTML := $(patsubst %,$(REPORTS)/%.html,$(NAMES))
BUILD := build/$(PROFILE)
RESULTS_TABLE := $(RESULTS)/$(PROFILE)/results.parquet

.PHONY: setup test lint format reproduce sweep data reports lab bench clean
.DELETE_ON_ERROR:
.SECONDARY:

setup: $(STAMP)

# Reinstall only when the dependency pins change; a second `make setup` is instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(PY) -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# ---- the study ------------------------------------------------------------------------------------------------
JOBS ?= 2
reproduce: setup
	$(MAKE) sweep
	$(MAKE) -j$(JOBS) reports

data: setup
	$(PY) -m diffseg sweep --profile $(PROFILE) --results $(RESULTS) --data-only

# Trains and evaluates whatever the results store lacks (resumable; a second run only loads), one process.
sweep: setup
	$(PY) -m diffseg sweep --profile $(PROFILE) --results $(RESULTS)

reports: $(REPORTS)/index.html

$(BUILD)/%.ipynb: notebooks/%.py | setup
	@mkdir -p $(BUILD)
	$(BIN)/jupytext --to ipynb --set-kernel python3 --output $@ $<

# A notebook re-renders when its source or the results table changed. The kernel's progress and warnings stay
# off the page: papermill prints no bar, and `diffseg report --notebook` moves any stderr to this terminal.
# (ipykernel warns on every start that papermill's local kernel talks TCP on loopback; that line is dropped.)
$(BUILD)/%.executed.ipynb: $(BUILD)/%.ipynb $(RESULTS_TABLE)
	@echo "notebook $* ($(PROFILE)) ..."
	@start=$$(date +%s); $(BIN)/papermill --log-level WARNING --no-progress-bar $< $@ -p profile $(PROFILE) \
		-p results_dir $(RESULTS) -p reports_dir $(REPORTS) 2> >(grep -v "Kernel is running over TCP" >&2) \
		&& echo "notebook $* done in $$(( $$(date +%s) - start )) s"

# Byte-stable HTML: stable cell ids, no run metadata, so unchanged results give an unchanged page.
$(REPORTS)/%.html: $(BUILD)/%.executed.ipynb
	$(PY) -m diffseg report --profile $(PROFILE) --results $(RESULTS) --reports $(REPORTS) --notebook $<

$(RESULTS_TABLE):
	$(MAKE) sweep

$(REPORTS)/index.html: $(HTML) $(RESULTS_TABLE)
	$(PY) -m diffseg report --profile $(PROFILE) --results $(RESULTS) --reports $(REPORTS)

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

bench: setup
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/data.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
