# diffseg: `make reproduce` runs the whole study, `make test` runs the tests. Both set themselves up.
#
#   make reproduce                       the study on the cpu profile (synthetic data, CPU) -> reports/
#   make reproduce PROFILE=paper ADE20K_ROOT=... CITYSCAPES_ROOT=...   the paper-scale study on GPUs
#   make reproduce PROFILE=paper DRY_RUN=1   the paper study for two iterations a stage (checks it runs)
#   make -j4 reproduce                   notebooks render in parallel (the sweep runs first, alone)
#   make verify                          re-make a sample of the committed results here and compare them
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PROFILE ?= cpu
# `make reproduce PROFILE=paper DRY_RUN=1`: the paper study's code paths at its sizes, two iterations a stage, on
# synthetic scenes of the real image sizes with random-weight bases (profile paper-dry), before GPU hours are spent
ifeq ($(DRY_RUN)$(PROFILE),1paper)
override PROFILE := paper-dry
endif
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

.PHONY: setup test lint format reproduce sweep data reports lab bench clean parity verify
.DELETE_ON_ERROR:
.SECONDARY:

setup: $(STAMP)

# Reinstall only when the dependency pins change; a second `make setup` is instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# the notebooks' kernel (python3) as this environment's python, found first by `make lab` (JUPYTER_PATH)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
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

# Trains and evaluates whatever the results store lacks (resumable; a second run only loads). EXECUTOR=slurm runs
# the jobs on a Slurm cluster (SLURM_ARGS: its --slurm-* options, README "On a Slurm cluster").
EXECUTOR ?= local
SLURM_ARGS ?=
sweep: setup
	$(PY) -m diffseg sweep --profile $(PROFILE) --results $(RESULTS) --executor $(EXECUTOR) $(SLURM_ARGS)

# Re-trains a sample of the store's trainings up to their first learning-curve point and compares them with the
# committed values (exit 1 on any difference); writes nothing under the store or runs/.
verify: setup
	$(PY) -m diffseg verify --profile $(PROFILE) --results $(RESULTS)

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

# JupyterLab with the project's own settings (.jupyter/: jupytext's notebook view is the default viewer of the .py
# notebooks), the kernel of this environment, and the notebooks' folder as its file browser's root. A notebook run
# there reads the committed study (paths resolve against the project root) and trains only when asked (train = True).
LAB_PORT ?= 8888
lab: setup
	JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter JUPYTER_PATH=$(CURDIR)/$(VENV)/share/jupyter $(BIN)/jupyter lab --notebook-dir=notebooks --port=$(LAB_PORT) \
		$(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/data.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache

# ---- parity with mmsegmentation 0.30 ---------------------------------------------------------------------------
# A throwaway venv with mmseg 0.30's own code (mmcv 1.7.2 without compiled ops, torch 2.13 CPU) writes seeded
# reference checkpoints and outputs of SegFormer-B0, DeepLabV3+ R50-D8 and MobileNetV2-D8; the project's venv then loads them
# through diffseg's converter and must match. DIFFSEG_REQUIRE_PARITY turns the test's skip into a failure.
PARITY_VENV := build/parity-venv
PARITY_PY := $(PARITY_VENV)/bin/python
PARITY_STAMP := $(PARITY_VENV)/.installed
PARITY_DIR := build/parity
PARITY_DEPS := tests/parity/requirements.txt tests/parity/mmcv_ext_stub.py tests/parity/torchvision_stub.py

# mmseg imports mmcv.ops (compiled ops) and mmcv imports torchvision at import time; neither is used by the two
# models, and the registry's torchvision wheels need CUDA torch, so both get stand-in modules that fail loudly.
$(PARITY_STAMP): $(PARITY_DEPS)
	rm -rf $(PARITY_VENV)
	$(PYTHON) -m venv $(PARITY_VENV)
	$(PARITY_PY) -m pip install --quiet torch==2.13.0
	@# pip reports that torch asks for setuptools>=77; torch only needs it to build extensions, which we never do
	$(PARITY_PY) -m pip install --quiet 'setuptools<70' wheel
	MMCV_WITH_OPS=0 $(PARITY_PY) -m pip install --quiet --no-build-isolation -r tests/parity/requirements.txt
	site=$$($(PARITY_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
		&& cp tests/parity/mmcv_ext_stub.py $$site/mmcv/_ext.py \
		&& mkdir -p $$site/torchvision && cp tests/parity/torchvision_stub.py $$site/torchvision/__init__.py
	$(PARITY_PY) -W ignore -c 'from mmseg.models import build_segmentor'
	@touch $@

$(PARITY_DIR)/.done: tests/parity/mmseg_reference.py $(PARITY_STAMP)
	$(PARITY_PY) -W ignore tests/parity/mmseg_reference.py $(PARITY_DIR)
	@touch $@

parity: setup $(PARITY_DIR)/.done
	DIFFSEG_PARITY_DIR=$(PARITY_DIR) DIFFSEG_REQUIRE_PARITY=1 $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_mmseg_parity.py
