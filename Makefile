# medvlm: MedTrinity-25M -> a VLM that locates, verifies and diagnoses, built on ms-swift.
# Every target runs on the embedded default (tiny Qwen-VL checkpoints + bundled sample) with no
# arguments; point it at real checkpoints and data with the variables below.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# --- variables users set -----------------------------------------------------------------------
PYTHON      ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
FAMILY      ?= qwen2_vl
MODELS      ?= models
SAMPLE      ?= data/sample/medtrinity_sample.parquet
TINY_CONFIG ?= recipes/tiny-model.yaml
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.medvlm-installed
TINY_STAMP := $(MODELS)/.tiny-stamp

.PHONY: help setup tiny-model sample-data test clean distclean

help: ## list the targets and the variables they read
	@echo "medvlm make targets (variables: FAMILY=$(FAMILY) MODELS=$(MODELS) VENV=$(VENV) PYTHON=$(PYTHON))"
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-12s %s\n", $$1, $$2}'

# The venv is rebuilt when a requirements file or pyproject changes; every target depends on it.
$(VENV_STAMP): requirements/train.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "medvlm needs Python >= 3.11; set PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -r requirements/train.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

setup: $(VENV_STAMP) ## create .venv from the pinned requirements (implicit in every target)

$(TINY_STAMP): $(VENV_STAMP) $(TINY_CONFIG) $(SAMPLE) swift_ext/tiny_models.py swift_ext/families.py $(wildcard swift_ext/chat_templates/*.jinja)
	$(PY) -m swift_ext.tiny_models --out $(MODELS) --config $(TINY_CONFIG) --corpus $(SAMPLE)
	@touch $@

tiny-model: $(TINY_STAMP) ## write tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints under models/

sample-data: $(VENV_STAMP) ## regenerate the bundled MedTrinity-shaped sample from real images in PyPI packages
	$(PY) -m pip install --quiet -r requirements/sample.txt
	$(PY) -m data_prep.sample --out $(dir $(SAMPLE))

test: $(VENV_STAMP) $(TINY_STAMP) ## run the offline test suite (the CI command)
	$(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove generated checkpoints and outputs (keeps the venvs)
	rm -rf $(MODELS) output runs .pytest_cache

distclean: clean ## also remove the venvs
	rm -rf $(VENV) .venv-serve
